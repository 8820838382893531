"""The CPU-side logic of scripts/gpu_check.py, on real inputs.

The GPU checks themselves need a GPU; here: the no-GPU path (the script as a
subprocess), the verdicts on a real V100 capture (read from a temporary copy:
xprof writes cache files next to a capture) and on real dataclass rows, the
paired-ratio maths, the table and the pip plan.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402

from harness.callbacks import profile_xprof as pt  # noqa: E402

V100 = "gpu_v100x8_tf_bert_tensorflow-profiler-demo.xplane.pb"


@pytest.fixture(scope="module")
def v100_tables(tmp_path_factory, shared_data):
    source = shared_data / "profiles" / V100
    if not source.is_file():
        pytest.skip(f"{source} is missing")
    copy = tmp_path_factory.mktemp("v100") / V100
    shutil.copyfile(source, copy)
    return pt.build_tables([copy], top=gpu_check.KERNEL_TOP)


def _kernel(op_name="model/dense/MatMul", us=100.0, eligible=False, used=False):
    return pt.KernelRow(
        kernel_name="void gemm_kernel<half>(...)",
        count=4,
        total_us=us,
        avg_us=us / 4,
        uses_tensor_cores=used,
        tensor_core_eligible=eligible,
        op_name=op_name,
        grid="160,1,1",
        block="256,1,1",
    )


ONE_STEP = (pt.StepRow("train 11", 2.0, 1.5, 0.1, 0.4),)


def _tables(kernels, steps=ONE_STEP):
    return pt.ProfileTables(
        sources=("h.xplane.pb",),
        hardware_type="GPU",
        ops=(),
        kernels=tuple(kernels),
        steps=tuple(steps),
    )


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    # An empty PATH hides nvidia-smi even on a machine that has one.
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "no NVIDIA GPU" in done.stdout
    assert done.stderr == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_gpu_tensorflow_does_not_see_fails_first_and_skips_the_rest(tmp_path, shared_data):
    # A stand-in nvidia-smi lists a GPU; TensorFlow here (CPU) sees none.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Stand-in GPU (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_check.py"),
            "--no_install",
            "--out",
            str(out),
            "--data_dir",
            str(shared_data),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--no_install: not running: pip install 'tensorflow[and-cuda]==" in done.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["overall"] == "FAIL" and report["gpus"] == ["GPU 0: Stand-in GPU (UUID: GPU-0)"]
    first, *rest = report["results"]
    assert first["result"] == "FAIL" and "sees 0 GPU(s), nvidia-smi 1" in first["detail"]
    assert [r["check"] for r in rest] == [
        "loops",
        "mixed_precision",
        "jit",
        "memory",
        "mirrored",
        "speed",
    ]
    assert {r["result"] for r in rest} == {"SKIP"}
    assert "| tensorflow sees the GPUs | FAIL |" in (out / "gpu_check.md").read_text()


def test_the_v100_capture_is_parsed_and_fails_the_op_names(v100_tables):
    summary = gpu_check.kernel_summary(v100_tables)
    assert summary["kernels"] == 15 and summary["hardware"] == "GPU"
    assert summary["kernel_us"] == pytest.approx(29690.7, abs=0.1)
    assert summary["linked_share"] == 0.0  # the README: op_name is empty on every row
    assert (summary["tc_eligible"], summary["tc_used"]) == (0, 0)
    assert summary["steps"] == 1 and summary["avg_step_ms"] == pytest.approx(21.3, abs=0.05)
    result = gpu_check.profile_verdict("profile fit", v100_tables)
    assert result.result == "FAIL"
    assert "0% of kernel time names its TF op" in result.detail
    assert "15 kernels" in result.detail and "1 steps" in result.detail
    assert "tensor-core" in gpu_check.profile_verdict("mp", v100_tables, tensor_cores=True).detail


def test_profile_verdict_passes_linked_kernels_with_steps():
    linked = _tables([_kernel(us=300.0, eligible=True, used=True), _kernel(op_name="", us=100.0)])
    result = gpu_check.profile_verdict("profile tape", linked, tensor_cores=True)
    assert result.result == "PASS", result.detail
    assert result.data["linked_share"] == pytest.approx(0.75)
    assert "TC eligible/used 1/1" in result.detail
    assert gpu_check.profile_verdict("p", _tables([_kernel()]), tensor_cores=True).result == "FAIL"
    assert gpu_check.profile_verdict("p", _tables([_kernel()], steps=())).result == "FAIL"
    empty = gpu_check.profile_verdict("p", _tables([]))
    assert empty.result == "FAIL" and "no GPU kernels" in empty.detail
    mostly_unlinked = _tables([_kernel(us=40.0), _kernel(op_name="", us=60.0)])
    assert gpu_check.profile_verdict("p", mostly_unlinked).result == "FAIL"


def test_paired_ratios_median_and_spread():
    r = gpu_check.paired_ratios([110.0, 90.0, 100.0, None], [100.0, 100.0, 80.0, 100.0])
    assert r["n"] == 3 and r["median"] == pytest.approx(1.1)
    assert (r["min"], r["max"]) == (pytest.approx(0.9), pytest.approx(1.25))
    assert (
        gpu_check.paired_ratios([], []) is None and gpu_check.paired_ratios([1.0], [None]) is None
    )


def _bench(fit=(1000.0, 1100.0, 900.0), bare=(1000.0, 1000.0, 1000.0), errors=()):
    def runs(values):
        return [{"examples_per_second": v} for v in values]

    return {
        "main": {
            "runs": {
                "bare-fit": runs(bare),
                "harness-fit": runs(fit),
                "harness-train_on_batch": runs((500.0, 520.0, 480.0)),
                "harness-tape": runs((1200.0, 1150.0, 1250.0)),
                "ceiling": runs((1300.0, 1300.0, 1300.0)),
            },
            "interleaved_tape": {
                "time_weighted": 0.93,
                "median": 0.94,
                "min_run": 0.9,
                "max_run": 0.96,
                "runs": [0.9, 0.93, 0.96],
            },
            "errors": list(errors),
        }
    }


def test_speed_verdicts_from_a_bench_result():
    rows = {r.check: r for r in gpu_check.speed_verdicts(_bench())}
    assert list(rows) == [
        "speed: fit vs bare fit",
        "speed: train_on_batch vs bare fit",
        "speed: tape vs bare fit",
        "speed: tape vs ceiling",
    ]
    assert rows["speed: fit vs bare fit"].result == "PASS"
    assert rows["speed: fit vs bare fit"].data["median"] == pytest.approx(1.0)
    assert "spread 0.900-1.100, 3 runs" in rows["speed: fit vs bare fit"].detail
    assert rows["speed: train_on_batch vs bare fit"].result == "PASS"  # no floor
    assert rows["speed: tape vs ceiling"].result == "FAIL"  # 0.93 < 0.95
    slow = {r.check: r.result for r in gpu_check.speed_verdicts(_bench(fit=(900.0, 940.0, 950.0)))}
    assert slow["speed: fit vs bare fit"] == "FAIL"
    failed = gpu_check.speed_verdicts(_bench(errors=[{"error": "harness-tape repeat 2: boom"}]))
    assert failed[-1].result == "FAIL" and "boom" in failed[-1].detail
    assert gpu_check.speed_verdicts(None)[0].result == "FAIL"


def _run(losses, output="harness: training on GPU:0, memory growth on\n", code=0):
    return gpu_check.Run(
        returncode=code,
        output=output,
        run_dir=Path("/nonexistent"),
        history={"epoch": list(range(1, len(losses) + 1)), "loss": losses},
    )


def test_training_verdict():
    passed = gpu_check.training_verdict("train fit", _run([2.3, 1.9]), epochs=2)
    assert (
        passed.result == "PASS" and "GPU:0" in passed.detail and "2.3000 -> 1.9000" in passed.detail
    )
    assert gpu_check.training_verdict("t", _run([2.3, math.nan]), epochs=2).result == "FAIL"
    assert gpu_check.training_verdict("t", _run([2.3, 2.4]), epochs=2).result == "FAIL"
    assert gpu_check.training_verdict("t", _run([2.3]), epochs=2).result == "FAIL"
    cpu = gpu_check.training_verdict("t", _run([2.3, 1.9], "harness: no GPU found"), epochs=2)
    assert cpu.result == "FAIL" and "GPU" in cpu.detail
    crashed = gpu_check.training_verdict(
        "t", gpu_check.Run(2, "harness: error: bad flag\n", Path("/x"), None), epochs=2
    )
    assert crashed.result == "FAIL" and crashed.detail == "exit 2: harness: error: bad flag"
    two = "harness: training on GPU:0, GPU:1\nharness: MirroredStrategy with 2 replicas\n"
    assert (
        gpu_check.training_verdict("m", _run([2.3, 1.9], two), epochs=2, replicas=2).result
        == "PASS"
    )
    assert gpu_check.training_verdict("m", _run([2.3, 1.9]), epochs=2, replicas=2).result == "FAIL"


def _probe(**changes):
    probe = {
        "device_line": "harness: training on GPU:0, memory growth on",
        "allocated_mb": 256.0,
        "peak_mb": 256.0,
        "used_before_mb": 0.0,
        "used_after_mb": 900.0,
        "total_mb": 81559.0,
        "limit_mb": 0,
        "over_limit": "not tried",
    }
    return {**probe, **changes}


def test_memory_verdict():
    assert gpu_check.memory_verdict("growth", _probe()).result == "PASS"
    assert gpu_check.memory_verdict("growth", _probe(used_after_mb=78000.0)).result == "FAIL"
    limited = _probe(
        limit_mb=1024, over_limit="refused (ResourceExhaustedError)", used_after_mb=1500.0
    )
    assert gpu_check.memory_verdict("limit", limited).result == "PASS"
    assert (
        gpu_check.memory_verdict("limit", {**limited, "over_limit": "allocated"}).result == "FAIL"
    )
    assert gpu_check.memory_verdict("limit", {**limited, "allocated_mb": 0.0}).result == "FAIL"
    crashed = gpu_check.memory_verdict("growth", {"error": "exit 1: ValueError"})
    assert crashed.result == "FAIL" and crashed.detail == "exit 1: ValueError"


def test_table_and_overall_verdict():
    rows = [
        gpu_check.CheckResult("train fit", "PASS", "GPU:0 | loss 2.3 -> 1.9"),
        gpu_check.CheckResult("mirrored (3 loops)", "SKIP", "1 GPU: needs two or more"),
    ]
    table = gpu_check.render_table(rows)
    assert table.splitlines()[:2] == ["| check | result | detail |", "| --- | --- | --- |"]
    assert "| train fit | PASS | GPU:0 \\| loss 2.3 -> 1.9 |" in table
    assert gpu_check.overall(rows) == "PASS"
    assert gpu_check.overall(rows + [gpu_check.CheckResult("x", "FAIL", "")]) == "FAIL"
    assert gpu_check.overall(rows[1:]) == "SKIP"
    json.dumps([gpu_check.dataclasses.asdict(r) for r in rows])  # the JSON report's rows


def test_install_plan():
    assert gpu_check.install_plan(
        nvidia_gpus=1, tf_version="2.21.0", tf_gpus=0, has_xprof=True
    ) == [["pip", "install", "tensorflow[and-cuda]==2.21.0"]]
    assert (
        gpu_check.install_plan(nvidia_gpus=1, tf_version="2.21.0", tf_gpus=1, has_xprof=True) == []
    )
    assert gpu_check.install_plan(nvidia_gpus=2, tf_version=None, tf_gpus=0, has_xprof=False) == [
        ["pip", "install", "tensorflow[and-cuda]"],
        ["pip", "install", "xprof"],
    ]
