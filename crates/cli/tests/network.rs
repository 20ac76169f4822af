//! Network isolation end to end, in a sealed world: the test's own network namespace holds
//! airlock, its jobs and gateway; fake hosts live in namespaces the test creates behind it —
//! an "internet" (198.51.100.10 serving allowed.test, .11 serving blocked.test, a DNS server
//! on .53), a fake metadata service on 169.254.169.254 and a fake internal subnet
//! (10.50.0.10 with a database port). Nothing here can send a packet off the machine.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use common::*;

struct Net {
    w: World,
    hosts: Vec<String>,
    procs: Vec<Child>,
    log: std::path::PathBuf,
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

const POLICY: &str = r#"version = 1
[groups.default]
egress = { domains = ["allowed.test", "rebind.test", "meta.test", "loop.test", "host.test", "mixed.test"], resolver = "198.51.100.53" }
[groups.db]
egress = { domains = ["allowed.test"], allow = ["10.50.0.10/32:5432"], resolver = "198.51.100.53" }
[groups.audit]
egress = { mode = "audit", resolver = "198.51.100.53" }
[groups.wide]
egress = { domains = ["allowed.test"], allow = ["10.0.0.0/8:7777", "10.0.0.0/8:3128", "10.0.0.0/8:53", "10.0.0.0/8:53/udp"], resolver = "198.51.100.53" }
[groups.deadns]
egress = { domains = ["allowed.test"], resolver = "198.51.100.99" }
[groups.ctr]
egress = { domains = ["allowed.test"], resolver = "198.51.100.53" }
containers = {}
"#;

fn world() -> Net {
    let w = World::new();
    let t = w.netns.clone().expect("root test has a netns");
    let mut net = Net {
        log: w.dir.path().join("egress.jsonl"),
        w,
        hosts: vec![],
        procs: vec![],
    };
    for (name, t_ip, host_ips) in [
        (
            "inet",
            "198.51.100.1/24",
            &["198.51.100.10/24", "198.51.100.11/24", "198.51.100.53/24"][..],
        ),
        ("meta", "169.254.0.1/16", &["169.254.169.254/16"][..]),
        ("corp", "10.50.0.1/24", &["10.50.0.10/24"][..]),
    ] {
        let ns = format!("{t}{name}");
        ip(&["netns", "add", &ns]);
        net.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let v = format!("fh{name}");
        ip(&[
            "-n", &t, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &t, "addr", "add", t_ip, "dev", &v]);
        ip(&["-n", &t, "link", "set", &v, "up"]);
        for a in host_ips {
            ip(&["-n", &ns, "addr", "add", a, "dev", "eth0"]);
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        let gw = t_ip.split('/').next().expect("ip");
        ip(&["-n", &ns, "route", "add", "default", "via", gw]);
        if name == "meta" {
            // The IPv6 metadata address exists and serves: if a job could send IPv6 at all,
            // it would reach it.
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                "fd00:ec2::254/64",
                "dev",
                "eth0",
                "nodad",
            ]);
            ip(&[
                "-n",
                &t,
                "addr",
                "add",
                "fd00:ec2::1/64",
                "dev",
                &v,
                "nodad",
            ]);
        }
    }
    // The test namespace's "internet" is the fake internet host.
    ip(&["-n", &t, "route", "add", "default", "via", "198.51.100.10"]);

