//! Integration tests: fixture workflows through the whole scanner, snapshots of what a user
//! sees, the SARIF output against the official schema, a property test that nothing panics,
//! and the starter-workflows corpus.

use std::path::{Path, PathBuf};

use airlock_scan::report::{Format, Report, Severity};
use airlock_scan::{run_workflows, scan_workflows, ColorChoice, ScanError, WorkflowsArgs};

const FX: &str = "tests/fixtures";

fn args(paths: &[&str]) -> WorkflowsArgs {
    WorkflowsArgs {
        paths: paths
            .iter()
            .map(|p| PathBuf::from(format!("{FX}/{p}")))
            .collect(),
        color: ColorChoice::Never,
        ..WorkflowsArgs::default()
    }
}

fn scan(paths: &[&str]) -> Report {
    scan_workflows(&args(paths)).expect("scan runs")
}

fn scan_policy(paths: &[&str], policy: &str) -> Report {
    let mut a = args(paths);
    a.policy = Some(PathBuf::from(format!("{FX}/{policy}")));
    scan_workflows(&a).expect("scan runs")
}

/// One line per finding: position, severity, confidence, rule, title; then the summary.
fn compact(r: &Report) -> String {
    let mut s = String::new();
    for f in &r.findings {
        s.push_str(&format!(
            "{}:{}:{} {} ({}) {}: {}\n",
            f.location.file.trim_start_matches(&format!("{FX}/")),
            f.location.line,
            f.location.col,
            f.severity,
            f.confidence,
            f.rule,
            f.title
        ));
    }
    s.push_str(&format!(
        "files={} suppressed={:?} exit={}\n",
        r.files_scanned,
        r.suppressed,
        r.exit_code()
    ));
    s
}

/// Findings of `rule` as (line, severity).
fn hits(r: &Report, rule: &str) -> Vec<(usize, Severity)> {
    r.findings
        .iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.location.line, f.severity))
        .collect()
}

fn wf(name: &str) -> Report {
    scan(&[&format!("workflows/{name}")])
}

#[test]
fn every_workflow_fixture_snapshot() {
    let mut names: Vec<_> = std::fs::read_dir(format!("{FX}/workflows"))
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 20);
    for n in names {
        insta::assert_snapshot!(format!("workflow__{n}"), compact(&wf(&n)));
    }
}

#[test]
fn self_hosted_untrusted_trigger() {
    use Severity::*;
    assert_eq!(
        hits(&wf("sh-pr.yml"), "self-hosted-untrusted-trigger"),
        vec![(9, Critical)]
    );
    assert!(hits(&wf("sh-pr-guarded.yml"), "self-hosted-untrusted-trigger").is_empty());
    assert!(hits(&wf("sh-push.yml"), "self-hosted-untrusted-trigger").is_empty());
    assert!(hits(&wf("hosted-pr.yml"), "self-hosted-untrusted-trigger").is_empty());
    assert_eq!(
        hits(&wf("sh-group.yml"), "self-hosted-untrusted-trigger"),
        vec![(5, High)]
    );
    // Matrix forms: plain (line 8), excluded (none), include adding a self-hosted runner
    // (29), fromJSON (33), a conditional (37), an input (41, low confidence), a dynamic
    // matrix (47, low confidence).
    let r = wf("sh-matrix.yml");
    let lines: Vec<usize> = hits(&r, "self-hosted-untrusted-trigger")
        .iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(lines, vec![8, 29, 33, 37, 41, 47]);
    let titles: Vec<&str> = r.findings.iter().map(|f| f.title.as_str()).collect();
    assert!(
        titles
            .iter()
            .any(|t| t.contains("`included` runs on [self-hosted, gpu] or [windows-latest]")),
        "{titles:#?}"
    );
}

#[test]
fn untrusted_checkout_exec() {
    let r = wf("checkout-exec.yml");
    assert_eq!(
        hits(&r, "untrusted-checkout-exec"),
        vec![(12, Severity::High), (21, Severity::Critical)]
    );
    assert!(hits(&wf("checkout-safe.yml"), "untrusted-checkout-exec").is_empty());
}

