"""Fake hosts for the sealed-world network tests. Runs only inside network namespaces the test
creates; every address below belongs to those namespaces.

    fakehosts.py internet CERT KEY   HTTP and HTTPS on 198.51.100.10 and .11 (each says which
                                     address served it), DNS on 198.51.100.53
    fakehosts.py metadata            an IMDS look-alike on 169.254.169.254:80 and
                                     [fd00:ec2::254]:80 handing out "credentials"
    fakehosts.py corp                a "database" on 10.50.0.10:5432 and ssh on :22
    fakehosts.py dns IP NAME=ADDR…   only the DNS server, on IP, answering the given names
                                     (the serve end-to-end test's api.github.test)
    fakehosts.py host IP             HTTP on IP:80, run in airlock's own namespace: a service
                                     of the host that no job may reach
    fakehosts.py echo PORT           UDP echo and a TCP listener on 0.0.0.0:PORT, run in
                                     airlock's own namespace: reachable on every gateway
                                     address unless the firewall stops the job
    fakehosts.py squat PORT…         a host service on 0.0.0.0 and [::] of each PORT (TCP and
                                     UDP), run in airlock's own namespace: answers "SQUATTER"
                                     to anyone (the gateway must bind and work around it)

With FAKEHOSTS_DNS_LOG set, the DNS server appends one JSON line per query it receives (its
sections, names and EDNS options): what reached the upstream resolver.
"""
import http.server
import json
import os
import socket
import socketserver
import ssl
import struct
import sys
import threading

ZONE = {
    "allowed.test": "198.51.100.10",
    "blocked.test": "198.51.100.11",
    "rebind.test": "10.50.0.10",
    # One public and one internal address: only the internal one is a rebinding answer.
    "mixed.test": ["198.51.100.10", "10.50.0.10"],
    "meta.test": "169.254.169.254",
    "db.corp.test": "10.50.0.10",
    # The gateway must never dial the host it runs on: loopback, the test namespace's own
    # address (airlock's host), an address of the job pool.
    "loop.test": "127.0.0.1",
    "host.test": "198.51.100.1",
    "pool.test": "10.213.255.254",
}


class Handler(http.server.BaseHTTPRequestHandler):
    # Keep-alive and pipelining: every request on a connection is answered in turn, each
    # naming the Host it carried.
    protocol_version = "HTTP/1.1"

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                self.rfile.read(size + 2)
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def _reply(self):
        self._read_body()
        if self.path.startswith("/big/"):
            # /big/N: N MiB of zeros, for throughput benchmarks.
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n << 20))
            self.end_headers()
            chunk = b"\0" * (1 << 20)
            for _ in range(n):
                self.wfile.write(chunk)
            return
        ip = self.connection.getsockname()[0]
        tag = "tls" if isinstance(self.connection, ssl.SSLSocket) else "plain"
        body = f"host={ip} {tag} host-header={self.headers.get('Host')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply
    do_PUT = _reply
    do_POST = _reply

    def log_message(self, *args):
        pass


class Metadata(Handler):
    def _reply(self):
        self._read_body()
        body = b'{"AccessKeyId":"ASIAFAKE","SecretAccessKey":"stolen-if-you-read-this"}\n'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply
    do_PUT = _reply