    let dir = net.w.dir.path().to_owned();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=allowed.test",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:allowed.test,DNS:blocked.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakehosts.py");
    for (host, args) in [
        (
            "inet",
            vec![
                "internet".to_owned(),
                cert.display().to_string(),
                key.display().to_string(),
            ],
        ),
        ("meta", vec!["metadata".to_owned()]),
        ("corp", vec!["corp".to_owned()]),
    ] {
        let mut c = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{t}{host}"),
                "/usr/bin/python3",
                script,
            ])
            .args(&args)
            // What reaches the fake upstream resolver, query by query.
            .env("FAKEHOSTS_DNS_LOG", dir.join("dns-upstream.jsonl"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fake host");
        let mut line = String::new();
        let out = c.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready", "fake host {host} did not start");
        net.procs.push(c);
    }
    // A UDP echo and a TCP listener on every address of airlock's own namespace (gateway
    // addresses included): what the firewall must keep jobs from.
    let mut c = net
        .w
        .in_netns(&["/usr/bin/python3", script, "echo", "5353"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("echo host");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready", "echo host did not start");
    net.procs.push(c);
    // The CA certificate of the fake internet, visible to jobs through the workspace.
    std::fs::copy(&cert, net.w.ws().join("ca.pem")).expect("ca");
    net
}

impl Net {
    fn job(&self, group: &str, script: &str) -> (String, std::process::Output) {
        let p = self.w.policy(POLICY);
        let mut c = self.w.cmd();
        c.args(["run", "-q", "-p"])
            .arg(&p)
            .args(["-g", group, "-w"])
            .arg(self.w.ws())
            .arg("--egress-log")
            .arg(&self.log)
            .args(["--", "/bin/bash", "-c", script]);
        let o = c.output().expect("run");
        (stdout(&o), o)
    }

    /// The queries the fake upstream resolver received (fakehosts.py `describe_query`).
    fn upstream_queries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.w.dir.path().join("dns-upstream.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("query"))
            .collect()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect()
    }
}

/// `name=RESULT` lines of a job into a map.
fn results(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

const CURL: &str = "curl -s -m 4 --cacert ca.pem";

#[test]
fn allowed_names_work_and_everything_else_fails() {
    need_root!();
    let net = world();
    let script = format!(
        r#"
echo "http=$({CURL} http://allowed.test/)"
echo "https=$({CURL} https://allowed.test/)"
echo "blocked_dns=$({CURL} http://blocked.test/ >/dev/null; echo $?)"
echo "blocked_ip_http=$({CURL} http://198.51.100.11/)"
echo "blocked_forced_host=$({CURL} --resolve blocked.test:80:198.51.100.11 http://blocked.test/)"
echo "blocked_forced_tls=$({CURL} --resolve blocked.test:443:198.51.100.11 https://blocked.test/ >/dev/null; echo $?)"
echo "sni_elsewhere=$({CURL} --resolve allowed.test:443:198.51.100.11 https://allowed.test/)"
echo "other_port=$(timeout 3 bash -c 'echo > /dev/tcp/198.51.100.11/8080' 2>/dev/null; echo $?)"
echo "dot=$(timeout 3 bash -c 'echo > /dev/tcp/198.51.100.10/853' 2>/dev/null; echo $?)"
echo "doh_by_ip=$({CURL} -k https://198.51.100.10/dns-query >/dev/null; echo $?)"
GW=$(awk '/^nameserver/{{print $2; exit}}' /etc/resolv.conf)
/usr/bin/python3 - "$GW" <<'PY'
import socket, struct, sys
gw = sys.argv[1]
# A query for blocked.test sent to the upstream resolver's address: the resolver would answer
# 198.51.100.11; the gateway, which takes every DNS packet, answers NXDOMAIN.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
q = struct.pack('!HHHHHH', 9, 0x0100, 1, 0, 0, 0) + b'\x07blocked\x04test\x00' + struct.pack('!HH', 1, 1)
s.sendto(q, ('198.51.100.53', 53))
try:
    r = s.recv(512)
    print('hardcoded_dns=rcode%d answers%d' % (r[3] & 0xf, struct.unpack('!H', r[6:8])[0]))
except Exception:
    print('hardcoded_dns=none')
# UDP other than DNS to the gateway: an echo server listens there on the host.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
u.sendto(b'ping', (gw, 5353))
try:
    print('udp_gw=' + u.recv(64).decode())
except Exception:
    print('udp_gw=none')
# The CONNECT proxy on a port other than 80/443.
c = socket.create_connection((gw, 3128), timeout=3)
c.sendall(b'CONNECT allowed.test:22 HTTP/1.1\r\nHost: allowed.test:22\r\n\r\n')
print('connect_22=' + c.recv(64).decode().split('\r\n')[0])
PY
echo "tcp_gw=$(timeout 3 bash -c "echo > /dev/tcp/$GW/5353" 2>/dev/null; echo $?)"
echo "connect_allowed=$({CURL} -x http://$GW:3128 https://allowed.test/)"
echo "connect_blocked=$({CURL} -x http://$GW:3128 https://blocked.test/ >/dev/null; echo $?)"
echo "rebind=$({CURL} --resolve rebind.test:80:198.51.100.11 http://rebind.test/)"
echo "rebind_direct=$({CURL} http://rebind.test/ >/dev/null; echo $?)"
"#
    );
    let (out, o) = net.job("default", &script);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let r = results(&out);
    assert_eq!(
        r["http"], "host=198.51.100.10 plain host-header=allowed.test",
        "{out}"
    );
    assert_eq!(
        r["https"], "host=198.51.100.10 tls host-header=allowed.test",
        "{out}"
    );
    assert_eq!(
        r["blocked_dns"], "6",
        "blocked.test must not resolve: {out}"
    );
    assert!(
        r["blocked_ip_http"].starts_with("airlock:"),
        "hard-coded IP: {out}"
    );
    assert!(
        r["blocked_forced_host"].starts_with("airlock:"),
        "Host not allowed: {out}"
    );
    assert_ne!(r["blocked_forced_tls"], "0", "SNI not allowed: {out}");
    assert_eq!(
        r["sni_elsewhere"], "host=198.51.100.10 tls host-header=allowed.test",
        "the gateway must go to the allowed host, not the dialled address: {out}"
    );
    assert_ne!(r["other_port"], "0", "{out}");
    assert_ne!(
        r["dot"], "0",
        "DNS over TLS to a hard-coded resolver: {out}"
    );
    assert_ne!(r["doh_by_ip"], "0", "DoH to a hard-coded address: {out}");
    assert_eq!(
        r["hardcoded_dns"], "rcode3 answers0",
        "DNS to a hard-coded resolver must be answered by the gateway: {out}"
    );
    assert_eq!(
        r["udp_gw"], "none",
        "UDP other than DNS to the gateway: {out}"
    );
    assert_ne!(
        r["tcp_gw"], "0",
        "a host port on the gateway address: {out}"
    );
    assert_eq!(
        r["connect_allowed"], "host=198.51.100.10 tls host-header=allowed.test",
        "the CONNECT proxy serves allowed names: {out}"
    );
    assert_ne!(
        r["connect_blocked"], "0",
        "CONNECT to a blocked name: {out}"
    );
    assert!(
        r["connect_22"].contains(" 403"),
        "CONNECT to a port other than 80/443: {out}"
    );
    assert!(
        r["rebind"].starts_with("airlock:"),
        "DNS rebinding to an internal address: {out}"
    );
    assert_ne!(
        r["rebind_direct"], "0",
        "internal address reached directly: {out}"
    );

    let recs = net.records();
    let denied = |kind: &str, name: &str| {
        recs.iter()
            .any(|r| r["kind"] == kind && r["name"] == name && r["verdict"] == "deny")
    };
    assert!(denied("dns", "blocked.test"), "{recs:#?}");
    assert!(denied("http", "198.51.100.11"), "{recs:#?}");
    assert!(denied("http", "blocked.test"), "{recs:#?}");
    assert!(denied("https", "blocked.test"), "{recs:#?}");
    assert!(
        recs.iter().any(|r| r["kind"] == "http"
            && r["name"] == "rebind.test"
            && r["verdict"] == "deny"
            && r["reason"].as_str().unwrap_or("").contains("internal")),
        "{recs:#?}"
    );
    let ok = recs
        .iter()
        .find(|r| r["kind"] == "https" && r["name"] == "allowed.test" && r["verdict"] == "allow")
        .expect("allowed https record");
    assert_eq!(ok["resolved"], "198.51.100.10");
    assert!(ok["bytes_down"].as_u64().unwrap_or(0) > 0, "{ok}");
    assert!(ok["bytes_up"].as_u64().unwrap_or(0) > 0, "{ok}");
    assert_eq!(ok["port"], 443, "{ok}");
    assert!(
        ok["job"].as_str().is_some_and(|j| j.starts_with('j')),
        "{ok}"
    );
    assert!(ok["duration_ms"].is_u64(), "{ok}");
    assert_eq!(ok["dialled"], "198.51.100.10:443", "{ok}");
    // Each denial has its record.
    let dropped = |dialled: &str| {
        recs.iter()
            .any(|r| r["kind"] == "drop" && r["dialled"] == dialled && r["verdict"] == "deny")
    };
    for d in ["198.51.100.10:853", "198.51.100.11:8080"] {
        assert!(dropped(d), "no drop record for {d}: {recs:#?}");
    }
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "drop"
                && r["dialled"].as_str().is_some_and(|d| d.ends_with(":5353"))),
        "no drop record for UDP/TCP to the gateway's port 5353: {recs:#?}"
    );
    assert!(
        recs.iter().any(|r| r["kind"] == "https"
            && r["name"].is_null()
            && r["reason"] == "no SNI in the ClientHello"),
        "DoH by address (no SNI) not recorded: {recs:#?}"
    );
    assert!(
        recs.iter().any(|r| r["kind"] == "connect"
            && r["name"] == "allowed.test"
            && r["port"] == 443
            && r["verdict"] == "allow"),
        "{recs:#?}"
    );
    assert!(denied("connect", "blocked.test"), "{recs:#?}");
    assert!(
        recs.iter().any(|r| r["kind"] == "connect"
            && r["port"] == 22
            && r["verdict"] == "deny"
            && r["reason"].as_str().unwrap_or("").contains("not proxied")),
        "{recs:#?}"
    );
    net.w.assert_clean();
}

#[test]
fn metadata_is_unreachable_by_ip_by_name_and_imdsv2() {
    need_root!();
    let net = world();
    let script = format!(
        r#"
echo "imds_v1=$({CURL} http://169.254.169.254/latest/meta-data/iam/security-credentials/ ; echo " rc=$?")"
echo "imds_v2=$({CURL} -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' http://169.254.169.254/latest/api/token ; echo " rc=$?")"
echo "gcp_name=$({CURL} -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/ ; echo " rc=$?")"
echo "name_to_meta=$({CURL} http://meta.test/ ; echo " rc=$?")"
echo "azure=$({CURL} -H Metadata:true 'http://169.254.169.254/metadata/instance?api-version=2021-02-01' ; echo " rc=$?")"
echo "raw_tcp=$(timeout 3 bash -c 'echo > /dev/tcp/169.254.169.254/80' 2>/dev/null; echo $?)"
echo "imds_v6=$({CURL} -g 'http://[fd00:ec2::254]/latest/meta-data/' ; echo " rc=$?")"
echo "ipv6_off=$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6)"
"#
    );
    let (out, o) = net.job("default", &script);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !out.contains("stolen"),
        "metadata credentials reached the job: {out}"
    );
    let r = results(&out);
    assert_eq!(r["ipv6_off"], "1", "IPv6 is disabled inside jobs: {out}");
    for k in [
        "imds_v1",
        "imds_v2",
        "gcp_name",
        "name_to_meta",
        "azure",
        "imds_v6",
    ] {
        assert!(!r[k].ends_with("rc=0"), "{k}: {out}");
    }
    assert_ne!(r["raw_tcp"], "0", "{out}");
    let recs = net.records();
    assert!(
        recs.iter().any(|r| r["kind"] == "dns"
            && r["name"] == "metadata.google.internal"
            && r["verdict"] == "deny"),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "dns" && r["name"] == "meta.test" && r["verdict"] == "deny"),
        "{recs:#?}"
    );
    assert!(
        recs.iter().any(|r| r["kind"] == "drop"
            && r["dialled"] == "169.254.169.254:80"
            && r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("never reachable")),
        "the firewall's denial of the metadata address was not recorded: {recs:#?}"
    );
    net.w.assert_clean();
}

