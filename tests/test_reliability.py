"""Reliability (issue 5): interrupted runs, faults and bad input lose nothing.

Real processes, real signals, real files; no mocks.

1. `kill -9` part-way through an epoch, in every mode, then the same command
   with `--resume`: the result equals an uninterrupted run of the same flags,
   history.json holds every epoch once, TensorBoard no step twice.
2. SIGTERM / SIGINT: exit 143 / 130, a checkpoint of the step named on stderr,
   the summaries flushed, and the printed resume command finishes the run.
3. The newest checkpoint corrupt: a warning and the previous one; all of them
   corrupt: one error line, exit 2, nothing on disk changed.
4. A diverging learning rate: the run stops naming the step, exit 1, and no
   checkpoint or best model holds NaN weights.
5. Bad input the other test files do not cover: one `harness: error:` line,
   exit 2, no traceback, the log directory unchanged.
6. Safe by default: a tampered data file is never unpickled; best.keras loads
   in Keras's safe mode.

The subprocesses of (1) and (2) run concurrently (about 30 s on 2 cores); the
rest runs in this process where a subprocess would only add TF's import time.
"""

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import proc_util  # noqa: E402  (also puts the repository root on sys.path)
import tensorflow as tf  # noqa: E402
from proc_util import Harness, assert_one_error_line, harness_lines, snapshot  # noqa: E402

from harness import data  # noqa: E402
from harness.callbacks import events  # noqa: E402
from harness.config import Config  # noqa: E402
from harness.errors import HarnessError, UsageError  # noqa: E402

MODES = ("fit", "train_on_batch", "tape")


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


# --- 1 and 2: kill -9, SIGTERM and SIGINT part-way through a real run -----------------------

EPOCHS = 4
STEPS_PER_EPOCH = 25  # 800 examples / batch 32
SUMMARY_EVERY = 3
RUN_FLAGS = [
    f"--epochs={EPOCHS}",
    "--num_examples=800",
    "--max_len=40",
    "--num_words=1000",
    "--batch_size=32",
    "--learning_rate=0.01",
    "--lr_halve_epochs=3",
    "--checkpoint_every_steps=10",
    f"--summary_every_steps={SUMMARY_EVERY}",
    "--histogram_freq=2",
    "--keep_checkpoints=3",
    "--verbose=0",
    "--logdir=logs",
]
# Run name: (mode, signal). Each is signalled once a step checkpoint past the
# first epoch exists (ckpt-30: 5 steps into epoch 2; the next one is at 40);
# SIGKILL waits until a batch summary past that checkpoint is on disk too, so
# the resume has orphaned summaries to drop.
VICTIMS = {f"kill-{mode}": (mode, signal.SIGKILL) for mode in MODES}
VICTIMS["term-tape"] = ("tape", signal.SIGTERM)
VICTIMS["int-fit"] = ("fit", signal.SIGINT)


