"""Stops real training runs at random moments and checks that resuming loses nothing.

For each loop: one uninterrupted reference run, then trials. A trial is a run
that is stopped several times, each stop by SIGINT, SIGTERM or kill -9 at a
random moment of one kind (setup, a training step, an epoch end, a checkpoint
save), each followed by `--resume` (the command the harness printed, after a
signal), until it finishes. The finished run must equal the reference: every
epoch once in history.json and in the event files, no step twice in any event
file, no temporary file left, and the history, the event files' scalars and the
final weights within --tolerance.

    python scripts/fault_soak.py --stops=20 --out=logs/fault-soak

prints a table (stops tried per loop and moment, how many runs ended equal)
and writes it to <out>/fault_soak.md and .json.
"""

import argparse
import dataclasses
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the checkpoint reader imports TF
sys.path.insert(0, str(REPO))

from harness.callbacks import events  # noqa: E402
from harness.callbacks.files import TEMPORARY_SUFFIX  # noqa: E402

LOOPS = ("fit", "train_on_batch", "tape")
MOMENTS = ("setup", "step", "epoch_end", "checkpoint")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
EPOCHS, STEPS_PER_EPOCH = 3, 25  # 800 examples, batch 32
RUN_FLAGS = [
    f"--epochs={EPOCHS}",
    "--num_examples=800",
    "--max_len=40",
    "--num_words=1000",
    "--batch_size=32",
    "--learning_rate=0.01",
    "--lr_halve_epochs=2",
    "--checkpoint_every_steps=4",
    "--summary_every_steps=1",
    "--histogram_freq=1",
    "--verbose=0",
]
# Scalars that measure time, not training: they differ between any two runs.
TIMING_TAGS = ("epoch_seconds", "epoch_examples_per_second")


@dataclasses.dataclass
class Stop:
    """One stop of a trial: what was sent when, and what the process did."""

    loop: str
    moment: str
    signal_name: str
    exit_code: int = 0
    resumed_at: int = -1  # the global step the next process resumed from


@dataclasses.dataclass
class Trial:
    """A run stopped len(stops) times, then compared with the reference."""

    loop: str
    stops: list
    problems: list


