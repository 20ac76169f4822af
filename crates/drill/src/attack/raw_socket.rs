//! Escape/spoofing: open raw sockets (sniff the host's traffic, forge packets that bypass the
//! gateway). Harmless: a socket that opens is closed without sending anything.

use super::util::{syscall_step, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `raw-socket`: AF_PACKET and SOCK_RAW sockets.
pub struct RawSocket;

impl Attack for RawSocket {
    fn id(&self) -> &'static str {
        "raw-socket"
    }
    fn title(&self) -> &'static str {
        "AF_PACKET and SOCK_RAW sockets"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let s: Vec<Step> = [
            (
                "socket(AF_PACKET, SOCK_RAW)",
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(0x0003u16.to_be()),
            ),
            (
                "socket(AF_INET, SOCK_RAW, ICMP)",
                libc::AF_INET,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMP,
            ),
            (
                "socket(AF_INET, SOCK_RAW, TCP)",
                libc::AF_INET,
                libc::SOCK_RAW,
                libc::IPPROTO_TCP,
            ),
        ]
        .into_iter()
        .map(|(what, d, t, p)| {
            // SAFETY: socket(2) with constant arguments; the fd is closed by syscall_step.
            let fd = unsafe { libc::socket(d, t, p) };
            syscall_step(what, libc::c_long::from(fd), true)
        })
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
