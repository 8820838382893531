"""Benchmark the harness against bare Keras baselines and the compute ceiling.

Usage, from the repository root:

    python scripts/bench.py                                 # 3 epochs x 3 repeats, real Reuters
    python scripts/bench.py --quick                         # tiny synthetic smoke run
    python scripts/bench.py --variants bare-fit,harness-fit --repeats 5
    python scripts/bench.py --batch_sizes 32,64,128,256,512 # batch-size scaling table
    python scripts/bench.py --data_scale 1,2,4,8            # data-size scaling table
    python scripts/bench.py --knobs                         # what each speed knob does
    python scripts/bench.py --knobs intra_op_threads=1      # ... or only the ones named

Throughput: every variant trains in this one process, the variants interleaved
(in a new seeded random order each repeat) and repeated; examples/s is measured over whole epochs
after the first (which traces and compiles), training time only (epoch begin to
the start of validation, as the harness's `epoch_examples_per_second` counts it).
Memory (--memory=subprocess, the default): each variant runs once more in a fresh
subprocess that reports its peak RSS (VmHWM), see MEMORY_NOTE. The scaling
tables run every point in its own subprocess (examples/s and peak RSS together).
The knob table (--knobs) runs the harness in each mode with its defaults and with
each of --steps_per_execution, --jit_compile and --mixed_precision, interleaved
in this process like the main table, and gives each knob's speed-up paired per
repeat against the same mode's defaults; --intra_op_threads and --inter_op_threads,
which TensorFlow fixes when it starts, run in fresh subprocesses (interleaved the
same way) and are paired with the defaults run in a fresh subprocess too.
`--harness_option intra_op_threads=N` (or inter_op_threads) sets the thread pools
of the whole benchmark, baselines and ceiling included.

Writes bench.json and bench.md to --out (default logs/bench-<time>/).
Exit status: 0 on success, 2 on bad arguments or data, 1 if a variant failed.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_report import (REUTERS_TRAIN, MODES, OWN_PROCESS_DEFAULTS,  # noqa: E402
                          THREAD_FIELDS, ceiling_ratio, fmt, interleaved_summary, knob_rows, median,
                          own_process, table_rows, targets, write_report)

REUTERS_SHA256 = "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
BASELINES = ("bare-fit", "bare-fit-stream", "bare-tape", "bare-tape-ingraph",
             "bare-train_on_batch", "ceiling")
HARNESS = tuple(f"harness-{m}{s}" for m in MODES for s in ("", "-nolog"))
VARIANTS = BASELINES + HARNESS
SCALE_VARIANTS = ("bare-fit", "harness-fit", "harness-train_on_batch", "harness-tape")
# The speed knobs of the issue, as harness Config fields; "epoch" = the steps of one epoch
# (fit needs a divisor of them, and Reuters's 281 steps are prime).
KNOBS = (("defaults", {}),
         ("steps_per_execution=1", {"steps_per_execution": 1}),
         ("steps_per_execution=epoch", {"steps_per_execution": "epoch"}),
         ("jit_compile", {"jit_compile": True}),
         ("mixed_precision", {"mixed_precision": True}),
         # TensorFlow fixes its thread pools when it starts: these run in fresh processes,
         # paired with the defaults run the same way (bench_report.own_process).
         (OWN_PROCESS_DEFAULTS, {}),
         ("intra_op_threads=1", {"intra_op_threads": 1}),
         ("inter_op_threads=1", {"inter_op_threads": 1}))
DEFAULTS = dict(epochs=3, repeats=3, max_len=300, retry_wait=60.0)
QUICK = dict(num_examples=256, max_len=50, epochs=3, repeats=1, retry_wait=0.0)


# --- Arguments -------------------------------------------------------------------------


class BadInput(Exception):
    pass


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--data_dir", default=str(REPO.parent / "shared" / "data"),
        help="folder holding reuters.npz (default ../shared/data)")
    add("--epochs", type=int, default=None,
        help="epochs per run, >= 2: the first is excluded (default 3)")
    add("--repeats", type=int, default=None, help="repeats of every variant (default 3)")
    add("--num_examples", type=int, default=None,
        help="use the first N Reuters training examples (the harness with --num_examples=N)")
    add("--batch_size", type=int, default=32)
    add("--max_len", type=int, default=None, help="default 300")
    add("--num_words", type=int, default=10000)
    add("--variants", default=None, help=f"comma list of: {','.join(VARIANTS)}")
    add("--quick", action="store_true",
        help="smoke run: synthetic data, 256 examples, max_len 50, 1 repeat, in-process memory")
    add("--memory", choices=("subprocess", "inprocess", "off"), default=None,
        help="how peak memory is measured (default subprocess; inprocess with --quick)")
    add("--batch_sizes", default=None,
        help="scaling table over batch sizes, e.g. 32,64,128,256,512 (skips the main table)")
    add("--data_scale", default=None,
        help="scaling table over synthetic datasets of K x Reuters's size, e.g. 1,2,4,8")
    add("--knobs", nargs="?", const="all", default=None, metavar="KNOB,...",
        help="knob table: the harness in every mode with each knob vs its defaults (skips "
             "the main table); optionally a comma list of the knobs to measure, of: "
             + ",".join(name for name, _ in KNOBS if not name.startswith("defaults")))
    add("--harness_option", action="append", default=[], metavar="NAME=VALUE",
        help="extra harness Config field for the harness variants (repeatable), "
             "e.g. steps_per_execution=16")
    add("--retry_wait", type=float, default=None,
        help="seconds to wait before retrying a failed run once (default 60; 0 with --quick)")
    add("--max_load", type=float, default=None,
        help="before each run, wait (up to 10 min) until the 1-minute load average is below "
             "this; every run records the load it saw either way")
    add("--out", default=None, help="output folder (default logs/bench-<time>/)")
    add("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return args
    try:
        _check(args)
    except BadInput as error:
        parser.exit(2, f"bench.py: error: {error}\n")
    return args


def _check(args) -> None:
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.memory = args.memory or ("inprocess" if args.quick else "subprocess")
    for name, least in (("epochs", 2), ("repeats", 1), ("batch_size", 1), ("max_len", 12),
                        ("num_words", 3)):
        if getattr(args, name) < least:
            raise BadInput(f"--{name}={getattr(args, name)} is not allowed: it must be at "
                           f"least {least}" + (" (the first epoch, which traces, is not "
                                               "measured)" if name == "epochs" else ""))
    if args.num_examples is not None and not 1 <= args.num_examples <= REUTERS_TRAIN:
        raise BadInput(f"--num_examples={args.num_examples} is not allowed: use 1.."
                       f"{REUTERS_TRAIN} (Reuters has {REUTERS_TRAIN} training examples)")
    if args.variants is None:
        args.variants = list(SCALE_VARIANTS if (args.batch_sizes or args.data_scale)
                             else VARIANTS)
    else:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown or not args.variants:
            raise BadInput(f"--variants: unknown {','.join(unknown) or '(empty)'}; "
                           f"use a comma list of {','.join(VARIANTS)}")
    args.batch_sizes = _int_list("batch_sizes", args.batch_sizes)
    args.data_scale = _int_list("data_scale", args.data_scale)
    if args.knobs and (args.batch_sizes or args.data_scale):
        raise BadInput("--knobs cannot be combined with --batch_sizes or --data_scale: "
                       "run them one at a time")
    args.knobs = _knob_list(args.knobs)
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
    if not args.quick and not args.data_scale:
        args.reuters = _verified_reuters(args.data_dir)


def _int_list(flag: str, text):
    if text is None:
        return []
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(f"--{flag}={text!r} is not allowed: give comma-separated whole "
                       "numbers, e.g. 1,2,4,8") from None
    if not values or min(values) < 1:
        raise BadInput(f"--{flag}={text!r} is not allowed: give positive whole numbers")
    return values


def _knob_list(text) -> list:
    """The KNOBS entries --knobs asks for, with the defaults they are paired with."""
    if text is None:
        return []
    names = [name for name, _ in KNOBS if not name.startswith("defaults")]
    wanted = names if text == "all" else [part.strip() for part in text.split(",")
                                          if part.strip()]
    unknown = [name for name in wanted if name not in names]
    if unknown or not wanted:
        raise BadInput(f"--knobs: unknown {','.join(unknown) or '(empty)'}; use a comma list "
                       f"of {','.join(names)}")
    fields_of = dict(KNOBS)
    separate = {own_process(name, fields_of[name]) for name in wanted}
    wanted += [OWN_PROCESS_DEFAULTS] if True in separate else []
    wanted += ["defaults"] if False in separate else []
    return [(name, fields) for name, fields in KNOBS if name in wanted]


def _verified_reuters(data_dir: str) -> str:
    path = os.path.join(data_dir, "reuters.npz")
    if not os.path.isfile(path):
        raise BadInput(f"--data_dir={data_dir!r} holds no reuters.npz: point it at a "
                       "folder with the Keras reuters.npz (or use --quick)")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != REUTERS_SHA256:
        raise BadInput(f"{path} has sha256 {digest}, not Keras's {REUTERS_SHA256}: "
                       "replace it with the official file")
    return path


# --- Running variants -------------------------------------------------------------------


def _keras_home_with(reuters_path) -> str:
    """A temporary KERAS_HOME whose datasets/ holds a copy of reuters.npz; set
    before Keras is imported (it reads KERAS_HOME once, at import)."""
    home = tempfile.mkdtemp(prefix="bench-keras-home-")
    os.makedirs(os.path.join(home, "datasets"))
    if reuters_path:
        shutil.copyfile(reuters_path, os.path.join(home, "datasets", "reuters.npz"))
    os.environ["KERAS_HOME"] = home
    return home


def load_data(settings: dict):
    import bench_variants as bv
    if settings["dataset"] == "synthetic":
        return bv.synthetic(num_examples=settings["num_examples"],
                            num_words=settings["num_words"], max_len=settings["max_len"])
    return bv.load_reuters(num_words=settings["num_words"], max_len=settings["max_len"],
                           num_examples=settings["num_examples"])


def run_once(variant: str, settings: dict, data, logdir: str, run_name: str, log) -> dict:
    """Trains `variant` once; returns its record (epochs, traces, ...)."""
    import bench_variants as bv
    while os.path.exists(os.path.join(logdir, run_name)):  # a retried run
        run_name += "-retry"
    common = dict(batch_size=settings["batch_size"], epochs=settings["epochs"],
                  max_len=settings["max_len"], num_words=settings["num_words"])
    _wait_for_load(settings.get("max_load"))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if variant in bv.BASELINES:
        record = {"epochs": bv.BASELINES[variant](data, **common)}
    else:
        mode = variant[len("harness-"):].replace("-nolog", "")
        record = bv.run_harness(
            mode, logging=not variant.endswith("-nolog"), dataset=settings["dataset"],
            data_dir=settings["data_dir"], num_examples=settings["num_examples"],
            logdir=logdir, run_name=run_name, extra=settings["extra"], print_fn=log,
            **common)
    record["wall_seconds"] = time.perf_counter() - started
    record["load_average"] = [load_before, os.getloadavg()[0]]
    return _summarize(record)


def _wait_for_load(max_load) -> None:
    deadline = time.monotonic() + 600
    while max_load and os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(10)


def _summarize(record: dict) -> dict:
    epochs = record["epochs"]
    later = epochs[1:]
    examples = sum(e["examples"] for e in later)
    for key, seconds_key in (("examples_per_second", "train_seconds"),
                             ("examples_per_cpu_second", "train_cpu_seconds")):
        seconds = sum(e.get(seconds_key, 0) for e in later)
        record[key] = examples / seconds if later and seconds > 0 else None
    if later:
        train_seconds = sum(e.get("train_seconds", 0) for e in later)
        record["hook_share"] = (sum(e.get("hook_seconds", 0) for e in later) / train_seconds
                                if train_seconds > 0 else None)
        record["gc_seconds"] = sum(e.get("gc_seconds", 0) for e in later)
        record["full_collections"] = sum(e.get("full_collections", 0) for e in later)
    if epochs:
        first, last = epochs[0]["traces"], epochs[-1]["traces"]
        record["traces_first_epoch"] = first
        record["retraces_after_first_epoch"] = sum(last.get(k, 0) - first.get(k, 0)
                                                   for k in last) if first or last else None
    if len(epochs) >= 3:
        record["rss_growth_ep2_to_last_mb"] = epochs[-1]["rss_mb"] - epochs[1]["rss_mb"]
    events = {int(k): v for k, v in (record.get("event_examples_per_second") or {}).items()}
    pairs = [(e["examples"], events[i + 1]) for i, e in enumerate(epochs)
             if i >= 1 and events.get(i + 1)]
    if pairs:  # pooled like examples_per_second: the harness's seconds = examples / its rate
        record["event_examples_per_second_pooled"] = (sum(n for n, _ in pairs)
                                                      / sum(n / rate for n, rate in pairs))
    return record


def apply_threads(extra: dict) -> None:
    """Sets TensorFlow's thread pools from the harness options, for every variant of
    this process (the harness's runs then find them already set)."""
    from harness.devices import configure_threads
    configure_threads(*(int(extra.get(field, 0)) for field in THREAD_FIELDS))


def run_child(spec_json: str) -> int:
    """Subprocess entry: one variant, one run, in a fresh process; writes a JSON record."""
    spec = json.loads(spec_json)
    settings = spec["settings"]
    home = _keras_home_with(settings.get("reuters_path"))
    try:
        apply_threads(settings["extra"])
        import bench_variants as bv  # imports TensorFlow and Keras
        base = bv.memory_mb()["rss"]
        data = None if spec["variant"].startswith("harness-") else load_data(settings)
        record = run_once(spec["variant"], settings, data, spec["logdir"], spec["run_name"],
                          lambda line: None)
        memory = bv.memory_mb()
        record.update(peak_rss_mb=memory["hwm"], base_rss_mb=base,
                      peak_growth_mb=memory["hwm"] - base,
                      data_mb=(data.nbytes / 2**20) if data is not None else None)
        with open(spec["out"], "w") as f:
            json.dump(record, f)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


def run_in_subprocess(variant: str, settings: dict, workdir: str, name: str, log) -> dict:
    spec = {"variant": variant, "settings": settings, "logdir": os.path.join(workdir, "runs"),
            "run_name": name, "out": os.path.join(workdir, f"{name}.json")}
    os.makedirs(spec["logdir"], exist_ok=True)
    if os.path.exists(spec["out"]):
        os.remove(spec["out"])
    done = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=str(REPO))
    if done.returncode != 0 or not os.path.exists(spec["out"]):
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise RuntimeError(f"subprocess for {variant} failed (exit {done.returncode}):\n  "
                           + "\n  ".join(tail))
    with open(spec["out"]) as f:
        return json.load(f)


