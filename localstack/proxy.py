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
import hashlib
import http.client
import http.server
import json
import math
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
# ELBv2 speaks awsQuery under the SigV4 scope `elasticloadbalancing`, which classic ELB shares: its Version tells them
# apart. Logged as service `elbv2`.
ELBV2_VERSION = "2015-12-01"
ELBV2_XMLNS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
AWS_SERVICES = ("ec2", "ecs", "servicediscovery", "elbv2")
READ_PREFIXES = ("Describe", "List", "Get", "Discover")
THROTTLE_CLASSES = tuple(f"{s}-{k}" for s in ("ec2", "ecs", "sd", "elbv2") for k in ("mutating", "read"))
CLASS_PREFIX = {"ec2": "ec2", "ecs": "ecs", "servicediscovery": "sd", "elbv2": "elbv2"}
RULES = (
    "sg-referenced",  # EC2 DeleteSecurityGroup referenced by another group's rule
    "eni-in-use",  # EC2 DeleteSecurityGroup/DeleteSubnet used by live/just-deleted ECS services
    "sd-service-in-use",  # Cloud Map DeleteService with registered instances
    "sd-namespace-in-use",  # Cloud Map DeleteNamespace with services
    "cluster-contains-services",  # ECS DeleteCluster with ACTIVE/DRAINING services
    "service-idempotency",  # ECS CreateService name clash / clientToken replay
    "operation-pending",  # Cloud Map GetOperation PENDING for a while
    "teardown-edges",  # EC2 ReleaseAddress of an address already released through the proxy -> AuthFailure (401)
    # ELBv2 internet-facing CreateLoadBalancer needs an IGW; ECS loadBalancers need a target group that an LB uses
    "lb-rules",
    # EC2 DeleteSecurityGroup/DeleteSubnet/DetachInternetGateway held by a live load balancer, and by a deleted one's
    # ENIs for lb_eni_linger_seconds
    "lb-eni-linger",
    # AWS's clock: each acts only while its duration knob (CLOCK below) is > 0.
    "id-propagation",  # a new EC2 id is NotFound for a while
    "linked-role-propagation",  # a new ECS service-linked role cannot be assumed for a while
    "role-propagation",  # a new IAM role cannot be passed/assumed for a while
    "endpoint-pending",  # interface endpoints pending; their ENIs linger after delete
    "nat-pending",  # NAT gateways pending / deleting
    "rollout",  # ECS deployments take time and can fail
)
# AWS's clock: duration knob -> (what AWS takes, in seconds; the rule it drives). With clock_scale F > 0, a knob not
# set explicitly is AWS's duration x F. Sources (shared/notes/real-aws.md; README "AWS's clock"):
CLOCK: dict[str, tuple[float, str]] = {
    # EC2 eventual consistency (docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html)
    "id_propagation_seconds": (2.0, "id-propagation"),
    # new ECS service-linked role (guidance-for-claude-code-with-amazon-bedrock#251)
    "linked_role_seconds": (10.0, "linked-role-propagation"),
    # new execution role (terraform-aws-modules/terraform-aws-ecs#414, pulumi/pulumi-awsx#927)
    "role_propagation_seconds": (10.0, "role-propagation"),
    # interface endpoints pending "a minute or two" (aws/copilot-cli#5927)
    "endpoint_pending_seconds": (90.0, "endpoint-pending"),
    # Cloud Map namespace operations take tens of seconds (GetOperation SUBMITTED -> PENDING -> SUCCESS)
    "namespace_pending_seconds": (45.0, "operation-pending"),
    # NAT gateways take minutes to be available / deleted (shared/notes/real-aws.md)
    "nat_pending_seconds": (120.0, "nat-pending"),
    # ECS rollouts take minutes (aws/containers-roadmap#1246, amazon-ecs-deploy-task-definition#191)
    "rollout_seconds": (120.0, "rollout"),
    # ENIs of just-stopped Fargate tasks (terraform-provider-aws#9495)
    "eni_linger_seconds": (60.0, "eni-in-use"),
    # a deleted load balancer's ENIs "can take a while to go away (some minutes)" (terraform-provider-aws#40)
    "lb_eni_linger_seconds": (120.0, "lb-eni-linger"),
}
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
            "clientToken", "desiredCount", "force", "networkConfiguration", "serviceRegistries", "loadBalancers",
            "healthCheckGracePeriodSeconds"),
    "servicediscovery": ("Id", "Name", "NamespaceId", "ServiceId", "InstanceId",
                         "OperationId", "CreatorRequestId", "Vpc"),
    "elbv2": ("Name", "LoadBalancerArn", "TargetGroupArn", "ListenerArn", "RuleArn", "Scheme", "Type", "TargetType",
              "Protocol", "Port", "VpcId"),
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
IAM_OPS = frozenset({"CreateRole", "AttachRolePolicy", "CreateServiceLinkedRole"})
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
    # Duration knobs: None = not set explicitly (AWS's duration x clock_scale, or 0 = off without a scale).
    **{knob: None for knob in CLOCK},
    "clock_scale": 0.0,
    "unpullable_images": ["unpullable"],  # image substrings whose pull fails (rollout): markers for tests
    # image substrings whose tasks start but fail their load balancer's health checks (rollout, services with
    # loadBalancers only): markers for tests
    "unhealthy_images": ["unhealthy"],
    # Kill switch: SIGKILL `kill_pid` right after the Kth successful mutating answer reached it, then answer every
    # later call 503 without forwarding (so nothing the dead client had in flight reaches the upstream).
    "kill_after_mutating": None,
    "kill_pid": None,
    # An account-level CloudWatch Logs retention (days): DescribeLogGroups reports it for every group, whatever
    # PutRetentionPolicy set (shared/notes/real-aws.md, "Partitions, names, quotas, permissions").
    "logs_account_retention_days": None,
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
        elif key in CLOCK:
            out[key] = None if v is None else _num(key, v)  # null: back to the scaled default
        elif key in ("latency_ms", "clock_scale"):
            out[key] = _num(key, v)
        elif key in ("unpullable_images", "unhealthy_images"):
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(m, str) and m for m in v):
                raise ValueError(f"{key}: expected a list of non-empty strings, got {v!r}")
            out[key] = list(v)
        elif key == "fault_rate":
            out[key] = _num(key, v, 0.0, 1.0)
        elif key == "fault_seed":
            out[key] = None if v is None else int(v)
        elif key in ("kill_after_mutating", "kill_pid", "logs_account_retention_days"):
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
        self.scope: str | None = None  # the SigV4 credential scope's service
        self.params: dict[str, Any] = {}

    @property
    def iam(self) -> bool:
        """IAM (logged as `other`): only its role calls feed the propagation rules."""
        if self.protocol != "query":
            return False
        return self.scope == "iam" or (self.scope is None and self.operation in IAM_OPS)

    @property
    def ruled(self) -> bool:
        """Whether the strict rules look at this call at all."""
        return (self.service in AWS_SERVICES and self.protocol != "cbor") or self.iam

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
        c.scope = scope_service
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
        is_elbv2 = scope_service == "elasticloadbalancing" and form.get("Version") == ELBV2_VERSION
        c.service = "ec2" if is_ec2 else "elbv2" if is_elbv2 else "other"
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