#[test]
fn template_injection() {
    let r = wf("injection.yml");
    assert_eq!(
        hits(&r, "template-injection"),
        vec![
            (12, Severity::Critical),
            (17, Severity::Critical),
            (30, Severity::High)
        ]
    );
    let t = wf("tricky-expr.yml");
    let lines: Vec<usize> = hits(&t, "template-injection").iter().map(|h| h.0).collect();
    // format() (7), toJSON(github.event) (9), quoted braces + ['body'] (10), `||` (11),
    // case-insensitive contexts (14); not ==, !, sha, a whole object, or a parse error.
    assert_eq!(lines, vec![7, 9, 10, 11, 14]);
}

#[test]
fn permissions() {
    let r = wf("permissions.yml");
    assert_eq!(
        hits(&r, "excessive-permissions"),
        vec![(2, Severity::High), (6, Severity::High)]
    );
    let r = wf("permissions-untrusted.yml");
    assert_eq!(
        hits(&r, "excessive-permissions"),
        vec![(3, Severity::Medium)]
    );
    let r = wf("missing-permissions.yml");
    assert_eq!(hits(&r, "missing-permissions"), vec![(3, Severity::Low)]);
    assert!(wf("permissions-ok.yml").findings.is_empty());
}

#[test]
fn persist_credentials() {
    let r = wf("persist.yml");
    assert_eq!(
        hits(&r, "persist-credentials"),
        vec![(8, Severity::Medium), (18, Severity::Low)]
    );
}

#[test]
fn secrets_inherit() {
    let r = wf("secrets-inherit.yml");
    assert_eq!(
        hits(&r, "secrets-inherit"),
        vec![(7, Severity::High), (10, Severity::Medium)]
    );
    assert_eq!(hits(&r, "unpinned-action"), vec![(6, Severity::Medium)]);
}

#[test]
fn dangerous_container() {
    let r = wf("container.yml");
    assert_eq!(
        hits(&r, "dangerous-container"),
        vec![
            (9, Severity::Critical),
            (13, Severity::Critical),
            // The host network on a GitHub-hosted VM, in a push-only workflow.
            (26, Severity::Low)
        ]
    );
}

#[test]
fn cache_poisoning() {
    assert_eq!(
        hits(&wf("cache.yml"), "cache-poisoning"),
        vec![(7, Severity::High)]
    );
    // Only the self-hosted job: GitHub's own cache keeps pull-request entries apart, a
    // runner's local caches and tool directories do not.
    assert_eq!(
        hits(&wf("cache-mixed.yml"), "cache-poisoning"),
        vec![(10, Severity::Medium)]
    );
    assert!(hits(&wf("cache-push-only.yml"), "cache-poisoning").is_empty());
}

#[test]
fn unpinned_action() {
    let r = wf("unpinned.yml");
    assert_eq!(
        hits(&r, "unpinned-action"),
        vec![(10, Severity::Medium), (12, Severity::Medium)]
    );
}

#[test]
fn malformed_yaml_is_a_finding_with_position() {
    let r = wf("invalid.yml");
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!((f.rule, f.location.line), ("invalid-yaml", 8));
    assert_eq!(hits(&wf("not-a-workflow.yml"), "invalid-yaml").len(), 1);
}

#[test]
fn anchors_aliases_and_merge_keys_are_audited_and_bombs_bounded() {
    // GitHub accepts anchors: the file is audited, not refused.
    assert!(hits(&wf("anchors.yml"), "invalid-yaml").is_empty());
    // A self-hosted runs-on hidden behind an alias, on a fork-reachable trigger: found, at the
    // alias (line 7), which expands the anchor of line 2.
    let r = wf("anchors-self-hosted.yml");
    assert!(hits(&r, "invalid-yaml").is_empty(), "{:?}", r.findings);
    let sh = hits(&r, "self-hosted-untrusted-trigger");
    assert_eq!(sh.len(), 1, "{:?}", r.findings);
    assert_eq!(sh[0].0, 7, "{:?}", r.findings);
    // The finding names the anchor it expands too, and a finding inside an anchor names the
    // alias that uses it.
    let f = r
        .findings
        .iter()
        .find(|f| f.rule == "self-hosted-untrusted-trigger")
        .expect("finding");
    let rel: Vec<(usize, &str)> = f
        .related
        .iter()
        .map(|x| (x.line, x.message.as_str()))
        .collect();
    assert_eq!(rel, [(2, "the anchor &runner that *runner expands")]);
    let ti: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "template-injection")
        .collect();
    assert!(!ti.is_empty(), "{:?}", r.findings);
    for f in ti {
        assert_eq!(f.location.line, 13, "{f:?}");
        let rel: Vec<(usize, &str)> = f
            .related
            .iter()
            .map(|x| (x.line, x.message.as_str()))
            .collect();
        assert_eq!(
            rel,
            [(16, "used here too, by the alias *greeting")],
            "{f:?}"
        );
    }
    // A closing bracket at its key's column (llama.cpp, accelerate): audited as GitHub runs it.
    let r = wf("flow-closing.yml");
    assert!(hits(&r, "invalid-yaml").is_empty(), "{:?}", r.findings);
    assert_eq!(
        hits(&r, "self-hosted-untrusted-trigger").len(),
        1,
        "{:?}",
        r.findings
    );
    // A billion laughs is a finding, quickly, not a hang.
    let t = std::time::Instant::now();
    let r = wf("alias-bomb.yml");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let f = &r.findings[0];
    assert_eq!(f.rule, "invalid-yaml");
    assert!(f.title.contains("alias bomb"), "{}", f.title);
}