class Stopped:
    """One victim: how it was stopped, what it left, how its resume went."""

    def __init__(self, name: str, mode: str, signal_number: int, process: Harness) -> None:
        self.name, self.mode, self.signal_number, self.process = name, mode, signal_number, process
        self.run_dir = process.cwd / "logs" / name
        self.checkpoints_at_signal: list = []
        self.exit_code = None
        self.stderr = ""
        self.left_on_disk: dict = {}
        self.batch_steps_after_stop: list = []
        self.epochs_after_stop: list = []
        self.resume = None
        self.resume_args: list = []


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Runs the references and the victims concurrently, signals each victim
    part-way through epoch 2, resumes it, and waits for everything to finish."""
    work = tmp_path_factory.mktemp("interrupted")
    processes = []
    try:
        references = {}
        for mode in MODES:
            references[mode] = Harness(
                [f"--mode={mode}", f"--run_name=ref-{mode}", *RUN_FLAGS], work, name=f"ref-{mode}"
            )
            processes.append(references[mode])
        victims = {}
        for name, (mode, signal_number) in VICTIMS.items():
            process = Harness([f"--mode={mode}", f"--run_name={name}", *RUN_FLAGS], work, name=name)
            processes.append(process)
            victims[name] = Stopped(name, mode, signal_number, process)

        waiting = dict(victims)
        tails = {
            name: events.EventTail(victim.run_dir / "train", "batch_loss")
            for name, victim in victims.items()
        }
        deadline = time.monotonic() + 150
        while waiting and time.monotonic() < deadline:
            for name, victim in list(waiting.items()):
                steps = proc_util.listed_steps(victim.run_dir / "checkpoints")
                newest = max(steps, default=0)
                if newest > STEPS_PER_EPOCH and (
                    victim.signal_number != signal.SIGKILL
                    or max(tails[name].poll(), default=0) > newest
                ):
                    victim.process.send(victim.signal_number)
                    victim.checkpoints_at_signal = steps
                    del waiting[name]
                elif not victim.process.running():
                    raise AssertionError(
                        f"{name} ended before it was signalled: {victim.process.stderr[-3000:]}"
                    )
            time.sleep(0.002)
        assert not waiting, f"never reached a checkpoint past epoch 1: {sorted(waiting)}"

        for victim in victims.values():
            victim.exit_code = victim.process.wait(timeout=60)
            victim.stderr = victim.process.stderr
            victim.left_on_disk = snapshot(victim.run_dir)
            if (victim.run_dir / "history.json").exists():
                victim.epochs_after_stop = read_json(victim.run_dir / "history.json")["epoch"]
            victim.batch_steps_after_stop = events.read(victim.run_dir / "train").steps(
                "batch_loss"
            )
            if victim.signal_number == signal.SIGKILL:
                victim.resume_args = [*victim.process.args, "--resume"]
            else:  # the command the harness printed
                line = [text for text in victim.stderr.splitlines() if "resume with:" in text]
                assert line, victim.stderr[-3000:]
                command = shlex.split(line[-1].split("resume with:", 1)[1])
                assert command[:3] == [sys.executable, "-m", "harness.run"], command
                victim.resume_args = command[3:]
            victim.resume = Harness(victim.resume_args, work, name=f"{victim.name}-resume")
            processes.append(victim.resume)

        for process in processes:
            process.wait(timeout=240)
        yield {"references": references, "victims": victims, "work": work}
    finally:
        for process in processes:
            process.kill()


def _restored_step(victim: Stopped) -> int:
    match = re.search(r"resumed from \S*ckpt-(\d+) at global step (\d+)", victim.resume.stdout)
    assert match, victim.resume.stdout[-3000:]
    assert match.group(1) == match.group(2)
    return int(match.group(2))


def _assert_resumed_run_equals_reference(victim: Stopped, reference: Harness) -> None:
    assert victim.resume.process.returncode == 0, victim.resume.stderr[-3000:]
    assert "Traceback" not in victim.resume.stderr
    expected = read_json(reference.cwd / "logs" / f"ref-{victim.mode}" / "history.json")
    history = read_json(victim.run_dir / "history.json")
    assert history["epoch"] == list(range(1, EPOCHS + 1))  # every epoch exactly once
    assert set(history) == set(expected)
    for name, values in history.items():
        assert len(values) == EPOCHS, name
    # The validation metrics of every epoch, and the train metrics of every
    # epoch but the interrupted one (averaged over the steps after the resume).
    np.testing.assert_allclose(history["val_loss"], expected["val_loss"], atol=1e-4)
    np.testing.assert_allclose(history["val_accuracy"], expected["val_accuracy"], atol=1e-4)
    interrupted_epoch = _restored_step(victim) // STEPS_PER_EPOCH + 1
    assert interrupted_epoch < EPOCHS
    for epoch in range(1, EPOCHS + 1):
        if epoch != interrupted_epoch:
            for name in ("loss", "accuracy"):
                assert history[name][epoch - 1] == pytest.approx(
                    expected[name][epoch - 1], abs=1e-4
                ), (name, epoch)
    # The comparison has teeth: the curves moved far more than the tolerance.
    assert abs(expected["val_loss"][-1] - expected["val_loss"][0]) > 1e-2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_kill9_mid_epoch_then_resume_equals_uninterrupted_run(interrupted, mode):
    victim = interrupted["victims"][f"kill-{mode}"]
    assert victim.exit_code == -signal.SIGKILL
    # Killed part-way through epoch 2: history.json held epoch 1 only.
    assert victim.epochs_after_stop == [1]
    step = _restored_step(victim)
    assert step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH, (
        f"resumed at step {step}, not mid-epoch"
    )
    assert step >= max(victim.checkpoints_at_signal)
    # Summaries past the checkpoint had reached the disk; the resume dropped them.
    orphans = [s for s in victim.batch_steps_after_stop if s > step]
    assert orphans, (step, victim.batch_steps_after_stop)
    assert f"dropped summaries written after step {step}" in victim.resume.stdout
    _assert_resumed_run_equals_reference(victim, interrupted["references"][mode])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_kill9_then_resume_shows_no_step_twice_in_tensorboard(interrupted, mode):
    victim = interrupted["victims"][f"kill-{mode}"]
    reference = interrupted["work"] / "logs" / f"ref-{mode}"
    assert victim.resume.process.returncode == 0, victim.resume.stderr[-3000:]
    for split in ("train", "validation"):
        for tag in ("epoch_loss", "epoch_accuracy"):
            steps = events.read(victim.run_dir / split).steps(tag)
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (split, tag, steps)
    steps = events.read(victim.run_dir / "train").steps("batch_loss")
    assert proc_util.duplicates(steps) == [], steps
    assert set(steps) <= set(events.read(reference / "train").steps("batch_loss"))
    # Everything after the restored step was written by the resumed process.
    restored = _restored_step(victim)
    expected_after = list(
        range(
            restored // SUMMARY_EVERY * SUMMARY_EVERY + SUMMARY_EVERY,
            EPOCHS * STEPS_PER_EPOCH + 1,
            SUMMARY_EVERY,
        )
    )
    assert [s for s in steps if s > restored] == expected_after


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_kill9_then_resume_loses_no_summary_step(interrupted, mode):
    """Each batch summary is flushed as it is written (the writer's `as_default`
    block flushes on exit), so a kill loses none that the resume does not redo."""
    victim = interrupted["victims"][f"kill-{mode}"]
    reference = interrupted["work"] / "logs" / f"ref-{mode}"
    steps = events.read(victim.run_dir / "train").steps("batch_loss")
    assert sorted(steps) == events.read(reference / "train").steps("batch_loss")
    assert victim.batch_steps_after_stop[-1] >= _restored_step(victim)


SIGNALLED = [name for name, (_, sig) in VICTIMS.items() if sig != signal.SIGKILL]


@pytest.mark.parametrize("name", SIGNALLED)
@pytest.mark.slow
def test_signal_saves_the_step_prints_how_to_resume_and_exits_128_plus_n(interrupted, name):
    victim = interrupted["victims"][name]
    expected_code = {signal.SIGTERM: 143, signal.SIGINT: 130}[victim.signal_number]
    assert victim.exit_code == expected_code, victim.stderr[-3000:]
    assert "Traceback" not in victim.stderr
    lines = harness_lines(victim.stderr)
    signal_name = signal.Signals(victim.signal_number).name
    match = re.search(rf"stopped by {signal_name} after global step (\d+)", "\n".join(lines))
    assert match, lines
    step = int(match.group(1))
    assert step > STEPS_PER_EPOCH
    assert any("--resume" in line and f"--run_name={name}" in line for line in lines), lines
    # The checkpoint of that very step was on disk when the process had exited...
    assert f"checkpoints/ckpt-{step}.index" in victim.left_on_disk
    assert f"checkpoints/ckpt-{step}.data-00000-of-00001" in victim.left_on_disk
    # ... and the summaries up to it had been flushed.
    assert victim.batch_steps_after_stop == list(range(SUMMARY_EVERY, step + 1, SUMMARY_EVERY))
    # The printed command resumed from exactly that step.
    assert _restored_step(victim) == step


@pytest.mark.parametrize("name", SIGNALLED)
@pytest.mark.slow
def test_signal_then_printed_resume_equals_uninterrupted_run(interrupted, name):
    victim = interrupted["victims"][name]
    _assert_resumed_run_equals_reference(victim, interrupted["references"][victim.mode])
    steps = events.read(victim.run_dir / "train").steps("batch_loss")
    reference = interrupted["work"] / "logs" / f"ref-{victim.mode}"
    assert steps == events.read(reference / "train").steps("batch_loss")


@pytest.mark.parametrize("name", sorted(VICTIMS))
@pytest.mark.slow
def test_best_model_after_interruption_loads_safely_and_is_the_best_epoch(interrupted, name):
    victim = interrupted["victims"][name]
    history = read_json(victim.run_dir / "history.json")
    model = keras.saving.load_model(victim.run_dir / "best.keras", safe_mode=True)
    splits = data.synthetic(
        num_examples=800, num_words=1000, max_len=40, num_classes=46, seed=Config().seed
    )
    # The compiled loss (with the model's regularization terms), as in val_loss.
    loss = model.evaluate(splits.x_val, splits.y_val, batch_size=32, verbose=0, return_dict=True)[
        "loss"
    ]
    assert loss == pytest.approx(min(history["val_loss"]), abs=1e-4)


# --- 3: corrupt checkpoints ---------------------------------------------------------------

# conftest.TINY: 250 examples, 8 steps per epoch. Checkpoints every 3 steps and at
# epoch ends, the newest 3 kept: a 2-epoch run leaves ckpt-12, ckpt-15 and ckpt-16.
CKPT_RUN = dict(checkpoint_every_steps=3, keep_checkpoints=3, learning_rate=0.01, histogram_freq=0)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny_config, run_train):
    """(a finished 2-epoch run directory, the history of a straight 3-epoch run)."""
    base = tmp_path_factory.mktemp("checkpointed")
    result, _ = run_train(tiny_config(base, epochs=2, run_name="base", **CKPT_RUN))
    assert proc_util.checkpoint_steps(Path(result.run_dir) / "checkpoints") == [12, 15, 16]
    straight, _ = run_train(tiny_config(base, epochs=3, run_name="straight", **CKPT_RUN))
    return Path(result.run_dir), straight.history


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    logdir = tmp_path / "logs"
    shutil.copytree(run_dir, logdir / run_dir.name)
    return logdir


def _garble(path: Path) -> None:
    """Overwrites a file with as many random bytes."""
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


CORRUPTIONS = {
    "data truncated": lambda d: os.truncate(
        d / "ckpt-16.data-00000-of-00001", (d / "ckpt-16.data-00000-of-00001").stat().st_size // 2
    ),
    "data overwritten": lambda d: _garble(d / "ckpt-16.data-00000-of-00001"),
    "index emptied": lambda d: os.truncate(d / "ckpt-16.index", 0),
    "data deleted": lambda d: os.remove(d / "ckpt-16.data-00000-of-00001"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.slow
def test_corrupt_newest_checkpoint_warns_and_resumes_from_the_previous(
    checkpointed, corruption, tmp_path, tiny_config, run_train
):
    run_dir, straight = checkpointed
    logdir = _copy_run(run_dir, tmp_path)
    checkpoints = logdir / "base" / "checkpoints"
    CORRUPTIONS[corruption](checkpoints)
    result, lines = run_train(
        tiny_config(logdir, epochs=3, run_name="base", resume=True, **CKPT_RUN)
    )
    text = "\n".join(lines)
    assert re.search(r"warning: checkpoint \S*ckpt-16 is unreadable", text), text
    assert re.search(r"resumed from \S*ckpt-15 at global step 15\b", text), text
    assert result.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(result.history["val_loss"], straight["val_loss"], atol=1e-4)
    assert result.history["loss"][2] == pytest.approx(straight["loss"][2], abs=1e-4)
    # ckpt-16 was written again, whole; every kept checkpoint reads back.
    assert proc_util.checkpoint_steps(checkpoints) == [18, 21, 24]
    for prefix in proc_util.listed_checkpoints(checkpoints):
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # checks the stored checksum


@pytest.mark.slow
def test_all_checkpoints_corrupt_is_one_clear_error_and_changes_nothing(checkpointed, tmp_path):
    run_dir, _ = checkpointed
    logdir = _copy_run(run_dir, tmp_path)
    checkpoints = logdir / "base" / "checkpoints"
    os.truncate(checkpoints / "ckpt-12.data-00000-of-00001", 100)  # cut short
    _garble(checkpoints / "ckpt-15.index")
    _garble(checkpoints / "ckpt-16.data-00000-of-00001")
    before = snapshot(tmp_path)
    process = proc_util.run(
        [
            "--resume",
            "--run_name=base",
            f"--logdir={logdir}",
            "--num_examples=250",
            "--max_len=60",
            "--num_words=1000",
            "--epochs=3",
            "--verbose=0",
        ],
        cwd=tmp_path,
    )
    assert_one_error_line(process, "--resume", "no usable checkpoint")
    assert process.stdout.count("is unreadable") == 3, process.stdout
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_resume_after_a_crash_that_cut_an_event_record_short(
    checkpointed, tmp_path, tiny_config, run_train
):
    run_dir, straight = checkpointed
    logdir = _copy_run(run_dir, tmp_path)
    (event_file,) = (logdir / "base" / "train").glob("events.out.tfevents.*")
    os.truncate(event_file, event_file.stat().st_size - 7)  # a record torn by the crash
    result, _ = run_train(tiny_config(logdir, epochs=3, run_name="base", resume=True, **CKPT_RUN))
    assert result.history["epoch"] == [1, 2, 3]
    steps = events.read(logdir / "base" / "train").steps("epoch_loss")
    assert sorted(steps) == [1, 2, 3]


# --- 4: a diverging learning rate -----------------------------------------------------------


def _assert_checkpoints_finite(checkpoints: Path, below_step: int) -> list:
    steps = proc_util.checkpoint_steps(checkpoints)
    assert steps and max(steps) < below_step, (steps, below_step)
    for step in steps:
        assert proc_util.nonfinite_variables(checkpoints / f"ckpt-{step}") == [], step
    return steps


@pytest.mark.slow
def test_diverging_learning_rate_stops_naming_the_step(tmp_path):
    process = proc_util.run(
        [
            "--mode=tape",
            "--optimizer=sgd",
            "--learning_rate=1e6",
            "--epochs=2",
            "--num_examples=250",
            "--max_len=40",
            "--num_words=1000",
            "--checkpoint_every_steps=1",
            "--keep_checkpoints=20",
            "--verbose=0",
            "--logdir=logs",
            "--run_name=nan",
        ],
        cwd=tmp_path,
    )
    assert process.returncode == 1, process.stderr[-3000:]
    assert "Traceback" not in process.stderr + process.stdout
    lines = harness_lines(process.stderr)
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), lines
    match = re.search(r"loss became (nan|inf|-inf) at global step (\d+)", lines[0])
    assert match, lines[0]
    assert "--learning_rate" in lines[0]  # says how to fix it
    run_dir = tmp_path / "logs" / "nan"
    _assert_checkpoints_finite(run_dir / "checkpoints", below_step=int(match.group(2)))
    assert not (run_dir / "best.keras").exists()  # no epoch ever ended


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_nan_after_a_good_epoch_keeps_its_checkpoints_and_best_model(
    mode, make_config, run_train, logdir
):
    """SGD at a sane rate for epoch 1; then the 'halving' multiplies it by 1e9."""
    config = make_config(
        mode=mode,
        optimizer="sgd",
        learning_rate=0.1,
        epochs=3,
        lr_halve_epochs=(2,),
        lr_halve_factor=1e9,
        run_name="nan",
        checkpoint_every_steps=1,
        keep_checkpoints=100,
        histogram_freq=0,
    )
    with pytest.raises(HarnessError, match=r"loss became \S+ at global step \d+") as error:
        run_train(config)
    assert not isinstance(error.value, UsageError)
    step = int(re.search(r"global step (\d+)", str(error.value)).group(1))
    assert 8 < step <= 16  # in epoch 2
    run_dir = logdir / "nan"
    steps = _assert_checkpoints_finite(run_dir / "checkpoints", below_step=step)
    assert steps == list(range(0, step))  # step 0: saved before training
    history = read_json(run_dir / "history.json")
    assert history["epoch"] == [1]
    model = keras.saving.load_model(run_dir / "best.keras", safe_mode=True)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    splits = data.synthetic(
        num_examples=config.num_examples,
        num_words=config.num_words,
        max_len=config.max_len,
        num_classes=46,
        seed=config.seed,
    )
    loss = model.evaluate(splits.x_val, splits.y_val, batch_size=32, verbose=0, return_dict=True)[
        "loss"
    ]
    assert loss == pytest.approx(history["val_loss"][0], abs=1e-4)  # epoch 1's model


def test_nan_weights_from_a_finite_loss_step_are_never_checkpointed(make_config, run_train, logdir):
    config = make_config(
        mode="tape",
        optimizer="adam",
        learning_rate=1e8,
        epochs=2,
        max_len=40,
        run_name="nan",
        checkpoint_every_steps=1,
        keep_checkpoints=100,
        lr_halve_epochs=(),
        histogram_freq=0,
    )
    with pytest.raises(HarnessError, match=r"global step (\d+)") as error:
        run_train(config)
    step = int(re.search(r"global step (\d+)", str(error.value)).group(1))
    checkpoints = logdir / "nan" / "checkpoints"
    for saved in proc_util.checkpoint_steps(checkpoints):
        assert proc_util.nonfinite_variables(checkpoints / f"ckpt-{saved}") == [], (
            f"ckpt-{saved} holds NaN/Inf; the NaN loss was reported at step {step}"
        )


# --- 5: bad input ---------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding an earlier run, logs/old/, that must survive."""
    work = tmp_path / "work"
    run_dir = work / "logs" / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "train").mkdir()
    (run_dir / "flags.json").write_text('{"model": "sequential"}\n')
    (run_dir / "history.json").write_text('{"epoch": [1]}\n')
    (run_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-8"\n')
    (run_dir / "train" / "events.out.tfevents.1.host.1.v2").write_bytes(b"\0" * 64)
    return work


PRE_TF_BAD_FLAGS = [
    (["--validation_steps=-1"], ["--validation_steps=-1", "greater than 0"]),
    (["--steps_per_execution=-1"], ["--steps_per_execution=-1"]),
    (["--steps_per_execution=-2"], ["--steps_per_execution=-2"]),
    (["--keep_checkpoints=0"], ["--keep_checkpoints=0"]),
    (["--keep_checkpoints=-1"], ["--keep_checkpoints=-1"]),
    (["--profile_steps=5"], ["--profile_steps='5'", "START,STOP"]),
    (["--profile_steps=a,b"], ["--profile_steps='a,b'"]),
    (["--profile_steps=5,3"], ["--profile_steps='5,3'", "START must be <= STOP"]),
    (["--profile_steps=1,5;4,8"], ["--profile_steps='1,5;4,8'", "overlap"]),
    (["--profile_steps=0,3"], ["--profile_steps='0,3'", "1-based"]),
    (["--logdir=logs/old/flags.json"], ["--logdir='logs/old/flags.json'", "cannot be written"]),
]


@pytest.mark.parametrize(
    "args, fragments", PRE_TF_BAD_FLAGS, ids=[" ".join(a) for a, _ in PRE_TF_BAD_FLAGS]
)
def test_bad_flag_is_one_line_exit_2_and_changes_nothing(args, fragments, workdir):
    before = snapshot(workdir)
    # --overwrite: a check done too late would delete logs/old.
    process = proc_util.run(["--run_name=old", "--overwrite", *args], cwd=workdir, timeout=60)
    assert_one_error_line(process, *fragments)
    assert snapshot(workdir) == before


def _can_mount_read_only(folder: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f"mount --bind {folder} {folder} && "
            f"mount -o remount,bind,ro {folder} && ! touch {folder}/probe",
        ],
        capture_output=True,
    )
    return probe.returncode == 0 and not (folder / "probe").exists()


