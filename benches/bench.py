"""secep benchmark: wall time against the dependency-chain and throughput bounds, calls counted by the proxy.

Run from the repository root:  localstack/.venv/bin/python benches/bench.py   (or: bash benches/run)
It starts its own moto and fidelity proxy on free 127.0.0.1 ports (stopped at exit), adds a fixed per-call latency
(default 100 ms) so that the dependency chain dominates as on AWS, generates mesh configs of N services, runs each
scenario once and prints its table. Numbers are measured side by side in one run; nothing here is a test.
It measures the release build (what `cargo install` gives users; a cold build takes about 20 minutes here);
`--debug` measures the tests' debug build instead, and `--no-build` skips cargo and measures the binary already in
$CARGO_TARGET_DIR (default ./target), e.g. `CARGO_TARGET_DIR=/root/.cache/secep/target ... --debug --no-build`.
`--scenario calls|clock|all` (default all: both tables; 4 min 20 s here with the debug build warm, the clock part
1 min 40 s of it).

Scenario `calls`. Bounds: chain = the longest chain of dependent calls x (added latency + emulator service time);
throughput = calls x service time (the emulator answers one call at a time). The service time is the median upstream
time of the `--parallelism 1` run, where no call queues behind another (under load the emulator's queueing would
inflate it); bucket (throttled scenario only) = the EC2 mutating calls the proxy's token bucket admitted / its refill
rate. Calls are counted from the proxy's call log, throttled answers included. Peak RSS is the secep process's own
(wait4), not the emulator's.

Scenario `clock` (issue 17, part 3): a second proxy on the same moto, started `--strict --clock-scale F` (default
F = 0.05: namespace operation 45 s -> 2.25 s, interface endpoints pending 90 s -> 4.5 s, rollouts 120 s -> 6 s, role
propagation 10 s -> 0.5 s, NAT 120 s -> 6 s, new ids NotFound 2 s -> 0.1 s), with the same added latency. Per N:
`up` (no --no-wait: it returns when every rollout completed), its wall time recorded, nothing asserted; then
`down --yes` (timed too) so the next N starts clean. Both bounds come from the same DAG (`clock_dag`, the nodes of
src/model/mod.rs) and the same durations, read back from the proxy, and one call = latency + service time:
  (a) longest chain = max over paths of sum(calls x call + stabilization waits), a propagation window overlapping the
      next call's latency (see `schedule`); the default egress's paths:
        read -> VPC -> subnets/groups/DNS -> interface endpoints (90F) -> ECS service -> rollout (120F)
        read -> VPC -> namespace (45F) -> Cloud Map service -> ECS service -> rollout
        read -> role (10F) -> task definition -> ECS service -> rollout
      so (a) = 5 calls + 90F + 120F here. Target: wall <= 1.1 x (a).
  (b) CloudFormation-like = the same longest path with each resource complete only once stable, propagation counted
      in full, plus an assumed per-resource overhead (--cfn-overhead, default 0 s; real CloudFormation adds seconds
      per resource).
A second table splits wall - (a) along (a)'s path from the call log (read round, creates, endpoint poll, ECS
create, rollout poll, exit). The call log and secep's stderr of every run stay in the work folder named at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UP_CHAIN = 5    # CreateVpc -> CreatePrivateDnsNamespace -> GetOperation -> Cloud Map CreateService -> ECS CreateService
DOWN_CHAIN = 6  # DeleteService -> DescribeServices -> Cloud Map DeleteService -> DeleteNamespace -> GetOperation -> DeleteVpc


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout.strip()


def mesh(n, stack):
    lines = [f'[stack]\nname = "{stack}"\n', '[network]\ncidr = "10.8.0.0/16"\nmax_azs = 2\n',
             f'[namespace]\nname = "{stack}.local"\n']
    for i in range(n):
        calls = sorted({f'"s{(i + d) % n}"' for d in (1, 2) if (i + d) % n != i})
        lines.append(f'[services.s{i}]\nimage = "123456789012.dkr.ecr.us-east-1.amazonaws.com/img-{i}"\nport = {8000 + i}\ncalls = [{", ".join(calls)}]\n')
    return "\n".join(lines)


class Proxy:
    def __init__(self, url, upstream=None):
        self.url = url
        self.upstream = upstream  # the emulator behind it

    def settings(self):
        return json.loads(urllib.request.urlopen(self.url + "/_proxy/config").read().decode())

    def config(self, **cfg):
        req = urllib.request.Request(self.url + "/_proxy/config", data=json.dumps(cfg).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req).read()

    def clear(self):
        urllib.request.urlopen(urllib.request.Request(self.url + "/_proxy/calls/clear", method="POST")).read()

    def calls(self):
        body = urllib.request.urlopen(self.url + "/_proxy/calls").read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def start_emulator():
    """A moto and a fidelity proxy of our own on free ports, stopped when this process exits."""
    work = tempfile.mkdtemp(prefix="secep-bench-")
    me = str(os.getpid())
    moto = sh("bash", f"{ROOT}/localstack/start.sh", "--port", "0", "--run-dir", work, "--watch-pid", me)
    url = sh("bash", f"{ROOT}/localstack/start-proxy.sh", "--port", "0", "--run-dir", work, "--watch-pid", me,
             "--upstream", moto, "-q").splitlines()[-1]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", NO_COLOR="1")
    return work, Proxy(url, moto), env


def start_proxy(work, upstream, name, *proxy_args):
    """Another fidelity proxy on the same emulator, in its own run dir, started with `proxy_args` (stopped at exit)."""
    url = sh("bash", f"{ROOT}/localstack/start-proxy.sh", "--port", "0", "--run-dir", os.path.join(work, name),
             "--watch-pid", str(os.getpid()), "--upstream", upstream, "-q", *proxy_args).splitlines()[-1]
    return Proxy(url, upstream)


def slow_fsync(ms):
    """A command prefix that delays every fsync of the command by `ms` (a slower disk than this machine's)."""
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-o", os.devnull, "-e", "trace=fsync",
            "-e", f"inject=fsync:delay_exit={int(ms * 1000)}"] if ms else []


