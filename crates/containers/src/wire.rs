//! Between the hook and the container API: newline-delimited JSON on a Unix socket. The hook
//! sends one line, `{"request": "<the runner's request, verbatim>"}`; the API answers with
//! output frames (`{"o": base64}` for stdout, `{"e": base64}` for stderr: exact bytes, any
//! encoding) and one final frame `{"exit": N, "response": {...}}`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The largest request line the API reads (the runner's requests are a few KiB).
pub const MAX_REQUEST: usize = 1 << 20;

/// The hook's one line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The runner's request, as the runner wrote it.
    pub request: String,
}

/// A frame of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the hook's stdout.
    Out(Vec<u8>),
    /// Bytes for the hook's stderr.
    Err(Vec<u8>),
    /// The end: the hook's exit code and the response it appends to `responseFile`.
    Exit {
        /// Exit code.
        code: i32,
        /// The response, if the command has one.
        response: Option<serde_json::Value>,
    },
}

impl Frame {
    /// The frame as one line (with its newline).
    pub fn line(&self) -> Vec<u8> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let v = match self {
            Self::Out(b) => serde_json::json!({ "o": b64(b) }),
            Self::Err(b) => serde_json::json!({ "e": b64(b) }),
            Self::Exit { code, response } => {
                serde_json::json!({ "exit": code, "response": response })
            }
        };
        let mut s = v.to_string().into_bytes();
        s.push(b'\n');
        s
    }

    /// Reads a frame back (for tests and the drill, which speak the protocol themselves).
    pub fn parse(line: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let d = |s: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str()?)
                .ok()
        };
        if let Some(o) = v.get("o") {
            return d(o).map(Self::Out);
        }
        if let Some(e) = v.get("e") {
            return d(e).map(Self::Err);
        }
        let code = i32::try_from(v.get("exit")?.as_i64()?).ok()?;
        let response = v.get("response").filter(|r| !r.is_null()).cloned();
        Some(Self::Exit { code, response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_exact_bytes() {
        for f in [
            Frame::Out(vec![0, 255, b'\n', 0x1b]),
            Frame::Err(b"err".to_vec()),
            Frame::Exit {
                code: 42,
                response: Some(serde_json::json!({"state": {"a": 1}})),
            },
            Frame::Exit {
                code: 0,
                response: None,
            },
        ] {
            let line = String::from_utf8(f.line()).expect("utf8");
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Frame::parse(line.trim_end()), Some(f));
        }
    }
}