def test_read_only_logdir_is_one_line_exit_2(workdir):
    """A log directory on a read-only mount (root may write anywhere else)."""
    logs = workdir / "logs"
    if not _can_mount_read_only(logs):
        pytest.skip("cannot make a read-only bind mount here (needs unshare and mount rights)")
    before = snapshot(workdir)
    script = (
        f"mount --bind {logs} {logs} && mount -o remount,bind,ro {logs} && "
        f"exec {shlex.quote(sys.executable)} -m harness.run --logdir=logs "
        "--run_name=new --epochs=1 --num_examples=100 --max_len=40"
    )
    process = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        cwd=workdir,
        env=proc_util.harness_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(process, "--logdir='logs'", "cannot be written")
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_logdir_that_access_checks_cannot_predict_is_one_line_exit_2(workdir):
    before = snapshot(workdir)
    process = proc_util.run(
        [
            "--logdir=/proc/harness-logs",
            "--run_name=new",
            "--epochs=1",
            "--num_examples=100",
            "--max_len=40",
            "--verbose=0",
        ],
        cwd=workdir,
        timeout=120,
    )
    assert_one_error_line(process, "--logdir='/proc/harness-logs'")
    assert snapshot(workdir) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_config, run_train) -> Path:
    """A finished 1-epoch tiny run, logs/done (copy it before use)."""
    work = tmp_path_factory.mktemp("finished")
    result, _ = run_train(tiny_config(work / "logs", run_name="done", histogram_freq=0))
    return Path(result.run_dir)


