//! A job's network records while it runs: kept whole up to a bound, then aggregated, so a job
//! that floods the gateway or the firewall costs airlock bounded memory. Shared by the
//! gateway and the NFLOG listener.

use std::sync::{Arc, Mutex};

use airlock_audit::ConnRecord;

/// Records kept whole per job until it ends (the report, the audit log); later ones are
/// aggregated by [`ConnRecord::flood_key`] into at most [`BOOK_KEYS`] records with a count.
/// With the limits of the audit log on top (crates/audit/src/limit.rs), a job that asks a
/// million refused names costs airlock a few MiB, not gigabytes.
pub const BOOK_RECORDS: usize = 20_000;
/// Aggregates kept per job (then one `(other)` aggregate takes the rest).
pub const BOOK_KEYS: usize = 1024;

/// A bounded book of one job's records (see [`BOOK_RECORDS`]).
#[derive(Debug)]
pub struct RecordBook(airlock_audit::limit::Book<ConnRecord>);

impl Default for RecordBook {
    fn default() -> Self {
        Self::new(BOOK_RECORDS, BOOK_KEYS)
    }
}

impl RecordBook {
    /// A book keeping `records` whole and `keys` aggregates.
    pub fn new(records: usize, keys: usize) -> Self {
        Self(airlock_audit::limit::Book::new(records, keys))
    }

    /// Adds one record.
    pub fn add(&mut self, r: ConnRecord) {
        self.0.add(ConnRecord::flood_key, r, ConnRecord::absorb);
    }

    /// Records offered so far.
    pub fn total(&self) -> u64 {
        self.0.total
    }

    /// The kept records, then the aggregates (each with its `count`).
    pub fn into_records(self) -> Vec<ConnRecord> {
        let (mut kept, folded) = self.0.into_parts();
        kept.extend(folded.into_iter().map(|(mut r, n)| {
            if n > 1 && r.last_ms == 0 {
                r.last_ms = r.time_ms;
            }
            r
        }));
        kept
    }
}

/// Where records go: a bounded book, whatever the job does.
pub type Records = Arc<Mutex<RecordBook>>;
