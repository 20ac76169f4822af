//! The gate of a primed sandbox: a sandbox created, checked and waiting, whose command starts
//! only when the environment it was missing arrives (a runner's credentials, which exist only
//! once a job needs the runner). `airlock serve` keeps a few ready so a runner's first instruction
//! runs within milliseconds of its decision (docs/serve.md, "Primed sandboxes").
//!
//! The late environment travels as one frame: airlock → helper (its control socket) →
//! the job's init process (a pipe the helper made before `create`, read by the executor
//! after the start signal, right before it execs the command). Nothing of the job has run
//! before the frame is read: the init is libcontainer's, waiting on its start signal.
//!
//! Frame: a 4-byte little-endian length, then `NAME=VALUE` entries each ended by a NUL. A
//! hand-written format because it is read in the job's init process after seccomp is in
//! force and before exec: no allocation-heavy parser, no serde, one `read` loop.

use std::io::{Read, Write};

/// The largest frame: it must fit in a pipe's buffer (the helper writes it before the init
/// reads it, and a single-threaded helper cannot wait on both).
pub const MAX_FRAME: usize = 60 * 1024;

/// What the helper writes on its control socket once the container exists and its
/// protections were read back: the sandbox is primed.
pub const READY: &[u8] = b"r";

/// Why a late environment cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A name that is not a plain environment variable name.
    #[error("late environment: {0:?} is not a variable name")]
    BadName(String),
    /// A value with a NUL byte.
    #[error("late environment: the value of {0} holds a NUL byte")]
    BadValue(String),
    /// Larger than [`MAX_FRAME`].
    #[error("late environment: {0} bytes, more than the {MAX_FRAME} a start frame holds")]
    TooLarge(usize),
    /// Not a frame.
    #[error("late environment: malformed frame ({0})")]
    Malformed(&'static str),
}

/// A plain variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

/// Encodes `env` as a frame (length prefix included).
pub fn encode(env: &[(String, String)]) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::new();
    for (k, v) in env {
        if !valid_name(k) {
            return Err(FrameError::BadName(k.clone()));
        }
        if v.contains('\0') {
            return Err(FrameError::BadValue(k.clone()));
        }
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame's body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = body.strip_suffix(&[0]) else {
        return Err(FrameError::Malformed("no final NUL"));
    };
    body.split(|b| *b == 0)
        .map(|e| {
            let s = std::str::from_utf8(e).map_err(|_| FrameError::Malformed("not UTF-8"))?;
            let (k, v) = s
                .split_once('=')
                .ok_or(FrameError::Malformed("an entry without '='"))?;
            if !valid_name(k) {
                return Err(FrameError::BadName(k.to_owned()));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Reads one frame's body from `r`. `Ok(None)`: the other side closed before a frame began.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            FrameError::TooLarge(n),
        ));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes an encoded frame (from [`encode`]) to `w`.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips() {
        let env = vec![
            (
                "ACTIONS_RUNNER_INPUT_JITCONFIG".to_owned(),
                "eyJh=b==".to_owned(),
            ),
            ("EMPTY".to_owned(), String::new()),
        ];
        let f = encode(&env).expect("encode");
        let body = read_frame(&mut &f[..]).expect("read").expect("frame");
        assert_eq!(decode(&body).expect("decode"), env);
        assert_eq!(decode(&[]).expect("empty"), Vec::new());
    }

    #[test]
    fn bad_names_values_and_sizes_are_refused() {
        let one = |k: &str, v: &str| encode(&[(k.to_owned(), v.to_owned())]);
        assert_eq!(one("A=B", "x"), Err(FrameError::BadName("A=B".into())));
        assert_eq!(one("", "x"), Err(FrameError::BadName(String::new())));
        assert_eq!(one("1A", "x"), Err(FrameError::BadName("1A".into())));
        assert_eq!(one("A", "x\0y"), Err(FrameError::BadValue("A".into())));
        assert!(matches!(
            one("A", &"x".repeat(MAX_FRAME)),
            Err(FrameError::TooLarge(_))
        ));
        assert!(decode(b"A=1").is_err());
        assert!(decode(b"A\0").is_err());
        assert!(decode(b"1A=x\0").is_err());
        // A length beyond the limit is refused before anything is allocated for it.
        let big = (u32::MAX).to_le_bytes();
        assert!(read_frame(&mut &big[..]).is_err());
        assert_eq!(read_frame(&mut &b""[..]).expect("eof"), None);
        assert!(read_frame(&mut &b"\x05\0"[..]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode(&b);
            let _ = read_frame(&mut &b[..]);
        }
    }
}
