#!/usr/bin/env python3
"""Memory with many idle keep-alive client connections (issue 6).

Starts the backend, the peers and apigw exactly as load.py's "pin1"
arrangement does (one worker each), then for apigw's no-filter stage, its
full-pipeline stage and nginx-gateway in turn: opens N client connections,
sends one request on each, reads the whole answer, and leaves the
connection open and idle. It then reads the proxy's resident memory
(VmRSS, all its processes) before and with the idle connections, closes
them and goes on to the next target.

    python3 benches/idle_rss.py                  # 10,000 connections
    python3 benches/idle_rss.py --conns 2000 --apigw /path/to/apigw

Python 3 standard library only; needs the tools load.py installs.
"""

import argparse
import os
import resource
import selectors
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def hold_idle(url, headers, n, timeout=60):
    """Open n connections, one answered request on each; return the sockets."""
    hostport = url.split("//", 1)[1].split("/", 1)
    host, port = hostport[0].rsplit(":", 1)
    path = "/" + (hostport[1] if len(hostport) > 1 else "")
    hdrs = {"Host": f"{host}:{port}"}
    for h in headers:
        k, v = h.split(":", 1)
        hdrs[k.strip()] = v.strip()
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    req = req.encode()
    sel = selectors.DefaultSelector()
    socks, pending = [], {}
    deadline = time.time() + timeout
    batch = 200
    opened = 0
    while opened < n or pending:
        # Keep at most `batch` requests in flight.
        while opened < n and len(pending) < batch:
            s = socket.create_connection((host, int(port)))
            s.setblocking(False)
            s.send(req)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            opened += 1
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"{url}: connection closed before the answer")
            buf = pending[s] + chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise SystemExit(f"{url}: HTTP {status.decode()}")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if len(body) >= length:
                    sel.unregister(s)
                    del pending[s]
                    continue
            pending[s] = buf
        if time.time() > deadline:
            raise SystemExit(f"{url}: {len(pending)} answers missing after {timeout} s")
    sel.close()
    return socks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--apigw", default=None, help="apigw binary [$CARGO_TARGET_DIR/release/apigw]")
    ap.add_argument("--peers", default=os.path.normpath(os.path.join(load.REPO, "..", "shared", "peers")))
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds to wait before reading RSS [8: apigw parks a connection after "
                         "1-2 s idle and returns freed memory every 2 s]")
    ap.add_argument("--targets", default="apigw-plain,apigw-full,nginx-gateway",
                    help="comma-separated targets to measure [apigw-plain,apigw-full,nginx-gateway]")
    args = ap.parse_args()
    if args.apigw is None:
        target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(load.REPO, "target")
        args.apigw = os.path.join(target_dir, "release", "apigw")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    load.ensure_tools(True)
    # Only the plain HTTP/1 targets (no TLS listener, no second apigw).
    ns = argparse.Namespace(peers=args.peers, backend_workers=1, proxy_keepalive=None,
                            gateway_keepalive=1024, apigw=args.apigw, sections={"plain"},
                            telemetry=False)
    work = tempfile.mkdtemp(prefix="apigw-idle-")
    out = os.path.join(work, "out")
    os.makedirs(out)
    setup = load.Setup(ns, "pin1", work, out)
    rows = []
    try:
        setup.start()
        if not load.check_targets(setup):
            raise SystemExit(2)
        for target in args.targets.split(","):
            url, headers = setup.targets[target]
            pids = setup.proxy_pids(target)
            time.sleep(args.settle)
            before = rss_kib(pids)
            t0 = time.time()
            socks = hold_idle(url, headers, args.conns)
            opened = time.time() - t0
            time.sleep(args.settle)
            with_idle = rss_kib(pids)
            for s in socks:
                s.close()
            time.sleep(args.settle)
            after = rss_kib(pids)
            rows.append((target, before, with_idle, after, opened))
            print(f"{target}: {args.conns} idle connections opened in {opened:.1f} s; "
                  f"RSS {before / 1024:.1f} MiB before, {with_idle / 1024:.1f} MiB with them, "
                  f"{after / 1024:.1f} MiB after closing "
                  f"({(with_idle - before) * 1024 / args.conns:.0f} bytes per connection)", flush=True)
    finally:
        setup.stop()
    print()
    print(f"| target | RSS before | RSS with {args.conns:,} idle conns | per connection | after closing |")
    print("|---|---|---|---|---|")
    for target, before, with_idle, after, _ in rows:
        print(f"| {target} | {before / 1024:.1f} MiB | {with_idle / 1024:.1f} MiB | "
              f"{(with_idle - before) * 1024 / args.conns:,.0f} B | {after / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
