use super::*;
use std::path::Path;

fn p(src: &str) -> Result<Policy, PolicyError> {
    parse(src, Path::new("policy.toml"))
}

fn diags(src: &str) -> Vec<Diagnostic> {
    match p(src) {
        Err(PolicyError::Invalid(d)) => d,
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

/// Every diagnostic's message, one a line.
fn messages(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|x| x.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

const GOOD: &str = r#"
version = 1
default_group = "pr"

[groups.pr]
trust = "untrusted"
env = ["CI"]
secrets = ["NPM_TOKEN"]
[groups.pr.limits]
memory = "512MiB"
pids = 128
cpus = 0.5
disk = "256MiB"
timeout = "10m"

[groups.internal]
trust = "trusted"
executor = "runc"
rootfs = { image = "builder:latest" }
user = { name = "ci", uid = 2000, gid = 2000 }
"#;

#[test]
fn parses_a_good_policy() {
    let pol = p(GOOD).expect("valid");
    let pr = &pol.groups["pr"];
    assert_eq!(pr.trust, Trust::Untrusted);
    assert_eq!(pr.limits.memory, ByteSize(512 << 20));
    assert_eq!(pr.limits.timeout.0.as_secs(), 600);
    assert_eq!(pr.limits.nofile, 1024, "default applies");
    let int = &pol.groups["internal"];
    assert_eq!(int.executor, ExecutorKind::Runc);
    assert_eq!(int.rootfs, RootfsSource::Image("builder:latest".into()));
    assert_eq!(int.user.uid, 2000);
    assert_eq!(pol.default_group_name().as_deref(), Some("pr"));
}

#[test]
fn malformed_toml_has_position() {
    let d = diags("version = 1\n[groups.a\ntrust = \"untrusted\"\n");
    assert_eq!(
        (d[0].line, d[0].file.as_path()),
        (2, Path::new("policy.toml"))
    );
}

#[test]
fn unknown_key_is_an_error_with_position_and_hint() {
    let d = diags("version = 1\n[groups.a]\ntrust = \"untrusted\"\nmemroy = \"1GiB\"\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].line, d[0].col), (4, 1));
    assert!(
        d[0].message.contains("unknown field `memroy`"),
        "{}",
        d[0].message
    );
    assert!(d[0].hint.as_deref().unwrap_or("").contains("typo"));
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let d = diags("version = 1\nallow_everything = true\n[groups.a]\n");
    assert_eq!((d[0].line, d[0].col), (2, 1), "{d:?}");
}

#[test]
fn bad_size_points_at_the_value() {
    let d = diags("version = 1\n[groups.a.limits]\nmemory = \"lots\"\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].line, 3);
    assert!(d[0].message.contains("invalid size"), "{}", d[0].message);
}

#[test]
fn bad_duration_is_reported() {
    let d = diags("version = 1\n[groups.a.limits]\ntimeout = \"soon\"\n");
    assert!(d[0].message.contains("invalid duration"), "{d:?}");
    assert_eq!(d[0].line, 3);
}

#[test]
fn every_group_error_is_reported() {
    let src = "version = 1\ndefault_group = \"a\"\n[groups.a]\ntrust = \"maybe\"\n[groups.b]\nexecutor = \"docker\"\n[groups.c.limits]\npids = 0\n";
    let d = diags(src);
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d.iter().map(|d| d.line).collect::<Vec<_>>(), vec![4, 6, 7]);
}

#[test]
fn missing_default_group_is_an_error() {
    let d = diags("version = 1\ndefault_group = \"nope\"\n[groups.a]\n");
    assert_eq!((d[0].line, d[0].col), (2, 17));
    assert!(d[0]
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("known groups: a"));
}

#[test]
fn root_user_is_refused() {
    let d = diags("version = 1\n[groups.a]\nuser = { uid = 0 }\n");
    assert!(d[0].message.contains("root"), "{d:?}");
}

#[test]
fn runsc_needs_process_events_off() {
    let d = diags("version = 1\n[groups.a]\nexecutor = \"runsc\"\n");
    assert!(d[0].message.contains("process events"), "{d:?}");
    assert!(p("version = 1\n[groups.a]\nexecutor = \"runsc\"\nprocess_events = false\n").is_ok());
}

#[test]
fn secret_and_env_names_are_checked() {
    let d = diags("version = 1\n[groups.a]\nenv = [\"A*\", \"T\"]\nsecrets = [\"T\"]\n");
    assert_eq!(d.len(), 2, "{d:?}");
}

#[test]
fn missing_version_and_groups() {
    let d = diags("default_group = \"a\"\n");
    assert!(d.iter().any(|d| d.message.contains("version")), "{d:?}");
    assert!(d.iter().any(|d| d.message.contains("groups")), "{d:?}");
}

#[test]
fn asking_for_a_missing_group_names_the_groups() {
    let lp = LoadedPolicy {
        policy: p(GOOD).expect("valid"),
        path: Some("x.toml".into()),
        sha256: String::new(),
    };
    let e = lp.group(Some("nope")).expect_err("missing");
    let s = e.to_string();
    assert!(s.contains("internal, pr") && s.contains("x.toml"), "{s}");
    assert_eq!(lp.group(None).expect("default").0, "pr");
}

#[test]
fn builtin_policy_is_valid_and_most_restrictive() {
    let b = LoadedPolicy::builtin();
    let (name, g) = b.group(None).expect("default group");
    assert_eq!(name, "default");
    assert_eq!(g.trust, Trust::Untrusted);
    assert!(g.env.is_empty() && g.secrets.is_empty());
    // Round trip: the built-in policy written as TOML parses back to itself.
    let text = toml::to_string(&b.policy).expect("serialize");
    assert_eq!(p(&text).expect("reparse"), b.policy);
}

#[test]
fn schema_rejects_unknown_fields() {
    let s = json_schema();
    let group = &s["$defs"]["Group"];
    assert_eq!(
        group["additionalProperties"],
        serde_json::json!(false),
        "{s:#}"
    );
}

#[test]
fn secrets_resolve_from_file_then_env_and_never_print() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("s.toml");
    std::fs::write(&f, "A = \"from-file\"\n").expect("write");
    let env = |n: &str| (n == "B").then(|| "from-env".to_owned());
    let got = resolve_secrets(&["A".into(), "B".into()], Some(&f), &env).expect("resolve");
    assert_eq!(got[0].1.expose(), "from-file");
    assert_eq!(got[1].1.expose(), "from-env");
    assert_eq!(format!("{:?} {}", got[0].1, got[1].1), "*** ***");
    let e = resolve_secrets(&["C".into()], Some(&f), &env).expect_err("missing");
    assert!(e.to_string().contains("\"C\""));
    std::fs::write(&f, "A = [\"hunter2\"\n").expect("write");
    let e = resolve_secrets(&["A".into()], Some(&f), &env).expect_err("bad file");
    assert!(!format!("{e:#?}").contains("hunter2"));
    // Too short to be redacted from the audit log: refused, by name.
    let short = |_: &str| Some("abc".to_owned());
    let e = resolve_secrets(&["PIN".into()], None, &short).expect_err("too short");
    assert!(matches!(e, SecretsError::TooShort { .. }), "{e}");
    assert!(e.to_string().contains("\"PIN\"") && !e.to_string().contains("abc"));
}

#[test]
fn detectors_and_alerts_default_when_absent() {
    let pol = p(GOOD).expect("valid");
    assert_eq!(pol.detectors, Detectors::default());
    assert_eq!(pol.detectors.network_scan.destinations, 10);
    assert_eq!(pol.detectors.network_scan.window.0.as_secs(), 10);
    assert_eq!(pol.detectors.dns_tunnelling.subdomains, 20);
    assert!(pol.detectors.new_destination);
    assert_eq!(pol.alerts, Alerts::default());
}

#[test]
fn detectors_and_alerts_parse() {
    let src = r#"
version = 1
[groups.a]
[detectors]
network_scan = { destinations = 5, window = "30s" }
dns_tunnelling = { subdomains = 50 }
new_destination = false
[alerts]
file = "/var/log/airlock/alerts.jsonl"
webhook = { url = "https://hooks.example.com/airlock", secret = "AIRLOCK_HOOK_KEY", retries = 3 }
"#;
    let pol = p(src).expect("valid");
    assert_eq!(pol.detectors.network_scan.destinations, 5);
    assert_eq!(pol.detectors.network_scan.window.0.as_secs(), 30);
    assert_eq!(pol.detectors.dns_tunnelling.subdomains, 50);
    assert!(!pol.detectors.new_destination);
    assert_eq!(
        pol.alerts.file.as_deref(),
        Some(Path::new("/var/log/airlock/alerts.jsonl"))
    );
    let w = pol.alerts.webhook.expect("webhook");
    assert_eq!(
        (
            w.url.as_str(),
            w.secret.as_str(),
            w.retries,
            w.timeout.0.as_secs()
        ),
        (
            "https://hooks.example.com/airlock",
            "AIRLOCK_HOOK_KEY",
            3,
            5
        )
    );
}

#[test]
fn detector_and_alert_typos_and_bad_values_have_positions() {
    let d = diags("version = 1\n[groups.a]\n[detectors]\nnetwork_scan = { destinatons = 5 }\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].line, 4, "{d:?}");
    assert!(d[0].message.contains("unknown field"), "{d:?}");

    let d = diags("version = 1\n[groups.a]\n[detectors]\nnetwork_scan = { destinations = 1 }\ndns_tunnelling = { subdomains = 0 }\n");
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|d| d.line == 3), "{d:?}");

    let d = diags("version = 1\n[groups.a]\n\n[alerts]\nwebhook = { url = \"http://hooks.example.com/\", secret = \"sk-live-123\", retries = 99 }\n");
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|d| (d.line, d.col) == (4, 1)), "{d:?}");
    assert!(d.iter().any(|d| d.message.contains("https://")), "{d:?}");
    assert!(
        d.iter().any(|d| d.message.contains("not a secret name")),
        "{d:?}"
    );
    assert!(d.iter().any(|d| d.message.contains("retries")), "{d:?}");

    let d = diags("version = 1\n[groups.a]\n[alerts]\nfile = \"alerts.jsonl\"\n");
    assert!(d[0].message.contains("absolute"), "{d:?}");

    let d = diags("version = 1\n[groups.a]\n[alerts]\nwebhook = { url = \"https://x.example\" }\n");
    assert!(d[0].message.contains("missing field `secret`"), "{d:?}");
    assert_eq!(d[0].line, 4, "{d:?}");
}