#[test]
fn internal_network_is_closed_except_what_a_group_allows() {
    need_root!();
    let net = world();
    // Scenario 3: a scan of the internal subnet finds nothing open.
    let scan = r#"
open=""
for h in 10.50.0.1 10.50.0.10 10.50.0.11; do
  for p in 22 80 443 3306 5432 6379 8080; do
    timeout 1 bash -c "echo > /dev/tcp/$h/$p" 2>/dev/null && open="$open $h:$p"
  done
done
echo "open=$open"
echo "db=$(timeout 2 bash -c 'exec 3<>/dev/tcp/10.50.0.10/5432; head -c 40 <&3' 2>/dev/null)"
"#;
    let (out, o) = net.job("default", scan);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = results(&out);
    assert_eq!(r["open"], "", "internal services reachable: {out}");
    assert_eq!(r["db"], "", "{out}");
    let drops = net
        .records()
        .iter()
        .filter(|r| r["kind"] == "drop" && r["verdict"] == "deny")
        .count();
    assert!(
        drops >= 21,
        "each denied destination must be recorded, got {drops}"
    );
    // The db group may reach exactly 10.50.0.10:5432.
    let (out, o) = net.job("db", scan);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = results(&out);
    assert_eq!(r["open"], "10.50.0.10:5432", "{out}");
    assert_eq!(r["db"], "hello from 10.50.0.10", "{out}");
    net.w.assert_clean();
}

/// Job A (audit mode: its gateway would allow anything) listens on a TCP port until the host
/// — its gateway address — connects to it, then prints how many connections it accepted
/// from anyone else.
const LISTENER: &str = r#"
/usr/bin/python3 - <<'PY'
import socket
gw = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((gw, 9))
me = u.getsockname()[0]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7777)); s.listen(16); s.settimeout(120)
print('%s %s ready' % (me, gw), flush=True)
others = 0
while True:
    c, peer = s.accept()
    if peer[0] == gw:
        break
    others += 1
    c.sendall(b'hello from job a\n'); c.close()
print('accepted=%d' % others, flush=True)
PY
"#;

/// What job B tries against job A: A's address and port, A's gateway's DNS (UDP and TCP) and
/// its CONNECT proxy, each for a name A's audit-mode gateway would allow.
const PROBE_OTHER_JOB: &str = r#"
/usr/bin/python3 - "$A_IP" "$A_GW" <<'PY'
import socket, struct, sys
a_ip, a_gw = sys.argv[1], sys.argv[2]
def query(name):
    body = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0' + struct.pack('!HH', 1, 1)
    return struct.pack('!HHHHHH', 7, 0x0100, 1, 0, 0, 0) + body
def job():
    try:
        c = socket.create_connection((a_ip, 7777), timeout=3)
        return 'open:' + c.recv(64).decode().strip()
    except Exception as e:
        return 'closed'
def dns_udp():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.sendto(query('blocked.test'), (a_gw, 53))
        r = s.recv(512)
        return 'rcode%d' % (r[3] & 0xf)
    except Exception:
        return 'none'
def dns_tcp():
    try:
        c = socket.create_connection((a_gw, 53), timeout=3)
        q = query('blocked.test'); c.sendall(struct.pack('!H', len(q)) + q)
        r = c.recv(512)
        return 'rcode%d' % (r[5] & 0xf) if len(r) > 5 else 'none'
    except Exception:
        return 'closed'
def proxy():
    try:
        c = socket.create_connection((a_gw, 3128), timeout=3)
        c.sendall(b'CONNECT blocked.test:80 HTTP/1.1\r\nHost: blocked.test:80\r\n\r\n')
        r = c.recv(200)
        if not r.startswith(b'HTTP/1.1 200'):
            return 'refused:' + r.split(b'\r\n')[0].decode()
        c.sendall(b'GET / HTTP/1.1\r\nHost: blocked.test\r\nConnection: close\r\n\r\n')
        return 'open:' + c.recv(400).split(b'\r\n')[-1].decode().strip()
    except Exception:
        return 'closed'
print('job=' + job())
print('dns_udp=' + dns_udp())
print('dns_tcp=' + dns_tcp())
print('proxy=' + proxy())
PY
"#;

