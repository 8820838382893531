"""`--early_stopping_patience`: real tiny runs in every loop stop where the patience
says, resume to the same stop, restore the best model's weights on request, and
refuse to resume a run that stopped early; `patience_state` on hand-made values."""

import math

import keras
import numpy as np
import pytest

from harness import train
from harness.callbacks.early_stopping import patience_state
from harness.errors import UsageError

MODES = ("fit", "train_on_batch", "tape")
# A delta no epoch improves by: epoch 1 sets the best, then every epoch waits.
NEVER_ENOUGH = dict(early_stopping_patience=2, early_stopping_min_delta=100.0)


def test_patience_state_counts_epochs_since_the_best():
    assert patience_state([], False, 0.0) == (None, 0)
    assert patience_state([3.0, 2.0, 2.5, 2.4], False, 0.0) == (2.0, 2)
    assert patience_state([3.0, 2.95, 2.0], False, 0.1) == (2.0, 0)
    assert patience_state([3.0, 2.95], False, 0.1) == (3.0, 1)  # not by more than 0.1
    assert patience_state([0.5, 0.7, math.nan], True, 0.0) == (0.7, 1)  # NaN never improves


def test_min_delta_without_patience_is_a_usage_error(make_config):
    with pytest.raises(UsageError, match="--early_stopping_patience"):
        make_config(early_stopping_min_delta=0.1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_stops_resumes_to_the_same_stop_and_refuses_to_go_on(make_config, run_train, mode):
    keras.backend.clear_session()
    straight, lines = run_train(
        make_config(mode=mode, run_name="straight", epochs=8, **NEVER_ENOUGH)
    )
    assert straight.history["epoch"] == [1, 2, 3]
    assert any("Epoch 3: early stopping: val_loss has not improved" in line for line in lines)
    keras.backend.clear_session()
    run_train(make_config(mode=mode, run_name="split", epochs=2, **NEVER_ENOUGH))
    keras.backend.clear_session()
    resumed, _ = run_train(
        make_config(mode=mode, run_name="split", epochs=8, resume=True, **NEVER_ENOUGH)
    )
    assert resumed.history["epoch"] == [1, 2, 3]  # the patience carried over
    np.testing.assert_allclose(resumed.history["val_loss"], straight.history["val_loss"], atol=1e-4)
    keras.backend.clear_session()
    with pytest.raises(UsageError, match="stopped early after epoch 3"):
        run_train(make_config(mode=mode, run_name="split", epochs=8, resume=True, **NEVER_ENOUGH))


@pytest.mark.slow
def test_restores_the_best_models_weights(make_config):
    keras.backend.clear_session()
    config = make_config(
        mode="tape",
        run_name="restore",
        epochs=8,
        learning_rate=0.05,  # the validation loss gets worse after the first epochs
        early_stopping_restore_best=True,
        **NEVER_ENOUGH,
    )
    lines = []
    seen = {}

    class LastWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen["weights"] = [w.copy() for w in self.model.get_weights()]

    result = train(config, print_fn=lines.append, callbacks=[LastWeights()])
    assert any("the best model's weights are restored" in line for line in lines)
    val_loss = result.history["val_loss"]
    assert int(np.argmin(val_loss)) < len(val_loss) - 1  # the last epoch was not the best
    best = keras.saving.load_model(f"{result.run_dir}/best.keras", compile=False)
    for restored, saved in zip(seen["weights"], best.get_weights()):
        np.testing.assert_array_equal(restored, saved)


@pytest.mark.parametrize("mode", ("fit", "tape"))
@pytest.mark.slow
def test_halving_keeps_a_users_learning_rate_callback(make_config, mode, tmp_path):
    """A user's ReduceLROnPlateau (x0.1 after epoch 2) stays: the halving of epoch 3
    multiplies the rate it left, it does not set the rate the halving alone gives."""
    from harness.callbacks.events import read

    keras.backend.clear_session()
    config = make_config(mode=mode, run_name="plateau", epochs=3, lr_halve_epochs=(3,))
    plateau = keras.callbacks.ReduceLROnPlateau(factor=0.1, patience=0, min_delta=100.0)
    result = train(config, print_fn=lambda line: None, callbacks=[plateau])
    rates = [rate for _, rate in read(f"{result.run_dir}/train").scalars("epoch_learning_rate")]
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3 * 0.1 * 0.5], rtol=1e-6)


@pytest.mark.slow
def test_a_run_stopped_inside_its_halving_epoch_is_not_halved_twice(make_config):
    """Stopped (SIGINT) in the middle of epoch 2, the halving epoch, and resumed: the
    rates per epoch and per step are those of an uninterrupted run."""
    import os
    import signal

    from harness.callbacks.events import read
    from harness.errors import RunInterrupted

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 11:  # epoch 2 has 8..15
                os.kill(os.getpid(), signal.SIGINT)

    options = dict(epochs=3, lr_halve_epochs=(2,), summary_every_steps=1, mode="tape")
    options.update(steps_per_execution=1)
    runs = {}
    for name in ("straight", "stopped"):
        keras.backend.clear_session()
        callbacks = [StopAt()] if name == "stopped" else []
        config = make_config(run_name=name, **options)
        try:
            runs[name] = train(config, print_fn=lambda line: None, callbacks=callbacks)
        except RunInterrupted:
            keras.backend.clear_session()
            resumed = make_config(run_name=name, resume=True, **options)
            runs[name] = train(resumed, print_fn=lambda line: None)
    assert set(runs) == {"straight", "stopped"}
    for tag in ("epoch_learning_rate", "batch_learning_rate"):
        straight, stopped = (
            read(f"{runs[name].run_dir}/train").scalars(tag) for name in ("straight", "stopped")
        )
        assert [step for step, _ in stopped] == [step for step, _ in straight], tag
        np.testing.assert_allclose([r for _, r in stopped], [r for _, r in straight], rtol=1e-6)
    epoch_rates = read(f"{runs['straight'].run_dir}/train").scalars("epoch_learning_rate")
    assert [rate for _, rate in epoch_rates] == pytest.approx([1e-3, 5e-4, 5e-4])