#[test]
fn plain_http_webhook_only_to_loopback() {
    for (url, ok) in [
        ("http://127.0.0.1:8080/hook", true),
        ("http://[::1]/hook", true),
        ("http://localhost/hook", true),
        ("https://hooks.example.com/", true),
        ("http://10.0.0.1/hook", false),
        ("ftp://hooks.example.com/", false),
        ("not a url", false),
    ] {
        let src = format!(
            "version = 1\n[groups.a]\n[alerts]\nwebhook = {{ url = \"{url}\", secret = \"K\" }}\n"
        );
        assert_eq!(p(&src).is_ok(), ok, "{url}");
    }
}

#[test]
fn schema_has_detectors_and_alerts() {
    let s = json_schema();
    assert!(s["properties"]["detectors"].is_object(), "{s:#}");
    assert_eq!(
        s["$defs"]["Webhook"]["additionalProperties"],
        serde_json::json!(false)
    );
    assert_eq!(
        s["$defs"]["Webhook"]["required"],
        serde_json::json!(["url", "secret"])
    );
}

#[test]
fn group_labels_and_allow_public() {
    let pol = p(r#"
version = 1
default_group = "pr"
[groups.pr]
labels = ["self-hosted", "linux-pr"]
allow_public = true
[groups.internal]
trust = "trusted"
labels = ["deploy"]
"#)
    .expect("valid");
    assert_eq!(pol.groups["pr"].labels, vec!["self-hosted", "linux-pr"]);
    assert!(pol.groups["pr"].allow_public);
    assert!(!pol.groups["internal"].allow_public, "defaults to false");
    let d = diags("version = 1\n[groups.a]\nallow_public = \"yes\"\n");
    assert_eq!(d[0].line, 3);
    let d = diags("version = 1\n[groups.a]\nlabels = [\"ok\", \" padded\"]\n");
    assert!(
        d[0].message.contains("invalid runner label"),
        "{}",
        d[0].message
    );
    let d = diags("version = 1\n[groups.a]\nlabel = [\"x\"]\n");
    assert!(d[0].message.contains("unknown field"), "{}", d[0].message);
}

#[test]
fn serve_fields_parse_with_safe_defaults() {
    let pol = p(GOOD).expect("valid");
    let pr = &pol.groups["pr"];
    assert!(pr.repositories.is_empty(), "no repository unless named");
    assert!(pr.labels.is_empty());
    assert_eq!(pr.max_runners, 4);
    assert_eq!(pr.runner, vec!["/home/runner/actions-runner/run.sh"]);
    assert_eq!(pr.token_permissions, None);
    let pol = p(r#"
version = 1
[groups.ci]
labels = ["airlock-ci"]
repositories = ["octo-org/*"]
workflows = ["octo-org/*/CI"]
max_runners = 2
runner = ["/opt/run.sh", "--once"]
runner_group_id = 7
token_permissions = { contents = "read" }
"#)
    .expect("valid");
    let g = &pol.groups["ci"];
    assert_eq!(g.labels, vec!["airlock-ci"]);
    assert_eq!(g.max_runners, 2);
    assert_eq!(g.runner_group_id, 7);
    assert_eq!(
        g.token_permissions.as_ref().and_then(|m| m.get("contents")),
        Some(&"read".to_owned())
    );
}

#[test]
fn containers_are_validated() {
    let ok = parse(
        "version = 1\n[groups.a]\ncontainers = { max = 3, share = 0.25, allow_root = true, health_timeout = \"30s\", require_job_container = true }\n",
        Path::new("p.toml"),
    )
    .expect("valid");
    let c = ok.groups["a"].containers.as_ref().expect("containers");
    assert_eq!((c.max, c.share, c.allow_root), (3, 0.25, true));
    assert!(c.require_job_container);
    assert_eq!(c.health_timeout.0, std::time::Duration::from_secs(30));
    let d = parse(
        "version = 1\n[groups.a]\ncontainers = {}\n",
        Path::new("p.toml"),
    )
    .expect("defaults");
    let c = d.groups["a"].containers.as_ref().expect("containers");
    assert_eq!((c.max, c.share, c.allow_root), (8, 0.5, false));
    let d = diags(
        "version = 1\n[groups.a]\nexecutor = \"runsc\"\nprocess_events = false\ncontainers = { max = 0, share = 1.5 }\n",
    );
    let all = messages(&d);
    for want in [
        "containers.max must be 1 to 64",
        "containers.share must be between 0 and 1",
        "containers cannot be used with executor runsc",
    ] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
    let d = diags("version = 1\n[groups.a]\ncontainers = { privileged = true }\n");
    assert!(!d.is_empty(), "unknown containers key refused");
}

#[test]
fn scale_sets_are_validated() {
    let ok = parse(
        "version = 1\n[groups.a]\nrepositories = [\"o/*\"]\nmax_runners = 4\nscale_set = { name = \"airlock-a\", labels = [\"gpu\"], min_idle = 2, idle_retire = \"10m\" }\n",
        Path::new("p.toml"),
    )
    .expect("valid");
    let ss = ok.groups["a"].scale_set.as_ref().expect("scale set");
    assert_eq!(ss.runner_group, "Default");
    assert_eq!(ss.min_idle, 2);
    assert_eq!(ss.idle_retire.0, std::time::Duration::from_secs(600));
    let d = diags(
        "version = 1\n[groups.a]\nrepositories = [\"o/*\"]\nmax_runners = 1\nworkflows = [\"o/*/CI\"]\ntoken_permissions = { contents = \"read\" }\nscale_set = { name = \"bad name!\", min_idle = 2, runner_group = \"\" }\n",
    );
    let all = messages(&d);
    for want in [
        "scale set name",
        "min_idle 2 is more than max_runners 1",
        "token_permissions cannot be used with a scale set",
        "workflows cannot be enforced",
        "runner_group is empty",
    ] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
    let d = diags("version = 1\n[groups.a]\nscale_set = { name = \"x\", surprise = 1 }\n");
    assert!(!d.is_empty(), "unknown scale_set key refused");
    assert_eq!(
        ok.groups["a"].prestart, 0,
        "no primed sandboxes unless asked"
    );
    let d = diags(
        "version = 1\n[groups.a]\nrepositories = [\"o/*\"]\nexecutor = \"runc\"\nprestart = 9\n[groups.b]\nprestart = 1\ntoken_permissions = { contents = \"read\" }\n",
    );
    let all = messages(&d);
    for want in [
        "prestart 9 is more than 8",
        "prestart needs the libcontainer executor, not runc",
        "prestart cannot be used with token_permissions",
    ] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
}

#[test]
fn serve_fields_are_validated() {
    let d = diags(
        "version = 1\n[groups.a]\nmax_runners = 0\nrunner = []\nrepositories = [\"justaname\"]\n",
    );
    let all = messages(&d);
    assert!(all.contains("max_runners"), "{all}");
    assert!(all.contains("runner command is empty"), "{all}");
    assert!(all.contains("owner/name"), "{all}");
    let d = diags("version = 1\n[groups.a]\nrunner_labels = [\"x\"]\n");
    assert!(!d.is_empty(), "unknown field refused");
}

#[test]
fn label_routing_ignores_generic_labels_and_needs_every_other_one() {
    let pol = p(r#"
version = 1
default_group = "none"
[groups.gpu]
labels = ["GPU", "cuda"]
[groups.none]
"#)
    .expect("valid");
    let g = &pol.groups["gpu"];
    let sel = selecting_labels(&["self-hosted", "Linux", "X64", "gpu"]);
    assert_eq!(sel, vec!["gpu"]);
    assert!(g.takes_labels(&sel), "generic labels never stop a group");
    assert!(g.takes_labels(&selecting_labels(&["gpu", "CUDA"])));
    assert!(!g.takes_labels(&selecting_labels(&["gpu", "arm64"])));
    // Only generic labels select nothing, so no group takes the job.
    assert!(!g.takes_labels(&selecting_labels(&["self-hosted", "linux"])));
    assert!(!pol.groups["none"].takes_labels(&selecting_labels(&["gpu"])));
}

#[test]
fn the_audit_table_has_safe_defaults_and_refuses_meaningless_bounds() {
    let g = "version = 1\n[groups.default]\n";
    let d = p(g).expect("no [audit]");
    assert_eq!(d.audit, AuditLogSettings::default());
    assert_eq!(d.audit.max_bytes, ByteSize(4 << 30));
    assert_eq!(d.audit.segment_bytes(), 256 << 20);
    let a = p(&format!(
        "{g}[audit]\nmax_bytes = \"64MiB\"\nmax_age = \"30days\"\ncheckpoint_records = 10\ncheckpoint_interval = \"5s\"\n"
    ))
    .expect("good");
    assert_eq!(a.audit.segment_bytes(), 16 << 20);
    assert_eq!(a.audit.max_age.0.as_secs(), 30 * 86400);
    for bad in [
        "max_bytes = \"1MiB\"\nsegment_bytes = \"1MiB\"",
        "segment_bytes = \"1KiB\"",
        "max_age = \"10m\"",
        "checkpoint_records = 0",
        "checkpoint_interval = \"2days\"",
        "keep_forever = true",
    ] {
        let ds = diags(&format!("{g}[audit]\n{bad}\n"));
        assert!(!ds.is_empty(), "{bad} accepted");
    }
}

#[test]
fn audit_bounds_have_safe_defaults_and_are_read() {
    let pol = p("version = 1\n[groups.a]\n").expect("valid");
    let a = &pol.groups["a"].audit;
    assert_eq!(*a, AuditLimits::default());
    assert!(a.max_records > 0 && a.max_records <= 10_000_000);
    let pol = p("version = 1\n[groups.a]\naudit = { records_per_second = 5, burst = 50, max_records = 1000, max_bytes = \"1MiB\", max_file_changes = 10 }\n")
        .expect("valid");
    let a = &pol.groups["a"].audit;
    assert_eq!(
        (
            a.records_per_second,
            a.burst,
            a.max_records,
            a.max_bytes,
            a.max_file_changes
        ),
        (5, 50, 1000, ByteSize(1 << 20), 10)
    );
    assert_eq!(a.max_keys, 256, "default applies");
}

#[test]
fn audit_bounds_that_are_no_bound_point_at_the_value() {
    let src = "version = 1\n[groups.default]\naudit = { records_per_second = 0, max_records = 99999999999 }\n[groups.b.audit]\nburst = 0\nmax_bytes = \"1KiB\"\nmax_keys = 0\nflood_alert = 0\n";
    let d = diags(src);
    let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.col)).collect();
    assert_eq!(
        at,
        vec![(3, 32), (3, 49), (5, 9), (6, 13), (7, 12), (8, 15)],
        "{d:?}"
    );
    assert!(
        d[0].message
            .contains("group default: audit.records_per_second"),
        "{}",
        d[0]
    );
    assert!(d[1].message.contains("audit.max_records"), "{}", d[1]);
    assert!(d[3].message.contains("audit.max_bytes"), "{}", d[3]);
    assert!(d.iter().all(|d| d.hint.is_some()));
    // An unknown key inside `audit` is an error like everywhere else.
    let d = diags("version = 1\n[groups.a]\naudit = { max_record = 5 }\n");
    assert!(d[0].message.contains("unknown field `max_record`"), "{d:?}");
}

#[test]
fn registry_images_need_a_digest_where_the_group_requires_one() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    // Trusted groups require a digest by default; untrusted ones may opt in.
    let e = diags(
        "version = 1\n[groups.default]\ntrust = \"trusted\"\nrootfs = { image = \"ghcr.io/actions/actions-runner:2.330.0\" }\n",
    );
    assert!(e[0].message.contains("has no digest"), "{e:?}");
    let ok = format!(
        "version = 1\n[groups.default]\ntrust = \"trusted\"\nrootfs = {{ image = \"ghcr.io/actions/actions-runner:2.330.0@{d}\" }}\n"
    );
    assert!(p(&ok).is_ok());
    let e = diags(
        "version = 1\n[groups.default]\nrequire_digest = true\nrootfs = { image = \"ghcr.io/a/b:1\" }\n",
    );
    assert!(e[0].message.contains("has no digest"), "{e:?}");
    // An untrusted group may use a tag, with a warning; a local store name is no registry.
    let src = "version = 1\n[groups.default]\nrootfs = { image = \"ghcr.io/a/b:1\" }\n[groups.local]\nrootfs = { image = \"tiny:1\" }\n";
    let pol = p(src).expect("valid");
    let lp = LoadedPolicy {
        policy: pol,
        path: None,
        sha256: String::new(),
    };
    let w = lp.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("ghcr.io/a/b:1") && w[0].contains("without a digest"));
}

