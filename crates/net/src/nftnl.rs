//! Per-job firewall elements over netlink: one nfnetlink batch per attach or detach (plain
//! elements and allow rules together), no `nft` process on the hot path.

use std::net::Ipv4Addr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetElementAttribute,
    SetElementList, SetElementMessage, SetMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use crate::NetError;

/// The table's name.
pub const TABLE: &str = "airlock";
/// Marker of this version of the rules, kept as the table's comment: a table without it (an
/// older airlock) is replaced.
pub const RULES_VERSION: &str = "airlock-rules-12";
/// An empty set whose presence marks the current rules (checked over netlink on every attach).
pub const RULES_VERSION_SET: &str = "rules_v12";
const NFNL_SUBSYS_NFTABLES: u16 = 10;

fn msg(inner: NfTablesMessage, flags: u16, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        inner,
    ));
    m.header.flags = NLM_F_REQUEST | flags;
    m.header.sequence_number = seq;
    m.finalize();
    m
}

fn control(c: ControlMessage, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        c,
    ));
    m.header.flags = NLM_F_REQUEST;
    m.header.sequence_number = seq;
    m.finalize();
    m
}

fn sock() -> Result<Socket, NetError> {
    let mut s =
        Socket::new(NETLINK_NETFILTER).map_err(NetError::firewall("opening a netlink socket"))?;
    s.bind_auto()
        .map_err(NetError::firewall("binding a netlink socket"))?;
    let tv = nix::sys::time::TimeVal::new(2, 0);
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(NetError::firewall("setting the netlink timeout"))?;
    Ok(s)
}

/// Sockets that carried deletions, kept open until [`release_deferred`]. Closing a
/// NETLINK_NETFILTER socket makes the kernel first flush nf_tables' destroy list, which waits
/// for an RCU grace period (~9 ms here) that deleted set elements put on it; closed at the very
/// end of a teardown, that wait overlaps the rest of the teardown instead of adding to it.
static DEFERRED: std::sync::Mutex<Vec<Socket>> = std::sync::Mutex::new(Vec::new());

fn defer_close(s: Socket) {
    match DEFERRED.lock() {
        Ok(mut v) => v.push(s),
        Err(p) => p.into_inner().push(s),
    }
}

/// Closes the sockets kept by deletions (see [`DEFERRED`]) without waiting for the grace
/// period: a short-lived child process holds the last reference and closes it. The child
/// only makes system calls (`close_range`, `_exit`), which is what is safe after `fork` in a
/// multi-threaded process; it closes every descriptor, standard output first, so nobody
/// reading this process's output waits for it.
pub(crate) fn release_deferred() {
    let socks = match DEFERRED.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    if socks.is_empty() {
        return;
    }
    // SAFETY: the child calls only async-signal-safe system calls, then exits.
    match unsafe { nix::unistd::fork() } {
        // SAFETY: plain system calls on this (child) process's own descriptors, then exit.
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            libc::_exit(0)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // This process's copies are not the last ones: closing them does not wait.
            drop(socks);
            // Reaped in the background (a long-lived `airlock serve` keeps no zombie).
            let _ = std::thread::Builder::new()
                .name("netlink-close".into())
                .spawn(move || {
                    let _ = nix::sys::wait::waitpid(child, None);
                });
        }
        // No child: close here, and wait.
        Err(_) => drop(socks),
    }
}