# ---------------------------------------------------------------------------------------------------------------------
# The "AWS's clock" scenario (issue 17, part 3). `up` (which waits for every rollout) against the proxy with
# `--strict --clock-scale F`: AWS's durations x F (table in localstack/README.md, "AWS's clock"). The bench reads the
# acting durations back from the proxy (GET /_proxy/config), so both bounds use exactly what the proxy enforces.

CLOCK_KNOBS = [  # (proxy knob, AWS's seconds, label)
    ("namespace_pending_seconds", 45, "namespace"),
    ("endpoint_pending_seconds", 90, "endpoints"),
    ("rollout_seconds", 120, "rollouts"),
    ("role_propagation_seconds", 10, "role propagation"),
    ("linked_role_seconds", 10, "linked role"),
    ("nat_pending_seconds", 120, "NAT"),
    ("id_propagation_seconds", 2, "id propagation"),
]
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "logs")  # src/model/mod.rs
AZS = ("a", "b")  # mesh(): max_azs = 2


class Step:
    """One node of the clock DAG (the nodes of src/model/mod.rs `desired_nodes`, plus the read round).

    calls      calls on the node's own path in (a) (1: one create; 0: it exists already, e.g. the log group kept by
               `down`, or a node that is only an edge); cfn_calls the same in (b), default `calls`
    stabilize  seconds after its call until dependants may start, in both schedules (interface endpoint pending,
               namespace operation, NAT pending, the ECS service's rollout)
    propagate  a window after its creation in which dependants' calls naming it are refused (new EC2 ids, a new
               role); (a) overlaps it with the dependant's call in flight, (b) counts cfn_propagate in full
    resource   False for what is not a CloudFormation resource (the read round; the role's policy, which
               AWS::IAM::Role attaches itself): no per-resource overhead in (b)
    """

    def __init__(self, deps, calls=1, stabilize=0.0, propagate=0.0, cfn_calls=None, cfn_propagate=None,
                 resource=True):
        self.deps, self.calls, self.stabilize, self.propagate = deps, calls, stabilize, propagate
        self.cfn_calls = calls if cfn_calls is None else cfn_calls
        self.cfn_propagate = propagate if cfn_propagate is None else cfn_propagate
        self.resource = resource


