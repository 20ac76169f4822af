//! Log lines whose field values (and message) are escaped: serve logs repository names,
//! workflow job names, labels and runner names that a webhook or a job chose.

use std::fmt::Write as _;

use tracing_subscriber::field::{MakeExt, RecordFields};
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::FormatFields;

/// A field formatter for `tracing_subscriber::fmt().fmt_fields(…)`: `name=value` pairs
/// separated by spaces, like the default, with every value passed through [`crate::escape`].
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let mut v = String::new();
            let _ = write!(v, "{value:?}");
            if field.name() == "message" {
                write!(w, "{}", crate::escape(&v))
            } else {
                write!(w, "{}={}", field.name(), crate::escape(&v))
            }
        },
    )
    .delimited(" ")
}

/// Renders `fields` with [`escaped_fields`] (for tests and callers that format by hand).
pub fn render<R: RecordFields>(fields: R) -> String {
    let mut s = String::new();
    let _ = escaped_fields().format_fields(Writer::new(&mut s), fields);
    s
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_hostile_field_cannot_forge_a_log_line() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(super::escaped_fields())
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let name = "build\n2026-12-03T00:00:00Z  INFO job done: all clear\u{1b}[2K\u{202e}";
            tracing::info!(job = %name, "job {} queued", name);
        });
        let out = String::from_utf8(buf.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(out.contains("job=build\\n2026"), "{out:?}");
    }
}
