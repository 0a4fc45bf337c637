#!/usr/bin/env python3
"""Fidelity proxy: sits between secep and the local AWS emulator (moto) and makes
it behave like real AWS where it matters for secep: latency, throttling, server
faults, and the dependency/idempotency errors that moto skips.

Run: localstack/.venv/bin/python localstack/proxy.py --upstream URL [options]
On start it prints exactly one line, ``http://127.0.0.1:PORT``, to stdout.
Everything else goes to stderr. See localstack/README.md for every option.

Only the Python 3.11 standard library, plus boto3 (installed with moto[server])
for the --strict rules, which read live state from the upstream.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime as dt
import http.client
import http.server
import json
import os
import random
import re
import signal
import sys
import threading
import time
import tomllib
import urllib.parse
import uuid
from typing import Any

ECS_PREFIX = "AmazonEC2ContainerServiceV20141113"
SD_PREFIX = "Route53AutoNaming_v20170314"
AWS_SERVICES = ("ec2", "ecs", "servicediscovery")
READ_PREFIXES = ("Describe", "List", "Get", "Discover")
THROTTLE_CLASSES = tuple(f"{s}-{k}" for s in ("ec2", "ecs", "sd") for k in ("mutating", "read"))
CLASS_PREFIX = {"ec2": "ec2", "ecs": "ecs", "servicediscovery": "sd"}
RULES = (
    "sg-referenced",  # EC2 DeleteSecurityGroup referenced by another group's rule
    "eni-in-use",  # EC2 DeleteSecurityGroup/DeleteSubnet used by live/just-deleted ECS services
    "sd-service-in-use",  # Cloud Map DeleteService with registered instances
    "sd-namespace-in-use",  # Cloud Map DeleteNamespace with services
    "cluster-contains-services",  # ECS DeleteCluster with ACTIVE/DRAINING services
    "service-idempotency",  # ECS CreateService name clash / clientToken replay
    "operation-pending",  # Cloud Map GetOperation PENDING for a while
)
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "expect",
}
# Request parameters worth showing in the call log (identifiers only, never credentials).
LOG_PARAMS = {
    "ec2": ("GroupId", "GroupName", "SubnetId", "VpcId", "CidrBlock", "AvailabilityZone",
            "InternetGatewayId", "RouteTableId", "AssociationId", "DestinationCidrBlock",
            "GatewayId", "Attribute"),
    "ecs": ("cluster", "clusterName", "serviceName", "service", "family", "taskDefinition",
            "clientToken", "desiredCount", "force", "networkConfiguration", "serviceRegistries"),
    "servicediscovery": ("Id", "Name", "NamespaceId", "ServiceId", "InstanceId",
                         "OperationId", "CreatorRequestId", "Vpc"),
}
DEFAULT_STATUS = {
    "InternalError": 500, "InternalFailure": 500, "ServerException": 500,
    "ServiceUnavailable": 503, "Unavailable": 503, "RequestLimitExceeded": 503,
    "ThrottlingException": 400,
}
MESSAGES = {
    "InternalError": "An internal error has occurred.",
    "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
}
NAMESPACE_OP = re.compile(r"^(Create|Delete|Update)\w*Namespace$")
AUTH_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")

QUIET = False


def log(msg: str) -> None:
    if not QUIET:
        sys.stderr.write(f"proxy: {msg}\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------------
# Configuration: one dict, validated by normalize(), merged by State.apply().
# ---------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "upstream": None,
    "latency_ms": 0.0,
    "latency_op": {},
    "throttle": {},
    "fault_rate": 0.0,
    "fault_seed": None,
    "fail_nth": [],
    "fail_after_nth": [],
    "rules": {r: False for r in RULES},
    "eni_linger_seconds": 0.0,
    "namespace_pending_seconds": 0.0,
    # Kill switch: SIGKILL `kill_pid` right after the Kth successful mutating answer reached it, then answer every
    # later call 503 without forwarding (so nothing the dead client had in flight reaches the upstream).
    "kill_after_mutating": None,
    "kill_pid": None,
}
STARTUP_ONLY = {"port", "call_log", "watch_pid", "quiet"}


def _num(key: str, v: Any, lo: float = 0.0, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"{key}: expected a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {v!r}") from None
    if f < lo or (hi is not None and f > hi):
        raise ValueError(f"{key}: {f} out of range")
    return f


def parse_fail_spec(key: str, spec: Any) -> dict[str, Any]:
    """'Op:N[:Code[:status]]' or {"op","n","code","status"} -> dict."""
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 4:
            raise ValueError(f"{key}: expected Op:N[:Code[:status]], got {spec!r}")
        spec = {"op": parts[0], "n": parts[1]}
        if len(parts) > 2:
            spec["code"] = parts[2]
        if len(parts) > 3:
            spec["status"] = parts[3]
    if not isinstance(spec, dict) or not spec.get("op"):
        raise ValueError(f"{key}: bad entry {spec!r}")
    try:
        n = int(spec["n"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{key}: bad N in {spec!r}") from None
    if n < 1:
        raise ValueError(f"{key}: N is 1-based, got {n}")
    code = str(spec.get("code") or "InternalError")
    status = int(spec.get("status") or DEFAULT_STATUS.get(code, 500 if "Internal" in code else 400))
    if not 400 <= status <= 599:
        raise ValueError(f"{key}: status must be 4xx/5xx, got {status}")
    return {"op": str(spec["op"]), "n": n, "code": code, "status": status}


def parse_bucket(key: str, v: Any) -> dict[str, float] | None:
    """'rate:burst' | [rate, burst] | {"rate","burst"} | null (remove)."""
    if v is None:
        return None
    if isinstance(v, str):
        parts = v.split(":")
        if len(parts) != 2:
            raise ValueError(f"{key}: expected RATE:BURST, got {v!r}")
        v = parts
    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = {"rate": v[0], "burst": v[1]}
    if not isinstance(v, dict):
        raise ValueError(f"{key}: expected RATE:BURST, got {v!r}")
    rate = _num(f"{key}.rate", v.get("rate"))
    burst = _num(f"{key}.burst", v.get("burst"))
    if burst < 1:
        raise ValueError(f"{key}: burst must be >= 1")
    return {"rate": rate, "burst": burst}


def _kv_list(key: str, v: Any) -> dict[str, Any]:
    """Accept a dict, or a list of 'K=V' strings (CLI style)."""
    if isinstance(v, dict):
        return dict(v)
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        out = {}
        for item in v:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"{key}: expected K=V, got {item!r}")
            k, _, val = item.partition("=")
            out[k.strip()] = val.strip()
        return out
    raise ValueError(f"{key}: expected a table/object, got {v!r}")


def normalize(raw: dict[str, Any], allow_startup: bool = False) -> dict[str, Any]:
    """Validate a partial config (file, CLI or admin JSON). Keys may use - or _."""
    if not isinstance(raw, dict):
        raise ValueError("config must be an object/table")
    out: dict[str, Any] = {}
    items = {str(k).replace("-", "_"): v for k, v in raw.items()}
    # strict first, so an explicit rules table can then switch single rules.
    if "strict" in items:
        s = items.pop("strict")
        if not isinstance(s, bool):
            raise ValueError("strict: expected true/false")
        out["rules"] = {r: s for r in RULES}
    for key, v in items.items():
        if key in STARTUP_ONLY:
            if not allow_startup:
                raise ValueError(f"{key}: can only be set at start-up")
            out[key] = v
        elif key == "upstream":
            if not isinstance(v, str) or not re.match(r"^https?://", v):
                raise ValueError(f"upstream: expected http(s)://HOST:PORT, got {v!r}")
            out[key] = v.rstrip("/")
        elif key in ("latency_ms", "eni_linger_seconds", "namespace_pending_seconds"):
            out[key] = _num(key, v)
        elif key == "fault_rate":
            out[key] = _num(key, v, 0.0, 1.0)
        elif key == "fault_seed":
            out[key] = None if v is None else int(v)
        elif key in ("kill_after_mutating", "kill_pid"):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{key}: expected a positive integer or null, got {v!r}")
            out[key] = v
        elif key == "latency_op":
            out[key] = {op: (None if ms is None else _num(f"latency_op.{op}", ms))
                        for op, ms in _kv_list(key, v).items()}
        elif key == "throttle":
            table = {}
            for cls, b in _kv_list(key, v).items():
                cls = cls.replace("_", "-")
                if cls not in THROTTLE_CLASSES:
                    raise ValueError(f"throttle: unknown class {cls!r} (one of {', '.join(THROTTLE_CLASSES)})")
                table[cls] = parse_bucket(f"throttle.{cls}", b)
            out[key] = table
        elif key in ("fail_nth", "fail_after_nth"):
            specs = v if isinstance(v, list) else [v]
            out[key] = [parse_fail_spec(key, s) for s in specs]
        elif key == "rules":
            if isinstance(v, list):
                v = {name: True for name in v}
            if not isinstance(v, dict):
                raise ValueError("rules: expected {name: bool}")
            rules = out.setdefault("rules", {})
            for name, on in v.items():
                name = str(name).replace("_", "-")
                if name not in RULES:
                    raise ValueError(f"rules: unknown rule {name!r} (one of {', '.join(RULES)})")
                rules[name] = bool(on)
        else:
            raise ValueError(f"unknown config key {key!r}")
    return out


# ---------------------------------------------------------------------------
# Request classification
# ---------------------------------------------------------------------------

_EC2_OPS: frozenset[str] | None = None


def ec2_operations() -> frozenset[str]:
    """EC2 action names from botocore's model (only needed for unsigned requests)."""
    global _EC2_OPS
    if _EC2_OPS is None:
        try:
            import botocore.session

            _EC2_OPS = frozenset(botocore.session.get_session().get_service_model("ec2").operation_names)
        except Exception:  # pragma: no cover - botocore always ships with moto
            _EC2_OPS = frozenset()
    return _EC2_OPS