#[test]
fn registries_follow_the_allow_list_and_plain_http_stays_on_loopback() {
    let e = diags(
        "version = 1\n[images]\nregistries = [\"registry.internal:5000\"]\n[groups.default]\nrootfs = { image = \"ghcr.io/a/b:1\" }\n",
    );
    assert!(
        e[0].message
            .contains("registry ghcr.io is not in images.registries"),
        "{e:?}"
    );
    assert!(p("version = 1\n[images]\nregistries = [\"ghcr.io\"]\n[groups.default]\nrootfs = { image = \"ghcr.io/a/b:1\" }\n").is_ok());
    let e =
        diags("version = 1\n[images]\ninsecure = [\"registry.example:5000\"]\n[groups.default]\n");
    assert!(e[0].message.contains("not a loopback registry"), "{e:?}");
    assert!(
        p("version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\n[groups.default]\n").is_ok()
    );
    assert_eq!(
        registry_host("127.0.0.1:5000/t/x:1"),
        Some("127.0.0.1:5000")
    );
    assert_eq!(registry_host("library/ubuntu"), None);
    assert_eq!(registry_host("tiny:1"), None);
}

#[test]
fn gateway_bounds_default_and_refuse_no_bound() {
    let pol = p(GOOD).expect("valid");
    let l = &pol.groups["pr"].limits;
    assert_eq!((l.connections, l.flow_rate), (1024, 2000), "defaults apply");
    let base = "version = 1\ndefault_group = \"a\"\n[groups.a.limits]\n";
    let pol = p(&format!("{base}connections = 64\nflow_rate = 50\n")).expect("valid");
    let l = &pol.groups["a"].limits;
    assert_eq!((l.connections, l.flow_rate), (64, 50));
    for (bad, says) in [
        ("connections = 0", "connections must be between 1 and 65536"),
        ("flow_rate = 0", "flow_rate must be between 10 and 1000000"),
        (
            "flow_rate = 5000000",
            "flow_rate must be between 10 and 1000000",
        ),
    ] {
        let d = diags(&format!("{base}{bad}\n"));
        assert!(messages(&d).contains(says), "{bad}: {d:?}");
        assert_eq!(d[0].line, 3, "{bad}: {d:?}");
    }
}
