#!/usr/bin/python3
"""Demo upstream app for fly-edge's tests and `make run`.

It stands for the user's existing app and knows nothing of fly-edge: no replay
logic and no cache code.  It reads and writes the PostgreSQL database named by
DATABASE_URL; in a replica region that database is a read-only standby, so a
write that reaches it fails with 500 (read-only transaction), exactly as an
unmodified app would on Fly.

Usage:
    demo_app.py [--port N]     serve on 127.0.0.1:N (default: $PORT or 8000)
    demo_app.py migrate        create the schema in $DATABASE_URL and exit

Environment: DATABASE_URL, FLY_REGION (sent back as X-App-Region), PORT.

The JSON API:
    GET    /posts                      all posts, oldest first
    POST   /posts                      {"title": .., "body": ..} -> 201
    GET    /posts/<id>                 one post with its comments
    PUT    /posts/<id>, PATCH /posts/<id>
    DELETE /posts/<id>                 -> 204
    POST   /posts/<id>/comments        {"body": ..} -> 201
    GET    /track?page=P               a GET that writes (inserts a visit row)
JSON and application/x-www-form-urlencoded bodies are accepted.  HEAD works on
every GET route; OPTIONS answers 204 with Allow.

Endpoints for the cache and replay tests (any method):
    /echo                what the app received: method, path, headers, body
                         length and sha256 (proves a proxy forwarded the
                         request unchanged)
    /hdr?<Name>=<value>&...   200 with those response headers; `status=` sets
                         the status, `body=` the body, and each `echo=<Header>`
                         adds a line "<Header>: <its request value>" to the
                         body (so Vary variants show which request made them);
                         with `cond=1` a request whose If-None-Match matches
                         the ETag asked for (or If-Modified-Since is not
                         before the Last-Modified asked for) gets a 304 with
                         those headers (Cache-Control replaced by `cc304=`,
                         when given); a request header `X-Test-Etag: T`
                         makes T the ETag (the representation changed);
                         `delay=N` answers (200 or 304) after N milliseconds
    /bin?size=N          N deterministic binary bytes
    /gzip?size=N         N bytes of text, gzip-encoded (Content-Encoding: gzip)
    /chunked?size=N[&chunk=K]  N binary bytes with chunked transfer encoding
    /slow?ms=N           answers after N milliseconds
    /big?size=N          N bytes of text, with Content-Length
    /ws                  with `Connection: Upgrade` and `Upgrade: websocket`:
                         101 Switching Protocols, then echoes every byte it
                         receives until the client closes (no framing)
On /bin, /gzip, /chunked, /slow and /big every query parameter other than
size, chunk, ms, status, body and echo is also sent back as a response header, so
e.g. /bin?size=10&Cache-Control=max-age%3D60 is cacheable.  Their responses
carry X-Body-Sha256 (of the bytes on the wire).

A request with `X-Test-Status: N` gets status N (body "forced N"), whatever
its route (a failing app, for the cache's stale tests).

Every response carries X-App-Region and X-Origin-Count (requests this process
has served, this one included; /__count and /__health are not counted).
    /__count             {"count": N} without counting itself
    /__health            "ok"
"""

import base64
import email.utils
import gzip
import hashlib
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool

