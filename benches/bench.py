"""secep benchmark: wall time against the dependency-chain and throughput bounds, calls counted by the proxy.

Run from the repository root:  localstack/.venv/bin/python benches/bench.py   (or: bash benches/run)
It starts its own moto and fidelity proxy on free 127.0.0.1 ports (stopped at exit), adds a fixed per-call latency
(default 100 ms) so that the dependency chain dominates as on AWS, generates mesh configs of N services, runs each
scenario once and prints one table. Numbers are measured side by side in one run; nothing here is a test.
"""

import argparse
import json
import os
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--sizes", default="2,10,50")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    print("building secep (cargo build) ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--locked"], cwd=ROOT, check=True)
    secep = os.path.join(target, "debug", "secep")

    work = tempfile.mkdtemp(prefix="secep-bench-")
    me = str(os.getpid())
    moto = sh("bash", f"{ROOT}/localstack/start.sh", "--port", "0", "--run-dir", work, "--watch-pid", me)
    url = sh("bash", f"{ROOT}/localstack/start-proxy.sh", "--port", "0", "--run-dir", work, "--watch-pid", me,
             "--upstream", moto, "-q").splitlines()[-1]
    proxy = Proxy(url)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", NO_COLOR="1")

    def run(n, stack, *cmd, latency=args.latency_ms):
        folder = os.path.join(work, stack)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "secep.toml"), "w") as f:
            f.write(mesh(n, stack))
        proxy.config(latency_ms=latency)
        proxy.clear()
        t0 = time.monotonic()
        out = subprocess.run([secep, *cmd, "--endpoint-url", url], cwd=folder, env=env, text=True, capture_output=True)
        wall = time.monotonic() - t0
        if out.returncode not in (0, 2):
            sys.exit(f"secep {' '.join(cmd)} failed for N={n}:\n{out.stderr}")
        calls = proxy.calls()
        upstream = [c["latency_ms"] - latency for c in calls if c.get("injected") in (None, "latency")]
        return wall, calls, statistics.median(upstream) / 1000 if upstream else 0.0

    # Warm up: the emulator's first EC2 call costs about a second.
    run(2, "warmup", "up")
    run(2, "warmup", "down", "--yes")

    rows = []
    per_call = args.latency_ms / 1000

    def row(scenario, n, wall, calls, service, chain):
        mutating = sum(1 for c in calls if c["mutating"])
        chain_bound = chain * (per_call + service)
        throughput_bound = len(calls) * service
        bound = max(chain_bound, throughput_bound)
        rows.append((scenario, n, len(calls), mutating, wall, chain_bound, throughput_bound, wall / bound if bound else 0))

    for n in sizes:
        stack = f"bench{n}"
        wall, calls, service = run(n, stack, "up")
        row("up", n, wall, calls, service, UP_CHAIN)
        wall, calls, service = run(n, stack, "up")
        row("up (no-op)", n, wall, calls, service, 1)
        wall, calls, service = run(n, stack, "status")
        row("status", n, wall, calls, service, 1)
        wall, calls, service = run(n, stack, "down", "--yes")
        row("down", n, wall, calls, service, DOWN_CHAIN)

    n = max(sizes)
    wall_p1, calls, service = run(n, "serial", "up", "--parallelism", "1")
    row("up --parallelism 1", n, wall_p1, calls, service, UP_CHAIN)
    run(n, "serial", "down", "--yes")
    parallel_wall = next(r[4] for r in rows if r[0] == "up" and r[1] == n)

    print(f"\nsecep benchmark: moto 5.2.5 behind the fidelity proxy, {args.latency_ms:.0f} ms added per call, "
          f"{os.cpu_count()} cores; bounds use the median emulator service time measured in the same run")
    print(f"{'scenario':<22} {'N':>3} {'calls':>6} {'mutating':>8} {'wall s':>8} {'chain s':>8} {'thruput s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r[0]:<22} {r[1]:>3} {r[2]:>6} {r[3]:>8} {r[4]:>8.2f} {r[5]:>8.2f} {r[6]:>9.2f} {r[7]:>6.2f}")
    print(f"\nN={n}: up with the default parallelism is {wall_p1 / parallel_wall:.1f}x faster than --parallelism 1")
    print("ratio = wall / max(chain bound, calls x emulator service time); 1.0 is the floor")


if __name__ == "__main__":
    main()
