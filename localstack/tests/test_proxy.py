"""Tests of the fidelity proxy (localstack/proxy.py) and the emulator scripts.

Run from the repo root:
    localstack/.venv/bin/python -m unittest discover -s localstack/tests -v

The module starts its own moto (start.sh --port 0, its own run dir, watched by
this process) and its own proxy, and stops both at the end. Every test uses its
own resources and never calls /moto-api/reset, so a shared server is safe.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import os
import random
import re
import shutil
import socket
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # localstack/
REGION = "us-east-1"
TMP = ""
MOTO = ""
PROXY = ""
CALL_LOG = ""
# Never let an http_proxy variable or a licensed-LocalStack setting leak into the children.
ENV = {k: v for k, v in os.environ.items() if k.lower() not in ("aws_endpoint_url", "http_proxy", "https_proxy", "all_proxy")}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run_script(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(HERE, args[0]), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env or ENV, timeout=180, check=check)


def setUpModule() -> None:
    global TMP, MOTO, PROXY, CALL_LOG
    TMP = tempfile.mkdtemp(prefix="secep-proxy-test-")
    CALL_LOG = os.path.join(TMP, "calls.jsonl")
    t0 = time.monotonic()
    try:
        MOTO = run_script("start.sh", "--port", "0", "--run-dir", TMP, "--watch-pid", str(os.getpid())).stdout.strip()
        PROXY = run_script("start-proxy.sh", "--port", "0", "--run-dir", TMP, "--watch-pid", str(os.getpid()),
                           "--upstream", MOTO, "--call-log", CALL_LOG).stdout.strip()
    except subprocess.CalledProcessError as e:
        tearDownModule()  # unittest skips it when setUpModule fails
        raise RuntimeError(f"{e.cmd} failed:\n{e.stderr}") from e
    sys.stderr.write(f"\nmoto {MOTO}, proxy {PROXY}, started in {time.monotonic() - t0:.1f} s\n")


def tearDownModule() -> None:
    if TMP:
        run_script("stop.sh", "--run-dir", TMP, check=False)
        shutil.rmtree(TMP, ignore_errors=True)


# --------------------------------------------------------------------------- helpers

def client(service: str, url: str | None = None):
    # One attempt only, so every injected error reaches the test untouched.
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, proxies={}, inject_host_prefix=False)
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=url or PROXY,
                                          aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def admin(cfg: dict, url: str | None = None) -> dict:
    req = urllib.request.Request((url or PROXY) + "/_proxy/config", data=json.dumps(cfg).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with OPENER.open(req, timeout=10) as r:
        return json.load(r)


def calls(url: str | None = None) -> list[dict]:
    with OPENER.open((url or PROXY) + "/_proxy/calls", timeout=10) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


def clear_calls() -> None:
    req = urllib.request.Request(PROXY + "/_proxy/calls/clear", data=b"", method="POST")
    with OPENER.open(req, timeout=10) as r:
        r.read()


def uid() -> str:
    return uuid.uuid4().hex[:10]


def error_of(ctx) -> tuple[str, int, str]:
    e = ctx.exception
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Message", "")


_cidr = iter(range(1, 250))


def make_vpc(ec2, tag: str) -> str:
    vpc = ec2.create_vpc(CidrBlock=f"10.{next(_cidr)}.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "secep-test", "Value": tag}]}])
    return vpc["Vpc"]["VpcId"]


def vpcs_tagged(ec2, tag: str) -> list:
    return ec2.describe_vpcs(Filters=[{"Name": "tag:secep-test", "Values": [tag]}])["Vpcs"]


def make_fargate_service(ecs, cluster: str, name: str, subnets: list[str], groups: list[str], token: str | None = None):
    ecs.create_cluster(clusterName=cluster)
    td = ecs.register_task_definition(
        family=f"{cluster}-td", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": "nginx", "essential": True,
                               "portMappings": [{"containerPort": 8080}]}])["taskDefinition"]["taskDefinitionArn"]
    kwargs = dict(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=1, launchType="FARGATE",
                  networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": groups,
                                                                "assignPublicIp": "DISABLED"}})
    if token:
        kwargs["clientToken"] = token
    return ecs.create_service(**kwargs)["service"]


class ProxyTestCase(unittest.TestCase):
    def setUp(self) -> None:
        admin({"reset": True})  # every test starts from the start-up config (all off)
        self.ec2, self.ecs, self.sd = client("ec2"), client("ecs"), client("servicediscovery")


# --------------------------------------------------------------------------- tests

class TestPassthrough(ProxyTestCase):
    def test_unrelated_call_passes_through(self):
        ident = client("sts").get_caller_identity()
        self.assertEqual(ident["Account"], "123456789012")
        last = calls()[-1]
        self.assertEqual((last["service"], last["operation"], last["status"]), ("other", "GetCallerIdentity", 200))
        self.assertIsNone(last["injected"])

    def test_moto_admin_api_passes_through(self):
        with OPENER.open(PROXY + "/moto-api/", timeout=10) as r:
            self.assertEqual(r.status, 200)

    def test_chunked_body_and_keep_alive(self):
        host, port = PROXY.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.split("//")[1], int(port), timeout=10)
        auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00"
        body = b"Action=DescribeVpcs&Version=2016-11-15"
        # 1: chunked request body
        conn.putrequest("POST", "/")
        for k, v in (("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), ("Authorization", auth),
                     ("Transfer-Encoding", "chunked")):
            conn.putheader(k, v)
        conn.endheaders()
        for part in (body[:10], body[10:]):
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        r1 = conn.getresponse()
        data1 = r1.read()
        self.assertEqual(r1.status, 200, data1)
        self.assertIn(b"DescribeVpcsResponse", data1)
        self.assertEqual(int(r1.getheader("Content-Length")), len(data1))
        # 2: same connection again (HTTP/1.1 keep-alive), Content-Length body
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                      "Authorization": auth})
        r2 = conn.getresponse()
        self.assertEqual(r2.status, 200)
        self.assertIn(b"DescribeVpcsResponse", r2.read())
        conn.close()
        ops = [c["operation"] for c in calls()[-2:]]
        self.assertEqual(ops, ["DescribeVpcs", "DescribeVpcs"])


class TestLatency(ProxyTestCase):
    def test_fixed_latency(self):
        admin({"latency_ms": 300})
        t0 = time.monotonic()
        self.ec2.describe_vpcs()
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(calls()[-1]["injected"], "latency")

    def test_per_operation_latency(self):
        admin({"latency_op": {"DescribeAvailabilityZones": 600}})
        t0 = time.monotonic()
        self.ec2.describe_availability_zones()
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        self.ec2.describe_vpcs()  # not delayed
        self.assertIsNone(calls()[-1]["injected"])

    def test_latency_does_not_serialize_concurrent_calls(self):
        admin({"latency_ms": 800})
        clear_calls()
        clients = [client("ec2") for _ in range(4)]
        threads = [threading.Thread(target=c.describe_availability_zones) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        entries = [c for c in calls() if c["operation"] == "DescribeAvailabilityZones"]
        self.assertEqual(len(entries), 4)
        # Each call's [start, end] interval; sleeping in the handler thread lets them overlap.
        spans = sorted((c["ts"] - c["latency_ms"] / 1000.0, c["ts"]) for c in entries)
        self.assertTrue(any(spans[i + 1][0] < spans[i][1] for i in range(3)), spans)

    def test_a_client_that_hangs_up_before_its_answer_is_logged_without_a_traceback(self):
        # A killed secep hangs up mid-call; the proxy used to print a BrokenPipeError traceback for each.
        admin({"latency_ms": 300})
        clear_calls()
        proxy_log = os.path.join(TMP, "proxy.log")
        log_before = os.path.getsize(proxy_log)
        host, port = urllib.parse.urlsplit(PROXY).netloc.split(":")
        body = b"Action=DescribeVpcs&Version=2016-11-15"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: ec2.us-east-1.amazonaws.com\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            # Reset instead of FIN, so that the proxy's write fails at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 5
        while not calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([c["operation"] for c in calls()], ["DescribeVpcs"])
        time.sleep(0.3)  # the failed write comes just after the log entry
        with open(proxy_log) as f:
            f.seek(log_before)
            self.assertNotIn("Traceback", f.read())


class TestThrottling(ProxyTestCase):
    def test_ec2_mutating_bucket(self):
        tag = uid()
        admin({"throttle": {"ec2-mutating": "0.001:2"}})
        make_vpc(self.ec2, tag)
        make_vpc(self.ec2, tag)
        with self.assertRaises(ClientError) as ctx:
            make_vpc(self.ec2, tag)
        code, status, msg = error_of(ctx)
        self.assertEqual((code, status, msg), ("RequestLimitExceeded", 503, "Request limit exceeded."))
        self.assertTrue(ctx.exception.response["ResponseMetadata"]["RequestId"])
        self.ec2.describe_vpcs()  # ec2-read has no bucket
        self.assertEqual(len(vpcs_tagged(self.ec2, tag)), 2)  # the throttled call was not forwarded
        self.assertEqual([c["injected"] for c in calls() if c["operation"] == "CreateVpc"][-1], "throttle")

    def test_ecs_read_bucket(self):
        admin({"throttle": {"ecs-read": "0.001:1"}})
        self.ecs.list_clusters()
        with self.assertRaises(ClientError) as ctx:
            self.ecs.list_clusters()
        code, status, msg = error_of(ctx)
        self.assertEqual((code, status, msg), ("ThrottlingException", 400, "Rate exceeded"))
        self.assertTrue(ctx.exception.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid"))
        self.ecs.create_cluster(clusterName=f"thr-{uid()}")  # ecs-mutating is unlimited

    def test_cloud_map_read_bucket_refills(self):
        # 1 token/s: the second call comes well within a second even on a loaded machine (at 20/s, a 50 ms gap
        # under load refilled the bucket and made this test flaky).
        admin({"throttle": {"sd-read": "1:1"}})
        self.sd.list_namespaces()
        with self.assertRaises(ClientError) as ctx:
            self.sd.list_namespaces()
        self.assertEqual(error_of(ctx)[:2], ("ThrottlingException", 400))
        time.sleep(1.1)  # one token refilled
        self.sd.list_namespaces()

    def test_cloud_map_discover_instances_uses_request_limit_exceeded(self):
        admin({"throttle": {"sd-read": "0.001:1"}})
        try:
            self.sd.discover_instances(NamespaceName="nope.local", ServiceName="nope")
        except ClientError as e:  # moto's own answer for an unknown namespace; a token was used
            self.assertNotEqual(e.response["Error"]["Code"], "RequestLimitExceeded")
        with self.assertRaises(ClientError) as ctx:
            self.sd.discover_instances(NamespaceName="nope.local", ServiceName="nope")
        self.assertEqual(error_of(ctx)[:2], ("RequestLimitExceeded", 400))


class TestFaults(ProxyTestCase):
    def _outcomes(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            try:
                self.ec2.describe_vpcs()
                out.append("ok")
            except ClientError as e:
                out.append(e.response["Error"]["Code"])
        return out

    def test_fault_rate_is_seeded_and_deterministic(self):
        admin({"fault_rate": 0.5, "fault_seed": 42})
        first = self._outcomes(20)
        admin({"fault_rate": 0.5, "fault_seed": 42})  # re-seeds
        second = self._outcomes(20)
        self.assertEqual(first, second)
        rng = random.Random(42)  # the proxy's documented algorithm
        expected = [rng.choice(("InternalError", "ServiceUnavailable")) if rng.random() < 0.5 else "ok" for _ in range(20)]
        self.assertEqual(first, expected)
        self.assertIn("ok", first)
        self.assertTrue({"InternalError", "ServiceUnavailable"} & set(first))

    def test_faulted_call_creates_nothing(self):
        tag = uid()
        admin({"fault_rate": 1.0, "fault_seed": 7})
        with self.assertRaises(ClientError) as ctx:
            make_vpc(self.ec2, tag)
        code, status, _ = error_of(ctx)
        self.assertIn((code, status), {("InternalError", 500), ("ServiceUnavailable", 503)})
        with self.assertRaises(ClientError) as ctx:
            self.ecs.create_cluster(clusterName=f"fault-{tag}")
        self.assertIn(error_of(ctx)[:2], {("InternalError", 500), ("ServiceUnavailable", 503)})
        admin({"reset": True})
        self.assertEqual(vpcs_tagged(self.ec2, tag), [])
        self.assertEqual(self.ecs.describe_clusters(clusters=[f"fault-{tag}"])["clusters"], [])
        self.assertEqual([c["injected"] for c in calls() if c["operation"] in ("CreateVpc", "CreateCluster")][-2:],
                         ["fault", "fault"])

    def test_fail_nth_hits_exactly_the_nth_call(self):
        vpc = make_vpc(self.ec2, uid())
        admin({"fail_nth": ["CreateSubnet:2"]})
        self.ec2.create_subnet(VpcId=vpc, CidrBlock=self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].replace("0.0/16", "1.0/24"))
        base = self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].rsplit(".", 2)[0]
        with self.assertRaises(ClientError) as ctx:
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base}.2.0/24")
        self.assertEqual(error_of(ctx)[:2], ("InternalError", 500))
        self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base}.3.0/24")
        self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base}.4.0/24")
        cidrs = sorted(s["CidrBlock"] for s in self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"])
        self.assertEqual(cidrs, [f"{base}.1.0/24", f"{base}.3.0/24", f"{base}.4.0/24"])
        self.assertEqual([c["injected"] for c in calls() if c["operation"] == "CreateSubnet"][-4:],
                         [None, "fail-nth", None, None])

    def test_fail_nth_custom_code_and_status(self):
        admin({"fail_nth": ["CreateCluster:1:ServiceUnavailable:503", "ListNamespaces:1:ServerException"]})
        with self.assertRaises(ClientError) as ctx:
            self.ecs.create_cluster(clusterName=f"nth-{uid()}")
        self.assertEqual(error_of(ctx)[:2], ("ServiceUnavailable", 503))
        with self.assertRaises(ClientError) as ctx:
            self.sd.list_namespaces()
        self.assertEqual(error_of(ctx)[:2], ("ServerException", 500))
        self.sd.list_namespaces()

    def test_changing_a_rule_resets_its_counter(self):
        admin({"fail_nth": ["DescribeVpcs:2"]})
        self.ec2.describe_vpcs()
        admin({"fail_nth": ["DescribeVpcs:2"]})  # counter back to 0
        self.ec2.describe_vpcs()
        with self.assertRaises(ClientError):
            self.ec2.describe_vpcs()

    def test_fail_after_nth_creates_but_reports_failure(self):
        tag = uid()
        admin({"fail_after_nth": ["CreateVpc:1"]})
        with self.assertRaises(ClientError) as ctx:
            make_vpc(self.ec2, tag)
        self.assertEqual(error_of(ctx)[:2], ("InternalError", 500))
        self.assertEqual(len(vpcs_tagged(self.ec2, tag)), 1)  # the response was "lost", the VPC exists
        make_vpc(self.ec2, tag)  # the 2nd call is normal
        self.assertEqual(len(vpcs_tagged(self.ec2, tag)), 2)
        self.assertIn("fail-after-nth", [c["injected"] for c in calls()])



class TestKillSwitch(ProxyTestCase):
    def test_kills_the_client_after_its_kth_successful_mutating_answer_and_forwards_nothing_after(self):
        victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            tag = uid()
            admin({"kill_after_mutating": 2, "kill_pid": victim.pid})
            self.ec2.describe_vpcs()  # reads do not count
            make_vpc(self.ec2, tag)
            self.assertIsNone(victim.poll(), "killed too early")
            make_vpc(self.ec2, tag)  # the 2nd: answered, then the client dies
            self.assertEqual(victim.wait(timeout=10), -signal.SIGKILL)
            with self.assertRaises(ClientError) as ctx:
                make_vpc(self.ec2, tag)  # in flight when the client died: refused, never forwarded
            self.assertEqual(error_of(ctx)[:2], ("ServiceUnavailable", 503))
            admin({"reset": True})
            self.assertEqual(len(vpcs_tagged(self.ec2, tag)), 2)
            log = [c for c in calls() if c["operation"] == "CreateVpc"][-3:]
            self.assertEqual([c.get("killed") for c in log], [None, victim.pid, None])
            self.assertEqual(log[-1]["injected"], "killed")
            make_vpc(self.ec2, tag)  # reset disarms: forwarded again
            self.assertEqual(len(vpcs_tagged(self.ec2, tag)), 3)
        finally:
            victim.kill()
            victim.wait()

    def test_rejects_a_bad_kill_config(self):
        for bad in ({"kill_after_mutating": 0}, {"kill_pid": "x"}, {"kill_after_mutating": True}):
            with self.assertRaises(urllib.error.HTTPError):
                admin(bad)


class TestStrictRules(ProxyTestCase):
    def test_sg_referenced_by_another_group(self):
        vpc = make_vpc(self.ec2, uid())
        a = self.ec2.create_security_group(GroupName=f"a-{uid()}", Description="a", VpcId=vpc)["GroupId"]
        b = self.ec2.create_security_group(GroupName=f"b-{uid()}", Description="b", VpcId=vpc)["GroupId"]
        perm = [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": a}]}]
        self.ec2.authorize_security_group_ingress(GroupId=b, IpPermissions=perm)
        admin({"strict": True})
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_security_group(GroupId=a)
        code, status, msg = error_of(ctx)
        self.assertEqual((code, status, msg), ("DependencyViolation", 400, f"resource {a} has a dependent object"))
        self.assertEqual(calls()[-1]["injected"], "rule:sg-referenced")
        self.assertEqual(len(self.ec2.describe_security_groups(GroupIds=[a])["SecurityGroups"]), 1)
        self.ec2.revoke_security_group_ingress(GroupId=b, IpPermissions=perm)
        self.ec2.delete_security_group(GroupId=a)
        self.ec2.delete_security_group(GroupId=b)

    def test_sg_referenced_by_egress_rule(self):
        vpc = make_vpc(self.ec2, uid())
        a = self.ec2.create_security_group(GroupName=f"a-{uid()}", Description="a", VpcId=vpc)["GroupId"]
        b = self.ec2.create_security_group(GroupName=f"b-{uid()}", Description="b", VpcId=vpc)["GroupId"]
        perm = [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": a}]}]
        self.ec2.authorize_security_group_egress(GroupId=b, IpPermissions=perm)
        admin({"rules": {"sg-referenced": True}})
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_security_group(GroupId=a)
        self.assertEqual(error_of(ctx)[0], "DependencyViolation")
        self.ec2.revoke_security_group_egress(GroupId=b, IpPermissions=perm)
        self.ec2.delete_security_group(GroupId=a)

    def test_rule_switched_off_individually(self):
        vpc = make_vpc(self.ec2, uid())
        a = self.ec2.create_security_group(GroupName=f"a-{uid()}", Description="a", VpcId=vpc)["GroupId"]
        b = self.ec2.create_security_group(GroupName=f"b-{uid()}", Description="b", VpcId=vpc)["GroupId"]
        self.ec2.authorize_security_group_ingress(GroupId=b, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": a}]}])
        snap = admin({"strict": True, "rules": {"sg-referenced": False}})
        self.assertFalse(snap["rules"]["sg-referenced"])
        self.assertTrue(snap["rules"]["eni-in-use"])
        self.ec2.delete_security_group(GroupId=a)  # moto's lenient behaviour shows through

    def test_eni_in_use_by_live_and_just_deleted_service(self):
        t = uid()
        vpc = make_vpc(self.ec2, t)
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].replace("0.0/16", "1.0/24"))["Subnet"]["SubnetId"]
        sg = self.ec2.create_security_group(GroupName=f"svc-{t}", Description="svc", VpcId=vpc)["GroupId"]
        cluster = f"eni-{t}"
        make_fargate_service(self.ecs, cluster, "web", [subnet], [sg])
        admin({"strict": True, "eni_linger_seconds": 3})
        # The service is ACTIVE: its task ENIs hold the subnet and the group.
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_security_group(GroupId=sg)
        self.assertEqual(error_of(ctx), ("DependencyViolation", 400, f"resource {sg} has a dependent object"))
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_subnet(SubnetId=subnet)
        self.assertEqual(error_of(ctx), ("DependencyViolation", 400,
                                         f"The subnet '{subnet}' has dependencies and cannot be deleted."))
        self.ecs.update_service(cluster=cluster, service="web", desiredCount=0)
        self.ecs.delete_service(cluster=cluster, service="web")
        deleted_at = time.monotonic()
        # Just deleted: the Fargate ENIs linger.
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_subnet(SubnetId=subnet)
        self.assertEqual(error_of(ctx)[0], "DependencyViolation")
        self.assertEqual(calls()[-1]["injected"], "rule:eni-in-use")
        time.sleep(max(0.0, 3.2 - (time.monotonic() - deleted_at)))
        self.ec2.delete_subnet(SubnetId=subnet)
        self.ec2.delete_security_group(GroupId=sg)

    def test_cluster_contains_services(self):
        t = uid()
        vpc = make_vpc(self.ec2, t)
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].replace("0.0/16", "1.0/24"))["Subnet"]["SubnetId"]
        cluster = f"ccs-{t}"
        make_fargate_service(self.ecs, cluster, "api", [subnet], [])
        admin({"strict": True})
        with self.assertRaises(ClientError) as ctx:
            self.ecs.delete_cluster(cluster=cluster)
        self.assertEqual(error_of(ctx), ("ClusterContainsServicesException", 400,
                                         "The Cluster cannot be deleted while Services are active."))
        self.assertEqual(self.ecs.describe_clusters(clusters=[cluster])["clusters"][0]["status"], "ACTIVE")
        self.ecs.delete_service(cluster=cluster, service="api", force=True)
        self.assertEqual(self.ecs.delete_cluster(cluster=cluster)["cluster"]["status"], "INACTIVE")

    def test_create_service_idempotency(self):
        t = uid()
        vpc = make_vpc(self.ec2, t)
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].replace("0.0/16", "1.0/24"))["Subnet"]["SubnetId"]
        cluster = f"idem-{t}"
        admin({"strict": True})
        first = make_fargate_service(self.ecs, cluster, "web", [subnet], [], token=f"tok-1-{t}")
        # Same token: AWS answers with the existing service, nothing new is created.
        again = make_fargate_service(self.ecs, cluster, "web", [subnet], [], token=f"tok-1-{t}")
        self.assertEqual(again["serviceArn"], first["serviceArn"])
        self.assertEqual(again["status"], "ACTIVE")
        self.assertEqual(calls()[-1]["injected"], "rule:service-idempotency")
        for token in (f"tok-2-{t}", None):
            with self.assertRaises(ClientError) as ctx:
                make_fargate_service(self.ecs, cluster, "web", [subnet], [], token=token)
            self.assertEqual(error_of(ctx), ("InvalidParameterException", 400, "Creation of service was not idempotent."))
        self.ecs.delete_service(cluster=cluster, service="web", force=True)
        make_fargate_service(self.ecs, cluster, "web", [subnet], [], token=f"tok-2-{t}")  # INACTIVE: a new one is fine
        self.ecs.delete_service(cluster=cluster, service="web", force=True)

    def _namespace(self, t: str) -> tuple[str, str]:
        vpc = make_vpc(self.ec2, t)  # moto: one private namespace per VPC
        op = self.sd.create_private_dns_namespace(Name=f"ns-{t}.local", Vpc=vpc, CreatorRequestId=t)["OperationId"]
        ns = self.sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
        return ns, vpc

    def test_cloud_map_service_with_instances(self):
        t = uid()
        ns, _ = self._namespace(t)
        srv = self.sd.create_service(Name=f"web-{t}", NamespaceId=ns, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]["Id"]
        self.sd.register_instance(ServiceId=srv, InstanceId="i-1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"})
        admin({"strict": True})
        with self.assertRaises(ClientError) as ctx:
            self.sd.delete_service(Id=srv)
        self.assertEqual(error_of(ctx)[:2], ("ResourceInUse", 400))
        self.assertEqual(self.sd.get_service(Id=srv)["Service"]["Id"], srv)
        self.sd.deregister_instance(ServiceId=srv, InstanceId="i-1")
        self.sd.delete_service(Id=srv)
        self.sd.delete_namespace(Id=ns)

    def test_cloud_map_namespace_with_services(self):
        t = uid()
        # A bystander namespace with a service of its own must not block ours (moto ignores ListServices filters).
        other_ns, _ = self._namespace(uid())
        self.sd.create_service(Name=f"bystander-{t}", NamespaceId=other_ns, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})
        ns, _ = self._namespace(t)
        srv = self.sd.create_service(Name=f"api-{t}", NamespaceId=ns, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]["Id"]
        admin({"strict": True})
        with self.assertRaises(ClientError) as ctx:
            self.sd.delete_namespace(Id=ns)
        code, status, msg = error_of(ctx)
        self.assertEqual((code, status), ("ResourceInUse", 400))
        self.assertIn("associated services", msg)
        self.assertEqual(self.sd.get_namespace(Id=ns)["Namespace"]["Id"], ns)
        self.sd.delete_service(Id=srv)
        op = self.sd.delete_namespace(Id=ns)["OperationId"]
        self.assertEqual(self.sd.get_operation(OperationId=op)["Operation"]["Status"], "SUCCESS")

    def test_operation_pending_then_success(self):
        t = uid()
        admin({"rules": {"operation-pending": True}, "namespace_pending_seconds": 2})
        vpc = make_vpc(self.ec2, t)
        t0 = time.monotonic()
        op = self.sd.create_private_dns_namespace(Name=f"pend-{t}.local", Vpc=vpc)["OperationId"]
        statuses = []
        while True:
            s = self.sd.get_operation(OperationId=op)["Operation"]["Status"]
            statuses.append(s)
            if s == "SUCCESS":
                break
            self.assertLess(time.monotonic() - t0, 30, statuses)
            time.sleep(0.25)
        self.assertEqual(statuses[0], "PENDING")
        self.assertGreaterEqual(time.monotonic() - t0, 1.9)
        self.assertIn("rule:operation-pending", [c["injected"] for c in calls()])


AUTH_FAILURE = ("AuthFailure", 401, "You do not have permission to access the specified resource.")


def ec2_raw(body: str, scope: str = "ec2") -> tuple[int, str, bytes]:
    """One EC2 (or other query) call to the proxy, unsigned but with a credential scope: (status, Content-Type, body)."""
    host, port = PROXY.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.split("//")[1], int(port), timeout=10)
    auth = f"AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{scope}/aws4_request, SignedHeaders=host, Signature=00"
    try:
        conn.request("POST", "/", body=body.encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": auth})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        conn.close()


class TestTeardownEdges(ProxyTestCase):
    def test_release_of_an_address_already_released_is_auth_failure(self):
        admin({"strict": True})
        self.assertTrue(admin({})["rules"]["teardown-edges"])  # on under --strict
        alloc = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
        self.ec2.release_address(AllocationId=alloc)  # forwarded, succeeds, remembered
        with self.assertRaises(ClientError) as ctx:
            self.ec2.release_address(AllocationId=alloc)
        self.assertEqual(error_of(ctx), AUTH_FAILURE)
        last = calls()[-1]
        self.assertEqual((last["operation"], last["status"], last["injected"], last["error"]),
                         ("ReleaseAddress", 401, "rule:teardown-edges", "AuthFailure"))
        # The exact wire answer, for the Rust side: EC2's XML error shape with HTTP 401.
        status, ctype, body = ec2_raw(f"Action=ReleaseAddress&AllocationId={alloc}&Version=2016-11-15")
        self.assertEqual((status, ctype), (401, "text/xml;charset=UTF-8"))
        self.assertRegex(body.decode(), r'^<\?xml version="1.0" encoding="UTF-8"\?>\n<Response><Errors><Error>'
                         r"<Code>AuthFailure</Code><Message>You do not have permission to access the specified "
                         r"resource.</Message></Error></Errors><RequestID>[0-9a-f-]{36}</RequestID></Response>$")
        # An id the proxy never saw released (here: unknown to moto too) is moto's answer, and is not remembered.
        bogus = "eipalloc-0123456789abcdef0"
        for _ in range(2):
            with self.assertRaises(ClientError) as ctx:
                self.ec2.release_address(AllocationId=bogus)
            self.assertEqual(error_of(ctx)[:2], ("InvalidAllocationID.NotFound", 400))
            self.assertIsNone(calls()[-1]["injected"])

    def test_rule_off_release_twice_is_motos_not_found_and_is_remembered_for_later(self):
        admin({"strict": True, "rules": {"teardown-edges": False}})
        alloc = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
        self.ec2.release_address(AllocationId=alloc)
        with self.assertRaises(ClientError) as ctx:
            self.ec2.release_address(AllocationId=alloc)
        self.assertEqual(error_of(ctx), ("InvalidAllocationID.NotFound", 400, f"Allocation ID '['{alloc}']' not found."))
        self.assertIsNone(calls()[-1]["injected"])
        admin({"rules": {"teardown-edges": True}})  # a release made while the rule was off counts
        with self.assertRaises(ClientError) as ctx:
            self.ec2.release_address(AllocationId=alloc)
        self.assertEqual(error_of(ctx), AUTH_FAILURE)
        admin({"reset": True, "rules": {"teardown-edges": True}})  # reset forgets the released ids
        with self.assertRaises(ClientError) as ctx:
            self.ec2.release_address(AllocationId=alloc)
        self.assertEqual(error_of(ctx)[:2], ("InvalidAllocationID.NotFound", 400))

    def test_delete_route_table_with_a_subnet_association_passes_moto_through(self):
        # moto 5.2.5 already refuses as AWS does, so teardown-edges adds nothing here: the proxy passes it through.
        vpc = make_vpc(self.ec2, uid())
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, 1))["Subnet"]["SubnetId"]
        rtb = self.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        assoc = self.ec2.associate_route_table(RouteTableId=rtb, SubnetId=subnet)["AssociationId"]
        for cfg in ({"strict": True}, {"strict": False}):
            admin(cfg)
            with self.assertRaises(ClientError) as ctx:
                self.ec2.delete_route_table(RouteTableId=rtb)
            self.assertEqual(error_of(ctx), ("DependencyViolation", 400,
                                             f"The routeTable '{rtb}' has dependencies and cannot be deleted."), cfg)
            last = calls()[-1]
            self.assertEqual((last["operation"], last["status"], last["injected"]), ("DeleteRouteTable", 400, None))
        self.assertEqual(len(self.ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"]), 1)
        admin({"strict": True})
        self.ec2.disassociate_route_table(AssociationId=assoc)
        self.ec2.delete_route_table(RouteTableId=rtb)
        self.ec2.delete_subnet(SubnetId=subnet)


class TestCallLog(ProxyTestCase):
    def test_one_line_per_call_with_fields(self):
        tag = uid()
        admin({"fail_nth": ["DescribeSubnets:1"]})
        clear_calls()
        size_before = os.path.getsize(CALL_LOG)
        self.ec2.describe_vpcs()
        vpc = make_vpc(self.ec2, tag)
        with self.assertRaises(ClientError):
            self.ec2.describe_subnets()
        self.ecs.list_clusters()
        self.sd.list_namespaces()
        client("sts").get_caller_identity()
        got = calls()
        self.assertEqual([(c["service"], c["operation"], c["mutating"]) for c in got], [
            ("ec2", "DescribeVpcs", False), ("ec2", "CreateVpc", True), ("ec2", "DescribeSubnets", False),
            ("ecs", "ListClusters", False), ("servicediscovery", "ListNamespaces", False),
            ("other", "GetCallerIdentity", False)])
        for c in got:
            self.assertTrue({"ts", "service", "operation", "status", "latency_ms", "mutating", "injected", "params"} <= set(c))
            self.assertIsInstance(c["ts"], float)
            self.assertIsInstance(c["latency_ms"], float)
        self.assertEqual(got[1]["params"].get("CidrBlock"), self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"])
        self.assertEqual((got[2]["status"], got[2]["injected"], got[2]["error"]), (500, "fail-nth", "InternalError"))
        # The same lines went to --call-log, and no credentials anywhere.
        with open(CALL_LOG, encoding="utf-8") as f:
            f.seek(size_before)
            file_lines = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(file_lines[:6], got)
        text = json.dumps(got)
        self.assertNotIn("Authorization", text)
        self.assertNotIn("Credential", text)

    def test_ecs_and_cloud_map_mutating_classification_and_params(self):
        clear_calls()
        name = f"log-{uid()}"
        self.ecs.create_cluster(clusterName=name)
        self.ecs.describe_clusters(clusters=[name])
        got = calls()
        self.assertEqual([(c["operation"], c["mutating"]) for c in got], [("CreateCluster", True), ("DescribeClusters", False)])
        self.assertEqual(got[0]["params"], {"clusterName": name})


class TestAdmin(ProxyTestCase):
    def test_bad_config_is_rejected(self):
        for bad in ({"no_such_key": 1}, {"throttle": {"ec2-writes": "1:1"}}, {"fail_nth": ["CreateVpc"]},
                    {"fault_rate": 2}, {"rules": {"nope": True}}, {"call_log": "/tmp/x"}):
            req = urllib.request.Request(PROXY + "/_proxy/config", data=json.dumps(bad).encode(), method="POST")
            with self.assertRaises(urllib.error.HTTPError) as ctx:
                OPENER.open(req, timeout=10)
            self.assertEqual(ctx.exception.code, 400, bad)

    def test_get_config_and_health(self):
        admin({"latency_op": {"CreateVpc": 5}, "throttle": {"sd-mutating": [1, 3]}})
        with OPENER.open(PROXY + "/_proxy/config", timeout=10) as r:
            snap = json.load(r)
        self.assertEqual(snap["latency_op"], {"CreateVpc": 5.0})
        self.assertEqual(snap["throttle"], {"sd-mutating": {"rate": 1.0, "burst": 3.0}})
        self.assertEqual(snap["upstream"], MOTO)
        with OPENER.open(PROXY + "/_proxy/health", timeout=10) as r:
            self.assertTrue(json.load(r)["ok"])


class TestProxyCommandLine(unittest.TestCase):
    def test_config_file_and_flags(self):
        cfg = os.path.join(TMP, "proxy.toml")
        with open(cfg, "w") as f:
            f.write('latency_ms = 1\nfault_seed = 3\nfail_nth = ["CreateVpc:9"]\n'
                    'namespace_pending_seconds = 4\nstrict = true\n\n'
                    '[throttle]\nec2-read = "100:50"\necs-mutating = { rate = 2, burst = 4 }\n\n'
                    '[rules]\noperation-pending = false\n')
        proc = subprocess.Popen(
            [os.path.join(HERE, ".venv/bin/python"), os.path.join(HERE, "proxy.py"), "--upstream", MOTO,
             "--port", "0", "--config", cfg, "--latency-op", "CreateVpc=7", "--throttle", "sd-read=1:2",
             "--no-rule", "eni-in-use", "--watch-pid", str(os.getpid()), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        try:
            url = proc.stdout.readline().strip()
            self.assertRegex(url, r"^http://127\.0\.0\.1:\d+$")
            with OPENER.open(url + "/_proxy/config", timeout=10) as r:
                snap = json.load(r)
            self.assertEqual(snap["latency_ms"], 1.0)
            self.assertEqual(snap["latency_op"], {"CreateVpc": 7.0})
            self.assertEqual(snap["throttle"], {"ec2-read": {"rate": 100.0, "burst": 50.0},
                                                "ecs-mutating": {"rate": 2.0, "burst": 4.0},
                                                "sd-read": {"rate": 1.0, "burst": 2.0}})
            self.assertEqual(snap["fail_nth"], [{"op": "CreateVpc", "n": 9, "code": "InternalError", "status": 500}])
            self.assertEqual(snap["namespace_pending_seconds"], 4.0)
            self.assertFalse(snap["rules"]["operation-pending"])
            self.assertFalse(snap["rules"]["eni-in-use"])
            self.assertTrue(snap["rules"]["sg-referenced"])
            self.assertEqual(client("ec2", url).describe_vpcs()["ResponseMetadata"]["HTTPStatusCode"], 200)
            # {"reset": true} returns to this start-up config, not to all-off.
            snap = admin({"reset": True}, url)
            self.assertEqual(snap["latency_op"], {"CreateVpc": 7.0})
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()

    def test_bad_flag_fails_fast(self):
        r = subprocess.run([os.path.join(HERE, ".venv/bin/python"), os.path.join(HERE, "proxy.py"), "--upstream", MOTO,
                            "--port", "0", "--throttle", "ec2-mutating=5"], capture_output=True, text=True, timeout=30, env=ENV)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertIn("RATE:BURST", r.stderr)


class TestScripts(unittest.TestCase):
    def test_start_reuses_running_server(self):
        again = run_script("start.sh", "--run-dir", TMP, "--port", "0")
        self.assertEqual(again.stdout, MOTO + "\n")
        self.assertIn("reusing", again.stderr)
        again = run_script("start-proxy.sh", "--run-dir", TMP, "--port", "0")
        self.assertEqual(again.stdout, PROXY + "\n")

    def test_port_taken_by_something_else(self):
        other = tempfile.mkdtemp(dir=TMP)
        port = MOTO.rsplit(":", 1)[1]
        r = run_script("start.sh", "--run-dir", other, "--port", port, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "")
        self.assertIn("taken", r.stderr)

    def test_external_endpoint_starts_nothing(self):
        other = tempfile.mkdtemp(dir=TMP)
        r = run_script("start.sh", "--run-dir", other, env=dict(ENV, AWS_ENDPOINT_URL=MOTO))
        self.assertEqual(r.stdout, MOTO + "\n")
        self.assertFalse(os.path.exists(os.path.join(other, "moto.pid")))
        r = run_script("stop.sh", "--run-dir", other)
        self.assertIn("nothing to stop", r.stderr)

    def test_reset_refuses_a_non_moto_endpoint(self):
        class NotMoto(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), NotMoto)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            r = run_script("reset.sh", f"http://127.0.0.1:{srv.server_address[1]}", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("not moto", r.stderr)
        finally:
            srv.shutdown()
            srv.server_close()


# --------------------------------------------------------------------------- AWS's clock

ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"  # private ECR: pullable without NAT


def eventually(fn, timeout: float = 15.0, every: float = 0.1):
    """fn() until it returns something truthy (-> that), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"still not there after {timeout} s: {got!r}")
        time.sleep(every)


