//! The host's own IPv4 interface addresses, read over netlink and cached briefly: the gateway
//! runs on the host and must never dial it, whatever a name resolves to.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the host's interface addresses are reused before they are read again.
const HOST_ADDRS_TTL: Duration = Duration::from_secs(2);

/// The host's IPv4 interface addresses, read over netlink at most every [`HOST_ADDRS_TTL`]
/// (shared by every gateway of the process: they all run in the host's namespace).
static HOST_ADDRS: Mutex<Option<(Instant, Arc<Vec<Ipv4Addr>>)>> = Mutex::new(None);

/// The host's addresses; after a failed read the last list read, if there is one.
pub(super) async fn host_addrs() -> Result<Arc<Vec<Ipv4Addr>>, String> {
    if let Ok(c) = HOST_ADDRS.lock() {
        if let Some((at, v)) = c.as_ref() {
            if at.elapsed() < HOST_ADDRS_TTL {
                return Ok(v.clone());
            }
        }
    }
    let v = match read_host_addrs().await {
        Ok(v) => Arc::new(v),
        Err(e) => {
            tracing::warn!("reading the host's addresses: {e}");
            return HOST_ADDRS
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|(_, v)| v.clone()))
                .ok_or(e);
        }
    };
    if let Ok(mut c) = HOST_ADDRS.lock() {
        *c = Some((Instant::now(), v.clone()));
    }
    Ok(v)
}

async fn read_host_addrs() -> Result<Vec<Ipv4Addr>, String> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    let r = loop {
        match addrs.try_next().await {
            Ok(Some(m)) => {
                for a in m.attributes {
                    if let AddressAttribute::Address(IpAddr::V4(ip))
                    | AddressAttribute::Local(IpAddr::V4(ip)) = a
                    {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                }
            }
            Ok(None) => break Ok(out),
            Err(e) => break Err(e.to_string()),
        }
    };
    conn.abort();
    r
}