/// Sends messages as one buffer and collects the errno of each acked one (0 = ok).
fn exchange(
    s: &Socket,
    msgs: &[NetlinkMessage<NetfilterMessage>],
    acks: usize,
) -> Result<Vec<i32>, NetError> {
    let mut buf = Vec::new();
    for m in msgs {
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        buf.extend_from_slice(&b);
    }
    s.send(&buf, 0)
        .map_err(NetError::firewall("sending to netlink"))?;
    let mut codes = Vec::new();
    let mut rbuf = vec![0u8; 65536];
    while codes.len() < acks {
        let n = s
            .recv(&mut &mut rbuf[..], 0)
            .map_err(NetError::firewall("receiving from netlink"))?;
        let mut off = 0;
        while off < n {
            let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&rbuf[off..n]) else {
                break;
            };
            let len = m.header.length as usize;
            if let NetlinkPayload::Error(e) = m.payload {
                codes.push(e.code.map_or(0, |c| -c.get()));
            } else if matches!(m.payload, NetlinkPayload::InnerMessage(_)) {
                codes.push(0);
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
    Ok(codes)
}

/// Whether the current version of airlock's table is installed (one netlink round trip).
pub fn table_is_current() -> Result<bool, NetError> {
    let s = sock()?;
    let get = msg(
        NfTablesMessage::GetSet(SetMessage {
            attributes: vec![
                SetAttribute::Table(TABLE.to_owned()),
                SetAttribute::Name(RULES_VERSION_SET.to_owned()),
            ],
        }),
        NLM_F_ACK,
        1,
    );
    let codes = exchange(&s, &[get], 1)?;
    Ok(codes.first() == Some(&0))
}

/// One element of a set with a plain key: an address, or a concatenation of addresses (each
/// field of an `ipv4_addr . ipv4_addr` key is 4 bytes, already register-aligned); with data
/// when the set is a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The set.
    pub set: &'static str,
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The mapped value's bytes (maps only; not needed to delete).
    pub data: Option<Vec<u8>>,
}

impl Element {
    /// An element of a set of `ipv4_addr`.
    pub fn addr(set: &'static str, a: Ipv4Addr) -> Self {
        Self {
            set,
            key: a.octets().to_vec(),
            data: None,
        }
    }

    /// An element of a set of `ipv4_addr . ipv4_addr`.
    pub fn pair(set: &'static str, a: Ipv4Addr, b: Ipv4Addr) -> Self {
        let mut key = a.octets().to_vec();
        key.extend_from_slice(&b.octets());
        Self {
            set,
            key,
            data: None,
        }
    }

    /// An element of a map `ipv4_addr . inet_proto . inet_service : inet_service` (each field
    /// of the key padded to 4 bytes); `to` = `None` for a deletion.
    pub fn port_map(set: &'static str, a: Ipv4Addr, proto: u8, port: u16, to: Option<u16>) -> Self {
        let mut key = a.octets().to_vec();
        key.extend_from_slice(&[proto, 0, 0, 0]);
        key.extend_from_slice(&port.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        Self {
            set,
            key,
            data: to.map(|p| p.to_be_bytes().to_vec()),
        }
    }
}

fn elements(e: &Element) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_owned()),
            SetElementList::Set(e.set.to_owned()),
            SetElementList::Elements(vec![ListAttribute::Element(
                std::iter::once(SetElementAttribute::Key(DataAttribute::Value(
                    e.key.clone(),
                )))
                .chain(
                    e.data
                        .clone()
                        .map(|d| SetElementAttribute::Data(DataAttribute::Value(d))),
                )
                .collect(),
            )]),
        ],
    }
}

/// A job's allow rules, as elements of the `allowed` set keyed by its address.
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// The job's address.
    pub job: Ipv4Addr,
    /// Its rules.
    pub rules: &'a [airlock_policy::AllowRule],
}

/// Adds (or deletes) a job's elements in one batch: its plain elements, one message each,
/// then (if it has any allow rules) one message holding all its `allowed` elements. Returns the
/// errno of each message in that order (0 = ok). A batch is applied whole or not at all.
pub fn job_elements(
    add: bool,
    items: &[Element],
    allowed: Option<Allowed<'_>>,
) -> Result<Vec<i32>, NetError> {
    let allowed = allowed.filter(|a| !a.rules.is_empty());
    let s = sock()?;
    let mut msgs = vec![control(ControlMessage::BatchBegin, 1)];
    let bodies = items
        .iter()
        .map(elements)
        .chain(allowed.map(allowed_message));
    for body in bodies {
        let (inner, flags) = if add {
            (
                NfTablesMessage::NewSetElement(body),
                NLM_F_ACK | NLM_F_CREATE,
            )
        } else {
            (NfTablesMessage::DeleteSetElement(body), NLM_F_ACK)
        };
        let seq = 1 + msgs.len() as u32;
        msgs.push(msg(inner, flags, seq));
    }
    let acks = msgs.len() - 1;
    let seq = 1 + msgs.len() as u32;
    msgs.push(control(ControlMessage::BatchEnd, seq));
    let r = exchange(&s, &msgs, acks);
    if !add {
        defer_close(s);
    }
    r
}

/// One element of the `allowed` set (`ipv4_addr . ipv4_addr . inet_proto . inet_service`,
/// interval): the key and the closing key, each field padded to 4 bytes as the kernel's
/// registers lay concatenations out.
fn allowed_element(
    job: Ipv4Addr,
    r: &airlock_policy::AllowRule,
) -> ListAttribute<SetElementAttribute> {
    let first = u32::from(r.net.network());
    let last = u32::from(r.net.broadcast());
    let proto: u8 = match r.proto {
        airlock_policy::Proto::Tcp => 6,
        airlock_policy::Proto::Udp => 17,
    };
    let key = |net: u32| {
        let mut k = Vec::with_capacity(16);
        k.extend_from_slice(&job.octets());
        k.extend_from_slice(&net.to_be_bytes());
        k.extend_from_slice(&[proto, 0, 0, 0]);
        k.extend_from_slice(&r.port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    };
    const NFTA_DATA_VALUE: u16 = 1;
    ListAttribute::Element(vec![
        SetElementAttribute::Key(DataAttribute::Value(key(first))),
        SetElementAttribute::KeyEnd(vec![netlink_packet_core::DefaultNla::new(
            NFTA_DATA_VALUE,
            key(last),
        )]),
    ])
}

fn allowed_message(a: Allowed<'_>) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_owned()),
            SetElementList::Set("allowed".to_owned()),
            SetElementList::Elements(a.rules.iter().map(|r| allowed_element(a.job, r)).collect()),
        ],
    }
}
