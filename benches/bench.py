"""secep benchmark: wall time against the dependency-chain and throughput bounds, calls counted by the proxy.

Run from the repository root:  localstack/.venv/bin/python benches/bench.py   (or: bash benches/run)
It starts its own moto and fidelity proxy on free 127.0.0.1 ports (stopped at exit), adds a fixed per-call latency
(default 100 ms) so that the dependency chain dominates as on AWS, generates mesh configs of N services, runs each
scenario once and prints one table. Numbers are measured side by side in one run; nothing here is a test.
It measures the release build (what `cargo install` gives users; a cold build takes about 20 minutes here);
`--debug` measures the tests' debug build instead.

Bounds: chain = the longest chain of dependent calls x (added latency + emulator service time); throughput =
calls x service time (the emulator answers one call at a time). The service time is the median upstream time of the
`--parallelism 1` run, where no call queues behind another (under load the emulator's queueing would inflate it); bucket (throttled scenario only) = the EC2 mutating
calls the proxy's token bucket admitted / its refill rate. Calls are counted from the proxy's call log, throttled
answers included. Peak RSS is the secep process's own (wait4), not the emulator's.
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
        lines.append(f'[services.s{i}]\nimage = "img-{i}"\nport = {8000 + i}\ncalls = [{", ".join(calls)}]\n')
    return "\n".join(lines)


class Proxy:
    def __init__(self, url):
        self.url = url

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
    return work, Proxy(url), env


def slow_fsync(ms):
    """A command prefix that delays every fsync of the command by `ms` (a slower disk than this machine's)."""
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-o", os.devnull, "-e", "trace=fsync",
            "-e", f"inject=fsync:delay_exit={int(ms * 1000)}"] if ms else []


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--sizes", default="2,10,50")
    ap.add_argument("--debug", action="store_true",
                    help="measure the debug build (the tests' warm one) instead of the release build users install")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = [] if args.debug else ["--release"]
    print(f"building secep (cargo build {' '.join(profile)}) ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--locked", *profile], cwd=ROOT, check=True)
    secep = os.path.join(target, "debug" if args.debug else "release", "secep")

    work, proxy, env = start_emulator()
    url = proxy.url

    def run(n, stack, *cmd, latency=args.latency_ms, wrap=()):
        folder = os.path.join(work, stack)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "secep.toml"), "w") as f:
            f.write(mesh(n, stack))
        proxy.config(latency_ms=latency)
        proxy.clear()
        log_path = os.path.join(folder, f"{cmd[0]}.stderr")
        with open(log_path, "w") as log:
            t0 = time.monotonic()
            child = subprocess.Popen([*wrap, secep, *cmd, "--endpoint-url", url], cwd=folder, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 2):
            sys.exit(f"secep {' '.join(cmd)} failed for N={n} (exit {code}):\n{open(log_path).read()}")
        calls = proxy.calls()
        upstream = [c["latency_ms"] - latency for c in calls if c.get("injected") in (None, "latency")]
        service = statistics.median(upstream) / 1000 if upstream else 0.0
        return wall, calls, service, usage.ru_maxrss / 1024

    # Warm up: the emulator's first EC2 call costs about a second.
    run(2, "warmup", "up")
    run(2, "warmup", "down", "--yes")

    rows = []
    per_call = args.latency_ms / 1000
    n = max(sizes)
    # Serial first: it calibrates the emulator's service time for every bound below.
    serial = run(n, "serial", "up", "--parallelism", "1")
    service = serial[2]
    run(n, "serial", "down", "--yes")

    def row(scenario, n, measured, chain, bucket_rate=None):
        wall, calls, _, rss = measured
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

    print(f"\nsecep benchmark ({'debug' if args.debug else 'release'} build): moto 5.2.5 behind the fidelity proxy, "
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


if __name__ == "__main__":
    main()
