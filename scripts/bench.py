"""Benchmark the harness against bare Keras baselines and the compute ceiling.

Usage, from the repository root:

    python scripts/bench.py                                 # 3 epochs x 3 repeats, real Reuters
    python scripts/bench.py --quick                         # tiny synthetic smoke run
    python scripts/bench.py --variants bare-fit,harness-fit --repeats 5
    python scripts/bench.py --batch_sizes 32,64,128,256,512 # batch-size scaling table
    python scripts/bench.py --data_scale 1,2,4,8            # data-size scaling table
    python scripts/bench.py --knobs                         # what each speed knob does

Every variant trains in this process, the variants interleaved in a new seeded
order each repeat; examples/s counts the epochs after the first (which traces).
harness-tape also runs with the ceiling interleaved after each of its executions
(`bench_variants.InterleavedCeiling`). Memory (--memory=subprocess, the default):
each variant runs once more in a fresh subprocess that reports its peak RSS.
Scaling points each run in a fresh subprocess. --knobs runs the harness in each
mode with each speed knob against that mode's defaults, paired per repeat; the
thread knobs, which TensorFlow fixes when it starts, run in fresh subprocesses.

Writes bench.json and bench.md to --out (default logs/bench-<time>/).
Exit status: 0 on success, 2 on bad arguments or data, 1 if a variant failed.
"""

import argparse
import dataclasses
import datetime
import json
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_report as report  # noqa: E402  (no TensorFlow at import)

REUTERS_TRAIN = 8982  # keras.datasets.reuters's training split (test_split=0.2)
BASELINES = (
    "bare-fit",
    "bare-fit-stream",
    "bare-tape",
    "bare-tape-ingraph",
    "bare-train_on_batch",
    "ceiling",
)
VARIANTS = BASELINES + tuple(f"harness-{m}{s}" for m in report.MODES for s in ("", "-nolog"))
SCALE_VARIANTS = ("bare-fit", "harness-fit", "harness-train_on_batch", "harness-tape")
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


@dataclasses.dataclass
class Settings:
    """What every run of one benchmark shares (a subprocess gets them as JSON)."""

    dataset: str = "reuters"
    data_dir: str | None = None
    num_examples: int | None = None
    batch_size: int = 32
    epochs: int = 3
    max_len: int = 300
    num_words: int = 10000
    extra: dict = dataclasses.field(default_factory=dict)  # more harness Config fields
    max_load: float | None = None

    @property
    def train_size(self) -> int:
        """Training examples per epoch."""
        return self.num_examples or REUTERS_TRAIN

    def splits(self):
        """The harness's data for these settings."""
        import bench_variants as bv

        return bv.load(
            self.dataset,
            self.data_dir,
            num_examples=self.num_examples,
            num_words=self.num_words,
            max_len=self.max_len,
        )

    def config(self, mode: str, *, logging: bool, logdir: str, run_name: str):
        """The harness Config of a run (default logging, or none for `-nolog`)."""
        from harness.config import Config

        return Config(
            mode=mode,
            dataset=self.dataset,
            data_dir=self.data_dir,
            num_examples=self.num_examples,
            batch_size=self.batch_size,
            epochs=self.epochs,
            max_len=self.max_len,
            num_words=self.num_words,
            logdir=logdir,
            run_name=run_name,
            verbose=0,
            summary_every_steps=100 if logging else 0,
            histogram_freq=1 if logging else 0,
            **self.extra,
        )


class BadInput(Exception):
    """A bad argument: exit 2 with its message."""


