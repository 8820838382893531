"""The Python API: `harness.train(config, model=..., data=...)` trains a user's own
model (a builder or a `keras.Model`, compiled or not) on a user's own arrays or
`tf.data.Dataset`s, in every loop, with resume, best model and export."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import Config, UsageError, train
from harness.config import MODES
from tests import user_data, user_models

EPOCHS = 2


def _config(logdir: Path, mode: str, run_name: str, **flags) -> Config:
    return Config(
        mode=mode, batch_size=32, verbose=0, logdir=str(logdir), run_name=run_name, **flags
    )


@pytest.fixture(scope="module", params=MODES)
def straight_and_resumed(request, shared_data, tmp_path_factory) -> tuple:
    """(straight Result, resumed Result) of a compiled custom-layer model on Boston
    housing arrays: EPOCHS epochs at once, and one epoch then a resume that exports."""
    mode = request.param
    logdir = tmp_path_factory.mktemp(f"api-{mode}")
    results = []
    for name, epochs, resume in (("straight", EPOCHS, False), ("r", 1, False), ("r", EPOCHS, True)):
        config = _config(logdir, mode, name, epochs=epochs, resume=resume, export=resume)
        results.append(
            train(
                config,
                print_fn=lambda s: None,
                model=user_models.compiled_regressor,
                data=user_data.boston(),
            )
        )
    return results[0], results[2]


@pytest.mark.slow
def test_a_compiled_custom_model_trains_resumes_and_exports_in_every_loop(
    straight_and_resumed,
):
    straight, resumed = straight_and_resumed
    # The user's loss (Huber) and metric (mae) are what the run logs.
    assert set(straight.history) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    for key in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(resumed.history[key], straight.history[key], rtol=1e-5)
    assert straight.history["loss"][1] < straight.history["loss"][0]
    run_dir = Path(resumed.run_dir)
    flags = json.loads((run_dir / "flags.json").read_text())
    assert (flags["model"], flags["dataset"]) == ("given:compiled_regressor", "given:data")
    # best.keras loads back (the custom layer is registered) and the export serves it.
    best = keras.saving.load_model(run_dir / "best.keras", compile=False)
    # (by name: another test may have imported the module a second time, as `user_models`)
    assert "GatedDense" in [type(layer).__name__ for layer in best.layers]
    (_, _), (x_val, _) = user_data.boston()
    x = x_val[:5].astype(np.float32)
    loaded = tf.saved_model.load(str(run_dir / "saved_model"))
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, best.predict(x, verbose=0), atol=1e-4)


def test_a_model_instance_trains_on_datasets(tmp_path, run_train):
    """A built `keras.Model` (not compiled) on a pair of tf.data pipelines: the
    harness compiles it for the task the labels call for."""
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden), name="flat")
    lines = []
    result = train(
        _config(tmp_path, "tape", "instance", epochs=1, histogram_freq=0),
        print_fn=lines.append,
        model=model,
        data=user_data.digits_datasets(seed=1),
    )
    assert "(400 train / 100 validation, 10-class)" in "\n".join(lines)
    assert {"accuracy", "val_accuracy", "top5_accuracy"} <= set(result.history)
    flags = json.loads(Path(result.run_dir, "flags.json").read_text())
    assert flags["model"] == "given:flat"


@pytest.mark.parametrize(
    "given, fragments",
    [
        ({"data": [1, 2, 3]}, ["data= gave a list of 3", "tf.data.Datasets"]),
        (
            {"data": ((np.ones((8, 3)), np.ones(7)), (np.ones((2, 3)), np.ones(2)))},
            ["data=: the train arrays differ in length"],
        ),
        ({"model": keras.layers.Dense(1)}, ["model= is a Dense", "(input_spec, task)"]),
        (
            {"model": lambda input_spec, task: keras.layers.Dense(1)},
            ["model= returned Dense, not a keras.Model"],
        ),
        (
            {"model": lambda input_spec, task: keras.Sequential([keras.layers.Dense(3)])},
            ["model= outputs [batch, 3]", "regression"],
        ),
    ],
)
def test_bad_objects_are_one_clear_error_before_the_logdir(tmp_path, given, fragments):
    given = {"data": user_data.boston(), **given}
    with pytest.raises(UsageError) as raised:
        train(_config(tmp_path / "logs", "fit", "bad", epochs=1), print_fn=lambda s: None, **given)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "logs").exists()
