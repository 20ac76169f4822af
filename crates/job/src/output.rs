//! A budget for the job's output: `airlock run --max-output`. The job's stdout and stderr are
//! copied by airlock as they arrive; where they go is the caller's (a terminal, or a file, as
//! `airlock serve` keeps each runner's output in its work directory). A file there must not
//! grow with whatever the job prints, so past the budget the job's output is still drained
//! (the job never stalls on it) but dropped, counted, and said once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The budget shared by a job's stdout and stderr.
#[derive(Debug, Clone)]
pub struct OutputBudget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limit: u64,
    /// Bytes written so far (at most `limit`).
    used: AtomicU64,
    /// Bytes dropped past the budget.
    dropped: AtomicU64,
    /// Whether the note saying so was written.
    noted: AtomicBool,
}

impl OutputBudget {
    /// A budget of `limit` bytes for stdout and stderr together.
    pub fn new(limit: u64) -> Self {
        Self(Arc::new(Inner {
            limit,
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            noted: AtomicBool::new(false),
        }))
    }

    /// `inner`, writing only while the budget lasts.
    pub fn writer(&self, inner: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
        Box::new(Capped {
            budget: self.clone(),
            inner,
        })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.0.limit
    }

    /// Bytes of the job's output dropped past the budget.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Relaxed)
    }

    /// Takes up to `n` bytes of the budget; returns how many were granted.
    fn take(&self, n: u64) -> u64 {
        let mut granted = 0;
        let _ = self.0.used.fetch_update(Relaxed, Relaxed, |used| {
            granted = n.min(self.0.limit.saturating_sub(used));
            Some(used + granted)
        });
        granted
    }
}

struct Capped {
    budget: OutputBudget,
    inner: Box<dyn Write + Send>,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let granted = self.budget.take(buf.len() as u64) as usize;
        if granted > 0 {
            self.inner.write_all(&buf[..granted])?;
        }
        if granted < buf.len() {
            self.budget
                .0
                .dropped
                .fetch_add((buf.len() - granted) as u64, Relaxed);
            if !self.budget.0.noted.swap(true, Relaxed) {
                let _ = write!(
                    self.inner,
                    "\n[airlock: the job's output passed --max-output ({} bytes); the rest is \
                     not kept]\n",
                    self.budget.0.limit
                );
            }
        }
        // Everything counts as written: the job's output is drained either way.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stdout_and_stderr_share_one_budget_and_the_rest_is_counted() {
        let budget = OutputBudget::new(100);
        let (a, b) = (Sink::default(), Sink::default());
        let mut out = budget.writer(Box::new(a.clone()));
        let mut err = budget.writer(Box::new(b.clone()));
        out.write_all(&[1u8; 60]).expect("write");
        err.write_all(&[2u8; 60]).expect("write");
        for _ in 0..1000 {
            out.write_all(&[1u8; 1000])
                .expect("drained, never an error");
        }
        let (a, b) = (
            a.0.lock().expect("a").clone(),
            b.0.lock().expect("b").clone(),
        );
        let kept = |v: &[u8], c: u8| v.iter().filter(|x| **x == c).count();
        assert_eq!(kept(&a, 1) + kept(&b, 2), 100);
        assert_eq!(budget.dropped(), 20 + 1_000_000);
        // Said once, on the stream that crossed the budget.
        let notes = |v: &[u8]| String::from_utf8_lossy(v).matches("--max-output").count();
        assert_eq!(notes(&a) + notes(&b), 1);
    }
}