# Post-TF usage errors, each in its own subprocess, all at once.
TINY_FLAGS = [
    "--num_examples=250",
    "--max_len=60",
    "--num_words=1000",
    "--verbose=0",
    "--logdir=logs",
    *proc_util.OBSERVERS_OFF_FLAGS,
]
POST_TF_BAD = {
    "resume-other-dataset": (
        ["--resume", "--run_name=done", "--dataset=imdb", "--epochs=2"],
        ["--resume", "--dataset='imdb'", "contradicts"],
    ),
    "resume-other-model": (
        ["--resume", "--run_name=done", "--model=subclass", "--epochs=2"],
        ["--resume", "--model='subclass'", "contradicts"],
    ),
    "resume-other-seed": (
        ["--resume", "--run_name=done", "--seed=7", "--epochs=2"],
        ["--resume", "--seed=7", "contradicts"],
    ),
    "resume-no-checkpoints": (
        ["--resume", "--run_name=nockpt", "--epochs=2"],
        ["--resume", "no usable checkpoint", "records 1 epochs"],
    ),
    "model-does-not-import": (
        ["--model=tests.no_such_module:build", "--run_name=new"],
        ["--model='tests.no_such_module:build'", "does not import"],
    ),
    "model-not-a-model": (
        ["--model=tests.user_models:not_a_model", "--run_name=new"],
        ["--model='tests.user_models:not_a_model'", "not a keras.Model"],
    ),
    "monitor-unknown": (
        ["--monitor=val_auc", "--run_name=new"],
        ["--monitor='val_auc'", "val_loss"],
    ),
}