#[test]
fn inline_suppression_is_counted() {
    let r = wf("suppress.yml");
    assert!(hits(&r, "self-hosted-untrusted-trigger").is_empty());
    assert_eq!(hits(&r, "unpinned-action"), vec![(9, Severity::Medium)]);
    assert_eq!(r.suppressed.inline, 2);
}

#[test]
fn config_ignores_are_counted() {
    let r = scan(&["repo-config"]);
    insta::assert_snapshot!("repo_config", compact(&r));
    assert_eq!(
        r.suppressed.config, 3,
        "legacy unpinned + generated unpinned + generated missing-permissions"
    );
    assert!(r
        .findings
        .iter()
        .all(|f| f.location.file.ends_with("current.yml")));
    // An unknown rule in the config is an error, not silence.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[ignore]\nno-such-rule = [\"x\"]\n").expect("write");
    let mut a = args(&["repo-config"]);
    a.config = Some(cfg);
    assert!(matches!(scan_workflows(&a), Err(ScanError::Config { .. })));
}

#[test]
fn policy_cross_checks() {
    let r = scan_policy(
        &["policy/routing.yml", "policy/push-only.yml"],
        "policy/policy.toml",
    );
    insta::assert_snapshot!("policy", compact(&r));
    assert_eq!(
        hits(&r, "policy-trusted-group"),
        vec![
            (11, Severity::Critical),
            (19, Severity::Critical),
            (34, Severity::Critical)
        ]
    );
    assert_eq!(
        hits(&r, "policy-unrouted-labels"),
        vec![(15, Severity::Medium), (24, Severity::Medium)]
    );
    let public: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "policy-public-trusted-group")
        .collect();
    assert_eq!(public.len(), 1);
    assert!(public[0].location.file.ends_with("policy.toml"));
    assert_eq!(public[0].location.line, 9);
    // push-only routes to the trusted group, but outsiders cannot start it.
    assert!(!r
        .findings
        .iter()
        .any(|f| f.location.file.ends_with("push-only.yml") && f.rule.starts_with("policy-")));
    // Policy labels make a custom label certainly self-hosted.
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "self-hosted-untrusted-trigger"
            && f.location.line == 7
            && f.confidence == airlock_scan::report::Confidence::High));
    // Without the policy there is no policy finding.
    let r = scan(&["policy/routing.yml"]);
    assert!(!r.findings.iter().any(|f| f.rule.starts_with("policy-")));
}

#[test]
fn invalid_policy_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "version = 1\n[groups.a]\nlabels = 3\n").expect("write");
    let mut a = args(&["workflows/sh-pr.yml"]);
    a.policy = Some(p);
    assert!(matches!(scan_workflows(&a), Err(ScanError::Policy { .. })));
}

#[test]
fn reusable_workflows_inherit_caller_triggers() {
    let r = scan(&["repo-reusable"]);
    insta::assert_snapshot!("repo_reusable", compact(&r));
    let build: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.location.file.ends_with("build.yml"))
        .map(|f| f.rule)
        .collect();
    assert!(
        build.contains(&"self-hosted-untrusted-trigger"),
        "{build:?}"
    );
    assert!(build.contains(&"untrusted-checkout-exec"), "{build:?}");
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "secrets-inherit" && f.location.file.ends_with("caller.yml")));
    // A workflow of the same name in another repository is not the callee.
    let r2 = scan(&["repo-reusable", "repo-reusable-2"]);
    assert!(!r2
        .findings
        .iter()
        .any(|f| f.location.file.contains("repo-reusable-2")
            && f.rule == "self-hosted-untrusted-trigger"));
    assert!(r2.findings.iter().any(|f| f
        .location
        .file
        .ends_with("repo-reusable/.github/workflows/build.yml")
        && f.rule == "self-hosted-untrusted-trigger"));
    // Nobody calls unused.yml, so nothing untrusted reaches it.
    assert!(!r
        .findings
        .iter()
        .any(|f| f.location.file.ends_with("unused.yml")
            && f.rule == "self-hosted-untrusted-trigger"));
}

