"""`--lr_schedule` and `--warmup_steps`: cosine decay with warmup, stopped in the middle
of an epoch and resumed, equals an uninterrupted run in every loop (rates per step and
per epoch, weights), and TensorBoard shows the formula's rates; a plateau cut carries
its state across a resume; options of another schedule are one-line usage errors."""

import math
import os
import signal

import keras
import numpy as np
import pytest
from proc_util import OBSERVERS_OFF_FLAGS, assert_one_error_line
from proc_util import run as run_harness

from harness import train
from harness.callbacks.events import read
from harness.callbacks.lr_schedule import StepSchedule, plateau_state
from harness.errors import RunInterrupted

MODES = ("fit", "train_on_batch", "tape")
RATE, WARMUP, EPOCHS, STEPS_PER_EPOCH = 1e-3, 6, 2, 8  # TINY: 8 steps per epoch
# Batch summaries every 4 steps: tape runs 4 steps per compiled call.
COSINE = dict(lr_schedule="cosine", warmup_steps=WARMUP, epochs=EPOCHS, summary_every_steps=4)


def cosine_rate(step: int) -> float:
    """The rate of the step after `step` steps: linear warmup x cosine to 0."""
    total = EPOCHS * STEPS_PER_EPOCH
    warmup = min(1.0, (step + 1) / WARMUP)
    return RATE * warmup * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


class StopAt(keras.callbacks.Callback):
    """Sends SIGINT after the first batch that reaches step 10 (mid epoch 2)."""

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= 10:
            os.kill(os.getpid(), signal.SIGINT)


class LastWeights(keras.callbacks.Callback):
    def __init__(self, into: dict, name: str) -> None:
        super().__init__()
        self.into, self.name = into, name

    def on_train_end(self, logs=None):
        self.into[self.name] = self.model.get_weights()


def scalars(run_dir: str, tag: str) -> list:
    return read(f"{run_dir}/train").scalars(tag)


def test_step_schedule_is_warmup_times_cosine_times_scale():
    schedule = StepSchedule(RATE, WARMUP, EPOCHS * STEPS_PER_EPOCH)
    for step in (0, 3, 5, 6, 11, 16, 20):
        assert float(schedule(step)) == pytest.approx(cosine_rate(step), rel=1e-5, abs=1e-9)
    schedule.scale.assign(0.5)
    assert float(schedule(8)) == pytest.approx(0.5 * cosine_rate(8), rel=1e-5)
    assert float(StepSchedule(RATE, warmup_steps=4)(100)) == pytest.approx(RATE)


def test_plateau_state_counts_since_the_best_or_the_last_cut():
    assert plateau_state([], False, 2) == (None, 0)
    assert plateau_state([3.0, 2.0, 2.5], False, 2) == (2.0, 1)
    assert plateau_state([3.0, 2.0, 2.5, 2.6], False, 2) == (2.0, 0)  # cut after epoch 4
    assert plateau_state([3.0, 2.0, 2.5, 2.6, 2.7], False, 2) == (2.0, 1)
    assert plateau_state([0.5, math.nan, 0.4], True, 1) == (0.5, 0)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--lr_schedule=cosine", "--lr_halve_epochs=3"], "--lr_halve_epochs applies with"),
        (["--lr_schedule=cosine", "--lr_halve_factor=0.2"], "--lr_schedule=halve or plateau"),
        (["--lr_plateau_patience=3"], "--lr_plateau_patience applies with --lr_schedule=plateau"),
        (["--lr_schedule=step"], "--lr_schedule='step'"),
        (["--warmup_steps=-1"], "--warmup_steps=-1"),
    ],
)
def test_options_of_another_schedule_are_usage_errors(tmp_path, flags, fragment):
    logdir = tmp_path / "logs"
    process = run_harness([f"--logdir={logdir}", *OBSERVERS_OFF_FLAGS, *flags], cwd=tmp_path)
    assert_one_error_line(process, fragment)
    assert not logdir.exists()