#[test]
fn jobs_cannot_reach_each_other() {
    need_root!();
    let net = world();
    let p = net.w.policy(POLICY);
    let mut a = net.w.cmd();
    a.args(["run", "-q", "-p"])
        .arg(&p)
        .args(["-g", "audit", "-w"])
        .arg(net.w.ws())
        .arg("--egress-log")
        .arg(&net.log)
        .args(["--", "/bin/bash", "-c", LISTENER])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut a = a.spawn().expect("job a");
    let mut a_out = std::io::BufReader::new(a.stdout.take().expect("stdout"));
    let mut line = String::new();
    a_out.read_line(&mut line).expect("a's address");
    let (a_ip, a_gw) = match line.split_whitespace().collect::<Vec<_>>()[..] {
        [ip, gw, "ready"] => (ip.to_owned(), gw.to_owned()),
        _ => panic!("job a did not start: {line:?}"),
    };
    assert!(a_ip.starts_with("10.213."), "job a's address: {line:?}");
    let a_id = std::fs::read_dir(net.w.state().join("jobs"))
        .expect("jobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !n.ends_with(".json"))
        .expect("job a's id");

    // B in the default group, in audit mode, and with an allow rule covering the job pool.
    let mut failures = vec![];
    for group in ["default", "audit", "wide"] {
        let (out, o) = net.job(
            group,
            &format!("A_IP={a_ip} A_GW={a_gw}\n{PROBE_OTHER_JOB}"),
        );
        assert!(o.status.success(), "{group}: {out}\n{}", stderr(&o));
        let r = results(&out);
        if r["job"] != "closed" {
            failures.push(format!("{group}: job a's port: {}", r["job"]));
        }
        if r["proxy"].starts_with("open") {
            failures.push(format!("{group}: job a's CONNECT proxy: {}", r["proxy"]));
        }
        if r["dns_tcp"] != "closed" {
            failures.push(format!("{group}: job a's DNS over TCP: {}", r["dns_tcp"]));
        }
        // UDP DNS to any address is answered by the job's own gateway, if at all: in block
        // mode blocked.test must not resolve.
        if group != "audit" && r["dns_udp"] == "rcode0" {
            failures.push(format!("{group}: blocked.test resolved: {}", r["dns_udp"]));
        }
    }
    // Stop job a: its gateway (airlock's host: the test's namespace, never this process's)
    // connects to it.
    let stop = net
        .w
        .in_netns(&[
            "timeout",
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{a_ip}/7777"),
        ])
        .status()
        .expect("bash");
    assert!(stop.success(), "cannot reach job a from its host");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut a_out, &mut rest).expect("a's output");
    let st = a.wait().expect("job a");
    assert!(st.success(), "job a: {rest}");
    assert_eq!(
        rest.trim(),
        "accepted=0",
        "other jobs reached job a; {failures:?}"
    );
    // Nothing of B's was served, or recorded, by A's gateway.
    let of_a: Vec<_> = net
        .records()
        .into_iter()
        .filter(|r| r["job"] == a_id.as_str())
        .collect();
    assert!(
        of_a.is_empty(),
        "job a's gateway served other jobs: {of_a:#?}; {failures:?}"
    );
    // B's attempts on A's gateway, in every mode (audit included), are refused and on B's
    // record as lateral movement.
    let b_ids: std::collections::BTreeSet<String> = net
        .records()
        .into_iter()
        .filter(|r| {
            r["job"] != a_id.as_str()
                && r["kind"] == "drop"
                && r["dialled"] == format!("{a_gw}:3128").as_str()
                && r["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("another job's address")
        })
        .filter_map(|r| r["job"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        b_ids.len(),
        3,
        "each of B's three jobs has its attempt on A's proxy recorded: {b_ids:?}"
    );
    // B's attempts are on B's record, named for what they were.
    let lateral = net
        .records()
        .into_iter()
        .filter(|r| {
            r["job"] != a_id.as_str()
                && r["kind"] == "drop"
                && r["dialled"] == format!("{a_ip}:7777").as_str()
        })
        .collect::<Vec<_>>();
    assert!(
        !lateral.is_empty()
            && lateral.iter().all(|r| r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("another job's address")),
        "B's attempts on A's port are not recorded as such: {lateral:#?}"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    net.w.assert_clean();
}

#[test]
fn the_gateway_never_dials_the_host() {
    need_root!();
    let mut net = world();
    // A service of airlock's host: on the test namespace's own address (its veth to the fake
    // internet), where airlock and its gateways run.
    let t = net.w.netns.clone().expect("netns");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakehosts.py");
    let mut c = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{t}"))
        .args(["--", "/usr/bin/python3", script, "host", "198.51.100.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("host service");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    net.procs.push(c);
    assert_eq!(line.trim(), "ready", "the host service did not start");

    let gw = "$(awk '/^nameserver/{print $2; exit}' /etc/resolv.conf)";
    let script = format!(
        r#"
echo "loop_dns=$({CURL} http://loop.test/ ; echo " rc=$?")"
echo "host_dns=$({CURL} http://host.test/ ; echo " rc=$?")"
echo "loop_gw=$({CURL} --resolve loop.test:80:198.51.100.10 http://loop.test/ ; echo " rc=$?")"
echo "host_gw=$({CURL} --resolve host.test:80:198.51.100.10 http://host.test/ ; echo " rc=$?")"
echo "host_connect=$({CURL} -p -x http://{gw}:3128 http://host.test/ ; echo " rc=$?")"
"#
    );
    let (out, o) = net.job("default", &script);
    assert!(
        o.status.success(),
        "{out}
{}",
        stderr(&o)
    );
    let audit = format!(
        r#"
echo "pool_dns=$({CURL} http://pool.test/ ; echo " rc=$?")"
echo "pool_gw=$({CURL} --resolve pool.test:80:198.51.100.10 http://pool.test/ ; echo " rc=$?")"
echo "host_dns=$({CURL} http://host.test/ ; echo " rc=$?")"
echo "host_gw=$({CURL} --resolve host.test:80:198.51.100.10 http://host.test/ ; echo " rc=$?")"
echo "host_direct=$(timeout 3 bash -c 'echo > /dev/tcp/198.51.100.1/5353' 2>/dev/null; echo " rc=$?")"
"#
    );
    let (audit_out, o) = net.job("audit", &audit);
    assert!(
        o.status.success(),
        "{audit_out}
{}",
        stderr(&o)
    );
    for (k, v) in results(&out).into_iter().chain(results(&audit_out)) {
        assert!(
            !v.ends_with("rc=0") && !v.contains("host="),
            "{k}: the gateway dialled the host: {v}
{out}
{audit_out}"
        );
    }

    let recs = net.records();
    let denied = |kind: &str, name: &str, why: &str| {
        assert!(
            recs.iter().any(|r| r["kind"] == kind
                && r["name"] == name
                && r["verdict"] == "deny"
                && r["reason"].as_str().unwrap_or("").contains(why)),
            "no {kind} record denying {name} as \"{why}\": {recs:#?}"
        );
    };
    denied("dns", "loop.test", "never reachable");
    denied("http", "loop.test", "never reachable");
    denied("dns", "host.test", "host address");
    denied("http", "host.test", "host address");
    denied("connect", "host.test", "host address");
    denied("dns", "pool.test", "job address pool");
    denied("http", "pool.test", "job address pool");
    // An audit-mode job going straight to a host port is refused, and on the record.
    assert!(
        recs.iter().any(|r| r["kind"] == "drop"
            && r["dialled"] == "198.51.100.1:5353"
            && r["verdict"] == "deny"),
        "no record of the audit-mode job's connection to a host port: {recs:#?}"
    );
    assert!(
        !recs
            .iter()
            .any(|r| r["verdict"] == "allow" && r["resolved"] == "198.51.100.1"),
        "{recs:#?}"
    );
    net.w.assert_clean();
}

#[test]
fn dns_refuses_transfers_any_and_other_types_and_flags_tunnelling() {
    need_root!();
    let net = world();
    // A resolver stub in Python: bash cannot speak DNS.
    let script = r#"
/usr/bin/python3 - <<'PY'
import socket, struct
gw = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
def q(name, qtype):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    body = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0' + struct.pack('!HH', qtype, 1)
    s.sendto(struct.pack('!HHHHHH', 7, 0x0100, 1, 0, 0, 0) + body, (gw, 53))
    r = s.recv(512)
    return r[3] & 0xf
print('axfr=%d' % q('allowed.test', 252))
print('any=%d' % q('allowed.test', 255))
print('txt=%d' % q('allowed.test', 16))
print('a=%d' % q('allowed.test', 1))
print('tunnel=%d' % q('mzxw6ytboi4dsnzqgeztcmjsgq2tsnzugy3dsmbvgu4tmnrxg4ytq.blocked.test', 1))
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b'x', (gw, 123)); s.recv(10); print('udp123=open')
except Exception:
    print('udp123=closed')
PY
"#;
    let (out, o) = net.job("default", script);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let r = results(&out);
    assert_eq!(r["axfr"], "5", "AXFR refused: {out}");
    assert_eq!(r["any"], "5", "ANY refused: {out}");
    assert_eq!(r["txt"], "5", "only A/AAAA answered: {out}");
    assert_eq!(r["a"], "0", "{out}");
    assert_eq!(r["tunnel"], "3", "{out}");
    assert_eq!(r["udp123"], "closed", "{out}");
    let recs = net.records();
    // An allowed name's refused TXT query is not an egress attempt, and says so by a field.
    let txt = recs
        .iter()
        .find(|r| r["kind"] == "dns" && r["qtype"] == "TXT")
        .expect("the TXT query's record");
    assert_eq!(txt["allowed_but_failed"], true, "{txt}");
    let tunnel = recs
        .iter()
        .find(|r| {
            r["kind"] == "dns"
                && r["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("blocked.test"))
        })
        .expect("the blocked name's record");
    assert!(tunnel.get("allowed_but_failed").is_none(), "{tunnel}");
    assert!(
        recs.iter().any(|r| r["kind"] == "dns"
            && r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "dns-tunnelling-suspect"))),
        "{recs:#?}"
    );
    net.w.assert_clean();
}

#[test]
fn audit_mode_allows_and_records_everything_but_metadata() {
    need_root!();
    let net = world();
    let script = format!(
        r#"
echo "blocked=$({CURL} http://blocked.test/)"
echo "other_port=$(timeout 3 bash -c 'echo > /dev/tcp/198.51.100.11/853' 2>/dev/null; echo $?)"
echo "meta=$({CURL} http://169.254.169.254/ ; echo " rc=$?")"
"#
    );
    let (out, o) = net.job("audit", &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = results(&out);
    assert_eq!(
        r["blocked"], "host=198.51.100.11 plain host-header=blocked.test",
        "{out}"
    );
    assert_eq!(r["other_port"], "0", "{out}");
    assert!(
        !r["meta"].ends_with("rc=0") && !out.contains("stolen"),
        "{out}"
    );
    let recs = net.records();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "http" && r["name"] == "blocked.test" && r["verdict"] == "allow"),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "flow" && r["dialled"] == "198.51.100.11:853"),
        "audit mode records routed flows: {recs:#?}"
    );
    // The recorded traffic becomes an allow-list, without the metadata endpoint.
    let o = net
        .w
        .cmd()
        .args(["policy", "suggest", "--group", "ci", "--from"])
        .arg(&net.log)
        .output()
        .expect("suggest");
    let s = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        s.contains("[groups.ci.egress]") && s.contains("\"blocked.test\""),
        "{s}"
    );
    for line in s.lines().filter(|l| l.contains("169.254")) {
        assert!(
            line.starts_with('#'),
            "never-reachable target suggested: {s}"
        );
    }
    net.w.assert_clean();
}