def _safely(what: str, errors: list, wait: float, function, *args):
    """Runs `function(*args)`; on failure waits `wait` seconds and retries once (the
    harness may be mid-edit), then records the error and lets the others go on."""
    for attempt in (1, 2):
        try:
            return function(*args)
        except Exception as error:  # a failed variant is reported; the others go on
            message = f"{what}: {type(error).__name__}: {error}"
            if attempt == 1 and wait > 0:
                print(f"bench: {message}\nbench: retrying in {wait:.0f} s", flush=True)
                time.sleep(wait)
                continue
            errors.append({"what": what, "error": message,
                           "traceback": traceback.format_exc()})
            print(f"bench: FAILED {message}", flush=True)
            return None


def sources_fingerprint() -> str:
    """A hash of harness/ and callbacks/ sources, to notice edits during a benchmark."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("harness/*.py"), *REPO.glob("callbacks/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


# --- The main table ---------------------------------------------------------------------


def main_table(args, settings: dict, out: str, log) -> dict:
    import gc

    import keras

    import bench_variants as bv
    data = load_data(settings) if any(v in bv.BASELINES for v in args.variants) else None
    runs = {v: [] for v in args.variants}
    inprocess = {v: [] for v in args.variants}
    errors: list = []
    logdir = os.path.join(out, "runs")
    for repeat in range(args.repeats):
        # A new seeded order every repeat: no variant always runs right after the same one.
        for variant in random.Random(repeat).sample(args.variants, len(args.variants)):
            keras.backend.clear_session()
            gc.collect()
            before = bv.memory_mb()["rss"]
            reset = bv.reset_peak_memory()
            record = _safely(f"{variant} repeat {repeat + 1}", errors, args.retry_wait,
                             run_once, variant, settings, data, logdir,
                             f"{variant}-r{repeat + 1}", log)
            if record is None:
                continue
            if reset:
                inprocess[variant].append(bv.memory_mb()["hwm"] - before)
            runs[variant].append(record)
            print(f"bench: repeat {repeat + 1}/{args.repeats} {variant:<28} "
                  f"{fmt(record['examples_per_second'], 0):>7} examples/s "
                  f"({record['wall_seconds']:.0f} s)", flush=True)
    interleaved = None
    if {"harness-tape", "ceiling"} <= set(args.variants):
        interleaved = _safely("harness-tape interleaved with the ceiling", errors,
                              args.retry_wait, interleaved_tape, args, settings, data, logdir, log)
    memory = {}
    if args.memory == "subprocess":
        workdir = os.path.join(out, "memory")
        for variant in args.variants:
            print(f"bench: memory of {variant} in a fresh subprocess", flush=True)
            memory[variant] = _safely(f"{variant} memory subprocess", errors, args.retry_wait,
                                      run_in_subprocess, variant, settings, workdir,
                                      f"mem-{variant}", log)
    elif args.memory == "inprocess":
        for variant, growths in inprocess.items():
            memory[variant] = {"peak_growth_mb": max(growths) if growths else None,
                               "rss_growth_ep2_to_last_mb": median(
                                   [r.get("rss_growth_ep2_to_last_mb") for r in runs[variant]])}
    return {"rows": table_rows(args.variants, runs, memory), "runs": runs, "memory": memory,
            "inprocess_peak_growth_mb": inprocess, "interleaved_tape": interleaved,
            "errors": errors}


def interleaved_tape(args, settings: dict, data, logdir: str, log) -> dict:
    """harness-tape (default logging) with the ceiling run after each of its
    executions on the same model (bench_variants.InterleavedCeiling), `--repeats`
    runs; pairs from epochs after the first."""
    import keras

    import bench_variants as bv
    runs = []
    for repeat in range(args.repeats):
        keras.backend.clear_session()
        probe = bv.InterleavedCeiling(data.x_train[:settings["batch_size"]],
                                      data.y_train[:settings["batch_size"]])
        bv.run_harness("tape", logging=True, dataset=settings["dataset"],
                       data_dir=settings["data_dir"], num_examples=settings["num_examples"],
                       batch_size=settings["batch_size"], epochs=settings["epochs"],
                       max_len=settings["max_len"], num_words=settings["num_words"],
                       logdir=logdir, run_name=f"harness-tape-interleaved-r{repeat + 1}",
                       extra=settings["extra"], print_fn=log, more_callbacks=(probe,))
        runs.append([p for p in probe.pairs if p[0] >= 1])
        print(f"bench: interleaved {repeat + 1}/{args.repeats} harness-tape vs ceiling "
              f"{fmt(ceiling_ratio(runs[-1]), 3)} ({len(runs[-1])} executions)", flush=True)
    return interleaved_summary(runs)


# --- Knobs ------------------------------------------------------------------------------


def knob_cells(knobs: list, steps_per_epoch: int) -> list:
    """(mode, knob, Config fields, note) for every mode and each of `knobs` (KNOBS
    entries): fields None and a note where the harness rejects the knob for that mode
    or it is that mode's default."""
    import dataclasses

    from harness.config import Config
    from harness.errors import UsageError
    cells = []
    for mode in MODES:
        default = Config(mode=mode, dataset="synthetic")
        for knob, fields in knobs:
            fields = {k: steps_per_epoch if v == "epoch" else v for k, v in fields.items()}
            config = dataclasses.replace(default, **fields)
            try:
                config.validate()
            except UsageError as error:
                cells.append((mode, knob, None, f"rejected: {error}"))
                continue
            if fields and set(fields) == {"steps_per_execution"} and (
                    config.execution_steps == default.execution_steps):
                cells.append((mode, knob, None, "the default"))
                continue
            cells.append((mode, knob, fields, None))
    return cells


