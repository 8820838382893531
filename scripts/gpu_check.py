"""Check the harness's GPU path on a machine with NVIDIA GPUs, in one command.

    python scripts/gpu_check.py [--quick] [--no_install] [--data_dir D] [--out O]

Without a GPU (`nvidia-smi` lists none) it says so in one line and exits 0.
If `nvidia-smi` shows a GPU that TensorFlow does not see, it first runs (and
prints) `pip install tensorflow[and-cuda]==<installed version>`, and `pip
install xprof` if that is missing (not with --no_install). Each check then runs
`python -m harness.run` (or a child of this script) in a fresh process, on Reuters:
the three loops train on the GPU and profile (kernel table naming the launching
ops, step breakdown); --mixed_precision (tensor-core-eligible kernels);
--jit_compile; --gpu_memory_growth and --gpu_memory_limit_mb (read back);
--strategy=mirrored (SKIP with one GPU); examples/s of each loop against bare
Keras fit and of the tape loop against the compute ceiling (scripts/bench.py:
interleaved, repeated, paired). See docs/performance.md, "GPU check".

Writes gpu_check.json, gpu_check.md and every run's log to --out (default
logs/gpu-check). Exit status: 0 if nothing FAILed (or no GPU), 1 if a check
FAILed, 2 on bad arguments.
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness.callbacks import profile_xprof  # noqa: E402  (no TensorFlow at import)

MODES = ("fit", "train_on_batch", "tape")
FULL = dict(
    steps_per_epoch=100,
    epochs=2,
    jit_modes=("fit", "tape"),
    bench_repeats=3,
    bench_epochs=3,
    bench_examples=None,
)
QUICK = dict(
    steps_per_epoch=50,
    epochs=2,
    jit_modes=("fit",),
    bench_repeats=2,
    bench_epochs=2,
    bench_examples=3200,
)
KERNEL_TOP = 50  # kernel rows read from a capture (the harness's own tables keep 20)
MIN_LINKED_SHARE = 0.5  # of kernel time, launched by a named TF op
ALLOC_MB, LIMIT_MB = 256, 1024  # the memory probes' allocation and cap
GROWTH_MAX_SHARE = 0.25  # with growth, the process may take at most this of GPU memory
# Paired-ratio floors: harness fit within 5% of bare fit; the project's tape target.
FLOORS = {"fit vs bare fit": 0.95, "tape vs ceiling": 0.95}
RUN_TIMEOUT_S, BENCH_TIMEOUT_S = 180, 300


@dataclasses.dataclass
class CheckResult:
    """One row of the table: result is PASS, FAIL or SKIP; data holds the figures."""

    check: str
    result: str
    detail: str
    data: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    """A finished `python -m harness.run` subprocess."""

    returncode: int
    output: str
    run_dir: Path
    history: dict | None


# --- Pure verdicts (tested on this CPU machine) -----------------------------------------


def paired_ratios(numerators: list, denominators: list) -> dict | None:
    """Median and spread of a/b over pairs measured side by side (None entries skipped)."""
    ratios = [a / b for a, b in zip(numerators, denominators) if a and b]
    if not ratios:
        return None
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "n": len(ratios),
    }


def training_verdict(check: str, run: Run, *, epochs: int, replicas: int = 1) -> CheckResult:
    """PASS when the run exited 0 on a GPU (with `replicas` replicas), wrote `epochs`
    epochs of finite losses and its loss fell from the first epoch to the last."""
    last_line = (run.output.strip().splitlines() or ["no output"])[-1]
    if run.returncode != 0 or not run.history:
        return CheckResult(check, "FAIL", f"exit {run.returncode}: {last_line}")
    losses = run.history.get("loss", [])
    device = re.search(r"training on (GPU:\d+[^\n]*)", run.output)
    problems = [] if device else ["it did not say it trains on a GPU"]
    if replicas > 1 and f"with {replicas} replicas" not in run.output:
        problems.append(f"it did not report {replicas} replicas")
    if len(losses) != epochs or not all(math.isfinite(v) for v in losses):
        problems.append(f"losses {losses} (want {epochs} finite)")
    elif losses[-1] >= losses[0]:
        problems.append(f"loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})")
    detail = "; ".join(problems) or (
        f"{device.group(1)}; loss {losses[0]:.4f} -> {losses[-1]:.4f} over {epochs} epochs"
    )
    return CheckResult(check, "FAIL" if problems else "PASS", detail, {"loss": losses})


def kernel_summary(tables: profile_xprof.ProfileTables) -> dict:
    """Counts of a capture's tables: kernels, the share of kernel time launched by a
    named op, tensor-core eligible/used rows, steps and the step breakdown."""
    total = sum(k.total_us for k in tables.kernels)
    linked = sum(k.total_us for k in tables.kernels if k.op_name)
    return {
        "kernels": len(tables.kernels),
        "kernel_us": total,
        "linked_share": linked / total if total else 0.0,
        "tc_eligible": sum(k.tensor_core_eligible for k in tables.kernels),
        "tc_used": sum(k.uses_tensor_cores for k in tables.kernels),
        "steps": tables.step_count,
        "avg_step_ms": tables.avg_step_ms,
        "compute_share": tables.compute_share,
        "input_share": tables.input_share,
        "hardware": tables.hardware_type,
    }


def profile_verdict(
    check: str, tables: profile_xprof.ProfileTables, *, tensor_cores: bool = False
) -> CheckResult:
    """PASS when the kernel table is non-empty, at least MIN_LINKED_SHARE of its time
    names the launching op, the step breakdown has steps, and (with `tensor_cores`)
    some kernel is tensor-core eligible."""
    s = kernel_summary(tables)
    problems = [
        text
        for failed, text in (
            (not s["kernels"], "no GPU kernels (is CUPTI loaded? see the run's log)"),
            (
                s["kernels"] and s["linked_share"] < MIN_LINKED_SHARE,
                f"only {s['linked_share']:.0%} of kernel time names its TF op",
            ),
            (not s["steps"], "no step breakdown"),
            (tensor_cores and not s["tc_eligible"], "no tensor-core-eligible kernel"),
        )
        if failed
    ]
    detail = (
        f"{s['kernels']} kernels, {s['linked_share']:.0%} of kernel time linked to ops, "
        f"TC eligible/used {s['tc_eligible']}/{s['tc_used']}; {s['steps']} steps, avg "
        f"{s['avg_step_ms']:.2f} ms, compute {s['compute_share']:.0%}, input "
        f"{s['input_share']:.0%}"
    )
    return CheckResult(
        check,
        "FAIL" if problems else "PASS",
        "; ".join(problems) + (" -- " if problems else "") + detail,
        s,
    )


def memory_verdict(check: str, probe: dict | None) -> CheckResult:
    """Growth: the allocation fits and the process took < GROWTH_MAX_SHARE of the GPUs'
    memory. Limit: the allocation fits and one of twice the cap is refused."""
    if not probe or "error" in probe:
        return CheckResult(check, "FAIL", (probe or {}).get("error", "the probe printed nothing"))
    took = probe["used_after_mb"] - probe["used_before_mb"]
    detail = (
        f"{probe['device_line']}; allocated {probe['allocated_mb']:.0f} MB "
        f"(get_memory_info peak {probe['peak_mb']:.0f} MB); the process took "
        f"{took:.0f} of {probe['total_mb']:.0f} MB (nvidia-smi)"
    )
    if probe["limit_mb"]:
        ok = probe["over_limit"].startswith("refused") and probe["peak_mb"] <= probe["limit_mb"]
        detail += f"; {2 * probe['limit_mb']} MB over the cap: {probe['over_limit']}"
    else:
        ok = took < GROWTH_MAX_SHARE * probe["total_mb"]
    ok = ok and probe["allocated_mb"] >= ALLOC_MB
    return CheckResult(check, "PASS" if ok else "FAIL", detail, probe)


def speed_verdicts(bench: dict | None) -> list:
    """Rows from scripts/bench.py's bench.json: each loop's examples/s over bare fit,
    paired per repeat, and the tape loop over the ceiling, interleaved. FAIL below a
    FLOORS entry or when a variant failed; PASS otherwise (a measurement)."""
    main = (bench or {}).get("main")
    if not main:
        return [CheckResult("speed", "FAIL", "scripts/bench.py wrote no result")]
    errors = "; ".join(e.get("error", "?") for e in main.get("errors", []))
    runs = main["runs"]
    rates = {v: [r.get("examples_per_second") for r in runs.get(v, [])] for v in runs}
    rows = []
    tape = main.get("interleaved_tape")
    measured = [
        (
            f"{mode} vs bare fit",
            "paired examples/s per repeat",
            paired_ratios(rates.get(f"harness-{mode}", []), rates.get("bare-fit", [])),
        )
        for mode in MODES
    ]
    measured.append(
        (
            "tape vs ceiling",
            "interleaved: ceiling time / harness time",
            tape
            and {
                "median": tape["time_weighted"],
                "min": tape["min_run"],
                "max": tape["max_run"],
                "n": len(tape["runs"]),
                "per_execution_median": tape["median"],
            },
        )
    )
    for name, how, r in measured:
        floor = FLOORS.get(name)
        if not r:
            rows.append(CheckResult(f"speed: {name}", "FAIL", "not measured"))
            continue
        rows.append(
            CheckResult(
                f"speed: {name}",
                "FAIL" if floor and r["median"] < floor else "PASS",
                f"{r['median']:.3f}x (spread {r['min']:.3f}-{r['max']:.3f}, {r['n']} runs; {how};"
                f" {f'target >= {floor}' if floor else 'no target'})",
                r,
            )
        )
    return rows + ([CheckResult("speed: runs", "FAIL", errors)] if errors else [])


def overall(results: list) -> str:
    """FAIL if any check failed, PASS if some passed, SKIP if none ran."""
    kinds = {r.result for r in results}
    return "FAIL" if "FAIL" in kinds else "PASS" if "PASS" in kinds else "SKIP"


def render_table(results: list) -> str:
    """The results as a Markdown table (pipes in details escaped)."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {cell(r.check)} | {r.result} | {cell(r.detail)} |" for r in results]
    return "\n".join(lines)


