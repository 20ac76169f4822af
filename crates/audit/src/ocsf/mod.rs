//! The audit records as OCSF 1.4 events, for SIEMs that read OCSF.
//!
//! | record | OCSF class | activity |
//! |---|---|---|
//! | `process.exec` | Process Activity (1007) | 1 Launch |
//! | `process.exit` | Process Activity (1007) | 2 Terminate |
//! | `net.dns` | DNS Activity (4003) | 2 Response |
//! | `net.http` | HTTP Activity (4002) | 99 Other (the method is not recorded) |
//! | `net.connect` | HTTP Activity (4002) | 1 Connect |
//! | `net.https` | Network Activity (4001) | 1 Open, or 5 Refuse when denied |
//! | `net.drop` | Network Activity (4001) | 5 Refuse |
//! | `net.flow` | Network Activity (4001) | 6 Traffic |
//! | `file.changed` | File System Activity (1001) | 1 Create, 3 Update, 4 Delete |
//! | `syscall.denied` | Kernel Activity (1003) | 4 Invoke |
//! | `alert` (an [`Alert`] as data) and [`alert_to_ocsf`] | Detection Finding (2004) | 1 Create |
//!
//! Job lifecycle and `secret.injected` records have no OCSF class that fits; [`to_ocsf`]
//! returns `None` for them (and for unknown kinds). Fields with no OCSF attribute go to
//! `unmapped`. Every event carries `metadata.uid` = the record's sequence number, and
//! `metadata.correlation_uid` = the job.

use serde_json::{json, Map, Value};

use crate::alert::Alert;
use crate::{Kind, Record};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.4.0";

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const PROCESS: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const FILE: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const KERNEL: Class = Class {
    uid: 1003,
    name: "Kernel Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const NETWORK: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const HTTP: Class = Class {
    uid: 4002,
    name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const DNS: Class = Class {
    uid: 4003,
    name: "DNS Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};

fn metadata(uid: Option<String>, job: Option<&str>) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "airlock",
            "vendor_name": "airlock",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "log_name": "audit",
    });
    if let Some(o) = m.as_object_mut() {
        if let Some(u) = uid {
            o.insert("uid".into(), json!(u));
        }
        if let Some(j) = job {
            o.insert("correlation_uid".into(), json!(j));
        }
    }
    m
}

/// The fields every event has, plus `fields`.
#[allow(clippy::too_many_arguments)]
fn event(
    class: &Class,
    activity_id: u32,
    activity_name: &str,
    time: u128,
    severity_id: u8,
    meta: Value,
    fields: Value,
) -> Value {
    let mut e = json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": u64::from(class.uid) * 100 + u64::from(activity_id),
        "type_name": format!("{}: {activity_name}", class.name),
        "time": time,
        "severity_id": severity_id,
        "severity": match severity_id {
            1 => "Informational",
            2 => "Low",
            3 => "Medium",
            4 => "High",
            5 => "Critical",
            _ => "Unknown",
        },
        "metadata": meta,
    });
    if let (Some(o), Value::Object(f)) = (e.as_object_mut(), fields) {
        o.extend(f);
    }
    e
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Inserts `k: v` unless `v` is null.
fn put(o: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        o.insert(k.to_owned(), v);
    }
}

fn disposition(denied: bool, reason: Option<&Value>) -> Value {
    let mut o = Map::new();
    o.insert("action_id".into(), json!(if denied { 2 } else { 1 }));
    o.insert(
        "action".into(),
        json!(if denied { "Denied" } else { "Allowed" }),
    );
    o.insert("disposition_id".into(), json!(if denied { 2 } else { 1 }));
    o.insert(
        "disposition".into(),
        json!(if denied { "Blocked" } else { "Allowed" }),
    );
    o.insert("status_id".into(), json!(if denied { 2 } else { 1 }));
    o.insert(
        "status".into(),
        json!(if denied { "Failure" } else { "Success" }),
    );
    put(&mut o, "status_detail", reason.cloned());
    Value::Object(o)
}

fn merge(a: &mut Value, b: Value) {
    if let (Some(o), Value::Object(b)) = (a.as_object_mut(), b) {
        o.extend(b);
    }
}

/// The destination endpoint of a network record.
fn dst_endpoint(d: &Value) -> Value {
    let mut o = Map::new();
    let dialled = d
        .get("dialled")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok());
    put(&mut o, "hostname", d.get("name").cloned());
    let ip = d
        .get("resolved")
        .cloned()
        .filter(|v| !v.is_null())
        .or(dialled.map(|a| json!(a.ip().to_string())));
    put(&mut o, "ip", ip);
    put(
        &mut o,
        "port",
        d.get("port").cloned().or(dialled.map(|a| json!(a.port()))),
    );
    Value::Object(o)
}

