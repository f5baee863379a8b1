#!/usr/bin/env python3
"""Management write rate as the store grows (issue 18: Create Api must not
slow down with the number of APIs stored).

Starts the real release binary (temp SQLite store, log `warn`) and drives its
signed management API over real sockets, with the same SCP signature as
load.py and the tests. For each store size (--sizes, default
10,1000,5000,10000 APIs) it first grows the store to that size with Create
Api calls (--clients connections in parallel), then runs --rounds rounds;
each round:

  1. Create Api   x --ops  (new names; the store goes from S to S + ops)
  2. Update Api   x --ops  (PUT /apis/{id}/description on those new APIs)
  3. Create Resource x --ops (one child resource under each new API's root)
  4. Delete Api   x --ops  (the new APIs again: the store is back at S)

and prints, per operation, the median over the rounds of the rate
(operations per second of wall time, all clients together) and of apigw's
CPU per operation (the CPU time of all its threads over the phase, from
/proc/<pid>/task/*/schedstat), then the ratio of each at the largest size
to the smallest (issue 18's target for Create Api: rate >= 0.8 x between
10 and 10,000 APIs).

With --apigw given twice (say the build before a change and after), both
run side by side, each with its own store, and their rounds alternate, so
that whatever else loads the machine weighs on both alike.

Every operation must answer its 2xx (else the script exits 2). Python 3
standard library only; the client threads share one GIL, so the absolute
rates include the client's cost: compare sizes within one run, not runs on
different machines.

Usage:
  python3 benches/admin_scale.py                      # binary in $CARGO_TARGET_DIR (or target/)/release
  python3 benches/admin_scale.py --sizes 10,10000 --ops 500 --rounds 5
  python3 benches/admin_scale.py --apigw OLD --apigw NEW   # two builds, rounds interleaved
  python3 benches/admin_scale.py --json out.json      # also write every round's figures

It does not build the binary: run `cargo build --release` first.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACCESS_KEY = "scale-access-key"
SECRET_KEY = "scale-secret-key"
ACCOUNT_ID = "scaleaccount00000000000000000001"
CLIENT_TYPE = "Openapi"

OPS = ["create_api", "update_api", "create_resource", "delete_api"]
LABELS = {
    "create_api": "Create Api",
    "update_api": "Update Api (description)",
    "create_resource": "Create Resource",
    "delete_api": "Delete Api",
}


def die(msg, code=2):
    print(f"admin_scale: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


class Clock:
    """Signing timestamps never used twice by this process: a signature
    covers method, URL and timestamp, and apigw refuses a repeat as a
    replay, so two creates in the same millisecond need two timestamps."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last = 0

    def next(self):
        with self.lock:
            self.last = max(self.last + 1, int(time.time() * 1000))
            return str(self.last)


CLOCK = Clock()


