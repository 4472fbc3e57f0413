#!/usr/bin/python3
"""A tiny fake Redis that splits its replies and misbehaves on request.

    fake_redis.py [--port N] [--control FILE]

Binds 127.0.0.1 (port N, default 0: any free port), prints the port on
stdout (one line, flushed) and serves RESP2 clients, one thread each, from an
in-memory dict: GET, SET (EX/PX/NX/XX accepted, only NX/XX honoured), DEL,
EXISTS, EVAL (the module's invalidation script: deletes KEYS[1]; any other
script: nil), AUTH and SELECT (always +OK), PING, QUIT.  EVAL and EVALSHA of
the module's fill and invalidation scripts (recognised by their text, not
run) do what those do, simplified: the fill moves the value SET under its
staging key to its key (and stores the marker) unless the tag epoch changed
or a fence record exists; the invalidation writes its
tombstones (and bumps the epoch for tags); EVALSHA of a script never
EVALed here is NOSCRIPT.  Unknown commands get
"-ERR unknown command".  Exits on SIGTERM/SIGINT, when stdin reaches EOF, or
when its parent goes away.

How it answers is read from the control file (FILE, or $FAKE_REDIS_CONTROL;
re-read whenever it changes, checked before every command; write a new file
and rename it over the old one), `key=value` lines, `#` comments.  A key
missing from the file has its default:

    split=N       write every reply in chunks of N bytes (0: in one piece)
    delay=S       seconds to sleep between chunks (default 0.001) ...
    max_sleeps=K  ... but at most K sleeps per write, spread evenly (100)
    coalesce=MS   after a read, wait up to MS ms for more commands, so that
                  the replies of several commands go out in one write (0:
                  the replies to the commands of one read go together)
    get=MODE      the reply to GET:
                    normal     the value, or nil
                    integer    :42
                    array      *2 of two bulk strings
                    nested     *3 holding an integer, nil and an array
                    empty      *0
                    nilarray   *-1
                    nilbulk    $-1 (a plain miss)
                    status     +OK
                    wrongtype  -WRONGTYPE Operation against a key holding ...
                    error      -ERR something went wrong
                  or a malformed reply, after which the server waits for the
                  client to close the connection:
                    badlen     $abc
                    negarray   *-5
                    huge       $536870913 (over Redis's 512 MiB limit)
                    hugearray  *3000000000 (over INT_MAX)
                    badint     :12x4
                    garbage    bytes that are no RESP type
                    nocrlf     a bulk string followed by XY instead of CRLF
                    longline   $ and 100 digits, no CRLF
                    deep       arrays nested 9 deep
                    badelem    *2 whose second element is $abc
                    unsolicited  the right reply (to every GET received
                               within 50 ms, scaled), then an extra :1
                               in the same write as the reply's end
                  or none at all:
                    silent     no reply to this GET nor to anything after
                               it on that connection (the server goes on
                               reading: a Redis that hangs)
                  or one that ends the connection:
                    close      close without answering
                    closehead  send "$123" and close
                    closemid   half of the right reply (a value of at least
                               2 bytes; else of a made-up one), then close

    late_key=KEY  the reply to GET KEY (whatever `get` says for it) is
                  held back, with the replies to the commands after it on
                  that connection, until the client sends something more
                  on the connection (or late_ms, default 60000, pass); then
                  they go out, in order: a slow reply, late
    late_ms=MS

Commands starting with FAKE are for the test and are answered at once, in
one piece, whatever the control file says:

    FAKE STATS        a bulk string of `name=value` lines: commands by name,
                      connections, replies, max_batch (the most replies
                      sent in one write), after_bad (commands received on a
                      connection after a malformed reply), keys;
                      clients (connections that sent a command other than
                      FAKE), closed (those of them the client closed),
                      late_sent (late_key replies sent), after_silent
                      (commands received on a connection gone silent),
                      split_send_ms (milliseconds spent writing split
                      replies out, all connections together)
    FAKE HAS key      :1 or :0
    FAKE LEN key      the value's length, or -1
    FAKE FLUSH        +OK (the dict emptied, statistics kept)
    FAKE INVALIDATE key   sends the invalidation of key to the connections
                      that track it (as a write would); :N of them
    FAKE FLUSHALL     the null invalidation to every subscribed connection;
                      :N of them

Client-side caching (RESP2, the module's near cache): CLIENT ID (:n),
CLIENT SETNAME (+OK), CLIENT TRACKING on REDIRECT <id> (+OK; the
connection tracks from then on), SUBSCRIBE (subscribed mode: PING answers
*2 pong ""), and invalidation messages
    *3 message __redis__:invalidate *1 <key>
sent to the REDIRECT connection when a key that a tracking connection read
(GET, MGET) is written (SET, DEL, UNLINK, EVAL/EVALSHA keys) by anyone.
One more key of the control file:

    race_key=KEY  a GET of KEY on a tracking connection first sends the
                  invalidation of KEY to its REDIRECT connection, waits
                  race_ms (default 50), then answers with the value it read
                  (a write came right after the GET: the invalidation
                  overtakes the reply), and leaves KEY untracked
    race_ms=MS
"""

