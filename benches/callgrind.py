#!/usr/bin/env python3
"""Instructions per proxied request, apigw under callgrind (issue 6's check).

Starts the backend of ../shared/peers (nginx, 127.0.0.1:9001) and apigw's
release build under `valgrind --tool=callgrind` (one worker), configures
the same two stages as load.py (`plain`: no filter; `full`: IP ACL, JWT,
API key and quota, resource policy, CORS), then for each stage: warms up,
zeroes callgrind's counters (`callgrind_control -z`), drives it with
`wrk -t1 -c10` for --duration seconds, dumps the counters
(`callgrind_control -d`) and divides the instructions by the requests wrk
completed. Counts are repeatable to about 1 % whatever else the machine
does, so two builds can be compared on a busy machine.

  python3 benches/callgrind.py --apigw target/release/apigw
  python3 benches/callgrind.py --apigw A --apigw B    # two builds, side by side
  python3 benches/callgrind.py --apigw A --floor target/release/examples/hyper_floor
      # and the hyper floor (examples/hyper_floor.rs: hyper + tokio forwarding
      # untouched) under the same load: what hyper costs without apigw's work

Needs valgrind, nginx and wrk (installed from Debian's packages when
missing, as load.py does).
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the shared setup: peers, management client, APIs)


def ensure_valgrind():
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "valgrind"],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def totals(outfile):
    """The event totals of the newest callgrind dump for `outfile`, by
    event name (Ir; with the cache simulation also DLmr, DLmw, ...)."""
    dumps = sorted(glob.glob(outfile + "*"), key=os.path.getmtime)
    for path in reversed(dumps):
        events = None
        with open(path) as f:
            for line in f:
                if line.startswith("events:"):
                    events = line.split()[1:]
                m = re.match(r"(summary|totals):((?: \d+)+)", line)
                if m and events:
                    return dict(zip(events, map(int, m.group(2).split()))), path
    load.die(f"no callgrind totals in {dumps}")


def wrk(url, headers, seconds, conns=10):
    argv = [load.which("wrk"), "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    r = subprocess.run(argv + [url], capture_output=True, text=True)
    m = re.search(r"(\d+) requests in", r.stdout)
    if r.returncode != 0 or not m:
        load.die(f"wrk failed: {r.stderr or r.stdout}")
    if "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
        load.die(f"wrk saw errors:\n{r.stdout}")
    return int(m.group(1))


def start_backend(procs, peers, work):
    backend_dir = os.path.join(work, "backend")
    os.makedirs(os.path.join(backend_dir, "tmp"))
    conf = os.path.join(peers, "backend.conf")
    g = f"daemon off; worker_processes 1; pid {backend_dir}/nginx.pid;"
    nginx = procs.start("backend", [load.which("nginx"), "-p", backend_dir + "/", "-c", conf,
                                    "-e", "stderr", "-g", g], stderr=subprocess.DEVNULL)
    load.wait_port(load.BACKEND_PORT, nginx, "backend")


def sim_args(cache_sim):
    # The cache simulation's last level stands in for a per-core L2
    # (docs/performance.md: cold memory at many connections).
    return ["--cache-sim=yes", "--LL=1048576,16,64"] if cache_sim else []


def count(pid, out, url, headers, seconds, conns, keep, tag):
    """Instructions (and last-level misses) per request of the process
    `pid` under callgrind while wrk drives `url`."""
    wrk(url, headers, 3, conns)  # warm up: connections, pool, caches
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, stdout=subprocess.DEVNULL)
    n = wrk(url, headers, seconds, conns)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    ev, dump = totals(out)
    ll = ev.get("DLmr", 0) + ev.get("DLmw", 0) + ev.get("ILmr", 0)
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(dump, os.path.join(keep, f"{tag}.callgrind"))
    return ev["Ir"] / n, n, ll / n


def measure_floor(binary, peers, seconds, work, keep=None, conns=10, cache_sim=False):
    """The hyper floor (examples/hyper_floor.rs, one worker) under the same load."""
    procs = load.Procs()
    try:
        start_backend(procs, peers, work)
        out = os.path.join(work, "floor.callgrind.out")
        p = procs.start("hyper-floor", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                        "--dump-instr=no", *sim_args(cache_sim), binary,
                                        f"127.0.0.1:{load.FLOOR_PORT}",
                                        f"127.0.0.1:{load.BACKEND_PORT}", "1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load.wait_port(load.FLOOR_PORT, p, "hyper-floor", timeout=120)
        return count(p.pid, out, f"http://127.0.0.1:{load.FLOOR_PORT}/", [], seconds, conns, keep,
                     "hyper-floor")
    finally:
        procs.stop_all()


def measure(binary, peers, seconds, work, keep=None, conns=10, cache_sim=False,
            telemetry=False):
    procs = load.Procs()
    try:
        start_backend(procs, peers, work)
        gdir = os.path.join(work, "apigw")
        os.makedirs(gdir)
        toml = os.path.join(gdir, "apigw.toml")
        # As load.py's apigw-full-log: metrics listener and access log on.
        telemetry_lines = (f'metrics_listen = "127.0.0.1:0"\naccess_log = "{gdir}/access.log"\n'
                           if telemetry else "")
        with open(toml, "w") as f:
            f.write(f'''data_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
invoke_domain = "{load.INVOKE_DOMAIN}"
store_url = "sqlite://{gdir}/apigw.db"
region = "{load.REGION}"
srn_offering = "{load.OFFERING}"
log = "warn"
worker_threads = 1
{telemetry_lines}
[[credentials]]
access_key = "{load.ACCESS_KEY}"
secret_key = "{load.SECRET_KEY}"
account_id = "{load.ACCOUNT_ID}"
''')
        out = os.path.join(gdir, "callgrind.out")
        p = procs.start("apigw", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  "--dump-instr=no", *sim_args(cache_sim), binary, "serve",
                                  "--config", toml],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = ""
        deadline = time.time() + 120
        while time.time() < deadline:
            raw = p.stdout.readline()
            if not raw:
                load.die("apigw under valgrind exited at start")
            line = raw.decode(errors="replace")
            if "apigw listening" in line:
                break
        m = re.search(r"data=(\S+) admin=(\S+)", line)
        if not m:
            load.die(f"no listening line from apigw: {line!r}")
        data, admin_addr = m.group(1), m.group(2)
        port = int(data.rsplit(":", 1)[1])
        cfg = load.configure_apigw(load.Admin(f"http://{admin_addr}"))
        targets = {
            "no-filter": (f"http://127.0.0.1:{port}/plain/plain",
                          [f"Host: {cfg['plain_api']}.{load.INVOKE_DOMAIN}:{port}"]),
            "full pipeline": (f"http://127.0.0.1:{port}/full/bench",
                              [f"Host: {cfg['full_api']}.{load.INVOKE_DOMAIN}:{port}",
                               f"Authorization: Bearer {cfg['token']}",
                               f"x-scp-apikey: {cfg['key']}",
                               f"Origin: {load.ORIGIN}"]),
        }
        result = {}
        for name, (url, headers) in targets.items():
            tag = (os.path.basename(binary) + ("-telemetry" if telemetry else "") + "-"
                   + name.replace(" ", "-"))
            result[name] = count(p.pid, out, url, headers, seconds, conns, keep, tag)
        return result
    finally:
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apigw", action="append", required=True, help="apigw binary (repeatable)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per stage [10]")
    ap.add_argument("--keep", default=None,
                    help="copy each stage's callgrind dump here (for callgrind_annotate)")
    ap.add_argument("--conns", type=int, default=10, help="wrk connections [10]")
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the caches (1 MiB last level) and print "
                         "last-level misses per request")
    ap.add_argument("--telemetry", action="store_true",
                    help="each build is measured twice: as is, then with the metrics "
                         "listener and an access log on (load.py's apigw-full-log)")
    ap.add_argument("--floor", default=None,
                    help="also measure this hyper floor binary (examples/hyper_floor.rs)")
    ap.add_argument("--peers", default=os.path.normpath(
        os.path.join(load.REPO, "..", "shared", "peers")))
    args = ap.parse_args()
    load.ensure_tools(True)
    ensure_valgrind()
    rows = []
    for binary in args.apigw:
        for tel in ([False, True] if args.telemetry else [False]):
            with tempfile.TemporaryDirectory(prefix="apigw-callgrind-") as work:
                r = measure(os.path.abspath(binary), args.peers, args.duration, work, args.keep,
                            args.conns, args.cache_sim, tel)
            rows.append((binary + (" +metrics+access log" if tel else ""), r))
    floor = None
    if args.floor:
        with tempfile.TemporaryDirectory(prefix="apigw-callgrind-") as work:
            floor = measure_floor(os.path.abspath(args.floor), args.peers, args.duration, work,
                                  args.keep, args.conns, args.cache_sim)
    print(f"wrk -t1 -c{args.conns}, {args.duration} s per stage")
    ll = " no-filter LL misses/req | full LL misses/req |" if args.cache_sim else ""
    print(f"| build | no-filter instr/req | full pipeline instr/req |{ll} requests (no-filter, full) |")
    print("|---|---:|---:|" + ("---:|---:|" if args.cache_sim else "") + "---:|")
    for binary, r in rows:
        sim = (f" {r['no-filter'][2]:,.1f} | {r['full pipeline'][2]:,.1f} |"
               if args.cache_sim else "")
        print(f"| {binary} | {r['no-filter'][0]:,.0f} | {r['full pipeline'][0]:,.0f} |{sim}"
              f" {r['no-filter'][1]:,}, {r['full pipeline'][1]:,} |")
    if floor:
        sim = f" {floor[2]:,.1f} |" if args.cache_sim else ""
        print(f"hyper floor {args.floor}: {floor[0]:,.0f} instr/req{sim} ({floor[1]:,} requests)")
        for binary, r in rows:
            print(f"{binary}: no-filter {r['no-filter'][0] / floor[0]:.2f} x the floor, "
                  f"full pipeline {r['full pipeline'][0] / floor[0]:.2f} x")
    if len(rows) == 2:
        (_, a), (_, b) = rows
        for k in ("no-filter", "full pipeline"):
            extra = f", LL misses {b[k][2] / a[k][2] - 1:+.2%}" if args.cache_sim and a[k][2] else ""
            print(f"{k}: {b[k][0] / a[k][0] - 1:+.2%} instructions{extra} (second vs first)")


if __name__ == "__main__":
    main()
