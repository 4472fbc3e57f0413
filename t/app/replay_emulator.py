#!/usr/bin/python3
"""A stand-in for Fly.io's proxy, for fly-edge's tests and `make run`.

It accepts client requests, routes each to one region's nginx and, when that
region answers with a `fly-replay` response header, replays the same request
(method, path, headers, body) to the region the header names, the way Fly's
edge does (see shared/FLY.md).  The final region's answer goes back to the
client without the `fly-replay` header.

Usage:
    replay_emulator.py --listen PORT --region scl=127.0.0.1:8001 --region ord=... \
        [--region-port scl=PORT ...] [--machine scl=ID ...] [--default-region scl] \
        [--app NAME] [--max-replays 10] [--max-replay-body 1048576]

Routing of a client request (first that applies):
  * `fly-force-region: R` -> region R; an unknown region is an error (no fallback);
  * `fly-prefer-region: A,B` -> the first known of A, B; otherwise as below;
  * the request came in on `--region-port R=PORT` -> region R (a client near R);
  * the default region (`--default-region`, or the first --region).

Request headers added, as Fly does: Fly-Region (the edge region that accepted the
client), Fly-Client-IP, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Port,
Fly-Forwarded-Port, Fly-Request-Id, Via.  Client headers pass through
unchanged (a client-sent fly-replay-src included: tests of loop safety use it).

fly-replay handling:
  * syntax `key=value;key=value`, no spaces; keys region (quoted when it holds a
    comma-separated list), instance, prefer_instance, app, state, elsewhere,
    timeout, fallback (force_self | prefer_self).  Anything else, an empty or
    duplicate key, or no target at all -> 502 with `fly-emulator-error: PA03`.
  * the replayed request carries
    `fly-replay-src: instance=<id>;region=<src>;t=<us since epoch>;state=<state>`
    (state= only when the replay named one).
  * at most --max-replays replays of one request, then 502 PA02.
  * a request body over --max-replay-body bytes, or sent without Content-Length
    (chunked), cannot be replayed: 502 PA01.
  * when the target cannot be reached (unknown region, connection refused, or
    no answer within `timeout`): with `fallback` set, the request goes back to
    the region that asked for the replay with
    `fly-replay-failed: instance=<target id>;app=<app>;region=<target>;
    replay_source=<source id>;reason=no_candidate|retries_exhausted|timeout;elapsed_ms=<n>`;
    without it, 502 (PR04) or 504 (timeout).

Response headers added: `fly-emulator-region` (the region whose answer this
is), `fly-emulator-replays` (how many replays it took), `fly-emulator-route`
(e.g. `atl>scl`), `fly-request-id`, Via.  Errors made by the emulator itself
carry `fly-emulator-error: <code>` and a plain-text body naming the code.

101 Switching Protocols answers are tunnelled (WebSocket), after any replay.
"""

import argparse
import itertools
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "expect"}
REPLAY_KEYS = {"region", "instance", "prefer_instance", "app", "state",
               "elsewhere", "timeout", "fallback"}
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.:\-+/=@!~*'()$%&]+$")
REGION_RE = re.compile(r"^[a-z0-9]+$")
IO_CHUNK = 65536

ARGS = None
REQ_IDS = itertools.count(1)


class ReplayError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason      # timeout | retries_exhausted | no_candidate
        self.message = message


# ---------------------------------------------------------------- fly-replay

def parse_duration(text):
    m = re.match(r"^(\d+)(ms|s|m)?$", text)
    if not m:
        return None
    n = int(m.group(1))
    unit = m.group(2) or "s"
    return n / 1000.0 if unit == "ms" else n * 60.0 if unit == "m" else float(n)