def _subnet_cidr(ec2, vpc: str, n: int) -> str:
    return ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"].replace("0.0/16", f"{n}.0/24")


class ClockTestCase(ProxyTestCase):
    """Network made before the clock rules go on, so that only the rule under test acts."""

    def network(self, t: str) -> tuple[str, str, str]:
        vpc = make_vpc(self.ec2, t)
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, 1))["Subnet"]["SubnetId"]
        sg = self.ec2.create_security_group(GroupName=f"g-{t}", Description="g", VpcId=vpc)["GroupId"]
        return vpc, subnet, sg

    def task_def(self, family: str, image: str = ECR_IMAGE, **extra) -> str:
        return self.ecs.register_task_definition(
            family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "app", "image": image, "essential": True}], **extra,
        )["taskDefinition"]["taskDefinitionArn"]

    def service(self, cluster: str, name: str, td: str, subnet: str, sg: str, desired: int = 2,
                breaker: dict | None = None, **extra) -> dict:
        self.ecs.create_cluster(clusterName=cluster)
        kwargs = dict(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=desired, launchType="FARGATE",
                      networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}}, **extra)
        if breaker is not None:
            kwargs["deploymentConfiguration"] = {"deploymentCircuitBreaker": breaker}
        return self.ecs.create_service(**kwargs)["service"]

    def describe(self, cluster: str, name: str) -> dict:
        return self.ecs.describe_services(cluster=cluster, services=[name])["services"][0]