def s3_operation(call: Call, method: str, path: str) -> str | None:
    """The S3 REST operation of a call, for the log only (S3 calls stay unclassified for the rules and the kill
    count): path-style /bucket[/key][?sub-resource]."""
    if call.scope != "s3":
        return None
    parts = urllib.parse.urlsplit(path)
    has_key = "/" in parts.path.strip("/")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if not has_key:
        for sub, op in (("location", "GetBucketLocation"), ("versioning", "GetBucketVersioning"),
                        ("versions", "ListObjectVersions")):
            if sub in query and method == "GET":
                return op
        return {"GET": "ListObjectsV2", "HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(method)
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method)


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
        xmlns = ELBV2_XMLNS if call.service == "elbv2" else "https://aws.amazon.com/"
        body = (
            f'<ErrorResponse xmlns="{xmlns}"><Error><Type>{err_type}</Type><Code>{_xml(code)}</Code>'
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
        # What keeps the strict checks cheap on an emulator that holds many stacks: the ECS clusters created through
        # this proxy, per (region, access key), and each Cloud Map service's namespace (it never changes).
        self.seen_clusters: dict[tuple[str, str], set[str]] = {}
        self.sd_namespace_of: dict[str, str] = {}
        self.service_tokens: dict[tuple, str | None] = {}  # (region, cluster, name) -> clientToken
        self.pending_ops: dict[str, float] = {}  # Cloud Map operation id -> first seen
        self.released_allocations: set[tuple[str, str, str]] = set()  # (region, access key, AllocationId) released
        self.clock = Clock()  # what the AWS's-clock rules remember
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
                self.seen_clusters.clear()
                self.sd_namespace_of.clear()
                self.pending_ops.clear()
                self.released_allocations.clear()
                self.clock = Clock()
            self._merge(part)
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        snap = copy.deepcopy(self.cfg)
        # Duration knobs as they act (explicit, or AWS's x clock_scale); which ones were set explicitly.
        snap.update({knob: self.knob(knob) for knob in CLOCK})
        snap["knobs_explicit"] = sorted(k for k in CLOCK if self.cfg[k] is not None)
        snap["counters"] = {k: dict(v) for k, v in self.counts.items()}
        snap["buckets"] = {k: round(v[0], 3) for k, v in self.buckets.items()}
        return snap

    def rule_on(self, name: str) -> bool:
        return bool(self.cfg["rules"].get(name))

    def knob(self, key: str) -> float:
        """A duration knob's seconds: explicit, else AWS's duration x clock_scale, else 0 (off)."""
        v = self.cfg[key]
        if v is not None:
            return v
        return CLOCK[key][0] * self.cfg["clock_scale"]

    def timed(self, rule: str, knob: str) -> float:
        """The window of a clock rule when it is on and its knob > 0, else 0."""
        return self.knob(knob) if self.rule_on(rule) else 0.0

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
                    if call.service == "elbv2":  # ELB's own code, as botocore's retry handler knows it
                        return ("throttle", "Throttling", 400), None
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


# moto 5.2.5 keeps "include TAGS" of DescribeServices in a class-level dict shared by all requests: a describe without
# it, concurrent with one that asks for tags, strips the other's tags. The proxy's own describes always ask for them.
def _ecs_services(ecs: Any, cluster: str) -> list[dict[str, Any]]:
    arns: list[str] = []
    for page in ecs.get_paginator("list_services").paginate(cluster=cluster):
        arns += page.get("serviceArns", [])
    out = []
    for i in range(0, len(arns), 10):
        out += ecs.describe_services(cluster=cluster, services=arns[i:i + 10], include=["TAGS"]).get("services", [])
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
    if svc == "ecs" and op in ("CreateService", "UpdateService") and p.get("loadBalancers") \
            and state.rule_on("lb-rules"):
        _check_target_groups(state, call)
    if svc == "elbv2" and op == "CreateLoadBalancer" and state.rule_on("lb-rules"):
        _check_internet_gateway(state, call)
    elif svc == "ec2" and op == "DetachInternetGateway" and state.rule_on("lb-eni-linger"):
        # An internet-facing load balancer's ENIs hold public addresses in the VPC (and linger after its delete).
        vpc = p.get("VpcId", "")
        holder = _lb_holder(state, call, lambda lb: lb["vpc"] == vpc and lb["scheme"] == "internet-facing")
        if vpc and holder:
            log(f"lb-eni-linger: detaching {p.get('InternetGatewayId')} from {vpc} blocked by {holder}")
            raise RuleViolation("lb-eni-linger", "DependencyViolation", IGW_MAPPED.format(vpc))
    elif svc == "ec2" and op in ("DeleteSecurityGroup", "DeleteSubnet"):
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
            # Only groups of the same VPC can reference it here (no peering): one page, not the whole emulator.
            try:
                own = ec2.describe_security_groups(GroupIds=[res_id])["SecurityGroups"]
                scope = {"Filters": [{"Name": "vpc-id", "Values": [own[0]["VpcId"]]}]} if own else {}
            except Exception:
                scope = {}
            for page in ec2.get_paginator("describe_security_groups").paginate(**scope):
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
        if state.rule_on("lb-eni-linger"):
            holder = _lb_holder(state, call, lambda lb: res_id in lb["subnets"] or res_id in lb["groups"])
            if holder:
                log(f"lb-eni-linger: {res_id} blocked by {holder}")
                if op == "DeleteSecurityGroup":
                    raise RuleViolation("lb-eni-linger", "DependencyViolation", f"resource {res_id} has a dependent object")
                raise RuleViolation("lb-eni-linger", "DependencyViolation",
                                    f"The subnet '{res_id}' has dependencies and cannot be deleted.")
    elif svc == "ec2" and op == "ReleaseAddress" and state.rule_on("teardown-edges"):
        # AWS hands a released address back to the pool; releasing it again fails AuthFailure once another account
        # holds it. The proxy answers the worst case for every AllocationId it saw released successfully. No upstream
        # call: a set look-up. (DeleteRouteTable with subnet associations needs no rule: moto 5.2.5 already answers
        # DependencyViolation "The routeTable 'rtb-…' has dependencies and cannot be deleted.", as AWS does.)
        alloc = p.get("AllocationId")
        with state.lock:
            released = bool(alloc) and (call.region, call.access_key, alloc) in state.released_allocations
        if released:
            raise RuleViolation("teardown-edges", "AuthFailure", AUTH_FAILURE_MSG, 401)
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
            existing = ecs.describe_services(cluster=cluster, services=[name], include=["TAGS"]).get("services", [])
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
        # ECS tasks (rollout model) hold their instances: running ones, and for a while those of a deleted service.
        if _registry_holders(state, call, p.get("Id", ""))[0]:
            raise RuleViolation("sd-service-in-use", "ResourceInUse",
                                "Service contains registered instances; delete the instances before deleting the service")
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
            # moto 5.2.5 ignores ListServices filters and lists every namespace's services: keep this one's only
            # (each service's namespace is read once and remembered).
            in_namespace = [s for s in res.get("Services", []) if _sd_namespace(state, sd, s["Id"]) == ns_id]
        except Exception:
            return
        if in_namespace:
            raise RuleViolation("sd-namespace-in-use", "ResourceInUse",
                                "Namespace has associated services; delete the services before deleting the namespace")


AUTH_FAILURE_MSG = "You do not have permission to access the specified resource."


def _sd_namespace(state: State, sd: Any, service_id: str) -> str | None:
    with state.lock:
        known = state.sd_namespace_of.get(service_id)
    if known is None:
        known = sd.get_service(Id=service_id)["Service"].get("NamespaceId")
        with state.lock:
            state.sd_namespace_of[service_id] = known
    return known


def _eni_blocker(state: State, call: Call, res_id: str) -> str | None:
    """Who still holds a (Fargate) ENI in this subnet/group, if anyone."""
    ecs = state.client("ecs", call)
    try:
        # The live clusters created through this proxy, once it has seen any (even if all are deleted since); else
        # every cluster the emulator lists (the stack was made through another endpoint).
        with state.lock:
            known = state.seen_clusters.get((call.region, call.access_key))
            clusters: list[str] = sorted(known) if known is not None else []
        if known is None:
            for page in ecs.get_paginator("list_clusters").paginate():
                clusters += page.get("clusterArns", [])
            # moto lists deleted clusters too (INACTIVE): only the live ones can hold tasks (100 per describe).
            live = []
            for i in range(0, len(clusters), 100):
                described = ecs.describe_clusters(clusters=clusters[i:i + 100]).get("clusters", [])
                live += [c["clusterArn"] for c in described if c.get("status") == "ACTIVE"]
            clusters = live
        for cl in clusters:
            for s in _ecs_services(ecs, cl):
                if s.get("status") in ("ACTIVE", "DRAINING") and res_id in _awsvpc_ids(s):
                    return f"{s.get('status')} service {s.get('serviceArn')}"
    except Exception as e:  # upstream hiccup: do not invent an error
        log(f"eni-in-use: could not list ECS services: {e}")
    linger = state.knob("eni_linger_seconds")
    if linger > 0:
        now = time.time()
        with state.lock:
            for rec in state.deleted_services:
                if res_id in rec["ids"] and now - rec["ts"] < linger:
                    return f"ENIs of service {rec['arn']} deleted {now - rec['ts']:.1f} s ago"
    return None


# -- load balancers (lb-rules, lb-eni-linger) ------------------------------------

TG_NO_LB = "The target group with targetGroupArn {} does not have an associated load balancer."
IGW_MAPPED = ("Network {} has some mapped public address(es). Please unmap those public address(es) before detaching "
              "the gateway.")


def _error_code(e: Exception) -> str | None:
    return (getattr(e, "response", None) or {}).get("Error", {}).get("Code")


def _lb_subnets(params: dict[str, Any]) -> list[str]:
    """A CreateLoadBalancer/SetSubnets request's subnets: Subnets.member.N, or SubnetMappings.member.N.SubnetId."""
    pat = re.compile(r"^SubnetMappings\.member\.(\d+)\.SubnetId$")
    mapped = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pat.match(k)))
    return _indexed(params, "Subnets.member") + [v for _, v in mapped]


def _check_internet_gateway(state: State, call: Call) -> None:
    # An internet-facing load balancer (the default scheme) needs an internet gateway attached to its VPC; moto does
    # not check (gateway load balancers have no scheme).
    p = call.params
    if p.get("Type") == "gateway" or (p.get("Scheme") or "internet-facing") != "internet-facing":
        return
    subnets = _lb_subnets(p)
    if not subnets:
        return
    ec2 = state.client("ec2", call)
    try:
        vpcs = sorted({s["VpcId"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]})
        bare = [v for v in vpcs if not ec2.describe_internet_gateways(
            Filters=[{"Name": "attachment.vpc-id", "Values": [v]}])["InternetGateways"]]
    except Exception:
        return  # e.g. an unknown subnet: let the upstream answer
    if bare:
        raise RuleViolation("lb-rules", "InvalidSubnet", f"VPC {bare[0]} has no internet gateway")


def _check_target_groups(state: State, call: Call) -> None:
    # ECS registers tasks only in a target group that a load balancer uses (a listener or rule forwards to it).
    for ref in call.params.get("loadBalancers") or []:
        arn = ref.get("targetGroupArn") if isinstance(ref, dict) else None
        if arn and _tg_has_lb(state, call, arn) is False:
            raise RuleViolation("lb-rules", "InvalidParameterException", TG_NO_LB.format(arn))


def _tg_has_lb(state: State, call: Call, tg_arn: str) -> bool | None:
    """Whether a live load balancer uses the target group; None when the upstream cannot tell (unknown group)."""
    elb = state.client("elbv2", call)
    try:
        groups = elb.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"]
    except Exception:
        return None
    # moto keeps a deleted load balancer's ARN in LoadBalancerArns (once per listener/rule): check that each lives.
    for lb_arn in dict.fromkeys(a for g in groups for a in g.get("LoadBalancerArns") or []):
        try:
            if elb.describe_load_balancers(LoadBalancerArns=[lb_arn])["LoadBalancers"]:
                return True
        except Exception as e:
            if _error_code(e) != "LoadBalancerNotFound":
                return None
    # moto adds a load balancer to LoadBalancerArns on CreateListener/CreateRule only, never on ModifyListener or
    # ModifyRule: a listener moved to the group counts too (the live load balancers seen through the proxy).
    with state.lock:
        seen = [arn for arn, lb in state.clock.lbs.items() if lb["deleted"] is None and lb["region"] == call.region]
    for lb_arn in seen:
        try:
            for listener in elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
                actions = list(listener.get("DefaultActions") or [])
                for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
                    actions += rule.get("Actions") or []
                if any(_forwards_to(a, tg_arn) for a in actions):
                    return True
        except Exception as e:
            if _error_code(e) not in ("LoadBalancerNotFound", "ListenerNotFound"):
                return None
    return False


def _forwards_to(action: dict[str, Any], tg_arn: str) -> bool:
    weighted = ((action.get("ForwardConfig") or {}).get("TargetGroups") or [])
    return action.get("TargetGroupArn") == tg_arn or any(t.get("TargetGroupArn") == tg_arn for t in weighted)


def _lb_record(call: Call, scheme: str | None, vpc: str | None, subnets: list[str],
               groups: list[str]) -> dict[str, Any]:
    return {"region": call.region, "scheme": scheme or "internet-facing", "vpc": vpc, "subnets": set(subnets),
            "groups": set(groups), "deleted": None}