def mesh_edges(n):
    """(caller, callee) of mesh(n): each service calls the next two."""
    return sorted({(f"s{i}", f"s{(i + d) % n}") for i in range(n) for d in (1, 2) if (i + d) % n != i})


def clock_dag(n, dur, created, egress="endpoints"):
    """The DAG `up` walks for mesh(n), each node with its calls and its waits (durations `dur`: knob -> seconds).

    `created`: the operations of this run's call log; the linked role, the execution role and the log group outlive
    `down` (or not), so their create and its wait count only when this run made them. The paths that matter, default
    egress (endpoints):
      read -> VPC -> subnets / endpoint group / VPC DNS -> interface endpoints (pending 90F) -> ECS service -> rollout
      read -> VPC -> namespace (operation 45F) -> Cloud Map service -> ECS service -> rollout
      read -> role (propagation 10F) -> task definition -> ECS service -> rollout
      read -> linked role (10F, first deploy in an account) -> cluster -> ECS service -> rollout
    and with egress = "nat": read -> EIP / public subnet + IGW + public table -> NAT (120F) -> private table ->
    association -> ECS service -> rollout.
    """
    ids = dur["id_propagation_seconds"]
    dag = {}

    def step(name, deps, **kw):
        dag[name] = Step(deps, **kw)

    step("read", [], resource=False)  # the read round before any change: adoption by tag needs it
    linked = "CreateServiceLinkedRole" in created
    step("linked-role", ["read"], calls=int(linked), propagate=dur["linked_role_seconds"] * linked)
    step("cluster", ["linked-role"])
    step("vpc", ["read"], propagate=ids)
    step("vpc-dns", ["vpc"])  # ModifyVpcAttribute (DNS support, DNS hostnames): private DNS of the endpoints
    subnets = [f"subnet/{az}" for az in AZS]
    for s in subnets:
        step(s, ["vpc"], propagate=ids)
    step("namespace", ["vpc"], stabilize=dur["namespace_pending_seconds"])
    step("log-group", ["read"], calls=int("CreateLogGroup" in created))
    role = "CreateRole" in created
    role_wait = dur["role_propagation_seconds"] * role
    # CreateRole, then the task definition may name it once it propagated. (b): AWS::IAM::Role attaches its managed
    # policy itself and reports CREATE_COMPLETE after the propagation, so its dependants wait 2 calls + 10F.
    step("role", ["read"], calls=int(role), propagate=role_wait, cfn_calls=2 * role)
    # AttachRolePolicy: the tasks need it, a deployment started within the window fails its first tasks.
    step("role-policy", ["role"], calls=int(role), propagate=role_wait, cfn_calls=0, cfn_propagate=0,
         resource=False)
    nats = []
    if egress == "nat":
        step("igw", ["vpc"], propagate=ids)
        step("rtb/public", ["vpc", "igw"], propagate=ids)
        for az in AZS:
            step(f"public-subnet/{az}", ["vpc"], propagate=ids)
            step(f"rtb-assoc/public-{az}", ["rtb/public", f"public-subnet/{az}"])
        az = AZS[0]  # nat_gateways = "one", the default
        step(f"eip/{az}", ["read"], propagate=ids)
        step(f"nat/{az}", [f"public-subnet/{az}", f"eip/{az}", "igw", f"rtb-assoc/public-{az}"],
             stabilize=dur["nat_pending_seconds"])
        nats.append(f"nat/{az}")
    tables = [f"rtb/{az}" for az in AZS]
    assocs = [f"rtb-assoc/{az}" for az in AZS]
    for az in AZS:
        step(f"rtb/{az}", ["vpc", *nats], propagate=ids)
        step(f"rtb-assoc/{az}", [f"rtb/{az}", f"subnet/{az}"])
    names = [f"s{i}" for i in range(n)]
    groups = [f"sg/{s}" for s in names]
    endpoints = []
    if egress == "endpoints":
        step("prefix-list/s3", ["read"])  # DescribePrefixLists
        step("endpoint-group", ["vpc"], propagate=ids)
        for svc in INTERFACE_ENDPOINTS:
            step(f"vpce/{svc}", ["vpc-dns", "endpoint-group", *subnets], stabilize=dur["endpoint_pending_seconds"])
            endpoints.append(f"vpce/{svc}")
        step("vpce/s3", ["vpc", *tables])  # a gateway endpoint: available at once
        step("endpoint-rules", ["endpoint-group", *groups])
        endpoints += ["vpce/s3", "endpoint-rules"]
    for s in names:
        step(f"sd/{s}", ["namespace"])
        step(f"sg/{s}", ["vpc"], propagate=ids)
        step(f"td/{s}", ["log-group", "role"])
        step(f"egress/{s}", [*groups, *(["endpoint-group", "prefix-list/s3"] if egress == "endpoints" else [])])
    edges = mesh_edges(n)
    for caller, callee in edges:
        step(f"rule/{caller}->{callee}", [f"sg/{caller}", f"sg/{callee}"])
    for s in names:
        rules = [f"rule/{c}->{e}" for c, e in edges if e == s]
        step(f"svc/{s}", ["vpc-dns", "cluster", f"td/{s}", "role-policy", f"sd/{s}", f"sg/{s}", f"egress/{s}",
                          *subnets, *tables, *assocs, *endpoints, *rules], stabilize=dur["rollout_seconds"])
    return dag