REGION = os.environ.get("FLY_REGION", "local")
DATABASE_URL = os.environ.get("DATABASE_URL", "")
MAX_BODY = 256 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL DEFAULT '',
    region     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS comments (
    id         bigserial PRIMARY KEY,
    post_id    bigint NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    body       text NOT NULL,
    region     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS visits (
    id         bigserial PRIMARY KEY,
    page       text NOT NULL,
    region     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
"""

_counter_lock = threading.Lock()
_counter = 0


def next_count():
    global _counter
    with _counter_lock:
        _counter += 1
        return _counter


def current_count():
    with _counter_lock:
        return _counter


# ---------------------------------------------------------------- database

_pool = None
_pool_lock = threading.Lock()


def pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = psycopg2.pool.ThreadedConnectionPool(
                0, 32, DATABASE_URL, connect_timeout=3)
        return _pool


class Db:
    """`with Db() as cur:` runs one transaction on a pooled connection."""

    def __enter__(self):
        self.conn = pool().getconn()
        self.cur = self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        broken = False
        try:
            if exc_type is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        except psycopg2.Error:
            broken = True
        broken = broken or self.conn.closed != 0 or isinstance(exc, psycopg2.OperationalError)
        pool().putconn(self.conn, close=broken)
        return False


def migrate():
    conn = psycopg2.connect(DATABASE_URL, connect_timeout=5)
    with conn:
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
    conn.close()


def row_json(row):
    out = {}
    for k, v in row.items():
        out[k] = v.isoformat() if hasattr(v, "isoformat") else v
    return out


# ---------------------------------------------------------------- test payloads

_stream_lock = threading.Lock()
_stream = bytearray()


def binary_bytes(n):
    """The first n bytes of a fixed pseudo-random stream (sha256 counter mode)."""
    with _stream_lock:
        i = len(_stream) // 32
        while len(_stream) < n:
            _stream.extend(hashlib.sha256(b"fly-edge:%d" % i).digest())
            i += 1
        return bytes(_stream[:n])


def text_bytes(n):
    line = b"fly-edge demo text line %08d abcdefghijklmnopqrstuvwxyz\n"
    out = bytearray()
    i = 0
    while len(out) < n:
        out.extend(line % i)
        i += 1
    return bytes(out[:n])


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- HTTP

POST_RE = re.compile(r"^/posts/(\d+)$")
COMMENTS_RE = re.compile(r"^/posts/(\d+)/comments$")
RESERVED_PARAMS = {"size", "chunk", "ms", "status", "body", "echo", "cond", "cc304", "delay"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are separate writes: without this, Nagle plus the
    # peer's delayed ACK hold every keepalive response back ~40 ms
    disable_nagle_algorithm = True
    server_version = "demo-app/1"

    def version_string(self):
        return self.server_version

    def __getattr__(self, name):
        # BaseHTTPRequestHandler calls do_<METHOD>; answer every method.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s [%s] %s\n" % (time.strftime("%H:%M:%S"), REGION, fmt % args))

    # -------------------------------------------------------- plumbing

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise HttpError(400, "truncated chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise HttpError(413, "body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise HttpError(400, "bad Content-Length")
        if n > MAX_BODY:
            raise HttpError(413, "body too large")
        data = bytearray()
        while len(data) < n:
            chunk = self.rfile.read(min(n - len(data), 1 << 20))
            if not chunk:
                raise HttpError(400, "truncated body")
            data.extend(chunk)
        return bytes(data)

    def start(self, status, headers=(), count=True):
        self.send_response(status)
        self.send_header("X-App-Region", REGION)
        if count:
            self.send_header("X-Origin-Count", str(self.count))
        for name, value in headers:
            self.send_header(name, value)

    def reply(self, status, body=b"", content_type="application/json", headers=(), count=True):
        if isinstance(body, str):
            body = body.encode()
        hdrs = list(headers)
        names = {n.lower() for n, _ in hdrs}
        if body and "content-type" not in names:
            hdrs.append(("Content-Type", content_type))
        self.start(status, hdrs, count)
        if status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def json(self, status, obj, headers=()):
        self.reply(status, json.dumps(obj, sort_keys=True) + "\n", headers=headers)

    def payload(self):
        """The request body as a dict (JSON or form encoded)."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not self.body:
            return {}
        if ctype == "application/x-www-form-urlencoded":
            return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace")))
        try:
            data = json.loads(self.body)
        except ValueError:
            raise HttpError(400, "body is not valid JSON")
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data

    # -------------------------------------------------------- dispatch

    def dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        self.route = url.path
        self.params = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        try:
            self.body = self.read_body()
        except HttpError as e:
            self.count = next_count()
            self.close_connection = True
            self.json(e.status, {"error": e.message, "region": REGION})
            return
        except (ValueError, OSError):
            self.close_connection = True
            return
        if self.route == "/__count":
            self.count = current_count()
            self.json(200, {"count": current_count(), "region": REGION}, )
            return
        if self.route == "/__health":
            self.count = current_count()
            self.reply(200, "ok\n", "text/plain", count=False)
            return
        self.count = next_count()
        forced = self.headers.get("X-Test-Status")
        if forced is not None and forced.isdigit():
            # any route: answer with that status (a failing app, for the
            # cache's stale tests)
            self.reply(int(forced), "forced %s\n" % forced, "text/plain")
            return
        try:
            self.route_request()
        except HttpError as e:
            self.json(e.status, {"error": e.message, "region": REGION})
        except psycopg2.Error as e:
            msg = (getattr(e, "pgerror", None) or str(e)).strip()
            self.log_message("database error: %s", msg)
            self.json(500, {"error": msg, "region": REGION,
                            "pgcode": getattr(e, "pgcode", None)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route_request(self):
        method = self.command
        route = self.route
        test_routes = {
            "/echo": self.echo, "/hdr": self.hdr, "/bin": self.bin,
            "/gzip": self.gzip, "/chunked": self.chunked,
            "/slow": self.slow, "/big": self.big, "/ws": self.websocket,
        }
        if route in test_routes:
            return test_routes[route]()
        if method == "OPTIONS":
            return self.reply(204, headers=[("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")])
        get = method in ("GET", "HEAD")
        if route == "/":
            if get:
                return self.json(200, {"app": "fly-edge demo", "region": REGION,
                                       "routes": ["/posts", "/posts/<id>", "/posts/<id>/comments"]})
        elif route == "/posts":
            if get:
                return self.list_posts()
            if method == "POST":
                return self.create_post()
        elif POST_RE.match(route):
            pid = int(POST_RE.match(route).group(1))
            if get:
                return self.show_post(pid)
            if method in ("PUT", "PATCH"):
                return self.update_post(pid)
            if method == "DELETE":
                return self.delete_post(pid)
        elif COMMENTS_RE.match(route):
            pid = int(COMMENTS_RE.match(route).group(1))
            if method == "POST":
                return self.create_comment(pid)
        elif route == "/track":
            if get:
                return self.track()
        else:
            raise HttpError(404, "not found")
        raise HttpError(405, "method not allowed")

    # -------------------------------------------------------- the API

    def list_posts(self):
        with Db() as cur:
            cur.execute("""SELECT p.*, (SELECT count(*) FROM comments c WHERE c.post_id = p.id)
                           AS comment_count FROM posts p ORDER BY p.id""")
            rows = [row_json(r) for r in cur.fetchall()]
        self.json(200, rows)

    def show_post(self, pid):
        with Db() as cur:
            cur.execute("SELECT * FROM posts WHERE id = %s", (pid,))
            row = cur.fetchone()
            if row is None:
                raise HttpError(404, "no post %d" % pid)
            post = row_json(row)
            cur.execute("SELECT * FROM comments WHERE post_id = %s ORDER BY id", (pid,))
            post["comments"] = [row_json(r) for r in cur.fetchall()]
        self.json(200, post)

    def create_post(self):
        data = self.payload()
        title = data.get("title")
        if not isinstance(title, str) or not title.strip():
            raise HttpError(422, "title is required")
        body = data.get("body", "")
        if not isinstance(body, str):
            raise HttpError(422, "body must be a string")
        with Db() as cur:
            cur.execute("INSERT INTO posts (title, body, region) VALUES (%s, %s, %s) RETURNING *",
                        (title, body, REGION))
            post = row_json(cur.fetchone())
        self.json(201, post, headers=[("Location", "/posts/%d" % post["id"])])

    def update_post(self, pid):
        data = self.payload()
        fields = {k: data[k] for k in ("title", "body") if k in data}
        if self.command == "PUT" and "title" not in fields:
            raise HttpError(422, "title is required")
        for k, v in fields.items():
            if not isinstance(v, str):
                raise HttpError(422, "%s must be a string" % k)
        with Db() as cur:
            sets = ", ".join("%s = %%s" % k for k in fields)
            sql = "UPDATE posts SET %s%supdated_at = now(), region = %%s WHERE id = %%s RETURNING *" % (
                sets, ", " if sets else "")
            cur.execute(sql, list(fields.values()) + [REGION, pid])
            row = cur.fetchone()
            if row is None:
                raise HttpError(404, "no post %d" % pid)
        self.json(200, row_json(row))

    def delete_post(self, pid):
        with Db() as cur:
            cur.execute("DELETE FROM posts WHERE id = %s RETURNING id", (pid,))
            if cur.fetchone() is None:
                raise HttpError(404, "no post %d" % pid)
        self.reply(204)

    def create_comment(self, pid):
        data = self.payload()
        body = data.get("body")
        if not isinstance(body, str) or not body.strip():
            raise HttpError(422, "body is required")
        with Db() as cur:
            cur.execute("SELECT id FROM posts WHERE id = %s", (pid,))
            if cur.fetchone() is None:
                raise HttpError(404, "no post %d" % pid)
            cur.execute("INSERT INTO comments (post_id, body, region) VALUES (%s, %s, %s) RETURNING *",
                        (pid, body, REGION))
            comment = row_json(cur.fetchone())
        self.json(201, comment)

    def track(self):
        page = dict(self.params).get("page", "/")
        with Db() as cur:
            cur.execute("INSERT INTO visits (page, region) VALUES (%s, %s) RETURNING *", (page, REGION))
            visit = row_json(cur.fetchone())
        self.json(200, visit)

    # -------------------------------------------------------- test endpoints

    def extra_headers(self):
        hdrs = [(k, v) for k, v in self.params if k not in RESERVED_PARAMS]
        etag = self.headers.get("X-Test-Etag")
        if etag is not None:
            # the representation changed: another ETag than the URL's
            hdrs = [(k, v) for k, v in hdrs if k.lower() != "etag"] + [("ETag", etag)]
        return hdrs

    def param_int(self, name, default):
        value = dict(self.params).get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise HttpError(400, "%s must be an integer" % name)

    def status_param(self):
        status = self.param_int("status", 200)
        if not 200 <= status <= 599:
            raise HttpError(400, "status must be 200..599")
        return status

    def echo(self):
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        out = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": headers,
            "header_list": [[n, v] for n, v in self.headers.items()],
            "body_length": len(self.body),
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "region": REGION,
        }
        if len(self.body) <= 4096:
            out["body"] = self.body.decode("utf-8", "replace")
        self.json(200, out)

    def hdr(self):
        body = dict(self.params).get("body", "")
        delay = self.param_int("delay", 0)
        if delay > 0:
            time.sleep(delay / 1000.0)
        if dict(self.params).get("cond") == "1" and self.not_modified():
            hdrs = self.extra_headers()
            cc304 = dict(self.params).get("cc304")
            if cc304 is not None:
                hdrs = [(k, v) for k, v in hdrs if k.lower() != "cache-control"]
                hdrs.append(("Cache-Control", cc304))
            self.reply(304, b"", headers=hdrs)
            return
        for k, v in self.params:
            if k == "echo":
                body += "%s: %s\n" % (v, self.headers.get(v, ""))
        self.reply(self.status_param(), body, "text/plain", headers=self.extra_headers())

    def not_modified(self):
        """With cond=1: the request's If-None-Match matches the ETag asked
        for, or (without If-None-Match) its If-Modified-Since is not
        earlier than the Last-Modified asked for (RFC 9110 13.1.1, 13.1.3)."""
        asked = {k.lower(): v for k, v in self.extra_headers()}
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            etag = asked.get("etag")
            if etag is None:
                return False
            weak = lambda t: t.strip()[2:] if t.strip().startswith("W/") else t.strip()
            return inm.strip() == "*" or any(weak(t) == weak(etag) for t in inm.split(","))
        ims = self.headers.get("If-Modified-Since")
        lm = asked.get("last-modified")
        if ims is None or lm is None:
            return False
        try:
            return email.utils.parsedate_to_datetime(ims) >= email.utils.parsedate_to_datetime(lm)
        except (TypeError, ValueError):
            return False

    def sized(self, default=1024):
        size = self.param_int("size", default)
        if not 0 <= size <= MAX_BODY:
            raise HttpError(400, "size out of range")
        return size

    def send_bytes(self, data, content_type, headers=()):
        hdrs = [("X-Body-Sha256", hashlib.sha256(data).hexdigest())] + list(headers)
        if not any(n.lower() == "content-type" for n, _ in hdrs):
            hdrs.append(("Content-Type", content_type))
        self.start(self.status_param(), hdrs)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            view = memoryview(data)
            for off in range(0, len(data), 65536):
                self.wfile.write(view[off:off + 65536])

    def bin(self):
        self.send_bytes(binary_bytes(self.sized()), "application/octet-stream", self.extra_headers())

    def big(self):
        self.send_bytes(text_bytes(self.sized(1 << 20)), "text/plain", self.extra_headers())

    def gzip(self):
        raw = text_bytes(self.sized())
        data = gzip.compress(raw, mtime=0)
        self.send_bytes(data, "text/plain", [("Content-Encoding", "gzip"),
                                             ("X-Uncompressed-Size", str(len(raw)))]
                        + self.extra_headers())

    def slow(self):
        ms = self.param_int("ms", 1000)
        time.sleep(max(ms, 0) / 1000.0)
        self.send_bytes(("slept %d ms\n" % ms).encode(), "text/plain", self.extra_headers())

    def websocket(self):
        if "upgrade" not in self.headers.get("Connection", "").lower() \
                or self.headers.get("Upgrade", "").lower() != "websocket":
            raise HttpError(426, "upgrade to websocket required")
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.start(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                         ("Sec-WebSocket-Accept", accept)])
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            data = self.rfile.read1(65536)
            if not data:
                break
            self.wfile.write(data)
            self.wfile.flush()

    def chunked(self):
        data = binary_bytes(self.sized())
        step = max(self.param_int("chunk", 4096), 1)
        hdrs = [("X-Body-Sha256", hashlib.sha256(data).hexdigest()),
                ("Content-Type", "application/octet-stream")] + self.extra_headers()
        self.start(self.status_param(), hdrs)
        if self.request_version == "HTTP/1.0":
            # no chunked encoding for 1.0 clients: end the body by closing
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for off in range(0, len(data), step):
            piece = data[off:off + step]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv):
    if len(argv) > 1 and argv[1] == "migrate":
        migrate()
        return 0
    port = int(os.environ.get("PORT", "8000"))
    if len(argv) > 2 and argv[1] == "--port":
        port = int(argv[2])
    elif len(argv) > 1:
        sys.stderr.write(__doc__)
        return 2
    server = Server(("127.0.0.1", port), Handler)
    sys.stderr.write("demo app (%s) listening on 127.0.0.1:%d\n" % (REGION, port))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