import hashlib
import itertools
import os
import select
import signal
import socket
import sys
import threading
import time

DATA = {}
STATS = {"connections": 0, "replies": 0, "max_batch": 0}
LOCK = threading.Lock()

DEFAULTS = {"split": "0", "delay": "0.001", "max_sleeps": "100",
            "coalesce": "0", "get": "normal", "late_key": "",
            "late_ms": "60000"}


class Control:
    """The control file, re-read when its identity or contents change."""

    def __init__(self, path):
        self.path = path
        self.sig = None
        self.mode = dict(DEFAULTS)
        self.lock = threading.Lock()

    def get(self):
        with self.lock:
            if self.path:
                try:
                    st = os.stat(self.path)
                    sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                except OSError:
                    sig = None
                if sig != self.sig:
                    self.sig = sig
                    mode = dict(DEFAULTS)
                    if sig is not None:
                        with open(self.path) as f:
                            for line in f:
                                line = line.split("#", 1)[0].strip()
                                if "=" in line:
                                    k, v = line.split("=", 1)
                                    mode[k.strip()] = v.strip()
                    self.mode = mode
            return dict(self.mode)


def bulk(b):
    if b is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(b), b)


def parse_command(buf, pos):
    """One RESP command (an array of bulk strings, or an inline line) at
    buf[pos:]: (args, next_pos), or (None, pos) if incomplete."""
    if pos >= len(buf):
        return None, pos
    if buf[pos:pos + 1] != b"*":
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return None, pos
        return [bytes(a) for a in buf[pos:nl].split()], nl + 2
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return None, pos
    n = int(buf[pos + 1:nl])
    p = nl + 2
    args = []
    for _ in range(n):
        nl = buf.find(b"\r\n", p)
        if nl < 0 or buf[p:p + 1] != b"$":
            if nl >= 0:
                raise ValueError("expected a bulk string")
            return None, pos
        ln = int(buf[p + 1:nl])
        start = nl + 2
        if len(buf) < start + ln + 2:
            return None, pos
        args.append(bytes(buf[start:start + ln]))
        p = start + ln + 2
    return args, p


def count(name):
    with LOCK:
        STATS[name] = STATS.get(name, 0) + 1


