//! Webhook payloads: every fixture parses into the typed model and validates against
//! GitHub's JSON schema (octokit/webhooks, see tests/fixtures/webhooks/LICENSE-octokit-webhooks);
//! payloads that break the schema are refused by both.

mod common;

use std::path::{Path, PathBuf};

use airlock_github::webhook::{
    parse_event, parse_workflow_job, sign, verify_signature, Event, JobStatus, WorkflowJobAction,
};
use common::validator;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks")
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn payloads() -> Vec<(String, Value)> {
    let mut out: Vec<_> = std::fs::read_dir(fixtures().join("workflow_job"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                read_json(&p),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_fixture_validates_and_parses() {
    let all = payloads();
    assert_eq!(all.len(), 7, "all seven fixtures present");
    for (name, value) in all {
        let action = value["action"].as_str().expect("action").to_owned();
        let v = validator(&action);
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name} breaks its schema: {errors:?}");

        let body = serde_json::to_vec(&value).expect("encode");
        let ev = parse_workflow_job(&body).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert_eq!(
            serde_json::to_value(ev.action).expect("action"),
            Value::String(action.clone())
        );
        assert_eq!(
            ev.workflow_job.id,
            value["workflow_job"]["id"].as_u64().expect("id")
        );
        assert_eq!(
            ev.workflow_job.labels,
            serde_json::from_value::<Vec<String>>(value["workflow_job"]["labels"].clone())
                .expect("labels")
        );
        assert_eq!(
            ev.repository.full_name,
            value["repository"]["full_name"]
                .as_str()
                .expect("full_name")
        );
        assert_eq!(
            ev.installation.as_ref().map(|i| i.id),
            value["installation"]["id"].as_u64()
        );
        assert_eq!(
            ev.organization.is_some(),
            value.get("organization").is_some()
        );
    }
}

#[test]
fn fixture_details() {
    let body = std::fs::read(fixtures().join("workflow_job/queued.payload.json")).expect("read");
    let ev = parse_workflow_job(&body).expect("parse");
    assert_eq!(ev.action, WorkflowJobAction::Queued);
    assert_eq!(ev.workflow_job.status, JobStatus::Queued);
    assert_eq!(ev.workflow_job.run_id, 2202229078);
    assert_eq!(ev.workflow_job.workflow_name.as_deref(), Some("CodeQL"));
    assert_eq!(ev.workflow_job.head_branch.as_deref(), Some("main"));
    assert!(ev.repository.is_public());
    assert!(ev.workflow_job.conclusion.is_none());
    assert_eq!(
        ev.repo_scope(),
        airlock_github::RunnerScope::repo("Octocoders", "Hello-World")
    );
    // No `organization` key, but the owner is an organisation account.
    assert_eq!(ev.org_login(), Some("Octocoders"));

    let body = std::fs::read(fixtures().join("workflow_job/waiting.payload.json")).expect("read");
    let ev = parse_workflow_job(&body).expect("parse");
    assert_eq!(ev.action, WorkflowJobAction::Waiting);
    assert_eq!(ev.workflow_job.labels, ["self-hosted", "k8s"]);
}

type Mutation = Box<dyn Fn(&mut Value)>;

/// Mutations of a valid payload that break GitHub's schema; each must be refused by the
/// schema and by `parse_workflow_job` (the handler's 400).
#[test]
fn schema_breaking_payloads_are_refused() {
    let path = fixtures().join("workflow_job/queued.payload.json");
    let good = read_json(&path);
    let v = validator("queued");
    assert!(v.is_valid(&good));
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "unknown action",
            Box::new(|p| p["action"] = "exploded".into()),
        ),
        (
            "labels not strings",
            Box::new(|p| p["workflow_job"]["labels"] = serde_json::json!([1, 2])),
        ),
        (
            "id is a string",
            Box::new(|p| p["workflow_job"]["id"] = "289782451".into()),
        ),
        (
            "status unknown",
            Box::new(|p| p["workflow_job"]["status"] = "running".into()),
        ),
        (
            "workflow_job missing",
            Box::new(|p| {
                p.as_object_mut().expect("object").remove("workflow_job");
            }),
        ),
        (
            "labels missing",
            Box::new(|p| {
                p["workflow_job"]
                    .as_object_mut()
                    .expect("object")
                    .remove("labels");
            }),
        ),
        (
            "conclusion unknown",
            Box::new(|p| p["workflow_job"]["conclusion"] = "exploded".into()),
        ),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        // For the queued schema an unknown action also fails; use the matching validator.
        assert!(!v.is_valid(&bad), "{what}: schema accepted it");
        let body = serde_json::to_vec(&bad).expect("encode");
        let err = parse_workflow_job(&body).expect_err(what);
        assert!(
            !err.is_unauthorized(),
            "{what}: a parse error is a 400, not a 401"
        );
    }
}

#[test]
fn signed_fixture_round_trip() {
    let body = std::fs::read(
        fixtures().join("workflow_job/completed.success.with-organization.payload.json"),
    )
    .expect("read");
    let secret = b"webhook secret for tests";
    let header = sign(secret, &body);
    verify_signature(secret, &body, Some(&header)).expect("verifies");
    let mut tampered = body.clone();
    if let Some(b) = tampered.iter_mut().find(|b| **b == b'1') {
        *b = b'2';
    }
    assert!(verify_signature(secret, &tampered, Some(&header)).is_err());
    match parse_event("workflow_job", &body).expect("parse") {
        Event::WorkflowJob(ev) => assert_eq!(ev.action, WorkflowJobAction::Completed),
        other => panic!("unexpected {other:?}"),
    }
}
