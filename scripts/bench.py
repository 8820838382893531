"""Benchmark the harness against bare Keras baselines and the compute ceiling.

Usage, from the repository root:

    python scripts/bench.py                                 # 3 epochs x 3 repeats, real Reuters
    python scripts/bench.py --repeats 12 --epochs 4         # the full run of docs/performance.md
    python scripts/bench.py --quick                         # tiny synthetic smoke run
    python scripts/bench.py --variants bare-fit,harness-fit --repeats 5
    python scripts/bench.py --knobs                         # what each speed knob does
    python scripts/bench.py --batch_sizes 32,64,128,256,512 # batch-size scaling table
    python scripts/bench.py --data_scale 1,2,4,8            # data-size scaling table
    python scripts/bench.py --source datasets --repeats 8   # a user's tf.data pipelines
    python scripts/bench.py --source images --repeats 8     # a user's image folder

The variants (`bench_variants.py`) train in this process, interleaved in a new
seeded order each repeat; --memory, the thread knobs and the scaling points run
in fresh subprocesses. The method and the latest figures: docs/performance.md.

Writes bench.json and bench.md to --out (default logs/bench-<time>/).
Exit status: 0 on success, 2 on bad arguments or data, 1 if a run failed.
"""

import argparse
import concurrent.futures
import dataclasses
import datetime
import gc
import json
import math
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_data  # noqa: E402  (none of these imports TensorFlow)

from harness.config import Config  # noqa: E402
from harness.errors import UsageError  # noqa: E402

if TYPE_CHECKING:
    from harness.data import Splits

REUTERS_TRAIN = 8982  # keras.datasets.reuters's training split (test_split=0.2)
MODES = ("fit", "train_on_batch", "tape")
BASELINES = {  # variant: how it trains, plain Keras on the harness's data and model
    "bare-fit": "model.fit, a fresh iterator every epoch (as the tutorial)",
    "bare-fit-stream": "model.fit on one endless stream",
    "bare-fit-keras-logging": "model.fit with Keras's TensorBoard(histogram_freq=1) and "
    "ModelCheckpoint",
    "bare-tape": "the tape step called from `for x, y in ds`",
    "bare-tape-ingraph": "the tape step in a `tf.range` loop pulling from one endless stream",
    "bare-train_on_batch": "a `train_on_batch` / `test_on_batch` loop",
    "ceiling": "the tape step in a `tf.range` loop on one in-memory batch, no validation",
}
VARIANTS = (*BASELINES, *(f"harness-{m}{s}" for m in MODES for s in ("", "-nolog")))
# What the runs train on: the harness's Reuters arrays, or a user's data (bench_data.py),
# where the bare baselines read it as a user feeds model.fit.
SOURCES = {
    "reuters": "Reuters through --dataset=reuters",
    "datasets": "Reuters as a user's pair of tf.data.Datasets (a --dataset function)",
    "images": "an image folder of 8x8 digits at --image_size 32,32",
}
USER_VARIANTS = (
    "bare-fit",
    "bare-train_on_batch",
    "harness-fit",
    "harness-train_on_batch",
    "harness-tape",
)
IMAGE_SIZE = (32, 32)
SCALE_VARIANTS = ("bare-fit", "harness-fit", "harness-train_on_batch", "harness-tape")
AT_LEAST = {"epochs": 2, "repeats": 1}  # the harness's Config checks the other numbers
THREAD_FIELDS = ("intra_op_threads", "inter_op_threads")
OWN_PROCESS_DEFAULTS = "defaults, own process"
# The speed knobs as harness Config fields; "epoch" = the steps of one epoch.
KNOBS = {
    "defaults": {},
    "steps_per_execution=1": {"steps_per_execution": 1},
    "steps_per_execution=epoch": {"steps_per_execution": "epoch"},
    "jit_compile": {"jit_compile": True},
    "mixed_precision": {"mixed_precision": True},
    OWN_PROCESS_DEFAULTS: {},
    "intra_op_threads=1": {"intra_op_threads": 1},
    "inter_op_threads=1": {"inter_op_threads": 1},
}
KNOB_NAMES = [k for k in KNOBS if not k.startswith("defaults")]
TARGETS = (  # (variant or None for every variant, figure, low, high, what)
    ("harness-fit", "vs_baseline", 1.0, None, ">= 1.0x bare-fit"),
    ("harness-train_on_batch", "vs_baseline", 1.0, None, ">= 1.0x bare-train_on_batch"),
    ("harness-tape", "vs_ceiling", 0.95, None, ">= 0.95x ceiling"),
    *((f"harness-{m}", "logging_cost_pct", None, 3.0, "logging costs <= 3%") for m in MODES),
    (None, "retraces_after_first_epoch", None, 0, "no retracing after epoch 1"),
    (None, "peak_rss_vs_baseline", None, 1.1, "peak RSS <= 1.1x its baseline"),
    (None, "rss_growth_ep2_to_last_mb", None, 16.0, "RSS ep2 -> last <= 16 MB"),
)
# On a user's data, the tape loop is held to what a user would run instead: model.fit.
USER_TARGETS = (("harness-tape", "vs_baseline", 1.0, None, ">= 1.0x bare-fit"),)
FAST_PERCENTILE = 90
# The Config fields whose 0 turns a kind of logging off (the -nolog variants).
LOGGING_FREQUENCIES = (
    "summary_every_steps",
    "histogram_freq",
    "embeddings_freq",
    "eval_figures_freq",
    "diagnostics_freq",
)


