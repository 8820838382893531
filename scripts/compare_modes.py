#!/usr/bin/env python3
"""Train the same run with each loop (fit, train_on_batch, tape) and compare them.

    python scripts/compare_modes.py --epochs=3 --num_examples=2000
    python scripts/compare_modes.py --dataset=reuters --data_dir=../shared/data

The three runs share every option and the seed, and go to one log directory
(`<logdir>/fit`, `<logdir>/train_on_batch`, `<logdir>/tape`), so TensorBoard
shows them side by side. The script then reads each run's *event files* (what
TensorBoard shows, not the in-memory history) and prints, per metric, one row
per epoch with the loops side by side and their largest relative difference,
and at the end the largest relative difference of the loss between the loops.

Exit status: 0; 1 if --max_rel_diff is given and the loss differs by more;
2 for a bad option.
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness.callbacks import events  # noqa: E402

MODES = ("fit", "train_on_batch", "tape")
# Tags shown first, in this order; other epoch_* tags follow alphabetically.
_FIRST = ("epoch_loss", "epoch_accuracy", "epoch_top5_accuracy", "epoch_auc")
_LAST = ("epoch_learning_rate", "epoch_examples_per_second", "epoch_seconds")


def _parse_args(argv):
    from harness.config import DATASETS, OPTIMIZERS, Config

    defaults = Config()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated loops to compare")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--num_examples", type=int, default=2000, help="synthetic data only: training examples"
    )
    parser.add_argument("--dataset", default=defaults.dataset, choices=DATASETS)
    parser.add_argument(
        "--data_dir", default=None, help="folder holding reuters.npz / imdb.npz (offline)"
    )
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--num_words", type=int, default=defaults.num_words)
    parser.add_argument("--max_len", type=int, default=defaults.max_len)
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size)
    parser.add_argument("--optimizer", default=defaults.optimizer, choices=OPTIMIZERS)
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--lr_halve_epochs",
        default=",".join(map(str, defaults.lr_halve_epochs)),
        help="1-based epochs at which the rate is halved (empty: never)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--summary_every_steps", type=int, default=defaults.summary_every_steps)
    parser.add_argument("--histogram_freq", type=int, default=defaults.histogram_freq)
    parser.add_argument(
        "--logdir", default=None, help="where the three runs go (default: logs/compare-<time>)"
    )
    parser.add_argument(
        "--max_rel_diff",
        type=float,
        default=None,
        help="exit 1 if the loss differs between loops by more than this",
    )
    parser.add_argument("--verbose", action="store_true", help="show each run's own console output")
    return parser.parse_args(argv)


def _configs(args):
    """One validated Config per mode; raises UsageError for a bad option."""
    from harness.config import Config, parse_int_list
    from harness.errors import UsageError

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or len(modes) < 2 or len(set(modes)) != len(modes):
        raise UsageError(
            f"--modes={args.modes!r} is not allowed: give two or three "
            f"different loops of {', '.join(MODES)}"
        )
    logdir = args.logdir or os.path.join("logs", f"compare-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    common = dict(
        epochs=args.epochs,
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        num_words=args.num_words,
        max_len=args.max_len,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        seed=args.seed,
        lr_halve_epochs=parse_int_list("lr_halve_epochs", args.lr_halve_epochs),
        summary_every_steps=args.summary_every_steps,
        histogram_freq=args.histogram_freq,
        logdir=logdir,
        verbose=0,
    )
    if args.dataset == "synthetic":
        common["num_examples"] = args.num_examples
    return [Config(mode=mode, run_name=mode, **common).validate() for mode in modes]


def read_epoch_scalars(run_dir: str) -> dict:
    """{"train/epoch_loss": {epoch: value}, ...} from a run's event files.

    A step written twice (it should not be) keeps its last value.
    """
    return {
        f"{split}/{tag}": dict(points)
        for split in ("train", "validation")
        for tag, points in events.read(os.path.join(run_dir, split)).scalars_named("epoch_").items()
    }


def relative_difference(values) -> float:
    """(max - min) / max |value|: 0 when all agree; 0 for all zeros."""
    values = list(values)
    scale = max(abs(v) for v in values)
    return (max(values) - min(values)) / scale if scale else 0.0


def _order(key: str):
    split, tag = key.split("/", 1)
    if tag in _FIRST:
        rank = (0, _FIRST.index(tag))
    elif tag in _LAST:
        rank = (2, _LAST.index(tag))
    else:
        rank = (1, tag)
    return rank, split != "train"


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.6f}"
    return f"{value:.6g}"


def format_comparison(scalars_by_mode: dict) -> tuple:
    """The side-by-side table and the loss's largest relative difference.

    Returns:
        (text, worst) where worst is (difference, key, epoch) for the loss.
    """
    modes = list(scalars_by_mode)
    keys = set.intersection(*(set(s) for s in scalars_by_mode.values()))
    lines = []
    missing = set.union(*(set(s) for s in scalars_by_mode.values())) - keys
    if missing:
        lines.append(f"not written by every loop (left out): {', '.join(sorted(missing))}")
    worst = (0.0, None, None)
    widths = [5] + [max(len(m), 12) for m in modes] + [12]
    for key in sorted(keys, key=_order):
        epochs = sorted(set.intersection(*(set(scalars_by_mode[m][key]) for m in modes)))
        lines += [
            "",
            key,
            "  ".join(
                h.ljust(w) for h, w in zip(["epoch", *modes, "max rel diff"], widths)
            ).rstrip(),
        ]
        for epoch in epochs:
            row = [scalars_by_mode[m][key][epoch] for m in modes]
            difference = relative_difference(row)
            if key.endswith("/epoch_loss") and difference >= worst[0]:
                worst = (difference, key, epoch)
            cells = [str(epoch), *map(_fmt, row), f"{difference:.2e}"]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines), worst


def main(argv=None) -> int:
    args = _parse_args(argv)
    from harness.errors import HarnessError

    try:
        configs = _configs(args)
    except HarnessError as error:
        print(f"compare_modes: error: {error}", file=sys.stderr)
        return 2
    import keras

    from harness import train

    logdir = configs[0].logdir
    print(
        f"compare_modes: {', '.join(c.mode for c in configs)} | seed {args.seed} | "
        f"{args.dataset}, {args.model} | {args.epochs} epochs | logdir {logdir}"
    )
    scalars_by_mode = {}
    for config in configs:
        # A fresh Keras session per run: layer names, hence histogram tags,
        # are then the same in every run (train() does not reset them).
        keras.backend.clear_session()
        start = time.perf_counter()
        print_fn = (
            (lambda s, m=config.mode: print(f"[{m}] {s}")) if args.verbose else (lambda s: None)
        )
        try:
            result = train(config, print_fn=print_fn)
        except HarnessError as error:
            print(f"compare_modes: error: {error}", file=sys.stderr)
            return 2
        print(f"  {config.mode}: {time.perf_counter() - start:.1f} s, {result.run_dir}")
        scalars_by_mode[config.mode] = read_epoch_scalars(result.run_dir)

    table, (worst, key, epoch) = format_comparison(scalars_by_mode)
    print(table)
    print()
    where = f" ({key}, epoch {epoch})" if key else ""
    print(f"max relative difference of loss between modes: {worst:.3e}{where}")
    print(f"See them in TensorBoard: tensorboard --logdir {logdir} --host 127.0.0.1")
    if args.max_rel_diff is not None and worst > args.max_rel_diff:
        print(
            f"compare_modes: the loss differs by {worst:.3e} > --max_rel_diff="
            f"{args.max_rel_diff:g}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