def fake_command(args):
    sub = args[1].upper() if len(args) > 1 else b""
    with LOCK:
        if sub == b"STATS":
            lines = ["%s=%s" % kv for kv in sorted(STATS.items())]
            lines.append("keys=%d" % len(DATA))
            return bulk("\n".join(lines).encode())
        if sub == b"HAS" and len(args) == 3:
            return b":%d\r\n" % (1 if args[2] in DATA else 0)
        if sub == b"LEN" and len(args) == 3:
            v = DATA.get(args[2])
            return b":%d\r\n" % (-1 if v is None else len(v))
        if sub == b"FLUSH":
            DATA.clear()
            return b"+OK\r\n"
    if sub == b"INVALIDATE" and len(args) == 3:
        return b":%d\r\n" % send_invalidation(args[2])
    if sub == b"FLUSHALL":
        n = 0
        with TRACK_LOCK:
            TRACKED.clear()
            subs = [c for c in CONNS.values() if c.subscribed]
        for c in subs:
            try:
                c.sendall(message(b"$-1\r\n"))
                n += 1
            except OSError:
                pass
        return b":%d\r\n" % n
    return b"-ERR bad FAKE command\r\n"


# What a malformed GET reply looks like (the connection stays open).
MALFORMED = {
    "badlen": b"$abc\r\n",
    "negarray": b"*-5\r\n",
    "huge": b"$536870913\r\n",
    "hugearray": b"*3000000000\r\n",
    "badint": b":12x4\r\n",
    "garbage": b"\x00\x01\x02garbage\xff\r\n",
    "nocrlf": b"$3\r\nabcXY",
    "longline": b"$" + b"1" * 100,
    "deep": b"*1\r\n" * 9 + b":1\r\n",
    "badelem": b"*2\r\n:1\r\n$abc\r\n",
}

WRONG = {
    "integer": b":42\r\n",
    "array": b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n",
    "nested": b"*3\r\n:1\r\n$-1\r\n*2\r\n+x\r\n*0\r\n",
    "empty": b"*0\r\n",
    "nilarray": b"*-1\r\n",
    "nilbulk": b"$-1\r\n",
    "status": b"+OK\r\n",
    "wrongtype": b"-WRONGTYPE Operation against a key holding the wrong "
                 b"kind of value\r\n",
    "error": b"-ERR something went wrong\r\n",
}