#[test]
fn composite_actions() {
    let r = scan(&["composite"]);
    insta::assert_snapshot!("composite", compact(&r));
    assert_eq!(r.files_scanned, 2);
    let rules: Vec<_> = r
        .findings
        .iter()
        .map(|f| (f.rule, f.location.line))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("persist-credentials", 6),
            ("unpinned-action", 7),
            ("template-injection", 9)
        ]
    );
}

#[test]
fn empty_directory_says_so() {
    let mut out = Vec::new();
    let code = run_workflows(&args(&["empty-repo"]), &mut out).expect("runs");
    let s = String::from_utf8(out).expect("utf8");
    assert_eq!(code, 0);
    assert!(
        s.starts_with("no workflows or actions found in tests/fixtures/empty-repo"),
        "{s}"
    );
    let e = scan_workflows(&args(&["does-not-exist"]));
    assert!(matches!(e, Err(ScanError::NoSuchPath { .. })));
}

/// A monorepo or a folder of checkouts: every `.github/workflows` below it is scanned, and
/// composite actions anywhere (before, only `DIR/.github/workflows` was read: "0 files").
#[test]
fn workflows_below_the_scanned_directory_are_found() {
    let r = scan(&["monorepo"]);
    assert_eq!(r.files_scanned, 2, "{:?}", r.findings);
    let files: Vec<&str> = r
        .findings
        .iter()
        .map(|f| f.location.file.as_str())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("services/api/.github/workflows/ci.yml")),
        "{files:?}"
    );
    assert!(
        !hits(&r, "self-hosted-untrusted-trigger").is_empty(),
        "the nested workflow is audited: {:?}",
        r.findings
    );
}

/// A guard is what keeps every fork out, decided by evaluating `if:`: `!(same repo)` runs only
/// for forks and a label lets a fork in (both found, where text matching called them
/// guarded); `event_name == 'push'` and the same-repository check do keep forks out.
#[test]
fn fork_guards_are_evaluated_not_matched_as_text() {
    let r = wf("guards-evaluated.yml");
    let jobs: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.rule == "self-hosted-untrusted-trigger")
        .map(|f| f.title.as_str())
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(jobs.iter().any(|t| t.contains("`only-forks`")), "{jobs:#?}");
    assert!(
        jobs.iter().any(|t| t.contains("`labelled-forks`")),
        "{jobs:#?}"
    );
}

fn render(paths: &[&str], format: Format, min: Severity) -> (i32, String) {
    let mut a = args(paths);
    a.format = format;
    a.min_severity = min;
    let mut out = Vec::new();
    let code = run_workflows(&a, &mut out).expect("runs");
    (code, String::from_utf8(out).expect("utf8"))
}

#[test]
fn plain_output_and_exit_codes() {
    let (code, s) = render(&["workflows/injection.yml"], Format::Plain, Severity::Info);
    assert_eq!(code, 14);
    insta::assert_snapshot!("plain_injection", s);
    let (code, _) = render(&["workflows/persist.yml"], Format::Plain, Severity::Info);
    assert_eq!(code, 12);
    let (code, s) = render(&["workflows/persist.yml"], Format::Plain, Severity::High);
    assert_eq!(code, 0);
    assert!(s.contains("2 below minimum severity"), "{s}");
    let (code, _) = render(
        &["workflows/permissions-ok.yml"],
        Format::Plain,
        Severity::Info,
    );
    assert_eq!(code, 0);
    let mut a = args(&["workflows/sh-pr.yml"]);
    a.color = ColorChoice::Always;
    let mut out = Vec::new();
    run_workflows(&a, &mut out).expect("runs");
    assert!(String::from_utf8_lossy(&out).contains("\x1b[1;31mcritical"));
}