class TestClockScale(ProxyTestCase):
    def test_strict_alone_leaves_every_clock_knob_off(self):
        snap = admin({"strict": True})
        for knob in ("id_propagation_seconds", "linked_role_seconds", "role_propagation_seconds",
                     "endpoint_pending_seconds", "namespace_pending_seconds", "nat_pending_seconds", "rollout_seconds",
                     "eni_linger_seconds", "lb_eni_linger_seconds"):
            self.assertEqual(snap[knob], 0.0, knob)
        self.assertTrue(snap["rules"]["rollout"])
        self.assertEqual(snap["knobs_explicit"], [])

    def test_scale_derives_the_knobs_and_an_explicit_knob_wins(self):
        snap = admin({"clock_scale": 0.01, "rollout_seconds": 3})
        self.assertAlmostEqual(snap["rollout_seconds"], 3.0)  # explicit
        self.assertAlmostEqual(snap["endpoint_pending_seconds"], 0.9)
        self.assertAlmostEqual(snap["nat_pending_seconds"], 1.2)
        self.assertAlmostEqual(snap["id_propagation_seconds"], 0.02)
        self.assertAlmostEqual(snap["linked_role_seconds"], 0.1)
        self.assertAlmostEqual(snap["role_propagation_seconds"], 0.1)
        self.assertAlmostEqual(snap["namespace_pending_seconds"], 0.45)
        self.assertAlmostEqual(snap["eni_linger_seconds"], 0.6)
        self.assertAlmostEqual(snap["lb_eni_linger_seconds"], 1.2)
        self.assertEqual(snap["knobs_explicit"], ["rollout_seconds"])
        snap = admin({"clock_scale": 0.1})  # the explicit knob stays explicit
        self.assertAlmostEqual(snap["rollout_seconds"], 3.0)
        self.assertAlmostEqual(snap["nat_pending_seconds"], 12.0)
        snap = admin({"rollout_seconds": None})  # null: back to the scaled value
        self.assertAlmostEqual(snap["rollout_seconds"], 12.0)

    def test_bad_clock_values_are_rejected(self):
        for bad in ({"clock_scale": -1}, {"rollout_seconds": "soon"}, {"unpullable_images": [""]},
                    {"unhealthy_images": 3}, {"lb_eni_linger_seconds": -1}):
            with self.assertRaises(urllib.error.HTTPError, msg=bad):
                admin(bad)

    def test_flags(self):
        proc = subprocess.Popen(
            [os.path.join(HERE, ".venv/bin/python"), os.path.join(HERE, "proxy.py"), "--upstream", MOTO, "--port", "0",
             "--strict", "--clock-scale", "0.01", "--nat-pending-seconds", "5", "--unpullable-image", "nope",
             "--lb-eni-linger-seconds", "4", "--unhealthy-image", "sick", "--watch-pid", str(os.getpid()), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=ENV)
        try:
            url = proc.stdout.readline().strip()
            with OPENER.open(url + "/_proxy/config", timeout=10) as r:
                snap = json.load(r)
            self.assertAlmostEqual(snap["rollout_seconds"], 1.2)  # --strict --clock-scale 0.01: a 1.2 s rollout
            self.assertAlmostEqual(snap["nat_pending_seconds"], 5.0)
            self.assertEqual(snap["unpullable_images"], ["nope"])
            self.assertAlmostEqual(snap["lb_eni_linger_seconds"], 4.0)
            self.assertEqual(snap["unhealthy_images"], ["sick"])
            self.assertTrue(snap["rules"]["lb-rules"] and snap["rules"]["lb-eni-linger"])
            self.assertEqual(snap["clock_scale"], 0.01)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()


class TestIdPropagation(ClockTestCase):
    def test_new_ids_are_not_found_for_a_while(self):
        t = uid()
        admin({"rules": {"id-propagation": True}, "id_propagation_seconds": 0.8})
        cidr = f"10.{next(_cidr)}.0.0/16"
        vpc = self.ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        created = time.monotonic()
        with self.assertRaises(ClientError) as ctx:
            self.ec2.describe_vpcs(VpcIds=[vpc])
        self.assertEqual(error_of(ctx), ("InvalidVpcID.NotFound", 400, f"The vpc ID '{vpc}' does not exist"))
        self.assertEqual(calls()[-1]["injected"], "rule:id-propagation")
        # A filter just matches: not an error.
        self.ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
        with self.assertRaises(ClientError) as ctx:
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr.replace("0.0/16", "1.0/24"))
        self.assertEqual(error_of(ctx)[0], "InvalidVpcID.NotFound")
        time.sleep(max(0.0, 0.85 - (time.monotonic() - created)))
        self.assertEqual(self.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["VpcId"], vpc)
        sg = self.ec2.create_security_group(GroupName=f"p-{t}", Description="p", VpcId=vpc)["GroupId"]
        with self.assertRaises(ClientError) as ctx:
            self.ec2.describe_security_groups(GroupIds=[sg])
        self.assertEqual(error_of(ctx), ("InvalidGroup.NotFound", 400, f"The security group '{sg}' does not exist"))
        with self.assertRaises(ClientError) as ctx:
            self.ec2.create_tags(Resources=[sg], Tags=[{"Key": "k", "Value": "v"}])
        self.assertEqual(error_of(ctx)[0], "InvalidGroup.NotFound")

    def test_ecs_create_service_with_a_new_subnet_or_group(self):
        t = uid()
        vpc = make_vpc(self.ec2, t)
        old_subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, 1))["Subnet"]["SubnetId"]
        td = self.task_def(f"idp-{t}")
        self.ecs.create_cluster(clusterName=f"idp-{t}")
        admin({"rules": {"id-propagation": True}, "id_propagation_seconds": 0.8})
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, 2))["Subnet"]["SubnetId"]
        sg = self.ec2.create_security_group(GroupName=f"n-{t}", Description="n", VpcId=vpc)["GroupId"]
        net = lambda s, g: {"awsvpcConfiguration": {"subnets": [s], "securityGroups": [g]}}  # noqa: E731
        with self.assertRaises(ClientError) as ctx:
            self.ecs.create_service(cluster=f"idp-{t}", serviceName="web", taskDefinition=td, desiredCount=1,
                                    launchType="FARGATE", networkConfiguration=net(subnet, sg))
        self.assertEqual(error_of(ctx), ("InvalidParameterException", 400,
                                         f"Error retrieving subnet information for [{subnet}]: The subnet ID '{subnet}' "
                                         "does not exist (ErrorCode: InvalidSubnetID.NotFound)"))
        with self.assertRaises(ClientError) as ctx:
            self.ecs.create_service(cluster=f"idp-{t}", serviceName="web", taskDefinition=td, desiredCount=1,
                                    launchType="FARGATE", networkConfiguration=net(old_subnet, sg))
        self.assertEqual(error_of(ctx), ("InvalidParameterException", 400,
                                         f"Error retrieving security group information for [{sg}]: The security group "
                                         f"'{sg}' does not exist (ErrorCode: InvalidGroup.NotFound)"))
        self.assertEqual(self.ecs.describe_services(cluster=f"idp-{t}", services=["web"])["services"], [])  # not forwarded
        time.sleep(0.85)
        self.ecs.create_service(cluster=f"idp-{t}", serviceName="web", taskDefinition=td, desiredCount=1,
                                launchType="FARGATE", networkConfiguration=net(subnet, sg))

    def test_reset_forgets_the_new_ids(self):
        admin({"rules": {"id-propagation": True}, "id_propagation_seconds": 30})
        vpc = make_vpc(self.ec2, uid())
        with self.assertRaises(ClientError):
            self.ec2.describe_vpcs(VpcIds=[vpc])
        admin({"reset": True, "rules": {"id-propagation": True}, "id_propagation_seconds": 30})
        self.ec2.describe_vpcs(VpcIds=[vpc])