@pytest.fixture(scope="module")
def cosine_runs(tiny_config, tmp_path_factory) -> dict:
    """Per loop: an uninterrupted cosine+warmup run, and one stopped at step 10
    (12 in tape: its calls run 4 steps) and resumed; {mode: {name: (run_dir, weights)}}."""
    logdir = tmp_path_factory.mktemp("lr") / "logs"
    runs, interrupted = {}, []
    for mode in MODES:
        weights: dict = {}
        dirs = {}
        for name in ("straight", "stopped"):
            keras.backend.clear_session()
            config = tiny_config(logdir, mode=mode, run_name=f"{mode}-{name}", **COSINE)
            callbacks = [LastWeights(weights, name)]
            try:
                result = train(
                    config,
                    print_fn=lambda line: None,
                    callbacks=[*callbacks, StopAt()] if name == "stopped" else callbacks,
                )
            except RunInterrupted:
                interrupted.append(mode)
                keras.backend.clear_session()
                resumed = tiny_config(
                    logdir, mode=mode, run_name=f"{mode}-{name}", resume=True, **COSINE
                )
                result = train(resumed, print_fn=lambda line: None, callbacks=callbacks)
            dirs[name] = result.run_dir
        runs[mode] = {name: (dirs[name], weights[name]) for name in dirs}
    assert interrupted == list(MODES)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_cosine_with_warmup_resumed_mid_epoch_equals_uninterrupted(cosine_runs, mode):
    (straight_dir, straight), (stopped_dir, stopped) = cosine_runs[mode].values()
    assert scalars(stopped_dir, "batch_learning_rate")  # it was stopped, then resumed
    for tag in ("epoch_learning_rate", "batch_learning_rate"):
        expected, got = scalars(straight_dir, tag), scalars(stopped_dir, tag)
        assert [step for step, _ in got] == [step for step, _ in expected], tag
        np.testing.assert_allclose([r for _, r in got], [r for _, r in expected], rtol=1e-6)
    for a, b in zip(stopped, straight):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_rate_changes_every_step_inside_a_compiled_call(cosine_runs):
    """tape runs 4 steps per call, train_on_batch one: the same weights."""
    one_per_call = cosine_runs["train_on_batch"]["straight"][1]
    for mode in ("fit", "tape"):
        for a, b in zip(cosine_runs[mode]["straight"][1], one_per_call):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_tensorboard_shows_the_schedules_rate_at_each_logged_step(cosine_runs, mode):
    run_dir = cosine_runs[mode]["straight"][0]
    batch = scalars(run_dir, "batch_learning_rate")
    assert [step for step, _ in batch] == [4, 8, 12, 16]
    np.testing.assert_allclose(
        [rate for _, rate in batch], [cosine_rate(s) for s, _ in batch], rtol=1e-5, atol=1e-9
    )
    epochs = scalars(run_dir, "epoch_learning_rate")  # at the epoch's last step
    np.testing.assert_allclose(
        [rate for _, rate in epochs], [cosine_rate(8), cosine_rate(16)], rtol=1e-5, atol=1e-9
    )


@pytest.mark.slow
def test_plateau_cut_carries_its_state_across_a_resume(make_config, load_json):
    """A rate high enough that the validation loss never improves after epoch 1: with a
    patience of 1 the rate is cut after epochs 2, 3 and 4. Resumed after epoch 2, the
    run goes on from the cut rate (warmup makes it a schedule: its checkpointed scale)
    and knows the best value, so it cuts after epoch 3 too."""
    options = dict(
        mode="train_on_batch",
        lr_schedule="plateau",
        lr_plateau_patience=1,
        learning_rate=0.05,
        epochs=4,
        warmup_steps=4,
    )
    results = {}
    for name, epochs in (("straight", 4), ("split", 2), ("split", 4)):
        keras.backend.clear_session()
        resume = name == "split" and epochs == 4
        config = make_config(run_name=name, **{**options, "epochs": epochs}, resume=resume)
        results[name] = train(config, print_fn=lambda line: None)
    straight, split = results["straight"], results["split"]
    rates = [rate for _, rate in scalars(straight.run_dir, "epoch_learning_rate")]
    assert rates == pytest.approx([0.05, 0.05, 0.025, 0.0125]), rates
    np.testing.assert_allclose(
        [rate for _, rate in scalars(split.run_dir, "epoch_learning_rate")], rates, rtol=1e-6
    )
    np.testing.assert_allclose(split.history["val_loss"], straight.history["val_loss"], rtol=1e-5)
    assert load_json(f"{split.run_dir}/history.json")["epoch"] == [1, 2, 3, 4]