@dataclasses.dataclass
class Settings:
    """What every run of one benchmark shares (changed per run by `Runner`)."""

    dataset: str = "reuters"
    data_dir: str | None = None
    num_examples: int | None = None
    batch_size: int = 32
    epochs: int = 3
    max_len: int = 300
    num_words: int = 10000
    extra: dict = dataclasses.field(default_factory=dict)  # more harness Config fields
    source: str = "reuters"  # a key of SOURCES

    @property
    def train_size(self) -> int:
        """Training examples per epoch."""
        return self.num_examples or bench_data.TRAIN_SIZES.get(self.source, REUTERS_TRAIN)

    def config(self, mode: str, *, logging: bool, logdir: str, run_name: str) -> Config:
        """The harness Config of a run: the harness's default logging, or none (`-nolog`)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("extra", "source")}
        off = {} if logging else dict.fromkeys(LOGGING_FREQUENCIES, 0)
        run = {"mode": mode, "logdir": logdir, "run_name": run_name, "verbose": 0}
        return Config(**run, **fields, **off, **self.extra)

    def splits(self) -> "Splits":
        """The harness's data for these settings, as the harness loads it."""
        from harness import sources

        return sources.load(self.config("fit", logging=False, logdir="logs", run_name="data"))

    def baseline_sets(self) -> tuple | None:
        """The bare baselines' batches of a user's data (None: of the harness's arrays)."""
        if self.source == "reuters":
            return None
        image_size = self.extra.get("image_size")
        return bench_data.baseline_sets(
            self.source, self.dataset, self.batch_size, image_size, Config.seed
        )

    def baseline_of(self, variant: str) -> str | None:
        """The bare loop a harness variant is compared with."""
        if not variant.startswith("harness-"):
            return None
        if self.source != "reuters" and variant.startswith("harness-tape"):
            return "bare-fit"
        return "bare-" + variant.removeprefix("harness-").removesuffix("-nolog")


def own_process(knob: str) -> bool:
    """Whether a knob's runs each need a fresh process (TensorFlow's thread pools)."""
    return knob == OWN_PROCESS_DEFAULTS or bool(set(KNOBS[knob]) & set(THREAD_FIELDS))


# --- The command line -------------------------------------------------------------------


def numbers(text: str) -> list:
    """An argparse type: a comma list of positive whole numbers."""
    items = text.split(",")
    if not all(item.strip().isdigit() and int(item) > 0 for item in items):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers, e.g. 1,2,4")
    return [int(item) for item in items]


def names(known: Sequence[str]) -> Callable[[str], list]:
    """An argparse type: a comma list of some of `known`."""

    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in known]
        if unknown or not items:
            shown = ",".join(unknown) or "(empty)"
            raise argparse.ArgumentTypeError(f"unknown {shown}; use some of {','.join(known)}")
        return items

    return parse