def knob_table(args, settings: dict, out: str, log) -> dict:
    """Each applicable (mode, knob) as a harness run (default logging), all of them
    interleaved in a new seeded order every repeat; speed-up = the median over
    repeats of examples/s with the knob / with that mode's defaults (run in a
    fresh subprocess for the thread knobs, which run in one too)."""
    import gc

    import keras
    steps = math.ceil((settings["num_examples"] or REUTERS_TRAIN) / settings["batch_size"])
    cells = knob_cells(args.knobs, steps)
    fields_of = {(mode, knob): fields for mode, knob, fields, _ in cells if fields is not None}
    runs = {key: [] for key in fields_of}
    errors: list = []
    logdir = os.path.join(out, "runs")
    for repeat in range(args.repeats):
        for mode, knob in random.Random(repeat).sample(sorted(runs), len(runs)):
            keras.backend.clear_session()
            gc.collect()
            label = re.sub(r"[^\w.]+", "-", knob.replace("=", ""))  # a valid run name
            name = f"{mode}-{label}-r{repeat + 1}"
            extra = {**settings["extra"], **fields_of[(mode, knob)]}
            if own_process(knob, fields_of[(mode, knob)]):
                record = _safely(name, errors, args.retry_wait, run_in_subprocess,
                                 f"harness-{mode}", dict(settings, extra=extra),
                                 os.path.join(out, "processes"), name, log)
            else:
                record = _safely(name, errors, args.retry_wait, run_once, f"harness-{mode}",
                                 dict(settings, extra=extra), None, logdir, name, log)
            runs[(mode, knob)].append(record)  # None for a failed run keeps repeats paired
            if record:
                print(f"bench: repeat {repeat + 1}/{args.repeats} {mode:<15} {knob:<27} "
                      f"{fmt(record['examples_per_second'], 0):>7} examples/s "
                      f"({record['wall_seconds']:.0f} s)", flush=True)
    return {"rows": knob_rows(cells, runs), "errors": errors}