def _lb_holder(state: State, call: Call, uses: Any) -> str | None:
    """A load balancer that holds what uses(lb) tests: a live one, or one deleted less than lb_eni_linger_seconds ago
    (its ENIs linger). Only those seen through the proxy: no scan of the emulator."""
    linger, now = state.knob("lb_eni_linger_seconds"), time.time()
    with state.lock:
        for arn, lb in state.clock.lbs.items():
            if lb["region"] != call.region or not uses(lb):
                continue
            if lb["deleted"] is None:
                return f"load balancer {arn}"
            if now - lb["deleted"] < linger:
                return f"ENIs of load balancer {arn} deleted {now - lb['deleted']:.1f} s ago"
    return None


def before_forward(state: State, call: Call) -> dict[str, Any]:
    """Bookkeeping that needs the state *before* the call is forwarded."""
    memo: dict[str, Any] = {}
    if call.service == "ecs" and call.operation == "DeleteService" and state.rule_on("eni-in-use"):
        try:
            svcs = state.client("ecs", call).describe_services(
                cluster=call.params.get("cluster") or "default", services=[call.params.get("service", "")],
                include=["TAGS"],
            ).get("services", [])
            if svcs:
                memo["deleted_service"] = {"ids": _awsvpc_ids(svcs[0]), "arn": svcs[0].get("serviceArn")}
        except Exception as e:
            log(f"eni-in-use: could not describe service before delete: {e}")
    if call.service == "elbv2" and call.operation == "DeleteLoadBalancer" and state.rule_on("lb-eni-linger"):
        # One the proxy did not see created (another endpoint, or a reset since): read it now, so its ENIs linger.
        arn = call.params.get("LoadBalancerArn", "")
        with state.lock:
            known = arn in state.clock.lbs
        if arn and not known:
            try:
                lb = state.client("elbv2", call).describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]
                rec = _lb_record(call, lb.get("Scheme"), lb.get("VpcId"),
                                 [z["SubnetId"] for z in lb.get("AvailabilityZones") or [] if z.get("SubnetId")],
                                 lb.get("SecurityGroups") or [])
                with state.lock:
                    state.clock.lbs.setdefault(arn, rec)
            except Exception as e:
                log(f"lb-eni-linger: could not describe load balancer before delete: {e}")
    return memo


def account_log_retention(state: State, call: Call, resp: Response) -> Response:
    """An account-level Logs retention: DescribeLogGroups reports it for every group."""
    days = state.cfg.get("logs_account_retention_days")
    if not days or resp[0] != 200 or call.scope != "logs" or call.operation != "DescribeLogGroups":
        return resp
    try:
        out = json.loads(resp[2])
    except ValueError:
        return resp
    for group in out.get("logGroups", []):
        group["retentionInDays"] = days
    return resp[0], resp[1], json.dumps(out).encode()


def after_forward(state: State, call: Call, memo: dict[str, Any], resp: Response) -> tuple[Response, str | None]:
    """Bookkeeping after a forwarded call; may rewrite the response."""
    status, headers, body = resp
    if status != 200:
        return resp, None
    op, p = call.operation, call.params
    if call.service == "ecs" and op in ("CreateCluster", "CreateService", "DeleteCluster"):
        cluster = _short(p.get("clusterName") or p.get("cluster") or "default")
        with state.lock:
            seen = state.seen_clusters.setdefault((call.region, call.access_key), set())
            if op == "DeleteCluster":
                seen.discard(cluster)
            else:
                seen.add(cluster)
    elif call.service == "servicediscovery" and op == "CreateService":
        try:
            made = json.loads(body).get("Service", {})
            if made.get("Id") and made.get("NamespaceId"):
                with state.lock:
                    state.sd_namespace_of[made["Id"]] = made["NamespaceId"]
        except ValueError:
            pass
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
        pending = state.knob("namespace_pending_seconds")
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
    if call.service == "ec2" and op == "ReleaseAddress" and p.get("AllocationId"):
        # Remembered even with teardown-edges off, so it can be switched on later (as CreateService's clientToken).
        with state.lock:
            state.released_allocations.add((call.region, call.access_key, p["AllocationId"]))
    if call.service == "ecs" and op in ("CreateService", "UpdateService", "DeleteService", "DescribeServices"):
        resp = grace_period(state, call, resp)
    return after_clock(state, call, memo, resp)


def grace_period(state: State, call: Call, resp: Response) -> Response:
    """moto drops healthCheckGracePeriodSeconds on CreateService (it keeps an UpdateService's): remember the request's
    and put it back in CreateService and DescribeServices answers while the service lives. Rule or no rule."""
    op, p = call.operation, call.params
    with state.lock:
        if op == "DescribeServices" and not state.clock.grace:
            return resp
    try:
        doc = json.loads(resp[2])
    except ValueError:
        return resp
    services = (doc.get("services") or []) if op == "DescribeServices" else [doc.get("service") or {}]
    changed = False
    with state.lock:
        for s in services:
            key = _service_key(call, s)
            if op == "DeleteService" or (op == "CreateService" and "healthCheckGracePeriodSeconds" not in p):
                state.clock.grace.pop(key, None)
                continue
            if op != "DescribeServices" and "healthCheckGracePeriodSeconds" in p:
                state.clock.grace[key] = p["healthCheckGracePeriodSeconds"]
            known = state.clock.grace.get(key)
            live = s.get("status") in ("ACTIVE", "DRAINING")
            if known is not None and live and "healthCheckGracePeriodSeconds" not in s:
                s["healthCheckGracePeriodSeconds"] = known
                changed = True
    return _json_body(resp, doc) if changed else resp


# ---------------------------------------------------------------------------
# AWS's clock: propagation windows, pending states and ECS rollouts (README "AWS's clock")
# ---------------------------------------------------------------------------

# EC2 id prefix -> the NotFound error AWS answers to a call naming an id that has not propagated yet.
ID_NOT_FOUND = {
    "vpc": ("InvalidVpcID.NotFound", "The vpc ID '{}' does not exist"),
    "subnet": ("InvalidSubnetID.NotFound", "The subnet ID '{}' does not exist"),
    "sg": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
    "rtb": ("InvalidRouteTableID.NotFound", "The routeTable ID '{}' does not exist"),
    "igw": ("InvalidInternetGatewayID.NotFound", "The internetGateway ID '{}' does not exist"),
    "vpce": ("InvalidVpcEndpointId.NotFound", "The Vpc Endpoint Id '{}' does not exist"),
    "nat": ("NatGatewayNotFound", "NAT gateway {} was not found"),
    "eipalloc": ("InvalidAllocationID.NotFound", "The allocation ID '{}' does not exist"),
}
# EC2 create call -> the XML tag of the id its answer carries (the first one in the answer).
CREATED_ID_TAG = {
    "CreateVpc": "vpcId", "CreateSubnet": "subnetId", "CreateSecurityGroup": "groupId",
    "CreateRouteTable": "routeTableId", "CreateInternetGateway": "internetGatewayId",
    "CreateVpcEndpoint": "vpcEndpointId", "CreateNatGateway": "natGatewayId", "AllocateAddress": "allocationId",
}
TAG_PARAM = re.compile(r"(^|\.)Tag\.\d+\.(Key|Value)$")  # TagSpecification.N.Tag.M.Value, Tag.N.Key: free text
ECR_PRIVATE = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
LINKED_ROLE_MSG = "Unable to assume the service linked role. Please verify that the ECS service linked role exists."
ROLE_MSG = ("ECS was unable to assume the role '{}' that was provided for this task. Please verify that the role being "
            "passed has the proper trust relationship and permissions and that your IAM user has permissions to pass "
            "this role.")
CANNOT_PULL = "CannotPullContainerError: pull image manifest has been retried 7 time(s): failed to resolve ref {}: not found"
NO_EGRESS = ("ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
             "failed to resolve ref {}: dial tcp 0.0.0.0:443: i/o timeout")
ECR_TIMEOUT = ("ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval "
               "failed: unable to retrieve ecr registry auth: service call has been retried 3 time(s): RequestError: "
               "send request failed caused by: Post \"https://api.ecr.{}.amazonaws.com/\": dial tcp 0.0.0.0:443: i/o timeout")
CB_REASON = "ECS deployment circuit breaker: tasks failed to start."
# A task that started but failed its load balancer's health checks (aws/containers-roadmap#612: ECS says so only in
# stoppedReason, with no stopCode of its own), and how DescribeTargetHealth and the service's events show it.
ELB_REASON = "Task failed ELB health checks in (target-group {})"
HC_REASON, HC_DESCRIPTION = "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]"
HC_EVENT = "(port {}) is unhealthy in (target-group {}) due to (reason " + HC_DESCRIPTION + ")."
MAX_EVENTS = 100  # DescribeServices shows a service's latest 100 events
EPS = 1e-9


class Clock:
    """What the AWS's-clock rules (and the load balancer rules) remember. Guarded by State.lock; {"reset": true}
    forgets all of it."""

    def __init__(self) -> None:
        self.new_ids: dict[str, float] = {}  # EC2 id -> created
        self.linked_roles: dict[str, float] = {}  # access key -> ECS service-linked role created
        self.roles: dict[tuple[str, str], float] = {}  # (access key, role name) -> created
        self.attached: dict[tuple[str, str], float] = {}  # (access key, role name) -> last AttachRolePolicy
        self.endpoints: dict[str, dict[str, Any]] = {}  # interface endpoint id -> created, vpc, service, subnets, groups
        self.nats: dict[str, dict[str, Any]] = {}  # NAT gateway id -> created, deleted, subnet, {allocation: ip}
        self.services: dict[tuple, dict[str, Any]] = {}  # (region, cluster, name) -> the service's rollout model
        self.released: list[dict[str, Any]] = []  # Cloud Map services an ECS service stopped using: srv, ts, tasks
        self.tasks: dict[str, tuple] = {}  # synthetic task id -> (service key, deployment id, kind, index)
        self.task_defs: dict[str, dict[str, Any]] = {}  # task definition ARN -> family, containers, roles
        self.lbs: dict[str, dict[str, Any]] = {}  # load balancer ARN -> region, scheme, vpc, subnets, groups, deleted
        self.grace: dict[tuple, Any] = {}  # (region, cluster, name) -> healthCheckGracePeriodSeconds of CreateService
        self.subnet_az: dict[str, str] = {}  # subnet id -> its Availability Zone (never changes)