def parse_args(argv: list) -> argparse.Namespace:
    """The command line, checked (exits 2 on a bad value)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--data_dir",
        default=str(REPO.parent / "shared" / "data"),
        help="folder holding reuters.npz (default ../shared/data)",
    )
    add("--epochs", type=int, default=3, help="epochs per run, >= 2 (the first is not timed)")
    add("--repeats", type=int, default=3)
    add("--num_examples", type=int, default=None, help="the first N training examples")
    add("--batch_size", type=int, default=32)
    add("--max_len", type=int, default=300)
    add("--num_words", type=int, default=10000)
    add("--variants", default=None, help=f"comma list of: {','.join(VARIANTS)}")
    add(
        "--quick",
        action="store_true",
        help="smoke run: 256 synthetic examples, max_len 50, 1 repeat, in-process memory",
    )
    add("--memory", choices=("subprocess", "inprocess", "off"), default=None)
    add("--batch_sizes", default=None, help="scaling table over batch sizes, e.g. 32,64,128")
    add("--data_scale", default=None, help="scaling over K x Reuters's size (synthetic)")
    add(
        "--knobs",
        nargs="?",
        const="all",
        default=None,
        metavar="KNOB,...",
        help="knob table, of: " + ",".join(k for k in KNOBS if not k.startswith("defaults")),
    )
    add(
        "--harness_option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra harness Config field (repeatable), e.g. steps_per_execution=16",
    )
    add(
        "--retry_wait",
        type=float,
        default=None,
        help="seconds before retrying a failed run once (default 60; 0 with --quick)",
    )
    add(
        "--max_load",
        type=float,
        default=None,
        help="before each run, wait (up to 10 min) for the 1-minute load to fall below this",
    )
    add("--out", default=None, help="output folder (default logs/bench-<time>/)")
    add("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args._child:
        try:
            _check(args)
        except BadInput as error:
            parser.exit(2, f"bench.py: error: {error}\n")
    return args


def _check(args: argparse.Namespace) -> None:
    if args.quick:
        args.num_examples, args.max_len, args.repeats = 256, 50, 1
    args.memory = args.memory or ("inprocess" if args.quick else "subprocess")
    args.retry_wait = (0.0 if args.quick else 60.0) if args.retry_wait is None else args.retry_wait
    for name, least in (
        ("epochs", 2),
        ("repeats", 1),
        ("batch_size", 1),
        ("max_len", 12),
        ("num_words", 3),
        ("num_examples", 1),
    ):
        value = getattr(args, name)
        if value is not None and value < least:
            raise BadInput(f"--{name}={value} is not allowed: it must be at least {least}")
    args.batch_sizes, args.data_scale = (
        _numbers(flag, getattr(args, flag)) for flag in ("batch_sizes", "data_scale")
    )
    scaling = args.batch_sizes or args.data_scale
    args.variants = _names(
        "--variants", args.variants, VARIANTS, SCALE_VARIANTS if scaling else VARIANTS
    )
    if args.knobs and scaling:
        raise BadInput("--knobs cannot be combined with --batch_sizes or --data_scale")
    args.knobs = _knobs(args.knobs) if args.knobs else []
    if args.data_scale and "ceiling" in args.variants:
        args.variants.remove("ceiling")  # one batch in memory: the data size means nothing
    args.extra = {}
    for item in args.harness_option:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise BadInput(f"--harness_option={item!r} is not allowed: use NAME=VALUE")
        try:
            args.extra[name] = json.loads(text)
        except ValueError:
            args.extra[name] = text
    if (
        not args.quick
        and not args.data_scale
        and not os.path.isfile(os.path.join(args.data_dir, "reuters.npz"))
    ):
        raise BadInput(f"--data_dir={args.data_dir!r} holds no reuters.npz (or use --quick)")


def _numbers(flag: str, text: str | None) -> list:
    if text is None:
        return []
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BadInput(
            f"--{flag}={text!r} is not allowed: give positive whole numbers, e.g. 1,2,4,8"
        )
    return values


def _names(flag: str, text: str | None, known, default) -> list:
    if text is None:
        return list(default)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise BadInput(
            f"{flag}: unknown {','.join(unknown) or '(empty)'}; use a comma list "
            f"of {','.join(known)}"
        )
    return names


def own_process(knob: str) -> bool:
    """Whether a knob's runs each need a fresh process (TensorFlow's thread pools)."""
    return knob == OWN_PROCESS_DEFAULTS or bool(set(KNOBS[knob]) & set(THREAD_FIELDS))


def _knobs(text: str) -> list:
    """The knobs asked for, and the defaults each is paired with."""
    names = [k for k in KNOBS if not k.startswith("defaults")]
    wanted = _names("--knobs", None if text == "all" else text, names, names)
    wanted += ["defaults", OWN_PROCESS_DEFAULTS]
    return [
        k
        for k in KNOBS
        if k in wanted
        and (
            not k.startswith("defaults")
            or any(own_process(w) == own_process(k) for w in wanted if not w.startswith("defaults"))
        )
    ]


# --- Running ----------------------------------------------------------------------------


def run_once(
    variant: str,
    settings: Settings,
    splits,
    logdir: str,
    run_name: str,
    log: Callable[[str], None],
    more_callbacks: tuple = (),
) -> dict:
    """Trains `variant` once; returns its summarized record."""
    import bench_variants as bv

    deadline = time.monotonic() + 600
    while (
        settings.max_load
        and os.getloadavg()[0] > settings.max_load
        and (time.monotonic() < deadline)
    ):
        time.sleep(10)
    while os.path.exists(os.path.join(logdir, run_name)):  # a retried run
        run_name += "-retry"
    load, started = os.getloadavg()[0], time.perf_counter()
    if variant in bv.BASELINES:
        record = {
            "epochs": bv.BASELINES[variant](
                splits, settings.batch_size, settings.epochs, settings.num_words
            )
        }
    else:
        config = settings.config(
            variant.split("-")[1],
            logging=not variant.endswith("-nolog"),
            logdir=logdir,
            run_name=run_name,
        )
        record = bv.run_harness(
            config, train_size=settings.train_size, print_fn=log, more_callbacks=more_callbacks
        )
    record.update(
        wall_seconds=time.perf_counter() - started, load_average=[load, os.getloadavg()[0]]
    )
    return report.summarize(record)


def apply_threads(extra: dict) -> None:
    """Sets TensorFlow's thread pools from the harness options, for the whole process."""
    from harness.devices import configure_threads

    configure_threads(*(int(extra.get(field, 0)) for field in THREAD_FIELDS))