# --- Scaling ----------------------------------------------------------------------------


def scaling(args, settings: dict, out: str, log) -> dict:
    """Every (point, variant, repeat) in a fresh subprocess: examples/s and peak RSS."""
    tables, errors = {}, []
    workdir = os.path.join(out, "scaling")
    for kind, points in (("batch_size", args.batch_sizes), ("data_scale", args.data_scale)):
        if not points:
            continue
        records = {(p, v): [] for p in points for v in args.variants}
        for repeat in range(args.repeats):
            for point in points:
                s = dict(settings)
                if kind == "batch_size":
                    s["batch_size"] = point
                else:
                    s.update(dataset="synthetic", num_examples=point * REUTERS_TRAIN)
                for variant in args.variants:
                    name = f"{kind}{point}-{variant}-r{repeat + 1}"
                    record = _safely(name, errors, args.retry_wait, run_in_subprocess, variant, s,
                                     workdir,
                                     name, log)
                    if record:
                        records[(point, variant)].append(record)
                        print(f"bench: {name:<44} {fmt(record['examples_per_second'], 0):>7}"
                              f" examples/s, peak RSS {record['peak_rss_mb']:.0f} MB", flush=True)
        rows = []
        for (point, variant), recs in records.items():
            values = [r["examples_per_second"] for r in recs if r.get("examples_per_second")]
            rows.append({kind: point, "variant": variant, "examples_per_second": median(values),
                         "min": min(values, default=None), "max": max(values, default=None),
                         "peak_rss_mb": median([r["peak_rss_mb"] for r in recs]),
                         "peak_growth_mb": median([r["peak_growth_mb"] for r in recs]),
                         "last_epoch_rss_mb": median([r["epochs"][-1]["rss_mb"] for r in recs
                                                       if r["epochs"]]),
                         "rss_growth_ep2_to_last_mb": median(
                             [r.get("rss_growth_ep2_to_last_mb") for r in recs]),
                         "retraces_after_first_epoch": max(
                             (r.get("retraces_after_first_epoch") or 0 for r in recs),
                             default=None)})
            if kind == "data_scale":
                rows[-1]["data_mb"] = _data_mb(point * REUTERS_TRAIN, settings["max_len"])
        tables[kind] = rows
    return {"tables": tables, "errors": errors}


