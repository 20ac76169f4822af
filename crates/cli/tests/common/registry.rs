//! A real OCI registry in tests: Debian's `docker-registry` in a test's sealed namespace, and
//! `skopeo` to push images to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::{stderr, World};

/// A registry process in the world's namespace, killed (by its PID) when dropped.
pub struct Registry {
    pub child: Child,
    pub storage: PathBuf,
    pub addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (or, under AIRLOCK_TEST_STRICT, fails) without the registry tools.
#[macro_export]
macro_rules! need_registry_tools {
    () => {
        for t in ["docker-registry", "skopeo", "htpasswd", "openssl"] {
            if !$crate::common::registry::have(t) {
                assert!(
                    std::env::var_os("AIRLOCK_TEST_STRICT").is_none(),
                    "{t} is missing: run scripts/setup.sh"
                );
                eprintln!("skipping: {t} is missing (scripts/setup.sh installs it)");
                return;
            }
        }
    };
}

/// Starts a registry on 127.0.0.1:`port` of the world's namespace; `tls`: (cert, key),
/// `htpasswd`: the password file.
pub fn start_registry(
    w: &World,
    port: u16,
    tls: Option<(&Path, &Path)>,
    htpasswd: Option<&Path>,
) -> Registry {
    let dir = w.dir.path().join(format!("registry-{port}"));
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).expect("storage");
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        storage.display()
    );
    if let Some((cert, key)) = tls {
        cfg.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(h) = htpasswd {
        cfg.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: airlock-test\n    path: {}\n",
            h.display()
        ));
    }
    let cfg_path = dir.join("config.yml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let child = w
        .in_netns(&["docker-registry", "serve", &cfg_path.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let reg = Registry {
        child,
        storage,
        addr: addr.clone(),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    for _ in 0..100 {
        let o = w
            .in_netns(&[
                "curl",
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{scheme}://{addr}/v2/"),
            ])
            .output()
            .expect("curl");
        let code = String::from_utf8_lossy(&o.stdout).into_owned();
        if code == "200" || code == "401" {
            return reg;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the registry did not start on {addr}");
}

/// Pushes the image `name` of `layout` to `dest` (`host:port/repo:tag`) with skopeo.
pub fn push(w: &World, layout: &Path, name: &str, dest: &str, extra: &[&str], all: bool) {
    let src = format!("oci:{}:{name}", layout.display());
    let dst = format!("docker://{dest}");
    let mut argv = vec!["skopeo", "--insecure-policy", "copy", "-q"];
    if all {
        argv.push("--all");
    }
    argv.extend_from_slice(extra);
    argv.push(&src);
    argv.push(&dst);
    let o = w
        .in_netns(&argv)
        .env("HOME", w.dir.path())
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo copy: {}", stderr(&o));
}