def schedule(dag, call, latency, cfn_overhead=None):
    """The longest path through `dag`: (seconds, [nodes]). `call` = one call (latency + service time).

    (a) longest chain (cfn_overhead None): finish(v) = max over deps u of release(u) + calls(v) x call
        + stabilize(v), with release(u) = finish(u) + max(0, propagate(u) - latency): a dependant's call may be
        sent the moment u answered and reaches AWS one latency later, and a waiter learns the instant its wait ends
        (no poll costs): a floor, not a plan.
    (b) CloudFormation-like (cfn_overhead = O seconds): every resource reports complete only once stable, and its
        dependants start after that: finish(v) = max over deps u of finish(u) + cfn_calls(v) x call + O
        + stabilize(v) + cfn_propagate(v) (a role waits for its propagation, an endpoint until available, the
        namespace until its operation succeeded, an AWS::ECS::Service until steady, i.e. its rollout, EC2 resources
        until their ids are visible). O = CloudFormation's own overhead per resource; real CFN adds seconds per
        resource, here it is an assumption (--cfn-overhead, default 0).
    Both bounds = max over the nodes of finish (the rollouts are sinks).
    """
    memo = {}

    def finish(v):
        if v not in memo:
            st = dag[v]
            best, via = 0.0, None
            for u in st.deps:
                t = finish(u)[0]
                if cfn_overhead is None:
                    t += max(0.0, dag[u].propagate - latency)
                if t > best or via is None:
                    best, via = t, u
            if cfn_overhead is None:
                own = st.calls * call + st.stabilize
            else:
                own = st.cfn_calls * call + st.stabilize + st.cfn_propagate
                own += cfn_overhead if st.resource and st.cfn_calls else 0.0
            memo[v] = (best + own, via)
        return memo[v]

    end = max(dag, key=lambda v: finish(v)[0])
    path, v = [], end
    while v is not None:
        path.append(v)
        v = finish(v)[1]
    return finish(end)[0], path[::-1]