def run_child(spec_json: str) -> int:
    """Subprocess entry: one run in a fresh process; writes its record with peak RSS."""
    spec = json.loads(spec_json)
    settings = Settings(**spec["settings"])
    apply_threads(settings.extra)
    import bench_variants as bv  # imports TensorFlow and Keras

    base = bv.memory_mb()["rss"]
    record = run_once(
        spec["variant"],
        settings,
        settings.splits() if spec["variant"] in bv.BASELINES else None,
        spec["logdir"],
        spec["run_name"],
        lambda line: None,
    )
    peak = bv.memory_mb()["hwm"]
    record.update(peak_rss_mb=peak, base_rss_mb=base, peak_growth_mb=peak - base)
    Path(spec["out"]).write_text(json.dumps(record, default=str))
    return 0


def run_in_subprocess(variant: str, settings: Settings, workdir: str, name: str) -> dict:
    """`run_once` in a fresh Python process (`--_child`); its record."""
    out = Path(workdir, f"{name}.json")
    spec = {
        "variant": variant,
        "settings": dataclasses.asdict(settings),
        "logdir": os.path.join(workdir, "runs"),
        "run_name": name,
        "out": str(out),
    }
    os.makedirs(spec["logdir"], exist_ok=True)
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, __file__, "--_child", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise RuntimeError(
            f"subprocess for {variant} failed (exit {done.returncode}):\n  " + "\n  ".join(tail)
        )
    return json.loads(out.read_text())


def safely(what: str, errors: list, wait: float, function: Callable, *args, **kwargs):
    """`function(*args)`; on failure retries once after `wait` s, then records the error
    and returns None so that the other runs go on."""
    for attempt in (1, 2):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # a failed run is reported; the others go on
            message = f"{what}: {type(error).__name__}: {error}"
            if attempt == 1 and wait > 0:
                print(f"bench: {message}\nbench: retrying in {wait:.0f} s", flush=True)
                time.sleep(wait)
                continue
            errors.append({"what": what, "error": message, "traceback": traceback.format_exc()})
            print(f"bench: FAILED {message}", flush=True)
    return None


