"""The command line and the run directory contract.

`python -m harness.run` in a subprocess for what only a process shows: the
exit status, stderr, that nothing is written. Bad flags are rejected before
TensorFlow is imported, so those subprocesses are fast. The run-directory
rules (refuse, --overwrite, --resume) are checked in-process on real runs.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError

REPO = Path(__file__).resolve().parents[1]

# The flags the issue names; --helpfull must list every one.
ISSUE_FLAGS = (
    "mode",
    "model",
    "dataset",
    "data_dir",
    "num_words",
    "max_len",
    "epochs",
    "batch_size",
    "steps_per_epoch",
    "validation_steps",
    "optimizer",
    "learning_rate",
    "clip_norm",
    "seed",
    "logdir",
    "run_name",
    "overwrite",
)


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m harness.run ARGS` in `cwd`, importing this checkout's harness."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, "-m", "harness.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory: the default --logdir=logs would land here."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def assert_usage_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr, 'harness: error: ...', no traceback."""
    assert process.returncode == 2, (process.returncode, process.stderr)
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("harness: error: "), lines[0]
    assert "Traceback" not in process.stderr + process.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- Bad values: one line, exit status 2, nothing written -------------------------------------

BAD_FLAGS = [
    # (arguments, fragments the one error line must contain)
    (["--mode=bogus"], ["--mode='bogus'", "fit", "train_on_batch", "tape"]),
    (["--model=resnet"], ["--model='resnet'", "sequential", "package.module:function"]),
    (["--model=tests.user_models"], ["--model='tests.user_models'"]),
    (["--dataset=mnist"], ["--dataset='mnist'", "synthetic", "reuters", "imdb"]),
    (["--optimizer=lamb"], ["--optimizer='lamb'", "nadam", "ftrl"]),
    (["--epochs=0"], ["--epochs=0", "greater than 0"]),
    (["--epochs=-3"], ["--epochs=-3"]),
    (["--batch_size=0"], ["--batch_size=0"]),
    (["--batch_size=-32"], ["--batch_size=-32"]),
    (["--learning_rate=0"], ["--learning_rate=0"]),
    (["--learning_rate=-0.001"], ["--learning_rate=-0.001"]),
    (["--steps_per_epoch=0"], ["--steps_per_epoch=0"]),
    (["--steps_per_epoch=-5"], ["--steps_per_epoch=-5"]),
    (["--validation_steps=0"], ["--validation_steps=0"]),
    (["--clip_norm=-1"], ["--clip_norm=-1"]),
    (["--num_words=0"], ["--num_words=0"]),
    (["--num_examples=0"], ["--num_examples=0"]),
    (["--num_examples=-5", "--dataset=reuters"], ["--num_examples=-5"]),
    (["--max_len=0"], ["--max_len=0"]),
    (["--model=functional", "--max_len=40"], ["--max_len=40", "functional", "55"]),
    (["--num_classes=1"], ["--num_classes=1"]),
    (["--num_classes=2", "--dataset=reuters"], ["--num_classes", "reuters"]),
    (["--lr_halve_epochs=a,b"], ["--lr_halve_epochs='a,b'", "comma-separated"]),
    (["--lr_halve_epochs=5,,8"], ["--lr_halve_epochs='5,,8'"]),
    (["--lr_halve_epochs=5;8"], ["--lr_halve_epochs='5;8'"]),
    (["--lr_halve_epochs=0"], ["--lr_halve_epochs=0"]),
    (["--run_name=a/b"], ["--run_name='a/b'"]),
    (["--intra_op_threads=-1"], ["--intra_op_threads=-1", "TensorFlow's choice"]),
    (["--inter_op_threads=-4"], ["--inter_op_threads=-4"]),
    (["--resume"], ["--resume", "--run_name"]),
    (["--resume", "--overwrite", "--run_name=r"], ["--resume", "--overwrite"]),
    (["stray"], ["'stray'"]),
    (["--mode=tape", "one", "two"], ["'one two'"]),
]