#[test]
fn a_network_that_cannot_be_attached_leaves_nothing_and_runs_nothing() {
    need_root!();
    let w = World::new();
    // No upstream resolver anywhere (the policy names none, and the host's resolv.conf is
    // empty in a mount namespace of this test's own): attaching the job's network fails on
    // its thread, after the helper has been started; the helper must never get its go-ahead.
    let empty = w.dir.path().join("empty-resolv.conf");
    std::fs::write(&empty, "").expect("empty resolv.conf");
    let bin = airlock_bin();
    let mut c = w.in_netns(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        &empty.to_string_lossy(),
        &bin,
        "run",
        "--",
        "/bin/echo",
        "should-not-run",
    ]);
    c.env("AIRLOCK_STATE_DIR", w.state())
        .env("AIRLOCK_DATA_DIR", w.data())
        .env_remove("AIRLOCK_POLICY")
        .stdin(Stdio::null());
    let o = c.output().expect("run");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(!stdout(&o).contains("should-not-run"), "{err}");
    assert!(err.contains("no upstream resolver"), "{err}");
    if let Some(id) = job_id(&o) {
        assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    }
    // No helper left waiting for its go-ahead.
    let helpers = std::process::Command::new("pgrep")
        .args(["-f", &format!("__helper --job-dir {}", w.state().display())])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&helpers.stdout).trim().is_empty(),
        "helper processes left: {}",
        String::from_utf8_lossy(&helpers.stdout)
    );
    w.assert_clean();
}

/// An allowed name whose upstream resolver does not answer: the job's lookups and requests
/// fail, their records say `allowed_but_failed` (by a field, not by their reason's text) and
/// no detector calls them egress attempts.
#[test]
fn an_allowed_name_whose_upstream_fails_is_not_an_egress_attempt() {
    need_root!();
    let net = world();
    let report = net.w.dir.path().join("deadns.json");
    let p = net.w.policy(POLICY);
    let o = net
        .w
        .cmd()
        .args(["run", "-q", "-p"])
        .arg(&p)
        .args(["-g", "deadns", "-w"])
        .arg(net.w.ws())
        .arg("--report")
        .arg(&report)
        .args(["--", "/bin/bash", "-c"])
        .arg(format!(
            "getent hosts allowed.test; {CURL} http://allowed.test/ -o /dev/null; echo done"
        ))
        .output()
        .expect("run");
    assert!(stdout(&o).contains("done"), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let failed: Vec<&serde_json::Value> = r["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .filter(|e| e["verdict"] == "deny")
        .collect();
    assert!(!failed.is_empty(), "{r:#}");
    assert!(
        failed.iter().all(|e| e["allowed_but_failed"] == true),
        "{failed:#?}"
    );
    let alerts = alerts_of(&report);
    assert!(alert(&alerts, "denied-egress").is_none(), "{alerts:#?}");
    assert!(alert(&alerts, "network-scan").is_none(), "{alerts:#?}");
    net.w.assert_clean();
}

/// The detectors of a job's report.
fn alerts_of(report: &std::path::Path) -> Vec<serde_json::Value> {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
    r["alerts"].as_array().expect("alerts").clone()
}

fn alert<'a>(alerts: &'a [serde_json::Value], detector: &str) -> Option<&'a serde_json::Value> {
    alerts.iter().find(|a| a["detector"] == detector)
}

#[test]
fn audit_mode_lets_traffic_through_but_keeps_seeing_it() {
    need_root!();
    let net = world();
    let p = net.w.policy(POLICY);
    let run = |name: &str, script: &str| {
        let rep = net.w.dir.path().join(format!("{name}.json"));
        let o = net
            .w
            .cmd()
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args(["-g", "audit", "--report"])
            .arg(&rep)
            .arg("-w")
            .arg(net.w.ws())
            .args(["--", "/bin/bash", "-c", script])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
        (stdout(&o), alerts_of(&rep))
    };
    // A scan of an internal range: 6 hosts x 3 ports, let through (audit mode), most of them
    // answered by nobody.
    let (_, scan) = run(
        "scan",
        "for h in 2 3 4 5 6 10; do for p in 22 80 5432; do \
         (timeout 1 bash -c \"echo > /dev/tcp/10.50.0.$h/$p\" 2>/dev/null &); done; done; sleep 1.5; true",
    );
    let a = alert(&scan, "network-scan").unwrap_or_else(|| panic!("no network-scan: {scan:#?}"));
    assert_eq!(a["severity"], "high", "{a}");
    assert!(
        a["summary"].as_str().unwrap_or("").contains("10.50.0."),
        "{a}"
    );
    // A hard-coded address, a first-seen name; and a port of a host the job looked up,
    // which is not hard-coded.
    let (out, other) = run(
        "other",
        &format!(
            r#"
echo "raw=$(timeout 3 bash -c 'echo > /dev/tcp/198.51.100.11/853' 2>/dev/null; echo $?)"
echo "looked_up=$(timeout 3 bash -c 'echo > /dev/tcp/allowed.test/853' 2>/dev/null; echo $?)"
echo "new=$({CURL} http://blocked.test/)"
"#
        ),
    );
    let r = results(&out);
    assert_eq!(r["raw"], "0", "audit mode lets it through: {out}");
    assert_eq!(
        r["new"], "host=198.51.100.11 plain host-header=blocked.test",
        "{out}"
    );
    let raw = alert(&other, "denied-egress")
        .unwrap_or_else(|| panic!("no alert for the hard-coded address: {other:#?}"));
    let s = raw["summary"].as_str().unwrap_or("");
    assert!(
        s.contains("hard-coded address") && s.contains("198.51.100.11:853"),
        "{raw}"
    );
    assert!(!s.contains("198.51.100.10:853"), "a looked-up host: {raw}");
    let new = alert(&other, "new-destination")
        .unwrap_or_else(|| panic!("no new-destination: {other:#?}"));
    assert!(
        new["summary"]
            .as_str()
            .unwrap_or("")
            .contains("blocked.test"),
        "{new}"
    );
    assert!(alert(&other, "network-scan").is_none(), "{other:#?}");
    net.w.assert_clean();
}

/// HTTP clients of the job that control every byte: a second request on a kept-alive
/// connection, pipelined requests, requests inside CONNECT tunnels, and requests that two
/// parsers could read differently. Each prints `name=STATUS BODY|STATUS BODY…`.
const HTTP_TRICKS: &str = r#"
/usr/bin/python3 - <<'PY'
import socket, ssl
gw = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
def req(host, extra=b''):
    return b'GET / HTTP/1.1\r\nHost: ' + host.encode() + b'\r\n' + extra + b'\r\n'
def response(f):
    status = f.readline()
    if not status:
        return 'closed'
    n = 0
    while True:
        l = f.readline()
        if l in (b'\r\n', b'\n', b''):
            break
        k, _, v = l.decode().partition(':')
        if k.strip().lower() == 'content-length':
            n = int(v)
    body = f.read(n) if n else b''
    return status.decode().split(' ')[1] + ' ' + body.decode().strip()