def interleave(keys: list, repeats: int, run: Callable) -> dict:
    """{key: [record or None per repeat]}: every key once per repeat, in a new seeded
    order each repeat (no key always runs right after the same one)."""
    import gc

    import keras

    records = {key: [] for key in keys}
    for repeat in range(repeats):
        for key in random.Random(repeat).sample(keys, len(keys)):
            keras.backend.clear_session()
            gc.collect()
            record = run(key, repeat + 1)
            records[key].append(record)
            if record:
                print(
                    f"bench: repeat {repeat + 1}/{repeats} {key!s:<40} "
                    f"{report.fmt(record['examples_per_second'])} examples/s",
                    flush=True,
                )
    return records


# --- Tables -----------------------------------------------------------------------------


def main_table(args: argparse.Namespace, settings: Settings, out: str, log) -> dict:
    """Every variant interleaved, the interleaved tape-vs-ceiling runs, and memory."""
    import bench_variants as bv

    errors, logdir = [], os.path.join(out, "runs")
    splits = settings.splits()
    peaks = {v: [] for v in args.variants}

    def run(variant: str, repeat: int):
        before, reset = bv.memory_mb()["rss"], bv.reset_peak_memory()
        record = safely(
            f"{variant} repeat {repeat}",
            errors,
            args.retry_wait,
            run_once,
            variant,
            settings,
            splits,
            logdir,
            f"{variant}-r{repeat}",
            log,
        )
        if record and reset:
            peaks[variant].append(bv.memory_mb()["hwm"] - before)
        return record

    runs = interleave(args.variants, args.repeats, run)
    runs = {v: [r for r in records if r] for v, records in runs.items()}
    interleaved = None
    if {"harness-tape", "ceiling"} <= set(args.variants):
        pairs = []
        for repeat in range(1, args.repeats + 1):
            probe = bv.InterleavedCeiling(splits.probe(settings.batch_size), splits.num_classes)
            if safely(
                f"harness-tape interleaved {repeat}",
                errors,
                args.retry_wait,
                run_once,
                "harness-tape",
                settings,
                splits,
                logdir,
                f"interleaved-r{repeat}",
                log,
                more_callbacks=(probe,),
            ):
                pairs.append([p for p in probe.pairs if p[0] >= 1])
        interleaved = report.interleaved_summary(pairs)
    memory = {}
    for variant in args.variants:
        if args.memory == "subprocess":
            memory[variant] = safely(
                f"{variant} memory subprocess",
                errors,
                args.retry_wait,
                run_in_subprocess,
                variant,
                settings,
                os.path.join(out, "memory"),
                f"mem-{variant}",
            )
        elif args.memory == "inprocess":
            memory[variant] = {
                "peak_growth_mb": max(peaks[variant], default=None),
                "rss_growth_ep2_to_last_mb": report.median(
                    r["rss_growth_ep2_to_last_mb"] for r in runs[variant]
                ),
            }
    return {
        "rows": report.table_rows(args.variants, runs, memory),
        "runs": runs,
        "memory": memory,
        "interleaved_tape": interleaved,
        "errors": errors,
    }


