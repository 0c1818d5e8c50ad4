#!/usr/bin/env python3
"""A small fault-injecting HTTP proxy for tests against moto (python3 stdlib only).

    scripts/fault-proxy.py --upstream http://127.0.0.1:MOTO_PORT [--listen-port 0]
        [--throttle 0.2] [--error5xx 0.1] [--error5xx-after 0.0] [--fail-first N [--fail-first-actions A,B]] [--seed N]
        [--only-actions RunInstances,DescribeInstances] [--max-seconds 3600] [--log FILE]
        [--lose-first N --lose-first-actions A,B] [--no-idempotency]

For a share of the requests it answers the way EC2 does when it throttles (HTTP 503, EC2 XML
error `RequestLimitExceeded`) or fails inside (HTTP 500, `InternalError`), without passing the
request on; with --error5xx-after it passes the request on and then throws moto's answer away and
answers 500 (the call took effect but the client cannot know: what a retry with the same
ClientToken must survive); --fail-first N throttles the first N requests of every Action, or,
for RunInstances, of every node it launches (enough to outlast an SDK's own retries,
deterministically); --lose-first N passes the first N requests of each of
--lose-first-actions on and answers 500 (each of those calls took effect once and lost its
answer, deterministically: what a create without a ClientToken must survive). A node is named, for a gantry batch (one call for several nodes), by
`gantry-cluster`, `gantry-pool` and each index in `gantry-batch-indices`, else by the launch's
`Name` tag; a call that names no node counts per ClientToken. A launch goes through once every node in it
has been refused N times, however the launches are grouped and regrouped across retries (a new
batch has a new ClientToken: counting per token would refuse every regrouping N times again).
Every other request is forwarded verbatim (method, path, headers, body) and moto's response
relayed.

moto stores RunInstances' ClientToken but does not honour it; EC2 does (a repeated call with the
same token returns the first call's reservation instead of launching again). Unless
--no-idempotency is given, the proxy emulates that: it remembers the answer of every successful
RunInstances by ClientToken and replays it for a repeat.

The error bodies are EC2's query-protocol shape, the one moto itself sends and botocore's
EC2QueryParser and the Rust SDK's ec2_query error parser read:
    <Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
    <RequestID>..</RequestID></Response>
botocore's _retry.json retries ec2 `RequestLimitExceeded` with status 503; the Rust SDK classifies
`RequestLimitExceeded` as a throttling error and 500/503 as transient.

Requests under /moto-api/ are never faulted. GET /__fault-proxy/stats answers JSON counters,
with `fail_first_seen`: requests seen per --fail-first key (`Action`, `RunInstances:NODE` or
`RunInstances:TOKEN`).
It prints its port on stdout once listening, one line per injected fault on stderr (or --log),
and exits when the process that started it exits or after --max-seconds. It listens on
127.0.0.1 only and forwards only to a loopback upstream.
"""

import argparse
import http.client
import ipaddress
import json
import os
import random
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}

THROTTLE = (503, "Service Unavailable", "RequestLimitExceeded", "Request limit exceeded.")
INTERNAL = (
    500,
    "Internal Server Error",
    "InternalError",
    "An internal error has occurred. Retry your request, but if the problem persists, "
    "contact us with details by posting a message on the AWS forums.",
)


def ec2_error_body(code, message, request_id):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response><Errors><Error>"
        f"<Code>{code}</Code><Message>{message}</Message>"
        f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()