def parse_fly_replay(value):
    """Parse a fly-replay header value into a dict, or raise ReplayError(PA03)."""
    def bad(why):
        raise ReplayError(502, "PA03", "malformed fly-replay header %r: %s" % (value, why))

    if value is None or value == "":
        bad("empty value")
    if re.search(r"\s", value):
        bad("whitespace is not allowed")
    out = {}
    parts = [""]
    quoted = False
    for ch in value:               # split on ';' outside double quotes
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("")
        else:
            parts[-1] += ch
    if quoted:
        bad("unbalanced quotes")
    for part in parts:
        if "=" not in part:
            bad("%r is not key=value" % part)
        key, val = part.split("=", 1)
        if key not in REPLAY_KEYS:
            bad("unknown key %r" % key)
        if key in out:
            bad("duplicate key %r" % key)
        quoted = len(val) >= 2 and val[0] == '"' and val[-1] == '"'
        if quoted:
            val = val[1:-1]
        elif '"' in val:
            bad("stray quote in %r" % part)
        if val == "":
            bad("empty value for %r" % key)
        if "," in val and not quoted:
            bad("a list value must be quoted: %r" % part)
        if not TOKEN_RE.match(val.replace(",", "")):
            bad("bad characters in %r" % part)
        out[key] = val
    if "region" in out:
        regions = out["region"].split(",")
        if not all(REGION_RE.match(r) for r in regions):
            bad("bad region list %r" % out["region"])
        out["regions"] = regions
    if "elsewhere" in out and out["elsewhere"] not in ("true", "false"):
        bad("elsewhere must be true or false")
    if "fallback" in out and out["fallback"] not in ("force_self", "prefer_self"):
        bad("fallback must be force_self or prefer_self")
    if "timeout" in out:
        out["timeout_s"] = parse_duration(out["timeout"])
        if out["timeout_s"] is None:
            bad("bad timeout %r" % out["timeout"])
    if not any(k in out for k in ("region", "instance", "prefer_instance", "app")) \
            and out.get("elsewhere") != "true":
        bad("no target (region, instance, prefer_instance, app or elsewhere=true)")
    return out


def choose_target(replay, current):
    """The region a parsed fly-replay sends the request to, or raise Unreachable."""
    regions = list(ARGS.regions)
    if "app" in replay and replay["app"] != ARGS.app:
        raise Unreachable("no_candidate", "app %r is not served here" % replay["app"])
    elsewhere = replay.get("elsewhere") == "true"
    if "instance" in replay:
        for r, mid in ARGS.machines.items():
            if mid == replay["instance"] and not (elsewhere and r == current):
                return r
        raise Unreachable("no_candidate", "no machine %r" % replay["instance"])
    if "prefer_instance" in replay:
        for r, mid in ARGS.machines.items():
            if mid == replay["prefer_instance"] and not (elsewhere and r == current):
                return r
    if "regions" in replay:
        for r in replay["regions"]:
            if r in ARGS.regions and not (elsewhere and r == current):
                return r
        raise Unreachable("no_candidate", "no machine in region(s) %s" % replay["region"])
    if elsewhere:
        for r in regions:
            if r != current:
                return r
        raise Unreachable("no_candidate", "no other region")
    return current


# ---------------------------------------------------------------- upstream HTTP client

class Upstream:
    """One HTTP/1.1 exchange with a region's nginx over a fresh connection."""

    def __init__(self, region, timeout):
        host, port = ARGS.regions[region]
        self.region = region
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except socket.timeout:
            raise Unreachable("timeout", "connecting to %s (%s:%d) timed out" % (region, host, port))
        except OSError as e:
            raise Unreachable("retries_exhausted", "cannot connect to %s (%s:%d): %s"
                              % (region, host, port, e.strerror or e))
        self.rfile = self.sock.makefile("rb", buffering=IO_CHUNK)

    def send_request(self, method, path, headers, body, chunked):
        lines = ["%s %s HTTP/1.1" % (method, path)]
        for name, value in headers:
            lines.append("%s: %s" % (name, value))
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif body or method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: %d" % len(body))
        if not any(n.lower() == "connection" for n, _ in headers):
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if chunked:
                self.sock.sendall(head)
                view = memoryview(body)
                for off in range(0, len(body), IO_CHUNK):
                    piece = view[off:off + IO_CHUNK]
                    self.sock.sendall(b"%x\r\n" % len(piece))
                    self.sock.sendall(piece)
                    self.sock.sendall(b"\r\n")
                self.sock.sendall(b"0\r\n\r\n")
            elif len(body) < IO_CHUNK:
                self.sock.sendall(head + body)
            else:
                self.sock.sendall(head)
                self.sock.sendall(body)
        except socket.timeout:
            raise Unreachable("timeout", "sending to %s timed out" % self.region)
        except OSError:
            # nginx may answer (e.g. 413) and close before reading the whole
            # body: read_head() still gets that answer
            pass

    def read_head(self):
        try:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise Unreachable("retries_exhausted", "%s closed the connection without answering"
                                      % self.region)
                m = re.match(rb"^HTTP/(\d\.\d) (\d{3})(?: ([^\r\n]*))?\r?\n$", line)
                if not m:
                    raise Unreachable("retries_exhausted", "bad status line from %s: %r" % (self.region, line))
                self.version = m.group(1).decode()
                self.status = int(m.group(2))
                self.reason = (m.group(3) or b"").decode("latin-1")
                self.headers = []
                while True:
                    h = self.rfile.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    self.headers.append((name.strip(), value.strip()))
                if self.status == 100:
                    continue
                return
        except socket.timeout:
            raise Unreachable("timeout", "%s did not answer in time" % self.region)
        except ConnectionError as e:
            raise Unreachable("retries_exhausted", "connection to %s failed: %s" % (self.region, e))

    def header(self, name):
        name = name.lower()
        values = [v for n, v in self.headers if n.lower() == name]
        return ", ".join(values) if values else None

    def body_kind(self, method):
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            return "none", 0
        te = self.header("transfer-encoding")
        if te and "chunked" in te.lower():
            return "chunked", None
        cl = self.header("content-length")
        if cl is not None:
            return "length", int(cl.split(",")[0])
        return "close", None

    def iter_body(self, method):
        """Yield the decoded body in pieces."""
        kind, length = self.body_kind(method)
        if kind == "length":
            left = length
            while left > 0:
                data = self.rfile.read1(min(left, IO_CHUNK))
                if not data:
                    raise ConnectionError("upstream body truncated")
                left -= len(data)
                yield data
        elif kind == "chunked":
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("upstream chunked body truncated")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left > 0:
                    data = self.rfile.read1(min(left, IO_CHUNK))
                    if not data:
                        raise ConnectionError("upstream chunked body truncated")
                    left -= len(data)
                    yield data
                self.rfile.readline(3)
        elif kind == "close":
            while True:
                data = self.rfile.read1(IO_CHUNK)
                if not data:
                    return
                yield data

    def close(self):
        for f in (self.rfile, self.sock):
            try:
                f.close()
            except OSError:
                pass


