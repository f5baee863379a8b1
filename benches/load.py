#!/usr/bin/env python3
"""apigw load benchmark: apigw side by side with nginx and haproxy (issue 6).

One run on one machine, python3 standard library only:

  * installs what it needs when missing (nginx, wrk, haproxy, h2load) from
    Debian's packages, with service autostart disabled during the install;
  * starts the backend (nginx, backend.conf, 127.0.0.1:9001) and the peers of
    ../shared/peers: nginx-proxy (8081), nginx-gateway (8082, run from a temp
    copy whose upstream keepalive is raised, 1024 by default), haproxy (8083),
    a TCP relay (haproxy in mode tcp, 8084: the floor, no HTTP parsing, one
    backend connection per client connection), and apigw's release build on
    free ports with a temp SQLite file;
  * configures apigw through its signed management API:
      - API "bench-full", stage `full`, GET /bench -> backend, running the full
        pipeline: IP access control allowing 127.0.0.0/8, JWT on (an auth
        connected to `full`, sent as `Authorization: Bearer`), api_key_required
        with a usage plan quota of 2,000,000,000/day and a connected key (sent
        as `x-scp-apikey`), a resource policy that allows (the user guide's
        IP Range Deny List template, ranges not containing 127.0.0.1), CORS on
        (allow_origins ["*"], requests carry an Origin header);
      - API "bench-plain", stage `plain`, GET /plain -> backend with no filter
        but an access control allowing 127.0.0.0/8. It is a second API because
        a resource policy belongs to the whole API: a second stage of
        bench-full would still evaluate the policy on every request;
  * checks every target answers 200 (and that apigw's filters are really on:
    401 without the token, 403 without the key), exits 2 otherwise;
  * runs wrk (with wrk-report.lua) against every target in the same
    arrangement, interleaved (target order rotated every round), several
    rounds, and prints a table: requests/s median/min/max, p50/p99 latency,
    proxy CPU µs per request (utime+stime of all the proxy's processes from
    /proc), errors (non-2xx + socket errors) and the ratios of apigw to its
    peers (full pipeline vs nginx-gateway; plain vs nginx-proxy and haproxy).

Arrangements (--arrangements, default both):
  pin1   wrk on core 0 (taskset -c 0, -t1); every proxy and the backend pinned
         to core 1 at start, one worker/thread each; 50 and 256 connections.
  free2  nothing pinned, two workers/threads per proxy, wrk -t2; 256 connections.

Sections (--sections, default plain,tls,h2):
  plain  the table above (HTTP/1.1 over TCP).
  tls    HTTPS with wrk, apigw's TLS listener (bench-plain API) against
         nginx-tls (nginx terminating TLS with the same certificate, proxying
         to the backend with upstream keepalive, IP allow 127.0.0.0/8, the
         same as bench-plain's access control; config generated into the temp
         workdir, 8443): keep-alive requests/s, and new handshakes/s (wrk with
         `Connection: close`: every request is a new TCP connection and a full
         TLS handshake). Certificate: a self-signed ECDSA P-256 one made by the
         openssl CLI for *.apigw.localhost, used by both.
  h2     HTTP/2 over TLS (ALPN h2) with h2load, 8 connections x 100 concurrent
         streams, apigw's TLS listener against nginx-tls (`listen ... ssl http2`).

Raw wrk output, the table (table.md) and a JSON summary go to
benches/results/<timestamp>/ (git-ignored). Only processes this script
started are stopped (tracked by PID).

  python3 benches/load.py            # 3 rounds x 10 s per target (about 11 minutes)
  python3 benches/load.py --quick    # 3 rounds x 3 s (about 4 minutes)

The apigw binary is $CARGO_TARGET_DIR/release/apigw (default target/), built
with `cargo build --release` first unless --no-build; --apigw PATH overrides.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
ACCOUNT_ID = "benchaccount00000000000000000001"
REGION = "kr-west1"
OFFERING = "scp"
INVOKE_DOMAIN = "apigw.localhost"
ORIGIN = "http://bench.example"
# A key the nginx-gateway.conf map knows.
NGINX_GW_KEY = "bench-key-0001-aaaaaaaaaaaaaaaaaaaa"

BACKEND_PORT, PROXY_PORT, GATEWAY_PORT, HAPROXY_PORT, RELAY_PORT = 9001, 8081, 8082, 8083, 8084
FLOOR_PORT = 8085
GATEWAY_LOG_PORT = 8086
TLS_PORT = 8443

# Row order of the table (and of round 0; later rounds rotate it).
TARGETS = ["backend", "tcp-relay", "nginx-proxy", "haproxy", "hyper-floor", "apigw-plain",
           "nginx-gateway", "apigw-full"]
LABELS = {
    "backend": "backend direct",
    "tcp-relay": "tcp relay (floor)",
    "hyper-floor": "hyper floor (hyper + tokio, no work)",
    "nginx-proxy": "nginx-proxy",
    "haproxy": "haproxy",
    "apigw-plain": "apigw plain (no filters)",
    "nginx-gateway": "nginx-gateway",
    "apigw-full": "apigw full pipeline",
    "apigw-full-log": "apigw full + metrics + access log",
    "nginx-gateway-log": "nginx-gateway + access log",
}
# The TLS section's targets (wrk over https) and the h2 section's (h2load).
TLS_TARGETS = ["nginx-tls", "apigw-tls", "nginx-tls-new", "apigw-tls-new"]
H2_TARGETS = ["nginx-h2", "apigw-h2"]
LABELS.update({
    "nginx-tls": "nginx-tls keep-alive",
    "apigw-tls": "apigw tls keep-alive",
    "nginx-tls-new": "nginx-tls new handshakes",
    "apigw-tls-new": "apigw tls new handshakes",
    "nginx-h2": "nginx-tls h2 (h2load)",
    "apigw-h2": "apigw tls h2 (h2load)",
})
H2_CONNS, H2_STREAMS = 8, 100
SECTIONS = ("plain", "tls", "h2", "logging")
ARRANGEMENTS = {
    # name: (workers per proxy, wrk threads, pinned, default connection counts)
    "pin1": (1, 1, True, [50, 256]),
    "free2": (2, 2, False, [256]),
}


def log(msg):
    print(msg, flush=True)


def die(msg, code=1):
    print(f"load.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def packaged_service_pids():
    """PIDs named by the packaged services' pid files, when alive."""
    out = {}
    for name, pidfile in (("nginx", "/run/nginx.pid"), ("haproxy", "/run/haproxy.pid")):
        try:
            pid = int(open(pidfile).read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid_alive(pid):
            out[name] = pid
    return out


def ensure_tools(allow_install):
    needed = {"nginx": None, "wrk": "wrk", "haproxy": "haproxy", "h2load": "nghttp2-client"}
    missing = [t for t in needed if not which(t)]
    if not missing:
        return
    if not allow_install:
        die(f"missing tools {missing} (and --no-install given)")
    if os.geteuid() != 0:
        die(f"missing tools {missing}; run as root or install them: "
            "apt-get install -y nginx-light wrk haproxy nghttp2-client")
    before = packaged_service_pids()
    # Keep the packages' postinst from starting their services.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# written by apigw benches/load.py during its install\nexit 101\n")
        os.chmod(policy, 0o755)
        made_policy = True
    try:
        log(f"installing {missing} (apt-get update first)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        pkgs = []
        for t in missing:
            if t == "nginx":
                # nginx-light where the release still has it, else nginx.
                have_light = subprocess.run(
                    ["apt-cache", "show", "nginx-light"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL).returncode == 0
                pkgs.append("nginx-light" if have_light else "nginx")
            else:
                pkgs.append(needed[t])
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + pkgs,
                       check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        if made_policy:
            os.unlink(policy)
    # A packaged service our install started anyway: ours to stop, by its PID.
    for name, pid in packaged_service_pids().items():
        if before.get(name) != pid:
            log(f"stopping the packaged {name} service the install started (pid {pid})")
            os.kill(pid, signal.SIGTERM)
    still = [t for t in needed if not which(t)]
    if still:
        die(f"still missing after install: {still}")


def warn_foreign_services():
    for name, pid in packaged_service_pids().items():
        log(f"note: a packaged {name} service (pid {pid}) is running; not started here, left alone")


def port_in_use(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

class Procs:
    """Every process this script started, stopped by PID only."""

    def __init__(self):
        self.items = []  # (name, Popen)

    def start(self, name, argv, env=None, stdout=None, stderr=None):
        p = subprocess.Popen(argv, env=env, stdout=stdout or subprocess.DEVNULL,
                             stderr=stderr or subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.items.append((name, p))
        return p

    def stop_all(self):
        for _, p in self.items:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for name, p in self.items:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) ignored SIGTERM; SIGKILL")
                p.kill()
                p.wait()
        self.items = []


def children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def cpu_ticks(pids, user_only=False):
    """utime+stime (all threads) of the given processes (utime alone with
    `user_only`)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += int(fields[11]) + (0 if user_only else int(fields[12]))
    return total


def machine_ticks():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def core_ticks():
    """[(busy, total)] jiffies of each core (cpu0, cpu1, ...) from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name[3:].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                out.append((busy, busy + v[3] + v[4]))
    return out


def children_ticks():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * CLK_TCK


def wait_idle(limit_s, threshold=10.0):
    """Waits (up to limit_s) for a second in which the machine is < threshold % busy."""
    if limit_s <= 0:
        return
    deadline = time.time() + limit_s
    pct = 100.0
    while True:
        b0, t0 = machine_ticks()
        time.sleep(1)
        b1, t1 = machine_ticks()
        pct = (b1 - b0) / max(1, t1 - t0) * 100
        if pct < threshold:
            return
        if time.time() >= deadline:
            log(f"  note: the machine is still {pct:.0f}% busy after waiting {limit_s} s; measuring anyway")
            return


def wait_port(port, proc, name, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            die(f"{name} exited with {proc.returncode} at start (see its log under the results folder)")
        if port_in_use(port):
            return
        time.sleep(0.05)
    die(f"{name} did not listen on {port} within {timeout}s")


# ---------------------------------------------------------------------------
# apigw management API
# ---------------------------------------------------------------------------

class Admin:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def call(self, method, path, body=None, expect=(200, 201, 202, 204)):
        url = self.base + path
        ts = str(int(time.time() * 1000))
        msg = f"{method}{url}{ts}{ACCESS_KEY}{ACCOUNT_ID}Openapi".encode()
        sig = base64.b64encode(hmac.new(SECRET_KEY.encode(), msg, hashlib.sha256).digest()).decode()
        headers = {
            "Scp-AccessKey": ACCESS_KEY, "Scp-Timestamp": ts, "Scp-ClientType": "Openapi",
            "Scp-AccountId": ACCOUNT_ID, "Scp-Signature": sig,
            "Scp-Api-Version": "apigateway 1.2",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                code, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            code, text = e.code, e.read().decode()
        if code not in expect:
            die(f"management {method} {path} -> HTTP {code}: {text}")
        return json.loads(text) if text.strip() else {}


def configure_apigw(admin):
    """Creates the two benchmark APIs; returns what the requests need."""
    backend_url = f"http://127.0.0.1:{BACKEND_PORT}/"

    def api_with(name, part, key_required):
        api = admin.call("POST", "/v1/apis", {"name": name, "description": "load benchmark",
                                              "endpoint_type": "REGION"})["id"]
        res = admin.call("GET", f"/v1/apis/{api}/resources?size=100")["resources"]
        root = [r["id"] for r in res if r["path"] == "/"][0]
        rid = admin.call("POST", f"/v1/apis/{api}/resources/{root}", {"path_part": part})["id"]
        admin.call("POST", f"/v1/apis/{api}/resources/{rid}/methods",
                   {"method_type": "GET", "integration_type": "HTTP",
                    "endpoint_url": backend_url, "api_key_required": key_required})
        return api

    # Full pipeline.
    full = api_with("bench-full", "bench", True)
    admin.call("POST", f"/v1/apis/{full}/deployments",
               {"stage_type": "new", "stage_name": "full", "description": "bench"})
    admin.call("POST", f"/v1/apis/{full}/access-controls",
               {"name": "allow-loopback", "allowed_ip_addr": ["127.0.0.0/8"],
                "connected_stages": ["full"], "description": "loopback"})
    auth = admin.call("POST", f"/v1/apis/{full}/auths",
                      {"name": "bench-token", "expiration_period": 30, "connected_stages": ["full"]})
    token = auth["access_token"]
    plan = admin.call("POST", f"/v1/apis/{full}/usage-plans",
                      {"name": "bench-plan", "description": "never reached",
                       "limit": 2_000_000_000, "rate": "day"})["usage_plan"]["id"]
    key = admin.call("POST", f"/v1/apis/{full}/usage-plans/{plan}/api-keys",
                     {"name": "bench-key", "description": "load benchmark"})["api_key"]
    admin.call("PUT", f"/v1/apis/{full}/stages/full/config",
               {"cors_enabled": True, "jwt_enabled": True, "allow_origins": ["*"],
                "usage_plan_id": plan, "connected_api_keys": [key["id"]]})
    # The user guide's "IP Range Deny List" template, with this API's SRNs.
    api_srn = f"srn:{OFFERING}::{ACCOUNT_ID}:{REGION}::apigateway:api/{full}"
    method_srn = f"srn:{OFFERING}::{ACCOUNT_ID}:{REGION}::apigateway:method/{full}/full/GET/bench"
    admin.call("PUT", f"/v1/apis/{full}/resource-policies", {
        "Version": "",
        "Statement": [{
            "Action": ["apigateway:InvokeApigatewayRegion"],
            "Condition": {
                "SrnLike": {"scp:RequestAttribute/body['method-srn']": [method_srn]},
                "NotIpAddress": {"scp:SourceIp": ["1.2.3.4/24", "5.6.7.8/32"]},
            },
            "Effect": "Allow", "Principal": "*", "Resource": [api_srn], "Sid": "Statement1",
        }],
    })

    # No filters (a separate API: the resource policy is API-wide).
    plain = api_with("bench-plain", "plain", False)
    admin.call("POST", f"/v1/apis/{plain}/deployments",
               {"stage_type": "new", "stage_name": "plain", "description": "bench"})
    admin.call("POST", f"/v1/apis/{plain}/access-controls",
               {"name": "allow-loopback", "allowed_ip_addr": ["127.0.0.0/8"],
                "connected_stages": ["plain"], "description": "loopback"})
    return {"full_api": full, "plain_api": plain, "token": token, "key": key["key"]}


# ---------------------------------------------------------------------------
# One arrangement's processes
# ---------------------------------------------------------------------------

class Setup:
    """Backend, peers and apigw for one arrangement."""

    def __init__(self, args, arrangement, workdir, outdir):
        self.args = args
        self.arr = arrangement
        self.workers, _, self.pinned, _ = ARRANGEMENTS[arrangement]
        self.work = os.path.join(workdir, arrangement)
        os.makedirs(self.work)
        self.outdir = outdir
        self.procs = Procs()
        self.pids = {}  # target -> Popen (the process whose tree is the proxy)
        self.targets = {}  # target -> (url, [headers])
        self.access_logs = {}  # logging target -> its access log file

    def pin(self, argv):
        return (["taskset", "-c", "1"] + argv) if self.pinned else argv

    def logfile(self, name):
        return open(os.path.join(self.outdir, f"{self.arr}-{name}.log"), "ab")

    def nginx(self, name, conf_src, port, workers, keepalive=None, transform=None):
        prefix = os.path.join(self.work, name)
        os.makedirs(os.path.join(prefix, "tmp"))
        text = open(conf_src).read()
        if transform is not None:
            text = transform(text, prefix)
        if keepalive is not None:
            text, n = re.subn(r"keepalive\s+\d+;", f"keepalive {keepalive};", text)
            if n != 1:
                die(f"{conf_src}: expected one 'keepalive N;' line, found {n}")
        conf = os.path.join(prefix, os.path.basename(conf_src))
        with open(conf, "w") as f:
            f.write(text)
        shutil.copy(conf, os.path.join(self.outdir, f"{self.arr}-{name}.conf"))
        g = f"daemon off; worker_processes {workers}; pid {prefix}/nginx.pid;"
        p = self.procs.start(name, self.pin([which("nginx"), "-p", prefix + "/", "-c", conf,
                                             "-e", "stderr", "-g", g]),
                             stderr=self.logfile(name))
        wait_port(port, p, name)
        return p

    def start(self):
        a = self.args
        peers = a.peers
        tls_on = bool({"tls", "h2"} & a.sections)
        for port in (BACKEND_PORT, PROXY_PORT, GATEWAY_PORT, HAPROXY_PORT, RELAY_PORT, FLOOR_PORT,
                     GATEWAY_LOG_PORT) + \
                ((TLS_PORT,) if tls_on else ()):
            if port_in_use(port):
                die(f"port {port} is already in use by something this script did not start")
        self.pids["backend"] = self.nginx("backend", os.path.join(peers, "backend.conf"),
                                          BACKEND_PORT, a.backend_workers)
        self.pids["nginx-proxy"] = self.nginx(
            "nginx-proxy", os.path.join(peers, "nginx-proxy.conf"), PROXY_PORT, self.workers,
            None if a.proxy_keepalive is None else a.proxy_keepalive)
        self.pids["nginx-gateway"] = self.nginx(
            "nginx-gateway", os.path.join(peers, "nginx-gateway.conf"), GATEWAY_PORT,
            self.workers, a.gateway_keepalive)

        # haproxy: a copy whose pidfile lives in our temp folder.
        hdir = os.path.join(self.work, "haproxy")
        os.makedirs(hdir)
        text = open(os.path.join(peers, "haproxy.cfg")).read()
        text = re.sub(r"(?m)^(\s*pidfile\s+)\S+", lambda m: m.group(1) + f"{hdir}/haproxy.pid", text)
        cfg = os.path.join(hdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(text)
        shutil.copy(cfg, os.path.join(self.outdir, f"{self.arr}-haproxy.cfg"))
        env = dict(os.environ, BENCH_NBTHREAD=str(self.workers))
        p = self.procs.start("haproxy", self.pin([which("haproxy"), "-db", "-f", cfg]), env=env,
                             stderr=self.logfile("haproxy"), stdout=self.logfile("haproxy"))
        wait_port(HAPROXY_PORT, p, "haproxy")
        self.pids["haproxy"] = p

        # The floor: haproxy in TCP mode, one backend connection per client
        # connection, bytes copied without parsing HTTP. No HTTP proxy can
        # do less work per request, so its rps bounds what any of them can
        # reach on this machine in this arrangement.
        rdir = os.path.join(self.work, "tcp-relay")
        os.makedirs(rdir)
        cfg = os.path.join(rdir, "haproxy-tcp.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    nbthread {self.workers}
    maxconn 8000
    pidfile {rdir}/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client  30s
    timeout server  30s
frontend fe_relay
    bind 127.0.0.1:{RELAY_PORT}
    default_backend be_relay
backend be_relay
    server backend1 127.0.0.1:{BACKEND_PORT}
""")
        shutil.copy(cfg, os.path.join(self.outdir, f"{self.arr}-tcp-relay.cfg"))
        p = self.procs.start("tcp-relay", self.pin([which("haproxy"), "-db", "-f", cfg]),
                             stderr=self.logfile("tcp-relay"), stdout=self.logfile("tcp-relay"))
        wait_port(RELAY_PORT, p, "tcp-relay")
        self.pids["tcp-relay"] = p

        # The hyper floor (examples/hyper_floor.rs): a reverse proxy of
        # apigw's shape (hyper 1 server and client, a per-worker idle pool,
        # current-thread runtimes with SO_REUSEPORT, mimalloc) that forwards
        # every request untouched: what hyper and tokio cost by themselves.
        p = self.procs.start("hyper-floor", self.pin([a.hyper_floor, f"127.0.0.1:{FLOOR_PORT}",
                                                      f"127.0.0.1:{BACKEND_PORT}", str(self.workers)]),
                             stderr=self.logfile("hyper-floor"))
        wait_port(FLOOR_PORT, p, "hyper-floor")
        self.pids["hyper-floor"] = p

        if tls_on:
            self.cert, self.key = make_certificate(self.work)
            self.pids["nginx-tls"] = self.nginx_tls()

        # apigw on free ports with a temp SQLite file.
        tls_settings = ""
        if tls_on:
            tls_settings = (f'tls_listen = "127.0.0.1:0"\ntls_cert_file = "{self.cert}"\n'
                            f'tls_key_file = "{self.key}"\n')
        p, line, data, admin_addr = self.launch_apigw("apigw", tls_settings)
        self.apigw_port = int(data.rsplit(":", 1)[1])
        m = re.search(r"tls=(\S+)", line)
        if tls_on and not m:
            die(f"apigw printed no tls= address: {line!r}")
        self.apigw_tls_port = int(m.group(1).rsplit(":", 1)[1]) if m else None
        self.pids["apigw"] = p
        cfg = configure_apigw(Admin(f"http://{admin_addr}"))
        self.apigw_cfg = cfg
        log(f"  apigw data={data} admin={admin_addr} full API {cfg['full_api']}, "
            f"plain API {cfg['plain_api']}")

        if getattr(a, "telemetry", False):
            self.start_logged_apigw()
        if "logging" in a.sections:
            self.pids["nginx-gateway-log"] = self.nginx(
                "nginx-gateway-log", os.path.join(peers, "nginx-gateway.conf"), GATEWAY_LOG_PORT,
                self.workers, a.gateway_keepalive, transform=nginx_json_log)
            # nginx_json_log writes it into the nginx's prefix folder.
            self.access_logs["nginx-gateway-log"] = os.path.join(self.work, "nginx-gateway-log",
                                                                 "access.log")

        port = self.apigw_port
        self.targets = {
            "backend": (f"http://127.0.0.1:{BACKEND_PORT}/", []),
            "nginx-proxy": (f"http://127.0.0.1:{PROXY_PORT}/", []),
            "haproxy": (f"http://127.0.0.1:{HAPROXY_PORT}/", []),
            "tcp-relay": (f"http://127.0.0.1:{RELAY_PORT}/", []),
            "hyper-floor": (f"http://127.0.0.1:{FLOOR_PORT}/", []),
            "nginx-gateway": (f"http://127.0.0.1:{GATEWAY_PORT}/",
                              [f"X-SCP-ApiKey: {NGINX_GW_KEY}", f"Origin: {ORIGIN}"]),
            "apigw-full": (f"http://127.0.0.1:{port}/full/bench",
                           [f"Host: {cfg['full_api']}.{INVOKE_DOMAIN}:{port}",
                            f"Authorization: Bearer {cfg['token']}",
                            f"x-scp-apikey: {cfg['key']}",
                            f"Origin: {ORIGIN}"]),
            "apigw-plain": (f"http://127.0.0.1:{port}/plain/plain",
                            [f"Host: {cfg['plain_api']}.{INVOKE_DOMAIN}:{port}"]),
        }
        if tls_on:
            tport = self.apigw_tls_port
            ahost = f"{cfg['plain_api']}.{INVOKE_DOMAIN}"
            close = ["Connection: close"]
            self.targets.update({
                "nginx-tls": (f"https://127.0.0.1:{TLS_PORT}/", []),
                "apigw-tls": (f"https://127.0.0.1:{tport}/plain/plain", [f"Host: {ahost}:{tport}"]),
                "nginx-tls-new": (f"https://127.0.0.1:{TLS_PORT}/", close),
                "apigw-tls-new": (f"https://127.0.0.1:{tport}/plain/plain",
                                  [f"Host: {ahost}:{tport}"] + close),
                "nginx-h2": (f"https://127.0.0.1:{TLS_PORT}/", []),
                "apigw-h2": (f"https://127.0.0.1:{tport}/plain/plain", [f":authority: {ahost}"]),
            })
        self.proxy_of = {
            "backend": None, "nginx-proxy": self.pids["nginx-proxy"],
            "haproxy": self.pids["haproxy"], "nginx-gateway": self.pids["nginx-gateway"],
            "tcp-relay": self.pids["tcp-relay"], "hyper-floor": self.pids["hyper-floor"],
            "apigw-full": self.pids["apigw"], "apigw-plain": self.pids["apigw"],
        }
        if getattr(a, "telemetry", False):
            lport, lcfg = self.logged_port, self.logged_cfg
            self.targets["apigw-full-log"] = (
                f"http://127.0.0.1:{lport}/full/bench",
                [f"Host: {lcfg['full_api']}.{INVOKE_DOMAIN}:{lport}",
                 f"Authorization: Bearer {lcfg['token']}",
                 f"x-scp-apikey: {lcfg['key']}",
                 f"Origin: {ORIGIN}"])
            self.proxy_of["apigw-full-log"] = self.pids["apigw-log"]
        if "nginx-gateway-log" in self.pids:
            self.targets["nginx-gateway-log"] = (f"http://127.0.0.1:{GATEWAY_LOG_PORT}/",
                                                 self.targets["nginx-gateway"][1])
            self.proxy_of["nginx-gateway-log"] = self.pids["nginx-gateway-log"]
        for t in TLS_TARGETS + H2_TARGETS:
            self.proxy_of[t] = self.pids["apigw"] if t.startswith("apigw") else self.pids.get("nginx-tls")

    def launch_apigw(self, name, settings):
        """Start apigw `name` on free ports with its own temp SQLite file and
        `settings` (flat TOML lines) besides the common ones; returns the
        process, its listening line, data and admin addresses."""
        gdir = os.path.join(self.work, name)
        os.makedirs(gdir)
        toml = os.path.join(gdir, "apigw.toml")
        settings = settings.replace("{dir}", gdir)
        with open(toml, "w") as f:
            f.write(f'''data_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
invoke_domain = "{INVOKE_DOMAIN}"
store_url = "sqlite://{gdir}/apigw.db"
region = "{REGION}"
srn_offering = "{OFFERING}"
log = "warn"
worker_threads = {self.workers}
{settings}
[[credentials]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
account_id = "{ACCOUNT_ID}"
''')
        shutil.copy(toml, os.path.join(self.outdir, f"{self.arr}-{name}.toml"))
        p = self.procs.start(name, self.pin([self.args.apigw, "serve", "--config", toml]),
                             stdout=subprocess.PIPE, stderr=self.logfile(name))
        line = self.read_listening(p)
        m = re.search(r"data=(\S+) admin=(\S+)", line)
        if not m:
            die(f"unexpected apigw line: {line!r}")
        return p, line, m.group(1), m.group(2)

    def start_logged_apigw(self):
        """A second apigw, configured the same way, with the metrics
        listener on and a JSON access log to a file: the `apigw-full-log`
        target, to compare with `apigw-full` in the same run (issue [10]:
        at most 5 % fewer requests/s)."""
        p, _, data, admin_addr = self.launch_apigw(
            "apigw-log", 'metrics_listen = "127.0.0.1:0"\naccess_log = "{dir}/access.log"\n')
        self.logged_port = int(data.rsplit(":", 1)[1])
        self.pids["apigw-log"] = p
        self.logged_cfg = configure_apigw(Admin(f"http://{admin_addr}"))
        # launch_apigw's {dir} is the folder named after the process.
        self.access_logs["apigw-full-log"] = os.path.join(self.work, "apigw-log", "access.log")
        log(f"  apigw (metrics + access log) data={data}")

    def nginx_tls(self):
        """nginx terminating TLS (1.2 and 1.3, h2 and http/1.1) with apigw's
        certificate, proxying to the backend as nginx-proxy does."""
        prefix = os.path.join(self.work, "nginx-tls")
        os.makedirs(os.path.join(prefix, "tmp"))
        conf = os.path.join(prefix, "nginx-tls.conf")
        with open(conf, "w") as f:
            f.write(f"""# generated by benches/load.py: nginx-proxy's proxying behind TLS
error_log stderr warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path tmp/client_body;
    proxy_temp_path       tmp/proxy;
    fastcgi_temp_path     tmp/fastcgi;
    uwsgi_temp_path       tmp/uwsgi;
    scgi_temp_path        tmp/scgi;
    upstream backend {{
        server 127.0.0.1:{BACKEND_PORT};
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }}
    server {{
        listen 127.0.0.1:{TLS_PORT} ssl http2 backlog=4096;
        ssl_certificate     {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        http2_max_concurrent_streams 128;
        allow 127.0.0.0/8;
        deny  all;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
""")
        shutil.copy(conf, os.path.join(self.outdir, f"{self.arr}-nginx-tls.conf"))
        g = f"daemon off; worker_processes {self.workers}; pid {prefix}/nginx.pid;"
        p = self.procs.start("nginx-tls", self.pin([which("nginx"), "-p", prefix + "/", "-c", conf,
                                                   "-e", "stderr", "-g", g]),
                             stderr=self.logfile("nginx-tls"))
        wait_port(TLS_PORT, p, "nginx-tls")
        return p

    def read_listening(self, p):
        result = {}

        def reader():
            for raw in p.stdout:
                line = raw.decode(errors="replace").strip()
                if "apigw listening" in line and "line" not in result:
                    result["line"] = line
            # keep draining until exit so apigw never blocks on a full pipe

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.time() + 30
        while time.time() < deadline and "line" not in result:
            if p.poll() is not None:
                die(f"apigw exited with {p.returncode} at start (log: {self.outdir}/{self.arr}-apigw.log)")
            time.sleep(0.05)
        if "line" not in result:
            die("apigw printed no 'apigw listening' line within 30 s")
        return result["line"]

    def all_pids(self):
        out = []
        for _, p in self.procs.items:
            out += [p.pid] + children_of(p.pid)
        return out

    def backend_pids(self):
        p = self.pids["backend"]
        return [p.pid] + children_of(p.pid)

    def proxy_pids(self, target):
        p = self.proxy_of[target]
        if p is None:
            return []
        return [p.pid] + children_of(p.pid)

    def stop(self):
        self.procs.stop_all()


# ---------------------------------------------------------------------------
# Checks and measurement
# ---------------------------------------------------------------------------

def curl(url, headers):
    argv = ["curl", "-sS", "-k", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "--max-time", "5"]
    for h in headers:
        argv += ["-H", h]
    r = subprocess.run(argv + [url], capture_output=True, text=True)
    out = r.stdout.strip()
    code = out[-3:] if len(out) >= 3 else "000"
    return code, out.lower()


def check_targets(setup):
    failed = []
    for t in TARGETS + [t for t in ("nginx-gateway-log",) if t in setup.targets]:
        url, headers = setup.targets[t]
        code, head = "000", ""
        for _ in range(20):
            code, head = curl(url, headers)
            if code == "200":
                break
            time.sleep(0.1)
        if code != "200":
            failed.append(f"{t}: HTTP {code} from {url}")
            continue
        if t == "apigw-full":
            for must in ("access-control-allow-origin", "x-ratelimit-limit"):
                if must not in head:
                    failed.append(f"{t}: answer lacks {must}")
    # The full stage's filters are really on.
    url, headers = setup.targets["apigw-full"]
    no_token = [h for h in headers if not h.startswith("Authorization")]
    no_key = [h for h in headers if not h.lower().startswith("x-scp-apikey")]
    for what, hs, want in (("without the bearer token", no_token, "401"),
                           ("without the API key", no_key, "403")):
        code, _ = curl(url, hs)
        if code != want:
            failed.append(f"apigw-full {what}: HTTP {code}, expected {want}")
    for t in TLS_TARGETS:
        if t in setup.targets:
            url, headers = setup.targets[t]
            code, _ = curl(url, headers)
            if code != "200":
                failed.append(f"{t}: HTTP {code} from {url}")
    for t in H2_TARGETS:
        if t in setup.targets:
            r = run_h2load(setup, t, 1, 1, 0, requests=10)
            if r["errors"] or r["requests"] != 10:
                failed.append(f"{t}: h2load: {r['errors']} errors of 10 (ALPN {r['alpn']})")
    if failed:
        for f in failed:
            print(f"load.py: check failed: {f}", file=sys.stderr)
        return False
    log("  every target answers 200; apigw full stage answers 401 without the token, 403 without the key")
    return True


ANCHOR = re.compile(r"ANCHOR (.*)")


def run_wrk(args, setup, target, conns, seconds, wrk_threads, raw_path=None):
    url, headers = setup.targets[target]
    argv = []
    if setup.pinned:
        argv += ["taskset", "-c", "0"]
    argv += [which("wrk"), f"-t{wrk_threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
             "-s", os.path.join(args.peers, "wrk-report.lua")]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    pids = setup.proxy_pids(target)
    backend = setup.backend_pids()
    ours = setup.all_pids()
    c0, o0, w0, (b0, t0) = cpu_ticks(pids), cpu_ticks(ours), children_ticks(), machine_ticks()
    k0, cores0, u0 = cpu_ticks(backend), core_ticks(), cpu_ticks(pids, True)
    r = subprocess.run(argv, capture_output=True, text=True)
    c1, o1, w1, (b1, t1) = cpu_ticks(pids), cpu_ticks(ours), children_ticks(), machine_ticks()
    k1, cores1, u1 = cpu_ticks(backend), core_ticks(), cpu_ticks(pids, True)
    core_busy = [(bb1 - bb0) / max(1, tt1 - tt0) * 100
                 for (bb0, tt0), (bb1, tt1) in zip(cores0, cores1)]
    # CPU used on the machine by anything but wrk, the backend, the peers and apigw.
    other = max(0.0, (b1 - b0) - (o1 - o0) - (w1 - w0)) / max(1, t1 - t0) * 100
    if raw_path:
        with open(raw_path, "w") as f:
            f.write("$ " + shlex.join(argv) + "\n")
            f.write(r.stdout)
            if r.stderr:
                f.write("--- stderr\n" + r.stderr)
    m = ANCHOR.search(r.stdout)
    if r.returncode != 0 or not m:
        die(f"wrk failed on {target} (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    kv = dict(x.split("=", 1) for x in m.group(1).split())
    non2xx = 0
    m2 = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", r.stdout)
    if m2:
        non2xx = int(m2.group(1))
    reqs = int(kv["requests"])
    sock = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    cpu_us = (c1 - c0) / CLK_TCK * 1e6 / reqs if pids and reqs else None
    user_us = (u1 - u0) / CLK_TCK * 1e6 / reqs if pids and reqs else None
    backend_us = (k1 - k0) / CLK_TCK * 1e6 / reqs if reqs else None
    client_us = (w1 - w0) / CLK_TCK * 1e6 / reqs if reqs else None
    return {
        "requests": reqs, "rps": float(kv["rps"]), "p50_ms": int(kv["p50_us"]) / 1000,
        "p90_ms": int(kv["p90_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
        "max_ms": int(kv["max_us"]) / 1000, "errors": max(non2xx, int(kv["err_status"])) + sock,
        "non2xx": max(non2xx, int(kv["err_status"])), "socket_errors": sock, "cpu_us_per_req": cpu_us,
        "user_us_per_req": user_us, "backend_us_per_req": backend_us, "client_us_per_req": client_us, "core_busy_pct": core_busy,
        "other_cpu_pct": other,
    }


# The logging section's pairs: (without, with) logging.
LOG_PAIRS = (("apigw-full", "apigw-full-log"), ("nginx-gateway", "nginx-gateway-log"))


def nginx_json_log(text, prefix):
    """nginx-gateway.conf with a JSON access log of the fields apigw's line
    has (time, request id, trace id, api, stage, resource path, method,
    status, latency, integration latency, bytes in and out, client, key id,
    auth id, error), buffered 64 KiB (nginx's largest), on its own port."""
    fmt = ("'{\"time\":\"$time_iso8601\",\"request_id\":\"$request_id\","
           "\"trace_id\":\"$request_id\",\"api\":\"0123456789abcdef0123456789abcdef\","
           "\"stage\":\"full\",\"resource_path\":\"/bench\",\"method\":\"$request_method\","
           "\"status\":$status,\"latency_ms\":$request_time,"
           "\"integration_latency_ms\":\"$upstream_response_time\","
           "\"bytes_in\":$request_length,\"bytes_out\":$bytes_sent,"
           "\"client\":\"$remote_addr\",\"api_key_id\":\"$scp_client-0123456789abcdef0123\","
           "\"auth_id\":null,\"error\":null}'")
    text, n = re.subn(r"(?m)^(\s*)access_log off;",
                      lambda m: (f"{m.group(1)}log_format gwjson escape=json {fmt};\n"
                                 f"{m.group(1)}access_log {prefix}/access.log gwjson buffer=64k;"),
                      text)
    if n != 1:
        die("nginx-gateway.conf: expected one 'access_log off;' line")
    text, n = re.subn(r"listen\s+127\.0\.0\.1:\d+", f"listen 127.0.0.1:{GATEWAY_LOG_PORT}", text)
    if n != 1:
        die("nginx-gateway.conf: expected one 'listen 127.0.0.1:PORT' line")
    return text


def log_line_size(path):
    """Bytes per line of the access log at `path` so far, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (1 << 20)))
            tail = f.read().split(b"\n")[1:-1]
        return sum(len(x) + 1 for x in tail) / len(tail) if tail else None
    except OSError:
        return None


def logging_pairs(args, setup, arr, conns, seconds, warmup, wrk_threads, outdir):
    """Issue 10's logging cost, measured as A/B pairs: apigw-full and
    apigw-full-log (the same stage on a second process with metrics and a
    file access log on), and for comparison nginx-gateway without and with
    a JSON access log of the same fields, each run back to back, in ABBA
    order, --pairs times. A pair's two runs share the machine's state of
    the moment, so the ratio within a pair is steadier than the ratio of
    medians over rounds far apart when the machine's speed drifts."""
    if warmup > 0:
        for pair in LOG_PAIRS:
            for t in pair:
                run_wrk(args, setup, t, conns, warmup, wrk_threads)
    pairs = {pair: [] for pair in LOG_PAIRS}
    for i in range(args.pairs):
        for base, logged in LOG_PAIRS:
            order = (base, logged) if i % 2 == 0 else (logged, base)
            got = {}
            for t in order:
                raw = os.path.join(outdir, f"{arr}-c{conns}-pair{i + 1}-{t}.txt")
                r = run_wrk(args, setup, t, conns, seconds, wrk_threads, raw)
                r.update({"arrangement": arr, "conns": conns, "target": t, "pair": i + 1})
                got[t] = r
            a, b = got[base], got[logged]
            log(f"  {arr} c{conns} pair {i + 1:2d} {base} {a['rps']:>9,.0f} rps, {logged} "
                f"{b['rps']:>9,.0f} rps: {b['rps'] / a['rps']:.3f}  errors {a['errors'] + b['errors']}")
            pairs[(base, logged)].append((a, b))
    for (_, logged), runs in pairs.items():
        size = log_line_size(setup.access_logs[logged])
        for _, b in runs:
            b["log_bytes_per_line"] = size
    return pairs


def median_interval(xs, level=0.95):
    """The median of xs and a distribution-free interval around it: the
    order statistics x(k) and x(n+1-k) with the largest k for which the
    binomial(n, 1/2) tail below k is at most (1 - level) / 2."""
    xs = sorted(xs)
    n = len(xs)
    tail, k, cum = (1 - level) / 2, 0, 0.0
    for j in range(n):
        cum += math.comb(n, j) / 2 ** n
        if cum > tail:
            break
        k = j + 1
    k = max(k, 1)
    return statistics.median(xs), xs[k - 1], xs[n - k]


def pairs_table(pair_results):
    lines = ["Logging cost, A/B pairs (section logging): apigw full + metrics + access log against "
             "apigw full, and nginx-gateway with a JSON access log of the same fields against "
             "nginx-gateway; the two runs of each pair back to back (ABBA order); ratio = with / "
             "without logging, median over the pairs with its distribution-free 95 % interval:", "",
             "| arrangement | conns | comparison | pairs | rps ratio median | 95 % interval | min | max "
             "| CPU/req ratio median | log bytes/line | errors | goal (issue 10: apigw ≥ 0.95) |",
             "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for (arr, conns), by_pair in pair_results.items():
        for (base, logged), pairs in by_pair.items():
            rr = [b["rps"] / a["rps"] for a, b in pairs]
            cr = [b["cpu_us_per_req"] / a["cpu_us_per_req"] for a, b in pairs
                  if a["cpu_us_per_req"] and b["cpu_us_per_req"]]
            med, lo, hi = median_interval(rr)
            errors = sum(a["errors"] + b["errors"] for a, b in pairs)
            cpu = f"{statistics.median(cr):.3f}" if cr else "—"
            size = pairs[-1][1].get("log_bytes_per_line")
            size = f"{size:.0f}" if size else "—"
            goal = ("met" if med >= 0.95 else "not met") if base == "apigw-full" else "(reference)"
            lines.append(f"| {arr} | {conns} | {LABELS[logged]} / {LABELS[base]} | {len(pairs)} | {med:.3f} "
                         f"| {lo:.3f} – {hi:.3f} | {min(rr):.3f} | {max(rr):.3f} | {cpu} | {size} "
                         f"| {errors:,} | {goal} |")
    return "\n".join(lines)


def make_certificate(workdir):
    """A self-signed ECDSA P-256 certificate for *.apigw.localhost (and
    localhost), for apigw and nginx-tls alike."""
    cert, key = os.path.join(workdir, "bench-cert.pem"), os.path.join(workdir, "bench-key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-subj", "/CN=apigw-bench", "-days", "7", "-addext",
                        f"subjectAltName=DNS:*.{INVOKE_DOMAIN},DNS:localhost"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        die(f"openssl could not make the bench certificate: {r.stderr.strip()}")
    return cert, key


def run_h2load(setup, target, conns, streams, seconds, raw_path=None, requests=None, threads=1):
    """h2load over TLS; `requests` instead of a duration for checks."""
    url, headers = setup.targets[target]
    argv = ["taskset", "-c", "0"] if setup.pinned else []
    argv += [which("h2load"), f"-c{conns}", f"-m{streams}", f"-t{threads}"]
    argv += [f"-n{requests}"] if requests else [f"-D{seconds}", "--warm-up-time=1"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    pids = setup.proxy_pids(target)
    backend = setup.backend_pids()
    ours = setup.all_pids()
    c0, o0, w0, (b0, t0) = cpu_ticks(pids), cpu_ticks(ours), children_ticks(), machine_ticks()
    k0, cores0, u0 = cpu_ticks(backend), core_ticks(), cpu_ticks(pids, True)
    r = subprocess.run(argv, capture_output=True, text=True)
    c1, o1, w1, (b1, t1) = cpu_ticks(pids), cpu_ticks(ours), children_ticks(), machine_ticks()
    k1, cores1, u1 = cpu_ticks(backend), core_ticks(), cpu_ticks(pids, True)
    if raw_path:
        with open(raw_path, "w") as f:
            f.write("$ " + shlex.join(argv) + "\n" + r.stdout)
            if r.stderr:
                f.write("--- stderr\n" + r.stderr)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", r.stdout)
    q = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", r.stdout)
    if not m or not q:
        die(f"h2load failed on {target} (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    alpn = re.search(r"Application protocol: (\S+)", r.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", r.stdout)
    done = int(q.group(2))
    ok2xx = int(codes.group(1)) if codes else 0
    # The mean of "time for request" (h2load prints no percentiles).
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", r.stdout)

    def ms(v):
        for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
            if v.endswith(unit):
                return float(v[:-len(unit)]) * f
        return 0.0

    mean_ms = ms(lat.group(3)) if lat else 0.0
    core_busy = [(bb1 - bb0) / max(1, tt1 - tt0) * 100
                 for (bb0, tt0), (bb1, tt1) in zip(cores0, cores1)]
    other = max(0.0, (b1 - b0) - (o1 - o0) - (w1 - w0)) / max(1, t1 - t0) * 100
    errors = int(q.group(4)) + int(q.group(5)) + int(q.group(6)) + (done - ok2xx)
    return {
        "requests": done, "rps": float(m.group(1)), "p50_ms": mean_ms, "p90_ms": mean_ms,
        "p99_ms": ms(lat.group(2)) if lat else 0.0, "max_ms": ms(lat.group(2)) if lat else 0.0,
        "errors": errors, "non2xx": done - ok2xx, "socket_errors": int(q.group(5)),
        "cpu_us_per_req": (c1 - c0) / CLK_TCK * 1e6 / done if pids and done else None,
        "user_us_per_req": (u1 - u0) / CLK_TCK * 1e6 / done if pids and done else None,
        "backend_us_per_req": (k1 - k0) / CLK_TCK * 1e6 / done if done else None,
        "client_us_per_req": (w1 - w0) / CLK_TCK * 1e6 / done if done else None,
        "core_busy_pct": core_busy, "other_cpu_pct": other,
        "alpn": alpn.group(1) if alpn else "none",
    }


def tls_table(results):
    """The TLS and HTTP/2 sections: apigw against nginx-tls, same run."""
    lines = ["| arrangement | target | conns | rps median | rps min | rps max | p50 ms | p99 ms "
             "| proxy CPU µs/req | errors | apigw / nginx rps | apigw / nginx CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pairs = {"apigw-tls": "nginx-tls", "apigw-tls-new": "nginx-tls-new", "apigw-h2": "nginx-h2"}
    for (arr, conns), per in results.items():
        for t in TLS_TARGETS + H2_TARGETS:
            if t not in per:
                continue
            s = per[t]
            cpu = "—" if s["cpu_us_per_req"] is None else f"{s['cpu_us_per_req']:.1f}"
            ratio, cratio = "", ""
            peer = per.get(pairs.get(t, ""))
            if peer:
                ratio = f"{s['rps_median'] / max(1e-9, peer['rps_median']):.2f}"
                if s["cpu_us_per_req"] and peer["cpu_us_per_req"]:
                    cratio = f"{s['cpu_us_per_req'] / peer['cpu_us_per_req']:.2f}"
            c = f"{H2_CONNS}x{H2_STREAMS}" if t in H2_TARGETS else str(conns)
            lines.append(f"| {arr} | {LABELS[t]} | {c} | {fmt_int(s['rps_median'])} | "
                         f"{fmt_int(s['rps_min'])} | {fmt_int(s['rps_max'])} | {s['p50_ms']:.2f} | "
                         f"{s['p99_ms']:.2f} | {cpu} | {s['errors']:,} | {ratio} | {cratio} |")
    lines.append("")
    lines.append("h2 rows: h2load prints no percentiles: 'p50' is the mean time per request, "
                 "'p99' the max. 'new handshakes' rows: wrk with Connection: close, so rps = "
                 "new TCP connections + full TLS handshakes per second.")
    return "\n".join(lines)


def summarize(runs):
    rps = [r["rps"] for r in runs]
    cpu = [r["cpu_us_per_req"] for r in runs if r["cpu_us_per_req"] is not None]
    return {
        "rounds": len(runs),
        "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "cpu_us_per_req": statistics.median(cpu) if cpu else None,
        "user_us_per_req": (statistics.median(r["user_us_per_req"] for r in runs)
                            if all(r.get("user_us_per_req") is not None for r in runs) else None),
        "backend_us_per_req": statistics.median(r["backend_us_per_req"] or 0.0 for r in runs),
        "client_us_per_req": statistics.median(r["client_us_per_req"] or 0.0 for r in runs),
        "core_busy_pct": [statistics.median(c) for c in zip(*(r["core_busy_pct"] for r in runs))],
        "errors": sum(r["errors"] for r in runs),
        "other_cpu_pct": statistics.median(r["other_cpu_pct"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def fmt_int(x):
    return f"{x:,.0f}"


def ratios(a, b):
    """rps, p99, CPU and user CPU per request of summary a over summary b
    (nan where b has no figure)."""
    nan = float("nan")

    def over(k):
        return a[k] / b[k] if a.get(k) and b.get(k) else nan
    return a["rps_median"] / b["rps_median"], over("p99_ms"), over("cpu_us_per_req"), over("user_us_per_req")


def table(results, args):
    lines = []
    lines.append("| arrangement | target | conns | rps median | rps min | rps max | p50 ms | p99 ms "
                 "| proxy CPU µs/req | backend CPU µs/req | errors | other CPU % |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (arr, conns), per in results.items():
        for t in TARGETS:
            if t not in per:
                continue
            s = per[t]
            cpu = "—" if s["cpu_us_per_req"] is None else f"{s['cpu_us_per_req']:.1f}"
            lines.append(f"| {arr} | {LABELS[t]} | {conns} | {fmt_int(s['rps_median'])} | "
                         f"{fmt_int(s['rps_min'])} | {fmt_int(s['rps_max'])} | {s['p50_ms']:.2f} | "
                         f"{s['p99_ms']:.2f} | {cpu} | {s['backend_us_per_req']:.1f} | {s['errors']:,} | {s['other_cpu_pct']:.0f} |")
    lines.append("")
    lines.append("Ratios of apigw to each peer (medians; rps > 1 and p99/CPU < 1 favour apigw):")
    lines.append("")
    lines.append("| arrangement | conns | comparison | rps ratio | p99 ratio | CPU ratio "
                 "| user CPU ratio | goal (issue 11) |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---|")
    for (arr, conns), per in results.items():
        # Issue 11: full >= 1.0 x nginx-gateway with p99 <= 1.05 x its p99;
        # no-filter >= 1.0 x nginx-proxy and haproxy; with metrics and an
        # access log within 5 %.
        for ours, peer, goal in (("apigw-full", "nginx-gateway", ("rps", 1.0, 1.05)),
                                 ("apigw-plain", "nginx-proxy", ("rps", 1.0, None)),
                                 ("apigw-plain", "haproxy", ("rps", 1.0, None)),
                                 ("apigw-full-log", "apigw-full", ("rps", 0.95, None))):
            if ours not in per or peer not in per:
                continue
            rr, pr, cr, ur = ratios(per[ours], per[peer])
            _, want, p99_max = goal
            ok = rr >= want and (p99_max is None or pr <= p99_max)
            goal_s = (f"rps ≥ {want}×" + (f" and p99 ≤ {p99_max}×" if p99_max else "")
                      + (": met" if ok else ": not met"))
            lines.append(f"| {arr} | {conns} | {LABELS[ours]} / {peer} | {rr:.2f} | {pr:.2f} | {cr:.2f} "
                         f"| {ur:.2f} | {goal_s} |")
        # The ceiling: the TCP relay does no HTTP work at all.
        for peer in ("nginx-gateway", "nginx-proxy", "haproxy"):
            if "tcp-relay" not in per or peer not in per:
                continue
            rr, pr, cr, _ = ratios(per["tcp-relay"], per[peer])
            lines.append(f"| {arr} | {conns} | {LABELS['tcp-relay']} / {peer} | {rr:.2f} | {pr:.2f} "
                         f"| {cr:.2f} | | ceiling: no HTTP proxy exceeds this |")
        # The hyper floor does none of the gateway's work: what it reaches
        # against a peer is what any proxy on hyper + tokio reaches at most,
        # and apigw against it is what apigw's own work costs.
        for ours, peer, note in (("hyper-floor", "nginx-gateway", "ceiling for apigw full on hyper"),
                                 ("hyper-floor", "nginx-proxy", "ceiling for apigw plain on hyper"),
                                 ("hyper-floor", "haproxy", "ceiling for apigw plain on hyper"),
                                 ("apigw-plain", "hyper-floor", "apigw's own cost, no filters"),
                                 ("apigw-full", "hyper-floor", "apigw's own cost, full pipeline")):
            if ours not in per or peer not in per:
                continue
            rr, pr, cr, ur = ratios(per[ours], per[peer])
            lines.append(f"| {arr} | {conns} | {LABELS[ours]} / {peer} | {rr:.2f} | {pr:.2f} | {cr:.2f} "
                         f"| {ur:.2f} | {note} |")
    lines += budget(results)
    lines.append("")
    lines.append("The tcp relay (haproxy, mode tcp) copies bytes between each client connection and its "
                 "own backend connection without parsing HTTP: its rps is the most any proxy reaches "
                 "in that arrangement on this machine, and its CPU per request the least.")
    return "\n".join(lines)


GOALS = (("apigw-full", "nginx-gateway", 1.0), ("apigw-plain", "nginx-proxy", 1.0),
         ("apigw-plain", "haproxy", 1.0))


def budget(results):
    """What each of issue 11's rps goals leaves the proxy, in CPU per request.

    When the cores a target runs on are busy throughout (the table shows
    how busy), each request costs them the sum of what every process on
    them spends on it: in pin1 core 1 runs the proxy and the backend, so
    1 / rps = proxy + backend CPU per request; in free2 both cores run
    everything, so 2 / rps = proxy + backend + wrk. At k x the peer's rps
    the proxy is left that time minus what the others spend per request
    (the lesser of what they spent behind the peer and behind apigw in the
    same run: the most generous budget)."""
    lines = []
    for (arr, conns), per in results.items():
        for ours, peer, k in GOALS:
            if not all(t in per for t in (ours, peer, "tcp-relay")):
                continue
            if not lines:
                lines += ["", "Budget per goal: CPU per request left to the proxy when the cores it shares are "
                          "busy throughout (pin1: core 1 runs proxy + backend; free2: both cores run proxy + "
                          "backend + wrk; others = the lesser of what they spent per request behind the peer and behind "
                          "apigw). A budget under the tcp relay's CPU is out of reach for any proxy:", "",
                          "| arrangement | conns | goal | cores busy % (peer's run) | goal rps "
                          "| core µs per request at that rate | others µs/req | proxy budget µs/req "
                          "| tcp relay µs/req | peer µs/req | apigw µs/req |",
                          "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
            g, a, t = per[peer], per[ours], per["tcp-relay"]
            cpu = [x["cpu_us_per_req"] for x in (t, g, a)]
            if any(c is None for c in cpu):
                continue
            want = k * g["rps_median"]
            busy = g["core_busy_pct"]
            pinned = ARRANGEMENTS[arr][2]
            cores = [1] if pinned else list(range(len(busy)))
            # What the backend (and in free2 wrk) spent per request behind the peer and
            # behind apigw: the lesser, so the budget is the most generous one.
            others = min(x["backend_us_per_req"] + (0.0 if pinned else x["client_us_per_req"])
                         for x in (g, a))
            core_us = len(cores) * 1e6 / want
            busy_s = " / ".join(f"{busy[c]:.0f}" for c in cores if c < len(busy))
            lines.append(f"| {arr} | {conns} | {LABELS[ours]} ≥ {k} × {peer} | {busy_s} | {fmt_int(want)} | "
                         f"{core_us:.1f} | {others:.1f} | {core_us - others:.1f} | {cpu[0]:.1f} | "
                         f"{cpu[1]:.1f} | {cpu[2]:.1f} |")
    return lines


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per run instead of 10 s (debugging)")
    ap.add_argument("--telemetry", action="store_true",
                    help="also run a second apigw with the metrics listener and a file access "
                         "log on (target apigw-full-log; its rps against apigw-full, same run)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per target and connection count [3]")
    ap.add_argument("--pairs", type=int, default=20,
                    help="section logging: A/B pairs of apigw-full and apigw-full-log runs [20]")
    ap.add_argument("--duration", type=int, default=None, help="seconds per wrk run [10; 3 with --quick]")
    ap.add_argument("--warmup", type=int, default=None,
                    help="seconds of unrecorded warm-up per target and connection count [2; 1 with --quick]")
    ap.add_argument("--arrangements", default="pin1,free2", help="comma list of pin1, free2 [both]")
    ap.add_argument("--conns", default=None,
                    help="override the connection counts, e.g. 50,256 (default: pin1 50,256; free2 256)")
    ap.add_argument("--gateway-keepalive", type=int, default=1024,
                    help="upstream keepalive of nginx-gateway's temp copy [1024; shipped: 64]")
    ap.add_argument("--proxy-keepalive", type=int, default=None,
                    help="upstream keepalive of nginx-proxy (default: as shipped, 64)")
    ap.add_argument("--backend-workers", type=int, default=1, help="backend nginx workers [1]")
    ap.add_argument("--peers", default=os.path.normpath(os.path.join(REPO, "..", "shared", "peers")),
                    help="folder with backend.conf, nginx-*.conf, haproxy.cfg, wrk-report.lua")
    ap.add_argument("--apigw", default=None, help="apigw binary [$CARGO_TARGET_DIR/release/apigw]")
    ap.add_argument("--wait-idle", type=int, default=60,
                    help="before each arrangement/connection block, wait up to this many seconds for "
                         "the machine to be < 10%% busy [60]")
    ap.add_argument("--sections", default="plain,tls,h2",
                    help="comma list of plain (HTTP/1.1 table), tls (wrk over https: keep-alive and "
                         "new handshakes, apigw vs nginx-tls), h2 (h2load over TLS), logging "
                         "(--pairs back-to-back A/B runs of apigw full with and without metrics + "
                         "access log; implies --telemetry) [plain,tls,h2]")
    ap.add_argument("--hyper-floor", default=None,
                    help="hyper floor binary [$CARGO_TARGET_DIR/release/examples/hyper_floor]")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo build --release (apigw and examples/hyper_floor) first")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install")
    ap.add_argument("--results", default=os.path.join(REPO, "benches", "results"),
                    help="results root [benches/results]")
    args = ap.parse_args()

    duration = args.duration or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    arrangements = [a.strip() for a in args.arrangements.split(",") if a.strip()]
    args.sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    for x in args.sections:
        if x not in SECTIONS:
            die(f"unknown section {x!r} ({', '.join(SECTIONS)})")
    if "logging" in args.sections:
        args.telemetry = True
        if args.pairs < 6:
            die("--pairs: at least 6 (the median's 95 % interval needs them)")
    if args.telemetry:
        TARGETS.append("apigw-full-log")
    for a in arrangements:
        if a not in ARRANGEMENTS:
            die(f"unknown arrangement {a!r} (pin1, free2)")
    for f in ("backend.conf", "nginx-proxy.conf", "nginx-gateway.conf", "haproxy.cfg", "wrk-report.lua"):
        if not os.path.isfile(os.path.join(args.peers, f)):
            die(f"{f} not found in {args.peers} (--peers)")
    if os.cpu_count() < 2 and "pin1" in arrangements:
        die("pin1 needs two cores")

    ensure_tools(not args.no_install)
    warn_foreign_services()

    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    if args.apigw is None:
        args.apigw = os.path.join(target_dir, "release", "apigw")
        if not args.no_build:
            log("cargo build --release" + (f" (CARGO_TARGET_DIR={target_dir})" if "CARGO_TARGET_DIR" in os.environ else ""))
            r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
            if r.returncode != 0:
                die("cargo build --release failed")
    if args.hyper_floor is None:
        args.hyper_floor = os.path.join(target_dir, "release", "examples", "hyper_floor")
        if not args.no_build:
            log("cargo build --release --example hyper_floor")
            r = subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "hyper_floor"],
                               cwd=REPO)
            if r.returncode != 0:
                die("cargo build --release --example hyper_floor failed")
    if not os.access(args.apigw, os.X_OK):
        die(f"no apigw binary at {args.apigw}")
    if not os.access(args.hyper_floor, os.X_OK):
        die(f"no hyper floor binary at {args.hyper_floor} (cargo build --release --example hyper_floor)")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(args.results, stamp)
    os.makedirs(outdir)
    workdir = tempfile.mkdtemp(prefix="apigw-bench-")
    # Run a private copy, so a rebuild during the run cannot change the binary between arrangements.
    src_binary = args.apigw
    built = datetime.datetime.fromtimestamp(os.path.getmtime(src_binary)).strftime("%Y-%m-%d %H:%M:%S")
    args.apigw = os.path.join(workdir, "apigw")
    shutil.copy2(src_binary, args.apigw)
    floor_src = args.hyper_floor
    args.hyper_floor = os.path.join(workdir, "hyper_floor")
    shutil.copy2(floor_src, args.hyper_floor)
    git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "unknown"

    ka_proxy = args.proxy_keepalive if args.proxy_keepalive is not None else "64 (as shipped)"
    header = [
        f"apigw load benchmark {stamp} on {os.uname().nodename}, {os.cpu_count()} cores, "
        f"{args.rounds} rounds x {duration} s per target (+{warmup} s warm-up), order rotated each round",
        f"apigw: {src_binary} (built {built}, tree {git}; log warn, worker_threads = workers of the arrangement)",
        f"hyper floor: {floor_src} (examples/hyper_floor.rs: hyper 1 + tokio + mimalloc, apigw's "
        "worker and pool shape, every request forwarded untouched; workers of the arrangement)",
        f"nginx-gateway: upstream keepalive raised 64 -> {args.gateway_keepalive} in a temp copy of "
        f"nginx-gateway.conf; nginx-proxy upstream keepalive {ka_proxy}; backend {args.backend_workers} worker(s)",
        "pin1: wrk -t1 on core 0, backend and proxies pinned to core 1, 1 worker/thread each; "
        "free2: nothing pinned, wrk -t2, 2 workers/threads each",
        "apigw full = IP ACL 127.0.0.0/8 + JWT bearer + API key (quota 2e9/day) + resource policy "
        "(IP Range Deny List) + CORS (Origin sent); apigw plain = IP ACL only (separate API)",
        f"raw output: {outdir}",
    ]
    for h in header:
        log(h)

    results = {}
    tls_results = {}
    pair_results = {}
    setup = None
    all_runs = []

    def on_signal(signum, _frame):
        if setup is not None:
            setup.stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    t_start = time.time()
    try:
        for arr in arrangements:
            workers, wrk_threads, _, conn_list = ARRANGEMENTS[arr]
            if args.conns:
                conn_list = [int(c) for c in args.conns.split(",")]
            log(f"\n== {arr}: starting backend, peers and apigw")
            setup = Setup(args, arr, workdir, outdir)
            setup.start()
            if not check_targets(setup):
                setup.stop()
                setup = None
                die("a target failed its check", code=2)
            for conns in conn_list:
                if "plain" not in args.sections:
                    break
                wait_idle(args.wait_idle)
                per_runs = {t: [] for t in TARGETS}
                if warmup > 0:
                    for t in TARGETS:
                        run_wrk(args, setup, t, conns, warmup, wrk_threads)
                for rnd in range(args.rounds):
                    k = rnd % len(TARGETS)
                    order = TARGETS[k:] + TARGETS[:k]
                    for t in order:
                        raw = os.path.join(outdir, f"{arr}-c{conns}-{t}-r{rnd + 1}.txt")
                        r = run_wrk(args, setup, t, conns, duration, wrk_threads, raw)
                        r.update({"arrangement": arr, "conns": conns, "target": t, "round": rnd + 1})
                        per_runs[t].append(r)
                        all_runs.append(r)
                        cpu = "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:.1f}"
                        log(f"  {arr} c{conns} round {rnd + 1} {t:14s} {r['rps']:>10,.0f} rps "
                            f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms cpu {cpu} us/req "
                            f"errors {r['errors']} other-cpu {r['other_cpu_pct']:.0f}%")
                results[(arr, conns)] = {t: summarize(v) for t, v in per_runs.items()}
            if "logging" in args.sections:
                for conns in conn_list:
                    wait_idle(args.wait_idle)
                    pairs = logging_pairs(args, setup, arr, conns, duration, warmup, wrk_threads,
                                          outdir)
                    all_runs += [r for runs in pairs.values() for pair in runs for r in pair]
                    pair_results[(arr, conns)] = pairs
            for conns in conn_list:
                targets = []
                if "tls" in args.sections:
                    targets += TLS_TARGETS
                if "h2" in args.sections and conns == conn_list[0]:
                    targets += H2_TARGETS
                if not targets:
                    break
                wait_idle(args.wait_idle)
                per_runs = {t: [] for t in targets}

                def one(t, seconds, raw=None):
                    if t in H2_TARGETS:
                        return run_h2load(setup, t, H2_CONNS, H2_STREAMS, seconds, raw,
                                          threads=wrk_threads)
                    return run_wrk(args, setup, t, conns, seconds, wrk_threads, raw)

                if warmup > 0:
                    for t in targets:
                        if t not in H2_TARGETS:  # h2load warms up itself
                            one(t, warmup)
                for rnd in range(args.rounds):
                    k = rnd % len(targets)
                    for t in targets[k:] + targets[:k]:
                        raw = os.path.join(outdir, f"{arr}-c{conns}-{t}-r{rnd + 1}.txt")
                        r = one(t, duration, raw)
                        r.update({"arrangement": arr, "conns": conns, "target": t, "round": rnd + 1})
                        per_runs[t].append(r)
                        all_runs.append(r)
                        cpu = "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:.1f}"
                        log(f"  {arr} c{conns} round {rnd + 1} {t:14s} {r['rps']:>10,.0f} rps "
                            f"cpu {cpu} us/req errors {r['errors']} other-cpu {r['other_cpu_pct']:.0f}%")
                tls_results[(arr, conns)] = {t: summarize(v) for t, v in per_runs.items()}
            setup.stop()
            setup = None
    finally:
        if setup is not None:
            setup.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    out = table(results, args) if results else ""
    if pair_results:
        out += ("\n\n" if out else "") + pairs_table(pair_results)
    if tls_results:
        out += ("\n\n" if out else "") + "TLS and HTTP/2 (apigw bench-plain over its TLS listener vs " \
            "nginx-tls, same certificate, same run):\n\n" + tls_table(tls_results)
    log("\n" + "\n".join(header[:5]) + "\n")
    log(out)
    log(f"\ntotal {time.time() - t_start:.0f} s; raw output in {outdir}")
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write("\n".join(f"- {h}" for h in header) + "\n\nCommand: `" +
                " ".join(["python3", "benches/load.py"] + sys.argv[1:]) + "`\n\n" + out + "\n")
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump({"header": header, "runs": all_runs,
                   "summary": [{"arrangement": a, "conns": c, "target": t, **s}
                               for (a, c), per in results.items() for t, s in per.items()]},
                  f, indent=1)
    every = list(results.values()) + list(tls_results.values())
    busy = max((s["other_cpu_pct"] for per in every for s in per.values()), default=0)
    if busy >= 5:
        log(f"note: other processes used up to {busy:.0f}% of the machine's CPU during some runs "
            "(column 'other CPU %'): those numbers are disturbed")
    errors = sum(s["errors"] for per in every for s in per.values())
    if errors:
        log(f"note: {errors} errors in total (see the errors column)")


if __name__ == "__main__":
    main()