def parse_args(argv: list) -> argparse.Namespace:
    """The command line, checked and completed (exits 2 on a bad value)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--data_dir", default=str(REPO.parent / "shared" / "data"), help="holds reuters.npz")
    add("--epochs", type=int, default=3, help="epochs per run, >= 2 (the first is not timed)")
    add("--repeats", type=int, default=3)
    add("--num_examples", type=int, default=None, help="the first N training examples")
    add("--batch_size", type=int, default=32)
    add("--max_len", type=int, default=300)
    add("--num_words", type=int, default=10000)
    add("--variants", type=names(VARIANTS), help=f"some of {','.join(VARIANTS)}")
    add("--quick", action="store_true", help="smoke run: 256 synthetic examples, 1 repeat")
    add("--memory", choices=("subprocess", "off"), help="default: subprocess (off with --quick)")
    add("--knobs", type=names(KNOB_NAMES), nargs="?", const=",".join(KNOB_NAMES))
    add("--batch_sizes", type=numbers, default=[], help="scaling over batch sizes")
    add("--data_scale", type=numbers, default=[], help="scaling over K x Reuters's size")
    add("--retry_wait", type=float, help="seconds before retrying a failed run once")
    add(
        "--source",
        choices=SOURCES,
        default="reuters",
        help="; ".join(f"{k}: {v}" for k, v in SOURCES.items()),
    )
    add("--out", help="output folder (default logs/bench-<time>/)")
    args = parser.parse_args(argv)
    try:
        check(args)
    except UsageError as error:
        parser.exit(2, f"bench.py: error: {error}\n")
    return args


def check(args: argparse.Namespace) -> None:
    """Checks the arguments and completes them (`args.settings`); raises UsageError."""
    if args.quick:
        args.num_examples, args.max_len, args.repeats = 256, 50, 1
    args.memory = args.memory or (
        "subprocess" if args.source == "reuters" and not args.quick else "off"
    )
    args.retry_wait = (0.0 if args.quick else 60.0) if args.retry_wait is None else args.retry_wait
    for name, least in AT_LEAST.items():
        if getattr(args, name) < least:
            value = getattr(args, name)
            raise UsageError(f"--{name}={value} is not allowed: it must be at least {least}")
    scaling = args.batch_sizes or args.data_scale
    if args.knobs and scaling:
        raise UsageError("--knobs cannot be combined with --batch_sizes or --data_scale")
    if args.source != "reuters" and (args.knobs or scaling or args.quick):
        raise UsageError(f"--source={args.source} makes the main table only; drop the others")
    if args.knobs:  # and the defaults each knob is paired with
        paired = {OWN_PROCESS_DEFAULTS if own_process(k) else "defaults" for k in args.knobs}
        args.knobs = [k for k in KNOBS if k in args.knobs or k in paired]
    default_variants = USER_VARIANTS if args.source != "reuters" else VARIANTS
    args.variants = args.variants or list(SCALE_VARIANTS if scaling else default_variants)
    if args.data_scale and "ceiling" in args.variants:
        args.variants.remove("ceiling")  # one batch in memory: the data size means nothing
    names = ("num_examples", "batch_size", "epochs", "max_len", "num_words")
    args.settings = Settings(
        dataset="synthetic" if args.quick else "reuters",
        data_dir=None if args.quick else args.data_dir,
        **{name: getattr(args, name) for name in names},
    )
    if args.source != "reuters":
        users = {"datasets": "scripts.bench_data:reuters_datasets", "images": "<written at start>"}
        extra = {"image_size": IMAGE_SIZE} if args.source == "images" else {}
        args.settings = dataclasses.replace(
            args.settings,
            dataset=users[args.source],
            data_dir=None,
            extra=extra,
            source=args.source,
        )
    # The harness's own checks of the numbers (the data folder's message follows).
    unchecked_folder = dataclasses.replace(
        args.settings, data_dir=None, dataset="synthetic", extra={}
    )
    unchecked_folder.config("fit", logging=True, logdir="logs", run_name="check").validate()
    reuters = os.path.join(args.data_dir, "reuters.npz")
    if not args.quick and not args.data_scale and not os.path.isfile(reuters):
        raise UsageError(f"--data_dir={args.data_dir!r} holds no reuters.npz (or use --quick)")


# --- Running ----------------------------------------------------------------------------


@dataclasses.dataclass
class Runner:
    """Runs variants, each in this process or in a fresh one, with the settings changed
    per run; a failed run is retried once after `retry_wait` s, then recorded in `errors`
    (the others go on)."""

    settings: Settings
    out: str
    retry_wait: float = 0.0
    splits: "Splits | None" = None  # the baselines' data, for the runs in this process
    errors: list = dataclasses.field(default_factory=list)

    def __call__(
        self, variant: str, name: str, *, fresh: bool = False, callbacks: tuple = (), **changes
    ) -> dict | None:
        """`variant`'s record (None if it failed)."""
        settings = dataclasses.replace(self.settings, **changes)
        for attempt in (1, 2):
            try:
                if fresh:
                    return self.fresh(variant, settings, name)
                return self.here(variant, settings, name, callbacks)
            except Exception as error:  # a failed run is reported; the others go on
                message = f"{name}: {type(error).__name__}: {error}"
                if attempt == 2 or not self.retry_wait:
                    self.errors.append({"error": message, "traceback": traceback.format_exc()})
                    print(f"bench: FAILED {message}", flush=True)
                    return None
                print(f"bench: {message}\nbench: retrying in {self.retry_wait:.0f} s", flush=True)
                time.sleep(self.retry_wait)

    def here(self, variant: str, settings: Settings, name: str, callbacks: tuple = ()) -> dict:
        """`variant` trained once in this process: its record."""
        import bench_variants as bv  # imports TensorFlow and Keras

        logdir = os.path.join(self.out, "runs")
        while os.path.exists(os.path.join(logdir, name)):  # a retried run
            name += "-retry"
        if variant in BASELINES:
            batch_size, epochs, num_words = settings.batch_size, settings.epochs, settings.num_words
            sets = settings.baseline_sets()
            keras_logs = os.path.join(logdir, name)
            return bv.bare(variant, self.splits, batch_size, epochs, num_words, sets, keras_logs)
        mode, logging = variant.split("-")[1], not variant.endswith("-nolog")
        config = settings.config(mode, logging=logging, logdir=logdir, run_name=name)
        return bv.run_harness(config, settings.train_size, self.log, callbacks)

    def fresh(self, variant: str, settings: Settings, name: str) -> dict:
        """`here` in a fresh Python process: its record, with peak RSS (kept in processes/)."""
        folder = os.path.join(self.out, "processes")
        os.makedirs(folder, exist_ok=True)
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as process:
            record = process.submit(run_fresh, variant, settings, folder, name).result()
        Path(folder, f"{name}.json").write_text(json.dumps(record))
        return record

    def log(self, line: str) -> None:
        """The harness's own output, appended to harness.log."""
        with open(os.path.join(self.out, "harness.log"), "a") as log:
            print(line, file=log)


