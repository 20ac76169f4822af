//! `createOptions` (`container.options`, `services.*.options`): Docker `create` flags as one
//! string. Parsed against an allow-list, never passed through: a flag airlock does not know
//! is refused, and the flags that would open the host are refused by name with a reason the
//! workflow's author can act on.

use std::time::Duration;

use crate::check::Refused;

/// What the allowed flags ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateOptions {
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--memory` / `-m`, in bytes.
    pub memory: Option<u64>,
    /// `--env` / `-e` (`NAME=value`).
    pub env: Vec<(String, String)>,
    /// `--workdir` / `-w`.
    pub workdir: Option<String>,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// `--user` / `-u`: `uid[:gid]` (numeric) or a name of the image's `/etc/passwd`.
    pub user: Option<String>,
    /// `--health-cmd` (run with `/bin/sh -c`, as Docker's `CMD-SHELL`).
    pub health_cmd: Option<String>,
    /// `--health-interval`.
    pub health_interval: Option<Duration>,
    /// `--health-timeout`.
    pub health_timeout: Option<Duration>,
    /// `--health-retries`.
    pub health_retries: Option<u32>,
    /// `--health-start-period`.
    pub health_start_period: Option<Duration>,
    /// Flags accepted but without effect here, for the job's log (`--rm`, `--name`, …).
    pub ignored: Vec<String>,
}

/// Flags refused by name, with why.
const REFUSED: &[(&str, &str)] = &[
    ("--privileged", "a privileged container is the host's root"),
    ("--cap-add", "containers get no capabilities"),
    ("--device", "no host device is given to a job"),
    (
        "--network",
        "a job's containers share the job's own network and its egress policy",
    ),
    (
        "--net",
        "a job's containers share the job's own network and its egress policy",
    ),
    ("--pid", "a container sees only its own processes"),
    ("--ipc", "a container keeps its own IPC namespace"),
    ("--uts", "a container keeps its own UTS namespace"),
    (
        "--userns",
        "user namespaces are airlock's choice, not the job's",
    ),
    ("--cgroupns", "cgroups are airlock's choice, not the job's"),
    (
        "--cgroup-parent",
        "cgroups are airlock's choice, not the job's",
    ),
    (
        "--volume",
        "host paths are never mounted; use the job's workspace or a named volume",
    ),
    (
        "-v",
        "host paths are never mounted; use the job's workspace or a named volume",
    ),
    (
        "--mount",
        "host paths are never mounted; use the job's workspace or a named volume",
    ),
    (
        "--volumes-from",
        "another container's volumes are not shared this way",
    ),
    (
        "--security-opt",
        "seccomp, no_new_privs and AppArmor are the group's, not the job's",
    ),
    ("--sysctl", "kernel parameters are the host's"),
    ("--ulimit", "limits are the group's"),
    ("--oom-kill-disable", "limits are the group's"),
    ("--oom-score-adj", "limits are the group's"),
    ("--runtime", "the executor is the group's"),
    (
        "--add-host",
        "host names are the job's services; addresses are the egress policy's",
    ),
    ("--dns", "the job's resolver is airlock's gateway"),
    (
        "--publish",
        "nothing outside the job reaches its containers",
    ),
    ("-p", "nothing outside the job reaches its containers"),
];

/// Flags accepted without effect.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--name",
    "--hostname",
    "-h",
    "--label",
    "-l",
    "--shm-size",
    "--network-alias",
    "--restart",
    "--memory-swap",
    "--memory-reservation",
    "--log-driver",
    "--log-opt",
    "--pull",
    "--platform",
    "--stop-signal",
    "--stop-timeout",
];
const IGNORED_FLAGS: &[&str] = &["--rm", "--init", "-t", "--tty", "-i", "--interactive"];

/// Parses `createOptions`.
pub fn parse(s: &str) -> Result<CreateOptions, Refused> {
    let words = shlex::split(s).ok_or_else(|| {
        Refused::new(
            "createOptions",
            format!("{s:?} is not valid shell quoting"),
            "check the quotes of `options:`",
        )
    })?;
    let mut o = CreateOptions::default();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_owned(), Some(v.to_owned())),
            _ => (w.clone(), None),
        };
        if let Some((_, why)) = REFUSED.iter().find(|(f, _)| *f == flag) {
            return Err(Refused::new(
                "createOptions",
                format!("{flag} is refused: {why}"),
                "remove it from the job's `options:` (docs/containers.md lists what is allowed)",
            ));
        }
        if IGNORED_FLAGS.contains(&flag.as_str()) {
            o.ignored.push(flag);
            continue;
        }
        let mut value = |name: &str| -> Result<String, Refused> {
            inline.clone().or_else(|| it.next()).ok_or_else(|| {
                Refused::new(
                    "createOptions",
                    format!("{name} needs a value"),
                    "e.g. --cpus 1",
                )
            })
        };
        match flag.as_str() {
            "--cpus" => {
                let v = value("--cpus")?;
                let n: f64 = v
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| bad_value("--cpus", &v, "a positive number, e.g. 1.5"))?;
                o.cpus = Some(n);
            }
            "--memory" | "-m" => {
                let v = value("--memory")?;
                o.memory = Some(
                    parse_bytes(&v)
                        .ok_or_else(|| bad_value("--memory", &v, "a size, e.g. 512m or 2g"))?,
                );
            }
            "--env" | "-e" => {
                let v = value("--env")?;
                let (k, val) = v.split_once('=').ok_or_else(|| {
                    bad_value(
                        "--env",
                        &v,
                        "NAME=value (airlock does not pass its own environment through)",
                    )
                })?;
                if !crate::check::valid_env_name(k) {
                    return Err(bad_value("--env", &v, "a variable name of letters, digits and _"));
                }
                o.env.push((k.to_owned(), val.to_owned()));
            }
            "--workdir" | "-w" => o.workdir = Some(value("--workdir")?),
            "--entrypoint" => o.entrypoint = Some(value("--entrypoint")?),
            "--user" | "-u" => o.user = Some(value("--user")?),
            "--health-cmd" => o.health_cmd = Some(value("--health-cmd")?),
            "--health-interval" => o.health_interval = Some(duration("--health-interval", &value("--health-interval")?)?),
            "--health-timeout" => o.health_timeout = Some(duration("--health-timeout", &value("--health-timeout")?)?),
            "--health-start-period" => {
                o.health_start_period =
                    Some(duration("--health-start-period", &value("--health-start-period")?)?)
            }
            "--health-retries" => {
                let v = value("--health-retries")?;
                o.health_retries = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad_value("--health-retries", &v, "a positive count"))?,
                );
            }
            f if IGNORED_WITH_VALUE.contains(&f) => {
                let _ = value(f)?;
                o.ignored.push(f.to_owned());
            }
            f => {
                return Err(Refused::new(
                    "createOptions",
                    format!("{f} is not on airlock's allow-list"),
                    "allowed: --cpus, --memory, --env, --workdir, --entrypoint, --user, --health-cmd, --health-interval, --health-timeout, --health-retries, --health-start-period (docs/containers.md)",
                ))
            }
        }
    }
    Ok(o)
}

fn bad_value(flag: &str, v: &str, want: &str) -> Refused {
    Refused::new("createOptions", format!("{flag} {v:?} is not usable"), want)
}

/// Docker's sizes: a number with an optional `b`, `k`, `m` or `g` (powers of 1024).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&s)
        .to_owned();
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        'b' => (&s[..s.len() - 1], 1),
        _ => (s.as_str(), 1),
    };
    let n: u64 = num.parse().ok()?;
    n.checked_mul(mult).filter(|b| *b > 0)
}

/// Docker's durations as `--health-*` take them: `500ms`, `10s`, `1m`, `1h`, or combinations
/// (`1m30s`).
pub fn duration(flag: &str, s: &str) -> Result<Duration, Refused> {
    let err = || bad_value(flag, s, "a duration, e.g. 10s or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let n: u64 = rest[..n_end].parse().map_err(|_| err())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(err()),
        };
        total = total.saturating_add(unit);
        rest = &rest[u_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_flags_are_read() {
        let o = parse(r#"--cpus 1.5 -m=512m --memory 1g -e A=1 --env "B=two words" -w /src --entrypoint /bin/sh -u 1000:1000 --health-cmd "pg_isready -U postgres" --health-interval 10s --health-timeout=5s --health-retries 5 --health-start-period 1m30s --rm --name db"#)
            .expect("allowed");
        assert_eq!(o.cpus, Some(1.5));
        assert_eq!(o.memory, Some(1 << 30));
        assert_eq!(
            o.env,
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert_eq!(o.workdir.as_deref(), Some("/src"));
        assert_eq!(o.user.as_deref(), Some("1000:1000"));
        assert_eq!(o.health_cmd.as_deref(), Some("pg_isready -U postgres"));
        assert_eq!(o.health_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.health_start_period, Some(Duration::from_secs(90)));
        assert_eq!(o.health_retries, Some(5));
        assert_eq!(o.ignored, vec!["--rm".to_owned(), "--name".to_owned()]);
        let o =
            parse("--network-alias db --restart always --memory-swap -1 --platform linux/amd64")
                .expect("ignored flags");
        assert_eq!(o.ignored.len(), 4);
    }

    #[test]
    fn flags_that_open_the_host_are_refused_by_name() {
        for (opts, says) in [
            ("--privileged", "privileged"),
            ("--cap-add SYS_ADMIN", "capabilities"),
            ("--cap-add=ALL", "capabilities"),
            ("--network host", "network"),
            ("--net=host", "network"),
            ("--pid host", "own processes"),
            ("--device /dev/kvm", "device"),
            ("-v /:/host", "host paths"),
            ("--mount type=bind,src=/,dst=/h", "host paths"),
            ("--security-opt seccomp=unconfined", "seccomp"),
            ("-p 5432:5432", "outside the job"),
        ] {
            let e = parse(opts).expect_err(opts);
            assert!(e.to_string().contains(says), "{opts}: {e}");
        }
        let e = parse("--cpus 1 --gpus all").expect_err("unknown");
        assert!(e.to_string().contains("allow-list"), "{e}");
        assert!(parse("--env HOME").is_err(), "pass-through env");
        assert!(parse("--cpus").is_err(), "missing value");
        assert!(parse("--memory lots").is_err());
        assert!(parse("'unbalanced").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("1kb"), Some(1024));
        assert_eq!(parse_bytes("0"), None);
        assert_eq!(parse_bytes("99999999999g"), None);
        assert_eq!(
            duration("x", "500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert!(duration("x", "5").is_err());
        assert!(duration("x", "").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }
}