@pytest.mark.parametrize("args, fragments", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_exit_2_and_writes_nothing(args, fragments, workdir):
    process = run_cli(*args, cwd=workdir)
    assert_usage_error(process, *fragments)
    assert list(workdir.iterdir()) == []  # not even the default logs/ folder


def test_unwritable_logdir(tmp_path, workdir):
    regular_file = tmp_path / "a-file"
    regular_file.write_text("not a folder\n")
    process = run_cli(f"--logdir={regular_file}/runs", cwd=workdir)
    assert_usage_error(process, f"--logdir='{regular_file}/runs'")
    assert regular_file.read_text() == "not a folder\n"
    assert list(workdir.iterdir()) == []


# absl's own parser rejects these; run.py's flags_parser makes them one line, exit 2.
@pytest.mark.parametrize("args", [["--epochs=abc"], ["--learning_rate=fast"], ["--no_such_flag=1"]])
def test_unparseable_flag_is_one_line_exit_2(args, workdir):
    process = run_cli(*args, cwd=workdir)
    assert list(workdir.iterdir()) == []
    assert_usage_error(process, args[0].split("=")[0].lstrip("-"))


def test_helpfull_lists_every_flag(workdir):
    process = run_cli("--helpfull", cwd=workdir)
    assert process.returncode == 0, process.stderr  # the help asked for: no error
    assert "Traceback" not in process.stdout + process.stderr
    for name in ISSUE_FLAGS:
        assert f"--{name}:" in process.stdout or f"--[no]{name}:" in process.stdout, name
    assert "fit | train_on_batch | tape" in process.stdout
    assert list(workdir.iterdir()) == []


@pytest.mark.slow
def test_cli_run_end_to_end(workdir, load_json):
    """A whole run through the entrypoint: progress bar, one line per epoch, artifacts."""
    process = run_cli(
        "--mode=train_on_batch",
        "--epochs=2",
        "--num_examples=200",
        "--max_len=50",
        "--num_words=1000",
        "--lr_halve_epochs=2",
        "--run_name=cli",
        "--verbose=1",
        cwd=workdir,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    out = process.stdout
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "val_loss" in out
    assert "learning rate x0.5" in out
    run_dir = workdir / "logs" / "cli"  # the default --logdir, relative to the cwd
    assert f"Run directory: {Path('logs') / 'cli'}" in out
    flags = load_json(run_dir / "flags.json")
    assert flags["mode"] == "train_on_batch" and flags["lr_halve_epochs"] == [2]
    assert flags["epochs"] == 2 and flags["num_examples"] == 200
    history = load_json(run_dir / "history.json")
    assert history["epoch"] == [1, 2] and len(history["val_loss"]) == 2


# --- The run directory: refuse, overwrite, resume ------------------------------------------


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: its bytes and modification time."""
    return {
        path.relative_to(folder): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def finished_run(make_config, run_train):
    """A finished 1-epoch run named 'r'; returns (its config, its run directory)."""
    config = make_config(run_name="r")
    result, _ = run_train(config)
    run_dir = Path(result.run_dir)
    assert (run_dir / "history.json").is_file() and (run_dir / "flags.json").is_file()
    return config, run_dir


@pytest.mark.slow
def test_existing_run_is_refused_and_left_unchanged(finished_run, run_train):
    config, run_dir = finished_run
    before = snapshot(run_dir)
    assert len(before) >= 4  # flags, history, checkpoint files
    with pytest.raises(UsageError, match="already exists.*--overwrite"):
        run_train(config)
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_overwrite_replaces_the_run(finished_run, run_train, load_json):
    config, run_dir = finished_run
    (run_dir / "stale.txt").write_text("from the old run\n")
    result, _ = run_train(dataclasses.replace(config, overwrite=True, epochs=2))
    assert Path(result.run_dir) == run_dir
    assert not (run_dir / "stale.txt").exists()
    assert load_json(run_dir / "history.json")["epoch"] == [1, 2]
    flags = load_json(run_dir / "flags.json")
    assert flags["overwrite"] is True and flags["epochs"] == 2


@pytest.mark.slow
def test_resume_continues_the_run(finished_run, run_train, load_json):
    config, run_dir = finished_run
    first = load_json(run_dir / "history.json")
    result, lines = run_train(dataclasses.replace(config, resume=True, epochs=2))
    history = load_json(run_dir / "history.json")
    assert history["epoch"] == [1, 2]
    assert history["loss"][0] == first["loss"][0]  # epoch 1 kept, not retrained
    assert any("resumed from" in line.lower() for line in lines)


def test_resume_without_run_name_is_an_error(make_config, logdir):
    with pytest.raises(UsageError, match="--resume needs --run_name"):
        make_config(resume=True)
    assert not logdir.exists()


def test_resume_with_nothing_to_resume_is_an_error(make_config, run_train, logdir):
    with pytest.raises(UsageError, match="--resume: .*no checkpoints"):
        run_train(make_config(resume=True, run_name="never-ran"))
    assert not logdir.exists()


@pytest.mark.parametrize(
    "flag, value", [("model", "subclass"), ("dataset", "reuters"), ("seed", 7)]
)
@pytest.mark.slow
def test_resume_contradicting_the_saved_flags_is_an_error(finished_run, run_train, flag, value):
    config, run_dir = finished_run
    before = snapshot(run_dir)
    changed = dataclasses.replace(config, resume=True, epochs=2, **{flag: value})
    with pytest.raises(UsageError, match=f"--resume: --{flag}={value!r} contradicts"):
        run_train(changed)
    assert snapshot(run_dir) == before