def run_fresh(variant: str, settings: Settings, out: str, name: str) -> dict:
    """In a fresh process: `variant` trained once, its record with peak RSS."""
    from harness.devices import configure_threads  # before TensorFlow runs anything

    configure_threads(*(int(settings.extra.get(field, 0)) for field in THREAD_FIELDS))
    import bench_variants as bv

    base = bv.memory_mb()["rss"]
    splits = settings.splits() if variant in BASELINES else None
    record = Runner(settings, out, splits=splits).here(variant, settings, name)
    peak = bv.memory_mb()["hwm"]
    return {**record, "peak_rss_mb": peak, "peak_growth_mb": peak - base}


def interleave(keys: list, repeats: int, run: Callable[..., dict | None]) -> dict:
    """{key: [run(key, repeat) per repeat]}: every key once per repeat, in a new seeded
    order each repeat (no key always runs right after the same one)."""
    import keras

    records = {key: [] for key in keys}
    for repeat in range(1, repeats + 1):
        for key in random.Random(repeat - 1).sample(keys, len(keys)):
            keras.backend.clear_session()
            gc.collect()
            records[key].append(record := run(key, repeat))
            if record:
                rate = fmt(record["examples_per_second"])
                print(f"bench: repeat {repeat}/{repeats} {key!s:<40} {rate} examples/s", flush=True)
    return records


# --- The measurements -------------------------------------------------------------------


def main_table(args: argparse.Namespace, runner: Runner) -> dict:
    """Every variant interleaved, the interleaved tape-vs-ceiling runs, and memory."""
    import bench_variants as bv

    runner.splits = splits = runner.settings.splits()
    runs = interleave(args.variants, args.repeats, lambda v, repeat: runner(v, f"{v}-r{repeat}"))
    runs = {v: [r for r in records if r] for v, records in runs.items()}
    interleaved = None
    if {"harness-tape", "ceiling"} <= set(args.variants):
        pairs = []
        for repeat in range(1, args.repeats + 1):
            probe = bv.InterleavedCeiling(splits.probe(args.batch_size), splits.num_classes)
            if runner("harness-tape", f"interleaved-r{repeat}", callbacks=(probe,)):
                pairs.append([p for p in probe.pairs if p[0] >= 1])
        interleaved = interleaved_summary(pairs)
    memory = {}
    if args.memory == "subprocess":
        memory = {v: runner(v, f"mem-{v}", fresh=True) for v in args.variants}
    return {
        "rows": table_rows(args.variants, runs, memory, runner.settings.baseline_of),
        "runs": runs,
        "memory": memory,
        "interleaved_tape": interleaved,
        "errors": runner.errors,
    }