# ---------------------------------------------------------------- the proxy

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are separate writes: without this, Nagle plus the
    # peer's delayed ACK hold every keepalive response back ~40 ms
    disable_nagle_algorithm = True
    server_version = "fly-emulator"
    timeout = 120

    def version_string(self):
        return self.server_version

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.proxy
        raise AttributeError(name)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def log_request(self, code="-", size="-"):
        pass  # proxy() logs one line per request with its route

    # -------------------------------------------------------- client side

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("truncated chunked request body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks), True
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        n = int(self.headers.get("Content-Length") or 0)
        data = bytearray()
        while len(data) < n:
            piece = self.rfile.read(min(n - len(data), 1 << 20))
            if not piece:
                raise ConnectionError("truncated request body")
            data.extend(piece)
        return bytes(data), False

    def error(self, status, code, message, region=None, replays=0, route=""):
        body = ("fly-replay emulator error %s: %s\n" % (code, message)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("fly-emulator-error", code)
        if region:
            self.send_header("fly-emulator-region", region)
        self.send_header("fly-emulator-replays", str(replays))
        if route:
            self.send_header("fly-emulator-route", route)
        self.send_header("fly-request-id", self.request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_message("%s %s -> %s %d %s: %s", self.command, self.path, route or "-",
                         status, code, message)

    def entry_region(self):
        force = self.headers.get("fly-force-region")
        if force:
            for r in (x.strip() for x in force.split(",")):
                if r in ARGS.regions:
                    return r
            raise ReplayError(503, "PR01", "fly-force-region %r names no known region" % force)
        prefer = self.headers.get("fly-prefer-region")
        if prefer:
            for r in (x.strip() for x in prefer.split(",")):
                if r in ARGS.regions:
                    return r
        return self.server.edge_region or ARGS.default_region

    def proxy(self):
        self.request_id = "%s-%d" % (ARGS.instance_tag, next(REQ_IDS))
        try:
            body, chunked = self.read_body()
        except (ConnectionError, ValueError) as e:
            self.close_connection = True
            self.log_message("bad request body: %s", e)
            return
        upgrade = "upgrade" in self.headers.get("Connection", "").lower() and self.headers.get("Upgrade")
        try:
            edge = self.entry_region()
        except ReplayError as e:
            return self.error(e.status, e.code, e.message)

        client_ip = self.client_address[0]
        headers = []
        xff = None
        via = None
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname == "content-length":
                continue
            if lname == "x-forwarded-for":
                xff = value if xff is None else xff + ", " + value
                continue
            if lname == "via":
                via = value if via is None else via + ", " + value
                continue
            if lname in ("fly-region", "fly-client-ip", "x-forwarded-proto", "x-forwarded-port",
                         "fly-forwarded-port", "fly-request-id"):
                continue  # Fly sets these itself
            headers.append((name, value))
        if upgrade:
            headers.append(("Connection", "Upgrade"))
            headers.append(("Upgrade", upgrade))
        port = self.server.server_address[1]
        headers += [
            ("Fly-Region", edge),
            ("Fly-Client-IP", client_ip),
            ("X-Forwarded-For", client_ip if xff is None else xff + ", " + client_ip),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Port", str(port)),
            ("Fly-Forwarded-Port", str(port)),
            ("Fly-Request-Id", self.request_id),
            ("Via", "1.1 fly.io" if via is None else via + ", 1.1 fly.io"),
        ]

        region = edge
        route = [edge]
        replays = 0
        timeout = ARGS.timeout
        origin = None          # (region, parsed replay) that asked for the last replay
        extra = []             # fly-replay-src / fly-replay-failed for the next hop
        started = time.monotonic()
        while True:
            hop_headers = headers + extra
            up = None
            try:
                up = Upstream(region, timeout)
                up.send_request(self.command, self.path, hop_headers, body, chunked)
                up.read_head()
            except Unreachable as e:
                if up is not None:
                    # the hop is abandoned (e.g. its timeout passed): close it
                    # now, so the region sees the client go at once
                    up.close()
                if origin is None:
                    return self.error(502, "PR04", e.message, region, replays, ">".join(route))
                src_region, replay = origin
                if "fallback" not in replay:
                    status = 504 if e.reason == "timeout" else 502
                    code = "PR03" if e.reason == "timeout" else "PR04"
                    return self.error(status, code, "replay to %s failed: %s" % (region, e.message),
                                      region, replays, ">".join(route))
                extra = [("fly-replay-failed", "instance=%s;app=%s;region=%s;replay_source=%s;reason=%s;elapsed_ms=%d" % (
                    ARGS.machines.get(region, ""), ARGS.app, region, ARGS.machines.get(src_region, ""),
                    e.reason, (time.monotonic() - started) * 1000))]
                self.log_message("%s %s: replay to %s failed (%s), falling back to %s",
                                 self.command, self.path, region, e.reason, src_region)
                origin = None
                timeout = ARGS.timeout
                region = src_region
                route.append(region + "(fallback)")
                continue

            replay_value = up.header("fly-replay")
            if replay_value is None or up.status == 101:
                return self.relay(up, region, replays, ">".join(route))

            # the region asked for a replay: its body is ignored
            try:
                for _ in up.iter_body(self.command):
                    pass
            except (ConnectionError, ValueError, OSError):
                pass
            up.close()
            try:
                replay = parse_fly_replay(replay_value)
                if chunked:
                    raise ReplayError(502, "PA01", "a request body without Content-Length cannot be replayed")
                if len(body) > ARGS.max_replay_body:
                    raise ReplayError(502, "PA01", "request body of %d bytes is over the %d bytes that can be replayed"
                                      % (len(body), ARGS.max_replay_body))
                if replays >= ARGS.max_replays:
                    raise ReplayError(502, "PA02", "more than %d replays of one request (%s)"
                                      % (ARGS.max_replays, ">".join(route + ["?"])))
            except ReplayError as e:
                return self.error(e.status, e.code, e.message, region, replays, ">".join(route))
            replays += 1
            src = region
            timeout = replay.get("timeout_s", ARGS.timeout)
            origin = (src, replay)
            src_value = "instance=%s;region=%s;t=%d" % (ARGS.machines.get(src, ""), src,
                                                         int(time.time() * 1e6))
            if "state" in replay:
                src_value += ";state=" + replay["state"]
            extra = [("fly-replay-src", src_value)]
            try:
                region = choose_target(replay, src)
            except Unreachable as e:
                if "fallback" not in replay:
                    return self.error(502, "PR04", "replay from %s: %s" % (src, e.message),
                                      src, replays, ">".join(route))
                extra = [("fly-replay-failed", "instance=;app=%s;region=%s;replay_source=%s;reason=%s;elapsed_ms=%d" % (
                    ARGS.app, replay.get("region", ""), ARGS.machines.get(src, ""), e.reason,
                    (time.monotonic() - started) * 1000))]
                origin = None
                timeout = ARGS.timeout
                region = src
                route.append(region + "(fallback)")
                continue
            route.append(region)

    def relay(self, up, region, replays, route):
        """Send the region's answer to the client."""
        kind, length = up.body_kind(self.command)
        self.send_response_only(up.status, up.reason or None)
        for name, value in up.headers:
            lname = name.lower()
            if lname in HOP_BY_HOP or lname == "fly-replay":
                continue
            if lname == "content-length" and kind in ("chunked", "close"):
                continue
            self.send_header(name, value)
        self.send_header("fly-emulator-region", region)
        self.send_header("fly-emulator-replays", str(replays))
        self.send_header("fly-emulator-route", route)
        self.send_header("fly-request-id", self.request_id)
        self.send_header("Via", "1.1 fly.io")
        self.log_message("%s %s -> %s %d", self.command, self.path, route, up.status)
        if up.status == 101:
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", up.header("upgrade") or "websocket")
            self.end_headers()
            return self.tunnel(up)
        client_chunked = False
        if kind == "chunked":
            if self.request_version == "HTTP/1.1":
                self.send_header("Transfer-Encoding", "chunked")
                client_chunked = True
            else:
                self.close_connection = True
                self.send_header("Connection", "close")
        elif kind == "close":
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            for data in up.iter_body(self.command):
                if client_chunked:
                    self.wfile.write(b"%x\r\n" % len(data))
                    self.wfile.write(data)
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(data)
            if client_chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (ConnectionError, ValueError, OSError) as e:
            self.log_message("relaying the answer of %s failed: %s", region, e)
            self.close_connection = True
        finally:
            up.close()

    def tunnel(self, up):
        self.close_connection = True
        self.wfile.flush()
        client = self.connection
        done = threading.Event()

        def pump(read1, sock):
            try:
                while True:
                    data = read1(IO_CHUNK)
                    if not data:
                        break
                    sock.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        client.settimeout(None)
        up.sock.settimeout(None)
        a = threading.Thread(target=pump, args=(self.rfile.read1, up.sock), daemon=True)
        b = threading.Thread(target=pump, args=(up.rfile.read1, client), daemon=True)
        a.start()
        b.start()
        a.join()
        b.join()
        up.close()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, port, edge_region):
        self.edge_region = edge_region
        super().__init__(("127.0.0.1", port), Handler)


def pair(text, what):
    if "=" not in text:
        raise argparse.ArgumentTypeError("%s must be NAME=VALUE" % what)
    return tuple(text.split("=", 1))


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=int, required=True, help="main port on 127.0.0.1")
    p.add_argument("--region", action="append", default=[], type=lambda s: pair(s, "--region"),
                   help="REGION=HOST:PORT of that region's nginx (repeat)")
    p.add_argument("--region-port", action="append", default=[], type=lambda s: pair(s, "--region-port"),
                   help="REGION=PORT: an extra listening port whose clients are near REGION")
    p.add_argument("--machine", action="append", default=[], type=lambda s: pair(s, "--machine"),
                   help="REGION=MACHINE_ID (default: a made-up id per region)")
    p.add_argument("--default-region")
    p.add_argument("--app", default="fly-edge-local")
    p.add_argument("--max-replays", type=int, default=10)
    p.add_argument("--max-replay-body", type=int, default=1 << 20)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a region")
    ARGS = p.parse_args()
    if not ARGS.region:
        p.error("at least one --region is needed")
    regions = {}
    for name, addr in ARGS.region:
        host, _, port = addr.rpartition(":")
        regions[name] = (host or "127.0.0.1", int(port))
    ARGS.regions = regions
    ARGS.machines = {name: "%014x" % (0xf1ed9e000000 + i) for i, name in enumerate(regions)}
    ARGS.machines.update(dict(ARGS.machine))
    ARGS.default_region = ARGS.default_region or next(iter(regions))
    ARGS.instance_tag = "emu%d" % ARGS.listen
    if ARGS.default_region not in regions:
        p.error("--default-region must be one of the --region names")

    servers = [Server(ARGS.listen, None)]
    for name, port in ARGS.region_port:
        if name not in regions:
            p.error("--region-port names unknown region %r" % name)
        servers.append(Server(int(port), name))
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sys.stderr.write("replay emulator on 127.0.0.1:%d, regions %s\n" % (
        ARGS.listen, ", ".join("%s=%s:%d" % (n, h, pt) for n, (h, pt) in regions.items())))
    sys.stderr.flush()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
