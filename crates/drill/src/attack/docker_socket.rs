//! Escape: a container-engine socket is root on the host. Harmless: a connection that works is
//! closed without a request.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `docker-socket`: connect to the docker / containerd / podman sockets.
pub struct DockerSocket;

impl Attack for DockerSocket {
    fn id(&self) -> &'static str {
        "docker-socket"
    }
    fn title(&self) -> &'static str {
        "connect to the docker / containerd / podman sockets"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let s: Vec<Step> = [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run/containerd/containerd.sock",
            "/run/podman/podman.sock",
            "/run/user/0/podman/podman.sock",
        ]
        .into_iter()
        .map(|p| match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => Step::ok(format!("connect {p}"), "connected (no request sent)"),
            Err(e) => Step::failed(format!("connect {p}"), e.to_string()),
        })
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
