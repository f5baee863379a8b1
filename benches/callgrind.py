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


def total_ir(outfile):
    """The instruction total of the newest callgrind dump for `outfile`."""
    dumps = sorted(glob.glob(outfile + "*"), key=os.path.getmtime)
    for path in reversed(dumps):
        with open(path) as f:
            for line in f:
                m = re.match(r"(summary|totals): (\d+)", line)
                if m:
                    return int(m.group(2)), path
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


def measure(binary, peers, seconds, work, keep=None):
    procs = load.Procs()
    try:
        backend_dir = os.path.join(work, "backend")
        os.makedirs(os.path.join(backend_dir, "tmp"))
        conf = os.path.join(peers, "backend.conf")
        g = f"daemon off; worker_processes 1; pid {backend_dir}/nginx.pid;"
        nginx = procs.start("backend", [load.which("nginx"), "-p", backend_dir + "/", "-c", conf,
                                        "-e", "stderr", "-g", g], stderr=subprocess.DEVNULL)
        load.wait_port(load.BACKEND_PORT, nginx, "backend")
        gdir = os.path.join(work, "apigw")
        os.makedirs(gdir)
        toml = os.path.join(gdir, "apigw.toml")
        with open(toml, "w") as f:
            f.write(f'''data_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
invoke_domain = "{load.INVOKE_DOMAIN}"
store_url = "sqlite://{gdir}/apigw.db"
region = "{load.REGION}"
srn_offering = "{load.OFFERING}"
log = "warn"
worker_threads = 1

[[credentials]]
access_key = "{load.ACCESS_KEY}"
secret_key = "{load.SECRET_KEY}"
account_id = "{load.ACCOUNT_ID}"
''')
        out = os.path.join(gdir, "callgrind.out")
        p = procs.start("apigw", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  "--dump-instr=no", binary, "serve", "--config", toml],
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
            wrk(url, headers, 3)  # warm up: connections, pool, caches
            subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            n = wrk(url, headers, seconds)
            subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            ir, dump = total_ir(out)
            result[name] = (ir / n, n)
            if keep:
                os.makedirs(keep, exist_ok=True)
                tag = os.path.basename(binary) + "-" + name.replace(" ", "-")
                shutil.copy(dump, os.path.join(keep, f"{tag}.callgrind"))
        return result
    finally:
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apigw", action="append", required=True, help="apigw binary (repeatable)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per stage [10]")
    ap.add_argument("--keep", default=None,
                    help="copy each stage's callgrind dump here (for callgrind_annotate)")
    ap.add_argument("--peers", default=os.path.normpath(
        os.path.join(load.REPO, "..", "shared", "peers")))
    args = ap.parse_args()
    load.ensure_tools(True)
    ensure_valgrind()
    rows = []
    for binary in args.apigw:
        with tempfile.TemporaryDirectory(prefix="apigw-callgrind-") as work:
            r = measure(os.path.abspath(binary), args.peers, args.duration, work, args.keep)
        rows.append((binary, r))
    print("| build | no-filter instr/req | full pipeline instr/req | requests (no-filter, full) |")
    print("|---|---:|---:|---:|")
    for binary, r in rows:
        print(f"| {binary} | {r['no-filter'][0]:,.0f} | {r['full pipeline'][0]:,.0f} "
              f"| {r['no-filter'][1]:,}, {r['full pipeline'][1]:,} |")
    if len(rows) == 2:
        (_, a), (_, b) = rows
        for k in ("no-filter", "full pipeline"):
            print(f"{k}: {b[k][0] / a[k][0] - 1:+.2%} (second vs first)")


if __name__ == "__main__":
    main()