def knob_table(args: argparse.Namespace, runner: Runner) -> dict:
    """Each applicable (mode, knob) as a harness run, interleaved; speed-up = median over
    repeats of examples/s with the knob / with that mode's defaults run the same way."""
    steps = math.ceil(runner.settings.train_size / runner.settings.batch_size)
    cells, fields_of = [], {}
    for mode in MODES:
        default = Config(mode=mode, dataset="synthetic")
        for knob in args.knobs:
            fields = {k: steps if v == "epoch" else v for k, v in KNOBS[knob].items()}
            config, note = dataclasses.replace(default, **fields), None
            try:
                config.validate()
                if "steps_per_execution" in fields and (
                    config.execution_steps == default.execution_steps
                ):
                    note = "the default"
            except UsageError as error:
                note = f"rejected: {error}"
            cells.append({"mode": mode, "knob": knob, "fields": fields, "note": note})
            if note is None:
                fields_of[(mode, knob)] = fields

    def run(key: tuple, repeat: int) -> dict | None:
        mode, knob = key
        name = re.sub(r"[^\w.]+", "-", f"{mode}-{knob.replace('=', '')}-r{repeat}")
        extra = {**runner.settings.extra, **fields_of[key]}
        return runner(f"harness-{mode}", name, fresh=own_process(knob), extra=extra)

    runs = interleave(sorted(fields_of), args.repeats, run)
    for cell in cells:
        records = runs.get((cell["mode"], cell["knob"]))
        if records is None:
            continue
        cell.update(summary(records))
        defaults = OWN_PROCESS_DEFAULTS if own_process(cell["knob"]) else "defaults"
        if cell["knob"] != defaults:
            rates = [r and r["examples_per_second"] for r in records]
            base = [r and r["examples_per_second"] for r in runs[(cell["mode"], defaults)]]
            speedup = spread(a / b for a, b in zip(rates, base) if a and b) or {}
            cell.update(speedup=speedup.get("median"))
            cell.update(speedup_min=speedup.get("min"), speedup_max=speedup.get("max"))
    return {"rows": cells, "errors": runner.errors}


def scaling(args: argparse.Namespace, runner: Runner) -> dict:
    """Each (point, variant) in fresh subprocesses, interleaved: examples/s and peak RSS."""
    from harness.data import SYNTHETIC_VALIDATION_FRACTION

    changes = {("batch_size", n): {"batch_size": n} for n in args.batch_sizes}
    for k in args.data_scale:
        changes["data_scale", k] = {"dataset": "synthetic", "num_examples": k * REUTERS_TRAIN}

    def run(key: tuple, repeat: int) -> dict | None:
        kind, point, variant = key
        name = f"{kind}{point}-{variant}-r{repeat}"
        return runner(variant, name, fresh=True, **changes[kind, point])

    keys = [(*point, variant) for point in changes for variant in args.variants]
    tables = {}
    for (kind, point, variant), records in interleave(keys, args.repeats, run).items():
        row = {kind: point, "variant": variant, **summary(records)}
        n = changes[kind, point].get("num_examples")
        if n:  # the data's MB: int32 tokens and labels, train and validation
            n += max(1, int(n * SYNTHETIC_VALIDATION_FRACTION))
            row["data_mb"] = n * (args.max_len + 1) * 4 / 2**20
        tables.setdefault(kind, []).append(row)
    return {"tables": tables, "errors": runner.errors}


# --- Figures ----------------------------------------------------------------------------


def _percent(share: float | None) -> float | None:
    return None if share is None else 100 * share