def _data_mb(num_examples: int, max_len: int) -> float:
    """int32 tokens + labels of the train and 20% validation split."""
    n = num_examples + max(1, int(num_examples * 0.2))
    return n * (max_len + 1) * 4 / 2**20


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args._child:
        return run_child(args._child)
    out = args.out or str(REPO / "logs" / f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    settings = {"dataset": "synthetic" if args.quick else "reuters",
                "data_dir": None if args.quick else args.data_dir,
                "reuters_path": getattr(args, "reuters", None),
                "num_examples": args.num_examples, "batch_size": args.batch_size,
                "epochs": args.epochs, "max_len": args.max_len, "num_words": args.num_words,
                "extra": args.extra, "max_load": args.max_load}
    home = _keras_home_with(settings["reuters_path"])
    harness_log = open(os.path.join(out, "harness.log"), "a")
    log = lambda line: print(line, file=harness_log, flush=True)  # noqa: E731
    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if args.extra:
            import dataclasses

            from harness.config import Config
            unknown = set(args.extra) - {f.name for f in dataclasses.fields(Config)}
            if unknown:
                print(f"bench.py: error: --harness_option {','.join(sorted(unknown))}: not a "
                      "field of harness.config.Config", file=sys.stderr)
                return 2
        apply_threads(args.extra)
        result = {"harness_sources": {"start": sources_fingerprint()}}
        if args.batch_sizes or args.data_scale:
            result["scaling"] = scaling(args, settings, out, log)
        elif args.knobs:
            result["knobs"] = knob_table(args, settings, out, log)
        else:
            result["main"] = main_table(args, settings, out, log)
            result["targets"] = targets(result["main"]["rows"],
                                        result["main"]["interleaved_tape"])
        result["harness_sources"]["end"] = sources_fingerprint()
        write_report(out, args, settings, result, command)
    finally:
        harness_log.close()
        shutil.rmtree(home, ignore_errors=True)
    failed = any(result.get(part, {}).get("errors") for part in ("main", "scaling", "knobs"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
