//! Turns the firewall's NFLOG reports (the first packet of each denied flow, see
//! [`crate::firewall`]) into records attributed to the job whose address sent them.
//!
//! One process per host can hold an NFLOG group. Every airlock that runs jobs tries to bind
//! it and retries every 200 ms while another one holds it; the holder writes each record into
//! the directory of the job that owns the source address (found through the address pool's
//! leases), where that job's airlock collects it at teardown. `airlock serve` holds the group
//! for its whole life. A denial can go unrecorded only in the gap between one holder exiting
//! and the next one binding (at most 200 ms).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use crate::firewall::NFLOG_GROUP;
use airlock_audit::ConnRecord;

/// File in a job's directory where its firewall records are appended.
pub const DROPS_FILE: &str = "drops.jsonl";
/// File in a job's directory counting the records past [`DROPS_MAX_BYTES`].
pub const DROPS_OVER: &str = "drops.over";
/// Bytes of firewall records kept per job (about 15,000 records); later ones are only
/// counted (in [`DROPS_OVER`]), so a job sending a flood of denied packets cannot fill the
/// host's disk or airlock's memory.
pub const DROPS_MAX_BYTES: u64 = 4 << 20;

/// What [`DROPS_OVER`] holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Over {
    count: u64,
    first_ms: u128,
    last_ms: u128,
}

fn send(sock: &Socket, msg: NetlinkMessage<NetfilterMessage>) -> std::io::Result<()> {
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf[..]);
    sock.send(&buf, 0).map(|_| ())
}

/// Reads the ack of a request: `Ok` if the kernel accepted it.
fn ack(sock: &Socket) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut &mut buf[..], 0)?;
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..n])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
        },
        _ => Ok(()),
    }
}

/// How often the kernel reported that NFLOG reports were lost (socket overrun) since start.
pub static OVERRUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn bind() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    // Room for bursts of reports (a flood of denied flows) before the kernel must drop any.
    let _ = sock.set_rx_buf_sz(8i32 << 20);
    let mut m = config_request(
        NetfilterProtoFamily::IPv4,
        0,
        vec![ConfigCmd::PfBind.into()],
    );
    m.header.flags |= netlink_packet_core::NLM_F_ACK;
    send(&sock, m)?;
    let _ = ack(&sock);
    let mut m = config_request(
        NetfilterProtoFamily::IPv4,
        NFLOG_GROUP,
        // The kernel batches up to 100 packets or one second by default; a record must
        // not wait (or be lost when a short job's airlock stops listening).
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(64).into(),
            ConfigNla::QThresh(1),
            Timeout::new(1).into(),
        ],
    );
    m.header.flags |= netlink_packet_core::NLM_F_ACK;
    send(&sock, m)?;
    ack(&sock)?;
    Ok(sock)
}

/// A decoded report: source, destination, protocol, whether the flow was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The job's address.
    pub src: Ipv4Addr,
    /// Where it tried to go.
    pub dst: Ipv4Addr,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `true` for a denial, `false` for an audit-mode record.
    pub denied: bool,
}

/// Decodes an IPv4 packet's header as NFLOG hands it over.
pub fn decode(payload: &[u8], prefix: &str) -> Option<Report> {
    if payload.len() < 20 || payload[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(payload[0] & 0xf) * 4;
    let proto = payload[9];
    let src = Ipv4Addr::new(payload[12], payload[13], payload[14], payload[15]);
    let dst = Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]);
    let dport = if (proto == 6 || proto == 17) && payload.len() >= ihl + 4 {
        u16::from_be_bytes([payload[ihl + 2], payload[ihl + 3]])
    } else {
        0
    };
    Some(Report {
        src,
        dst,
        dport,
        proto,
        denied: !prefix.contains("audit"),
    })
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// The record of a report, for job `job`; `to_other_job` when the destination is another
/// job's address or gateway (lateral movement, named as such in the record).
pub fn record_of(r: &Report, job: &str, to_other_job: bool) -> ConnRecord {
    let reason = if r.denied {
        if airlock_policy::endpoints::is_never(r.dst) {
            "never reachable (cloud metadata / loopback)".to_owned()
        } else if to_other_job {
            format!(
                "{} to {}:{}: another job's address, never reachable (jobs cannot reach each other)",
                proto_name(r.proto),
                r.dst,
                r.dport
            )
        } else {
            format!(
                "{} to {}:{} is not allowed",
                proto_name(r.proto),
                r.dst,
                r.dport
            )
        }
    } else {
        "audit mode".to_owned()
    };
    ConnRecord {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        job: job.to_owned(),
        qtype: Some(proto_name(r.proto)),
        dialled: Some(SocketAddr::V4(SocketAddrV4::new(r.dst, r.dport))),
        verdict: if r.denied {
            "deny".into()
        } else {
            "allow".into()
        },
        reason,
        ..ConnRecord::new(if r.denied { "drop" } else { "flow" }, r.dport)
    }
}