def _indexed(params: dict[str, Any], name: str) -> list[str]:
    """EC2 list parameters: Name.1, Name.2, ... in order."""
    pat = re.compile(rf"^{re.escape(name)}\.(\d+)$")
    hits = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pat.match(k)))
    return [v for _, v in hits]


def _xml_first(body: bytes, tag: str) -> str | None:
    m = re.search(rf"<{tag}>([^<]+)</{tag}>".encode(), body)
    return m.group(1).decode() if m else None


def _set_states(resp: Response, id_tag: str, change: dict[str, tuple[str, str]]) -> Response:
    """Rewrite the <state> of the items whose <id_tag> is a key of change: {id: (from, to)}."""
    status, headers, body = resp
    text = body.decode("utf-8")
    for rid, (old, new) in change.items():
        # From the id to the item's own <state>, never into the next item.
        pat = re.compile(rf"(<{id_tag}>{re.escape(rid)}</{id_tag}>(?:(?!<{id_tag}>).)*?<state>){old}(</state>)", re.S)
        text = pat.sub(rf"\g<1>{new}\g<2>", text, count=1)
    return status, headers, text.encode("utf-8")


def _json_body(resp: Response, doc: Any) -> Response:
    return resp[0], resp[1], json.dumps(doc).encode()


def _md5(*parts: Any) -> str:
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()


def _tid(dep_id: str, kind: str, i: int) -> str:
    """A synthetic task's id: stable for (deployment, kind, index), 32 hex like ECS's."""
    return _md5(dep_id, kind, i)


def _mint_id() -> str:
    return f"ecs-svc/{random.randrange(10**18, 10**19)}"


# -- checks before forwarding ------------------------------------------------


def check_clock(state: State, call: Call) -> None:
    """Raise RuleViolation where AWS's clock refuses the call."""
    svc, op = call.service, call.operation
    if svc == "ec2":
        _check_new_ids(state, call)
        if op in ("ReleaseAddress", "DeleteSubnet"):
            _check_nat_holds(state, call)
    elif svc == "ecs":
        if op in ("CreateCluster", "CreateService"):
            _check_linked_role(state, call)
        if op in ("CreateService", "UpdateService"):
            _check_awsvpc_ids(state, call)
        elif op == "RegisterTaskDefinition":
            _check_role(state, call)


def _young_id(state: State, values: Any) -> str | None:
    """The first of values that is an EC2 id created less than id_propagation_seconds ago."""
    window = state.timed("id-propagation", "id_propagation_seconds")
    if window <= 0:
        return None
    now = time.time()
    with state.lock:
        ids = state.clock.new_ids
        if not ids:
            return None
        for v in values:
            t = ids.get(v) if isinstance(v, str) else None
            if t is not None and now - t < window:
                return v
    return None


def _check_new_ids(state: State, call: Call) -> None:
    # Any parameter but a filter (a filter just matches nothing on AWS) or a tag (free text): Describe calls naming
    # the id fail too.
    rid = _young_id(state, (v for k, v in call.params.items() if not k.startswith("Filter.") and not TAG_PARAM.search(k)))
    if rid:
        code, fmt = ID_NOT_FOUND[rid.split("-", 1)[0]]
        raise RuleViolation("id-propagation", code, fmt.format(rid))