def harness(args: list, cwd: Path, name: str) -> subprocess.Popen:
    """`python -m harness.run ARGS` in its own session, output in files under `cwd`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.run", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def trigger(moment: str, run_dir: Path, rng: random.Random):
    """A condition on the run directory that becomes true at a moment of that kind."""
    flags = run_dir / "flags.json"
    flags_mtime = flags.stat().st_mtime_ns if flags.exists() else 0
    tail = events.EventTail(run_dir / "train", "batch_loss")
    done = max(tail.poll(), default=0)
    if moment == "setup":  # the flags are (re)written right after the run directory is claimed
        return lambda: flags.exists() and flags.stat().st_mtime_ns != flags_mtime
    if moment == "step":
        target = rng.randrange(done + 1, EPOCHS * STEPS_PER_EPOCH)
        return lambda: max(tail.poll(), default=0) >= target
    if moment == "epoch_end":  # the epoch's last step is logged; its end work starts
        return lambda: any(s > done and s % STEPS_PER_EPOCH == 0 for s in tail.poll())
    checkpoints = run_dir / "checkpoints"
    existing = set(os.listdir(checkpoints)) if checkpoints.exists() else set()
    return lambda: (
        checkpoints.exists()
        and any(
            name not in existing and name.startswith("ckpt-") for name in os.listdir(checkpoints)
        )
    )


def stop_once(
    args: list,
    work: Path,
    run_dir: Path,
    stop: Stop,
    rng: random.Random,
    name: str,
    timeout: float = 300,
) -> list:
    """Starts `args`, stops it at `stop`'s moment; returns the command that resumes it
    (None when the run finished before the moment came)."""
    condition = trigger(stop.moment, run_dir, rng)
    process = harness(args, work, name)
    deadline = time.monotonic() + timeout
    while process.poll() is None and not condition():
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name}: no {stop.moment} moment in {timeout} s")
        time.sleep(0.002)
    if process.poll() is not None:
        stop.exit_code = process.returncode
        return None
    if stop.moment == "epoch_end":
        time.sleep(rng.uniform(0, 0.3))  # anywhere in validation, summaries, saves
    process.send_signal(signal.Signals[stop.signal_name])
    stop.exit_code = process.wait(timeout=timeout)
    if stop.exit_code == 0:  # a stop asked for in the run's last epoch end lets it finish
        return None
    if stop.signal_name == "SIGKILL":
        return [*[a for a in args if a != "--resume"], "--resume"]
    printed = [
        line for line in (work / f"{name}.err").read_text().splitlines() if "resume with:" in line
    ]
    if not printed:
        raise RuntimeError(
            f"{name}: no resume command after {stop.signal_name}: "
            + (work / f"{name}.err").read_text()[-2000:]
        )
    command = shlex.split(printed[-1].split("resume with:", 1)[1])
    return command[command.index("harness.run") + 1 :]


def run_trial(
    loop: str, plan: list, work: Path, reference: Path, rng: random.Random, tolerance: float
) -> Trial:
    """Runs one trial with the stops in `plan`; compares the result with `reference`."""
    name = f"{loop}-trial-{rng.randrange(10**6)}"
    run_dir = work / "logs" / name
    args = [f"--mode={loop}", f"--run_name={name}", "--logdir=logs", *RUN_FLAGS]
    stops = []
    for index, (moment, signal_number) in enumerate(plan):
        stop = Stop(loop, moment, signal.Signals(signal_number).name)
        resume = stop_once(args, work, run_dir, stop, rng, f"{name}-{index}")
        stops.append(stop)
        if resume is None:
            break
        args = resume
    else:
        final = harness(args, work, f"{name}-final")
        if final.wait(timeout=600) != 0:
            return Trial(
                loop,
                stops,
                [
                    f"final resume exited {final.returncode}: "
                    + (work / f"{name}-final.err").read_text()[-1500:]
                ],
            )
    resumed = [
        int(step)
        for out in sorted(work.glob(f"{name}-*.out"))
        for step in re.findall(r"at global step (\d+)", out.read_text())
    ]
    for stop, step in zip(stops, resumed):
        stop.resumed_at = step
    return Trial(loop, stops, compare(run_dir, reference, tolerance))


def compare(run_dir: Path, reference: Path, tolerance: float) -> list:
    """What differs between a finished, resumed run and the uninterrupted reference."""
    problems = []
    history = json.loads((run_dir / "history.json").read_text())
    expected = json.loads((reference / "history.json").read_text())
    if history["epoch"] != expected["epoch"]:
        return [f"history epochs {history['epoch']} != {expected['epoch']}"]
    for key, values in expected.items():
        for epoch, (value, want) in enumerate(zip(history.get(key, []), values), start=1):
            if abs(value - want) > tolerance:
                problems.append(f"history {key} epoch {epoch}: {value} != {want}")
    for folder in ("", "train", "validation"):
        got, want = (events.read(run / folder).tensors for run in (run_dir, reference))
        for tag, points in got.items():
            steps = [step for step, _ in points]
            if len(set(steps)) != len(steps):
                problems.append(f"{folder}/{tag}: a step written twice {steps}")
        if set(got) != set(want):
            problems.append(f"{folder}: tags {sorted(set(got) ^ set(want))} differ")
        for tag in set(got) & set(want):
            if sorted(s for s, _ in got[tag]) != sorted(s for s, _ in want[tag]):
                problems.append(f"{folder}/{tag}: steps differ")
            elif tag.startswith(("epoch_", "batch_")) and tag not in TIMING_TAGS:
                for (step, value), (_, value_want) in zip(sorted(got[tag]), sorted(want[tag])):
                    if np.max(np.abs(value - value_want)) > tolerance:
                        problems.append(f"{folder}/{tag} step {step}: {value} != {value_want}")
    problems += compare_weights(run_dir, reference, tolerance)
    left = [p.name for p in run_dir.rglob(f"*{TEMPORARY_SUFFIX}*")]
    return problems + ([f"temporary files left: {left}"] if left else [])


def compare_weights(run_dir: Path, reference: Path, tolerance: float) -> list:
    """Differences between the variables of the two runs' newest checkpoints."""
    import tensorflow as tf

    readers = [tf.train.load_checkpoint(str(d / "checkpoints")) for d in (run_dir, reference)]
    names = [
        name
        for name, dtype in readers[1].get_variable_to_dtype_map().items()
        if dtype.is_floating or dtype.is_integer and "save_counter" not in name
    ]
    problems = []
    for name in names:
        difference = np.max(
            np.abs(readers[0].get_tensor(name).astype(np.float64) - readers[1].get_tensor(name)),
            initial=0.0,
        )
        if difference > tolerance:
            problems.append(f"weight {name} differs by {difference:.3g}")
    return problems


