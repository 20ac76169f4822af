//! Records of a job's network: every DNS query, connection and dropped packet as airlock's
//! egress gateway and firewall saw them. They live here, not in the network crate, because
//! the job report and every reader of it (serve, the drill, `policy suggest`) need them
//! without linking the network stack.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// One query or connection as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// Unix time in milliseconds.
    pub time_ms: u128,
    /// The job.
    pub job: String,
    /// `dns`, `http`, `https`, `connect` or `drop` (a packet the firewall dropped).
    pub kind: String,
    /// The name asked for or connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// DNS query type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    /// The address the gateway resolved and used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<IpAddr>,
    /// The address the job dialled (transparent proxies; informational only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialled: Option<SocketAddr>,
    /// DNS: every address of the answer the job got (`resolved` is the first). The detectors
    /// tell a connection to an address the job looked up from a hard-coded one by these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<IpAddr>,
    /// Destination port.
    pub port: u16,
    /// Bytes from job to destination.
    pub bytes_up: u64,
    /// Bytes from destination to job.
    pub bytes_down: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// A `deny` that is not the policy's: the destination is allowed, but the upstream failed
    /// (no answer, no connection) or the query type is not served. Not an egress attempt;
    /// the detectors skip these by this field, never by the reason's text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allowed_but_failed: bool,
    /// Detector hints, e.g. `dns-tunnelling-suspect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// How many queries or connections this record stands for: more than 1 for an aggregate
    /// of a flood (then `time_ms` is the first, `last_ms` the last, bytes are summed).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// Unix time in milliseconds of the last event of an aggregate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_ms: u128,
}

fn one() -> u64 {
    1
}
fn is_one(n: &u64) -> bool {
    *n == 1
}
fn is_zero(n: &u128) -> bool {
    *n == 0
}

impl ConnRecord {
    /// An empty record of `kind` on `port`: verdict `deny` until something allows it; job and
    /// time are filled in when it is recorded.
    pub fn new(kind: &str, port: u16) -> Self {
        Self {
            time_ms: 0,
            job: String::new(),
            kind: kind.into(),
            name: None,
            qtype: None,
            resolved: None,
            dialled: None,
            answers: vec![],
            port,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            verdict: "deny".into(),
            reason: String::new(),
            allowed_but_failed: false,
            flags: vec![],
            count: 1,
            last_ms: 0,
        }
    }

    /// The key records of a flood are aggregated under: kind, verdict and destination.
    pub fn flood_key(&self) -> String {
        let dest = match (&self.name, &self.dialled, &self.resolved) {
            (Some(n), _, _) => n.clone(),
            (None, Some(d), _) => d.ip().to_string(),
            (None, None, Some(r)) => r.to_string(),
            (None, None, None) => String::new(),
        };
        format!("{} {} {dest}:{}", self.kind, self.verdict, self.port)
    }

    /// Folds `other` (same key) into this aggregate.
    pub fn absorb(&mut self, other: ConnRecord) {
        self.count += other.count;
        self.time_ms = self.time_ms.min(other.time_ms);
        self.last_ms = self
            .last_ms
            .max(other.last_ms)
            .max(other.time_ms)
            .max(self.time_ms);
        self.bytes_up = self.bytes_up.saturating_add(other.bytes_up);
        self.bytes_down = self.bytes_down.saturating_add(other.bytes_down);
        self.duration_ms = self.duration_ms.max(other.duration_ms);
        for f in other.flags {
            if !self.flags.contains(&f) && self.flags.len() < 8 {
                self.flags.push(f);
            }
        }
    }
}