def median(values) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> dict | None:
    """Median, min, max and the values themselves (None left out; None if none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": median(values), "min": min(values), "max": max(values), "runs": values}


def summary(records: list) -> dict:
    """Some runs of one variant: median examples/s and its spread, median peak RSS (runs
    in fresh processes), most retraces after epoch 1."""
    records = [r for r in records if r]
    rates = spread(r["examples_per_second"] for r in records) or {}
    return {
        "examples_per_second": rates.get("median"),
        "min": rates.get("min"),
        "max": rates.get("max"),
        "peak_rss_mb": median(r.get("peak_rss_mb") for r in records),
        "retraces_after_first_epoch": max(
            (r["retraces_after_first_epoch"] for r in records), default=None
        ),
    }


def fast_epochs(records: list) -> float | None:
    """The 90th percentile of single timed epochs' examples/s, pooled over repeats: the
    machine's noise only ever slows a variant down, so its fast epochs tell its cost."""
    rates = sorted(rate for r in records for rate in r["epoch_examples_per_second"])
    return rates[round(FAST_PERCENTILE / 100 * (len(rates) - 1))] if rates else None


def table_rows(variants: list, runs: dict, memory: dict, baseline_of: Callable) -> dict:
    """One row per variant: examples/s, its spread and fast epochs; the median of the
    per-repeat ratios (and their spread) against its baseline, the ceiling and its
    `-nolog` twin (the logging cost); retraces; memory (the fresh subprocess's if any)."""
    rows = {}
    for v in variants:
        records, own = runs[v], memory.get(v) or {}
        share = median(r["hook_share"] for r in records)
        growth = median(r["rss_growth_ep2_to_last_mb"] for r in records)
        rows[v] = {
            "examples_per_second": spread(r["examples_per_second"] for r in records),
            "fast_epochs_p90": fast_epochs(records),
            "hook_share_pct": None if share is None else 100 * share,
            "retraces_after_first_epoch": summary(records)["retraces_after_first_epoch"],
            "peak_rss_mb": own.get("peak_rss_mb"),
            "peak_growth_mb": own.get("peak_growth_mb"),
            "rss_growth_ep2_to_last_mb": own.get("rss_growth_ep2_to_last_mb", growth),
            "pause_share_pct": _percent(median(r.get("pause_share") for r in records)),
            "baseline": baseline_of(v),
        }
    for v, row in rows.items():
        nolog = f"{v}-nolog" if row["baseline"] and not v.endswith("-nolog") else None
        compared = {"vs_baseline": row["baseline"], "vs_ceiling": "ceiling", "vs_nolog": nolog}
        for name, other in compared.items():
            ratios = spread(
                a["examples_per_second"] / b["examples_per_second"]
                for a, b in zip(runs[v], runs.get(other, []))
            )
            row[name], row[f"{name}_spread"] = (ratios or {}).get("median"), ratios
        cost, hooks = row["vs_nolog"], row["hook_share_pct"]
        hooks_off = rows.get(nolog, {}).get("hook_share_pct")
        row["logging_cost_pct"] = None if cost is None else 100 * (1 - cost)
        row["logging_cost_hooks_pct"] = None if None in (hooks, hooks_off) else hooks - hooks_off
        peak, theirs = row["peak_rss_mb"], rows.get(row["baseline"], {}).get("peak_rss_mb")
        row["peak_rss_vs_baseline"] = peak / theirs if peak and theirs else None
    return rows


def ceiling_ratio(pairs: list) -> float:
    """Total ceiling time / total harness time over (epoch, steps, harness s, ceiling s)
    pairs: their throughputs' ratio over the same steps."""
    return sum(p[3] for p in pairs) / sum(p[2] for p in pairs)


def interleaved_summary(runs: list) -> dict | None:
    """harness-tape vs the ceiling from each run's pairs, in the order made."""
    pairs = [pair for run in runs for pair in run]
    if not pairs:
        return None
    longest = max(p[1] for p in pairs)
    per_run = [ceiling_ratio(run) for run in runs if run]
    firsts = [p for run in runs for i, p in enumerate(run) if not i or run[i - 1][0] != p[0]]
    return {
        "executions": len(pairs),
        "time_weighted": ceiling_ratio(pairs),
        "median": median(c / h for _, _, h, c in pairs),
        "full_executions": ceiling_ratio([p for p in pairs if p[1] == longest]),
        "first_executions": ceiling_ratio(firsts),  # right after the epoch-end work
        "runs": per_run,
        "min_run": min(per_run),
        "max_run": max(per_run),
        "pairs": pairs,
    }