class Call:
    """What the proxy understood about one request."""

    def __init__(self) -> None:
        self.service = "other"
        self.operation: str | None = None
        self.protocol: str | None = None  # ec2 | query | json | cbor | None
        self.region = "us-east-1"
        self.access_key = "test"
        self.params: dict[str, Any] = {}

    @property
    def mutating(self) -> bool | None:
        if not self.operation:
            return None
        return not self.operation.startswith(READ_PREFIXES)

    @property
    def throttle_class(self) -> str | None:
        if self.service not in CLASS_PREFIX or not self.operation:
            return None
        return f"{CLASS_PREFIX[self.service]}-{'mutating' if self.mutating else 'read'}"

    def log_params(self) -> dict[str, Any]:
        keys = LOG_PARAMS.get(self.service, ())
        # Structures are logged as present, not spelt out: a test checks which fields a call sent.
        return {k: "<set>" if isinstance(self.params[k], (dict, list)) else self.params[k] for k in keys if k in self.params}


def classify(method: str, path: str, headers: Any, body: bytes) -> Call:
    c = Call()
    scope_service = None
    m = AUTH_RE.search(headers.get("Authorization", "") or "")
    if m:
        c.access_key, c.region, scope_service = m.group(1), m.group(3), m.group(4)
    target = headers.get("X-Amz-Target")
    if target:
        prefix, _, op = target.partition(".")
        c.operation = op or None
        c.protocol = "json"
        c.service = {ECS_PREFIX: "ecs", SD_PREFIX: "servicediscovery"}.get(prefix, "other")
        try:
            p = json.loads(body or b"{}")
            c.params = p if isinstance(p, dict) else {}
        except ValueError:
            c.params = {}
        return c
    form: dict[str, str] = {}
    ctype = (headers.get("Content-Type") or "").lower()
    if method == "POST" and (ctype.startswith("application/x-www-form-urlencoded") or (not ctype and body[:7] == b"Action=")):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    if "Action" not in form:
        query = urllib.parse.urlsplit(path).query
        if "Action=" in query:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
    if "Action" in form:
        c.operation = form["Action"]
        c.params = form
        is_ec2 = scope_service == "ec2" or (scope_service is None and c.operation in ec2_operations())
        c.service = "ec2" if is_ec2 else "other"
        c.protocol = "ec2" if is_ec2 else "query"
        return c
    # smithy rpc-v2-cbor (newer SDKs can prefer it for Cloud Map): classified for
    # the log only; its body is CBOR, so it is always passed through untouched.
    m = re.match(r"^/service/([^/]+)/operation/([^/?]+)", path)
    if m:
        c.protocol = "cbor"
        c.operation = m.group(2)
        c.service = {ECS_PREFIX: "ecs", SD_PREFIX: "servicediscovery"}.get(m.group(1), "other")
    return c