class TestLinkedRolePropagation(ProxyTestCase):
    def test_a_new_ecs_linked_role_cannot_be_assumed_for_a_while(self):
        iam = client("iam")
        admin({"rules": {"linked-role-propagation": True}, "linked_role_seconds": 0.8})
        role = iam.create_service_linked_role(AWSServiceName="ecs.amazonaws.com")["Role"]["RoleName"]
        try:
            created = time.monotonic()
            self.assertEqual(calls()[-1]["service"], "other")  # IAM stays `other` in the log
            for call in (lambda: self.ecs.create_cluster(clusterName=f"slr-{uid()}"),
                         lambda: self.ecs.create_service(cluster="default", serviceName=f"s-{uid()}", desiredCount=0)):
                with self.assertRaises(ClientError) as ctx:
                    call()
                self.assertEqual(error_of(ctx), ("InvalidParameterException", 400,
                                                 "Unable to assume the service linked role. Please verify that the ECS "
                                                 "service linked role exists."))
            self.assertEqual(calls()[-1]["injected"], "rule:linked-role-propagation")
            time.sleep(max(0.0, 0.85 - (time.monotonic() - created)))
            self.ecs.create_cluster(clusterName=f"slr-{uid()}")
        finally:
            iam.delete_service_linked_role(RoleName=role)