def install_plan(
    *, nvidia_gpus: int, tf_version: str | None, tf_gpus: int, has_xprof: bool
) -> list:
    """The pip installs needed: TensorFlow's CUDA libraries when nvidia-smi shows a GPU
    TensorFlow does not see (keeping the installed version), xprof when missing."""
    plan = []
    if nvidia_gpus and not tf_gpus:
        pin = f"=={tf_version}" if tf_version else ""
        plan.append(["pip", "install", f"tensorflow[and-cuda]{pin}"])
    if not has_xprof:
        plan.append(["pip", "install", "xprof"])
    return plan


# --- Machine and subprocesses -----------------------------------------------------------


def nvidia_gpus() -> list:
    """The `nvidia-smi -L` lines ("GPU 0: NVIDIA H100 ..."); [] without the tool."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in done.stdout.splitlines() if line.startswith("GPU ")]


def gpu_memory_mb() -> tuple:
    """(used, total) MB summed over the GPUs, from nvidia-smi."""
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    )
    rows = [[float(v) for v in line.split(",")] for line in done.stdout.splitlines() if line]
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _child(kind: str, arg: str = "", timeout: int = 120) -> tuple:
    """Runs this script as `--_child kind` in a fresh process; (last JSON line, output)."""
    command = [sys.executable, __file__, "--_child", kind, "--_child_arg", arg]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}, ""
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    tail = (output.strip().splitlines() or ["no output"])[-1]
    return (
        json.loads(lines[-1]) if lines else {"error": f"exit {done.returncode}: {tail}"},
        output,
    )


def run_child(kind: str, arg: str) -> int:
    """Child entry: probe TensorFlow, probe GPU memory, or run scripts/bench.py."""
    if kind == "probe":
        import tensorflow as tf

        print(
            json.dumps(
                {"version": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}
            )
        )
        return 0
    if kind == "bench":
        sys.path.insert(0, str(REPO / "scripts"))
        import bench  # no TensorFlow yet

        # configure devices as the harness does, before anything touches them: its
        from harness import devices  # runs inside bench then find the same settings

        devices.configure(None, memory_growth=True, memory_limit_mb=0)
        return bench.main(json.loads(arg))
    used_before, total = gpu_memory_mb()  # before TensorFlow starts
    import tensorflow as tf

    from harness import devices

    limit = LIMIT_MB if kind == "memory-limit" else 0
    line = devices.configure(None, memory_growth=True, memory_limit_mb=limit)
    with tf.device("/GPU:0"):
        kept = tf.random.uniform([ALLOC_MB * 2**18])  # float32: ALLOC_MB MB
        info = tf.config.experimental.get_memory_info("GPU:0")
        over = "not tried"
        if limit:
            try:
                tf.zeros([2 * limit * 2**18]).numpy()
                over = "allocated"
            except tf.errors.OpError as error:  # ResourceExhaustedError expected
                over = f"refused ({type(error).__name__})"
    del kept
    print(
        json.dumps(
            {
                "device_line": line,
                "allocated_mb": info["current"] / 2**20,
                "peak_mb": info["peak"] / 2**20,
                "used_before_mb": used_before,
                "used_after_mb": gpu_memory_mb()[0],
                "total_mb": total,
                "limit_mb": limit,
                "over_limit": over,
            }
        )
    )
    return 0


def setup(no_install: bool, gpus: int) -> tuple:
    """Makes TensorFlow see the GPUs (pip, unless --no_install): the first check and
    the number of GPUs TensorFlow sees."""
    probe, _ = _child("probe")
    plan = install_plan(
        nvidia_gpus=gpus,
        tf_version=probe.get("version"),
        tf_gpus=probe.get("gpus", 0),
        has_xprof=importlib.util.find_spec("xprof") is not None,
    )
    for command in plan:
        if no_install:
            print(f"gpu_check: --no_install: not running: {shlex.join(command)}")
            continue
        print(f"gpu_check: running: {shlex.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", *command], check=False)
        importlib.invalidate_caches()
        probe, _ = _child("probe")
    seen = probe.get("gpus", 0)
    detail = (
        f"TensorFlow {probe.get('version')} sees {seen} GPU(s), nvidia-smi {gpus}"
        if "version" in probe
        else f"TensorFlow does not start: {probe.get('error')}"
    )
    return CheckResult("tensorflow sees the GPUs", "PASS" if seen else "FAIL", detail), seen


def run_harness(name: str, flags: list, opts: dict) -> Run:
    """`python -m harness.run` on Reuters into <out>/runs/<name>; the log beside it."""
    logdir = Path(opts["out"]) / "runs"
    command = [
        sys.executable,
        "-m",
        "harness.run",
        "--dataset=reuters",
        f"--data_dir={opts['data_dir']}",
        f"--logdir={logdir}",
        f"--run_name={name}",
        "--overwrite",
        "--verbose=0",
        f"--steps_per_epoch={opts['steps_per_epoch']}",
        f"--epochs={opts['epochs']}",
        *flags,
    ]
    print(f"gpu_check: {name}: {shlex.join(command[1:])}", flush=True)
    shutil.rmtree(logdir / name, ignore_errors=True)  # never judge an earlier run's files
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=RUN_TIMEOUT_S
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = 124, f"timed out after {RUN_TIMEOUT_S} s"
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / f"{name}.log").write_text(output)
    history_path = logdir / name / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else None
    return Run(code, output, logdir / name, history)


def _profile(check: str, run: Run, *, tensor_cores: bool = False) -> CheckResult:
    captures = profile_xprof.find_captures(run.run_dir) if run.run_dir.exists() else []
    if not captures:
        return CheckResult(check, "FAIL", "no capture under the run dir")
    try:
        tables = profile_xprof.build_tables(captures[-1], top=KERNEL_TOP)
    except (ValueError, RuntimeError) as error:
        return CheckResult(check, "FAIL", f"tables: {error}")
    return profile_verdict(check, tables, tensor_cores=tensor_cores)


# --- The checks -------------------------------------------------------------------------


def _trained_and_profiled(name: str, flags: list, opts: dict, tensor_cores: bool) -> list:
    """A run that profiles steps 11-16 of its second epoch: its training and profile rows."""
    steps = opts["steps_per_epoch"]
    run = run_harness(name, [*flags, f"--profile_steps={steps + 10},{steps + 15}"], opts)
    return [
        training_verdict(f"train {name}", run, epochs=opts["epochs"]),
        _profile(f"profile {name}", run, tensor_cores=tensor_cores),
    ]


def check_loops(opts: dict) -> list:
    """Each loop trains on the GPU; its capture has kernels named by op, and steps."""
    return [
        row
        for mode in MODES
        for row in _trained_and_profiled(mode, [f"--mode={mode}"], opts, False)
    ]


def check_mixed_precision(opts: dict) -> list:
    """float16 with loss scaling trains in fit; some kernel is tensor-core eligible."""
    return _trained_and_profiled(
        "fit-mixed_precision", ["--mode=fit", "--mixed_precision"], opts, True
    )


def check_jit(opts: dict) -> list:
    """--jit_compile (XLA) trains, in fit and (unless --quick) the tape loop."""
    return [
        training_verdict(
            f"train {mode}-jit_compile",
            run_harness(f"{mode}-jit_compile", [f"--mode={mode}", "--jit_compile"], opts),
            epochs=opts["epochs"],
        )
        for mode in opts["jit_modes"]
    ]


def check_memory(opts: dict) -> list:
    """The two memory flags, each read back in a child configured like the harness."""
    return [
        memory_verdict("gpu_memory_growth", _child("memory-growth")[0]),
        memory_verdict(f"gpu_memory_limit_mb={LIMIT_MB}", _child("memory-limit")[0]),
    ]


def check_mirrored(opts: dict) -> list:
    """--strategy=mirrored in each loop, over every GPU TensorFlow sees."""
    if opts["gpus"] < 2:
        return [CheckResult("mirrored (3 loops)", "SKIP", "1 GPU: needs two or more")]
    return [
        training_verdict(
            f"train {mode}-mirrored",
            run_harness(f"{mode}-mirrored", [f"--mode={mode}", "--strategy=mirrored"], opts),
            epochs=opts["epochs"],
            replicas=opts["gpus"],
        )
        for mode in MODES
    ]


def check_speed(opts: dict) -> list:
    """scripts/bench.py, interleaved and repeated, in a child configured like the harness."""
    out = Path(opts["out"]) / "bench"
    argv = [
        "--variants",
        "bare-fit,harness-fit,harness-train_on_batch,harness-tape,ceiling",
        "--repeats",
        str(opts["bench_repeats"]),
        "--epochs",
        str(opts["bench_epochs"]),
        "--memory",
        "off",
        "--retry_wait",
        "0",
        "--data_dir",
        opts["data_dir"],
        "--out",
        str(out),
    ]
    argv += ["--num_examples", str(opts["bench_examples"])] if opts["bench_examples"] else []
    print(f"gpu_check: speed: scripts/bench.py {shlex.join(argv)}", flush=True)
    shutil.rmtree(out, ignore_errors=True)  # never judge an earlier run's bench.json
    _, output = _child("bench", json.dumps(argv), timeout=BENCH_TIMEOUT_S)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-child.log").write_text(output)
    path = out / "bench.json"
    return speed_verdicts(json.loads(path.read_text()) if path.exists() else None)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = REPO.parent / "shared" / "data"
    parser.add_argument(
        "--data_dir",
        default=str(shared) if shared.is_dir() else None,
        help="folder holding reuters.npz (default ../shared/data if present)",
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "logs" / "gpu-check"),
        help="folder for gpu_check.json/.md and the runs (default logs/gpu-check)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repeats")
    parser.add_argument("--no_install", action="store_true", help="never run pip")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_child_arg", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return run_child(args._child, args._child_arg)
    gpus = nvidia_gpus()
    if not gpus:
        print("gpu_check: no NVIDIA GPU on this machine (nvidia-smi lists none): nothing to check")
        return 0
    if not args.data_dir or not (Path(args.data_dir) / "reuters.npz").is_file():
        parser.exit(2, f"gpu_check: error: --data_dir={args.data_dir!r} holds no reuters.npz\n")
    opts = dict(
        QUICK if args.quick else FULL, out=args.out, data_dir=str(Path(args.data_dir).resolve())
    )
    started = time.monotonic()
    print("gpu_check: " + "; ".join(gpus), flush=True)
    first, opts["gpus"] = setup(args.no_install, len(gpus))
    results = [first]
    for check in (
        check_loops,
        check_mixed_precision,
        check_jit,
        check_memory,
        check_mirrored,
        check_speed,
    ):
        name = check.__name__.removeprefix("check_")
        if first.result != "PASS":
            results.append(CheckResult(name, "SKIP", "TensorFlow does not see the GPUs"))
            continue
        try:
            rows = check(opts)
        except Exception as error:  # one broken check must not lose the others' table
            rows = [CheckResult(name, "FAIL", f"{type(error).__name__}: {error}")]
        for result in rows:
            print(f"gpu_check: {result.result} {result.check}: {result.detail}", flush=True)
        results += rows
    table, verdict, out = render_table(results), overall(results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(
        json.dumps(
            {
                "gpus": gpus,
                "quick": args.quick,
                "overall": verdict,
                "seconds": time.monotonic() - started,
                "results": [dataclasses.asdict(r) for r in results],
            },
            indent=1,
        )
    )
    (out / "gpu_check.md").write_text(
        f"# GPU check\n\n{'; '.join(gpus)}\n\nOverall: {verdict}\n\n{table}\n"
    )
    print(
        f"\n{table}\n\nOverall: {verdict} ({time.monotonic() - started:.0f} s); "
        f"wrote {out / 'gpu_check.json'} and gpu_check.md"
    )
    return 1 if verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
