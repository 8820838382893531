"""Faults at the edges (issue 25, items 1-4, 7 and 8): no lost epoch, no partial file.

Real runs, real signals, real file systems (a tmpfs that fills up or turns
read-only, in a mount namespace of its own); no mocks.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proc_util  # noqa: E402  (also puts the repository root on sys.path)
import user_models  # noqa: E402, F401  (registers DiesInSave for loading best.keras)
from proc_util import Harness, assert_one_error_line, harness_lines, snapshot  # noqa: E402  # noqa: E402

from harness.callbacks import events  # noqa: E402
from harness.callbacks.files import TEMPORARY_SUFFIX  # noqa: E402
from harness.errors import RunInterrupted  # noqa: E402
from scripts import fault_soak  # noqa: E402

MODES = ("fit", "train_on_batch", "tape")
TINY_FLAGS = [
    "--num_examples=250",
    "--max_len=40",
    "--num_words=1000",
    "--verbose=0",
    "--logdir=logs",
    "--histogram_freq=0",
    *proc_util.OBSERVERS_OFF_FLAGS,
]


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def temporaries(folder: Path) -> list:
    return sorted(p.name for p in Path(folder).rglob(f"*{TEMPORARY_SUFFIX}*"))


# --- 1: a stop at an epoch's last step ------------------------------------------------------


class SignalAtStep(keras.callbacks.Callback):
    """Sends a real signal to this process when training reaches `step`."""

    def __init__(self, step: int, signal_number: int) -> None:
        super().__init__()
        self.step, self.signal_number, self.sent = step, signal_number, False

    def on_train_batch_end(self, batch, logs=None) -> None:
        if not self.sent and int(self.model.optimizer.iterations.numpy()) == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signal_number)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_a_stop_at_an_epochs_last_step_keeps_the_epoch(mode, tmp_path, tiny_config):
    """8 steps an epoch, one execution of 8 in the tape loop: the signal lands in the
    epoch's last execution, and the epoch's end still runs before the stop."""
    from harness import train

    settings = dict(mode=mode, epochs=3, learning_rate=0.01, histogram_freq=1)
    reference = train(tiny_config(tmp_path, run_name="ref", **settings), print_fn=lambda s: 0)
    with pytest.raises(RunInterrupted, match="after global step 16") as stop:
        train(
            tiny_config(tmp_path, run_name="stopped", **settings),
            print_fn=lambda s: 0,
            callbacks=[SignalAtStep(16, signal.SIGINT)],
        )
    run_dir = tmp_path / "stopped"
    assert stop.value.exit_code == 130
    assert read_json(run_dir / "history.json")["epoch"] == [1, 2]  # epoch 2 was recorded
    assert events.read(run_dir / "validation").steps("epoch_loss") == [1, 2]
    assert max(proc_util.checkpoint_steps(run_dir / "checkpoints")) == 16
    result = train(
        tiny_config(tmp_path, run_name="stopped", resume=True, **settings), print_fn=lambda s: 0
    )
    assert result.history["epoch"] == [1, 2, 3]
    for name, values in reference.history.items():  # train metrics too: nothing was redone
        np.testing.assert_allclose(result.history[name], values, atol=1e-6, err_msg=name)
    assert fault_soak.compare(run_dir, tmp_path / "ref", 1e-6) == []


# --- 2: a crash while the epoch's record is written -----------------------------------------


@pytest.mark.slow
def test_kill_while_best_model_is_written_resumes_with_the_epoch_redone(tmp_path):
    """The process kills itself inside the second best.keras save (epoch 2's): its
    checkpoint must not exist yet, so the resume redoes epoch 2 and the history,
    best model and weights are those of an uninterrupted run."""
    flags = [
        *TINY_FLAGS,
        "--model=tests.user_models:dies_in_save",
        "--epochs=3",
        "--learning_rate=0.01",
        "--monitor=val_loss",
    ]
    reference = Harness([*flags, "--run_name=ref"], tmp_path, name="ref")
    os.environ["HARNESS_TEST_DIE_IN_SAVE"] = "2"
    try:
        victim = Harness([*flags, "--run_name=victim"], tmp_path, name="victim")
    finally:
        del os.environ["HARNESS_TEST_DIE_IN_SAVE"]
    assert victim.wait(timeout=180) == -signal.SIGKILL, victim.stderr[-2000:]
    run_dir = tmp_path / "logs" / "victim"
    assert read_json(run_dir / "history.json")["epoch"] == [1]
    assert max(proc_util.checkpoint_steps(run_dir / "checkpoints")) == 8  # epoch 1's commit
    assert temporaries(run_dir)  # the half-written best model
    resume = proc_util.run([*flags, "--run_name=victim", "--resume"], tmp_path, timeout=180)
    assert resume.returncode == 0, resume.stderr[-2000:]
    assert reference.wait(timeout=180) == 0, reference.stderr[-2000:]
    assert temporaries(run_dir) == []
    assert fault_soak.compare(run_dir, tmp_path / "logs" / "ref", 1e-6) == []
    best = [
        keras.saving.load_model(d / "best.keras").get_weights()
        for d in (run_dir, tmp_path / "logs" / "ref")
    ]
    for got, want in zip(*best):
        np.testing.assert_allclose(got, want, atol=1e-6)


# --- 3: stopped before the first step -------------------------------------------------------


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.slow
def test_a_run_stopped_during_setup_resumes(signal_number, tmp_path):
    flags = [*TINY_FLAGS, "--mode=tape", "--epochs=2", "--histogram_freq=1"]
    victim = Harness([*flags, "--run_name=early"], tmp_path, name="early")
    run_dir = tmp_path / "logs" / "early"
    victim.wait_for(lambda: (run_dir / "flags.json").exists(), timeout=120, interval=0.001)
    victim.send(signal_number)
    code = victim.wait(timeout=60)
    if signal_number == signal.SIGTERM:
        assert code == 143, victim.stderr[-2000:]
        lines = harness_lines(victim.stderr)
        assert any("stopped by SIGTERM after global step 0" in line for line in lines), lines
        command = shlex.split(lines[-1].split("resume with:", 1)[1])
        args = command[command.index("harness.run") + 1 :]
    else:
        assert code == -signal.SIGKILL
        args = [*flags, "--run_name=early", "--resume"]
    resume = proc_util.run(args, tmp_path, timeout=180)
    assert resume.returncode == 0, resume.stderr[-2000:]
    assert read_json(run_dir / "history.json")["epoch"] == [1, 2]
    for split, tag in (("train", "epoch_loss"), ("validation", "epoch_loss"), ("", "flags")):
        steps = events.read(run_dir / split).steps(tag)
        assert proc_util.duplicates(steps) == [], (split, tag, steps)


# --- 4: damaged files on resume -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, tiny_config, run_train) -> Path:
    """A finished 2-epoch tiny tape run with step checkpoints (copy it before use)."""
    work = tmp_path_factory.mktemp("two")
    result, _ = run_train(
        tiny_config(
            work / "logs",
            run_name="base",
            mode="tape",
            epochs=2,
            max_len=40,
            checkpoint_every_steps=3,
            summary_every_steps=1,
            histogram_freq=0,
        )
    )
    return Path(result.run_dir)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / "logs" / "base")
    return tmp_path / "logs" / "base"


DAMAGE = {
    "flags truncated": (
        "flags.json",
        lambda p: p.write_text(p.read_text()[:40]),
        "flags.json is unreadable",
    ),
    "flags not an object": (
        "flags.json",
        lambda p: p.write_text("[1, 2]"),
        "a JSON list, not an object",
    ),
    "history truncated": (
        "history.json",
        lambda p: p.write_text(p.read_text()[:30]),
        "history.json is unreadable",
    ),
    "history lists cut": (
        "history.json",
        lambda p: p.write_text(json.dumps({**read_json(p), "loss": [1.0]})),
        "history.json is damaged",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
@pytest.mark.slow
def test_damaged_record_file_is_one_line_exit_2_and_changes_nothing(case, two_epochs, tmp_path):
    name, damage, fragment = DAMAGE[case]
    run_dir = _copy(two_epochs, tmp_path)
    damage(run_dir / name)
    before = snapshot(tmp_path)
    process = proc_util.run(
        [
            *TINY_FLAGS,
            "--mode=tape",
            "--epochs=3",
            "--run_name=base",
            "--resume",
            "--checkpoint_every_steps=3",
            "--summary_every_steps=1",
        ],
        tmp_path,
    )
    assert_one_error_line(process, "--resume", fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_empty_checkpoint_index_resumes_from_the_files(
    two_epochs, tmp_path, tiny_config, run_train
):
    run_dir = _copy(two_epochs, tmp_path)
    (run_dir / "checkpoints" / "checkpoint").write_text("")
    result, lines = run_train(
        tiny_config(
            tmp_path / "logs",
            run_name="base",
            mode="tape",
            max_len=40,
            epochs=3,
            resume=True,
            checkpoint_every_steps=3,
            summary_every_steps=1,
            histogram_freq=0,
        )
    )
    assert any(re.search(r"resumed from \S*ckpt-16 at global step 16", line) for line in lines), (
        lines
    )
    assert result.history["epoch"] == [1, 2, 3]


@pytest.mark.slow
def test_a_damaged_event_record_costs_that_record_alone(
    two_epochs, tmp_path, tiny_config, run_train
):
    run_dir = _copy(two_epochs, tmp_path)
    (event_file,) = (run_dir / "train").glob("events.out.tfevents.*")
    before = events.read(run_dir / "train").steps("batch_loss")
    content = bytearray(event_file.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 8] = bytes(b ^ 0xFF for b in content[middle : middle + 8])
    event_file.write_bytes(bytes(content))
    result, lines = run_train(
        tiny_config(
            tmp_path / "logs",
            run_name="base",
            mode="tape",
            max_len=40,
            epochs=3,
            resume=True,
            checkpoint_every_steps=3,
            summary_every_steps=1,
            histogram_freq=0,
        )
    )
    assert any("skipped 1 damaged" in line for line in lines), lines
    steps = events.read(run_dir / "train").steps("batch_loss")
    assert len(before) == 16 and steps[-8:] == list(range(17, 25))
    assert len(set(steps) & set(before)) >= 14  # one record lost, not the rest of the file
    assert sorted(events.read(run_dir / "train").steps("epoch_loss")) in ([1, 2, 3], [2, 3], [1, 3])
    assert result.history["epoch"] == [1, 2, 3]


# --- 7: nothing written through a planted link ----------------------------------------------


def test_planted_symlinks_are_never_written_through(two_epochs, tmp_path, tiny_config, run_train):
    run_dir = _copy(two_epochs, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    history = run_dir / "history.json"
    kept = history.read_text()
    history.unlink()
    history.symlink_to(victim)  # a link planted at a file the harness rewrites...
    for name in (
        "history.json.tmp",
        "flags.json.tmp",
        "best.tmp.keras",  # ...at the old,
        ".history.json.tmp",
    ):  # predictable names
        (run_dir / name).symlink_to(victim)
    victim.write_text(kept)  # the history must read back as the run's own
    run_train(
        tiny_config(
            tmp_path / "logs",
            run_name="base",
            mode="tape",
            epochs=3,
            max_len=40,
            resume=True,
            checkpoint_every_steps=3,
            summary_every_steps=1,
            histogram_freq=0,
        )
    )
    assert victim.read_text() == kept
    assert not history.is_symlink() and read_json(history)["epoch"] == [1, 2, 3]


# --- 8: I/O failures in mid-run -------------------------------------------------------------


def _in_a_tmpfs(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """`script` with ./logs on a 1.5 MB tmpfs and `$HARNESS` a tiny tape run."""
    return proc_util.in_a_tmpfs(
        tmp_path,
        script,
        [
            *TINY_FLAGS,
            "--mode=tape",
            "--epochs=3",
            "--run_name=r",
            "--checkpoint_every_steps=2",
            "--summary_every_steps=1",
            "--learning_rate=0.01",
        ],
        size="1500k",
    )


def _reference(tmp_path: Path) -> Path:
    flags = [
        *TINY_FLAGS,
        "--mode=tape",
        "--epochs=3",
        "--run_name=ref",
        "--checkpoint_every_steps=2",
        "--summary_every_steps=1",
        "--learning_rate=0.01",
    ]
    process = proc_util.run(flags, tmp_path, timeout=180)
    assert process.returncode == 0, process.stderr[-2000:]
    return tmp_path / "logs" / "ref"


def _assert_failed_cleanly_and_resumed(process, tmp_path: Path, cause: str) -> None:
    output = process.stdout
    failed = output.split("FIRST-EXIT=")[1].split()[0]
    assert failed == "1", output[-3000:]
    first_err = (tmp_path / "first.err").read_text()
    lines = harness_lines(first_err)
    assert len(lines) == 1 and lines[0].startswith("harness: error: could not write"), lines
    assert cause in lines[0] and "is intact" in lines[0] and "resume with:" in lines[0], lines
    assert "Traceback" not in first_err
    left = output.split("LEFT:")[1].split("RESUME-EXIT=")[0].split()
    assert not [name for name in left if TEMPORARY_SUFFIX in name or "_temp" in name], left
    intact = re.search(r"checkpoint \S*(ckpt-\d+) is intact", lines[0]).group(1)
    assert f"{intact}.index" in [Path(name).name for name in left]
    assert output.split("RESUME-EXIT=")[1].split()[0] == "0", output[-3000:]
    reference = _reference(tmp_path)
    history, expected = (read_json(d / "history.json") for d in (tmp_path / "after", reference))
    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(history["val_loss"], expected["val_loss"], atol=1e-6)


@pytest.mark.slow
def test_a_full_disk_is_one_line_no_partial_file_and_the_run_resumes(tmp_path):
    """Three 0.4 MB checkpoints fit in the 1.5 MB tmpfs, the fourth does not."""
    process = _in_a_tmpfs(
        tmp_path,
        """
$HARNESS 2> first.err; echo FIRST-EXIT=$?
echo LEFT: $(cd logs/r && find . -type f -o -type d -name '*_temp*' | sort)
mount -o remount,size=60m logs
$HARNESS --resume > resume.out 2> resume.err; echo RESUME-EXIT=$?
""",
    )
    _assert_failed_cleanly_and_resumed(process, tmp_path, "No space left on device")


@pytest.mark.slow
def test_a_folder_turned_read_only_is_one_line_and_the_run_resumes(tmp_path):
    process = _in_a_tmpfs(
        tmp_path,
        """
mount -o remount,size=60m logs
$HARNESS 2> first.err & pid=$!
until [ -e logs/r/checkpoints/ckpt-4.index ]; do sleep 0.01; done
mount --bind logs/r logs/r && mount -o remount,bind,ro logs/r  # open files stay writable
wait $pid; echo FIRST-EXIT=$?
echo LEFT: $(cd logs/r && find . -type f -o -type d -name '*_temp*' | sort)
umount logs/r
$HARNESS --resume > resume.out 2> resume.err; echo RESUME-EXIT=$?
""",
    )
    _assert_failed_cleanly_and_resumed(process, tmp_path, "Read-only file system")


@pytest.mark.slow
def test_a_deleted_run_directory_is_one_line_exit_1(tmp_path):
    process = Harness(
        [*TINY_FLAGS, "--mode=tape", "--epochs=3", "--run_name=gone", "--checkpoint_every_steps=2"],
        tmp_path,
        name="gone",
    )
    run_dir = tmp_path / "logs" / "gone"
    process.wait_for(lambda: (run_dir / "checkpoints" / "ckpt-2.index").exists())
    run_dir.rename(tmp_path / "trash")  # gone from its path at once, like `rm -rf`
    assert process.wait(timeout=120) == 1, process.stderr[-2000:]
    lines = harness_lines(process.stderr)
    assert len(lines) == 1 and "was deleted during training" in lines[0], lines
    assert "Traceback" not in process.stderr
    assert not run_dir.exists()  # not quietly created again


# --- the soak, small ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_fault_soak_small(mode, tmp_path):
    """Four stops (each moment, three signals) in one run, resumed after each."""
    trials = fault_soak.soak([mode], stops=4, per_trial=4, work=tmp_path, seed=1, tolerance=1e-6)
    assert [t.problems for t in trials] == [[]]
    assert sorted(s.moment for s in trials[0].stops) == sorted(fault_soak.MOMENTS)
    assert {s.signal_name for s in trials[0].stops} == {"SIGINT", "SIGTERM", "SIGKILL"}
    table = fault_soak.table(trials)
    assert f"| {mode} | epoch_end |" in table and "1 of 1" in table
