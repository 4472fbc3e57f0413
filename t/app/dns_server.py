#!/usr/bin/python3
"""A tiny authoritative DNS server for tests (UDP, A and AAAA only).

    dns_server.py --zone FILE [--port N] [--bind 127.0.0.1] [--log FILE]

Binds UDP on the address (default 127.0.0.1) and port (default 0: any free
port), prints the port on stdout (one line, flushed), then answers queries
from FILE, which it reads again for every query (and on SIGHUP), so a test
changes an answer by rewriting the file (write a temporary file and rename
it over FILE, so a query never sees half a file).

FILE is JSON:

    {
      "ttl": 1,
      "names": {
        "redis.test.internal":  {"A": ["127.0.0.1"], "AAAA": ["::1"]},
        "v6.test.internal":     {"AAAA": ["::1"]},
        "gone.test.internal":   "NXDOMAIN",
        "hung.test.internal":   "DROP"
      },
      "default": "NXDOMAIN"
    }

or plain text, one entry a line (`#` starts a comment):

    ttl 1
    redis.test.internal A 127.0.0.1
    v6.test.internal AAAA ::1
    gone.test.internal NXDOMAIN
    hung.test.internal DROP
    * REFUSED

Names match case-insensitively, with or without the final dot.  For a known
name, a type it has no records of gets an empty NOERROR answer (NODATA), as
`<region>.<app>.internal` answers A on Fly.  A name's value may instead be
an rcode (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED) or DROP
(the query is never answered: a DNS server that hangs).  "default" (`*` in
text) applies to names not listed (NXDOMAIN when absent).  A file that cannot
be read or parsed makes every query SERVFAIL (and is logged).

Each query is logged as one line, "query NAME TYPE -> ANSWER", on stderr or
to --log FILE (appended, flushed), so a test can count lookups.

Exits on SIGTERM/SIGINT, or when its parent process goes away (so a test
that dies leaves nothing behind).  Python standard library only; the DNS
wire format (RFC 1035, RFC 3596 for AAAA) is written here.
"""

import argparse
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time

TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 2: "NS", 6: "SOA", 12: "PTR",
         15: "MX", 16: "TXT", 33: "SRV", 255: "ANY"}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3,
          "NOTIMP": 4, "REFUSED": 5}
CLASS_IN = 1
MAX_UDP = 512


class Zone:
    """The parsed zone file: names -> {"A": [...], "AAAA": [...]} or a verdict."""

    def __init__(self, path):
        self.path = path
        self.ttl = 1
        self.names = {}
        self.default = "NXDOMAIN"
        self.error = None

    def load(self):
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                text = f.read()
            if text.lstrip().startswith("{"):
                self._load_json(json.loads(text))
            else:
                self._load_text(text)
            self.error = None
        except (OSError, ValueError, TypeError, AttributeError) as e:
            self.error = "%s: %s" % (self.path, e)
        return self

    @staticmethod
    def _key(name):
        return name.rstrip(".").lower()

    @staticmethod
    def _verdict(v):
        v = str(v).upper()
        if v != "DROP" and v not in RCODES:
            raise ValueError("unknown verdict %r" % v)
        return v

    @staticmethod
    def _addrs(kind, values):
        out = []
        for v in values:
            ip = ipaddress.ip_address(v)
            if (kind == "A") != (ip.version == 4):
                raise ValueError("%s record with address %s" % (kind, v))
            out.append(ip.packed)
        return out

    def _load_json(self, doc):
        self.ttl = int(doc.get("ttl", 1))
        self.default = self._verdict(doc.get("default", "NXDOMAIN"))
        names = {}
        for name, spec in (doc.get("names") or {}).items():
            if isinstance(spec, str):
                names[self._key(name)] = self._verdict(spec)
                continue
            rec = {}
            for kind in ("A", "AAAA"):
                vals = spec.get(kind, [])
                if isinstance(vals, str):
                    vals = [vals]
                rec[kind] = self._addrs(kind, vals)
            names[self._key(name)] = rec
        self.names = names

    def _load_text(self, text):
        names = {}
        self.ttl = 1
        self.default = "NXDOMAIN"
        for n, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0].lower() == "ttl" and len(words) == 2:
                self.ttl = int(words[1])
            elif len(words) == 2:
                verdict = self._verdict(words[1])
                if words[0] == "*":
                    self.default = verdict
                else:
                    names[self._key(words[0])] = verdict
            elif len(words) == 3 and words[1].upper() in ("A", "AAAA"):
                rec = names.setdefault(self._key(words[0]), {"A": [], "AAAA": []})
                if isinstance(rec, str):
                    raise ValueError("line %d: %s already has a verdict" % (n, words[0]))
                kind = words[1].upper()
                rec[kind] += self._addrs(kind, [words[2]])
            else:
                raise ValueError("line %d: cannot parse %r" % (n, line))
        self.names = names

    def lookup(self, name, qtype):
        """Returns (verdict, [rdata, ...]); verdict is an rcode name or DROP."""
        if self.error:
            return "SERVFAIL", []
        spec = self.names.get(self._key(name))
        if spec is None:
            return self.default, []
        if isinstance(spec, str):
            return spec, []
        kind = TYPES.get(qtype)
        if kind in ("A", "AAAA"):
            return "NOERROR", list(spec[kind])
        if kind == "ANY":
            return "NOERROR", list(spec["A"]) + list(spec["AAAA"])
        return "NOERROR", []


