#!/usr/bin/env python3
"""A TCP listener that accepts connections and never answers.

    black_hole.py [PORT]      (default 0: any free port)

Binds 127.0.0.1, prints the port on stdout (one line, flushed), then accepts
every connection and holds it open without reading or writing a byte, like a
Redis that hangs.  Exits on SIGTERM/SIGINT, when stdin reaches EOF, or when
its parent goes away (so a test that dies leaves nothing behind).
"""

import os
import select
import signal
import socket
import sys


def main(argv):
    port = int(argv[1]) if len(argv) > 1 else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(512)
    sys.stdout.write("%d\n" % srv.getsockname()[1])
    sys.stdout.flush()

    held = []
    watch = [srv]
    stdin_open = not sys.stdin.isatty()
    if stdin_open:
        watch.append(sys.stdin)
    while True:
        ready, _, _ = select.select(watch, [], [], 0.5)
        if os.getppid() != parent:
            return 0
        for f in ready:
            if f is srv:
                conn, _ = srv.accept()
                held.append(conn)      # never read, never written
            elif not os.read(sys.stdin.fileno(), 4096):
                return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(0)
