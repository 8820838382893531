"""A run's flagfile reruns it, and scripts/compare_runs.py tells two runs apart."""

import dataclasses
import sys

import proc_util
import pytest
from absl import flags

from harness import rundir
from harness.config import Config
from harness.run import config_from_flags, define_flags

sys.path.insert(0, str(proc_util.REPO / "scripts"))
import compare_runs  # noqa: E402  (a script, found through the path above)


def _parsed(argv: list) -> Config:
    """The Config `python -m harness.run <argv>` would train, parsed by absl."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["harness.run", *argv])
    return config_from_flags(flag_values)


def test_the_flagfile_gives_back_every_flag(tmp_path):
    """Every kind of value (lists, windows, pairs, booleans, unset ones) survives the
    flagfile; the flags naming the run are left out."""
    config = Config(
        logdir=str(tmp_path),
        run_name="first",
        model="multi_io",
        profile_steps=((3, 4), (9, 12)),
        loss_weights=(("priority", 0.75), ("department", 0.125)),
        lr_halve_epochs=(2, 5),
        metrics=("accuracy",),
        gpus=(0, 1),
        jit_compile=True,
        gpu_memory_growth=False,
        clip_norm=2.5,
    ).validate()
    path = tmp_path / rundir.FLAGFILE
    path.write_text(rundir.flagfile(config, str(tmp_path / "first")))
    assert "\n--run_name" not in path.read_text()
    rerun = _parsed([f"--flagfile={path}", "--run_name=second"])
    assert rerun == dataclasses.replace(config, run_name="second")


def test_given_objects_are_comments(tmp_path):
    config = Config(logdir=str(tmp_path), run_name="api", model="given:mine").validate()
    text = rundir.flagfile(config, str(tmp_path / "api"))
    assert "# --model=given:mine  (given to harness.train: pass it again)" in text
    assert "\n--model=" not in text


@pytest.mark.slow
def test_a_rerun_from_the_flagfile_and_the_comparison(
    make_config, run_train, logdir, load_json, capsys
):
    first, _ = run_train(make_config(mode="tape", run_name="first", epochs=2))
    flagfile = f"{first.run_dir}/{rundir.FLAGFILE}"
    proc_util.run(
        [f"--flagfile={flagfile}", "--run_name=second", "--learning_rate=0.003"], cwd=logdir.parent
    ).check_returncode()
    saved = [load_json(logdir / name / rundir.FLAGS_FILE) for name in ("first", "second")]
    assert {k for k in saved[0] if saved[0][k] != saved[1][k]} == {"run_name", "learning_rate"}

    assert compare_runs.main(["first", "second", "--logdir", str(logdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4].split() == ["learning_rate", "0.001", "0.003"]
    history = [load_json(logdir / name / rundir.HISTORY_FILE) for name in ("first", "second")]
    row = next(line.split() for line in lines if line.startswith("val_loss "))
    a, b = (run["val_loss"][-1] for run in history)
    assert [float(cell) for cell in row[1:]] == pytest.approx([a, b, b - a], rel=1e-3, abs=1e-4)
    best = next(line.split() for line in lines if line.startswith("val_loss (best)"))
    assert float(best[3]) == pytest.approx(min(history[0]["val_loss"]), rel=1e-3)


def test_compare_refuses_what_is_not_a_run(tmp_path, capsys):
    assert compare_runs.main([str(tmp_path), "nothing", "--logdir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("compare_runs: error: ") and "\n" not in error
