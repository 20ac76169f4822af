use serde_json::json;

use super::*;
use crate::alert::{Severity, Technique};

fn rec(seq: u64, kind: &str, data: Value) -> Record {
    Record {
        seq,
        time_ms: 1_700_000_000_123,
        kind: kind.into(),
        job: Some("job-1".into()),
        data,
        prev: String::new(),
    }
}

#[test]
fn exec_is_a_process_launch() {
    let e = to_ocsf(&rec(
        7,
        "process.exec",
        json!({"pid": 4101, "ppid": 4000, "uid": 1001, "cwd": "/home/runner/work",
               "path": "/usr/bin/rustc", "argv": ["rustc", "--edition=2021", "src/lib.rs"]}),
    ))
    .expect("mapped");
    assert_eq!(
        e,
        json!({
            "class_uid": 1007,
            "class_name": "Process Activity",
            "category_uid": 1,
            "category_name": "System Activity",
            "activity_id": 1,
            "activity_name": "Launch",
            "type_uid": 100701,
            "type_name": "Process Activity: Launch",
            "time": 1_700_000_000_123u64,
            "severity_id": 1,
            "severity": "Informational",
            "status_id": 1,
            "status": "Success",
            "metadata": {
                "version": "1.4.0",
                "product": {"name": "airlock", "vendor_name": "airlock", "version": env!("CARGO_PKG_VERSION")},
                "log_name": "audit",
                "uid": "7",
                "correlation_uid": "job-1",
            },
            "process": {
                "pid": 4101,
                "name": "rustc",
                "cmd_line": "rustc --edition=2021 src/lib.rs",
                "file": {"path": "/usr/bin/rustc", "name": "rustc"},
                "user": {"uid": "1001"},
                "parent_process": {"pid": 4000},
            },
            "actor": {"process": {"pid": 4000}},
            "unmapped": {"cwd": "/home/runner/work", "argv": ["rustc", "--edition=2021", "src/lib.rs"]},
        })
    );
}

#[test]
fn exit_is_a_process_terminate_with_exit_code_or_signal() {
    let e = to_ocsf(&rec(
        8,
        "process.exit",
        json!({"pid": 4101, "exit_code": 0}),
    ))
    .expect("mapped");
    assert_eq!(
        (e["type_uid"].clone(), e["exit_code"].clone()),
        (json!(100702), json!(0))
    );
    assert!(e.get("unmapped").is_none());
    let e = to_ocsf(&rec(9, "process.exit", json!({"pid": 4101, "signal": 9}))).expect("mapped");
    assert!(e.get("exit_code").is_none());
    assert_eq!(e["unmapped"]["signal"], 9);
}

#[test]
fn dns_answers_and_refusals() {
    let e = to_ocsf(&rec(
        10,
        "net.dns",
        json!({"time_ms": 1_700_000_000_000u64, "kind": "dns", "name": "static.crates.io", "qtype": "A",
               "resolved": "203.0.113.10", "port": 53, "verdict": "allow", "reason": "allow-listed"}),
    ))
    .expect("mapped");
    assert_eq!(e["class_uid"], 4003);
    assert_eq!(e["type_uid"], 400302);
    assert_eq!(e["time"], 1_700_000_000_000u64, "the event's own time");
    assert_eq!(
        e["query"],
        json!({"hostname": "static.crates.io", "type": "A", "class": "IN"})
    );
    assert_eq!(e["answers"][0]["rdata"], "203.0.113.10");
    assert_eq!(
        (e["disposition_id"].clone(), e["action_id"].clone()),
        (json!(1), json!(1))
    );
    let e = to_ocsf(&rec(
        11,
        "net.dns",
        json!({"name": "x.evil.example", "qtype": "TXT", "port": 53, "verdict": "deny",
               "reason": "name not in the group's allow-list", "flags": ["dns-tunnelling-suspect"]}),
    ))
    .expect("mapped");
    assert_eq!(
        (e["disposition"].clone(), e["status_id"].clone()),
        (json!("Blocked"), json!(2))
    );
    assert_eq!(e["status_detail"], "name not in the group's allow-list");
    assert_eq!(e["unmapped"]["flags"], json!(["dns-tunnelling-suspect"]));
    assert!(e.get("answers").is_none());
}

#[test]
fn network_and_http_records() {
    let e = to_ocsf(&rec(
        12,
        "net.https",
        json!({"name": "static.crates.io", "resolved": "203.0.113.10", "port": 443,
               "bytes_up": 10, "bytes_down": 2000, "duration_ms": 40, "verdict": "allow", "reason": "allow-listed"}),
    ))
    .expect("mapped");
    assert_eq!(
        (e["class_uid"].clone(), e["activity_id"].clone()),
        (json!(4001), json!(1))
    );
    assert_eq!(e["tls"]["sni"], "static.crates.io");
    assert_eq!(
        e["dst_endpoint"],
        json!({"hostname": "static.crates.io", "ip": "203.0.113.10", "port": 443})
    );
    assert_eq!(e["traffic"], json!({"bytes_out": 10, "bytes_in": 2000}));
    assert_eq!(e["duration"], 40);

    let e = to_ocsf(&rec(
        13,
        "net.drop",
        json!({"qtype": "tcp", "dialled": "169.254.169.254:80", "port": 80, "verdict": "deny",
               "reason": "never reachable (cloud metadata / loopback)"}),
    ))
    .expect("mapped");
    assert_eq!(
        (e["type_uid"].clone(), e["disposition_id"].clone()),
        (json!(400105), json!(2))
    );
    assert_eq!(
        e["dst_endpoint"],
        json!({"ip": "169.254.169.254", "port": 80})
    );
    assert_eq!(e["connection_info"]["protocol_name"], "tcp");

    let e = to_ocsf(&rec(14, "net.flow", json!({"dialled": "198.51.100.1:22", "port": 22, "verdict": "allow", "reason": "audit mode"}))).expect("mapped");
    assert_eq!(e["type_uid"], 400106);

    let e = to_ocsf(&rec(
        15,
        "net.connect",
        json!({"name": "github.com", "port": 443, "verdict": "allow"}),
    ))
    .expect("mapped");
    assert_eq!(
        (
            e["type_uid"].clone(),
            e["http_request"]["http_method"].clone()
        ),
        (json!(400201), json!("CONNECT"))
    );
    let e = to_ocsf(&rec(16, "net.http", json!({"name": "example.com", "port": 80, "verdict": "deny", "reason": "name not in the group's allow-list"}))).expect("mapped");
    assert_eq!(e["type_uid"], 400299);
    assert_eq!(
        e["http_request"]["url"],
        json!({"hostname": "example.com", "port": 80, "scheme": "http"})
    );
}