/// A running listener. [`Listener::stop`] wakes it at once (no polling interval on the job's
/// teardown path) and lets it drain what the kernel has already queued.
pub struct Listener {
    wake: std::os::fd::OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl Listener {
    /// Stops listening after handling every report already queued.
    pub fn stop(self) {
        let _ = nix::unistd::write(&self.wake, b"x");
        let _ = self.thread.join();
    }
}

/// Waits until `fd` is readable or `wake` fires (true) or `timeout_ms` passes.
fn wait(
    fd: std::os::fd::BorrowedFd<'_>,
    wake: std::os::fd::BorrowedFd<'_>,
    timeout_ms: u16,
) -> (bool, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLIN),
        PollFd::new(wake, PollFlags::POLLIN),
    ];
    let _ = poll(&mut fds, PollTimeout::from(timeout_ms));
    let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    (ready(&fds[0]), ready(&fds[1]))
}

/// Starts listening. `lease_dir` maps /30 blocks to job ids; `jobs_dir` holds job directories.
pub fn spawn_listener(lease_dir: PathBuf, jobs_dir: PathBuf) -> Result<Listener, std::io::Error> {
    use std::os::fd::AsFd;
    let (wake_r, wake_w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let thread = std::thread::spawn(move || loop {
        match bind() {
            Ok(sock) => {
                serve(&sock, &lease_dir, &jobs_dir, wake_r.as_fd());
                return;
            }
            Err(_) => {
                // Another airlock holds the group: try again shortly, unless told to stop.
                let (_, woken) = wait(wake_r.as_fd(), wake_r.as_fd(), 200);
                if woken {
                    return;
                }
            }
        }
    });
    Ok(Listener {
        wake: wake_w,
        thread,
    })
}

fn serve(sock: &Socket, lease_dir: &Path, jobs_dir: &Path, wake: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 65536];
    let mut stopping = false;
    loop {
        if !stopping {
            // SAFETY: the socket outlives this borrow.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) };
            let (_, woken) = wait(fd, wake, u16::MAX);
            stopping = woken;
        }
        // Non-blocking reads: handle everything queued; once stopping, leave when empty.
        let n = match sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stopping {
                    return;
                }
                continue;
            }
            // A flood of denied packets overran the socket: the kernel dropped reports it
            // could not queue. Keep listening (leaving would blind every later job); what
            // was lost is counted.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let n = OVERRUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        overruns = n + 1,
                        "NFLOG reports lost to a flood of denied packets"
                    );
                }
                continue;
            }
            Err(_) => return,
        };
        let mut off = 0;
        while off < n {
            let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n]) else {
                break;
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = &msg.payload
            {
                let prefix = nlas
                    .iter()
                    .find_map(|n| match n {
                        PacketNla::Prefix(p) => Some(p.to_string_lossy().into_owned()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for nla in nlas {
                    if let PacketNla::Payload(p) = nla {
                        if let Some(r) = decode(p, &prefix) {
                            deliver(&r, lease_dir, jobs_dir);
                        }
                    }
                }
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

fn deliver(r: &Report, lease_dir: &Path, jobs_dir: &Path) {
    let block = Ipv4Addr::from(u32::from(r.src) & !3);
    let Ok(job) = std::fs::read_to_string(lease_dir.join(block.to_string())) else {
        return;
    };
    let job = job.trim();
    let dir = jobs_dir.join(job);
    if !dir.is_dir() {
        return;
    }
    let dst_block = Ipv4Addr::from(u32::from(r.dst) & !3);
    let to_other_job = dst_block != block && lease_dir.join(dst_block.to_string()).exists();
    let rec = record_of(r, job, to_other_job);
    let drops = dir.join(DROPS_FILE);
    if std::fs::metadata(&drops).is_ok_and(|m| m.len() >= DROPS_MAX_BYTES) {
        // Past the cap: counted, never dropped silently, in a file of constant size.
        let over_path = dir.join(DROPS_OVER);
        let mut over: Over = std::fs::read(&over_path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        if over.count == 0 {
            over.first_ms = rec.time_ms;
        }
        over.count += 1;
        over.last_ms = rec.time_ms;
        if let Ok(d) = serde_json::to_vec(&over) {
            let _ = std::fs::write(&over_path, d);
        }
        return;
    }
    let Ok(mut line) = serde_json::to_vec(&rec) else {
        return;
    };
    line.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(drops)
    {
        let _ = f.write_all(&line);
    }
}

/// Reads (and removes) the firewall records collected for a job, line by line into a
/// bounded book; the records counted past [`DROPS_MAX_BYTES`] become one aggregate record.
pub fn take_records(job_dir: &Path) -> Vec<ConnRecord> {
    use std::io::BufRead;
    let p = job_dir.join(DROPS_FILE);
    let mut book = crate::records::RecordBook::default();
    if let Ok(f) = std::fs::File::open(&p) {
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            if let Ok(r) = serde_json::from_str::<ConnRecord>(&line) {
                book.add(r);
            }
        }
    }
    let _ = std::fs::remove_file(&p);
    let mut v = book.into_records();
    let op = job_dir.join(DROPS_OVER);
    if let Some(over) = std::fs::read(&op)
        .ok()
        .and_then(|d| serde_json::from_slice::<Over>(&d).ok())
        .filter(|o| o.count > 0)
    {
        let job = job_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        v.push(ConnRecord {
            time_ms: over.first_ms,
            last_ms: over.last_ms,
            count: over.count,
            job,
            verdict: "deny".into(),
            reason: format!(
                "{} more packets dropped by the firewall, past the job's {} MiB of drop records: counted, not listed",
                over.count,
                DROPS_MAX_BYTES >> 20
            ),
            ..ConnRecord::new("drop", 0)
        });
    }
    let _ = std::fs::remove_file(&op);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_tcp_syn_header() {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[10, 213, 0, 6, 169, 254, 169, 254]);
        p.extend_from_slice(&[0xc0, 0x01, 0, 80, 0, 0, 0, 0]);
        let r = decode(&p, "airlock-drop").expect("decoded");
        assert_eq!(r.src, Ipv4Addr::new(10, 213, 0, 6));
        assert_eq!(r.dst, Ipv4Addr::new(169, 254, 169, 254));
        assert_eq!((r.dport, r.proto, r.denied), (80, 6, true));
        let rec = record_of(&r, "j1", false);
        assert!(rec.reason.contains("never reachable"), "{}", rec.reason);
        assert!(decode(&[0x60; 40], "x").is_none(), "IPv6 is not decoded");
        assert!(!decode(&p, "airlock-audit").expect("decoded").denied);
    }

    #[test]
    fn a_drop_towards_another_job_is_delivered_to_the_sender_and_named() {
        let d = tempfile::tempdir().expect("tmp");
        let (leases, jobs) = (d.path().join("leases"), d.path().join("jobs"));
        for (block, job) in [("10.213.0.4", "ja"), ("10.213.0.8", "jb")] {
            std::fs::create_dir_all(jobs.join(job)).expect("job dir");
            std::fs::create_dir_all(&leases).expect("lease dir");
            std::fs::write(leases.join(block), job).expect("lease");
        }
        // Job ja (10.213.0.6) tries job jb's address and then a public one.
        for (dst, port) in [
            (Ipv4Addr::new(10, 213, 0, 10), 22),
            (Ipv4Addr::new(203, 0, 113, 9), 22),
        ] {
            let r = Report {
                src: Ipv4Addr::new(10, 213, 0, 6),
                dst,
                dport: port,
                proto: 6,
                denied: true,
            };
            deliver(&r, &leases, &jobs);
        }
        let recs = take_records(&jobs.join("ja"));
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert!(
            recs[0].reason.contains("another job's address"),
            "{}",
            recs[0].reason
        );
        assert!(
            !recs[1].reason.contains("another job"),
            "{}",
            recs[1].reason
        );
        assert!(
            take_records(&jobs.join("jb")).is_empty(),
            "the target job gets nothing"
        );
    }

    #[test]
    fn a_flood_of_drops_is_capped_on_disk_and_counted() {
        let d = tempfile::tempdir().expect("tmp");
        let (leases, jobs) = (d.path().join("leases"), d.path().join("jobs"));
        std::fs::create_dir_all(jobs.join("ja")).expect("job dir");
        std::fs::create_dir_all(&leases).expect("lease dir");
        std::fs::write(leases.join("10.213.0.4"), "ja").expect("lease");
        let n = 30_000u64;
        for i in 0..n {
            let r = Report {
                src: Ipv4Addr::new(10, 213, 0, 6),
                dst: Ipv4Addr::new(203, 0, 113, 9),
                dport: (i % 60_000) as u16 + 1,
                proto: 6,
                denied: true,
            };
            deliver(&r, &leases, &jobs);
        }
        let size = std::fs::metadata(jobs.join("ja").join(DROPS_FILE))
            .expect("drops")
            .len();
        assert!(size <= DROPS_MAX_BYTES + 1024, "{size}");
        let recs = take_records(&jobs.join("ja"));
        let counted: u64 = recs.iter().map(|r| r.count).sum();
        assert_eq!(counted, n, "every drop is counted");
        assert!(recs.len() < 25_000, "{}", recs.len());
        assert!(recs
            .iter()
            .any(|r| r.count > 1 && r.reason.contains("counted")));
    }
}