class TestRolePropagation(ClockTestCase):
    def test_a_new_role_cannot_be_passed_to_a_task_definition_for_a_while(self):
        t = uid()
        iam = client("iam")
        admin({"rules": {"role-propagation": True}, "role_propagation_seconds": 0.8})
        arn = iam.create_role(RoleName=f"exec-{t}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        created = time.monotonic()
        with self.assertRaises(ClientError) as ctx:
            self.task_def(f"role-{t}", executionRoleArn=arn)
        self.assertEqual(error_of(ctx), ("ClientException", 400, f"ECS was unable to assume the role '{arn}' that was "
                                         "provided for this task. Please verify that the role being passed has the proper "
                                         "trust relationship and permissions and that your IAM user has permissions to "
                                         "pass this role."))
        self.task_def(f"role-{t}", executionRoleArn="arn:aws:iam::123456789012:role/other")  # another role is fine
        time.sleep(max(0.0, 0.85 - (time.monotonic() - created)))
        self.task_def(f"role-{t}", executionRoleArn=arn)

    def test_the_first_tasks_fail_right_after_the_policy_is_attached(self):
        t = uid()
        _, subnet, sg = self.network(t)
        iam = client("iam")
        arn = iam.create_role(RoleName=f"exec2-{t}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        td = self.task_def(f"role2-{t}", executionRoleArn=arn)
        admin({"rules": {"role-propagation": True, "rollout": True}, "role_propagation_seconds": 0.5,
               "rollout_seconds": 0.6})
        iam.attach_role_policy(RoleName=f"exec2-{t}", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
        self.service(f"role2-{t}", "web", td, subnet, sg, desired=1)
        done = eventually(lambda: (s := self.describe(f"role2-{t}", "web"))["deployments"][0]["rolloutState"]
                          == "COMPLETED" and s)
        self.assertGreaterEqual(done["deployments"][0]["failedTasks"], 1)
        stopped = self.ecs.list_tasks(cluster=f"role2-{t}", serviceName="web", desiredStatus="STOPPED")["taskArns"]
        task = self.ecs.describe_tasks(cluster=f"role2-{t}", tasks=stopped[:1])["tasks"][0]
        self.assertTrue(task["stoppedReason"].startswith(f"ECS was unable to assume the role '{arn}'"), task)


class TestEndpointPending(ClockTestCase):
    def test_interface_endpoint_pending_then_available_and_its_enis_linger(self):
        t = uid()
        vpc, subnet, sg = self.network(t)
        rt = self.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        # The linger is long enough to outlast two calls on a loaded machine (0.8 s did not, under cargo test).
        admin({"rules": {"endpoint-pending": True, "eni-in-use": True}, "endpoint_pending_seconds": 0.8,
               "eni_linger_seconds": 3.0})
        ep = self.ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.ecr.dkr",
                                          VpcEndpointType="Interface", SubnetIds=[subnet], SecurityGroupIds=[sg])
        created = time.monotonic()
        gw = self.ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt],
                                          VpcEndpointType="Gateway")["VpcEndpoint"]
        ep_id = ep["VpcEndpoint"]["VpcEndpointId"]
        self.assertEqual(ep["VpcEndpoint"]["State"], "pending")
        self.assertEqual(gw["State"], "available")  # gateway endpoints are available at once
        states = {e["VpcEndpointId"]: e["State"] for e in
                  self.ec2.describe_vpc_endpoints(VpcEndpointIds=[ep_id, gw["VpcEndpointId"]])["VpcEndpoints"]}
        self.assertEqual(states, {ep_id: "pending", gw["VpcEndpointId"]: "available"})
        self.assertEqual(calls()[-1]["injected"], "rule:endpoint-pending")
        eventually(lambda: self.ec2.describe_vpc_endpoints(VpcEndpointIds=[ep_id])["VpcEndpoints"][0]["State"]
                   == "available")
        self.assertGreaterEqual(time.monotonic() - created, 0.75)
        # Deleted: its ENIs hold the subnet and the group a while.
        self.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep_id])
        deleted = time.monotonic()
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_subnet(SubnetId=subnet)
        self.assertEqual(error_of(ctx), ("DependencyViolation", 400,
                                         f"The subnet '{subnet}' has dependencies and cannot be deleted."))
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_security_group(GroupId=sg)
        self.assertEqual(error_of(ctx), ("DependencyViolation", 400, f"resource {sg} has a dependent object"))
        time.sleep(max(0.0, 3.05 - (time.monotonic() - deleted)))
        self.ec2.delete_subnet(SubnetId=subnet)
        self.ec2.delete_security_group(GroupId=sg)


class TestNatPending(ClockTestCase):
    def test_nat_gateway_pending_then_available_then_deleting(self):
        t = uid()
        vpc, subnet, _ = self.network(t)
        alloc = self.ec2.allocate_address(Domain="vpc")
        admin({"rules": {"nat-pending": True}, "nat_pending_seconds": 0.8})
        nat = self.ec2.create_nat_gateway(SubnetId=subnet, AllocationId=alloc["AllocationId"])["NatGateway"]
        created = time.monotonic()
        self.assertEqual(nat["State"], "pending")
        state = lambda: self.ec2.describe_nat_gateways(NatGatewayIds=[nat["NatGatewayId"]])["NatGateways"][0]["State"]  # noqa: E731
        self.assertEqual(state(), "pending")
        eventually(lambda: state() == "available")
        self.assertGreaterEqual(time.monotonic() - created, 0.75)
        with self.assertRaises(ClientError) as ctx:  # a live NAT gateway holds its subnet and its address
            self.ec2.delete_subnet(SubnetId=subnet)
        self.assertEqual(error_of(ctx)[0], "DependencyViolation")
        self.ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
        deleted = time.monotonic()
        self.assertEqual(state(), "deleting")
        with self.assertRaises(ClientError) as ctx:
            self.ec2.release_address(AllocationId=alloc["AllocationId"])
        self.assertEqual(error_of(ctx), ("InvalidIPAddress.InUse", 400, f"Address {alloc['PublicIp']} is in use."))
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_subnet(SubnetId=subnet)
        self.assertEqual(error_of(ctx), ("DependencyViolation", 400,
                                         f"The subnet '{subnet}' has dependencies and cannot be deleted."))
        eventually(lambda: state() == "deleted")
        self.assertGreaterEqual(time.monotonic() - deleted, 0.75)
        self.ec2.release_address(AllocationId=alloc["AllocationId"])
        self.ec2.delete_subnet(SubnetId=subnet)