fn traffic(d: &Value) -> Value {
    json!({
        "bytes_out": d.get("bytes_up").and_then(Value::as_u64).unwrap_or(0),
        "bytes_in": d.get("bytes_down").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// The OCSF event of an audit record, or `None` for kinds without a fitting class.
pub fn to_ocsf(rec: &Record) -> Option<Value> {
    let d = &rec.data;
    let meta = || metadata(Some(rec.seq.to_string()), rec.job.as_deref());
    let t = rec.time_ms;
    let net_time = d
        .get("time_ms")
        .and_then(Value::as_u64)
        .map(u128::from)
        .filter(|x| *x > 0)
        .unwrap_or(t);
    let denied = d.get("verdict").and_then(Value::as_str) == Some("deny");
    let net_unmapped = || {
        json!({
            "verdict": d.get("verdict"),
            "flags": d.get("flags").cloned().unwrap_or(json!([])),
            "dialled": d.get("dialled"),
        })
    };
    let ev = match rec.known_kind() {
        Some(Kind::ProcessExec) => {
            // What ran (the watcher's resolved target) before what the caller said.
            let exe = d.get("exe");
            let path = exe
                .and_then(|x| x.get("path"))
                .or_else(|| d.get("path"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let argv: Vec<&str> = crate::detect::strings(d, "argv");
            let mut file = json!({ "path": path, "name": base_name(path) });
            if let Some(h) = exe.and_then(|x| x.get("sha256")).and_then(Value::as_str) {
                file["hashes"] = json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": h }]);
            }
            let mut e = event(
                &PROCESS,
                1,
                "Launch",
                t,
                1,
                meta(),
                json!({
                    "process": {
                        "pid": d.get("pid"),
                        "name": base_name(path),
                        "cmd_line": argv.join(" "),
                        "file": file,
                        "user": { "uid": d.get("uid").map(|u| u.to_string()) },
                        "parent_process": { "pid": d.get("ppid") },
                    },
                    "actor": { "process": { "pid": d.get("ppid") } },
                    "unmapped": { "cwd": d.get("cwd"), "argv": d.get("argv") },
                }),
            );
            // The resolved target and what the caller said, when the record has them.
            if let Some(u) = e.get_mut("unmapped").and_then(Value::as_object_mut) {
                if exe.is_some() {
                    put(u, "path", d.get("path").cloned());
                }
                put(u, "exe", exe.cloned());
                put(u, "argv0_mismatch", d.get("argv0_mismatch").cloned());
            }
            merge(&mut e, json!({"status_id": 1, "status": "Success"}));
            e
        }
        Some(Kind::ProcessExit) => {
            let mut f = json!({
                "process": { "pid": d.get("pid") },
                "actor": { "process": { "pid": d.get("pid") } },
            });
            if let Some(o) = f.as_object_mut() {
                put(o, "exit_code", d.get("exit_code").cloned());
                if let Some(sig) = d.get("signal").filter(|s| !s.is_null()) {
                    o.insert("unmapped".into(), json!({ "signal": sig }));
                }
            }
            event(&PROCESS, 2, "Terminate", t, 1, meta(), f)
        }
        Some(Kind::NetDns) => {
            let mut q = Map::new();
            put(&mut q, "hostname", d.get("name").cloned());
            put(&mut q, "type", d.get("qtype").cloned());
            q.insert("class".into(), json!("IN"));
            let mut f = json!({
                "query": q,
                "dst_endpoint": { "port": 53 },
                "unmapped": net_unmapped(),
            });
            if let (Some(o), Some(ip)) = (
                f.as_object_mut(),
                d.get("resolved").filter(|v| !v.is_null()),
            ) {
                o.insert(
                    "answers".into(),
                    json!([{ "rdata": ip, "type": "A", "class": "IN" }]),
                );
            }
            let mut e = event(&DNS, 2, "Response", net_time, 1, meta(), f);
            merge(&mut e, disposition(denied, d.get("reason")));
            e
        }
        Some(k @ (Kind::NetHttp | Kind::NetConnect)) => {
            let connect = k == Kind::NetConnect;
            let mut url = Map::new();
            put(&mut url, "hostname", d.get("name").cloned());
            put(&mut url, "port", d.get("port").cloned());
            url.insert(
                "scheme".into(),
                json!(if connect { "https" } else { "http" }),
            );
            let mut req = Map::new();
            req.insert("url".into(), Value::Object(url));
            if connect {
                req.insert("http_method".into(), json!("CONNECT"));
            }
            let (id, name) = if connect {
                (1, "Connect")
            } else {
                (99, "Other")
            };
            let mut e = event(
                &HTTP,
                id,
                name,
                net_time,
                1,
                meta(),
                json!({
                    "http_request": req,
                    "dst_endpoint": dst_endpoint(d),
                    "traffic": traffic(d),
                    "duration": d.get("duration_ms"),
                    "unmapped": net_unmapped(),
                }),
            );
            merge(&mut e, disposition(denied, d.get("reason")));
            e
        }
        Some(k @ (Kind::NetHttps | Kind::NetDrop | Kind::NetFlow)) => {
            let (id, name) = match k {
                Kind::NetFlow => (6, "Traffic"),
                _ if denied => (5, "Refuse"),
                _ => (1, "Open"),
            };
            let mut f = json!({
                "dst_endpoint": dst_endpoint(d),
                "traffic": traffic(d),
                "duration": d.get("duration_ms"),
                "connection_info": {
                    "protocol_name": d.get("qtype").and_then(Value::as_str).unwrap_or("tcp"),
                },
                "unmapped": net_unmapped(),
            });
            if k == Kind::NetHttps {
                if let (Some(o), Some(n)) = (f.as_object_mut(), d.get("name")) {
                    o.insert("tls".into(), json!({ "sni": n }));
                }
            }
            let mut e = event(&NETWORK, id, name, net_time, 1, meta(), f);
            merge(&mut e, disposition(denied, d.get("reason")));
            e
        }
        Some(Kind::FileChanged) => {
            let path = d.get("path").and_then(Value::as_str).unwrap_or("");
            let (id, name) = match d.get("change").and_then(Value::as_str) {
                Some("created") => (1, "Create"),
                Some("deleted") => (4, "Delete"),
                _ => (3, "Update"),
            };
            let mode = d.get("mode").and_then(Value::as_u64).unwrap_or(0);
            let (type_id, type_name) = match mode & 0o170_000 {
                0o100_000 => (1, "Regular File"),
                0o040_000 => (2, "Folder"),
                0o020_000 => (3, "Character Device"),
                0o060_000 => (4, "Block Device"),
                0o140_000 => (5, "Local Socket"),
                0o010_000 => (6, "Named Pipe"),
                0o120_000 => (7, "Symbolic Link"),
                _ => (0, "Unknown"),
            };
            event(
                &FILE,
                id,
                name,
                t,
                1,
                meta(),
                json!({
                    "file": {
                        "path": path,
                        "name": base_name(path),
                        "size": d.get("size"),
                        "type_id": type_id,
                        "type": type_name,
                    },
                    "unmapped": {
                        "mode": format!("{:o}", mode),
                        "persistence": d.get("persistence"),
                    },
                }),
            )
        }
        Some(Kind::SyscallDenied) => {
            let mut e = event(
                &KERNEL,
                4,
                "Invoke",
                t,
                1,
                meta(),
                json!({
                    "kernel": {
                        "name": d.get("syscall"),
                        "type_id": 2,
                        "type": "System Call",
                        "system_call": d.get("syscall"),
                    },
                    "actor": { "process": { "pid": d.get("pid") } },
                    "unmapped": { "nr": d.get("nr") },
                }),
            );
            merge(&mut e, disposition(true, d.get("reason")));
            e
        }
        Some(Kind::Alert) => {
            let a: Alert = serde_json::from_value(d.clone()).ok()?;
            let mut e = alert_to_ocsf(&a);
            merge(
                &mut e,
                json!({ "metadata": metadata(Some(rec.seq.to_string()), rec.job.as_deref()) }),
            );
            e
        }
        _ => return None,
    };
    Some(strip_nulls(ev))
}

/// An alert as an OCSF Detection Finding (2004); its evidence records become
/// `finding_info.related_events` (by `metadata.uid`, the sequence number).
pub fn alert_to_ocsf(a: &Alert) -> Value {
    let e = event(
        &FINDING,
        1,
        "Create",
        a.time_ms,
        a.severity.ocsf_id(),
        metadata(
            None,
            Some(&a.job).filter(|j| !j.is_empty()).map(String::as_str),
        ),
        json!({
            "is_alert": true,
            "status_id": 1,
            "status": "New",
            "finding_info": {
                "uid": a.id(),
                "title": a.detector,
                "desc": a.summary,
                "types": [a.detector],
                "analytic": { "name": a.detector, "type_id": 1, "type": "Rule" },
                "attacks": [{
                    "technique": { "uid": a.technique.id, "name": a.technique.name },
                }],
                "related_events": a.evidence.iter().map(|s| json!({ "uid": s.to_string() })).collect::<Vec<_>>(),
            },
        }),
    );
    strip_nulls(e)
}

/// Drops null members (absent optional fields), recursively.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests;