class State:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.counts = {
            "requests": 0,
            "forwarded": 0,
            "throttled": 0,
            "errors5xx": 0,
            "errors5xx_after": 0,
            "replayed": 0,
            "upstream_errors": 0,
        }
        self.by_action = {}
        self.tokens = {}  # ClientToken -> (status, reason, headers, body)
        self.seen = {}  # Action, or RunInstances:NODE / RunInstances:TOKEN -> requests so far
        self.only = {a for a in (args.only_actions or "").split(",") if a}
        self.first_only = {a for a in (args.fail_first_actions or "").split(",") if a}
        self.lose_only = {a for a in (args.lose_first_actions or "").split(",") if a}
        self.lost = {}  # Action -> answers lost so far (--lose-first)
        self.log = open(args.log, "a", buffering=1) if args.log else sys.stderr

    def bump(self, key, action):
        with self.lock:
            self.counts[key] += 1
            if action:
                per = self.by_action.setdefault(action, {})
                per[key] = per.get(key, 0) + 1

    def decide(self, action, members=()):
        """None, 'throttle', '5xx' or '5xx-after'. `members`: what --fail-first counts for this
        call (the nodes a RunInstances launches, or its ClientToken); else the Action."""
        if self.only and action not in self.only:
            return None
        a = self.args
        keys = [f"{action}:{m}" for m in members] or [action]
        with self.lock:
            # Refused until every node in the call has been refused N times.
            seen = min(self.seen.get(k, 0) for k in keys)
            for k in keys:
                self.seen[k] = self.seen.get(k, 0) + 1
            if seen < a.fail_first and (not self.first_only or action in self.first_only):
                return "throttle"
            if action in self.lose_only and self.lost.get(action, 0) < a.lose_first:
                self.lost[action] = self.lost.get(action, 0) + 1
                return "5xx-after"
            r = self.rng.random()
        if r < a.throttle:
            return "throttle"
        if r < a.throttle + a.error5xx:
            return "5xx"
        if r < a.throttle + a.error5xx + a.error5xx_after:
            return "5xx-after"
        return None

    def note(self, what, action):
        with self.lock:
            c = dict(self.counts)
        print(
            f"fault-proxy: {time.strftime('%H:%M:%S')} {what} {action or '-'} "
            f"(throttled {c['throttled']}, 5xx {c['errors5xx']}, 5xx-after {c['errors5xx_after']}, "
            f"forwarded {c['forwarded']}, requests {c['requests']})",
            file=self.log,
            flush=True,
        )


def launched_nodes(form, token):
    """What --fail-first counts for a RunInstances: the nodes of a gantry batch
    (`gantry-cluster`-`gantry-pool`-INDEX for each index in `gantry-batch-indices`), else the
    node its instance `Name` tag names, else its ClientToken."""
    tags = {}
    i = 1
    while f"TagSpecification.{i}.ResourceType" in form:
        if form[f"TagSpecification.{i}.ResourceType"][0] == "instance":
            j = 1
            while f"TagSpecification.{i}.Tag.{j}.Key" in form:
                key = form[f"TagSpecification.{i}.Tag.{j}.Key"][0]
                tags[key] = (form.get(f"TagSpecification.{i}.Tag.{j}.Value") or [""])[0]
                j += 1
        i += 1
    # A batch first: its `Name` may be a placeholder until each instance is named.
    cluster, pool = tags.get("gantry-cluster"), tags.get("gantry-pool")
    indices = [x.strip() for x in tags.get("gantry-batch-indices", "").split(",") if x.strip()]
    if cluster and pool and indices:
        return [f"{cluster}-{pool}-{x}" for x in indices]
    if tags.get("Name"):
        return [tags["Name"]]
    return [token] if token else []