def clock_timeline(calls, t0, latency, dur, deployed=()):
    """Where `up`'s time went, from the proxy's call log: seconds since `up` started. "due" = when the proxy's clock
    let a wait end (its start + the knob), "seen" = the end of the call with which secep saw it end."""
    def start(c):
        return c["ts"] - c["latency_ms"] / 1000 - t0

    def end(c):
        return c["ts"] - t0

    deployed = [d - t0 for d in deployed]

    def ok(c, service, op):
        return c["service"] == service and c["operation"] == op and c["status"] == 200

    t = {"change": min((start(c) for c in calls if c["mutating"]), default=None)}
    # The proxy notes a creation when the upstream answered: about one latency after the call was sent.
    made = [start(c) + latency for c in calls if ok(c, "ec2", "CreateVpcEndpoint")
            and c.get("injected") == "rule:endpoint-pending"]  # the interface ones (gateway ones are not rewritten)
    ecs = [c for c in calls if ok(c, "ecs", "CreateService")]
    first_ecs = min((start(c) for c in ecs), default=float("inf"))
    t["vpce due"] = max(made) + dur["endpoint_pending_seconds"] if made else None
    seen = [end(c) for c in calls if ok(c, "ec2", "DescribeVpcEndpoints") and c.get("injected") != "rule:endpoint-pending"
            and made and start(c) > min(made) and end(c) <= first_ecs]
    t["vpce seen"] = max(seen, default=None)
    ns = [start(c) + latency for c in calls if c["operation"] in ("CreatePrivateDnsNamespace", "CreateHttpNamespace")
          and c["status"] == 200]
    t["ns due"] = ns[0] + dur["namespace_pending_seconds"] if ns else None
    ns_seen = [end(c) for c in calls if ok(c, "servicediscovery", "GetOperation")
               and c.get("injected") != "rule:operation-pending" and ns and start(c) > ns[0]]
    t["ns seen"] = min(ns_seen, default=None)
    t["ECS from"] = first_ecs if ecs else None
    t["ECS to"] = max((end(c) for c in ecs), default=None)
    t["ECS max"] = max((c["latency_ms"] / 1000 for c in ecs), default=None)
    # The proxy starts a deployment when moto answered CreateService, before its own reads for the rollout model;
    # `deployed` (the deployments' createdAt, read back after `up`) says when, else one latency after the call.
    starts = deployed or [start(c) + latency for c in ecs]
    t["rollout due"] = max(starts) + dur["rollout_seconds"] if starts else None
    polls = [end(c) for c in calls if ok(c, "ecs", "DescribeServices") and ecs and start(c) > first_ecs]
    t["rollout seen"] = max(polls, default=None)
    t["polls"] = len(polls)
    return t