# ---------------------------------------------------------------------------
# Error responses in each protocol's real shape
# ---------------------------------------------------------------------------

Response = tuple[int, list[tuple[str, str]], bytes]


def error_response(call: Call, code: str, message: str, status: int) -> Response:
    rid = str(uuid.uuid4())
    if call.protocol == "ec2":
        # EC2 query error: <Response><Errors><Error>...</Errors><RequestID>
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{_xml(code)}</Code><Message>{_xml(message)}</Message></Error></Errors>"
            f"<RequestID>{rid}</RequestID></Response>"
        ).encode()
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    if call.protocol == "query":
        err_type = "Receiver" if status >= 500 else "Sender"
        body = (
            f'<ErrorResponse xmlns="https://aws.amazon.com/"><Error><Type>{err_type}</Type><Code>{_xml(code)}</Code>'
            f"<Message>{_xml(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        ).encode()
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body
    # JSON 1.1 (ECS, Cloud Map, and anything else with X-Amz-Target).
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)], body


def _xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_response(obj: Any, status: int = 200, ctype: str = "application/json") -> Response:
    return status, [("Content-Type", ctype)], json.dumps(obj, default=str).encode()


def wire_json(obj: Any) -> Any:
    """boto3 output -> AWS JSON wire form (timestamps as epoch seconds)."""
    if isinstance(obj, dict):
        return {k: wire_json(v) for k, v in obj.items() if k != "ResponseMetadata"}
    if isinstance(obj, list):
        return [wire_json(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return obj.timestamp()
    return obj


class RuleViolation(Exception):
    def __init__(self, rule: str, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.rule, self.code, self.message, self.status = rule, code, message, status


class Replay(Exception):
    """A strict rule answers the call itself with a success (idempotent replay)."""

    def __init__(self, rule: str, response: Response):
        super().__init__(rule)
        self.rule, self.response = rule, response


# ---------------------------------------------------------------------------
# State: config + counters + token buckets + memory for the strict rules
# ---------------------------------------------------------------------------


class State:
    def __init__(self, startup: dict[str, Any], call_log: str | None):
        self.lock = threading.Lock()
        self.startup = startup
        self.cfg: dict[str, Any] = {}
        self.counts: dict[str, collections.Counter] = {}
        self.buckets: dict[str, list[float]] = {}
        self.rng = random.Random()
        self.calls: collections.deque = collections.deque(maxlen=100_000)
        self.log_file = open(call_log, "a", encoding="utf-8") if call_log else None
        self.deleted_services: list[dict[str, Any]] = []  # {"ids": set, "ts": float, "arn": str}
        self.service_tokens: dict[tuple, str | None] = {}  # (region, cluster, name) -> clientToken
        self.pending_ops: dict[str, float] = {}  # Cloud Map operation id -> first seen
        self.clients: dict[tuple, Any] = {}
        self.kill_count = 0  # successful mutating answers since the kill switch was armed
        self.tripped: int | None = None  # the pid killed: every later call is refused unforwarded
        self.reset_to_startup()

    # -- config ------------------------------------------------------------
    def reset_to_startup(self) -> None:
        self.cfg = copy.deepcopy(DEFAULTS)
        self._merge(copy.deepcopy(self.startup), initial=True)

    def _merge(self, part: dict[str, Any], initial: bool = False) -> None:
        for key, v in part.items():
            if key in STARTUP_ONLY:
                continue
            if key in ("latency_op", "throttle", "rules"):
                table = self.cfg[key]
                for k, val in v.items():
                    if val is None:
                        table.pop(k, None)
                    else:
                        table[k] = val
            else:
                self.cfg[key] = v
        # Reset the counters of what changed (all of them at start-up).
        if initial or "fail_nth" in part:
            self.counts["fail_nth"] = collections.Counter()
        if initial or "fail_after_nth" in part:
            self.counts["fail_after_nth"] = collections.Counter()
        if initial or "throttle" in part:
            now = time.monotonic()
            self.buckets = {cls: [b["burst"], now] for cls, b in self.cfg["throttle"].items()}
        if initial or "fault_rate" in part or "fault_seed" in part:
            self.rng = random.Random(self.cfg["fault_seed"])
        if initial or "kill_after_mutating" in part or "kill_pid" in part:  # (re-)arming starts a new count
            self.kill_count = 0
            self.tripped = None

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        reset = raw.pop("reset", False)
        part = normalize(raw)
        with self.lock:
            if reset:
                self.reset_to_startup()
                self.deleted_services.clear()
                self.pending_ops.clear()
            self._merge(part)
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        snap = copy.deepcopy(self.cfg)
        snap["counters"] = {k: dict(v) for k, v in self.counts.items()}
        snap["buckets"] = {k: round(v[0], 3) for k, v in self.buckets.items()}
        return snap

    def rule_on(self, name: str) -> bool:
        return bool(self.cfg["rules"].get(name))

    # -- per-call decisions (under the lock, in call order) ------------------
    def decide(self, call: Call) -> tuple[tuple[str, str, int] | None, dict[str, Any] | None]:
        """-> (injected error (kind, code, status) or None, fail-after spec or None)."""
        if not call.operation or call.protocol == "cbor":
            return None, None
        op = call.operation
        with self.lock:
            hit: dict[str, dict[str, Any] | None] = {}
            for kind in ("fail_nth", "fail_after_nth"):  # every call counts, even if then failed
                specs = [s for s in self.cfg[kind] if s["op"] == op]
                if specs:
                    self.counts[kind][op] += 1
                    hit[kind] = next((s for s in specs if s["n"] == self.counts[kind][op]), None)
            nth = hit.get("fail_nth")
            if nth:
                return ("fail-nth", nth["code"], nth["status"]), None
            after = hit.get("fail_after_nth")
            if call.service not in AWS_SERVICES:
                return None, after
            cls = call.throttle_class
            bucket_cfg = self.cfg["throttle"].get(cls) if cls else None
            if bucket_cfg:
                b = self.buckets.setdefault(cls, [bucket_cfg["burst"], time.monotonic()])
                now = time.monotonic()
                b[0] = min(bucket_cfg["burst"], b[0] + (now - b[1]) * bucket_cfg["rate"])
                b[1] = now
                if b[0] < 1.0:
                    if call.service == "ec2":
                        return ("throttle", "RequestLimitExceeded", 503), None
                    # Cloud Map documents RequestLimitExceeded for DiscoverInstances only.
                    code = "RequestLimitExceeded" if op == "DiscoverInstances" else "ThrottlingException"
                    return ("throttle", code, 400), None
                b[0] -= 1.0
            rate = self.cfg["fault_rate"]
            if rate > 0 and self.rng.random() < rate:
                code, status = self.rng.choice((("InternalError", 500), ("ServiceUnavailable", 503)))
                return ("fault", code, status), None
            return None, after

    def count_for_kill(self, call: "Call", status: int) -> int | None:
        """Counts a successful mutating answer; -> the pid to kill once it is sent, when this is the Kth."""
        with self.lock:
            k, pid = self.cfg["kill_after_mutating"], self.cfg["kill_pid"]
            if not k or not pid or self.tripped or call.mutating is not True or not 200 <= status < 300:
                return None
            self.kill_count += 1
            if self.kill_count < k:
                return None
            self.tripped = pid
            return pid

    # -- call log -----------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, default=str)
        with self.lock:
            self.calls.append(line)
            if self.log_file:
                self.log_file.write(line + "\n")
                self.log_file.flush()

    # -- boto3 clients against the upstream --------------------------------
    def client(self, service: str, call: Call) -> Any:
        key = (service, call.region, call.access_key, self.cfg["upstream"])
        with self.lock:
            cli = self.clients.get(key)
        if cli is None:
            import boto3
            from botocore.config import Config

            cli = boto3.session.Session().client(
                service,
                region_name=call.region,
                endpoint_url=self.cfg["upstream"],
                aws_access_key_id=call.access_key,
                aws_secret_access_key="test",
                config=Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    proxies={},  # never an env proxy: upstream is local
                    inject_host_prefix=False,
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
            with self.lock:
                self.clients[key] = cli
        return cli


# ---------------------------------------------------------------------------
# Strict rules (checks before forwarding; bookkeeping after)
# ---------------------------------------------------------------------------


def _ecs_services(ecs: Any, cluster: str) -> list[dict[str, Any]]:
    arns: list[str] = []
    for page in ecs.get_paginator("list_services").paginate(cluster=cluster):
        arns += page.get("serviceArns", [])
    out = []
    for i in range(0, len(arns), 10):
        out += ecs.describe_services(cluster=cluster, services=arns[i:i + 10]).get("services", [])
    return out


def _awsvpc_ids(svc: dict[str, Any]) -> set[str]:
    cfg = (svc.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    return set(cfg.get("subnets") or []) | set(cfg.get("securityGroups") or [])


def _short(name_or_arn: str) -> str:
    return name_or_arn.rsplit("/", 1)[-1]


def check_rules(state: State, call: Call) -> None:
    """Raise RuleViolation / Replay when real AWS would not do what moto does."""
    op, p = call.operation, call.params
    svc = call.service
    if svc == "ec2" and op in ("DeleteSecurityGroup", "DeleteSubnet"):
        res_id = p.get("GroupId") if op == "DeleteSecurityGroup" else p.get("SubnetId")
        if op == "DeleteSecurityGroup" and not res_id and p.get("GroupName"):
            try:
                groups = state.client("ec2", call).describe_security_groups(GroupNames=[p["GroupName"]])
                res_id = groups["SecurityGroups"][0]["GroupId"]
            except Exception:
                res_id = None
        if not res_id:
            return
        if op == "DeleteSecurityGroup" and state.rule_on("sg-referenced"):
            ec2 = state.client("ec2", call)
            for page in ec2.get_paginator("describe_security_groups").paginate():
                for g in page.get("SecurityGroups", []):
                    if g["GroupId"] == res_id:
                        continue  # a group may reference itself
                    for perm in g.get("IpPermissions", []) + g.get("IpPermissionsEgress", []):
                        if any(pair.get("GroupId") == res_id for pair in perm.get("UserIdGroupPairs", [])):
                            raise RuleViolation("sg-referenced", "DependencyViolation",
                                                f"resource {res_id} has a dependent object")
        if state.rule_on("eni-in-use"):
            blocking = _eni_blocker(state, call, res_id)
            if blocking:
                log(f"eni-in-use: {res_id} blocked by {blocking}")
                if op == "DeleteSecurityGroup":
                    raise RuleViolation("eni-in-use", "DependencyViolation", f"resource {res_id} has a dependent object")
                raise RuleViolation("eni-in-use", "DependencyViolation",
                                    f"The subnet '{res_id}' has dependencies and cannot be deleted.")
    elif svc == "ecs" and op == "DeleteCluster" and state.rule_on("cluster-contains-services"):
        cluster = p.get("cluster") or "default"
        try:
            services = _ecs_services(state.client("ecs", call), cluster)
        except Exception:
            return  # e.g. ClusterNotFoundException: let the upstream answer
        if any(s.get("status") in ("ACTIVE", "DRAINING") for s in services):
            raise RuleViolation("cluster-contains-services", "ClusterContainsServicesException",
                                "The Cluster cannot be deleted while Services are active.")
    elif svc == "ecs" and op == "CreateService" and state.rule_on("service-idempotency"):
        cluster = p.get("cluster") or "default"
        name = p.get("serviceName")
        if not name:
            return
        ecs = state.client("ecs", call)
        try:
            existing = ecs.describe_services(cluster=cluster, services=[name]).get("services", [])
        except Exception:
            return
        existing = [s for s in existing if s.get("status") in ("ACTIVE", "DRAINING")]
        if not existing:
            return
        if existing[0]["status"] == "DRAINING":
            raise RuleViolation("service-idempotency", "InvalidParameterException",
                                "Unable to Start a service that is still Draining.")
        key = (call.region, _short(cluster), name)
        token = p.get("clientToken")
        with state.lock:
            known = state.service_tokens.get(key, KeyError)
        if token and known == token:
            body = json.dumps({"service": wire_json(existing[0])}).encode()
            raise Replay("service-idempotency", (200, [("Content-Type", "application/x-amz-json-1.1"),
                                                       ("x-amzn-RequestId", str(uuid.uuid4()))], body))
        raise RuleViolation("service-idempotency", "InvalidParameterException",
                            "Creation of service was not idempotent.")
    elif svc == "servicediscovery" and op == "DeleteService" and state.rule_on("sd-service-in-use"):
        try:
            inst = state.client("servicediscovery", call).list_instances(ServiceId=p.get("Id", ""), MaxResults=1)
        except Exception:
            return
        if inst.get("Instances"):
            raise RuleViolation("sd-service-in-use", "ResourceInUse",
                                "Service contains registered instances; delete the instances before deleting the service")
    elif svc == "servicediscovery" and op == "DeleteNamespace" and state.rule_on("sd-namespace-in-use"):
        ns_id = p.get("Id", "")
        sd = state.client("servicediscovery", call)
        try:
            res = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id], "Condition": "EQ"}])
            # moto 5.2.5 ignores ListServices filters and lists every namespace's services: keep this one's only.
            in_namespace = [s for s in res.get("Services", [])
                            if sd.get_service(Id=s["Id"])["Service"].get("NamespaceId") == ns_id]
        except Exception:
            return
        if in_namespace:
            raise RuleViolation("sd-namespace-in-use", "ResourceInUse",
                                "Namespace has associated services; delete the services before deleting the namespace")


def _eni_blocker(state: State, call: Call, res_id: str) -> str | None:
    """Who still holds a (Fargate) ENI in this subnet/group, if anyone."""
    ecs = state.client("ecs", call)
    try:
        clusters: list[str] = []
        for page in ecs.get_paginator("list_clusters").paginate():
            clusters += page.get("clusterArns", [])
        for cl in clusters:
            for s in _ecs_services(ecs, cl):
                if s.get("status") in ("ACTIVE", "DRAINING") and res_id in _awsvpc_ids(s):
                    return f"{s.get('status')} service {s.get('serviceArn')}"
    except Exception as e:  # upstream hiccup: do not invent an error
        log(f"eni-in-use: could not list ECS services: {e}")
    linger = state.cfg["eni_linger_seconds"]
    if linger > 0:
        now = time.time()
        with state.lock:
            for rec in state.deleted_services:
                if res_id in rec["ids"] and now - rec["ts"] < linger:
                    return f"ENIs of service {rec['arn']} deleted {now - rec['ts']:.1f} s ago"
    return None


def before_forward(state: State, call: Call) -> dict[str, Any]:
    """Bookkeeping that needs the state *before* the call is forwarded."""
    memo: dict[str, Any] = {}
    if call.service == "ecs" and call.operation == "DeleteService" and state.rule_on("eni-in-use"):
        try:
            svcs = state.client("ecs", call).describe_services(
                cluster=call.params.get("cluster") or "default", services=[call.params.get("service", "")]
            ).get("services", [])
            if svcs:
                memo["deleted_service"] = {"ids": _awsvpc_ids(svcs[0]), "arn": svcs[0].get("serviceArn")}
        except Exception as e:
            log(f"eni-in-use: could not describe service before delete: {e}")
    return memo


def after_forward(state: State, call: Call, memo: dict[str, Any], resp: Response) -> tuple[Response, str | None]:
    """Bookkeeping after a forwarded call; may rewrite the response."""
    status, headers, body = resp
    if status != 200:
        return resp, None
    op, p = call.operation, call.params
    if call.service == "ecs" and op == "DeleteService" and "deleted_service" in memo:
        rec = dict(memo["deleted_service"], ts=time.time())
        with state.lock:
            state.deleted_services.append(rec)
    elif call.service == "ecs" and op == "CreateService" and p.get("serviceName"):
        # Remember the token even with the rule off, so it can be switched on later.
        with state.lock:
            state.service_tokens[(call.region, _short(p.get("cluster") or "default"), p["serviceName"])] = p.get("clientToken")
    elif call.service == "servicediscovery" and op and NAMESPACE_OP.match(op):
        try:
            op_id = json.loads(body).get("OperationId")
        except ValueError:
            op_id = None
        if op_id:
            with state.lock:
                state.pending_ops.setdefault(op_id, time.time())
    elif call.service == "servicediscovery" and op == "GetOperation" and state.rule_on("operation-pending"):
        pending = state.cfg["namespace_pending_seconds"]
        with state.lock:
            first = state.pending_ops.get(p.get("OperationId", ""))
        if pending > 0 and first is not None and time.time() - first < pending:
            try:
                doc = json.loads(body)
                operation = doc["Operation"]
            except (ValueError, KeyError, TypeError):
                return resp, None
            if operation.get("Status") == "SUCCESS":
                operation["Status"] = "PENDING"
                operation["UpdateDate"] = operation.get("CreateDate", operation.get("UpdateDate"))
                return (status, headers, json.dumps(doc).encode()), "rule:operation-pending"
    return resp, None


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


def forward(upstream: str, method: str, path: str, headers: Any, body: bytes) -> Response:
    u = urllib.parse.urlsplit(upstream)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port, timeout=120)
    try:
        base = u.path.rstrip("/")
        conn.putrequest(method, base + path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            if k.lower() not in HOP_BY_HOP:
                conn.putheader(k, v)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body or None)
        r = conn.getresponse()
        data = r.read()
        out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP]
        return r.status, out, data
    finally:
        conn.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Rust SDK expects
    # Headers and body are two writes: with Nagle on, the body waits for the client's delayed ACK (40 ms on Linux),
    # which added 40 ms to every call, more than the emulator itself takes.
    disable_nagle_algorithm = True
    server_version = "secep-fidelity-proxy"
    state: State  # set on the class by main()
    verbose = False

    def log_message(self, fmt: str, *args: Any) -> None:  # silence http.server's own log
        if self.verbose:
            log(fmt % args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, resp: Response) -> None:
        status, headers, body = resp
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _handle(self) -> None:
        t0 = time.monotonic()
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send((400, [("Content-Type", "text/plain")], b"proxy: bad request body\n"))
            return
        if self.path.startswith("/_proxy/"):
            self._send(self._admin(body))
            return
        state = self.state
        call = classify(self.command, self.path, self.headers, body)
        injected: str | None = None
        error_code: str | None = None

        # 1. latency: sleeps in this handler thread only, so concurrent calls overlap.
        with state.lock:
            cfg_lat = state.cfg["latency_op"].get(call.operation or "", state.cfg["latency_ms"])
        if cfg_lat and cfg_lat > 0:
            time.sleep(cfg_lat / 1000.0)
            injected = "latency"

        resp: Response | None = None
        # 2.-3. fail-nth, throttling, random faults: answered here, not forwarded.
        decision, after = state.decide(call)
        if decision:
            kind, error_code, status = decision
            msg = "Request limit exceeded." if call.service == "ec2" and kind == "throttle" else (
                "Rate exceeded" if kind == "throttle" else
                MESSAGES.get(error_code, f"{error_code} injected by the fidelity proxy."))
            resp, injected = error_response(call, error_code, msg, status), kind

        memo: dict[str, Any] = {}
        if resp is None and call.service in AWS_SERVICES and call.protocol != "cbor":
            # 4. strict rules, checked against live upstream state.
            try:
                check_rules(state, call)
                memo = before_forward(state, call)
            except RuleViolation as v:
                resp, injected, error_code = error_response(call, v.code, v.message, v.status), f"rule:{v.rule}", v.code
            except Replay as r:
                resp, injected = r.response, f"rule:{r.rule}"
            except Exception as e:  # a broken check must not break the call
                log(f"strict check for {call.operation} failed, forwarding anyway: {e!r}")

        if resp is None and state.tripped is not None:
            error_code, injected = "ServiceUnavailable", "killed"
            resp = error_response(call, error_code, "the fidelity proxy killed its client; refused unforwarded", 503)
        if resp is None:
            try:
                resp = forward(state.cfg["upstream"], self.command, self.path, self.headers, body)
            except (OSError, http.client.HTTPException) as e:
                resp = (502, [("Content-Type", "text/plain")], f"proxy: upstream {state.cfg['upstream']} failed: {e}\n".encode())
                error_code = "UpstreamUnreachable"
            else:
                if call.service in AWS_SERVICES and call.protocol != "cbor":
                    try:
                        resp, rewritten = after_forward(state, call, memo, resp)
                        injected = rewritten or injected
                    except Exception as e:
                        log(f"post-processing {call.operation} failed: {e!r}")
                # fail-after-nth: the upstream did the work, the client hears a failure.
                if after and 200 <= resp[0] < 300:
                    error_code = after["code"]
                    resp = error_response(call, error_code, MESSAGES.get(error_code, f"{error_code} injected by the fidelity proxy."), after["status"])
                    injected = "fail-after-nth"

        # Logged before the response is sent: a client that has its answer always finds the call in the log
        # (logging afterwards let a fast reader of GET /_proxy/calls miss the call it had just made).
        entry = {
            "ts": time.time(),
            "service": call.service,
            "operation": call.operation,
            "status": resp[0],
            "latency_ms": round((time.monotonic() - t0) * 1000.0, 1),
            "mutating": call.mutating,
            "injected": injected,
            "params": call.log_params(),
        }
        kill = state.count_for_kill(call, resp[0])
        if kill:
            entry["killed"] = kill
        if injected and injected != "latency" and error_code:
            entry["error"] = error_code
        elif error_code == "UpstreamUnreachable":
            entry["error"] = error_code
        state.record(entry)
        if self.verbose or (injected and injected != "latency"):
            log(f"{call.service} {call.operation} -> {resp[0]} {injected or ''} {entry.get('error', '')}".rstrip())
        self._send(resp)
        if kill:
            try:
                os.kill(kill, signal.SIGKILL)
                log(f"killed pid {kill} after mutating answer #{self.state.kill_count}")
            except OSError as e:
                log(f"kill_pid {kill}: {e}")

    def _admin(self, body: bytes) -> Response:
        state = self.state
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        if path == "/_proxy/health":
            return json_response({"ok": True, "upstream": state.cfg["upstream"]})
        if path == "/_proxy/config" and self.command == "GET":
            with state.lock:
                return json_response(state.snapshot())
        if path == "/_proxy/config" and self.command == "POST":
            try:
                raw = json.loads(body or b"{}")
                snap = state.apply(raw)
            except ValueError as e:  # includes json.JSONDecodeError
                return json_response({"error": str(e)}, 400)
            log(f"config changed: {json.dumps(raw)}")
            return json_response(snap)
        if path == "/_proxy/calls" and self.command == "GET":
            with state.lock:
                text = "".join(line + "\n" for line in state.calls)
            return 200, [("Content-Type", "application/x-ndjson")], text.encode()
        if path == "/_proxy/calls/clear" and self.command == "POST":
            with state.lock:
                state.calls.clear()
            return json_response({"cleared": True})
        return json_response({"error": f"no admin endpoint {self.command} {path}"}, 404)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up before its answer (a killed secep, a test's timeout) is expected: the call is
        # already in the log. Anything else still prints its traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="AWS fidelity proxy in front of moto (see localstack/README.md)")
    ap.add_argument("--upstream", help="emulator URL, e.g. http://127.0.0.1:4566")
    ap.add_argument("--port", type=int, help="listen port on 127.0.0.1 (default 4567; 0 = pick a free one)")
    ap.add_argument("--config", help="TOML file with the same keys as POST /_proxy/config")
    ap.add_argument("--latency-ms", type=float, help="delay added to every call")
    ap.add_argument("--latency-op", action="append", metavar="OP=MS", help="per-operation delay (repeatable)")
    ap.add_argument("--throttle", action="append", metavar="CLASS=RATE:BURST",
                    help=f"token bucket per class ({', '.join(THROTTLE_CLASSES)}); repeatable")
    ap.add_argument("--fault-rate", type=float, help="fraction of calls answered 500 InternalError / 503 ServiceUnavailable")
    ap.add_argument("--fault-seed", type=int, help="seed for --fault-rate (deterministic per call order)")
    ap.add_argument("--fail-nth", action="append", metavar="OP:N[:CODE[:STATUS]]",
                    help="fail exactly the Nth call of OP, not forwarded (repeatable)")
    ap.add_argument("--fail-after-nth", action="append", metavar="OP:N[:CODE[:STATUS]]",
                    help="forward the Nth call of OP, then answer an error (lost response; repeatable)")
    ap.add_argument("--strict", action="store_true", default=None, help="enable every strict AWS rule")
    ap.add_argument("--rule", action="append", metavar="NAME", help=f"enable one rule ({', '.join(RULES)})")
    ap.add_argument("--no-rule", action="append", metavar="NAME", help="disable one rule (after --strict)")
    ap.add_argument("--eni-linger-seconds", type=float, help="deleted ECS services block their subnets/SGs this long")
    ap.add_argument("--namespace-pending-seconds", type=float, help="Cloud Map namespace operations stay PENDING this long")
    ap.add_argument("--call-log", help="append one JSON line per call to this file")
    ap.add_argument("--watch-pid", type=int, help="exit when process PID exits")
    ap.add_argument("--verbose", "-v", action="store_true", help="log every call to stderr")
    ap.add_argument("--quiet", "-q", action="store_true", help="log nothing but fatal errors")
    return ap


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if args.config:
        with open(args.config, "rb") as f:
            raw.update(tomllib.load(f))
    cli: dict[str, Any] = {}
    for key in ("upstream", "port", "latency_ms", "fault_rate", "fault_seed", "eni_linger_seconds",
                "namespace_pending_seconds", "call_log", "watch_pid"):
        v = getattr(args, key)
        if v is not None:
            cli[key] = v
    if args.latency_op:
        cli["latency_op"] = args.latency_op
    if args.throttle:
        cli["throttle"] = args.throttle
    if args.fail_nth:
        cli["fail_nth"] = args.fail_nth
    if args.fail_after_nth:
        cli["fail_after_nth"] = args.fail_after_nth
    # File first, then the command line on top.
    merged = normalize(raw, allow_startup=True)
    over = normalize(cli, allow_startup=True)
    for key in ("latency_op", "throttle"):
        if key in over and key in merged:
            merged[key].update(over.pop(key))
    merged.update(over)
    rules = merged.setdefault("rules", {})
    if args.strict:
        rules.update({r: True for r in RULES})
    for name in args.rule or []:
        rules.update(normalize({"rules": [name]})["rules"])
    for name in args.no_rule or []:
        rules.update({k: False for k in normalize({"rules": [name]})["rules"]})
    return merged


def watch(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log(f"watched PID {pid} is gone; exiting")
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    global QUIET
    args = build_parser().parse_args(argv)
    QUIET = bool(args.quiet)
    try:
        startup = config_from_args(args)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as e:
        sys.stderr.write(f"proxy: config error: {e}\n")
        return 2
    if not startup.get("upstream"):
        sys.stderr.write("proxy: --upstream URL (or upstream in --config) is required\n")
        return 2
    port = int(startup.get("port", 4567))
    state = State(startup, startup.get("call_log"))
    Handler.state = state
    Handler.verbose = bool(args.verbose)
    try:
        server = Server(("127.0.0.1", port), Handler)
    except OSError as e:
        sys.stderr.write(f"proxy: cannot listen on 127.0.0.1:{port}: {e}\n")
        return 1
    if startup.get("watch_pid"):
        threading.Thread(target=watch, args=(int(startup["watch_pid"]),), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with state.lock:
        on = [r for r, v in state.cfg["rules"].items() if v]
    log(f"listening on {url}, upstream {state.cfg['upstream']}, rules on: {', '.join(on) or 'none'}")
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
