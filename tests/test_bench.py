"""Smoke tests of scripts/bench.py, run as a person runs it (a subprocess).

A tiny synthetic configuration (`--quick`) trains every variant end to end and
the tests read the JSON and Markdown it writes; the real numbers come from a
full run (see the README).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench.py"
VARIANTS = (
    "bare-fit",
    "bare-fit-stream",
    "bare-fit-keras-logging",
    "bare-tape",
    "bare-tape-ingraph",
    "bare-train_on_batch",
    "ceiling",
    "harness-fit",
    "harness-fit-nolog",
    "harness-train_on_batch",
    "harness-train_on_batch-nolog",
    "harness-tape",
    "harness-tape-nolog",
)


def _bench(*args, timeout=240):
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def _check_rows(rows, variants):
    assert sorted(rows) == sorted(variants)
    for variant, row in rows.items():
        assert row["examples_per_second"]["median"] > 0, variant
        assert row["retraces_after_first_epoch"] is not None, variant


@pytest.mark.slow
def test_quick_run_measures_every_variant(tmp_path):
    done = _bench("--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["main"]["rows"]
    _check_rows(rows, VARIANTS)
    assert rows["harness-fit"]["baseline"] == "bare-fit"
    assert rows["harness-tape-nolog"]["baseline"] == "bare-tape"
    for variant in VARIANTS:
        assert rows[variant]["vs_ceiling"] > 0, variant
        if variant.startswith("harness-"):
            assert rows[variant]["vs_baseline"] > 0, variant
    for mode in ("fit", "train_on_batch", "tape"):
        assert rows[f"harness-{mode}"]["logging_cost_pct"] is not None
        # the time in the callbacks' batch hooks, logging on minus off
        assert rows[f"harness-{mode}"]["hook_share_pct"] > 0
        assert rows[f"harness-{mode}"]["logging_cost_hooks_pct"] is not None
    assert rows["bare-tape"]["hook_share_pct"] == 0  # a loop with no callbacks
    # the pause after an epoch (validation and every epoch end) as a share of it
    for variant in ("bare-fit", "bare-fit-keras-logging", "harness-fit", "harness-tape-nolog"):
        assert 0 < rows[variant]["pause_share_pct"] < 100, variant
    assert result["targets"], "the issue's targets are checked"
    interleaved = result["main"]["interleaved_tape"]  # the ceiling between tape executions
    assert interleaved["executions"] == len(interleaved["pairs"]) > 0
    assert all(
        steps >= 1 and harness > 0 and ceiling > 0
        for _, steps, harness, ceiling in interleaved["pairs"]
    )
    assert interleaved["median"] > 0 and interleaved["full_executions"] > 0
    harness = sum(pair[2] for pair in interleaved["pairs"])
    ceiling = sum(pair[3] for pair in interleaved["pairs"])
    (tape_target,) = [c for c in result["targets"] if c["target"].endswith("ceiling")]
    assert tape_target["value"] == pytest.approx(ceiling / harness)
    # each epoch's first execution (one run here: the pairs are in its order)
    pairs = interleaved["pairs"]
    firsts = [p for i, p in enumerate(pairs) if not i or pairs[i - 1][0] != p[0]]
    assert len(firsts) == len({p[0] for p in pairs}) >= 1
    assert interleaved["first_executions"] == pytest.approx(
        sum(p[3] for p in firsts) / sum(p[2] for p in firsts)
    )

    markdown = (tmp_path / "bench.md").read_text()
    assert "| variant | examples/s (median) |" in markdown
    assert "harness-tape vs the ceiling, interleaved" in markdown
    assert "each epoch's first execution" in markdown
    for variant in VARIANTS:
        assert f"| {variant} |" in markdown


@pytest.mark.slow
def test_memory_in_fresh_subprocesses(tmp_path):
    done = _bench(
        "--quick",
        "--memory",
        "subprocess",
        "--variants",
        "bare-fit,harness-fit",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["main"]["rows"]
    _check_rows(rows, ("bare-fit", "harness-fit"))
    for row in rows.values():
        # A fresh process holding TensorFlow: hundreds of MB, not the test runner's.
        assert 100 < row["peak_rss_mb"] < 4000
        assert row["peak_growth_mb"] > 0
    assert rows["harness-fit"]["peak_rss_vs_baseline"] > 0


@pytest.mark.slow
def test_knob_table(tmp_path):
    # Every knob but inter_op_threads=1, which runs as intra_op_threads=1 does (fresh
    # processes; each costs the suite a TensorFlow start per loop).
    knobs = "jit_compile,mixed_precision,steps_per_execution=1,steps_per_execution=epoch"
    done = _bench("--quick", "--knobs", f"{knobs},intra_op_threads=1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {
        (r["mode"], r["knob"]): r
        for r in json.loads((tmp_path / "bench.json").read_text())["knobs"]["rows"]
    }
    assert {mode for mode, _ in rows} == {"fit", "train_on_batch", "tape"}
    for mode in ("fit", "train_on_batch", "tape"):
        assert rows[(mode, "defaults")]["examples_per_second"] > 0
        for knob in ("jit_compile", "mixed_precision"):  # honoured by every loop
            assert rows[(mode, knob)]["speedup"] > 0, (mode, knob)
            assert rows[(mode, knob)]["retraces_after_first_epoch"] == 0, (mode, knob)
    assert rows[("fit", "steps_per_execution=1")]["note"] == "the default"
    assert rows[("tape", "steps_per_execution=1")]["speedup"] > 0  # tape's default is more
    assert rows[("fit", "steps_per_execution=epoch")]["fields"] == {"steps_per_execution": 8}
    rejected = rows[("train_on_batch", "steps_per_execution=epoch")]
    assert rejected["note"].startswith("rejected: --steps_per_execution=8 does not apply")
    assert rejected.get("speedup") is None
    for mode in ("fit", "train_on_batch", "tape"):  # in fresh processes, paired likewise
        assert rows[(mode, "defaults, own process")]["examples_per_second"] > 0
        assert rows[(mode, "intra_op_threads=1")]["fields"] == {"intra_op_threads": 1}
        assert rows[(mode, "intra_op_threads=1")]["speedup"] > 0, mode
    assert len(list((tmp_path / "processes").glob("*.json"))) == 6
    markdown = (tmp_path / "bench.md").read_text()
    assert "## Knobs" in markdown
    assert "| knob | fit | train_on_batch | tape |" in markdown


@pytest.mark.parametrize(
    "args, message",
    [
        (("--epochs", "1"), "--epochs=1"),
        (("--variants", "bare-fit,warp-drive"), "warp-drive"),
        (("--data_dir", "/nonexistent"), "holds no reuters.npz"),
        (("--batch_sizes", "32,x"), "--batch_sizes"),
        (("--num_examples", "0"), "--num_examples=0"),
        (("--knobs", "intra_op_threads=1,warp"), "--knobs: unknown warp"),
        (("--knobs", "--batch_sizes", "32"), "--knobs cannot be combined"),
        (("--source", "images", "--quick"), "--source=images makes the main table only"),
        (("--source", "tfrecords"), "invalid choice: 'tfrecords'"),
    ],
)
def test_bad_arguments_exit_2(args, message):
    done = _bench(*args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