def make_handler(state, upstream_host, upstream_port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fault-proxy"
        sys_version = ""

        def log_message(self, fmt, *args):  # quiet: faults are logged by State.note
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def send(self, status, reason, headers, body):
            self.send_response_only(status, reason)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server"):
                    self.send_header(k, v)
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()

        def fault(self, kind, action):
            status, reason, code, message = THROTTLE if kind == "throttle" else INTERNAL
            rid = str(uuid.uuid4())
            self.send(
                status,
                reason,
                [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)],
                ec2_error_body(code, message, rid),
            )

        def forward(self, body):
            conn = http.client.HTTPConnection(upstream_host, upstream_port, timeout=120)
            try:
                headers = {}
                for k, v in self.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        headers[k] = v
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            finally:
                conn.close()

        def handle_any(self):
            body = self.read_body()
            if self.path.startswith("/__fault-proxy/stats"):
                with state.lock:
                    out = json.dumps(
                        {**state.counts, "by_action": state.by_action, "fail_first_seen": state.seen}
                    ).encode()
                self.send(200, "OK", [("Content-Type", "application/json")], out)
                return
            form = {}
            ctype = self.headers.get("Content-Type", "")
            if "x-www-form-urlencoded" in ctype or self.command == "POST":
                try:
                    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                except ValueError:
                    form = {}
            if not form and "?" in self.path:
                form = urllib.parse.parse_qs(self.path.split("?", 1)[1])
            action = (form.get("Action") or [""])[0]
            token = (form.get("ClientToken") or [""])[0] if action == "RunInstances" else ""
            state.bump("requests", action)
            members = launched_nodes(form, token) if action == "RunInstances" else []
            kind = None if self.path.startswith("/moto-api") else state.decide(action, members)
            if kind in ("throttle", "5xx"):
                state.bump("throttled" if kind == "throttle" else "errors5xx", action)
                state.note("injected " + ("RequestLimitExceeded/503" if kind == "throttle" else "InternalError/500"), action)
                self.fault(kind, action)
                return
            if token and not state.args.no_idempotency:
                with state.lock:
                    cached = state.tokens.get(token)
                if cached:
                    state.bump("replayed", action)
                    state.note(f"replayed RunInstances for ClientToken {token}", action)
                    self.send(*cached)
                    return
            try:
                status, reason, headers, data = self.forward(body)
            except (OSError, http.client.HTTPException) as e:
                state.bump("upstream_errors", action)
                state.note(f"upstream failed ({e}); answering 502", action)
                self.send(502, "Bad Gateway", [("Content-Type", "text/plain")], str(e).encode())
                return
            state.bump("forwarded", action)
            if token and status == 200 and not state.args.no_idempotency:
                with state.lock:
                    state.tokens.setdefault(token, (status, reason, headers, data))
            if kind == "5xx-after":
                state.bump("errors5xx_after", action)
                state.note("forwarded, then answered InternalError/500", action)
                self.fault("5xx", action)
                return
            self.send(status, reason, headers, data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any

    return Handler


def watchdog(parent, deadline, server):
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            print("fault-proxy: parent exited; stopping", file=sys.stderr, flush=True)
            break
        if time.monotonic() > deadline:
            print("fault-proxy: --max-seconds reached; stopping", file=sys.stderr, flush=True)
            break
    server.shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000 (loopback only)")
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--throttle", type=float, default=0.0, help="share answered 503 RequestLimitExceeded")
    p.add_argument("--error5xx", type=float, default=0.0, help="share answered 500 InternalError")
    p.add_argument(
        "--error5xx-after",
        type=float,
        default=0.0,
        help="share forwarded, then answered 500 InternalError (the call took effect)",
    )
    p.add_argument(
        "--fail-first",
        type=int,
        default=0,
        help="throttle the first N requests of every (faultable) Action, or, for RunInstances, "
        "of every node it launches (Name tag or gantry batch tags; else ClientToken), then go random",
    )
    p.add_argument(
        "--fail-first-actions",
        default="",
        help="comma-separated Actions --fail-first applies to (default: all)",
    )
    p.add_argument(
        "--lose-first",
        type=int,
        default=0,
        help="forward the first N requests of each --lose-first-actions Action, then answer 500",
    )
    p.add_argument("--lose-first-actions", default="", help="comma-separated Actions for --lose-first")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only-actions", default="", help="comma-separated Actions to fault (default: all)")
    p.add_argument("--no-idempotency", action="store_true", help="do not emulate RunInstances ClientToken")
    p.add_argument("--max-seconds", type=float, default=3600)
    p.add_argument("--log", default=None, help="append fault lines here instead of stderr")
    a = p.parse_args()
    if a.throttle + a.error5xx + a.error5xx_after > 1:
        p.error("--throttle + --error5xx + --error5xx-after must be at most 1")
    u = urllib.parse.urlsplit(a.upstream)
    if u.scheme != "http" or not u.hostname or not u.port:
        p.error("--upstream must be http://HOST:PORT")
    host = "127.0.0.1" if u.hostname == "localhost" else u.hostname
    try:
        if not ipaddress.ip_address(host).is_loopback:
            p.error("--upstream must be a loopback address")
    except ValueError:
        p.error("--upstream must be a loopback IP address or localhost")

    state = State(a)
    server = ThreadingHTTPServer(("127.0.0.1", a.listen_port), make_handler(state, host, u.port))
    server.daemon_threads = True
    threading.Thread(
        target=watchdog, args=(os.getppid(), time.monotonic() + a.max_seconds, server), daemon=True
    ).start()
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with state.lock:
            print(f"fault-proxy: done {json.dumps(state.counts)}", file=state.log, flush=True)


if __name__ == "__main__":
    main()