def execute(args, mode):
    """The reply to one command: (bytes, action), action None, 'close'
    (close after the bytes) or 'hold' (stop answering this connection)."""
    cmd = args[0].upper() if args else b""
    count(cmd.decode("latin-1").lower() or "empty")
    if cmd == b"GET" and len(args) == 2:
        with LOCK:
            v = DATA.get(args[1])
        late = mode.get("late_key", "")
        if late and args[1] == late.encode("latin-1"):
            return bulk(v), "late"
        m = mode.get("get", "normal")
        if m == "silent":
            return b"", "silent"

        if m in WRONG:
            return WRONG[m], None
        if m in MALFORMED:
            return MALFORMED[m], "hold"
        if m == "unsolicited":
            return bulk(v), "unsolicited"
        if m == "close":
            return b"", "close"
        if m == "closehead":
            return b"$123", "close"
        if m == "closemid":
            if v is None or len(v) < 2:
                v = b"x" * 64
            r = bulk(v)
            return r[:len(r) // 2], "close"
        return bulk(v), None
    if cmd == b"SET" and len(args) >= 3:
        opts = [a.upper() for a in args[3:]]
        with LOCK:
            exists = args[1] in DATA
            if (b"NX" in opts and exists) or (b"XX" in opts and not exists):
                return b"$-1\r\n", None
            DATA[args[1]] = args[2]
        return b"+OK\r\n", None
    if cmd in (b"DEL", b"UNLINK", b"EXISTS") and len(args) >= 2:
        n = 0
        with LOCK:
            for k in args[1:]:
                if k in DATA:
                    n += 1
                    if cmd != b"EXISTS":
                        del DATA[k]
        return b":%d\r\n" % n, None
    if cmd in (b"EVAL", b"EVALSHA") and len(args) >= 3:
        reply = fly_script(cmd, args)
        if reply is not None:
            return reply, None
    if cmd == b"EVAL" and len(args) >= 3:
        nkeys = int(args[2])
        keys = args[3:3 + nkeys]
        if b"DEL" in args[1] and keys:
            with LOCK:
                n = 1 if DATA.pop(keys[0], None) is not None else 0
            return b":%d\r\n" % n, None
        return b"$-1\r\n", None
    if cmd in (b"AUTH", b"SELECT"):
        return b"+OK\r\n", None
    if cmd == b"PING":
        return (bulk(args[1]) if len(args) > 1 else b"+PONG\r\n"), None
    if cmd == b"QUIT":
        return b"+OK\r\n", "close"
    return b"-ERR unknown command '%s'\r\n" % cmd, None


SCRIPTS = {}      # sha1 hex -> script text, of the scripts EVALed here
try:              # the test suite's slowness factor (sanitizer pass)
    TIME_SCALE = max(1.0, float(os.environ.get("FLY_TEST_TIME_SCALE", "1")))
except ValueError:
    TIME_SCALE = 1.0


def fly_script(cmd, args):
    """The module's fill and invalidation scripts, emulated (see the module
    docstring); None for any other script."""
    script = args[1]
    if cmd == b"EVALSHA":
        script = SCRIPTS.get(args[1].decode("latin-1").lower())
        if script is None:
            return b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    else:
        SCRIPTS[hashlib.sha1(script).hexdigest()] = script
    nkeys = int(args[2])
    keys, argv = args[3:3 + nkeys], args[3 + nkeys:]
    if b"FLYT1" in script and len(keys) >= 4 and len(argv) >= 4:
        # the entry was SET under the staging key keys[3] just before
        with LOCK:
            refused = (1 if DATA.get(keys[0], b"") != argv[0]
                       else 2 if keys[1] in DATA else 0)
            if refused:
                DATA.pop(keys[3], None)
                return b":%d\r\n" % refused
            if keys[3] not in DATA:
                return b":3\r\n"
            DATA[keys[2]] = DATA.pop(keys[3])
            if len(keys) > 4 and len(argv) > 4:
                DATA[keys[4]] = argv[4]
        return b":0\r\n"
    if b"INCR" in script and len(keys) >= 1 and len(argv) >= 4:
        ntags = int(argv[0])
        epoch = 0
        with LOCK:
            if ntags:
                epoch = int(DATA.get(keys[0], b"0")) + 1
                DATA[keys[0]] = b"%d" % epoch
                for k in keys[1:1 + ntags]:
                    DATA[k] = b"%d:0" % epoch if argv[1] == b"H" else b"0:%d" % epoch
            for k in keys[1 + ntags:]:
                DATA[k] = argv[2]
        return b":%d\r\n" % epoch
    return None


def send_split(sock, data, mode, tail=b""):
    """Writes data in chunks of `split` bytes with small sleeps between;
    `tail` goes out in one write with the last chunk (so that the client
    reads it together with the end of the reply before it)."""
    n = int(mode.get("split", "0"))
    if n <= 0 or n >= len(data):
        sock.sendall(data + tail)
        return
    delay = float(mode.get("delay", "0.001"))
    chunks = (len(data) + n - 1) // n
    sleeps = max(1, int(mode.get("max_sleeps", "100")))
    every = max(1, (chunks + sleeps - 1) // sleeps)
    start = time.monotonic()
    try:
        for i in range(chunks):
            sock.sendall(data[i * n:(i + 1) * n] + (tail if i + 1 == chunks else b""))
            if delay > 0 and i + 1 < chunks and (i + 1) % every == 0:
                time.sleep(delay)
    finally:
        # how long the fake itself took to dribble replies out: on a busy
        # machine 200 KiB in 1-byte writes takes seconds of this process
        ms = int((time.monotonic() - start) * 1000)
        with LOCK:
            STATS["split_send_ms"] = STATS.get("split_send_ms", 0) + ms


# ---- client tracking (the near cache) --------------------------------------

class Conn:
    """A client connection: its socket (every write under a lock, since
    invalidations are sent from other connections' threads) and its
    tracking state."""
    IDS = itertools.count(1)

    def __init__(self, sock):
        self.sock = sock
        self.id = next(Conn.IDS)
        self.wlock = threading.Lock()
        self.redirect = None        # CLIENT TRACKING on REDIRECT <id>
        self.subscribed = False

    def sendall(self, data):
        with self.wlock:
            self.sock.sendall(data)

    def __getattr__(self, name):     # recv, setsockopt, fileno, close
        return getattr(self.sock, name)


CONNS = {}        # id -> Conn
TRACKED = {}      # key -> ids of the connections to tell when it changes
TRACK_LOCK = threading.Lock()
CHANNEL = b"__redis__:invalidate"


def message(payload):
    return (b"*3\r\n$7\r\nmessage\r\n" + bulk(CHANNEL) + payload)


def send_invalidation(key, targets=None):
    """Tells the connections tracking `key` (or `targets`) that it changed;
    returns how many were told."""
    with TRACK_LOCK:
        ids = TRACKED.pop(key, set()) if targets is None else set(targets)
        conns = [CONNS.get(i) for i in ids]
    n = 0
    for c in conns:
        if c is not None and c.subscribed:
            try:
                c.sendall(message(b"*1\r\n" + bulk(key)))
                n += 1
                count("invalidations_sent")
            except OSError:
                pass
    return n


def written_keys(args):
    cmd = args[0].upper() if args else b""
    if cmd == b"SET" and len(args) >= 3:
        return [args[1]]
    if cmd in (b"DEL", b"UNLINK"):
        return args[1:]
    if cmd in (b"EVAL", b"EVALSHA") and len(args) >= 3:
        try:
            return args[3:3 + int(args[2])]
        except ValueError:
            return []
    return []


def tracking_command(conn, args, mode):
    """The tracking commands (a reply), or None for execute(); a GET of
    the race key plays the race first."""
    cmd = args[0].upper() if args else b""
    sub = args[1].upper() if len(args) > 1 else b""
    if cmd == b"CLIENT" and sub == b"ID":
        return b":%d\r\n" % conn.id
    if cmd == b"CLIENT" and sub == b"SETNAME":
        return b"+OK\r\n"
    if cmd == b"CLIENT" and sub == b"TRACKING" and len(args) >= 3:
        if args[2].lower() == b"on":
            opts = [a.upper() for a in args[3:]]
            i = opts.index(b"REDIRECT") if b"REDIRECT" in opts else -1
            conn.redirect = int(args[3 + i + 1]) if 0 <= i < len(opts) - 1 else conn.id
        else:
            conn.redirect = None
        count("client_tracking")
        return b"+OK\r\n"
    if cmd == b"SUBSCRIBE" and len(args) == 2:
        conn.subscribed = True
        return b"*3\r\n$9\r\nsubscribe\r\n" + bulk(args[1]) + b":1\r\n"
    if cmd == b"PING" and conn.subscribed:
        return b"*2\r\n$4\r\npong\r\n" + bulk(args[1] if len(args) > 1 else b"")
    if (cmd == b"GET" and len(args) == 2 and conn.redirect is not None
            and mode.get("race_key") and args[1] == mode["race_key"].encode("latin-1")):
        send_invalidation(args[1], [conn.redirect])
        count("race_played")
        time.sleep(float(mode.get("race_ms", "50")) / 1000.0)
        conn.race_get = True
    return None


def tracking_after(conn, args):
    """After execute(): reads by a tracking connection are remembered,
    writes tell whoever tracks the keys."""
    cmd = args[0].upper() if args else b""
    if getattr(conn, "race_get", False):
        conn.race_get = False
        return
    if cmd in (b"GET", b"MGET") and conn.redirect is not None:
        with TRACK_LOCK:
            for k in args[1:]:
                TRACKED.setdefault(k, set()).add(conn.redirect)
        return
    for k in written_keys(args):
        send_invalidation(k)


def serve(conn, control):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    pos = 0
    holding = None          # "after_bad" or "after_silent": not answering
    late = b""              # replies held back (late_key)
    late_until = 0
    client = False          # sent a command other than FAKE
    mode = control.get()
    try:
        while True:
            if late:
                left = late_until - time.monotonic()
                if left <= 0 or not select.select([conn], [], [], left)[0]:
                    send_split(conn, late, mode)
                    late = b""
                    count("late_sent")
                    continue
            chunk = conn.recv(262144)
            if not chunk:
                if client:
                    count("closed")
                return
            buf += chunk
            if late:
                # the client sent more: the late replies go first
                send_split(conn, late, mode)
                late = b""
                count("late_sent")
            if holding:
                # after a malformed reply (or silence): count what the client
                # still sends (nothing, if it dropped the connection), wait
                # for the close
                while True:
                    args, nxt = parse_command(buf, pos)
                    if args is None:
                        break
                    pos = nxt
                    count(holding)
                continue
            mode = control.get()
            coalesce = float(mode.get("coalesce", "0")) / 1000.0
            if mode.get("get") == "unsolicited" and coalesce <= 0:
                # the extra reply must come after the replies to every
                # command the client pipelined together: gather them
                coalesce = 0.05 * TIME_SCALE
            if coalesce > 0:
                deadline = time.monotonic() + coalesce
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([conn], [], [], left)[0]:
                        break
                    more = conn.recv(262144)
                    if not more:
                        break
                    buf += more
            out = []
            action = None
            unsolicited = False
            late_from = None
            while action is None:
                args, nxt = parse_command(buf, pos)
                if args is None:
                    break
                pos = nxt
                if args and args[0].upper() == b"FAKE":
                    conn.sendall(fake_command(args))
                    continue
                if not client:
                    client = True
                    count("clients")
                mode = control.get()
                reply, action = tracking_command(conn, args, mode), None
                if reply is None:
                    reply, action = execute(args, mode)
                    tracking_after(conn, args)
                if action == "late":
                    if late_from is None:
                        late_from = len(out)
                    action = None
                if action == "silent":
                    break
                out.append(reply)
                if action == "unsolicited":
                    unsolicited = True
                    action = None
            extra = b""
            if unsolicited:
                # after the replies to every command received (a client
                # pipelines several): one that nobody asked for, in the
                # same write as the end of the last reply, so the client
                # sees it before it can send another command
                extra = b":1\r\n"
                action = action or "hold"
            if pos == len(buf):
                del buf[:]
                pos = 0
            if late_from is not None:
                late = b"".join(out[late_from:])
                late_until = time.monotonic() + float(mode.get("late_ms", "60000")) / 1000.0
                out = out[:late_from]
            if action == "silent":
                holding = "after_silent"
                late = b""
            if out:
                with LOCK:
                    STATS["replies"] += len(out)
                    STATS["max_batch"] = max(STATS["max_batch"], len(out))
                send_split(conn, b"".join(out), mode, extra)
            if action == "close":
                return
            if action == "hold":
                holding = "after_bad"
    except (OSError, ValueError):
        return
    finally:
        CONNS.pop(getattr(conn, "id", None), None)
        try:
            conn.close()
        except OSError:
            pass


def main(argv):
    port = 0
    control_path = os.environ.get("FAKE_REDIS_CONTROL")
    i = 1
    while i < len(argv):
        if argv[i] == "--port":
            port = int(argv[i + 1])
            i += 2
        elif argv[i] == "--control":
            control_path = argv[i + 1]
            i += 2
        else:
            sys.stderr.write(__doc__)
            return 2
    control = Control(control_path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(512)
    sys.stdout.write("%d\n" % srv.getsockname()[1])
    sys.stdout.flush()

    watch = [srv]
    if not sys.stdin.isatty():
        watch.append(sys.stdin)
    while True:
        ready, _, _ = select.select(watch, [], [], 0.5)
        if os.getppid() != parent:
            return 0
        for f in ready:
            if f is srv:
                conn, _ = srv.accept()
                count("connections")
                c = Conn(conn)
                CONNS[c.id] = c
                threading.Thread(target=serve, args=(c, control),
                                 daemon=True).start()
            elif not os.read(sys.stdin.fileno(), 4096):
                return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(0)
