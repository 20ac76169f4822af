//! A job's network namespace and its veth to the host, created in-process over netlink.
//!
//! The namespace is made by a short-lived thread that `unshare(CLONE_NEWNET)`s itself and
//! bind-mounts `/proc/thread-self/ns/net` onto a file in the job's directory; the runtime then
//! joins that file (`linux.namespaces[].path`). The same thread, still inside the namespace,
//! opens the netlink socket that configures the job side. No `ip` process, no fork.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::pool::Lease;
use crate::NetError;

/// Host-side interface names start with this; the firewall matches on it.
pub const IFACE_PREFIX: &str = "alk";

/// Host-side veth name of a job: `alk` + the first 12 hex digits of its id (15 chars, the
/// kernel's limit).
pub fn host_iface(job_id: &str) -> String {
    let hex: String = job_id.trim_start_matches('j').chars().take(12).collect();
    format!("{IFACE_PREFIX}{hex}")
}

fn rt() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::netlink("starting a runtime"))
}

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> NetError {
    NetError::netlink(what.to_owned())
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(NetError::netlink(format!("looking up {name}"))(e)),
    }
}

fn connect() -> Result<(Handle, tokio::task::JoinHandle<()>), NetError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(NetError::netlink("opening a netlink socket"))?;
    Ok((handle, tokio::spawn(conn)))
}

/// Brings `lo` up in the network namespace `ns` (a job without a network of its own whose
/// containers talk to each other on loopback). Done on a thread of its own: `setns` changes
/// only the calling thread's namespace.
pub fn loopback_up(ns: &Path) -> Result<(), NetError> {
    let f = std::fs::File::open(ns).map_err(NetError::io("opening", ns))?;
    std::thread::spawn(move || -> Result<(), NetError> {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(NetError::netlink("setns(CLONE_NEWNET)"))?;
        lo_up()
    })
    .join()
    .map_err(|_| NetError::Panicked("loopback"))?
}

/// `lo` up in the calling thread's network namespace.
fn lo_up() -> Result<(), NetError> {
    rt()?.block_on(async {
        let (h, _c) = connect()?;
        let lo = index_of(&h, "lo")
            .await?
            .ok_or_else(|| NetError::netlink_state("the namespace has no lo"))?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("lo up"))
    })
}

/// Creates the job's network namespace (bound at `ns_file`) and its veth pair, addresses and
/// routes: host side `iface` = gateway/30, job side `eth0` = job/30 with a default route via the
/// gateway. IPv6 is disabled inside the namespace.
pub fn attach(ns_file: &Path, iface: &str, lease: &Lease) -> Result<(), NetError> {
    std::fs::write(ns_file, b"").map_err(NetError::io("creating", ns_file))?;
    let ns_path = ns_file.to_owned();
    let lease2 = *lease;
    // Step 1, in a thread of its own: a new namespace, pinned by a bind mount, lo up,
    // IPv6 off. The thread ends afterwards; the mount keeps the namespace.
    std::thread::spawn(move || -> Result<(), NetError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(NetError::netlink("unshare(CLONE_NEWNET)"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &ns_path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            NetError::netlink(format!("pinning the namespace at {}", ns_path.display()))(e)
        })?;
        // /proc/sys/net belongs to the namespace of the task that opens it.
        for k in ["all", "default"] {
            let p = format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6");
            std::fs::write(&p, b"1")
                .map_err(NetError::io("disabling IPv6 in the job's namespace:", &p))?;
        }
        lo_up()
    })
    .join()
    .map_err(|_| NetError::Panicked("namespace"))??;

    // Step 2, host side: the veth pair, its peer created directly inside the job's namespace
    // as `eth0` (moving an existing interface between namespaces costs an unregister and a
    // register, most of the attach time).
    let ns_fd = std::fs::File::open(ns_file).map_err(NetError::io("opening", ns_file))?;
    rt()?.block_on(async {
        use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
        use rtnetlink::LinkMessageBuilder;
        use std::os::fd::AsRawFd;
        let (h, _c) = connect()?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name("eth0".to_owned())
            .setns_by_fd(ns_fd.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(iface.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(veth)
            .execute()
            .await
            .map_err(nl("creating veth"))?;
        let host_idx = index_of(&h, iface)
            .await?
            .ok_or_else(|| NetError::netlink_state("the new veth vanished"))?;
        h.address()
            .add(host_idx, lease2.gateway.into(), 30)
            .execute()
            .await
            .map_err(nl("host address"))?;
        h.link()
            .set(LinkUnspec::new_with_index(host_idx).up().build())
            .execute()
            .await
            .map_err(nl("host veth up"))
    })?;

    // Step 3, inside the namespace again: name, address, default route.
    let ns_path = ns_file.to_owned();
    std::thread::spawn(move || -> Result<(), NetError> {
        let f = std::fs::File::open(&ns_path).map_err(NetError::io("opening", &ns_path))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(NetError::netlink("setns"))?;
        rt()?.block_on(async {
            let (h, _c) = connect()?;
            let idx = index_of(&h, "eth0")
                .await?
                .ok_or_else(|| NetError::netlink_state("eth0 not in the job's namespace"))?;
            h.address()
                .add(idx, lease2.job.into(), 30)
                .execute()
                .await
                .map_err(nl("job address"))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(nl("eth0 up"))?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(lease2.gateway)
                .output_interface(idx)
                .build();
            h.route()
                .add(route)
                .execute()
                .await
                .map_err(nl("default route"))
        })
    })
    .join()
    .map_err(|_| NetError::Panicked("namespace"))??;
    Ok(())
}

/// Unpins the job's namespace; the kernel then destroys it, and the veth pair with it, in the
/// background (deleting the veth synchronously costs ~20 ms of RCU grace periods on the job's
/// teardown path). `thorough` (gc) also deletes a host-side veth that is still there, e.g.
/// because its namespace was never pinned. Every failure is collected.
pub fn detach(
    ns_file: &Path,
    iface: &str,
    thorough: bool,
    errors: &mut Vec<crate::TeardownFailure>,
) {
    if ns_file.exists() {
        if let Err(e) = umount2(ns_file, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL {
                let e = NetError::netlink(format!("unmounting {}", ns_file.display()))(e);
                errors.push(crate::failure(&e));
            }
        }
        if let Err(e) = std::fs::remove_file(ns_file) {
            errors.push(crate::failure(&NetError::io("removing", ns_file)(e)));
        }
    }
    if !thorough {
        return;
    }
    match rt().and_then(|r| {
        r.block_on(async {
            let (h, _c) = connect()?;
            if let Some(idx) = index_of(&h, iface).await? {
                match h.link().del(idx).execute().await {
                    Ok(()) => {}
                    // Gone meanwhile with its namespace: fine.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                    Err(e) => return Err(NetError::netlink("deleting veth")(e)),
                }
            }
            Ok(())
        })
    }) {
        Ok(()) => {}
        Err(e) => errors.push(crate::failure(&e)),
    }
}

/// The namespace file of a job dir.
pub fn ns_file(job_dir: &Path) -> PathBuf {
    job_dir.join("netns")
}