class Client:
    """One keep-alive connection to the management API."""

    def __init__(self, host, port):
        self.base = f"http://{host}:{port}"
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def call(self, method, path, body=None):
        ts = CLOCK.next()
        url = self.base + path
        msg = f"{method}{url}{ts}{ACCESS_KEY}{ACCOUNT_ID}{CLIENT_TYPE}".encode()
        sig = base64.b64encode(hmac.new(SECRET_KEY.encode(), msg, hashlib.sha256).digest()).decode()
        headers = {
            "Scp-AccessKey": ACCESS_KEY, "Scp-Timestamp": ts, "Scp-ClientType": CLIENT_TYPE,
            "Scp-AccountId": ACCOUNT_ID, "Scp-Signature": sig,
            "Scp-Api-Version": "apigateway 1.2",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read().decode()
                return r.status, text
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: once more
                # on a new one (same signature: the first was never read).
                self.conn.close()
                if attempt:
                    raise

    def expect(self, method, path, body, codes):
        status, text = self.call(method, path, body)
        if status not in codes:
            die(f"{method} {path} -> HTTP {status}: {text[:300]}")
        return json.loads(text) if text.strip() else {}


def proc_cpu_s(pid):
    """CPU time of every thread of the process, in seconds: the first field
    of /proc/<pid>/task/<tid>/schedstat (ns on the CPU), finer than the
    clock ticks of /proc/<pid>/stat. A thread that ended meanwhile is
    missed (apigw's threads live as long as it does, but for blocking-pool
    threads, which tokio keeps for 10 s idle)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return total / 1e9


def parallel(clients, items, op):
    """Run op(client, item) for every item, the items split round-robin
    over the clients (one thread each); returns the wall time."""
    shares = [items[i::len(clients)] for i in range(len(clients))]
    errors = []

    def worker(c, share):
        try:
            for it in share:
                op(c, it)
        except SystemExit as e:
            errors.append(e)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c, s)) for c, s in zip(clients, shares)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        die(f"a client failed: {errors[0]!r}")
    return elapsed


class Names:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def take(self, count, prefix):
        with self.lock:
            start = self.n
            self.n += count
        return [f"{prefix}-{i:07d}" for i in range(start, start + count)]


def create_api(c, name, out=None):
    r = c.expect("POST", "/v1/apis", {"name": name, "description": "admin_scale"}, (202,))
    if out is not None:
        out.append(r["id"])
    return r["id"]


def start_apigw(binary, workdir, workers):
    toml = os.path.join(workdir, "apigw.toml")
    with open(toml, "w") as f:
        f.write(f'''data_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
invoke_domain = "apigw.localhost"
store_url = "sqlite://{workdir}/apigw.db"
log = "warn"
worker_threads = {workers}
[[credentials]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
account_id = "{ACCOUNT_ID}"
''')
    log = open(os.path.join(workdir, "apigw.log"), "wb")
    p = subprocess.Popen([binary, "serve", "--config", toml], stdout=subprocess.PIPE, stderr=log)
    deadline = time.time() + 30
    line = ""
    while time.time() < deadline:
        raw = p.stdout.readline()
        if not raw:
            die(f"apigw exited at start (log: {workdir}/apigw.log)")
        line = raw.decode(errors="replace")
        if "apigw listening" in line:
            break
    m = re.search(r"admin=(\S+)", line)
    if not m:
        die(f"no 'apigw listening' line: {line!r}")
    # Keep draining stdout so apigw never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    host, port = m.group(1).rsplit(":", 1)
    return p, host, int(port)


class Target:
    """One apigw under test: its process, store and clients."""

    def __init__(self, label, binary, workdir, args):
        self.label = label
        self.binary = binary
        self.workdir = workdir
        self.p, self.host, self.port = start_apigw(binary, workdir, args.workers)
        self.clients = [Client(self.host, self.port) for _ in range(args.clients)]
        self.loaded = 0
        self.results = {}

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def one_round(t, names, ops):
    """Create, update, add a resource to and delete `ops` new APIs; the
    figures of each phase."""
    new_ids = []
    lock = threading.Lock()

    def create(c, n):
        i = create_api(c, n)
        with lock:
            new_ids.append(i)

    out = {}
    for op in OPS:
        if op == "create_api":
            items, fn = names.take(ops, "m"), create
        elif op == "update_api":
            items = list(new_ids)

            def fn(c, i):
                c.expect("PUT", f"/v1/apis/{i}/description", {"description": "updated"}, (200,))
        elif op == "create_resource":
            # The root resource of each new API (reads, not timed).
            items = []
            for i in new_ids:
                r = t.clients[0].expect("GET", f"/v1/apis/{i}/resources", None, (200,))
                root = [x for x in r["resources"] if x.get("path") == "/"]
                if not root:
                    die(f"api {i} has no root resource: {r}")
                items.append((i, root[0]["id"]))

            def fn(c, ir):
                c.expect("POST", f"/v1/apis/{ir[0]}/resources/{ir[1]}", {"path_part": "items"}, (200,))
        else:
            items = list(new_ids)

            def fn(c, i):
                c.expect("DELETE", f"/v1/apis/{i}", None, (204,))
        cpu0 = proc_cpu_s(t.p.pid)
        wall = parallel(t.clients, items, fn)
        cpu = proc_cpu_s(t.p.pid) - cpu0
        out[op] = {"rate": len(items) / wall, "cpu_us": cpu * 1e6 / len(items),
                   "ops": len(items), "wall_s": wall}
    return out


def print_table(t, sizes):
    print(f"\n{t.label} ({t.binary}): median over rounds, operations/s (apigw CPU µs per operation)\n")
    print("| operation | " + " | ".join(f"{s} APIs" for s in sizes)
          + f" | rate@{sizes[-1]} / rate@{sizes[0]} | CPU@{sizes[-1]} / CPU@{sizes[0]} |")
    print("|" + "---|" * (len(sizes) + 3))
    for op in OPS:
        r = [t.results[s][op] for s in sizes]
        cells = [f"{x['rate']:.0f} ({x['cpu_us']:.0f})" for x in r]
        print(f"| {LABELS[op]} | " + " | ".join(cells)
              + f" | {r[-1]['rate'] / r[0]['rate']:.2f} | {r[-1]['cpu_us'] / r[0]['cpu_us']:.2f} |")
    ratio = t.results[sizes[-1]]["create_api"]["rate"] / t.results[sizes[0]]["create_api"]["rate"]
    print(f"\nCreate Api rate@{sizes[-1]} / rate@{sizes[0]} = {ratio:.2f} (issue 18 target >= 0.80)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    ap.add_argument("--apigw", action="append",
                    help="binary to measure; give it twice to compare two builds, whose rounds "
                         "then alternate (default: $CARGO_TARGET_DIR or target/, release/apigw)")
    ap.add_argument("--sizes", default="10,1000,5000,10000",
                    help="store sizes (APIs) to measure at, ascending")
    ap.add_argument("--ops", type=int, default=500, help="operations of each kind per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8, help="parallel keep-alive connections")
    ap.add_argument("--workers", type=int, default=2, help="apigw worker_threads")
    ap.add_argument("--workdir", help="where the stores go (default: a temp dir, removed)")
    ap.add_argument("--json", help="write every round's figures here")
    args = ap.parse_args()

    binaries = args.apigw or [os.path.join(target, "release", "apigw")]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or sizes != sorted(sizes):
        die("--sizes must be ascending")
    for b in binaries:
        if not os.access(b, os.X_OK):
            die(f"no apigw binary at {b} (cargo build --release first, or --apigw PATH)")

    keep = args.workdir is not None
    workdir = args.workdir or tempfile.mkdtemp(prefix="apigw-admin-scale-")
    os.makedirs(workdir, exist_ok=True)
    names = Names()
    targets = []
    try:
        for n, b in enumerate(binaries):
            d = os.path.join(workdir, f"apigw{n}")
            os.makedirs(d, exist_ok=True)
            t = Target(f"apigw{n}", b, d, args)
            targets.append(t)
            print(f"{t.label}: {b} pid {t.p.pid}, admin {t.host}:{t.port}, store {d}/apigw.db", flush=True)
        print(f"{args.clients} clients, {args.ops} operations of each kind per round, "
              f"{args.rounds} rounds per size" + (", rounds alternate between the binaries"
                                                   if len(targets) > 1 else ""), flush=True)
        for size in sizes:
            for t in targets:
                t0 = time.perf_counter()
                parallel(t.clients, names.take(size - t.loaded, "load"), create_api)
                t.loaded = size
                print(f"\n{t.label}: store at {size} APIs (grown in {time.perf_counter() - t0:.1f} s)",
                      flush=True)
            per = [{op: [] for op in OPS} for _ in targets]
            for rnd in range(args.rounds):
                for t, acc in zip(targets, per):
                    got = one_round(t, names, args.ops)
                    for op in OPS:
                        acc[op].append(got[op])
                    print(f"  {size} APIs, round {rnd + 1}, {t.label}: "
                          + ", ".join(f"{op} {got[op]['rate']:.0f}/s {got[op]['cpu_us']:.0f} µs" for op in OPS),
                          flush=True)
            for t, acc in zip(targets, per):
                t.results[size] = {
                    op: {"rate": statistics.median(x["rate"] for x in v),
                         "cpu_us": statistics.median(x["cpu_us"] for x in v),
                         "rounds": v}
                    for op, v in acc.items()
                }
    finally:
        for t in targets:
            t.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)

    for t in targets:
        print_table(t, sizes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes, "clients": args.clients, "ops": args.ops, "rounds": args.rounds,
                       "targets": [{"apigw": t.binary,
                                    "results": {str(k): v for k, v in t.results.items()}}
                                   for t in targets]}, f, indent=1)


if __name__ == "__main__":
    main()