#[test]
fn files_syscalls_and_unmapped_kinds() {
    let e = to_ocsf(&rec(
        20,
        "file.changed",
        json!({"path": "/home/runner/.ssh/authorized_keys", "change": "created", "size": 400,
               "mode": 0o100_600, "persistence": "authorized-keys"}),
    ))
    .expect("mapped");
    assert_eq!(e["type_uid"], 100101);
    assert_eq!(
        e["file"],
        json!({"path": "/home/runner/.ssh/authorized_keys", "name": "authorized_keys", "size": 400,
               "type_id": 1, "type": "Regular File"})
    );
    assert_eq!(
        e["unmapped"],
        json!({"mode": "100600", "persistence": "authorized-keys"})
    );
    let del = to_ocsf(&rec(
        21,
        "file.changed",
        json!({"path": "/etc/x", "change": "deleted", "size": 0, "mode": 0}),
    ))
    .expect("mapped");
    assert_eq!(del["activity_name"], "Delete");

    let e = to_ocsf(&rec(
        22,
        "syscall.denied",
        json!({"pid": 4242, "syscall": "mount", "nr": 165, "reason": "seccomp"}),
    ))
    .expect("mapped");
    assert_eq!(e["type_uid"], 100304);
    assert_eq!(e["kernel"]["system_call"], "mount");
    assert_eq!(e["disposition"], "Blocked");

    for kind in [
        "job.requested",
        "job.started",
        "job.ended",
        "secret.injected",
        "something.else",
    ] {
        assert!(to_ocsf(&rec(30, kind, json!({}))).is_none(), "{kind}");
    }
}

#[test]
fn alerts_are_detection_findings() {
    let a = Alert {
        detector: "metadata-access".into(),
        technique: Technique::new("T1552.005", "Cloud Instance Metadata API"),
        severity: Severity::High,
        job: "job-1".into(),
        summary: "the job reached for the cloud metadata service (blocked): 169.254.169.254:80"
            .into(),
        evidence: vec![12, 13],
        time_ms: 1_700_000_000_500,
    };
    let e = alert_to_ocsf(&a);
    assert_eq!(
        (e["class_uid"].clone(), e["type_uid"].clone()),
        (json!(2004), json!(200401))
    );
    assert_eq!(
        (e["severity_id"].clone(), e["severity"].clone()),
        (json!(4), json!("High"))
    );
    assert_eq!(e["is_alert"], true);
    assert_eq!(e["metadata"]["correlation_uid"], "job-1");
    let fi = &e["finding_info"];
    assert_eq!(fi["uid"], a.id());
    assert_eq!(
        fi["attacks"][0]["technique"],
        json!({"uid": "T1552.005", "name": "Cloud Instance Metadata API"})
    );
    assert_eq!(fi["related_events"], json!([{"uid": "12"}, {"uid": "13"}]));
    // Logged as an `alert` record, the same finding with the record's metadata.
    let r = rec(40, "alert", serde_json::to_value(&a).expect("json"));
    let e2 = to_ocsf(&r).expect("mapped");
    assert_eq!(e2["finding_info"], e["finding_info"]);
    assert_eq!(e2["metadata"]["uid"], "40");
    assert!(to_ocsf(&rec(41, "alert", json!({"not": "an alert"}))).is_none());
}

#[test]
fn an_exec_names_what_ran_with_its_hash() {
    let e = to_ocsf(&rec(
        9,
        "process.exec",
        json!({"pid": 5, "ppid": 4, "uid": 1001, "cwd": "/tmp", "path": "",
               "argv": ["[kworker/0:1]"], "argv0_mismatch": true,
               "exe": {"path": "memfd:x", "memfd": "memfd:x", "deleted": true, "via": "fd",
                       "fd": 3, "sha256": "ab12"}}),
    ))
    .expect("mapped");
    assert_eq!(e["process"]["name"], "memfd:x");
    assert_eq!(
        e["process"]["file"],
        json!({"path": "memfd:x", "name": "memfd:x",
               "hashes": [{"algorithm_id": 3, "algorithm": "SHA-256", "value": "ab12"}]})
    );
    assert_eq!(e["unmapped"]["path"], "");
    assert_eq!(e["unmapped"]["exe"]["memfd"], "memfd:x");
    assert_eq!(e["unmapped"]["argv0_mismatch"], true);
}
