//! Every kind of record airlock writes, in one place. Writers (the job engine, the sandbox's
//! exec listener, the gateway, serve) name a [`Kind`], never a string, so a kind cannot be
//! misspelt on the way in; readers (the detectors, the OCSF mapping, `scan host`) compare a
//! record's kind with a [`Kind`] (records read from disk keep their kind as text: the log is
//! external input, and an unknown kind is skipped, never an error).

use std::fmt;

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// A kind of audit record (docs/audit.md lists each with its fields).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $( $(#[$doc])* $variant, )*
        }

        impl Kind {
            /// Every kind, in the order of docs/audit.md.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The name written in the log.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Kind::$variant => $name, )*
                }
            }
        }
    };
}

kinds! {
    /// A job was asked for, before anything of it exists.
    JobRequested = "job.requested",
    /// A job was refused before it was planned (no such group).
    JobRefused = "job.refused",
    /// A primed sandbox exists and waits for its start (nothing of the job has run).
    JobPrimed = "job.primed",
    /// The job's init process exists.
    JobStarted = "job.started",
    /// The job is over and torn down.
    JobEnded = "job.ended",
    /// Secrets were injected into the job (names only).
    SecretInjected = "secret.injected",
    /// The group's policy changed since its previous job.
    ConfigChanged = "config.changed",
    /// A container of the job (job container, service, container step) was created.
    ContainerCreated = "container.created",
    /// A container of the job ended and was torn down.
    ContainerEnded = "container.ended",
    /// The job asked its container API for something the group does not allow.
    ContainerRefused = "container.refused",
    /// A process of the job executed a program.
    ProcessExec = "process.exec",
    /// A process of the job exited.
    ProcessExit = "process.exit",
    /// What `/proc/PID/exe` showed after an exec.
    ExecActual = "exec.actual",
    /// Execs the listener could not follow.
    ExecUntracked = "exec.untracked",
    /// A call the seccomp profile refuses.
    SyscallDenied = "syscall.denied",
    /// A file the job left behind (teardown scan).
    FileChanged = "file.changed",
    /// The summary of the teardown file scan.
    FileScan = "file.scan",
    /// A DNS query through the gateway.
    NetDns = "net.dns",
    /// A plain HTTP request through the gateway.
    NetHttp = "net.http",
    /// A TLS connection through the gateway.
    NetHttps = "net.https",
    /// A CONNECT tunnel through the gateway.
    NetConnect = "net.connect",
    /// A packet the firewall dropped.
    NetDrop = "net.drop",
    /// A routed flow of an audit-mode job.
    NetFlow = "net.flow",
    /// A network record of a kind this airlock does not know (kept, never dropped).
    NetOther = "net.other",
    /// A detector's alert.
    Alert = "alert",
    /// Records of a flood, counted instead of written.
    AuditAggregated = "audit.aggregated",
    /// The summary of a job's flood.
    AuditFlood = "audit.flood",
    /// An HMAC checkpoint of the log's head.
    AuditCheckpoint = "audit.checkpoint",
    /// Where the kept chain starts after retention removed older segments.
    AuditAnchor = "audit.anchor",
    /// `airlock image scan` scanned an image against OSV data.
    ImageScanned = "image.scanned",
    /// `airlock drill` finished: what it attacked and what got through.
    DrillCompleted = "drill.completed",
    /// serve: a job is being given a runner.
    ServeJobProvisioning = "serve.job.provisioning",
    /// serve: the job's runner sandbox started.
    ServeJobStarted = "serve.job.started",
    /// serve: the job's runner sandbox ended.
    ServeJobFinished = "serve.job.finished",
    /// serve: a job was not routed to any group.
    ServeJobRefused = "serve.job.refused",
    /// serve: a queued job was cancelled before it ran.
    ServeJobCancelled = "serve.job.cancelled",
    /// serve: a runner was stopped after GitHub said its job completed.
    ServeJobStoppedAfterCompleted = "serve.job.stopped_after_completed",
    /// serve's reconcile: a job GitHub no longer knows.
    ServeReconcileJobLost = "serve.reconcile.job_lost",
    /// serve's reconcile: a job stuck too long.
    ServeReconcileJobStuck = "serve.reconcile.job_stuck",
    /// serve's reconcile: a runner left registered was deleted.
    ServeReconcileRunnerDeleted = "serve.reconcile.runner_deleted",
    /// serve's reconcile: a sandbox left behind was removed.
    ServeReconcileSandboxRemoved = "serve.reconcile.sandbox_removed",
    /// serve's reconcile: a scale-set runner active when serve stopped (not run again).
    ServeReconcileRunnerLost = "serve.reconcile.runner_lost",
    /// serve: a scale set was found, created or updated, by name.
    ServeScaleSetReady = "serve.scaleset.ready",
    /// serve: another message session is live for a scale set (409); retried.
    ServeScaleSetConflict = "serve.scaleset.session_conflict",
    /// serve: a scale-set message was committed (then acknowledged).
    ServeScaleSetMessage = "serve.scaleset.message",
    /// serve: a scale-set runner is being registered and started.
    ServeRunnerProvisioning = "serve.runner.provisioning",
    /// serve: a scale-set runner's sandbox is up, waiting for a job.
    ServeRunnerReady = "serve.runner.ready",
    /// serve: a scale-set runner ended without a job (retired, or failed before one).
    ServeRunnerFinished = "serve.runner.finished",
}

impl Kind {
    /// The kind named `s`, if airlock writes it.
    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The kind of a network record of `kind` (`ConnRecord::kind`: `dns`, `http`, …).
    pub fn net(kind: &str) -> Kind {
        match kind {
            "dns" => Kind::NetDns,
            "http" => Kind::NetHttp,
            "https" => Kind::NetHttps,
            "connect" => Kind::NetConnect,
            "drop" => Kind::NetDrop,
            "flow" => Kind::NetFlow,
            _ => Kind::NetOther,
        }
    }

    /// Whether this is a network record (`net.*`).
    pub fn is_net(self) -> bool {
        self.as_str().starts_with("net.")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Kind> for str {
    fn eq(&self, k: &Kind) -> bool {
        self == k.as_str()
    }
}

impl PartialEq<Kind> for String {
    fn eq(&self, k: &Kind) -> bool {
        self.as_str() == k.as_str()
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_reads_back() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        assert_eq!(Kind::parse("job.requestec"), None);
        assert!(Kind::net("dns").is_net() && Kind::net("?") == Kind::NetOther);
        assert!(*"alert" == Kind::Alert);
    }
}