def knob_table(args: argparse.Namespace, settings: Settings, out: str, log) -> dict:
    """Each applicable (mode, knob) as a harness run, interleaved; speed-up = median over
    repeats of examples/s with the knob / with that mode's defaults run the same way."""
    from harness.config import Config
    from harness.errors import UsageError

    steps = -(-settings.train_size // settings.batch_size)
    cells, fields_of, errors = [], {}, []
    for mode in report.MODES:
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

    def run(key: tuple, repeat: int):
        mode, knob = key
        label = re.sub(r"[^\w.]+", "-", knob.replace("=", ""))  # a valid run name
        name = f"{mode}-{label}-r{repeat}"
        knob_settings = dataclasses.replace(settings, extra={**settings.extra, **fields_of[key]})
        if own_process(knob):
            return safely(
                name,
                errors,
                args.retry_wait,
                run_in_subprocess,
                f"harness-{mode}",
                knob_settings,
                os.path.join(out, "processes"),
                name,
            )
        return safely(
            name,
            errors,
            args.retry_wait,
            run_once,
            f"harness-{mode}",
            knob_settings,
            None,
            os.path.join(out, "runs"),
            name,
            log,
        )

    runs = interleave(sorted(fields_of), args.repeats, run)
    for cell in cells:
        records = runs.get((cell["mode"], cell["knob"]))
        if records is None:
            continue
        defaults = runs[
            (cell["mode"], OWN_PROCESS_DEFAULTS if own_process(cell["knob"]) else "defaults")
        ]
        rates = [r and r["examples_per_second"] for r in records]
        speedups = [
            a / b
            for a, b in zip(rates, (d and d["examples_per_second"] for d in defaults))
            if a and b
        ]
        ratio = report.spread(speedups)
        cell.update(
            examples_per_second=report.median(rates),
            runs=rates,
            speedup=ratio["median"],
            speedup_min=ratio["min"],
            speedup_max=ratio["max"],
            retraces_after_first_epoch=max(
                (r["retraces_after_first_epoch"] or 0 for r in records if r), default=None
            ),
        )
    return {"rows": cells, "errors": errors}


def scaling(args: argparse.Namespace, settings: Settings, out: str) -> dict:
    """Every (point, variant, repeat) in a fresh subprocess: examples/s and peak RSS."""
    tables, errors = {}, []
    for kind, points in (("batch_size", args.batch_sizes), ("data_scale", args.data_scale)):
        rows = []
        for point in points:
            changes = (
                {"batch_size": point}
                if kind == "batch_size"
                else {"dataset": "synthetic", "num_examples": point * REUTERS_TRAIN}
            )
            for variant in args.variants:
                name = f"{kind}{point}-{variant}"
                records = [
                    r
                    for repeat in range(1, args.repeats + 1)
                    if (
                        r := safely(
                            f"{name}-r{repeat}",
                            errors,
                            args.retry_wait,
                            run_in_subprocess,
                            variant,
                            dataclasses.replace(settings, **changes),
                            os.path.join(out, "scaling"),
                            f"{name}-r{repeat}",
                        )
                    )
                ]
                rate = report.spread(r["examples_per_second"] for r in records)
                rows.append(
                    {
                        kind: point,
                        "variant": variant,
                        **rate,
                        **{
                            key: report.median(r[key] for r in records)
                            for key in (
                                "examples_per_second",
                                "peak_rss_mb",
                                "peak_growth_mb",
                                "rss_growth_ep2_to_last_mb",
                                "retraces_after_first_epoch",
                            )
                        },
                    }
                )
        if points:
            tables[kind] = rows
    return {"tables": tables, "errors": errors}


def main(argv: list | None = None) -> int:
    """Runs the benchmark the command line asks for; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args._child:
        return run_child(args._child)
    out = args.out or str(REPO / "logs" / f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    settings = Settings(
        dataset="synthetic" if args.quick else "reuters",
        data_dir=None if args.quick else args.data_dir,
        num_examples=args.num_examples,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_len=args.max_len,
        num_words=args.num_words,
        extra=args.extra,
        max_load=args.max_load,
    )
    from harness.errors import UsageError

    with open(os.path.join(out, "harness.log"), "a") as harness_log:

        def log(line: str) -> None:
            print(line, file=harness_log, flush=True)

        try:
            settings.config("fit", logging=True, logdir=out, run_name="check").validate()
            apply_threads(args.extra)
            result = {"settings": dataclasses.asdict(settings)}
            if args.batch_sizes or args.data_scale:
                result["scaling"] = scaling(args, settings, out)
            elif args.knobs:
                result["knobs"] = knob_table(args, settings, out, log)
            else:
                result["main"] = main_table(args, settings, out, log)
                result["targets"] = report.targets(
                    result["main"]["rows"], result["main"]["interleaved_tape"]
                )
        except (UsageError, TypeError) as error:  # TypeError: not a Config field
            print(f"bench.py: error: {error}", file=sys.stderr)
            return 2
    report.write_report(out, result, "python scripts/bench.py " + " ".join(argv))
    return (
        1 if any(result.get(part, {}).get("errors") for part in ("main", "scaling", "knobs")) else 0
    )


if __name__ == "__main__":
    sys.exit(main())