def parse_query(data):
    """Returns (id, flags, qname, qtype, qclass, question bytes) or raises ValueError."""
    if len(data) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        raise ValueError("a response, not a query")
    if qdcount != 1:
        raise ValueError("%d questions" % qdcount)
    pos = 12
    labels = []
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        if pos + n > len(data):
            raise ValueError("truncated label")
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    pos += 4
    return qid, flags, ".".join(labels), qtype, qclass, data[12:pos]


def build_response(qid, qflags, question, rcode, qtype, ttl, rdatas):
    """A response carrying the question and one answer record per rdata."""
    opcode = qflags & 0x7800
    rd = qflags & 0x0100
    # QR, the query's opcode, AA, the query's RD, RA, rcode
    flags = 0x8000 | opcode | 0x0400 | rd | 0x0080 | (rcode & 0xF)
    answers = b""
    for rdata in rdatas:
        rtype = 1 if len(rdata) == 4 else 28
        # the owner name is a pointer to the question's name at offset 12
        answers += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata
    count = len(rdatas)
    msg = struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0) + question + answers
    if len(msg) > MAX_UDP:      # truncated: the client may retry over TCP (not served)
        flags |= 0x0200
        msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + question
    return msg


def describe(verdict, rdatas):
    if verdict != "NOERROR":
        return verdict
    if not rdatas:
        return "NODATA"
    return " ".join(str(ipaddress.ip_address(r)) for r in rdatas)


def main(argv):
    ap = argparse.ArgumentParser(description="tiny DNS server for tests")
    ap.add_argument("--zone", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--log", default=None)
    args = ap.parse_args(argv[1:])

    log = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr

    def say(msg):
        log.write("%.3f %s\n" % (time.time(), msg))
        log.flush()

    zone = Zone(args.zone).load()
    if zone.error:
        say("zone: %s" % zone.error)

    reload_wanted = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: reload_wanted.append(1))
    parent = os.getppid()

    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    sys.stdout.write("%d\n" % sock.getsockname()[1])
    sys.stdout.flush()
    say("listening on %s port %d, zone %s" % (args.bind, sock.getsockname()[1], args.zone))

    while True:
        try:
            ready, _, _ = select.select([sock], [], [], 0.5)
        except InterruptedError:
            ready = []
        if reload_wanted:
            del reload_wanted[:]
            zone = Zone(args.zone).load()
            say("SIGHUP: zone reloaded%s" % (": " + zone.error if zone.error else ""))
        if os.getppid() != parent:
            say("parent gone, exiting")
            return 0
        if not ready:
            continue
        try:
            data, peer = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as e:            # e.g. ICMP errors reported on the socket
            say("recvfrom: %s" % e)
            continue
        try:
            qid, qflags, qname, qtype, qclass, question = parse_query(data)
        except ValueError as e:
            say("bad query from %s: %s" % (peer[0], e))
            if len(data) >= 4:
                qid, qflags = struct.unpack("!HH", data[:4])
                if not qflags & 0x8000:
                    hdr = struct.pack("!HHHHHH", qid, 0x8000 | (qflags & 0x7900) | 1, 0, 0, 0, 0)
                    sock.sendto(hdr, peer)
            continue

        zone = Zone(args.zone).load()    # every query sees the file as it is now
        if zone.error:
            say("zone: %s" % zone.error)
        tname = TYPES.get(qtype, str(qtype))
        if qflags & 0x7800:
            verdict, rdatas = "NOTIMP", []
        elif qclass != CLASS_IN:
            verdict, rdatas = "REFUSED", []
        else:
            verdict, rdatas = zone.lookup(qname, qtype)
        say("query %s %s -> %s" % (qname, tname, describe(verdict, rdatas)))
        if verdict == "DROP":
            continue
        msg = build_response(qid, qflags, question, RCODES[verdict], qtype, zone.ttl, rdatas)
        try:
            sock.sendto(msg, peer)
        except OSError as e:
            say("sendto %s: %s" % (peer[0], e))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(0)