#[test]
fn json_output() {
    let (_, s) = render(&["workflows/sh-pr.yml"], Format::Json, Severity::Info);
    insta::assert_snapshot!("json_sh_pr", s);
    let v: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert_eq!(v["summary"]["exit_code"], 14);
    assert_eq!(v["findings"][0]["rule"], "self-hosted-untrusted-trigger");
    assert_eq!(v["findings"][0]["line"], 9);
}

#[test]
fn github_annotations() {
    let (_, s) = render(&["workflows/unpinned.yml"], Format::Github, Severity::Info);
    let first = s.lines().next().expect("line");
    assert!(
        first.starts_with("::warning file=tests/fixtures/workflows/unpinned.yml,line=10,col=9,title=airlock unpinned-action (medium)::`someone/setup-thing@v1` is not pinned"),
        "{first}"
    );
}

#[test]
fn sarif_validates_against_the_official_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/data/sarif-schema-2.1.0.json").expect("schema file"),
    )
    .expect("schema json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let all = ["workflows", "policy", "repo-reusable", "composite"];
    let mut a = args(&all);
    a.policy = Some(PathBuf::from(format!("{FX}/policy/policy.toml")));
    a.format = Format::Sarif;
    let mut out = Vec::new();
    run_workflows(&a, &mut out).expect("runs");
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let results = doc["runs"][0]["results"].as_array().expect("results");
    assert!(results.len() > 40);
    // Every result points at a rule in the driver's list.
    let rules = doc["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    for r in results {
        let i = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        assert!(
            !r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .expect("uri")
                .starts_with('/')
        );
    }
    // The validator is real: a broken document fails.
    let mut broken = doc.clone();
    broken["runs"][0]["results"][0]["level"] = serde_json::json!("fatal");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn starter_workflows_corpus_scans_cleanly() {
    // shared/ lies beside the repository (../shared from its root).
    let corpus = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/starter-workflows"
    ));
    if !corpus.is_dir() {
        eprintln!("corpus not present, skipping");
        return;
    }
    let a = WorkflowsArgs {
        paths: vec![corpus.to_path_buf()],
        ..WorkflowsArgs::default()
    };
    let r = scan_workflows(&a).expect("scan runs");
    assert!(r.files_scanned >= 170);
    // Two starter workflows keep a `{{ groupId }}` placeholder: a mapping used as a key,
    // which GitHub rejects as well. Nothing else may fail to parse.
    let invalid: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "invalid-yaml")
        .collect();
    assert!(invalid.len() <= 2, "{invalid:#?}");
    assert!(
        invalid
            .iter()
            .all(|f| f.title.contains("mapping keys must be plain scalars")),
        "{invalid:#?}"
    );
    let mut counts = std::collections::BTreeMap::new();
    for f in &r.findings {
        *counts
            .entry(format!("{} {}", f.rule, f.severity))
            .or_insert(0usize) += 1;
    }
    let text: String = counts.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    insta::assert_snapshot!(
        "corpus_counts",
        format!("files: {}\n{text}", r.files_scanned)
    );
}

mod fuzz {
    use proptest::prelude::*;

    fn fixtures() -> Vec<String> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("tests/fixtures/workflows")
            .expect("dir")
            .flatten()
        {
            v.push(std::fs::read_to_string(e.path()).expect("read"));
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = airlock_scan::scan_source("x.yml", &s, false, None);
            let _ = airlock_scan::scan_source("action.yml", &s, true, None);
        }

        #[test]
        fn yamlish_text_never_panics(s in "[ a-z:\\-\\[\\]{}$|>'\"#&*!\n]{0,300}") {
            let _ = airlock_scan::scan_source("x.yml", &s, false, None);
        }

        #[test]
        fn mutated_fixtures_never_panic(idx in 0usize..100, at in 0usize..4000, cut in 0usize..40, ins in "[\\PC\n]{0,12}") {
            let fx = fixtures();
            let src = &fx[idx % fx.len()];
            let mut chars: Vec<char> = src.chars().collect();
            let at = at % (chars.len() + 1);
            let end = (at + cut).min(chars.len());
            chars.splice(at..end, ins.chars());
            let text: String = chars.into_iter().collect();
            let _ = airlock_scan::scan_source("x.yml", &text, false, None);
        }

