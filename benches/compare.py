"""Two secep binaries side by side: `up` and `down` of the same mesh, alternated run by run, medians compared.

Run from the repository root:
    localstack/.venv/bin/python benches/compare.py OLD_BINARY NEW_BINARY [--sizes 10,50] [--reps 3] [--fsync-ms 0,10]
A binary of another commit: `git worktree add /tmp/old REV && cargo build --release --manifest-path
/tmp/old/Cargo.toml`, then copy `$CARGO_TARGET_DIR/release/secep` (or /tmp/old/target/release/secep) aside before
building the other one. Same emulator, proxy and 100 ms per call as benches/bench.py; `--fsync-ms` delays every
fsync of secep (strace), for a state file on a slower disk than this machine's. Alternating the two binaries run by
run keeps the shared machine's drift out of the ratio. Nothing here is a test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench import mesh, slow_fsync, start_emulator


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--sizes", default="10")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fsync-ms", default="0")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    args = ap.parse_args()
    binaries = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    work, proxy, env = start_emulator()
    proxy.config(latency_ms=args.latency_ms)
    runs = 0

    def run(binary, n, fsync_ms, *cmd):
        nonlocal runs
        runs += 1
        folder = os.path.join(work, f"run{runs}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "secep.toml"), "w") as f:
            f.write(mesh(n, f"cmp{runs}"))
        walls = []
        for c in cmd:
            t0 = time.monotonic()
            done = subprocess.run([*slow_fsync(fsync_ms), binary, *c, "--endpoint-url", proxy.url], cwd=folder,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            walls.append(time.monotonic() - t0)
            if done.returncode != 0:
                sys.exit(f"{binary} {' '.join(c)} failed (exit {done.returncode}):\n{done.stderr}")
        return walls

    run(binaries["new"], 2, 0, ["up"], ["down", "--yes"])  # warm-up: the emulator's first EC2 call is slow
    print(f"{'N':>3} {'fsync +ms':>9} {'command':<7} {'old median s':>12} {'new median s':>12} {'new/old':>7}  runs")
    for n in [int(s) for s in args.sizes.split(",")]:
        for fsync_ms in [float(s) for s in args.fsync_ms.split(",")]:
            walls = {name: [] for name in binaries}
            for _ in range(args.reps):
                for name, binary in binaries.items():
                    walls[name].append(run(binary, n, fsync_ms, ["up"], ["down", "--yes"]))
            for i, command in enumerate(("up", "down")):
                old = statistics.median(w[i] for w in walls["old"])
                new = statistics.median(w[i] for w in walls["new"])
                print(f"{n:>3} {fsync_ms:>9g} {command:<7} {old:>12.2f} {new:>12.2f} {new / old:>7.2f}  {args.reps}")


if __name__ == "__main__":
    main()