class TestRollout(ClockTestCase):
    R = 0.6

    def on(self, **extra) -> None:
        admin({"rules": {"rollout": True}, "rollout_seconds": self.R, **extra})

    def test_in_progress_then_completed_and_a_count_change_starts_no_deployment(self):
        t = uid()
        _, subnet, sg = self.network(t)
        td = self.task_def(f"ro-{t}")
        self.on()
        created = self.service(f"ro-{t}", "web", td, subnet, sg, desired=2)
        dep = created["deployments"][0]
        self.assertEqual((dep["status"], dep["rolloutState"], dep["runningCount"], dep["pendingCount"]),
                         ("PRIMARY", "IN_PROGRESS", 0, 2))
        self.assertEqual(dep["rolloutStateReason"], f"ECS deployment {dep['id']} in progress.")
        seen = []
        while True:
            s = self.describe(f"ro-{t}", "web")
            d = s["deployments"][0]
            seen.append((d["rolloutState"], s["runningCount"], s["pendingCount"]))
            if d["rolloutState"] == "COMPLETED":
                break
            time.sleep(0.05)
        self.assertEqual(seen[-1], ("COMPLETED", 2, 0))
        self.assertIn(("IN_PROGRESS", 1, 1), seen)  # the ramp
        self.assertEqual(d["id"], dep["id"])
        self.assertEqual(d["rolloutStateReason"], f"ECS deployment {dep['id']} completed.")
        messages = [e["message"] for e in s["events"]]
        self.assertEqual(messages[0], "(service web) has reached a steady state.")
        self.assertIn(f"(service web) (deployment {dep['id']}) deployment completed.", messages)
        self.assertEqual(len([m for m in messages if m.startswith("(service web) has started 1 tasks: (task ")]), 2)
        self.assertTrue(all(isinstance(e["createdAt"], dt.datetime) and e["id"] for e in s["events"]))
        # A desired-count change alone starts no deployment.
        self.ecs.update_service(cluster=f"ro-{t}", service="web", desiredCount=3)
        s = self.describe(f"ro-{t}", "web")
        self.assertEqual([(d["id"], d["rolloutState"]) for d in s["deployments"]], [(dep["id"], "COMPLETED")])
        self.assertEqual((s["desiredCount"], s["runningCount"]), (3, 3))
        # forceNewDeployment does: a new id, the old one ACTIVE until the new one completes.
        up = self.ecs.update_service(cluster=f"ro-{t}", service="web", forceNewDeployment=True)["service"]
        self.assertEqual([d["status"] for d in up["deployments"]], ["PRIMARY", "ACTIVE"])
        self.assertNotEqual(up["deployments"][0]["id"], dep["id"])
        self.assertEqual(up["deployments"][1]["id"], dep["id"])
        s = eventually(lambda: (s := self.describe(f"ro-{t}", "web")) and len(s["deployments"]) == 1 and s)
        self.assertEqual(s["deployments"][0]["id"], up["deployments"][0]["id"])

    def test_a_desired_count_of_zero_completes_at_once(self):
        t = uid()
        _, subnet, sg = self.network(t)
        self.on()
        s = self.service(f"ro0-{t}", "idle", self.task_def(f"ro0-{t}", "unpullable"), subnet, sg, desired=0)
        self.assertEqual(s["deployments"][0]["rolloutState"], "COMPLETED")

    def test_circuit_breaker_fails_the_deployment_with_stopped_tasks(self):
        t = uid()
        _, subnet, sg = self.network(t)
        td = self.task_def(f"cb-{t}", "registry.example/unpullable-app:1")
        self.on()
        self.service(f"cb-{t}", "web", td, subnet, sg, desired=1, breaker={"enable": True, "rollback": True})
        s = eventually(lambda: (s := self.describe(f"cb-{t}", "web"))["deployments"][0]["rolloutState"] != "IN_PROGRESS"
                       and s)
        d = s["deployments"][0]
        self.assertEqual((d["status"], d["rolloutState"], d["rolloutStateReason"]),
                         ("PRIMARY", "FAILED", "ECS deployment circuit breaker: tasks failed to start."))
        self.assertGreaterEqual(d["failedTasks"], 3)
        self.assertEqual(s["runningCount"], 0)
        self.assertIn(f"(service web) (deployment {d['id']}) deployment failed: tasks failed to start.",
                      [e["message"] for e in s["events"]])
        arns = self.ecs.list_tasks(cluster=f"cb-{t}", serviceName="web", desiredStatus="STOPPED")["taskArns"]
        self.assertGreaterEqual(len(arns), 3)
        self.assertRegex(arns[0], rf"^arn:aws:ecs:us-east-1:123456789012:task/cb-{t}/[0-9a-f]{{32}}$")
        tasks = self.ecs.describe_tasks(cluster=f"cb-{t}", tasks=arns)["tasks"]
        self.assertEqual(len(tasks), len(arns))
        reason = ("CannotPullContainerError: pull image manifest has been retried 7 time(s): failed to resolve ref "
                  "registry.example/unpullable-app:1: not found")
        for task in tasks:
            self.assertEqual((task["lastStatus"], task["desiredStatus"], task["stopCode"], task["stoppedReason"]),
                             ("STOPPED", "STOPPED", "TaskFailedToStart", reason))
            self.assertEqual((task["group"], task["startedBy"], task["taskDefinitionArn"]), ("service:web", d["id"], td))
            self.assertEqual(task["containers"][0]["reason"], reason)
            self.assertIn("stoppedAt", task)
        # startedBy finds them too; RUNNING stays moto's answer.
        self.assertEqual(len(self.ecs.list_tasks(cluster=f"cb-{t}", startedBy=d["id"], desiredStatus="STOPPED")["taskArns"]),
                         len(arns))
        self.assertEqual(self.ecs.list_tasks(cluster=f"cb-{t}", serviceName="web")["taskArns"], [])

    def test_rollback_to_the_last_completed_deployment(self):
        t = uid()
        _, subnet, sg = self.network(t)
        good = self.task_def(f"rb-{t}")
        bad = self.task_def(f"rb-{t}", "unpullable")
        self.on()
        first = self.service(f"rb-{t}", "web", good, subnet, sg, desired=1, breaker={"enable": True, "rollback": True})
        first_id = first["deployments"][0]["id"]
        eventually(lambda: self.describe(f"rb-{t}", "web")["deployments"][0]["rolloutState"] == "COMPLETED")
        clear_calls()
        failing = self.ecs.update_service(cluster=f"rb-{t}", service="web", taskDefinition=bad)["service"]
        failing_id = failing["deployments"][0]["id"]
        self.assertNotEqual(failing_id, first_id)  # moto keeps the old id: the proxy mints one
        self.assertEqual([(d["id"], d["status"]) for d in failing["deployments"]],
                         [(failing_id, "PRIMARY"), (first_id, "ACTIVE")])
        s = eventually(lambda: (s := self.describe(f"rb-{t}", "web"))["deployments"][0]["id"] != failing_id and s)
        rollback = s["deployments"][0]
        self.assertEqual((rollback["status"], rollback["taskDefinition"]), ("PRIMARY", good))
        self.assertNotIn(rollback["id"], (first_id, failing_id))
        self.assertEqual(s["taskDefinition"], good)
        listed = {d["id"]: (d["status"], d["rolloutState"]) for d in s["deployments"]}
        if rollback["rolloutState"] == "IN_PROGRESS":
            self.assertEqual(listed[failing_id], ("ACTIVE", "FAILED"))
        messages = [e["message"] for e in s["events"]]
        self.assertIn(f"(service web) rolling back to deployment {first_id}.", messages)
        self.assertLess(messages.index(f"(service web) rolling back to deployment {first_id}."),
                        messages.index(f"(service web) (deployment {failing_id}) deployment failed: tasks failed to start."))
        s = eventually(lambda: (s := self.describe(f"rb-{t}", "web"))["deployments"][0]["rolloutState"] == "COMPLETED"
                       and s)
        self.assertEqual([d["id"] for d in s["deployments"]], [rollback["id"]])  # the failed one is gone
        # moto agrees, and the proxy's own UpdateService is not a client call.
        upstream = client("ecs", MOTO).describe_services(cluster=f"rb-{t}", services=["web"])["services"][0]
        self.assertEqual(upstream["taskDefinition"], good)
        self.assertEqual([c["operation"] for c in calls() if c["operation"] == "UpdateService"], ["UpdateService"])

    def test_without_a_circuit_breaker_a_failing_deployment_hangs(self):
        t = uid()
        _, subnet, sg = self.network(t)
        self.on()
        self.service(f"hang-{t}", "web", self.task_def(f"hang-{t}", "unpullable"), subnet, sg, desired=1)
        first = self.describe(f"hang-{t}", "web")["deployments"][0]["failedTasks"]
        time.sleep(2 * self.R)
        d = self.describe(f"hang-{t}", "web")["deployments"][0]
        self.assertEqual(d["rolloutState"], "IN_PROGRESS")
        self.assertGreater(d["failedTasks"], max(first, 3))

    def test_a_public_image_needs_a_nat_route(self):
        t = uid()
        vpc, subnet, sg = self.network(t)
        nat_subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, 2))["Subnet"]["SubnetId"]
        public = self.task_def(f"eg-{t}", "public.ecr.aws/nginx/nginx:latest")
        self.on()
        self.service(f"eg-{t}", "web", public, subnet, sg, desired=1, breaker={"enable": True, "rollback": False})
        s = eventually(lambda: (s := self.describe(f"eg-{t}", "web"))["deployments"][0]["rolloutState"] == "FAILED" and s)
        arns = self.ecs.list_tasks(cluster=f"eg-{t}", serviceName="web", desiredStatus="STOPPED")["taskArns"]
        reason = self.ecs.describe_tasks(cluster=f"eg-{t}", tasks=arns[:1])["tasks"][0]["stoppedReason"]
        self.assertTrue(reason.startswith("ResourceInitializationError: unable to pull secrets or registry auth"), reason)
        self.assertIn("public.ecr.aws/nginx/nginx:latest", reason)
        # With a default route through a NAT gateway, the same image starts.
        alloc = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = self.ec2.create_nat_gateway(SubnetId=nat_subnet, AllocationId=alloc)["NatGateway"]["NatGatewayId"]
        rt = self.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        self.ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
        self.ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
        self.service(f"eg-{t}", "web2", public, subnet, sg, desired=1)
        eventually(lambda: self.describe(f"eg-{t}", "web2")["deployments"][0]["rolloutState"] == "COMPLETED")


