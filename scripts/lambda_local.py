"""The local stand-ins for AWS, shared by the local loop (scripts/local.py)
and the benchmarks (bench/run), on the Python standard library:

- one HTTP server that is both a Lambda Runtime API (the subset the Rust
  runtime uses) and the receiver of CloudFormation responses (any PUT, as to
  a pre-signed ResponseURL), optionally appending each PUT to a JSON-lines
  log and calling back; it also serves the Lambda Invoke API for
  asynchronous invocations (`InvocationType=Event`: the event is queued with a
  fresh deadline, as Lambda does), so a function that invokes itself
  (`AWS_ENDPOINT_URL_LAMBDA`) chains locally;
- `cfn_event`, a CloudFormation request; `moto_create_secret`.

Every request is time-stamped with time.perf_counter() of this process, so
the time from starting the function's process to its first
`GET /2018-06-01/runtime/invocation/next` is measured on one clock.
"""

import json
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEXT = "/2018-06-01/runtime/invocation/next"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:db-setup"


class RuntimeApi:
    """Runtime API and response receiver on 127.0.0.1:`port` (0: a free one).
    Each PUT is kept for `invoke`, appended to `log_path` as
    {"path", "content_type", "body"} and passed to `on_put`."""

    def __init__(self, port=0, log_path=None, on_put=None):
        self.pending = []  # (request id, payload, deadline ms), handed out in order
        self.generation = 0  # bumped for each new function process
        self.lock = threading.Lock()
        self.first_next = None  # perf_counter of the first GET .../next
        self.handed_out = {}  # request id -> perf_counter when the event was handed over
        self.results = {}  # request id -> (perf_counter, 'response'|'error', body)
        self.puts = {}  # ResponseURL path -> (perf_counter, body)
        self.init_error = None
        self.done = threading.Condition(self.lock)
        self.stopping = False
        self.async_timeout = 60.0  # the deadline an asynchronous invocation gets (s)
        self.async_events = []  # every event received through the Invoke API
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_GET(self):
                if self.path != NEXT:
                    return self._reply(404, b"not found")
                with api.lock:
                    if api.first_next is None:
                        api.first_next = time.perf_counter()
                    generation = api.generation
                    # Only a poll of the current process takes an event: a
                    # poll left over from a stopped process gives up instead.
                    while not api.pending and api.generation == generation and not api.stopping:
                        api.done.wait(0.5)
                    if api.generation != generation or api.stopping:
                        return self._reply(410, b"gone")
                    rid, payload, deadline_ms = api.pending.pop(0)
                    api.handed_out[rid] = time.perf_counter()
                self._reply(200, payload, {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": rid,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                })

            def do_POST(self):
                body = self._body()
                now = time.perf_counter()
                if self.path == "/2018-06-01/runtime/init/error":
                    with api.lock:
                        api.init_error = body
                        api.done.notify_all()
                    return self._reply(202, b"{}")
                if self.path.startswith("/2015-03-31/functions/") and self.path.endswith("/invocations"):
                    if self.headers.get("X-Amz-Invocation-Type") != "Event":
                        return self._reply(400, b'{"message": "only InvocationType=Event is served"}')
                    with api.lock:
                        api.async_events.append(json.loads(body))
                        deadline_ms = int(time.time() * 1000 + api.async_timeout * 1000)
                        api.pending.append((str(uuid.uuid4()), body, deadline_ms))
                        api.done.notify_all()
                    return self._reply(202, b"")
                prefix = "/2018-06-01/runtime/invocation/"
                if self.path.startswith(prefix):
                    rid, _, kind = self.path[len(prefix):].partition("/")
                    with api.lock:
                        api.results[rid] = (now, kind, body)
                        api.done.notify_all()
                    return self._reply(202, b"{}")
                self._reply(404, b"not found")

            def do_PUT(self):
                # CloudFormation's ResponseURL (direct mode).
                body = self._body()
                now = time.perf_counter()
                record = {"path": self.path, "content_type": self.headers.get("Content-Type"),
                          "body": body.decode("utf-8", "replace")}
                with api.lock:
                    api.puts[self.path] = (now, body)
                    if log_path:
                        with open(log_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                    api.done.notify_all()
                if on_put:
                    on_put(record)
                self._reply(200, b"")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client gone (the function stopped mid-poll) is not an error here

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def response_url(self):
        return f"http://127.0.0.1:{self.port}/cfn/{uuid.uuid4().hex}"

    def reset_process(self):
        """Before starting a new function process: polls of the previous one
        stop waiting, undelivered events are dropped."""
        with self.lock:
            self.generation += 1
            self.pending.clear()
            self.first_next = None
            self.init_error = None
            self.done.notify_all()

    def wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.first_next is not None or self.init_error is not None:
                    return self.first_next
            time.sleep(0.001)
        return None

    def invoke(self, event, timeout=120.0):
        """Queues `event`, waits for the function's answer. Returns a dict:
        handed_out, answered (perf_counter), kind, body, put (time, body) or None."""
        rid = str(uuid.uuid4())
        deadline_ms = int(time.time() * 1000 + timeout * 1000)
        queued = time.perf_counter()
        with self.lock:
            self.pending.append((rid, json.dumps(event).encode(), deadline_ms))
            self.done.notify_all()
        url_path = event.get("ResponseURL", "").split(f":{self.port}", 1)[-1] or None
        end = time.monotonic() + timeout
        with self.lock:
            while rid not in self.results:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the function did not answer within {timeout}s")
                self.done.wait(left)
            answered, kind, body = self.results.pop(rid)
            handed = self.handed_out.pop(rid, queued)
            put = self.puts.pop(url_path, None) if url_path else None
        return {"queued": queued, "handed_out": handed, "answered": answered, "kind": kind,
                "body": body, "put": put}

    def lambda_env(self):
        """The variables Lambda gives a function process running against this
        stand-in, its Invoke API (for a function invoking itself) included."""
        return {"AWS_LAMBDA_RUNTIME_API": self.address, "AWS_LAMBDA_FUNCTION_NAME": "db-setup",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_ENDPOINT_URL_LAMBDA": f"http://{self.address}"}

    def stop(self):
        with self.lock:
            self.stopping = True
            self.done.notify_all()
        self.server.shutdown()
        self.server.server_close()


def cfn_event(request_type, response_url, properties=None):
    event = {
        "RequestType": request_type,
        "ServiceToken": FUNCTION_ARN,
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/bench/11111111-2222-3333-4444-555555555555",
        "RequestId": f"bench-{uuid.uuid4().hex[:12]}",
        "ResourceType": "Custom::DbSetup",
        "LogicalResourceId": "DbSetup",
        "ResourceProperties": {"ServiceToken": FUNCTION_ARN, **(properties or {})},
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "db-setup-DbSetup"
        event["OldResourceProperties"] = dict(event["ResourceProperties"])
    return event


def moto_create_secret(endpoint, name, value):
    """CreateSecret on moto (which does not check signatures)."""
    req = urllib.request.Request(
        endpoint.rstrip("/") + "/",
        data=json.dumps({"Name": name, "SecretString": json.dumps(value)}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.CreateSecret",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/secretsmanager/aws4_request, "
                             "SignedHeaders=host, Signature=0",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["ARN"]