@pytest.fixture(scope="module")
def post_tf_errors(tmp_path_factory, finished_run):
    """{case: (CompletedProcess-like, snapshot before, snapshot after)}."""
    results, processes = {}, {}
    try:
        for case, (args, _) in POST_TF_BAD.items():
            work = tmp_path_factory.mktemp(case)
            shutil.copytree(finished_run, work / "logs" / "done")
            # A run killed before its first checkpoint: flags and events, no checkpoints.
            shutil.copytree(
                finished_run,
                work / "logs" / "nockpt",
                ignore=shutil.ignore_patterns("checkpoints", "best.keras"),
            )
            before = snapshot(work)
            processes[case] = (Harness([*TINY_FLAGS, *args], work, name="out"), before)
        for case, (process, before) in processes.items():
            code = process.wait(timeout=150)
            for name in ("out.stdout", "out.stderr"):
                before.pop(name, None)
            after = {
                k: v
                for k, v in snapshot(process.cwd).items()
                if k not in ("out.stdout", "out.stderr")
            }
            results[case] = (
                subprocess.CompletedProcess(process.args, code, process.stdout, process.stderr),
                before,
                after,
            )
    finally:
        for process, _ in processes.values():
            process.kill()
    return results


@pytest.mark.parametrize("case", sorted(POST_TF_BAD))
@pytest.mark.slow
def test_usage_error_after_tf_import_is_one_line_exit_2_and_changes_nothing(post_tf_errors, case):
    process, before, after = post_tf_errors[case]
    assert_one_error_line(process, *POST_TF_BAD[case][1])
    assert after == before


