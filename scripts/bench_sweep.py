"""Total training throughput of a 4-trial sweep at --parallel=1 vs --parallel=2.

usage: python scripts/bench_sweep.py [--repeats=2] [--num_examples=2000] [--epochs=2]

Runs the same 2x2 grid sweep (synthetic data) with each --parallel value,
interleaved and repeated, each in a fresh folder under a temporary directory,
and prints the total train examples per second (examples x epochs x trials /
wall seconds, TensorFlow start-up included) of every run, the medians and the
paired ratio.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

GRID = "learning_rate=1e-3,3e-3;optimizer=adam,nadam"
TRIALS = 4


def one_sweep(parallel: int, args: argparse.Namespace, logdir: str) -> float:
    """The examples per second of one sweep (its wall time, start-up included)."""
    command = [
        sys.executable,
        "-m",
        "harness.sweep",
        f"--name=p{parallel}",
        f"--grid={GRID}",
        f"--parallel={parallel}",
        f"--logdir={logdir}",
        "--dataset=synthetic",
        f"--num_examples={args.num_examples}",
        f"--epochs={args.epochs}",
        "--embeddings_freq=0",
        "--eval_figures_freq=0",
        "--diagnostics_freq=0",
    ]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    return args.num_examples * args.epochs * TRIALS / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num_examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; {TRIALS} trials of {args.num_examples} examples x {args.epochs}")
    rates = {1: [], 2: []}
    for repeat in range(args.repeats):
        for parallel in rates:  # interleaved: a busy spell hurts both alike
            with tempfile.TemporaryDirectory() as logdir:
                rates[parallel].append(one_sweep(parallel, args, logdir))
            print(
                f"repeat {repeat + 1} --parallel={parallel}: {rates[parallel][-1]:.0f} examples/s"
            )
    for parallel, values in rates.items():
        print(f"--parallel={parallel}: median {statistics.median(values):.0f} examples/s")
    ratios = [two / one for one, two in zip(rates[1], rates[2])]
    print(
        f"--parallel=2 / --parallel=1, paired: median {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
