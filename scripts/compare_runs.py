"""Print how two runs differ: the flags that differ, and each metric's delta.

Usage, from the repository root:

    python scripts/compare_runs.py A B                 # run names under logs/
    python scripts/compare_runs.py logs/A logs/sweep/t01-lr0.003 --logdir logs

A and B are run directories or run names under --logdir. The flags come from each
run's flags.json, the metrics from its event files (train/ and validation/): each
epoch metric at the last epoch, and the validation metrics at their best epoch too.
Nothing is written. Exit status: 0, or 2 if a run is missing or holds no flags.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.callbacks import events  # noqa: E402  (needs the repo root on sys.path)
from harness.report import higher_is_better  # noqa: E402

# What a run's flags.json holds that names the run rather than what it trained.
_NOT_COMPARED = ("run_name", "resume", "overwrite")
# The event-file folders of a run and the prefix their metrics get in Keras's logs.
_FOLDERS = (("train", ""), ("validation", "val_"))


class RunError(Exception):
    """A run that cannot be compared: missing, or not a harness run."""


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs=2, metavar="RUN", help="a run directory or run name")
    parser.add_argument("--logdir", default="logs", help="where run names are looked up")
    args = parser.parse_args(argv)
    try:
        first, second = (_run_dir(run, args.logdir) for run in args.runs)
        flags = [_flags(first), _flags(second)]
    except RunError as error:
        print(f"compare_runs: error: {error}", file=sys.stderr)
        return 2
    print(f"A: {first}\nB: {second}\n")
    print(_table(["flag", "A", "B"], _flag_rows(*flags)) or "The runs' flags are the same.")
    print()
    rows = _metric_rows(_metrics(first), _metrics(second))
    print(_table(["metric", "A", "B", "B - A"], rows) or "Neither run has epoch metrics yet.")
    return 0


def _run_dir(run: str, logdir: str) -> str:
    """`run` itself if it is a folder, else the run of that name under `logdir`."""
    for candidate in (run, os.path.join(logdir, run)):
        if os.path.isfile(os.path.join(candidate, "flags.json")):
            return candidate
    raise RunError(
        f"{run!r} is not a run: no flags.json in {run} or {os.path.join(logdir, run)}; "
        "give a run directory or a run name under --logdir"
    )


def _flags(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "flags.json")) as f:
            flags = json.load(f)
    except (OSError, ValueError) as error:
        raise RunError(f"{run_dir}/flags.json is unreadable ({error})") from None
    if not isinstance(flags, dict):
        raise RunError(f"{run_dir}/flags.json is not the flags object the harness writes")
    return {name: value for name, value in flags.items() if name not in _NOT_COMPARED}


def _flag_rows(first: dict, second: dict) -> list:
    """[flag, A's value, B's value] for each flag whose values differ."""
    return [
        [name, _shown(first.get(name)), _shown(second.get(name))]
        for name in sorted(set(first) | set(second))
        if first.get(name) != second.get(name)
    ]


def _metrics(run_dir: str) -> dict:
    """{metric: (last value, best value or None)} of the run's epoch summaries, named as
    in Keras's logs ('loss', 'val_accuracy'); best only for validation metrics."""
    found = {}
    for folder, prefix in _FOLDERS:
        summaries = events.read(os.path.join(run_dir, folder))
        for tag, points in summaries.scalars_named("epoch_").items():
            latest = dict(points)  # the last write of each epoch, as TensorBoard shows it
            values = [latest[step] for step in sorted(latest)]
            name = prefix + tag.removeprefix("epoch_")
            finite = [value for value in values if math.isfinite(value)]
            pick = max if higher_is_better(name) else min
            found[name] = (values[-1], pick(finite) if prefix and finite else None)
    return found


def _metric_rows(first: dict, second: dict) -> list:
    """[metric, A, B, B - A] for the last epoch, then '<metric> (best)' rows."""
    rows = []
    for index, suffix in ((0, ""), (1, " (best)")):
        for name in sorted(set(first) | set(second)):
            a, b = (run.get(name, (None, None))[index] for run in (first, second))
            if a is None and b is None:
                continue
            delta = b - a if a is not None and b is not None else None
            rows.append([name + suffix, _shown(a), _shown(b), _shown(delta, signed=True)])
    return rows


def _shown(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4g}" if signed else f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _table(header: list, rows: list) -> str:
    """`rows` under `header` in left-aligned columns ('' when there are no rows)."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    )


if __name__ == "__main__":
    sys.exit(main())