def responses(f, n):
    out = []
    for _ in range(n):
        try:
            r = response(f)
        except Exception as e:
            r = 'error:' + type(e).__name__
        out.append(r)
        if r == 'closed' or r.startswith('error'):
            break
    return '|'.join(out)
def plain(ip, *reqs, together=False, n=None):
    c = socket.create_connection((ip, 80), timeout=5)
    f = c.makefile('rb')
    if together:
        c.sendall(b''.join(reqs))
        return responses(f, n or len(reqs))
    out = []
    for r in reqs:
        try:
            c.sendall(r)
        except Exception as e:
            out.append('error:' + type(e).__name__)
            break
        out.append(responses(f, 1))
        if out[-1] == 'closed' or out[-1].startswith('error'):
            break
    return '|'.join(out)
def tunnel(target):
    c = socket.create_connection((gw, 3128), timeout=5)
    c.sendall(b'CONNECT ' + target.encode() + b' HTTP/1.1\r\nHost: ' + target.encode() + b'\r\n\r\n')
    head = b''
    while b'\r\n\r\n' not in head:
        b = c.recv(1)
        if not b:
            break
        head += b
    return c, head.split(b'\r\n')[0].decode()
def in_tunnel(target, *reqs):
    c, status = tunnel(target)
    if ' 200' not in status:
        return 'refused:' + status
    f = c.makefile('rb')
    out = []
    for r in reqs:
        try:
            c.sendall(r)
        except Exception as e:
            out.append('error:' + type(e).__name__)
            break
        out.append(responses(f, 1))
    return '|'.join(out)
def tls_in_tunnel(target, sni, host):
    c, status = tunnel(target)
    if ' 200' not in status:
        return 'refused:' + status
    try:
        ctx = ssl.create_default_context(cafile='ca.pem')
        t = ctx.wrap_socket(c, server_hostname=sni)
        t.sendall(req(host, b'Connection: close\r\n'))
        return responses(t.makefile('rb'), 1)
    except Exception as e:
        return 'error:' + type(e).__name__
def catch(f, *a, **k):
    try:
        return f(*a, **k)
    except Exception as e:
        return 'error:' + type(e).__name__