def test_data_dir_that_is_a_file_is_a_usage_error(tmp_path, make_config, run_train, logdir):
    a_file = tmp_path / "reuters.npz"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(UsageError, match=r"--data_dir=.*is not a folder"):
        run_train(make_config(dataset="reuters", data_dir=str(a_file)))
    assert not logdir.exists()
    assert a_file.read_bytes() == b"not a folder"


def test_resume_with_an_empty_checkpoint_folder_is_a_usage_error(
    finished_run, tmp_path, tiny_config, run_train
):
    logdir = tmp_path / "logs"
    shutil.copytree(finished_run, logdir / "done")
    for path in (logdir / "done" / "checkpoints").iterdir():
        path.unlink()
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="--resume: no usable checkpoint"):
        run_train(tiny_config(logdir, run_name="done", resume=True, epochs=2, histogram_freq=0))
    assert snapshot(tmp_path) == before


def test_same_size_data_file_failing_its_hash_is_a_usage_error(
    reuters_npz, tmp_path, offline, make_config, run_train, logdir
):
    folder = tmp_path / "tampered"
    folder.mkdir()
    content = bytearray(reuters_npz.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(b ^ 0xFF for b in content[middle : middle + 16])
    (folder / "reuters.npz").write_bytes(bytes(content))
    with pytest.raises(UsageError, match="hash check"):
        run_train(make_config(dataset="reuters", data_dir=str(folder), max_len=40))
    assert not logdir.exists()
    assert (folder / "reuters.npz").read_bytes() == bytes(content)
    assert sorted(p.name for p in folder.iterdir()) == ["reuters.npz"]


# --- 6: safe by default ---------------------------------------------------------------------


class _WritesMarker:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def test_tampered_data_file_is_never_unpickled(tmp_path, offline, make_config, run_train, logdir):
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    payload = pickle.dumps(_WritesMarker(marker))
    (folder / "reuters.npz").write_bytes(payload)
    with pytest.raises(UsageError, match="hash check"):
        run_train(make_config(dataset="reuters", data_dir=str(folder), max_len=40))
    assert not marker.exists(), "the harness unpickled a file that failed its hash check"
    assert not logdir.exists()
    assert (folder / "reuters.npz").read_bytes() == payload
    # The file is a real exploit: loading it the way the Keras loader would, had
    # it skipped the hash check, runs its code.
    np.load(folder / "reuters.npz", allow_pickle=True)
    assert marker.read_text() == "unpickled"