def targets(rows: dict, interleaved: dict | None, checked: tuple = TARGETS) -> list:
    """Each target checked; ratios on the median of the per-repeat ratios (the two ran
    side by side, which a drifting machine affects less), harness-tape vs the ceiling
    on the interleaved measurement when made."""
    checks = []
    for variant, figure, low, high, what in checked:
        for v in [variant] if variant else list(rows):
            value = rows.get(v, {}).get(figure)
            shown = fmt(value, 3)
            if figure == "vs_ceiling" and interleaved:
                value = interleaved["time_weighted"]
                shown = f"{fmt(value, 3)} interleaved (whole runs: {shown})"
            if value is not None:
                holds = (low is None or value >= low) and (high is None or value <= high)
                check = {"target": f"{v}: {what}", "value": value, "pass": holds, "shown": shown}
                checks.append(check)
    return checks


# --- The report -------------------------------------------------------------------------


def fmt(value, digits: int = 0, unit: str = "") -> str:
    """A number for a table ("–" for None)."""
    return "–" if value is None else f"{value:,.{digits}f}{unit}"


def fmt_spread(values: dict | None, digits: int = 0) -> str:
    """A spread's min–max."""
    values = values or {}
    return f"{fmt(values.get('min'), digits)}–{fmt(values.get('max'), digits)}"