        #[test]
        fn expressions_never_panic(s in "[a-z.()'\\[\\]!=&|,* 0-9{}]{0,80}") {
            if let Ok(e) = airlock_scan::expr::parse(&s) {
                let _ = airlock_scan::expr::eval(&e, &serde_json::json!({"os": ["a"]}));
                let _ = airlock_scan::expr::value_contexts(&e);
            }
            let _ = airlock_scan::expr::eval_template(&format!("${{{{ {s} }}}}"), &serde_json::json!({}));
        }
    }
}

/// The pull request's code reaches a privileged job by more roads than `actions/checkout`'s
/// `ref:`: `gh pr checkout`, a fetched `pull/N/head` then `FETCH_HEAD`, the artifacts of the
/// run that triggered a `workflow_run` job, a head SHA handed to a reusable workflow.
#[test]
fn pull_request_code_taken_by_other_roads_is_found() {
    let r = wf("checkout-variants.yml");
    let jobs: Vec<(usize, String)> = r
        .findings
        .iter()
        .filter(|f| f.rule == "untrusted-checkout-exec")
        .map(|f| (f.location.line, f.title.clone()))
        .collect();
    let has = |job: &str, line: usize, what: &str| {
        jobs.iter()
            .any(|(l, t)| *l == line && t.contains(&format!("job `{job}`")) && t.contains(what))
    };
    assert!(has("gh-cli", 13, "gh pr checkout"), "{jobs:#?}");
    assert!(has("fetch-head", 19, "FETCH_HEAD"), "{jobs:#?}");
    assert!(has("artifact", 25, "artifacts"), "{jobs:#?}");
    // Reading an artifact, or fetching a pull ref only to diff it, runs nothing of it.
    for safe in ["artifact-read-only", "fetch-diff-only"] {
        assert!(
            !jobs
                .iter()
                .any(|(_, t)| t.contains(&format!("job `{safe}`"))),
            "{safe}: {jobs:#?}"
        );
    }
    assert_eq!(jobs.len(), 3, "{jobs:#?}");

    let r = scan(&["reusable-head"]);
    let uce: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "untrusted-checkout-exec")
        .collect();
    assert_eq!(uce.len(), 1, "{:#?}", r.findings);
    assert!(uce[0].location.file.ends_with("build.yml"), "{:?}", uce[0]);
    assert!(uce[0].title.contains("job `build`"), "{}", uce[0].title);
    assert!(uce[0].title.contains("input `sha`"), "{}", uce[0].title);
}

/// GPU jobs' container options graded by what they open and who can start the job; a job
/// behind an environment is one level lower and says why.
#[test]
fn container_options_are_graded_and_environments_mitigate() {
    let r = wf("container-gpu.yml");
    let got: Vec<(usize, Severity, String)> = r
        .findings
        .iter()
        .filter(|f| f.rule == "dangerous-container" || f.rule == "self-hosted-untrusted-trigger")
        .map(|f| (f.location.line, f.severity, f.title.clone()))
        .collect();
    let sev = |job: &str, what: &str| -> Vec<Severity> {
        got.iter()
            .filter(|(_, _, t)| t.contains(&format!("job `{job}`")) && t.contains(what))
            .map(|(_, s, _)| *s)
            .collect()
    };
    // Reachable from forks, self-hosted: GPU devices and host IPC are medium, not critical.
    assert_eq!(sev("rocm", "/dev/kfd"), [Severity::Medium], "{got:#?}");
    assert_eq!(sev("rocm", "IPC"), [Severity::Medium], "{got:#?}");
    // Behind an environment: one level lower, and the finding says so.
    assert_eq!(
        sev("rocm-reviewed", "/dev/kfd"),
        [Severity::Low],
        "{got:#?}"
    );
    assert_eq!(
        sev("rocm-reviewed", "--privileged"),
        [Severity::High],
        "{got:#?}"
    );
    assert_eq!(
        sev("rocm-reviewed", "runs on"),
        [Severity::High],
        "{got:#?}"
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.title.contains("rocm-reviewed") && f.title.contains("--privileged"))
        .expect("finding");
    assert!(
        f.explanation.contains("environment `gpu-ci`"),
        "{}",
        f.explanation
    );
    // Not reachable by outsiders: the device is low, --privileged stays critical.
    assert_eq!(
        sev("cuda-push-only", "nvidia0"),
        [Severity::Low],
        "{got:#?}"
    );
    assert_eq!(
        sev("cuda-push-only", "--privileged"),
        [Severity::Critical],
        "{got:#?}"
    );
}