class Server6(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET6

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def udp_echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(b"echo " + data, peer)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer would look up the address's name (getfqdn): no resolver exists here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def serve(addr, handler, ctx=None):
    s = Server(addr, handler)
    if ctx is not None:
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()


def describe_query(q):
    """The sections of a query as a dict (names, counts, EDNS options), for the log."""
    d = {"hex": q.hex()}
    try:
        qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", q[:12])
        d.update(id=qid, qd=qd, an=an, ns=ns, ar=ar, names=[], rr=[])
        i = 12

        def name():
            nonlocal i
            labels = []
            while q[i] != 0:
                if q[i] & 0xC0:
                    labels.append("<ptr>")
                    i += 2
                    return ".".join(labels)
                labels.append(q[i + 1 : i + 1 + q[i]].decode(errors="replace"))
                i += 1 + q[i]
            i += 1
            return ".".join(labels)

        for _ in range(qd):
            d["names"].append(name())
            i += 4
        for _ in range(an + ns + ar):
            n = name()
            rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", q[i : i + 10])
            i += 10
            d["rr"].append({"name": n, "type": rtype, "rdlen": rdlen})
            i += rdlen
    except Exception as e:  # a malformed query is logged as such
        d["error"] = str(e)
    return d


def dns(addr, zone=ZONE):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    log = os.environ.get("FAKEHOSTS_DNS_LOG")
    while True:
        q, peer = s.recvfrom(4096)
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(describe_query(q)) + "\n")
        if len(q) < 12:
            continue
        (qid,) = struct.unpack("!H", q[:2])
        # Question: labels until the zero byte, then type and class.
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1 : i + 1 + n].decode(errors="replace"))
            i += 1 + n
        question = q[12 : i + 5]
        qtype = struct.unpack("!H", q[i + 1 : i + 3])[0] if i + 3 <= len(q) else 0
        name = ".".join(labels).lower()
        ip = zone.get(name)
        if ip and qtype == 1:
            ips = ip if isinstance(ip, list) else [ip]
            header = struct.pack("!HHHHHH", qid, 0x8180, 1, len(ips), 0, 0)
            answer = b"".join(
                b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(a) for a in ips
            )
            s.sendto(header + question + answer, peer)
        else:
            rcode = 0 if ip else 3
            header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 0, 0, 0)
            s.sendto(header + question, peer)


def listen(addr):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(64)

    def loop():
        while True:
            c, _ = s.accept()
            c.sendall(b"hello from " + addr[0].encode() + b"\n")
            c.close()

    threading.Thread(target=loop, daemon=True).start()


def squat(port):
    """A host service on 0.0.0.0 and [::] (IPv6 only) of `port`, TCP and UDP."""
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        t = socket.socket(family, socket.SOCK_STREAM)
        u = socket.socket(family, socket.SOCK_DGRAM)
        for x in (t, u):
            if family == socket.AF_INET6:
                x.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            x.bind((any_addr, port))
        t.listen(16)

        def tcp(t=t):
            while True:
                c, _ = t.accept()
                try:
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nSQUATTER\n")
                finally:
                    c.close()

        def udp(u=u):
            while True:
                data, peer = u.recvfrom(4096)
                # Echo the DNS id so a resolver would take it: "SQUATTER" as the answer.
                u.sendto(data[:2] + b"\x81\x80SQUATTER", peer)

        threading.Thread(target=tcp, daemon=True).start()
        threading.Thread(target=udp, daemon=True).start()


def main():
    mode = sys.argv[1]
    if mode == "internet":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        for ip in ("198.51.100.10", "198.51.100.11"):
            serve((ip, 80), Handler)
            serve((ip, 443), Handler, ctx)
            listen((ip, 853))
            listen((ip, 8080))
        threading.Thread(target=dns, args=(("198.51.100.53", 53),), daemon=True).start()
    elif mode == "metadata":
        serve(("169.254.169.254", 80), Metadata)
        s6 = Server6(("fd00:ec2::254", 80), Metadata)
        threading.Thread(target=s6.serve_forever, daemon=True).start()
    elif mode == "dns":
        zone = dict(a.lower().split("=", 1) for a in sys.argv[3:])
        threading.Thread(target=dns, args=((sys.argv[2], 53), zone), daemon=True).start()
    elif mode == "host":
        serve((sys.argv[2], 80), Handler)
    elif mode == "echo":
        port = int(sys.argv[2])
        listen(("0.0.0.0", port))
        threading.Thread(target=udp_echo, args=(port,), daemon=True).start()
    elif mode == "squat":
        for p in sys.argv[2:]:
            squat(int(p))
    elif mode == "corp":
        listen(("10.50.0.10", 5432))
        listen(("10.50.0.10", 22))
        serve(("10.50.0.10", 80), Handler)
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