class TestTasksHoldCloudMapInstances(ClockTestCase):
    def test_running_tasks_hold_the_cloud_map_service(self):
        t = uid()
        _, subnet, sg = self.network(t)
        vpc = make_vpc(self.ec2, t)
        op = self.sd.create_private_dns_namespace(Name=f"held-{t}.local", Vpc=vpc)["OperationId"]
        ns = self.sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
        srv = self.sd.create_service(Name=f"web-{t}", NamespaceId=ns, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]
        td = self.task_def(f"held-{t}")
        admin({"rules": {"rollout": True, "sd-service-in-use": True}, "rollout_seconds": 0.4, "eni_linger_seconds": 0.6})
        self.service(f"held-{t}", "web", td, subnet, sg, desired=2, serviceRegistries=[{"registryArn": srv["Arn"]}])
        with self.assertRaises(ClientError) as ctx:  # desired > 0: held even before a task runs
            self.sd.delete_service(Id=srv["Id"])
        self.assertEqual(error_of(ctx)[:2], ("ResourceInUse", 400))
        instances = eventually(lambda: len(got := self.sd.list_instances(ServiceId=srv["Id"])["Instances"]) == 2 and got)
        self.assertTrue(all(re.fullmatch(r"[0-9a-f]{32}", i["Id"]) and i["Attributes"]["AWS_INSTANCE_IPV4"]
                            for i in instances), instances)
        self.ecs.update_service(cluster=f"held-{t}", service="web", desiredCount=0)
        self.ecs.delete_service(cluster=f"held-{t}", service="web")
        deleted = time.monotonic()
        with self.assertRaises(ClientError) as ctx:  # the stopped tasks' instances linger like their ENIs
            self.sd.delete_service(Id=srv["Id"])
        self.assertEqual(error_of(ctx)[:2], ("ResourceInUse", 400))
        self.assertEqual(calls()[-1]["injected"], "rule:sd-service-in-use")
        eventually(lambda: self.sd.list_instances(ServiceId=srv["Id"])["Instances"] == [])
        self.assertGreaterEqual(time.monotonic() - deleted, 0.5)
        self.sd.delete_service(Id=srv["Id"])


# --------------------------------------------------------------------------- load balancers (elbv2)

ELB_NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"