def markdown_table(headers: list, rows: list) -> list:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    return [
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def pivot(cells: dict, corner: str, columns: list) -> list:
    """A Markdown table of {(row key, column): text}, the rows in the order first seen."""
    keys = list(dict.fromkeys(key for key, _ in cells))
    rows = [[key, *(cells.get((key, column), "–") for column in columns)] for key in keys]
    return markdown_table([corner, *columns], rows)


MAIN_COLUMNS = {  # header: the text of a variant's row
    "variant": lambda v, r: v,
    "examples/s (median)": lambda v, r: fmt(r["examples_per_second"]["median"]),
    "spread (min–max)": lambda v, r: fmt_spread(r["examples_per_second"]),
    f"fast epochs (p{FAST_PERCENTILE})": lambda v, r: fmt(r["fast_epochs_p90"]),
    "vs baseline, paired (spread)": lambda v, r: (
        f"{fmt(r['vs_baseline'], 3)} ({fmt_spread(r['vs_baseline_spread'], 3)}) × {r['baseline']}"
        if r["baseline"]
        else "–"
    ),
    "vs ceiling, paired": lambda v, r: fmt(r["vs_ceiling"], 3),
    "logging cost, paired": lambda v, r: fmt(r["logging_cost_pct"], 1, "%"),
    "in the batch hooks": lambda v, r: fmt(r["hook_share_pct"], 2, "%"),
    "epoch-end pause, share of epoch": lambda v, r: fmt(r["pause_share_pct"], 1, "%"),
    "retraces after ep1": lambda v, r: fmt(r["retraces_after_first_epoch"]),
    "peak RSS MB (growth)": lambda v, r: f"{fmt(r['peak_rss_mb'])} ({fmt(r['peak_growth_mb'])})",
    "peak RSS vs baseline": lambda v, r: fmt(r["peak_rss_vs_baseline"], 3),
    "RSS ep2→last MB": lambda v, r: fmt(r["rss_growth_ep2_to_last_mb"], 1),
}


def markdown_main(main: dict, checks: list) -> list:
    """The main table, the interleaved measurement and the targets."""
    rows = [[text(v, r) for text in MAIN_COLUMNS.values()] for v, r in main["rows"].items()]
    lines = markdown_table(list(MAIN_COLUMNS), rows)
    tape = main["interleaved_tape"]
    if tape:
        lines += [
            "",
            "**harness-tape vs the ceiling, interleaved** (the ceiling's step run on one "
            f"in-memory batch after each harness execution, same model): {tape['executions']} "
            "executions after epoch 1, ceiling time / harness time "
            f"{fmt(tape['time_weighted'], 3)} (per run {fmt(tape['min_run'], 3)}–"
            f"{fmt(tape['max_run'], 3)}; median per execution {fmt(tape['median'], 3)}; whole "
            f"executions {fmt(tape['full_executions'], 3)}; each epoch's first execution "
            f"{fmt(tape['first_executions'], 3)}).",
        ]
    checks_rows = [[c["target"], c["shown"], "pass" if c["pass"] else "FAIL"] for c in checks]
    return [*lines, "", *markdown_table(["target", "measured", "result"], checks_rows)]


def markdown_knobs(rows: list) -> list:
    """knob x mode: examples/s (the median paired speed-up vs the mode's defaults; spread)."""
    cells = {}
    for r in rows:
        text = fmt(r.get("examples_per_second"))
        if r["note"]:
            text = r["note"].split(":")[0]
        elif r.get("speedup") is not None:
            text += f" ({fmt(r['speedup'], 2)}×; {fmt(r['speedup_min'], 2)}–"
            text += f"{fmt(r['speedup_max'], 2)})"
        cells[r["knob"], r["mode"]] = text
    notes = sorted({r["note"] for r in rows if (r["note"] or "").startswith("rejected")})
    return [*pivot(cells, "knob", list(MODES)), "", *(f"- {note}" for note in notes)]


def markdown_scaling(kind: str, rows: list) -> list:
    """point x variant: examples/s / peak RSS MB (and the data's MB over data sizes)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cells = {}
    for r in rows:
        cells[r[kind], "data MB"] = fmt(r.get("data_mb"))
        cells[r[kind], r["variant"]] = f"{fmt(r['examples_per_second'])} / {fmt(r['peak_rss_mb'])}"
    return pivot(cells, kind, (["data MB"] if kind == "data_scale" else []) + variants)


NOTES = {
    "main": "Examples/s: the training part of the epochs after the first; fast epochs: the "
    "90th percentile of single epochs; paired: the median of the per-repeat ratios (their "
    "spread); in the batch hooks: the share of training time in "
    "`CallbackList.on_train_batch_begin/end`; peak RSS: VmHWM of a fresh subprocess per "
    "variant, growth = peak minus the RSS after importing TensorFlow.",
    "knobs": "The harness with default logging: examples/s (the median per-repeat speed-up "
    "against the mode's defaults; their spread). The thread knobs ran in fresh subprocesses, "
    "paired with 'defaults, own process'.",
    "scaling": "The median of the repeats, each in a fresh subprocess: examples/s / peak RSS "
    "MB. data MB: the padded train + validation arrays.",
}


def environment() -> dict:
    """Versions, CPUs, the commit and the date."""
    import keras
    import tensorflow as tf

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "harness", "callbacks")),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write_report(out: str, result: dict, errors: list, command: str) -> None:
    """Writes bench.json and bench.md to `out` and prints the Markdown."""
    env = environment()
    dirty = " + uncommitted harness/callbacks changes" if env["git_dirty"] else ""
    md = [
        f"# Benchmark ({env['date']})",
        "",
        f"`{command}`",
        "",
        f"TF {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}, "
        f"{env['cpus']} CPUs; repo {env['git_commit']}{dirty}.",
        "",
        f"Settings: {result['settings']}",
        "",
    ]
    if "main" in result:
        md += ["## Throughput, traces and memory", ""]
        md += [*markdown_main(result["main"], result["targets"]), "", NOTES["main"], ""]
    for kind, rows in result.get("scaling", {}).get("tables", {}).items():
        md += [f"## Scaling over {kind}", "", *markdown_scaling(kind, rows), ""]
        md += [NOTES["scaling"], ""]
    if "knobs" in result:
        md += ["## Knobs", "", NOTES["knobs"], "", *markdown_knobs(result["knobs"]["rows"]), ""]
    md += ["## Failures", "", *(f"- {e['error']}" for e in errors), ""] if errors else []
    result.update(command=command, environment=env)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md[6:]))
    print(f"bench: wrote {out}/bench.json and {out}/bench.md")


def main(argv: list | None = None) -> int:
    """Runs the benchmark the command line asks for; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = args.out or str(REPO / "logs" / f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    if args.source == "images":
        folder = bench_data.digits_folder(os.path.join(out, "digits"))
        args.settings = dataclasses.replace(args.settings, dataset=folder)
    runner = Runner(args.settings, out, args.retry_wait)
    result = {"settings": dataclasses.asdict(args.settings)}
    try:
        if args.knobs:
            result["knobs"] = knob_table(args, runner)
        elif args.batch_sizes or args.data_scale:
            result["scaling"] = scaling(args, runner)
        else:
            main = result["main"] = main_table(args, runner)
            checked = TARGETS + (USER_TARGETS if args.source != "reuters" else ())
            result["targets"] = targets(main["rows"], main["interleaved_tape"], checked)
    except UsageError as error:  # the data: missing, damaged, or too few examples
        print(f"bench.py: error: {error}", file=sys.stderr)
        return 2
    write_report(out, result, runner.errors, "python scripts/bench.py " + " ".join(argv))
    return 1 if runner.errors else 0


if __name__ == "__main__":
    sys.exit(main())
