"""The command line's promises at the edges (issue 25, items 5, 6, 11, 12 and 17).

Real `python -m harness.run` processes on real files: dot-only and symlinked run
names never delete anything, one run directory has one writer, absurd values
never reach TensorFlow, the printed commands work when pasted into a shell, the
stop line starts a line of its own, and --help is a user's text.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proc_util  # noqa: E402  (also puts the repository root on sys.path)
from proc_util import (  # noqa: E402
    Harness,
    assert_one_error_line,  # noqa: E402
    harness_env,
    snapshot,
)
from test_cli import assert_usage_error, run_cli  # noqa: E402
from test_reliability import read_json  # noqa: E402

from harness import rundir  # noqa: E402
from harness.config import Config  # noqa: E402
from harness.errors import UsageError  # noqa: E402

TINY_FLAGS = [
    "--num_examples=250",
    "--max_len=60",
    "--num_words=1000",
    "--batch_size=32",
    "--histogram_freq=0",
    *proc_util.OBSERVERS_OFF_FLAGS,
]


# --- 5: '.', '..' and symlinks never make --overwrite delete anything else ----------------


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_run_name_with_overwrite_deletes_nothing(name, tmp_path):
    work = tmp_path / "work"
    (work / "logs" / "earlier").mkdir(parents=True)
    (work / "logs" / "earlier" / "flags.json").write_text("{}")
    (work / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    process = run_cli("--logdir=logs", f"--run_name={name}", "--overwrite", cwd=work)
    assert_usage_error(process, f"--run_name='{name}'")
    assert snapshot(tmp_path) == before


def test_run_dir_symlinked_out_of_logdir_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("mine\n")
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "link").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    process = run_cli("--logdir=logs", "--run_name=link", "--overwrite", cwd=work)
    assert_usage_error(process, "directly inside --logdir='logs'")
    assert snapshot(tmp_path) == before


# --- 6: one run directory, one writer ------------------------------------------------------


@pytest.fixture(scope="module")
def started_together(tmp_path_factory):
    """Two runs named 'same' and two with the default name, all started at once."""
    work = tmp_path_factory.mktemp("together")
    args = ["--mode=tape", "--epochs=2", "--verbose=0", *TINY_FLAGS]
    processes = [
        Harness([*args, "--logdir=named", "--run_name=same"], work, name=f"same{i}")
        for i in range(2)
    ]
    processes += [Harness([*args, "--logdir=defaults"], work, name=f"default{i}") for i in range(2)]
    try:
        for process in processes:
            process.wait(timeout=300)
        yield work, processes
    finally:
        for process in processes:
            process.kill()


@pytest.mark.slow
def test_two_runs_with_one_name_one_writes_the_other_is_refused(started_together):
    work, processes = started_together
    same = processes[:2]
    codes = sorted(process.process.returncode for process in same)
    assert codes == [0, 2], [process.stderr[-2000:] for process in same]
    loser = next(process for process in same if process.process.returncode == 2)
    line = assert_one_error_line(
        subprocess.CompletedProcess(
            loser.args, loser.process.returncode, loser.stdout, loser.stderr
        ),
        "run directory",
    )
    assert "in use by another process" in line or "already exists" in line, line
    run_dir = work / "named" / "same"
    assert len(list((run_dir / "train").glob("events.out.tfevents.*"))) == 1  # one writer
    assert read_json(run_dir / "history.json")["epoch"] == [1, 2]


@pytest.mark.slow
def test_two_default_named_runs_started_together_get_a_directory_each(started_together):
    work, processes = started_together
    for process in processes[2:]:
        assert process.process.returncode == 0, process.stderr[-2000:]
    runs = sorted(path.name for path in (work / "defaults").iterdir())
    assert len(runs) == 2, runs
    for name in runs:
        assert name.startswith("sequential-tape-"), name
        assert len(list((work / "defaults" / name / "train").glob("events.out.*"))) == 1


@pytest.mark.slow
def test_overwrite_refused_while_a_live_process_claims_the_run_not_after_kill_9(tmp_path):
    """A live process's claim refuses --overwrite (nothing deleted); once that process
    is killed with -9, its claim is stale and the same command replaces the run."""
    run_dir = tmp_path / "logs" / "held"
    run_dir.mkdir(parents=True)
    (run_dir / "precious.txt").write_text("mine\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from harness import rundir; "
            "claim = rundir.Claim(sys.argv[1]); print('claimed', flush=True); time.sleep(600)",
            str(run_dir),
        ],
        env=harness_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        before = snapshot(tmp_path)
        args = [
            "--logdir=logs",
            "--run_name=held",
            "--overwrite",
            "--epochs=1",
            "--verbose=0",
            *TINY_FLAGS,
        ]
        refused = proc_util.run(args, tmp_path, timeout=300)
        assert_one_error_line(refused, "in use by another process")
        assert snapshot(tmp_path) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    replaced = proc_util.run(args, tmp_path, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert not (run_dir / "precious.txt").exists()
    assert (run_dir / "history.json").is_file()


# --- 11: values that make no sense never reach TensorFlow ---------------------------------

BAD_VALUES = [
    ["--learning_rate=nan"],
    ["--learning_rate=inf"],
    ["--clip_norm=inf"],
    ["--lr_halve_factor=nan"],
    ["--batch_size=2147483648"],
    ["--epochs=100000000000000000000"],
    ["--seed=4294967296"],
    ["--seed=-1"],
    ["--gpu_memory_limit_mb=99999999999"],
    ["--intra_op_threads=100000"],
    ["--inter_op_threads=100000"],
    ["--profiler_port=70000"],
    ["--lr_halve_epochs=99999999999"],
    ["--verbose=3"],
    ["--run_name=..."],
    ["--run_name=-rf"],
    ["--run_name=" + "a" * 256],
    ["--run_name=" + "\u00e9" * 128],
]


@pytest.mark.parametrize("args", BAD_VALUES, ids=[a[0][:40] for a in BAD_VALUES])
def test_senseless_value_is_one_line_exit_2_before_tensorflow(args, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    process = run_cli(*args, cwd=work)
    assert_usage_error(process, args[0].partition("=")[0])
    assert list(work.iterdir()) == []
    assert time.monotonic() - started < 30  # refused before TensorFlow's import


def test_name_the_file_system_rejects_is_not_blamed_on_logdir(tmp_path):
    """A name the file system refuses (ENAMETOOLONG) names --run_name, not --logdir."""
    config = Config(logdir=str(tmp_path), run_name="r" * 300)  # unvalidated: past the check
    with pytest.raises(UsageError) as raised:
        rundir.create(config, os.path.join(config.logdir, config.run_name))
    assert "--run_name" in str(raised.value), raised.value
    assert "cannot be written" not in str(raised.value), raised.value
    assert list(tmp_path.iterdir()) == []


# --- 12 and 17: a run stopped by Ctrl-C, its console as a terminal shows it ---------------

STOP_FLAGS = [
    "--mode=fit",
    "--epochs=1",
    "--steps_per_epoch=600",
    "--logdir=my logs",
    "--run_name=r",
    *TINY_FLAGS,
]


def stopped_run(work: Path, verbose: int, ready) -> str:
    """Runs STOP_FLAGS in `work` with stdout and stderr in one file (interleaved, as
    on a terminal), sends SIGINT once `ready(console)` holds; returns the console."""
    console = work / f"console-{verbose}.txt"
    with open(console, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.run", *STOP_FLAGS, f"--verbose={verbose}"],
            cwd=work,
            env=harness_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not ready(console.read_text(errors="replace")):
            assert process.poll() is None and time.monotonic() < deadline, console.read_text(
                errors="replace"
            )[-3000:]
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130, console.read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return console.read_text(errors="replace")


@pytest.fixture(scope="module")
def progress_bar_stopped(tmp_path_factory):
    """--verbose=1, stopped mid-epoch, in a folder whose path has a space."""
    work = tmp_path_factory.mktemp("edges") / "my work"
    work.mkdir()
    return work, stopped_run(work, 1, lambda text: "\u2501" in text)  # the bar is drawn


def stop_lines(console: str) -> list:
    return [line for line in console.split("\n") if "harness: stopped by SIGINT" in line]


@pytest.mark.slow
def test_stop_line_starts_its_own_line_after_a_progress_bar(progress_bar_stopped):
    _, console = progress_bar_stopped
    lines = stop_lines(console)
    assert len(lines) == 1 and lines[0].startswith("harness: stopped by SIGINT"), console[-3000:]


@pytest.mark.slow
def test_stop_line_adds_no_blank_line_without_a_progress_bar(tmp_path):
    console = stopped_run(
        tmp_path,
        0,
        lambda text: list((tmp_path / "my logs" / "r" / "checkpoints").glob("ckpt-0.index")),
    )
    lines = stop_lines(console)
    assert len(lines) == 1 and lines[0].startswith("harness: stopped by SIGINT"), console
    assert "\n\nharness: stopped" not in console, console


@pytest.mark.slow
def test_printed_commands_work_pasted_into_a_shell(progress_bar_stopped):
    """The resume line, pasted into bash, finishes the run; the TensorBoard line
    (with --inspect, which reads the event files and exits) finds its events."""
    work, console = progress_bar_stopped
    resume = console.split("harness: resume with: ", 1)[1].split("\n", 1)[0]
    assert shlex.split(resume)[:3] == [sys.executable, "-m", "harness.run"], resume
    resumed = subprocess.run(
        ["bash", "-c", resume],
        cwd=work,
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(work / "my logs" / "r" / "history.json")["epoch"] == [1]
    board = resumed.stdout.split("See it in TensorBoard: ", 1)[1].split("\n", 1)[0]
    assert shlex.split(board)[:3] == [sys.executable, "-m", "tensorboard.main"], board
    inspected = subprocess.run(
        ["bash", "-c", board + " --inspect"],
        cwd=work,
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr[-3000:]
    report = inspected.stdout + inspected.stderr
    assert "No event files found" not in report and "epoch_loss" in report, report[-3000:]


def test_help_says_what_the_tool_does_and_exits_0(tmp_path):
    process = run_cli("--help", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("Train a Keras model"), process.stdout[:500]
    intro = process.stdout.split("flags:", 1)[0]
    for fragment in (
        "python -m harness.run --mode=fit|train_on_batch|tape",
        "TensorBoard",
        "fit",
        "train_on_batch",
        "GradientTape",
    ):
        assert fragment in intro, fragment
    assert "The entrypoint" not in process.stdout
    assert list(tmp_path.iterdir()) == []