class LbTestCase(ClockTestCase):
    """A VPC with two public subnets (two zones), a group and, unless told otherwise, an attached internet gateway."""

    def setUp(self) -> None:
        super().setUp()
        self.elb = client("elbv2")

    def lb_network(self, t: str, igw: bool = True) -> tuple[str, list[str], str, str | None]:
        vpc = make_vpc(self.ec2, t)
        subnets = [self.ec2.create_subnet(VpcId=vpc, CidrBlock=_subnet_cidr(self.ec2, vpc, n),
                                          AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"] for n, z in ((1, "a"), (2, "b"))]
        sg = self.ec2.create_security_group(GroupName=f"lb-{t}", Description="lb", VpcId=vpc)["GroupId"]
        gw = None
        if igw:
            gw = self.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
            self.ec2.attach_internet_gateway(InternetGatewayId=gw, VpcId=vpc)
        return vpc, subnets, sg, gw

    def target_group(self, name: str, vpc: str) -> str:
        return self.elb.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId=vpc,
                                            TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]

    def load_balancer(self, name: str, subnets: list[str], sg: str, scheme: str = "internal", tg: str | None = None) -> str:
        arn = self.elb.create_load_balancer(Name=name, Subnets=subnets, SecurityGroups=[sg],
                                            Scheme=scheme)["LoadBalancers"][0]["LoadBalancerArn"]
        if tg:  # a listener that forwards to tg associates the two
            self.elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80,
                                     DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
        return arn

    def lb_service(self, cluster: str, name: str, td: str, subnet: str, sg: str, tg: str, **extra) -> dict:
        return self.service(cluster, name, td, subnet, sg,
                            loadBalancers=[{"targetGroupArn": tg, "containerName": "app", "containerPort": 8080}], **extra)


class TestElbv2Calls(LbTestCase):
    def test_logged_counted_throttled_and_faulted_in_the_awsquery_error_shape(self):
        t = uid()
        vpc = make_vpc(self.ec2, t)
        clear_calls()
        self.elb.describe_load_balancers()
        tg = self.target_group(f"log-{t}", vpc)
        got = calls()
        self.assertEqual([(c["service"], c["scope"], c["operation"], c["mutating"]) for c in got], [
            ("elbv2", "elasticloadbalancing", "DescribeLoadBalancers", False),
            ("elbv2", "elasticloadbalancing", "CreateTargetGroup", True)])
        self.assertEqual(got[1]["params"], {"Name": f"log-{t}", "Protocol": "HTTP", "Port": "8080", "VpcId": vpc,
                                            "TargetType": "ip"})
        # fail_nth answers ELB's awsQuery error shape, which botocore (and the Rust SDK) parse: Code inside Error.
        admin({"fail_nth": ["DescribeTargetGroups:1:LoadBalancerNotFound", "DeleteTargetGroup:1:ServiceUnavailable"]})
        status, ctype, body = ec2_raw(f"Action=DescribeTargetGroups&Version=2015-12-01&TargetGroupArns.member.1={tg}",
                                      scope="elasticloadbalancing")
        self.assertEqual((status, ctype), (400, "text/xml"))
        self.assertRegex(body.decode(), rf'^<ErrorResponse xmlns="{re.escape(ELB_NS)}"><Error><Type>Sender</Type>'
                         r"<Code>LoadBalancerNotFound</Code><Message>[^<]+</Message></Error>"
                         r"<RequestId>[0-9a-f-]{36}</RequestId></ErrorResponse>$")
        with self.assertRaises(ClientError) as ctx:
            self.elb.delete_target_group(TargetGroupArn=tg)
        self.assertEqual(error_of(ctx)[:2], ("ServiceUnavailable", 503))
        self.assertEqual((calls()[-1]["service"], calls()[-1]["injected"]), ("elbv2", "fail-nth"))
        self.elb.describe_target_groups(TargetGroupArns=[tg])  # the 2nd call: forwarded
        # Its own throttle classes, with ELB's code.
        admin({"throttle": {"elbv2-read": "0:1"}})
        self.elb.describe_target_groups(TargetGroupArns=[tg])
        with self.assertRaises(ClientError) as ctx:
            self.elb.describe_target_groups(TargetGroupArns=[tg])
        self.assertEqual(error_of(ctx), ("Throttling", 400, "Rate exceeded"))
        self.elb.delete_target_group(TargetGroupArn=tg)  # elbv2-mutating has no bucket
        # Classic ELB shares the scope, not the version: still `other`.
        client("elb").describe_load_balancers()
        self.assertEqual((calls()[-1]["service"], calls()[-1]["scope"]), ("other", "elasticloadbalancing"))

    def test_the_kill_switch_counts_elbv2_mutating_calls(self):
        vpc = make_vpc(self.ec2, uid())
        victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            admin({"kill_after_mutating": 1, "kill_pid": victim.pid})
            self.elb.describe_target_groups()  # reads do not count
            self.assertIsNone(victim.poll(), "killed too early")
            tg = self.target_group(f"kill-{uid()}", vpc)
            self.assertEqual(victim.wait(timeout=10), -signal.SIGKILL)
            with self.assertRaises(ClientError) as ctx:
                self.elb.delete_target_group(TargetGroupArn=tg)
            self.assertEqual(error_of(ctx)[:2], ("ServiceUnavailable", 503))
            self.assertEqual([c.get("killed") for c in calls()[-2:]], [victim.pid, None])
            admin({"reset": True})
            self.elb.describe_target_groups(TargetGroupArns=[tg])  # never forwarded: still there
        finally:
            victim.kill()
            victim.wait()


class TestLoadBalancerRules(LbTestCase):
    def test_an_internet_facing_load_balancer_needs_an_internet_gateway(self):
        t = uid()
        vpc, subnets, sg, _ = self.lb_network(t, igw=False)
        admin({"strict": True})
        for scheme in ({}, {"Scheme": "internet-facing"}):  # AWS's default scheme is internet-facing
            with self.assertRaises(ClientError) as ctx:
                self.elb.create_load_balancer(Name=f"pub-{t}", Subnets=subnets, SecurityGroups=[sg], **scheme)
            self.assertEqual(error_of(ctx), ("InvalidSubnet", 400, f"VPC {vpc} has no internet gateway"))
            self.assertEqual(calls()[-1]["injected"], "rule:lb-rules")
        self.assertEqual([lb for lb in self.elb.describe_load_balancers()["LoadBalancers"] if lb["VpcId"] == vpc], [])
        self.load_balancer(f"int-{t}", subnets, sg, scheme="internal")  # internal: no gateway needed
        gw = self.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        self.ec2.attach_internet_gateway(InternetGatewayId=gw, VpcId=vpc)
        self.load_balancer(f"pub-{t}", subnets, sg, scheme="internet-facing")

    def test_an_ecs_service_needs_a_target_group_with_a_load_balancer(self):
        t = uid()
        vpc, subnets, sg, _ = self.lb_network(t)
        tg = self.target_group(f"tg-{t}", vpc)
        td = self.task_def(f"lbr-{t}")
        admin({"strict": True})
        msg = f"The target group with targetGroupArn {tg} does not have an associated load balancer."
        with self.assertRaises(ClientError) as ctx:
            self.lb_service(f"lbr-{t}", "web", td, subnets[0], sg, tg)
        self.assertEqual(error_of(ctx), ("InvalidParameterException", 400, msg))
        self.assertEqual(calls()[-1]["injected"], "rule:lb-rules")
        lb = self.load_balancer(f"lb-{t}", subnets, sg, scheme="internet-facing", tg=tg)  # the listener associates
        self.lb_service(f"lbr-{t}", "web", td, subnets[0], sg, tg)
        other = self.target_group(f"tg2-{t}", vpc)
        with self.assertRaises(ClientError) as ctx:
            self.ecs.update_service(cluster=f"lbr-{t}", service="web", loadBalancers=[
                {"targetGroupArn": other, "containerName": "app", "containerPort": 8080}])
        self.assertEqual(error_of(ctx)[2], msg.replace(tg, other))
        # A listener moved to the other group associates it too (moto records only CreateListener's group).
        listener = self.elb.describe_listeners(LoadBalancerArn=lb)["Listeners"][0]["ListenerArn"]
        self.elb.modify_listener(ListenerArn=listener, DefaultActions=[{"Type": "forward", "TargetGroupArn": other}])
        self.ecs.update_service(cluster=f"lbr-{t}", service="web", loadBalancers=[
            {"targetGroupArn": other, "containerName": "app", "containerPort": 8080}])
        # moto keeps a deleted load balancer in the group's LoadBalancerArns: the proxy checks it still lives.
        self.elb.delete_load_balancer(LoadBalancerArn=lb)
        self.assertEqual(self.elb.describe_target_groups(TargetGroupArns=[tg])["TargetGroups"][0]["LoadBalancerArns"][0], lb)
        with self.assertRaises(ClientError) as ctx:
            self.lb_service(f"lbr-{t}", "web2", td, subnets[0], sg, tg)
        self.assertEqual(error_of(ctx), ("InvalidParameterException", 400, msg))

    def test_a_load_balancer_holds_its_groups_subnets_and_public_addresses_and_its_enis_linger(self):
        t = uid()
        vpc, subnets, sg, gw = self.lb_network(t)
        sg2 = self.ec2.create_security_group(GroupName=f"lb2-{t}", Description="lb2", VpcId=vpc)["GroupId"]
        sg3 = self.ec2.create_security_group(GroupName=f"lb3-{t}", Description="lb3", VpcId=vpc)["GroupId"]
        linger = 1.5
        # This rule alone: under --strict, eni-in-use would also list every ECS service of the emulator per delete.
        admin({"rules": {"lb-eni-linger": True}, "lb_eni_linger_seconds": linger})
        lb = self.load_balancer(f"hold-{t}", subnets, sg, scheme="internet-facing")
        blocked = {
            "group": (lambda: self.ec2.delete_security_group(GroupId=sg), f"resource {sg} has a dependent object"),
            "subnet": (lambda: self.ec2.delete_subnet(SubnetId=subnets[1]),
                       f"The subnet '{subnets[1]}' has dependencies and cannot be deleted."),
            "gateway": (lambda: self.ec2.detach_internet_gateway(InternetGatewayId=gw, VpcId=vpc),
                        f"Network {vpc} has some mapped public address(es). Please unmap those public address(es) "
                        "before detaching the gateway."),
        }

        def all_blocked():
            for what, (call, msg) in blocked.items():
                with self.assertRaises(ClientError, msg=what) as ctx:
                    call()
                self.assertEqual(error_of(ctx), ("DependencyViolation", 400, msg), what)
                self.assertEqual(calls()[-1]["injected"], "rule:lb-eni-linger")

        all_blocked()  # while it lives
        # SetSecurityGroups moves its ENIs to the new group: the old one is free at once.
        self.elb.set_security_groups(LoadBalancerArn=lb, SecurityGroups=[sg2, sg])
        self.elb.set_security_groups(LoadBalancerArn=lb, SecurityGroups=[sg])
        self.ec2.delete_security_group(GroupId=sg2)
        self.elb.delete_load_balancer(LoadBalancerArn=lb)
        deleted = time.monotonic()
        all_blocked()  # its ENIs linger
        # One made behind the proxy's back is read before its delete, so it lingers too.
        lb3 = client("elbv2", MOTO).create_load_balancer(Name=f"behind-{t}", Subnets=subnets[:1], SecurityGroups=[sg3],
                                                        Scheme="internal")["LoadBalancers"][0]["LoadBalancerArn"]
        self.elb.delete_load_balancer(LoadBalancerArn=lb3)
        with self.assertRaises(ClientError) as ctx:
            self.ec2.delete_security_group(GroupId=sg3)
        self.assertEqual(error_of(ctx)[0], "DependencyViolation")
        time.sleep(max(0.0, linger + 0.05 - (time.monotonic() - deleted)))
        self.ec2.detach_internet_gateway(InternetGatewayId=gw, VpcId=vpc)
        self.ec2.delete_security_group(GroupId=sg)
        self.ec2.delete_subnet(SubnetId=subnets[1])

        def sg3_deleted() -> bool:
            try:
                self.ec2.delete_security_group(GroupId=sg3)
                return True
            except ClientError:
                return False

        eventually(sg3_deleted, timeout=5)

    def test_rules_off_moto_shows_through(self):
        t = uid()
        vpc, subnets, sg, _ = self.lb_network(t, igw=False)
        lb = self.load_balancer(f"off-{t}", subnets, sg, scheme="internet-facing")  # no gateway: moto accepts
        self.ec2.delete_security_group(GroupId=sg)  # moto: no DependencyViolation
        self.elb.delete_load_balancer(LoadBalancerArn=lb)
        self.assertIsNone(calls()[-1]["injected"])


class TestHealthCheckGracePeriod(ClockTestCase):
    def test_kept_while_the_service_lives(self):
        t = uid()
        _, subnet, sg = self.network(t)
        td = self.task_def(f"grace-{t}")
        cl = f"grace-{t}"
        made = self.service(cl, "web", td, subnet, sg, healthCheckGracePeriodSeconds=45)
        self.assertEqual(made["healthCheckGracePeriodSeconds"], 45)  # moto drops it: the proxy puts it back
        self.assertEqual(self.describe(cl, "web")["healthCheckGracePeriodSeconds"], 45)
        self.ecs.update_service(cluster=cl, service="web", desiredCount=1)
        self.assertEqual(self.describe(cl, "web")["healthCheckGracePeriodSeconds"], 45)
        up = self.ecs.update_service(cluster=cl, service="web", healthCheckGracePeriodSeconds=90)["service"]
        self.assertEqual(up["healthCheckGracePeriodSeconds"], 90)  # an update wins
        self.assertEqual(self.describe(cl, "web")["healthCheckGracePeriodSeconds"], 90)
        # Only while the service exists: deleted, then made again without one.
        self.service(cl, "api", td, subnet, sg, healthCheckGracePeriodSeconds=30)
        self.ecs.delete_service(cluster=cl, service="api", force=True)
        self.assertNotIn("healthCheckGracePeriodSeconds", self.describe(cl, "api"))
        self.service(cl, "api", td, subnet, sg)
        self.assertNotIn("healthCheckGracePeriodSeconds", self.describe(cl, "api"))


class TestTargetHealth(LbTestCase):
    R = 0.6

    def on(self, **extra) -> None:
        admin({"rules": {"rollout": True}, "rollout_seconds": self.R, **extra})

    def health(self, tg: str, **kw) -> list[dict]:
        return self.elb.describe_target_health(TargetGroupArn=tg, **kw)["TargetHealthDescriptions"]

    def test_each_running_task_is_a_healthy_target(self):
        t = uid()
        vpc, subnets, sg, _ = self.lb_network(t, igw=False)
        tg, other = self.target_group(f"th-{t}", vpc), self.target_group(f"th2-{t}", vpc)
        self.elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.99.0.9", "Port": 8080}])  # by hand
        td = self.task_def(f"th-{t}")
        self.on()
        self.lb_service(f"th-{t}", "web", td, subnets[0], sg, tg, desired=2)
        got = eventually(lambda: len(h := self.health(tg)) == 3 and h)
        self.assertEqual(calls()[-1]["injected"], "rule:rollout")
        ours = [h for h in got if h["Target"]["Id"] != "10.99.0.9"]
        for h in ours:
            self.assertRegex(h["Target"]["Id"], r"^10\.\d+\.\d+\.\d+$")
            self.assertEqual((h["Target"]["Port"], h["Target"]["AvailabilityZone"], h["HealthCheckPort"]),
                             (8080, f"{REGION}a", "8080"))
            self.assertEqual(h["TargetHealth"], {"State": "healthy"})
        self.assertEqual(len({h["Target"]["Id"] for h in ours}), 2)
        # Asking for some targets: ours, and moto's answer for the others.
        asked = self.health(tg, Targets=[{"Id": ours[0]["Target"]["Id"], "Port": 8080}, {"Id": "10.99.0.8", "Port": 8080}])
        self.assertEqual([(h["Target"]["Id"], h["TargetHealth"]["State"]) for h in asked],
                         [(ours[0]["Target"]["Id"], "healthy"), ("10.99.0.8", "unavailable")])
        self.assertEqual(self.health(other), [])  # a group no service names: moto's answer
        self.assertIsNone(calls()[-1]["injected"])
        admin({"rules": {"rollout": False}})  # without the rule: moto's answer
        self.assertEqual([h["Target"]["Id"] for h in self.health(tg)], ["10.99.0.9"])
        self.on()
        self.ecs.update_service(cluster=f"th-{t}", service="web", loadBalancers=[])  # the group is no longer named
        self.assertEqual([h["Target"]["Id"] for h in self.health(tg)], ["10.99.0.9"])

    def test_an_unhealthy_image_fails_the_health_checks_and_rolls_back(self):
        t = uid()
        vpc, subnets, sg, _ = self.lb_network(t, igw=False)
        tg, tg_hang = self.target_group(f"uh-{t}", vpc), self.target_group(f"uhh-{t}", vpc)
        good, bad = self.task_def(f"uh-{t}"), self.task_def(f"uh-{t}", f"{ECR_IMAGE}-unhealthy")
        self.on()
        self.lb_service(f"uh-{t}", "web", good, subnets[0], sg, tg, desired=1, breaker={"enable": True, "rollback": True})
        self.lb_service(f"uh-{t}", "hang", good, subnets[0], sg, tg_hang, desired=1)  # no circuit breaker
        for name in ("web", "hang"):
            eventually(lambda: self.describe(f"uh-{t}", name)["deployments"][0]["rolloutState"] == "COMPLETED")
        failing_id = self.ecs.update_service(cluster=f"uh-{t}", service="web", taskDefinition=bad)["service"]["deployments"][0]["id"]
        self.ecs.update_service(cluster=f"uh-{t}", service="hang", taskDefinition=bad)
        # While a deployment fails (for ever, without a circuit breaker), its started tasks are unhealthy targets next
        # to the old deployment's healthy one.
        states = lambda got: sorted(h["TargetHealth"]["State"] for h in got)  # noqa: E731
        seen = eventually(lambda: states(got := self.health(tg_hang)) == ["healthy", "unhealthy"] and got)
        sick = [h["TargetHealth"] for h in seen if h["TargetHealth"]["State"] == "unhealthy"][0]
        self.assertEqual(sick, {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch",
                                "Description": "Health checks failed with these codes: [503]"})
        s = eventually(lambda: (s := self.describe(f"uh-{t}", "web"))["deployments"][0]["id"] != failing_id and s)
        self.assertEqual(s["deployments"][0]["taskDefinition"], good)  # rolled back
        messages = [e["message"] for e in s["events"]]
        self.assertIn(f"(service web) (port 8080) is unhealthy in (target-group {tg}) due to (reason Health checks "
                      "failed with these codes: [503]).", messages)
        arns = self.ecs.list_tasks(cluster=f"uh-{t}", serviceName="web", desiredStatus="STOPPED")["taskArns"]
        self.assertGreaterEqual(len(arns), 3)
        for task in self.ecs.describe_tasks(cluster=f"uh-{t}", tasks=arns)["tasks"]:
            self.assertEqual((task["lastStatus"], task["stopCode"], task["stoppedReason"]),
                             ("STOPPED", "ServiceSchedulerInitiated", f"Task failed ELB health checks in (target-group {tg})"))
            self.assertIn("startedAt", task)  # they did start
            self.assertNotIn("reason", task["containers"][0])
        eventually(lambda: [h["TargetHealth"]["State"] for h in self.health(tg)] == ["healthy"])

    def test_the_marker_means_nothing_without_a_load_balancer(self):
        t = uid()
        _, subnet, sg = self.network(t)
        self.on()
        self.service(f"nolb-{t}", "web", self.task_def(f"nolb-{t}", f"{ECR_IMAGE}-unhealthy"), subnet, sg, desired=1)
        eventually(lambda: self.describe(f"nolb-{t}", "web")["deployments"][0]["rolloutState"] == "COMPLETED")


if __name__ == "__main__":
    unittest.main()
