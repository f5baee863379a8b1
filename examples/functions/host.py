#!/usr/bin/env python3
"""A small Cloud Function host for apigw (Python standard library only).

It serves handler files written to the AWS Lambda contract:

    def handler(event, context):
        return {"statusCode": 200, "headers": {...}, "body": "..."}

`POST /<name>` loads `<dir>/<name>.py` (reloaded when the file changes),
calls `handler(event, context)` with the JSON event the gateway sends (the
Lambda proxy integration event, payload format 1.0) and answers the
handler's return value as JSON. Register it with the gateway as
`{"name": ..., "url": "http://127.0.0.1:<port>/<name>"}`.

A handler that raises answers 500 (the gateway's 502 FunctionError). A
handler that returns `bytes` has them sent as they are (how the tests
produce a reply that is not JSON).

    python3 host.py [--port 9000] [--dir handlers] [--auth-header NAME=VALUE]

With `--auth-header`, calls without that header and value answer 401 (the
function's `auth_header` in the gateway). The first line printed is
`listening on <port>`.
"""

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOCK = threading.Lock()
_MODULES = {}  # name -> (mtime, module)


def load(directory, name):
    """The handler module `name`, loaded again when its file changed."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        return None
    path = os.path.join(directory, name + ".py")
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    with _LOCK:
        cached = _MODULES.get(name)
        if cached and cached[0] == mtime:
            return cached[1]
        spec = importlib.util.spec_from_file_location("fn_" + name.replace("-", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[name] = (mtime, module)
        return module


class Context:
    """The parts of the Lambda context object handlers commonly read."""

    def __init__(self, name, deadline):
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:apigw:function:" + name
        self.memory_limit_in_mb = 128
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/apigw/" + name
        self.log_stream_name = self.aws_request_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.time()) * 1000))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        auth = self.server.auth_header
        if auth and self.headers.get(auth[0]) != auth[1]:
            self.answer(401, b'{"message":"unauthorized"}')
            return
        name = self.path.split("?", 1)[0].strip("/")
        try:
            module = load(self.server.directory, name)
        except Exception:
            traceback.print_exc()
            self.answer(500, b'{"errorMessage":"handler failed to load"}')
            return
        if module is None or not hasattr(module, "handler"):
            self.answer(404, b'{"errorMessage":"no such function"}')
            return
        try:
            event = json.loads(raw)
            result = module.handler(event, Context(name, time.time() + 30))
        except Exception as e:  # the handler's own error: a 500, as a Lambda error
            traceback.print_exc()
            self.answer(500, json.dumps({"errorMessage": str(e), "errorType": type(e).__name__}).encode())
            return
        if isinstance(result, (bytes, bytearray)):
            self.answer(200, bytes(result), "application/octet-stream")
            return
        self.answer(200, json.dumps(result).encode())

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("host: " + (fmt % args) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "handlers"))
    p.add_argument("--auth-header", default=None, help="NAME=VALUE every call must carry")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.directory = args.dir
    server.verbose = args.verbose
    server.auth_header = None
    if args.auth_header:
        k, _, v = args.auth_header.partition("=")
        server.auth_header = (k, v)
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