def soak(loops: list, stops: int, per_trial: int, work: Path, seed: int, tolerance: float) -> list:
    """Runs `stops` stops per loop (trials of `per_trial` stops); returns the trials."""
    rng = random.Random(seed)
    trials = []
    for loop in loops:
        reference = harness(
            [f"--mode={loop}", f"--run_name={loop}-reference", "--logdir=logs", *RUN_FLAGS],
            work,
            f"{loop}-reference",
        )
        if reference.wait(timeout=600) != 0:
            raise RuntimeError(
                f"the {loop} reference run failed: "
                + (work / f"{loop}-reference.err").read_text()[-2000:]
            )
        # Every (moment, signal) pair once in each 12 stops: 4 and 3 share no factor.
        pairs = [(MOMENTS[i % len(MOMENTS)], SIGNALS[i % len(SIGNALS)]) for i in range(stops)]
        rng.shuffle(pairs)
        for start in range(0, stops, per_trial):
            plan = sorted(pairs[start : start + per_trial], key=lambda p: p[0] != "setup")
            trial = run_trial(loop, plan, work, work / "logs" / f"{loop}-reference", rng, tolerance)
            print(
                f"{loop}: {', '.join(f'{s.moment}/{s.signal_name}' for s in trial.stops)}: "
                + ("equal" if not trial.problems else "; ".join(trial.problems[:3])),
                flush=True,
            )
            trials.append(trial)
    return trials


def table(trials: list) -> str:
    """Markdown: per loop and moment, stops tried and how many of their runs ended equal."""
    rows = [
        "| loop | moment | SIGINT | SIGTERM | kill -9 | runs ended equal |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for loop in dict.fromkeys(t.loop for t in trials):
        for moment in MOMENTS:
            stops = [
                (s, t) for t in trials if t.loop == loop for s in t.stops if s.moment == moment
            ]
            counts = [
                sum(s.signal_name == name for s, _ in stops)
                for name in ("SIGINT", "SIGTERM", "SIGKILL")
            ]
            equal = sum(not t.problems for _, t in stops)
            rows.append(
                f"| {loop} | {moment} | {' | '.join(map(str, counts))} | {equal} of {len(stops)} |"
            )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--stops", type=int, default=20, help="stops per loop")
    parser.add_argument("--per_trial", type=int, default=4, help="stops before a run finishes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--out", default="logs/fault-soak")
    args = parser.parse_args(argv)
    loops = [loop for loop in args.loops.split(",") if loop]
    if not loops or set(loops) - set(LOOPS) or args.stops < 1 or args.per_trial < 1:
        parser.error(f"--loops takes {', '.join(LOOPS)}; --stops and --per_trial are >= 1")
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    trials = soak(loops, args.stops, args.per_trial, work, args.seed, args.tolerance)
    text = table(trials)
    print(text)
    (work / "fault_soak.md").write_text(text + "\n")
    (work / "fault_soak.json").write_text(
        json.dumps([dataclasses.asdict(t) for t in trials], indent=2)
    )
    return 0 if all(not t.problems for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