def deployments_created(proxy, stack, n):
    """When each service's primary deployment started (epoch seconds), by the proxy's rollout model."""
    import boto3  # the emulator's venv has it (the proxy uses it)

    ecs = boto3.client("ecs", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="test",
                       aws_secret_access_key="test")
    out = []
    try:
        for i in range(0, n, 10):
            names = [f"s{j}" for j in range(i, min(n, i + 10))]
            for s in ecs.describe_services(cluster=stack, services=names)["services"]:
                out += [d["createdAt"].timestamp() for d in s.get("deployments", []) if d["status"] == "PRIMARY"]
    except Exception as e:  # a timeline without it estimates the start from the call log
        print(f"could not read the deployments of {stack}: {e}", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--sizes", default="2,10,50")
    ap.add_argument("--debug", action="store_true",
                    help="measure the debug build (the tests' warm one) instead of the release build users install")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo: measure the binary already in $CARGO_TARGET_DIR (default ./target)")
    ap.add_argument("--scenario", choices=("all", "calls", "clock"), default="all",
                    help="calls: the call-count table; clock: `up` under AWS's clock (--strict --clock-scale); "
                         "all: both (default)")
    ap.add_argument("--clock-scale", type=float, default=0.05, metavar="F",
                    help="clock scenario: AWS's durations x F (default 0.05: a 120 s rollout takes 6 s)")
    ap.add_argument("--clock-sizes", help="clock scenario: N values (default: --sizes)")
    ap.add_argument("--cfn-overhead", type=float, default=0.0, metavar="S",
                    help="clock scenario: CloudFormation's own seconds per resource in bound (b) (default 0)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    clock_sizes = [int(s) for s in (args.clock_sizes or args.sizes).split(",")]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = [] if args.debug else ["--release"]
    secep = os.path.join(target, "debug" if args.debug else "release", "secep")
    if args.no_build:
        if not os.access(secep, os.X_OK):
            sys.exit(f"--no-build: no binary at {secep} (set CARGO_TARGET_DIR, or build it first)")
    else:
        print(f"building secep (cargo build {' '.join(profile)}) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--quiet", "--locked", *profile], cwd=ROOT, check=True)
    build = "debug" if args.debug else "release"
    started = time.monotonic()

    work, proxy, env = start_emulator()

    def run(n, stack, *cmd, latency=args.latency_ms, wrap=(), through=proxy, check=True):
        folder = os.path.join(work, stack)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "secep.toml"), "w") as f:
            f.write(mesh(n, stack))
        through.config(latency_ms=latency)
        through.clear()
        log_path = os.path.join(folder, f"{cmd[0]}.stderr")
        with open(log_path, "w") as log:
            epoch, t0 = time.time(), time.monotonic()
            child = subprocess.Popen([*wrap, secep, *cmd, "--endpoint-url", through.url], cwd=folder, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        if check and code not in (0, 2):
            sys.exit(f"secep {' '.join(cmd)} failed for N={n} (exit {code}):\n{open(log_path).read()}")
        calls = through.calls()
        with open(os.path.join(folder, f"{cmd[0]}.calls.jsonl"), "w") as f:  # kept for a look afterwards
            f.writelines(json.dumps(dict(c, since_start=round(c["ts"] - epoch, 3))) + "\n" for c in calls)
        upstream = [c["latency_ms"] - latency for c in calls if c.get("injected") in (None, "latency")]
        service = statistics.median(upstream) / 1000 if upstream else 0.0
        return wall, calls, service, usage.ru_maxrss / 1024, epoch, code

    # Warm up: the emulator's first EC2 call costs about a second.
    run(2, "warmup", "up")
    run(2, "warmup", "down", "--yes")

    service = None
    if args.scenario in ("all", "calls"):
        service = calls_scenario(args, sizes, run, proxy, build)
    if args.scenario in ("all", "clock"):
        if service is None:
            # The service time for the bounds, as the calls scenario calibrates it but on a small mesh: serial, so no
            # call queues behind another.
            service = run(2, "serial", "up", "--parallelism", "1")[2]
            run(2, "serial", "down", "--yes")
        clock_scenario(args, clock_sizes, run, work, proxy, service, build)
    print(f"\nbench.py --scenario {args.scenario}: {time.monotonic() - started:.0f} s; secep's stderr and the "
          f"proxy's call log of every run: {work}/<stack>/", file=sys.stderr)


def calls_scenario(args, sizes, run, proxy, build):
    """The call-count table: up, re-apply, status and down per N, serial, throttled and slow-disk rows."""
    rows = []
    per_call = args.latency_ms / 1000
    n = max(sizes)
    # Serial first: it calibrates the emulator's service time for every bound below.
    serial = run(n, "serial", "up", "--parallelism", "1")
    service = serial[2]
    run(n, "serial", "down", "--yes")

    def row(scenario, n, measured, chain, bucket_rate=None):
        wall, calls, _, rss = measured[:4]
        mutating = sum(1 for c in calls if c["mutating"])
        throttled = sum(1 for c in calls if c.get("injected") == "throttle")
        chain_bound = chain * (per_call + service)
        throughput_bound = len(calls) * service
        bucket_bound = None
        if bucket_rate:
            admitted = sum(1 for c in calls if c["service"] == "ec2" and c["mutating"] and c.get("injected") != "throttle")
            bucket_bound = admitted / bucket_rate
        bound = max(chain_bound, throughput_bound, bucket_bound or 0)
        # The same with the read round that must precede the first change (adoption needs it) on the chain.
        with_read = max((chain + 1) * (per_call + service), throughput_bound, bucket_bound or 0)
        rows.append((scenario, n, len(calls), mutating, throttled, wall, chain_bound, throughput_bound, bucket_bound,
                     wall / bound if bound else 0, rss, wall / with_read))

    for n in sizes:
        stack = f"bench{n}"
        row("up", n, run(n, stack, "up"), UP_CHAIN)
        row("up (no-op)", n, run(n, stack, "up"), 1)
        row("status", n, run(n, stack, "status"), 1)
        row("down", n, run(n, stack, "down", "--yes"), DOWN_CHAIN)

    row("up --parallelism 1", n, serial, UP_CHAIN)

    # AWS-style throttling: EC2's mutating calls through a token bucket (5 per second, burst 10).
    rate, burst = 5, 10
    proxy.config(throttle={"ec2-mutating": f"{rate}:{burst}"})
    row(f"up, EC2 {rate}/s burst {burst}", n, run(n, "throttled", "up"), UP_CHAIN, bucket_rate=rate)
    proxy.config(throttle={"ec2-mutating": None})
    run(n, "throttled", "down", "--yes")

    # The state file on a slower disk than this machine's (fsync about 0.3 ms here; laptops, CI runners' network
    # disks and home folders on NFS take 1 to 20 ms): strace delays each fsync by 10 ms.
    if shutil.which("strace"):
        slow = slow_fsync(10)
        row("up, state fsync +10 ms", n, run(n, "slowdisk", "up", wrap=slow), UP_CHAIN)
        row("down, state fsync +10 ms", n, run(n, "slowdisk", "down", "--yes", wrap=slow), DOWN_CHAIN)
    else:
        print("strace not found: the slow-disk rows are left out", file=sys.stderr)
    parallel_wall = next(r[5] for r in rows if r[0] == "up" and r[1] == n)

    print(f"\nsecep benchmark ({build} build): moto 5.2.5 behind the fidelity proxy, "
          f"{args.latency_ms:.0f} ms added per call, "
          f"{os.cpu_count()} cores; emulator service time {service * 1000:.1f} ms (median, serial run)")
    head = (f"{'scenario':<24} {'N':>3} {'calls':>6} {'mutating':>8} {'throttled':>9} {'wall s':>7} {'chain s':>7} "
            f"{'thruput s':>9} {'bucket s':>8} {'ratio':>6} {'+read':>6} {'peak RSS':>9}")
    print(head)
    for r in rows:
        bucket = f"{r[8]:>8.2f}" if r[8] is not None else f"{'-':>8}"
        print(f"{r[0]:<24} {r[1]:>3} {r[2]:>6} {r[3]:>8} {r[4]:>9} {r[5]:>7.2f} {r[6]:>7.2f} {r[7]:>9.2f} {bucket} "
              f"{r[9]:>6.2f} {r[11]:>6.2f} {r[10]:>6.1f} MB")
    print(f"\nN={n}: up with the default parallelism is {serial[0] / parallel_wall:.1f}x faster than --parallelism 1")
    print("ratio = wall / max(chain, throughput, bucket bounds); 1.0 is the floor")
    print("+read = the same ratio with one more round trip on the chain: the read round that comes before any change")
    sys.stdout.flush()
    return service


def clock_scenario(args, sizes, run, work, proxy, service, build):
    """`up` until every rollout completed, under AWS's clock, against bounds (a) and (b); `down --yes` after each N."""
    latency = args.latency_ms / 1000
    call = latency + service
    clock = start_proxy(work, proxy.upstream, "clock", "--strict", "--clock-scale", f"{args.clock_scale:g}",
                        "--latency-ms", f"{args.latency_ms:g}")
    dur = {k: float(v) for k, v in clock.settings().items() if k.endswith("_seconds")}
    rows, lines = [], []
    for n in sizes:
        stack = f"clock{n}"
        up = run(n, stack, "up", through=clock, check=False)
        wall, calls, _, rss, epoch, code = up
        deployed = deployments_created(clock, stack, n)
        down = run(n, stack, "down", "--yes", through=clock, check=False)
        created = {c["operation"] for c in calls if c["status"] == 200}
        dag = clock_dag(n, dur, created)
        a, path_a = schedule(dag, call, latency)
        b, path_b = schedule(dag, call, latency, cfn_overhead=args.cfn_overhead)
        mutating = sum(1 for c in calls if c["mutating"])
        refused = sum(1 for c in calls if c.get("error"))
        rows.append((n, len(calls), mutating, refused, wall, a, b, len(calls) * service, rss, code, down[0], down[5]))
        lines.append((n, clock_timeline(calls, epoch, latency, dur, deployed), wall, path_a, path_b))

    print(f"\nsecep under AWS's clock ({build} build): proxy --strict --clock-scale {args.clock_scale:g} "
          f"(AWS's seconds x {args.clock_scale:g}: "
          + ", ".join(f"{label} {aws} s -> {dur[k]:g} s" for k, aws, label in CLOCK_KNOBS)
          + f"), {args.latency_ms:.0f} ms added per call, call = {call * 1000:.0f} ms (with the emulator's "
          f"{service * 1000:.1f} ms); {os.cpu_count()} cores")
    print(f"{'scenario':<24} {'N':>3} {'calls':>6} {'mutating':>8} {'refused':>7} {'wall s':>7} {'(a) s':>6} "
          f"{'(b) s':>6} {'wall/(a)':>8} {'wall/(b)':>8} {'thruput s':>9} {'peak RSS':>9} {'exit':>4} "
          f"{'down s':>7} {'exit':>4}")
    for n, ncalls, mutating, refused, wall, a, b, thru, rss, code, down_wall, down_code in rows:
        print(f"{'up, waits for rollouts':<24} {n:>3} {ncalls:>6} {mutating:>8} {refused:>7} {wall:>7.2f} {a:>6.2f} "
              f"{b:>6.2f} {wall / a:>8.2f} {wall / b:>8.2f} {thru:>9.2f} {rss:>6.1f} MB {code:>4} {down_wall:>7.2f} "
              f"{down_code:>4}")
    print("(a) = longest chain: max over DAG paths of (calls x call + the waits on it; a propagation window overlaps "
          "the next call's latency); target: wall <= 1.1 x (a)")
    print(f"(b) = CloudFormation-like: each resource complete only once stable (role propagated, endpoint available, "
          f"namespace operation done, ECS service steady), dependants after; {args.cfn_overhead:g} s CloudFormation "
          f"overhead per resource assumed (real CloudFormation adds seconds per resource)")
    print("refused = calls the proxy answered with an error (AWS's clock: NotFound ids, roles not yet usable)")
    n, _, _, path_a, path_b = lines[0]
    print(f"(a) path: {' -> '.join(path_a)}")
    print(f"(b) path: {' -> '.join(path_b)}")

    def fmt(v):
        return f"{v:>7.2f}" if v is not None else f"{'-':>7}"

    print("\nwhere the time went (s since `up` started; due = when the proxy's clock ends the wait, "
          "seen = secep's poll that saw it end)")
    keys = ["change", "ns due", "ns seen", "vpce due", "vpce seen", "ECS from", "ECS to", "rollout due",
            "rollout seen"]
    print(f"{'N':>3} " + " ".join(f"{k:>12}" for k in keys) + f" {'exit':>7} {'polls':>5} {'ECS call max':>12}")
    for n, t, wall, _, _ in lines:
        print(f"{n:>3} " + " ".join(f"{fmt(t[k]):>12}" for k in keys) + f" {wall:>7.2f} {t['polls']:>5} "
              f"{fmt(t['ECS max']):>12}")

    # wall - (a) split along (a)'s path read -> VPC -> (DNS | group | subnet) -> endpoints -> ECS service: the
    # terms add up to wall - (a) exactly.
    print(f"\nwall - (a) along (a)'s path (s): read round = first change - 1 call; creates = endpoints due - first "
          f"change - 3 calls - {dur['endpoint_pending_seconds']:g}; endpoint poll = seen - due; ECS create = "
          f"deployment start - endpoints seen - 1 call; rollout poll = seen - due; exit = wall - rollouts seen")
    parts = ["read round", "creates", "endpoint poll", "ECS create", "rollout poll", "exit"]
    print(f"{'N':>3} {'wall-(a)':>8} " + " ".join(f"{p:>13}" for p in parts))
    for (n, t, wall, _, _), r in zip(lines, rows):
        if None in (t["change"], t["vpce due"], t["vpce seen"], t["rollout due"], t["rollout seen"]):
            continue
        deploy = t["rollout due"] - dur["rollout_seconds"]
        gap = [t["change"] - call, t["vpce due"] - t["change"] - 3 * call - dur["endpoint_pending_seconds"],
               t["vpce seen"] - t["vpce due"], deploy - t["vpce seen"] - call, t["rollout seen"] - t["rollout due"],
               wall - t["rollout seen"]]
        print(f"{n:>3} {wall - r[5]:>8.2f} " + " ".join(f"{g:>13.2f}" for g in gap))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