def _check_awsvpc_ids(state: State, call: Call) -> None:
    # ECS looks the subnets and groups up in EC2, and says so in moto's own words for a missing one.
    cfg = (call.params.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    for key, what in (("subnets", "subnet"), ("securityGroups", "security group")):
        rid = _young_id(state, cfg.get(key) or [])
        if rid:
            code, fmt = ID_NOT_FOUND[rid.split("-", 1)[0]]
            raise RuleViolation("id-propagation", "InvalidParameterException",
                                f"Error retrieving {what} information for [{rid}]: {fmt.format(rid)} (ErrorCode: {code})")


def _check_linked_role(state: State, call: Call) -> None:
    window = state.timed("linked-role-propagation", "linked_role_seconds")
    if window <= 0:
        return
    with state.lock:
        t = state.clock.linked_roles.get(call.access_key)
    if t is not None and time.time() - t < window:
        raise RuleViolation("linked-role-propagation", "InvalidParameterException", LINKED_ROLE_MSG)


def _role_since(state: State, call: Call, arn: str) -> float | None:
    """When the role named by arn was last created or given a policy through the proxy (under the lock)."""
    name = arn.rsplit("/", 1)[-1]  # role/R or role/path/R
    times = [t for t in (state.clock.roles.get((call.access_key, name)),
                         state.clock.attached.get((call.access_key, name))) if t is not None]
    return max(times) if times else None


def _check_role(state: State, call: Call) -> None:
    window = state.timed("role-propagation", "role_propagation_seconds")
    if window <= 0:
        return
    now = time.time()
    for key in ("executionRoleArn", "taskRoleArn"):
        arn = call.params.get(key)
        if not isinstance(arn, str) or not arn:
            continue
        with state.lock:
            t = state.clock.roles.get((call.access_key, arn.rsplit("/", 1)[-1]))
        if t is not None and now - t < window:
            raise RuleViolation("role-propagation", "ClientException", ROLE_MSG.format(arn))


def _check_nat_holds(state: State, call: Call) -> None:
    # A NAT gateway holds its subnet and its Elastic IP until it is gone: while it lives and while it is deleting.
    window = state.timed("nat-pending", "nat_pending_seconds")
    if window <= 0:
        return
    p, now = call.params, time.time()
    with state.lock:
        nats = [n for n in state.clock.nats.values() if n["deleted"] is None or now - n["deleted"] < window]
    for n in nats:
        if call.operation == "DeleteSubnet" and p.get("SubnetId") == n["subnet"]:
            raise RuleViolation("nat-pending", "DependencyViolation",
                                f"The subnet '{n['subnet']}' has dependencies and cannot be deleted.")
        if call.operation == "ReleaseAddress":
            for alloc, ip in n["addresses"].items():
                if p.get("AllocationId") == alloc or (ip and p.get("PublicIp") == ip):
                    raise RuleViolation("nat-pending", "InvalidIPAddress.InUse", f"Address {ip or alloc} is in use.")


# -- bookkeeping and rewrites after forwarding --------------------------------


def after_clock(state: State, call: Call, memo: dict[str, Any], resp: Response) -> tuple[Response, str | None]:
    """AWS's-clock bookkeeping after a successful forwarded call, and the rewrites of what the client sees."""
    handler = CLOCK_AFTER.get(("iam" if call.iam else call.service, call.operation))
    if handler is None:
        return resp, None
    return handler(state, call, resp)


def _after_ec2_create(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    window = state.timed("id-propagation", "id_propagation_seconds")
    rid = _xml_first(resp[2], CREATED_ID_TAG[call.operation])
    if window > 0 and rid:
        now = time.time()
        with state.lock:
            ids = state.clock.new_ids
            if len(ids) > 10_000:  # forget the propagated ones now and then
                for k in [k for k, t in ids.items() if now - t >= window]:
                    del ids[k]
            ids[rid] = now
    return resp, None


def _after_create_endpoint(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    resp, _ = _after_ec2_create(state, call, resp)
    p = call.params
    rid = _xml_first(resp[2], "vpcEndpointId")
    if not rid or p.get("VpcEndpointType") != "Interface":
        return resp, None  # gateway endpoints are available at once (the default type is Gateway)
    rec = {"created": time.time(), "vpc": p.get("VpcId"), "service": p.get("ServiceName") or "",
           "subnets": _indexed(p, "SubnetId"), "groups": _indexed(p, "SecurityGroupId"), "deleted": None}
    with state.lock:
        state.clock.endpoints[rid] = rec
    if state.timed("endpoint-pending", "endpoint_pending_seconds") > 0:
        return _set_states(resp, "vpcEndpointId", {rid: ("available", "pending")}), "rule:endpoint-pending"
    return resp, None


def _after_describe_endpoints(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    window = state.timed("endpoint-pending", "endpoint_pending_seconds")
    if window <= 0:
        return resp, None
    now = time.time()
    with state.lock:
        young = [rid for rid, e in state.clock.endpoints.items() if e["deleted"] is None and now - e["created"] < window]
    hits = {rid: ("available", "pending") for rid in young if rid.encode() in resp[2]}
    if not hits:
        return resp, None
    return _set_states(resp, "vpcEndpointId", hits), "rule:endpoint-pending"


def _after_delete_endpoints(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # An interface endpoint's ENIs linger after the delete: its subnets and groups stay held (eni-in-use's memory).
    linger = state.timed("endpoint-pending", "endpoint_pending_seconds") > 0
    now = time.time()
    with state.lock:
        for rid in _indexed(call.params, "VpcEndpointId"):
            e = state.clock.endpoints.get(rid)
            if e is None or e["deleted"] is not None:
                continue
            e["deleted"] = now
            if linger:
                state.deleted_services.append({"ids": set(e["subnets"]) | set(e["groups"]), "ts": now,
                                               "arn": f"(interface endpoint {rid})"})
    return resp, None


def _after_create_nat(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    resp, _ = _after_ec2_create(state, call, resp)
    text = resp[2].decode("utf-8")
    nat_id = _xml_first(resp[2], "natGatewayId")
    if not nat_id:
        return resp, None
    pairs = re.findall(r"<allocationId>([^<]+)</allocationId>((?:(?!</item>).)*)</item>", text, re.S)
    addresses = {alloc: (re.search(r"<publicIp>([^<]+)</publicIp>", rest) or [None, None])[1] for alloc, rest in pairs}
    if not addresses and call.params.get("AllocationId"):
        addresses[call.params["AllocationId"]] = None
    rec = {"created": time.time(), "deleted": None, "subnet": _xml_first(resp[2], "subnetId"), "addresses": addresses}
    with state.lock:
        state.clock.nats[nat_id] = rec
    if state.timed("nat-pending", "nat_pending_seconds") > 0:
        return _set_states(resp, "natGatewayId", {nat_id: ("available", "pending")}), "rule:nat-pending"
    return resp, None


def _after_describe_nats(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    window = state.timed("nat-pending", "nat_pending_seconds")
    if window <= 0:
        return resp, None
    now, hits = time.time(), {}
    with state.lock:
        for nat_id, n in state.clock.nats.items():
            if nat_id.encode() not in resp[2]:
                continue
            if n["deleted"] is None and now - n["created"] < window:
                hits[nat_id] = ("available", "pending")
            elif n["deleted"] is not None and now - n["deleted"] < window:
                hits[nat_id] = ("deleted", "deleting")  # moto says deleted at once
    if not hits:
        return resp, None
    return _set_states(resp, "natGatewayId", hits), "rule:nat-pending"


def _after_delete_nat(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    with state.lock:
        n = state.clock.nats.get(call.params.get("NatGatewayId", ""))
        if n is not None and n["deleted"] is None:
            n["deleted"] = time.time()
    return resp, None


def _after_iam(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # Remembered even with the rules off, so they can be switched on later.
    op, p, now = call.operation, call.params, time.time()
    with state.lock:
        if op == "CreateServiceLinkedRole" and p.get("AWSServiceName") == "ecs.amazonaws.com":
            state.clock.linked_roles[call.access_key] = now
        elif op == "CreateRole" and p.get("RoleName"):
            state.clock.roles[(call.access_key, p["RoleName"])] = now
        elif op == "AttachRolePolicy" and p.get("RoleName"):
            state.clock.attached[(call.access_key, p["RoleName"])] = now
    return resp, None


# -- the rollout model ----------------------------------------------------------
# A service's deployments, oldest first. Each is a dict: id, td, containers, created, net, cb, fail_reason,
# fail_until (None: healthy; inf: its tasks never start; a time: they fail until then), and, once it is replaced,
# superseded + frozen (its phase at that moment). Everything the client sees is computed from these and the clock.


def _task_def(state: State, call: Call, td: str | None) -> dict[str, Any] | None:
    """Family, containers (name, image) and roles of a task definition (one DescribeTaskDefinition; ARNs cached)."""
    if not td:
        return None
    with state.lock:
        hit = state.clock.task_defs.get(td)
    if hit:
        return hit
    try:
        t = state.client("ecs", call).describe_task_definition(taskDefinition=td)["taskDefinition"]
    except Exception as e:
        log(f"rollout: could not describe task definition {td}: {e}")
        return None
    info = {"arn": t["taskDefinitionArn"], "family": t.get("family", ""),
            "containers": [(c.get("name", ""), c.get("image", "")) for c in t.get("containerDefinitions", [])],
            "roles": [r for r in (t.get("executionRoleArn"), t.get("taskRoleArn")) if r]}
    with state.lock:
        state.clock.task_defs[info["arn"]] = info  # a revision never changes
    return info


def _egress(state: State, call: Call, subnets: list[str], public_ip: bool) -> tuple[float | None, set[str]] | None:
    """When the subnets get a way out to 0.0.0.0/0 (a NAT gateway, or an internet gateway with a public IP):
    (time it is ready, or None for never; the subnets' VPCs). None when the upstream cannot tell."""
    ec2 = state.client("ec2", call)
    try:
        tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": subnets}])["RouteTables"]
        covered = {a.get("SubnetId") for t in tables for a in t.get("Associations", [])}
        vpcs = {s["VpcId"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]}
        if set(subnets) - covered:  # the others use their VPC's main table
            tables += ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": sorted(vpcs)},
                                                         {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    except Exception as e:
        log(f"rollout: could not read the route tables of {subnets}: {e}")
        return None
    window = state.timed("nat-pending", "nat_pending_seconds")
    ready: list[float] = []
    for r in (r for t in tables for r in t.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"):
        if r.get("NatGatewayId"):
            with state.lock:
                n = state.clock.nats.get(r["NatGatewayId"])
            if n is None:
                ready.append(0.0)
            elif n["deleted"] is None:
                ready.append(n["created"] + window if window > 0 else 0.0)
        elif public_ip and str(r.get("GatewayId", "")).startswith("igw-"):
            ready.append(0.0)
    return (min(ready) if ready else None), vpcs


def _start_failure(state: State, call: Call, info: dict[str, Any] | None, net: dict[str, Any] | None,
                   now: float, lbs: list[dict[str, Any]]) -> tuple[str, float, str | None, str] | None:
    """Why a new deployment's tasks fail: (stopped reason, until when (inf: never), container, kind), or None. Kind
    "start": they cannot start; "elb": they start, then fail the health checks of the service's load balancer."""
    if not info:
        return None
    containers = info["containers"]
    for name, image in containers:
        if any(m in image for m in state.cfg["unpullable_images"]):
            return CANNOT_PULL.format(image), math.inf, name, "start"
    blockers: list[tuple[float, str, str | None]] = []
    vpc_cfg = (net or {}).get("awsvpcConfiguration") or {}
    subnets = list(vpc_cfg.get("subnets") or [])
    public = [(n, i) for n, i in containers if not ECR_PRIVATE.match(i)]  # no VPC endpoint serves these
    ep_window = state.timed("endpoint-pending", "endpoint_pending_seconds")
    with state.lock:
        ecr_pending = [e for e in state.clock.endpoints.values()
                       if ep_window > 0 and ".ecr." in e["service"] and e["deleted"] is None
                       and e["created"] + ep_window > now]
    egress = _egress(state, call, subnets, vpc_cfg.get("assignPublicIp") == "ENABLED") if subnets and (
        public or ecr_pending) else None
    if egress is not None:
        ready, vpcs = egress
        if public and ready is None:
            return NO_EGRESS.format(public[0][1]), math.inf, public[0][0], "start"
        if public and ready > now:
            blockers.append((ready, NO_EGRESS.format(public[0][1]), public[0][0]))
        if not public and ready is None:  # private ECR through interface endpoints that are still pending
            ends = [e["created"] + ep_window for e in ecr_pending if e["vpc"] in vpcs]
            if ends:
                blockers.append((max(ends), ECR_TIMEOUT.format(call.region), containers[0][0] if containers else None))
    window = state.timed("role-propagation", "role_propagation_seconds")
    if window > 0:
        for arn in info["roles"]:
            with state.lock:
                since = _role_since(state, call, arn)
            if since is not None and since + window > now:
                blockers.append((since + window, ROLE_MSG.format(arn), None))
    if lbs and any(m in image for _, image in containers for m in state.cfg["unhealthy_images"]):
        return ELB_REASON.format(lbs[0]["tg"]), math.inf, None, "elb"  # for ever: it outlasts any finite blocker
    if not blockers:
        return None
    until, reason, container = max(blockers, key=lambda b: b[0])  # the one that lasts longest
    return reason, until, container, "start"


def _breaker(params: dict[str, Any]) -> dict[str, bool]:
    cb = (params.get("deploymentConfiguration") or {}).get("deploymentCircuitBreaker") or {}
    return {"enable": bool(cb.get("enable")), "rollback": bool(cb.get("rollback"))}


def _registry_ids(registries: Any) -> list[str]:
    return [_short(r["registryArn"]) for r in registries or [] if isinstance(r, dict) and r.get("registryArn")]


def _lb_refs(load_balancers: Any) -> list[dict[str, Any]]:
    """A service's loadBalancers that name a target group: [{tg, container, port}]."""
    return [{"tg": r["targetGroupArn"], "container": r.get("containerName"), "port": r.get("containerPort")}
            for r in load_balancers or [] if isinstance(r, dict) and r.get("targetGroupArn")]


def _deployment(dep_id: str, info: dict[str, Any] | None, td: str | None, created: float, net: Any,
                fail: tuple[str, float, str | None, str] | None, cb: dict[str, bool],
                base: dict[str, Any]) -> dict[str, Any]:
    return {"id": dep_id, "td": info["arn"] if info else td, "family": info["family"] if info else "",
            "containers": info["containers"] if info else [], "created": created, "net": net, "cb": dict(cb),
            "fail_reason": fail[0] if fail else None, "fail_until": fail[1] if fail else None,
            "fail_container": fail[2] if fail else None, "fail_kind": fail[3] if fail else None, "base": base,
            "superseded": None, "frozen": None, "final": None, "rolled_back_to": None}


def _phase(d: dict[str, Any], desired: int, t: float, R: float) -> dict[str, Any]:
    """Where deployment d stands at time t. Failing tasks are retried in waves of max(1, desired) every R/3 s; the
    circuit breaker trips at R if they still fail; a healthy deployment ramps its running tasks linearly over R."""
    created, n, wave = d["created"], max(1, desired), R / 3.0
    ph = {"desired": desired, "running": 0, "pending": desired, "failed": 0, "fail_started": 0,
          "healthy_from": None, "done_at": None, "state": "IN_PROGRESS", "updated": created}
    if desired == 0:  # nothing to start: complete at once
        return dict(ph, state="COMPLETED", pending=0, healthy_from=created, done_at=created)
    until = d["fail_until"]
    if until is None or until <= created:
        waves = 0
    else:
        waves = math.inf if until == math.inf else math.ceil((until - created) / wave - EPS)
    tripped = d["cb"]["enable"] and waves * wave > R + EPS
    limit = 3 if tripped else waves
    ended = max(0, int(min(limit, int((t - created) / wave + EPS))))
    ph.update(failed=n * ended, fail_started=n * int(min(limit, ended + 1)) if waves else 0,
              updated=created + ended * wave)
    if tripped:
        if t >= created + R - EPS:
            return dict(ph, state="FAILED", pending=0, failed=3 * n, fail_started=3 * n, done_at=created + R,
                        updated=created + R)
        return ph
    if waves == math.inf:
        return ph  # no circuit breaker: it "hangs", failing for ever
    h = created + waves * wave
    if t < h:
        return ph
    ph.update(healthy_from=h, fail_started=n * waves)
    if t >= h + R - EPS:
        return dict(ph, state="COMPLETED", running=desired, pending=0, done_at=h + R, updated=h + R)
    running = min(desired, int(desired * (t - h) / R + EPS))
    return dict(ph, running=running, pending=desired - running, updated=h + running * R / desired if running else h)


def _current(svc: dict[str, Any], d: dict[str, Any], now: float, R: float) -> dict[str, Any]:
    """d's phase now: frozen once replaced; COMPLETED and FAILED stick (a count change keeps COMPLETED)."""
    if d["frozen"]:
        return d["frozen"]
    final = d["final"]
    if final and final["state"] == "COMPLETED":
        desired = svc["desired"]
        return dict(final, desired=desired, running=desired, pending=0)
    if final:
        return final
    ph = _phase(d, svc["desired"], now, R)
    if ph["state"] != "IN_PROGRESS":
        d["final"] = ph
    return ph


def _supersede(svc: dict[str, Any], d: dict[str, Any], at: float, R: float) -> None:
    d["frozen"] = _current(svc, d, at, R)
    d["superseded"] = at


def _advance(svc: dict[str, Any], now: float, R: float) -> list[tuple]:
    """Materialize circuit-breaker rollbacks that are due; -> upstream actions (run them outside the lock)."""
    actions: list[tuple] = []
    d = svc["deployments"][-1]
    ph = _current(svc, d, now, R)
    if ph["state"] != "FAILED" or not d["cb"]["rollback"] or d["rolled_back_to"]:
        return actions
    target = next((o for o in reversed(svc["deployments"][:-1]) if (o["frozen"] or {}).get("state") == "COMPLETED"), None)
    if target is None:
        return actions  # nothing completed to go back to: it stays FAILED
    at = ph["done_at"]
    _supersede(svc, d, at, R)
    d["rolled_back_to"] = target["id"]
    rb = dict(_deployment(_mint_id(), None, target["td"], at, target["net"], None, d["cb"], target["base"]),
              family=target["family"], containers=target["containers"])
    svc["deployments"].append(rb)
    actions.append(("rollback", svc["cluster"], svc["name"], target["td"]))
    return actions


def _listed(svc: dict[str, Any], now: float, R: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(deployment, phase) as DescribeServices lists them: the primary first; the older ones keep their tasks until
    it completes (those before the last completed one are gone)."""
    deps = svc["deployments"]
    out = [(deps[-1], _current(svc, deps[-1], now, R))]
    if out[0][1]["state"] == "COMPLETED":
        return out
    for d in reversed(deps[:-1]):
        out.append((d, d["frozen"]))
        if d["frozen"]["state"] == "COMPLETED":
            break
    return out


def _running_tasks(svc: dict[str, Any], now: float, R: float) -> list[dict[str, Any]]:
    if svc["deleted"] is not None:
        return []
    return [{"id": _tid(d["id"], "run", i), "service": svc["name"], "cluster": svc["cluster"], "family": d["family"]}
            for d, ph in _listed(svc, now, R) for i in range(ph["running"])]


def _deployment_json(d: dict[str, Any], ph: dict[str, Any], primary: bool) -> dict[str, Any]:
    reason = {"IN_PROGRESS": f"ECS deployment {d['id']} in progress.",
              "COMPLETED": f"ECS deployment {d['id']} completed.", "FAILED": CB_REASON}[ph["state"]]
    out = dict(d["base"])
    out.update({"id": d["id"], "status": "PRIMARY" if primary else "ACTIVE", "taskDefinition": d["td"],
                "desiredCount": ph["desired"], "pendingCount": ph["pending"] if primary else 0,
                "runningCount": ph["running"], "failedTasks": ph["failed"], "createdAt": d["created"],
                "updatedAt": ph["updated"], "rolloutState": ph["state"], "rolloutStateReason": reason})
    if d["net"]:
        out["networkConfiguration"] = d["net"]
    return {k: v for k, v in out.items() if v is not None}


def _deployment_events(state: State, svc: dict[str, Any], d: dict[str, Any], ph: dict[str, Any],
                       R: float) -> list[dict[str, Any]]:
    name, out = svc["name"], []

    def event(t: float, kind: str, i: int, msg: str) -> None:
        out.append({"id": str(uuid.UUID(_md5(d["id"], kind, i))), "createdAt": t, "message": f"(service {name}) {msg}"})

    n, wave = max(1, ph["desired"]), R / 3.0
    for j in range(max(0, ph["fail_started"] - MAX_EVENTS), ph["fail_started"]):
        tid = _tid(d["id"], "fail", j)
        state.clock.tasks[tid] = (svc["key"], d["id"], "fail", j)
        event(d["created"] + (j // n) * wave, "start-fail", j, f"has started 1 tasks: (task {tid}).")
        if d["fail_kind"] == "elb" and j < ph["failed"] and svc["lbs"]:  # just before ECS stops it
            lb = svc["lbs"][0]
            event(d["created"] + (j // n + 1) * wave - 0.001, "unhealthy", j, HC_EVENT.format(lb["port"], lb["tg"]))
    if ph["healthy_from"] is not None and ph["desired"]:
        for i in range(min(ph["running"], MAX_EVENTS)):
            tid = _tid(d["id"], "run", i)
            state.clock.tasks[tid] = (svc["key"], d["id"], "run", i)
            event(ph["healthy_from"] + (i + 1) * R / ph["desired"], "start", i, f"has started 1 tasks: (task {tid}).")
    # Just after the last task started, newest first: steady state above completed above the last start.
    if ph["state"] == "COMPLETED":
        event(ph["done_at"] + 0.001, "completed", 0, f"(deployment {d['id']}) deployment completed.")
        event(ph["done_at"] + 0.002, "steady", 0, "has reached a steady state.")
    elif ph["state"] == "FAILED":
        event(ph["done_at"] + 0.001, "failed", 0, f"(deployment {d['id']}) deployment failed: tasks failed to start.")
        if d["rolled_back_to"]:
            event(ph["done_at"] + 0.002, "rollback", 0, f"rolling back to deployment {d['rolled_back_to']}.")
    return out


def _render(state: State, svc: dict[str, Any], s: dict[str, Any], now: float, R: float) -> list[tuple]:
    """Rewrite one service of an ECS answer from its rollout model (under the lock); -> upstream actions."""
    svc["desired"] = int(s.get("desiredCount") or 0)
    actions = _advance(svc, now, R)
    listed = _listed(svc, now, R)
    primary, ph = listed[0]
    s["deployments"] = [_deployment_json(d, p, d is primary) for d, p in listed]
    s["runningCount"] = sum(p["running"] for _, p in listed)
    s["pendingCount"] = ph["pending"]
    s["taskDefinition"] = primary["td"]  # after a rollback: the rolled-back one
    events = [e for d in svc["deployments"] for e in _deployment_events(state, svc, d, _current(svc, d, now, R), R)]
    events.sort(key=lambda e: e["createdAt"], reverse=True)
    s["events"] = events[:MAX_EVENTS]
    if svc["dep_config"] and not s.get("deploymentConfiguration"):
        s["deploymentConfiguration"] = svc["dep_config"]  # moto drops it on CreateService
    return actions


def _run_actions(state: State, call: Call, actions: list[tuple]) -> None:
    """Make moto agree with a rollback. Straight to the upstream: not a client call, so not in the call log."""
    for _, cluster, name, td in actions:
        try:
            state.client("ecs", call).update_service(cluster=cluster, service=name, taskDefinition=td)
        except Exception as e:
            log(f"rollout: could not roll {cluster}/{name} back upstream: {e}")


def _release(state: State, call: Call, srv: str, tasks: list[dict[str, Any]], now: float) -> None:
    """Stopped tasks keep their Cloud Map instances for eni_linger_seconds (under the lock)."""
    if tasks:
        state.clock.released.append({"srv": srv, "ts": now, "tasks": tasks, "region": call.region})


def _service_key(call: Call, s: dict[str, Any]) -> tuple:
    return call.region, _short(s.get("clusterArn") or "default"), s.get("serviceName")


def _after_create_service(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    R = state.timed("rollout", "rollout_seconds")
    if R <= 0:
        return resp, None
    doc = json.loads(resp[2])
    s, p = doc.get("service") or {}, call.params
    deps = s.get("deployments") or []
    if not deps or not s.get("serviceName"):
        return resp, None  # not the ECS rolling deployment controller
    now = time.time()
    net = p.get("networkConfiguration") or s.get("networkConfiguration") or None
    info = _task_def(state, call, s.get("taskDefinition"))
    lbs = _lb_refs(p.get("loadBalancers"))
    fail = _start_failure(state, call, info, net, now, lbs)
    base = {k: deps[0][k] for k in ("launchType", "platformFamily", "platformVersion", "capacityProviderStrategy")
            if deps[0].get(k) is not None}
    key = _service_key(call, s)
    svc = {"key": key, "name": s["serviceName"], "cluster": key[1], "cluster_arn": s.get("clusterArn", ""),
           "arn": s.get("serviceArn", ""), "region": call.region, "launch_type": s.get("launchType"),
           "desired": int(s.get("desiredCount") or 0), "deleted": None, "cb": _breaker(p),
           "dep_config": p.get("deploymentConfiguration"), "registries": _registry_ids(p.get("serviceRegistries")),
           "lbs": lbs, "deployments": []}
    svc["deployments"].append(_deployment(deps[0]["id"], info, s.get("taskDefinition"), now, net, fail, svc["cb"], base))
    with state.lock:
        state.clock.services[key] = svc
        _render(state, svc, s, now, R)
    return _json_body(resp, doc), "rule:rollout"


def _after_update_service(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    R = state.timed("rollout", "rollout_seconds")
    if R <= 0:
        return resp, None
    doc = json.loads(resp[2])
    s, p, now = doc.get("service") or {}, call.params, time.time()
    key = _service_key(call, s)
    with state.lock:
        svc = state.clock.services.get(key)
        if svc is None or svc["deleted"] is not None:
            return resp, None
        current = svc["deployments"][-1]
        lbs = _lb_refs(p["loadBalancers"]) if "loadBalancers" in p else svc["lbs"]  # a new list replaces the old
    info = _task_def(state, call, p.get("taskDefinition")) if p.get("taskDefinition") else None
    # These start a deployment (API reference: "triggers a new service deployment"; a load balancer change starts new
    # tasks, then stops the old ones); a count alone does not.
    starts = ((info is not None and info["arn"] != current["td"]) or "networkConfiguration" in p
              or "serviceRegistries" in p or "loadBalancers" in p or p.get("forceNewDeployment") is True)
    if "deploymentConfiguration" in p:
        with state.lock:
            svc["dep_config"] = dict(svc["dep_config"] or {}, **p["deploymentConfiguration"])
            if "deploymentCircuitBreaker" in p["deploymentConfiguration"]:
                svc["cb"] = _breaker(p)
    fail = None
    if starts:
        info = info or _task_def(state, call, current["td"])
        fail = _start_failure(state, call, info, p.get("networkConfiguration") or current["net"], now, lbs)
    with state.lock:
        svc["lbs"] = lbs
        actions = _advance(svc, now, R)  # a rollback that was due happened before this update
        if starts:
            if p.get("taskDefinition"):
                actions = []  # the client's task definition wins over a rollback's
            old = svc["deployments"][-1]
            moto_id = ((s.get("deployments") or [{}])[0]).get("id")
            dep_id = moto_id if moto_id and all(d["id"] != moto_id for d in svc["deployments"]) else _mint_id()
            _supersede(svc, old, now, R)
            svc["deployments"].append(_deployment(dep_id, info, old["td"], now, p.get("networkConfiguration") or old["net"],
                                                  fail, svc["cb"], old["base"]))
        before = _running_tasks(svc, now, R)
        if "serviceRegistries" in p:
            kept = _registry_ids(p["serviceRegistries"])
            for srv in set(svc["registries"]) - set(kept):
                _release(state, call, srv, before, now)
            svc["registries"] = kept
        actions += _render(state, svc, s, now, R)
        # A scale-down stops tasks: their instances linger like their ENIs.
        after = {t["id"] for t in _running_tasks(svc, now, R)}
        for srv in svc["registries"]:
            _release(state, call, srv, [t for t in before if t["id"] not in after], now)
    _run_actions(state, call, actions)
    return _json_body(resp, doc), "rule:rollout"


def _after_delete_service(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    s = json.loads(resp[2]).get("service") or {}
    R, now = state.timed("rollout", "rollout_seconds"), time.time()
    with state.lock:
        svc = state.clock.services.get(_service_key(call, s))
        if svc is None or svc["deleted"] is not None:
            return resp, None
        # Its tasks (and their Cloud Map instances) go; the instances linger like the ENIs.
        tasks = _running_tasks(svc, now, R) if R > 0 else []
        for srv in svc["registries"]:
            _release(state, call, srv, tasks, now)
        svc["deleted"] = now
    return resp, None


def _after_describe_services(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    R = state.timed("rollout", "rollout_seconds")
    with state.lock:
        if R <= 0 or not state.clock.services:
            return resp, None
    doc, now, actions, touched = json.loads(resp[2]), time.time(), [], False
    with state.lock:
        for s in doc.get("services") or []:
            svc = state.clock.services.get(_service_key(call, s))
            if svc and svc["deleted"] is None and s.get("status") in ("ACTIVE", "DRAINING"):
                actions += _render(state, svc, s, now, R)
                touched = True
    if not touched:
        return resp, None
    _run_actions(state, call, actions)
    return _json_body(resp, doc), "rule:rollout"


def _after_list_tasks(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # The stopped tasks of failing deployments (AWS keeps them visible for about an hour); running ones are moto's.
    R, p = state.timed("rollout", "rollout_seconds"), call.params
    if R <= 0 or p.get("desiredStatus") != "STOPPED" or not (p.get("serviceName") or p.get("startedBy")):
        return resp, None
    doc = json.loads(resp[2])
    if doc.get("nextToken"):
        return resp, None  # appended to the last page only
    cluster, now, stopped = _short(p.get("cluster") or "default"), time.time(), []
    with state.lock:
        for svc in state.clock.services.values():
            if svc["region"] != call.region or svc["cluster"] != cluster:
                continue
            for d in svc["deployments"]:
                if p.get("startedBy") and p["startedBy"] != d["id"]:
                    continue
                if p.get("serviceName") and _short(p["serviceName"]) != svc["name"]:
                    continue
                ph = _current(svc, d, now, R)
                for j in range(max(0, ph["failed"] - MAX_EVENTS), ph["failed"]):
                    tid = _tid(d["id"], "fail", j)
                    state.clock.tasks[tid] = (svc["key"], d["id"], "fail", j)
                    stopped.append((d["created"] + (j // max(1, ph["desired"]) + 1) * R / 3.0, _task_arn(svc, tid)))
    if not stopped:
        return resp, None
    stopped.sort(reverse=True)
    doc["taskArns"] = list(doc.get("taskArns") or []) + [arn for _, arn in stopped[:MAX_EVENTS]]
    return _json_body(resp, doc), "rule:rollout"


def _task_arn(svc: dict[str, Any], tid: str) -> str:
    head = svc["arn"].split(":service/", 1)[0] if ":service/" in svc["arn"] else f"arn:aws:ecs:{svc['region']}:000000000000"
    return f"{head}:task/{svc['cluster']}/{tid}"


def _task_json(svc: dict[str, Any], d: dict[str, Any], kind: str, i: int, now: float, R: float) -> dict[str, Any]:
    """A synthetic task of the rollout model, as DescribeTasks shows it."""
    tid = _tid(d["id"], kind, i)
    arn = _task_arn(svc, tid)
    ph = _current(svc, d, now, R)
    task = {"taskArn": arn, "clusterArn": svc["cluster_arn"], "taskDefinitionArn": d["td"],
            "group": f"service:{svc['name']}", "startedBy": d["id"], "launchType": svc["launch_type"],
            "version": 1, "attachments": [], "tags": []}
    reason, failing = None, kind == "fail"
    elb = failing and d["fail_kind"] == "elb"  # started, then stopped by the scheduler for failed health checks
    if failing:
        start = d["created"] + (i // max(1, ph["desired"])) * R / 3.0
        stopped_at = start + R / 3.0
        reason = d["fail_reason"]
        stop_code = "ServiceSchedulerInitiated" if elb else "TaskFailedToStart"
        if elb:
            task["startedAt"] = start
    else:
        start = (ph["healthy_from"] or d["created"]) + (i + 1) * R / max(1, ph["desired"])
        listed = _listed(svc, now, R) if svc["deleted"] is None else []
        running = any(dd is d and i < pp["running"] for dd, pp in listed)
        stopped_at = None if running else (svc["deleted"] or (listed[0][1]["done_at"] if listed else None) or now)
        stop_code = "ServiceSchedulerInitiated"
        if not running:
            by = listed[0][0]["id"] if listed else d["id"]
            task["stoppedReason"] = f"Scaling activity initiated by (deployment {by})"
        task["startedAt"] = start
    task["createdAt"] = start
    if stopped_at is not None and stopped_at <= now:
        task.update(lastStatus="STOPPED", desiredStatus="STOPPED", stopCode=stop_code, stoppingAt=stopped_at,
                    stoppedAt=stopped_at, executionStoppedAt=stopped_at)
        if reason:
            task["stoppedReason"] = reason
        status = "STOPPED"
    else:
        status = "PROVISIONING" if failing and not elb else "RUNNING"
        task.update(lastStatus=status, desiredStatus="RUNNING")
    task["containers"] = []
    for name, image in d["containers"]:
        c = {"containerArn": f"{arn.replace(':task/', ':container/', 1)}/{uuid.UUID(_md5(tid, name))}", "taskArn": arn,
             "name": name, "image": image, "lastStatus": "PENDING" if status == "PROVISIONING" else status}
        if reason and status == "STOPPED" and not elb and d["fail_container"] in (None, name):
            c["reason"] = reason
        task["containers"].append(c)
    return {k: v for k, v in task.items() if v is not None}


def _after_describe_tasks(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    R = state.timed("rollout", "rollout_seconds")
    if R <= 0:
        return resp, None
    wanted = [_short(t) for t in call.params.get("tasks") or [] if isinstance(t, str)]
    now, tasks = time.time(), []
    with state.lock:
        for tid in wanted:
            ref = state.clock.tasks.get(tid)
            svc = state.clock.services.get(ref[0]) if ref else None
            d = next((d for d in svc["deployments"] if d["id"] == ref[1]), None) if svc else None
            if d is not None:
                tasks.append(_task_json(svc, d, ref[2], ref[3], now, R))
    if not tasks:
        return resp, None
    doc = json.loads(resp[2])
    ours = {_short(t["taskArn"]) for t in tasks}
    doc["tasks"] = list(doc.get("tasks") or []) + tasks
    doc["failures"] = [f for f in doc.get("failures") or [] if _short(f.get("arn") or "") not in ours]
    return _json_body(resp, doc), "rule:rollout"


def _registry_holders(state: State, call: Call, srv: str) -> tuple[bool, list[dict[str, Any]]]:
    """Whether ECS still holds Cloud Map service srv, and the tasks registered in it (sd-service-in-use, rollout on):
    an ACTIVE service listing it with desired > 0 or running tasks, or tasks of a service that stopped using it
    (deleted, scaled down, registry changed) less than eni_linger_seconds ago."""
    R = state.timed("rollout", "rollout_seconds")
    if R <= 0 or not srv:
        return False, []
    now, linger, held, tasks, actions = time.time(), state.knob("eni_linger_seconds"), False, [], []
    with state.lock:
        for svc in state.clock.services.values():
            if svc["region"] != call.region or svc["deleted"] is not None or srv not in svc["registries"]:
                continue
            actions += _advance(svc, now, R)
            running = _running_tasks(svc, now, R)
            if svc["desired"] > 0 or running:
                held, tasks = True, tasks + running
        for rec in state.clock.released:
            if rec["srv"] == srv and rec["region"] == call.region and now - rec["ts"] < linger:
                held, tasks = True, tasks + rec["tasks"]
    _run_actions(state, call, actions)
    return held, tasks


def _after_list_instances(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # One instance per running task, as ECS registers them, so a client waiting for them to go sees them go.
    if not state.rule_on("sd-service-in-use"):
        return resp, None
    _, tasks = _registry_holders(state, call, call.params.get("ServiceId") or "")
    if not tasks:
        return resp, None
    doc = json.loads(resp[2])
    seen = {i.get("Id") for i in doc.get("Instances") or []}
    for t in tasks:
        if t["id"] in seen:
            continue
        doc.setdefault("Instances", []).append({"Id": t["id"], "Attributes": {
            "AWS_INSTANCE_IPV4": _task_ip(t["id"]), "AWS_INIT_HEALTH_STATUS": "HEALTHY",
            "ECS_CLUSTER_NAME": t["cluster"], "ECS_SERVICE_NAME": t["service"],
            "ECS_TASK_DEFINITION_FAMILY": t["family"], "REGION": call.region}})
        seen.add(t["id"])
    return _json_body(resp, doc), "rule:sd-service-in-use"


def _task_ip(tid: str) -> str:
    """A synthetic task's private IPv4 address, from its id: the same in Cloud Map and in its target group."""
    b = bytes.fromhex(tid)
    return f"10.{b[0]}.{b[1]}.{b[2] % 254 + 1}"


# -- load balancers: remembered from the answers (always, so the rules can be switched on later) --------------------


def _after_create_lb(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    arn = _xml_first(resp[2], "LoadBalancerArn")
    if arn:
        subnets = re.findall(r"<SubnetId>([^<]+)</SubnetId>", resp[2].decode("utf-8", "replace"))
        rec = _lb_record(call, call.params.get("Scheme"), _xml_first(resp[2], "VpcId"),
                         subnets or _lb_subnets(call.params), _indexed(call.params, "SecurityGroups.member"))
        with state.lock:
            state.clock.lbs[arn] = rec
    return resp, None


def _after_set_lb(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # SetSecurityGroups / SetSubnets replace the list (the load balancer's ENIs move with it).
    p = call.params
    with state.lock:
        lb = state.clock.lbs.get(p.get("LoadBalancerArn", ""))
        if lb is None:
            return resp, None
        if call.operation == "SetSecurityGroups":
            lb["groups"] = set(_indexed(p, "SecurityGroups.member"))
        else:
            lb["subnets"] = set(re.findall(r"<SubnetId>([^<]+)</SubnetId>", resp[2].decode("utf-8", "replace"))
                                or _lb_subnets(p))
    return resp, None


def _after_delete_lb(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    with state.lock:
        lb = state.clock.lbs.get(call.params.get("LoadBalancerArn", ""))
        if lb is not None and lb["deleted"] is None:
            lb["deleted"] = time.time()  # its ENIs linger from now (lb-eni-linger)
    return resp, None


def _subnet_azs(state: State, call: Call, subnets: set[str]) -> dict[str, str]:
    """The Availability Zone of each subnet (one DescribeSubnets for the ones not cached yet)."""
    with state.lock:
        missing = sorted(subnets - set(state.clock.subnet_az))
    if missing:
        try:
            for sub in state.client("ec2", call).describe_subnets(SubnetIds=missing)["Subnets"]:
                with state.lock:
                    state.clock.subnet_az[sub["SubnetId"]] = sub["AvailabilityZone"]
        except Exception as e:
            log(f"rollout: could not read the zones of {missing}: {e}")
    with state.lock:
        return {sub: state.clock.subnet_az[sub] for sub in subnets if sub in state.clock.subnet_az}


def _service_targets(svc: dict[str, Any], tg: str, now: float, R: float) -> list[tuple[str, Any, str, str | None]]:
    """The targets ECS keeps registered in tg for one service (under the lock): (task id, port, state, subnet). Its
    running tasks are healthy; the started tasks of a primary deployment that fails the health checks are not."""
    ports = [lb["port"] for lb in svc["lbs"] if lb["tg"] == tg and lb["port"] is not None]
    out = []
    for n, (d, ph) in enumerate(_listed(svc, now, R)):
        tids = [(_tid(d["id"], "run", i), "healthy") for i in range(ph["running"])]
        if n == 0 and d["fail_kind"] == "elb" and ph["state"] == "IN_PROGRESS":
            tids += [(_tid(d["id"], "fail", j), "unhealthy") for j in range(ph["failed"], ph["fail_started"])]
        subnets = ((d["net"] or {}).get("awsvpcConfiguration") or {}).get("subnets") or [None]
        out += [(tid, port, st, subnets[k % len(subnets)]) for k, (tid, st) in enumerate(tids) for port in ports]
    return out


def _target_xml(ip: str, port: Any, health: str, az: str | None) -> str:
    zone = f"<AvailabilityZone>{az}</AvailabilityZone>" if az else ""
    why = f"<Reason>{HC_REASON}</Reason><Description>{HC_DESCRIPTION}</Description>" if health == "unhealthy" else ""
    return (f"<member><Target><Id>{ip}</Id><Port>{port}</Port>{zone}</Target><HealthCheckPort>{port}</HealthCheckPort>"
            f"<TargetHealth><State>{health}</State>{why}</TargetHealth></member>")


def _after_describe_target_health(state: State, call: Call, resp: Response) -> tuple[Response, str | None]:
    # moto's ECS starts no task, so nothing is ever registered: ECS registers each running task of the services that
    # name this target group (rollout model), and moto's own (hand-registered) targets stay.
    R, tg = state.timed("rollout", "rollout_seconds"), call.params.get("TargetGroupArn", "")
    if R <= 0 or not tg:
        return resp, None
    now, targets, actions, named = time.time(), [], [], False
    with state.lock:
        for svc in state.clock.services.values():
            if svc["region"] != call.region or svc["deleted"] is not None or all(lb["tg"] != tg for lb in svc["lbs"]):
                continue
            named = True
            actions += _advance(svc, now, R)
            targets += _service_targets(svc, tg, now, R)
    _run_actions(state, call, actions)
    if not named:
        return resp, None
    azs = _subnet_azs(state, call, {t[3] for t in targets if t[3]})
    ours = [(_task_ip(tid), str(port), _target_xml(_task_ip(tid), port, st, azs.get(sub)))
            for tid, port, st, sub in targets]
    text = resp[2].decode("utf-8", "replace")
    moto = [(m.group(1), m.group(0)) for m in re.finditer(r"<member><Target><Id>([^<]*)</Id>.*?</member>", text, re.S)]
    ip_set = {ip for ip, _, _ in ours}
    asked = _asked_targets(call.params)
    if asked:  # only the targets asked for; moto answers the others (unavailable / Target.NotRegistered)
        members = []
        for ip, port in asked:
            mine = [x for i, p, x in ours if i == ip and port in (None, p)]
            members += mine or [x for i, x in moto if i == ip][:1]
    else:
        members = [x for _, _, x in ours] + [x for i, x in moto if i not in ip_set]
    rid = _xml_first(resp[2], "RequestId") or str(uuid.uuid4())
    body = (f'<DescribeTargetHealthResponse xmlns="{ELBV2_XMLNS}"><DescribeTargetHealthResult>'
            "<TargetHealthDescriptions>" + "".join(members) + "</TargetHealthDescriptions></DescribeTargetHealthResult>"
            "<ResponseMetadata>"
            f"<RequestId>{rid}</RequestId></ResponseMetadata></DescribeTargetHealthResponse>")
    return (resp[0], resp[1], body.encode()), "rule:rollout"


def _asked_targets(params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """DescribeTargetHealth's Targets.member.N.Id (and .Port), in order."""
    pat = re.compile(r"^Targets\.member\.(\d+)\.Id$")
    hits = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pat.match(k)))
    return [(v, params.get(f"Targets.member.{n}.Port")) for n, v in hits]


CLOCK_AFTER: dict[tuple[str, str | None], Any] = {
    **{("ec2", op): _after_ec2_create for op in CREATED_ID_TAG},
    ("ec2", "CreateVpcEndpoint"): _after_create_endpoint,
    ("ec2", "DescribeVpcEndpoints"): _after_describe_endpoints,
    ("ec2", "DeleteVpcEndpoints"): _after_delete_endpoints,
    ("ec2", "CreateNatGateway"): _after_create_nat,
    ("ec2", "DescribeNatGateways"): _after_describe_nats,
    ("ec2", "DeleteNatGateway"): _after_delete_nat,
    **{("iam", op): _after_iam for op in IAM_OPS},
    ("ecs", "CreateService"): _after_create_service,
    ("ecs", "UpdateService"): _after_update_service,
    ("ecs", "DeleteService"): _after_delete_service,
    ("ecs", "DescribeServices"): _after_describe_services,
    ("ecs", "ListTasks"): _after_list_tasks,
    ("ecs", "DescribeTasks"): _after_describe_tasks,
    ("servicediscovery", "ListInstances"): _after_list_instances,
    ("elbv2", "CreateLoadBalancer"): _after_create_lb,
    ("elbv2", "SetSecurityGroups"): _after_set_lb,
    ("elbv2", "SetSubnets"): _after_set_lb,
    ("elbv2", "DeleteLoadBalancer"): _after_delete_lb,
    ("elbv2", "DescribeTargetHealth"): _after_describe_target_health,
}


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
        if resp is None and call.ruled:
            # 4. strict rules, checked against live upstream state (AWS's clock first: a NotFound comes before all).
            try:
                check_clock(state, call)
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
                resp = account_log_retention(state, call, resp)
                if call.ruled:
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
            # The SigV4 scope names the service of every call (IAM, Logs and S3 are "other" above).
            "scope": call.scope,
            "operation": call.operation or s3_operation(call, self.command, self.path),
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
    ap.add_argument("--id-propagation-seconds", type=float, help="new EC2 ids are NotFound this long (id-propagation)")
    ap.add_argument("--linked-role-seconds", type=float, help="a new ECS service-linked role is unusable this long")
    ap.add_argument("--role-propagation-seconds", type=float, help="a new IAM role cannot be passed/assumed this long")
    ap.add_argument("--endpoint-pending-seconds", type=float, help="interface endpoints stay pending this long")
    ap.add_argument("--nat-pending-seconds", type=float, help="NAT gateways stay pending / deleting this long")
    ap.add_argument("--rollout-seconds", type=float, help="an ECS deployment takes this long (rollout)")
    ap.add_argument("--lb-eni-linger-seconds", type=float,
                    help="a deleted load balancer's ENIs hold its subnets/SGs/public addresses this long (lb-eni-linger)")
    ap.add_argument("--clock-scale", type=float, metavar="F",
                    help="every duration knob not set explicitly is AWS's duration x F")
    ap.add_argument("--unpullable-image", action="append", metavar="SUBSTRING",
                    help="images containing this never pull (rollout; repeatable; default: unpullable)")
    ap.add_argument("--unhealthy-image", action="append", metavar="SUBSTRING",
                    help="tasks of images containing this fail their load balancer's health checks (rollout; "
                         "repeatable; default: unhealthy)")
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
    for key in ("upstream", "port", "latency_ms", "fault_rate", "fault_seed", *CLOCK, "clock_scale",
                "call_log", "watch_pid"):
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
    if args.unpullable_image:
        cli["unpullable_images"] = args.unpullable_image
    if args.unhealthy_image:
        cli["unhealthy_images"] = args.unhealthy_image
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