A = '198.51.100.10'
print('keepalive=' + catch(plain, A, req('allowed.test'), req('blocked.test')))
print('pipelined=' + catch(plain, A, req('allowed.test'), req('blocked.test'), together=True))
print('chunked_then_evil=' + catch(plain, A,
    b'POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    req('blocked.test'), together=True))
print('tunnel80=' + catch(in_tunnel, 'allowed.test:80', req('blocked.test')))
print('tunnel80_second=' + catch(in_tunnel, 'allowed.test:80', req('allowed.test'), req('blocked.test')))
print('tunnel443_sni=' + catch(tls_in_tunnel, 'allowed.test:443', 'blocked.test', 'blocked.test'))
print('tunnel443_ok=' + catch(tls_in_tunnel, 'allowed.test:443', 'allowed.test', 'allowed.test'))
print('connect_blocked=' + catch(lambda: tunnel('blocked.test:443')[1]))
print('connect_rebind=' + catch(lambda: tunnel('rebind.test:443')[1]))
print('connect_host=' + catch(lambda: tunnel('host.test:80')[1]))
# Requests two parsers could read differently: refused, never forwarded.
print('te_cl=' + catch(plain, A, b'POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' + req('blocked.test'), together=True, n=2))
print('te_other=' + catch(plain, A, b'POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', together=True))
print('two_cl=' + catch(plain, A, b'POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n' + req('blocked.test'), together=True, n=2))
print('obs_fold=' + catch(plain, A, b'GET / HTTP/1.1\r\nHost: allowed.test\r\nX-A: a\r\n b\r\n\r\n', together=True))
print('abs_uri=' + catch(plain, A, b'GET http://blocked.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n', together=True))
print('two_hosts=' + catch(plain, A, b'GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: blocked.test\r\n\r\n', together=True))
print('no_host10=' + catch(plain, A, b'GET / HTTP/1.0\r\n\r\n', together=True))
print('upgrade_h2c=' + catch(plain, A, b'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n', together=True))
print('ok_twice=' + catch(plain, A, req('allowed.test'), req('Allowed.Test:80')))
# Bodies are forwarded by their framing and the connection stays usable.
print('ok_after_bodies=' + catch(plain, A,
    b'POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 5\r\n\r\nhello',
    b'PUT / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n',
    req('allowed.test')))
PY
"#;

#[test]
fn every_http_request_on_every_connection_is_checked() {
    need_root!();
    let net = world();
    let (out, o) = net.job("default", HTTP_TRICKS);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let r = results(&out);
    let ok = "200 host=198.51.100.10 plain host-header=allowed.test";
    let mut failures = vec![];
    for (k, v) in &r {
        if v.contains("host-header=blocked.test") {
            failures.push(format!("{k}: the evil Host reached a server: {v}"));
        }
    }
    // The allowed request before the evil one is served; the evil one is refused (403 from
    // airlock, or the connection closed), never forwarded.
    for k in ["keepalive", "pipelined", "tunnel80_second"] {
        let v = &r[k];
        let (first, second) = v.split_once('|').unwrap_or((v, ""));
        if first != ok || !(second.starts_with("403 airlock:") || second == "closed") {
            failures.push(format!("{k}: {v}"));
        }
    }
    let v = &r["chunked_then_evil"];
    if !v.starts_with("200 host=198.51.100.10 plain host-header=allowed.test|403 airlock:") {
        failures.push(format!("chunked_then_evil: {v}"));
    }
    if !(r["tunnel80"].starts_with("403 airlock:") || r["tunnel80"] == "closed") {
        failures.push(format!("tunnel80: {}", r["tunnel80"]));
    }
    if !r["tunnel443_sni"].starts_with("error:") {
        failures.push(format!("tunnel443_sni: {}", r["tunnel443_sni"]));
    }
    if r["tunnel443_ok"] != "200 host=198.51.100.10 tls host-header=allowed.test" {
        failures.push(format!("tunnel443_ok: {}", r["tunnel443_ok"]));
    }
    for k in ["connect_blocked", "connect_rebind", "connect_host"] {
        if r[k].contains(" 200") || !r[k].starts_with("HTTP/1.1 ") {
            failures.push(format!("{k}: CONNECT answered before judging: {}", r[k]));
        }
    }
    for k in [
        "te_cl",
        "te_other",
        "two_cl",
        "obs_fold",
        "abs_uri",
        "two_hosts",
        "no_host10",
        "upgrade_h2c",
    ] {
        let v = &r[k];
        if !(v.starts_with("400 airlock:") || v.starts_with("403 airlock:")) || v.contains("|200") {
            failures.push(format!("{k}: not refused: {v}"));
        }
    }
    if r["ok_after_bodies"] != [ok, ok, ok].join("|") {
        failures.push(format!("ok_after_bodies: {}", r["ok_after_bodies"]));
    }
    if r["ok_twice"] != format!("{ok}|{}", ok.replace("=allowed.test", "=Allowed.Test:80")) {
        failures.push(format!("ok_twice: {}", r["ok_twice"]));
    }
    let recs = net.records();
    let denied = |kind: &str, name: &str, why: &str| {
        recs.iter().any(|r| {
            r["kind"] == kind
                && r["name"] == name
                && r["verdict"] == "deny"
                && r["reason"].as_str().unwrap_or("").contains(why)
        })
    };
    for (kind, why) in [
        ("http", "this connection"),
        ("connect", "this connection"),
        ("connect", "SNI"),
    ] {
        if !denied(kind, "blocked.test", why) {
            failures.push(format!(
                "no {kind} record refusing blocked.test for \"{why}\""
            ));
        }
    }
    if !denied("connect", "rebind.test", "internal") {
        failures.push("no connect record refusing rebind.test".into());
    }
    if !recs.iter().any(|r| {
        r["kind"] == "http"
            && r["verdict"] == "deny"
            && r["reason"].as_str().unwrap_or("").contains("ambiguous")
    }) {
        failures.push("no record of an ambiguous request".into());
    }
    assert!(failures.is_empty(), "{failures:#?}\n{out}\n{recs:#?}");
    net.w.assert_clean();
}

/// DNS queries a job can craft: extra questions, EDNS options, records in the other sections,
/// and names whose answers point inside. Each prints `name=RCODE ANSWERS`.
const DNS_TRICKS: &str = r#"
/usr/bin/python3 - <<'PY'
import socket, struct
gw = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
def qname(n):
    return b''.join(bytes([len(p)]) + p.encode() for p in n.split('.')) + b'\0'
def question(n, t=1):
    return qname(n) + struct.pack('!HH', t, 1)
def rr(n, t, data, cls=1):
    return qname(n) + struct.pack('!HHIH', t, cls, 60, len(data)) + data
OPT_SECRET = b'\0' + struct.pack('!HHIH', 41, 1232, 0, 4 + 20) + struct.pack('!HH', 65001, 20) + b'SMUGGLED-EDNS-OPTION'
def ask(qd, questions, an=b'', nan=0, ns=b'', nns=0, ar=b'', nar=0, qid=0x4242):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(struct.pack('!HHHHHH', qid, 0x0100, qd, nan, nns, nar) + questions + an + ns + ar, (gw, 53))
    try:
        r = s.recv(4096)
    except Exception:
        return 'none'
    rid, flags, rqd, ran = struct.unpack('!HHHH', r[:8])
    # Skip the questions, then read the A records of the answer.
    i = 12
    for _ in range(rqd):
        while r[i] != 0 and not r[i] & 0xc0:
            i += 1 + r[i]
        i += 6 if r[i] & 0xc0 else 5
    ips = []
    for _ in range(ran):
        if r[i] & 0xc0:
            i += 2
        else:
            while r[i] != 0:
                i += 1 + r[i]
            i += 1
        t, _, _, l = struct.unpack('!HHIH', r[i:i + 10]); i += 10
        if t == 1:
            ips.append(socket.inet_ntoa(r[i:i + 4]))
        i += l
    return 'rcode%d %s%s' % (flags & 0xf, ','.join(ips), '' if rid == qid else ' wrong-id')
print('plain=' + ask(1, question('allowed.test')))
print('two_questions=' + ask(2, question('allowed.test') + question('smuggled-question.blocked.test')))
print('no_question=' + ask(0, b''))
print('edns_option=' + ask(1, question('allowed.test'), ar=OPT_SECRET, nar=1))
print('additional=' + ask(1, question('allowed.test'), ar=rr('smuggled-additional.blocked.test', 1, b'\x01\x02\x03\x04'), nar=1))
print('authority=' + ask(1, question('allowed.test'), ns=rr('smuggled-authority.blocked.test', 16, b'\x05hello'), nns=1))
print('answer_in_query=' + ask(1, question('allowed.test'), an=rr('smuggled-answer.blocked.test', 1, b'\x01\x02\x03\x04'), nan=1))
print('rebind=' + ask(1, question('rebind.test')))
print('mixed=' + ask(1, question('mixed.test')))
print('loop=' + ask(1, question('loop.test')))
PY
"#;

#[test]
fn dns_sends_upstream_only_queries_airlock_built_and_filters_internal_answers() {
    need_root!();
    let net = world();
    let (out, o) = net.job("default", DNS_TRICKS);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let r = results(&out);
    let mut failures = vec![];
    let expect = |k: &str, v: &str, failures: &mut Vec<String>| {
        if r[k] != v {
            failures.push(format!("{k}: {} (expected {v})", r[k]));
        }
    };
    expect("plain", "rcode0 198.51.100.10", &mut failures);
    expect("edns_option", "rcode0 198.51.100.10", &mut failures);
    // Ambiguous queries are refused as malformed (FORMERR), never forwarded.
    for k in [
        "two_questions",
        "no_question",
        "additional",
        "authority",
        "answer_in_query",
    ] {
        expect(k, "rcode1", &mut failures);
    }
    // Internal and never-reachable addresses are removed from answers.
    expect("rebind", "rcode3", &mut failures);
    expect("mixed", "rcode0 198.51.100.10", &mut failures);
    expect("loop", "rcode3", &mut failures);

    // What reached the upstream resolver: one question of an allowed name, a fresh id,
    // nothing else the job chose.
    let queries = net.upstream_queries();
    assert!(!queries.is_empty(), "the upstream resolver saw nothing");
    for q in &queries {
        let names: Vec<&str> = q["names"]
            .as_array()
            .map(|v| v.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        let hex = q["hex"].as_str().unwrap_or("");
        let smuggled = hex.contains(&hex_of("SMUGGLED")) || hex.contains(&hex_of("smuggled"));
        let rr_ok = q["rr"].as_array().is_some_and(|rr| {
            rr.iter()
                .all(|x| x["type"] == 41 && x["name"] == "" && x["rdlen"] == 0)
        });
        if q["qd"] != 1
            || q["an"] != 0
            || q["ns"] != 0
            || !rr_ok
            || q["id"] == 0x4242
            || smuggled
            || names
                .iter()
                .any(|n| !["allowed.test", "rebind.test", "mixed.test", "loop.test"].contains(n))
        {
            failures.push(format!("upstream saw a query the job chose: {q}"));
        }
    }
    let recs = net.records();
    let dns_denied = |name: &str, why: &str| {
        recs.iter().any(|r| {
            r["kind"] == "dns"
                && r["name"] == name
                && r["verdict"] == "deny"
                && r["reason"].as_str().unwrap_or("").contains(why)
        })
    };
    for (name, why) in [
        ("allowed.test", "2 questions"),
        ("allowed.test", "additional"),
        ("allowed.test", "authority"),
        ("allowed.test", "answer"),
        ("rebind.test", "internal"),
        ("loop.test", "never reachable"),
    ] {
        if !dns_denied(name, why) {
            failures.push(format!("no dns record refusing {name} for \"{why}\""));
        }
    }
    if !recs.iter().any(|r| {
        r["kind"] == "dns"
            && r["name"] == "mixed.test"
            && r["verdict"] == "allow"
            && r["reason"].as_str().unwrap_or("").contains("10.50.0.10")
    }) {
        failures.push("the removed answer of mixed.test is not on its record".into());
    }
    assert!(failures.is_empty(), "{failures:#?}\n{out}\n{recs:#?}");
    net.w.assert_clean();
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn host_services_on_the_gateway_ports_stop_no_job() {
    need_root!();
    let mut net = world();
    // dnsmasq, nginx and a proxy of the host: listening on 0.0.0.0 and [::] of every port the
    // gateway serves, in the namespace airlock and its gateways run in.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakehosts.py");
    let mut c = net
        .w
        .in_netns(&[
            "/usr/bin/python3",
            script,
            "squat",
            "53",
            "80",
            "443",
            "3128",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("host services");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    net.procs.push(c);
    assert_eq!(line.trim(), "ready", "the host services did not start");

    let script = format!(
        r#"
GW=$(awk '/^nameserver/{{print $2; exit}}' /etc/resolv.conf)
echo "dns=$(getent hosts allowed.test | awk '{{print $1}}')"
echo "dns_blocked=$(getent hosts blocked.test >/dev/null; echo $?)"
echo "http=$({CURL} http://allowed.test/)"
echo "https=$({CURL} https://allowed.test/)"
echo "connect=$({CURL} -x http://$GW:3128 https://allowed.test/)"
echo "gw_http=$({CURL} -H 'Host: allowed.test' http://$GW/)"
echo "blocked=$({CURL} --resolve blocked.test:80:198.51.100.11 http://blocked.test/)"
echo "blocked_tls=$({CURL} --resolve blocked.test:443:198.51.100.11 https://blocked.test/ >/dev/null; echo $?)"
echo "gw_raw=$(timeout 3 bash -c "exec 3<>/dev/tcp/$GW/443; echo hi >&3; head -c 20 <&3" 2>/dev/null)"
"#
    );
    for group in ["default", "audit"] {
        let (out, o) = net.job(group, &script);
        assert!(
            o.status.success(),
            "{group}: the job did not run: {out}\n{}",
            stderr(&o)
        );
        assert!(
            !out.contains("SQUATTER"),
            "{group}: a host service answered the job: {out}"
        );
        let r = results(&out);
        assert_eq!(r["dns"], "198.51.100.10", "{group}: {out}");
        assert_eq!(
            r["http"], "host=198.51.100.10 plain host-header=allowed.test",
            "{group}: {out}"
        );
        assert_eq!(
            r["https"], "host=198.51.100.10 tls host-header=allowed.test",
            "{group}: {out}"
        );
        assert_eq!(
            r["connect"], "host=198.51.100.10 tls host-header=allowed.test",
            "{group}: {out}"
        );
        assert_eq!(
            r["gw_http"], "host=198.51.100.10 plain host-header=allowed.test",
            "{group}: {out}"
        );
        if group == "default" {
            assert_ne!(r["dns_blocked"], "0", "{out}");
            assert!(r["blocked"].starts_with("airlock:"), "{out}");
            assert_ne!(r["blocked_tls"], "0", "{out}");
        }
    }
    net.w.assert_clean();
}

#[test]
fn containers_share_the_jobs_egress_policy_and_never_reach_metadata() {
    need_root!();
    let net = world();
    // The containers' image: the probe as an HTTP client (docs/containers.md).
    let layout = net.w.dir.path().join("ctr-layout");
    let probe = std::fs::read(probe_bin()).expect("probe");
    common::oci::probe_image_layout(&layout, "ctr:1", &probe);
    let o = net
        .w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    let step = serde_json::json!({
        "command": "run_container_step", "responseFile": null, "state": {},
        "args": { "image": "ctr:1", "entryPoint": "/bin/sh", "workingDirectory": "/",
                  "entryPointArgs": ["-c", "probe http http://allowed.test/ && echo allowed=ok; probe http http://blocked.test/ || echo blocked=refused; probe http http://169.254.169.254/latest/meta-data/ || echo meta=refused; probe get 10.50.0.10 5432 || echo internal=refused"],
                  "systemMountVolumes": [], "environmentVariables": {} }
    });
    std::fs::write(net.w.ws().join("step.json"), step.to_string()).expect("request");
    let (out, o) = net.job(
        "ctr",
        "node $ACTIONS_RUNNER_CONTAINER_HOOKS < step.json; echo \"step=$?\"",
    );
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for want in [
        "allowed=ok",
        "blocked=refused",
        "meta=refused",
        "internal=refused",
        "step=0",
    ] {
        assert!(out.contains(want), "missing {want}:\n{out}\n{}", stderr(&o));
    }
    assert!(!out.contains("stolen"), "{out}");
    // The container's traffic is the job's: the gateway and the firewall recorded it.
    let recs = net.records();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "dns" && r["name"] == "blocked.test" && r["verdict"] == "deny"),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "drop" && r["dialled"] == "169.254.169.254:80"),
        "{recs:#?}"
    );
    net.w.assert_clean();
}

/// Open files of a process (its `/proc/PID/fd` entries).
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A job that floods its gateway with connections (1,600 held open, never a request) costs
/// airlock at most `limits.connections` of them: the rest are reset at once and recorded as
/// over the limit, and airlock's own open files stay bounded while the job holds them. airlock
/// raises its soft open-file limit when the group needs it, holds fewer connections when its
/// hard limit cannot carry the group's, and refuses the job (before it runs) when it cannot
/// carry even the fewest.
#[test]
fn a_connection_flood_costs_airlock_a_bounded_number_of_files() {
    need_root!();
    let net = world();
    let p = net.w.policy(
        r#"version = 1
default_group = "flood"
[groups.flood]
egress = { domains = ["allowed.test"], resolver = "198.51.100.53" }
limits = { connections = 64, pids = 512 }
[groups.wide]
egress = { domains = ["allowed.test"], resolver = "198.51.100.53" }
limits = { connections = 4096 }
"#,
    );
    let report = net.w.dir.path().join("flood.json");
    let run = |group: &str, prlimit: &str, script: &str| {
        let mut argv = vec!["prlimit", prlimit, "--"];
        let bin = airlock_bin();
        argv.push(&bin);
        let mut c = net.w.in_netns(&argv);
        c.env("AIRLOCK_STATE_DIR", net.w.state())
            .env("AIRLOCK_DATA_DIR", net.w.data())
            .env_remove("AIRLOCK_POLICY")
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args(["-g", group, "-w"])
            .arg(net.w.ws())
            .arg("--report")
            .arg(&report)
            .args(["--", "/bin/bash", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn")
    };
    // Too low a hard limit for even the fewest connections a gateway runs with: refused,
    // nothing ran.
    let o = run("flood", "--nofile=700:700", "echo ran")
        .wait_with_output()
        .expect("run");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("ran"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("too low for its egress gateway") && stderr(&o).contains("hard 700"),
        "{}",
        stderr(&o)
    );
    net.w.assert_clean();
    // A hard limit too low for the group's 4,096 but enough for 640: the gateway holds
    // 640 (stricter for the job, never airlock out of files), and says so.
    let o = run("wide", "--nofile=1024:2048", "echo ran")
        .wait_with_output()
        .expect("run");
    assert!(stdout(&o).contains("ran"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds at most 640 connections"),
        "{}",
        stderr(&o)
    );
    net.w.assert_clean();
    // A soft limit below the need (2 × 64 + 768) and a hard one above it: raised, and the
    // flood is bounded.
    let flood = "for p in $(seq 1 8); do ( n=0; for i in $(seq 1 200); do \
                 exec {fd}<>/dev/tcp/198.51.100.10/80 2>/dev/null && n=$((n+1)); done; \
                 echo \"opened $n\"; sleep 6 ) & done; wait; echo flooded";
    let mut child = run("flood", "--nofile=512:8192", flood);
    let pid = child.id();
    let mut peak = 0;
    let mut raised = false;
    // nsenter execs airlock in place: the child's pid is airlock's.
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(open_files(pid));
        raised |= std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 896 "));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        raised,
        "airlock's soft open-file limit was not raised to 896"
    );
    let o = child.wait_with_output().expect("output");
    let out = stdout(&o);
    assert!(out.contains("flooded"), "{out}\n{}", stderr(&o));
    let opened: usize = out
        .lines()
        .filter_map(|l| l.strip_prefix("opened "))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .sum();
    assert!(
        opened >= 1000,
        "the job opened only {opened} connections: {out}"
    );
    // 64 connections (two files each at most) and airlock's own files; without the limit
    // airlock held one per connection the job opened.
    assert!(peak > 0 && peak < 500, "airlock held {peak} open files");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let over: u64 = r["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .filter(|e| {
            e["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "over-limit"))
        })
        .map(|e| {
            assert_eq!(e["allowed_but_failed"], true, "{e}");
            e["count"].as_u64().unwrap_or(1)
        })
        .sum();
    assert!(
        over as usize >= opened - 64 * 2,
        "{over} over the limit of {opened}: {r:#}"
    );
    net.w.assert_clean();
}
