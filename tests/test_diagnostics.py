"""`--diagnostics_freq`: per-layer health (callbacks/diagnostics.py), read back from real runs.

One module fixture trains tiny runs: the sequential model for 2 epochs in each loop
(`fit`, `train_on_batch`, `tape`), the functional model for 2 epochs with
`--diagnostics_freq=2` and the subclassed model for 1 epoch. The tests read the
`train/` event files and recompute what they hold from the checkpoints (one at step 0
and one at every epoch end): the update ratios from the weights at both ends of an
epoch, the dead-ReLU fractions from the final model on the probe batch. Plus unit
tests of the functions behind them on hand-made arrays.

Real TensorFlow, no mocks. About 25 s on an idle 2-core CPU.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import models, sources, task
from harness.callbacks.diagnostics import (
    ACTIVATIONS,
    DEAD_RELU,
    GRADIENT_NORM,
    UPDATE_RATIO,
    dead_fraction,
    ends_in_relu,
    update_ratio,
)
from harness.callbacks.events import histogram_count, read

MODES = ("fit", "train_on_batch", "tape")
PROBE = 32
EPOCHS = 2
STEPS_PER_EPOCH = math.ceil(250 / PROBE)  # 8: the conftest's tiny data, batch 32
SUBCLASS_LINE = (
    "harness: activations of subclass cannot be reached (a subclassed model); "
    "gradient norms and update ratios are still written"
)
# Everything else that costs time per epoch is off: these runs are about health alone.
QUIET = dict(
    histogram_freq=0, embeddings_freq=0, eval_figures_freq=0, diagnostics_freq=1, epochs=EPOCHS
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config, run_train):
    """{name: (config, Result, console lines)}."""
    logdir = tmp_path_factory.mktemp("diagnostics")
    plans = {mode: dict(mode=mode) for mode in MODES}
    plans["functional"] = dict(mode="tape", model="functional", diagnostics_freq=2)
    plans["subclass"] = dict(mode="fit", model="subclass", epochs=1)
    found = {}
    for name, options in plans.items():
        config = tiny_config(logdir, **{**QUIET, "run_name": name, **options})
        found[name] = (config, *run_train(config))
    return found


def _train_summaries(result):
    return read(f"{result.run_dir}/train")


def _restored(config, result, step: int) -> keras.Model:
    """The run's model with the weights of its checkpoint at global `step`, built in a
    fresh Keras session as the run was (so the variables have the run's paths)."""
    keras.backend.clear_session()
    splits = sources.load(config)
    model = models.build(
        config.model,
        splits.input_spec(),
        task.SingleOutput(splits.num_classes, splits.targets),
        config.num_words,
        splits.features(),
    )
    prefix = f"{result.run_dir}/checkpoints/ckpt-{step}"
    tf.train.Checkpoint(model=model).restore(
        prefix
    ).expect_partial().assert_existing_objects_matched()
    return model


def _weights(config, result, step: int) -> dict:
    """{variable path: array} of the trainable weights at global `step`."""
    model = _restored(config, result, step)
    return {v.path: np.array(v.numpy(), np.float64) for v in model.trainable_variables}


def _due(config) -> list:
    """The epochs (1-based) whose health is written."""
    return [e for e in range(1, config.epochs + 1) if e % config.diagnostics_freq == 0]


def _scalar(summaries, tag: str) -> dict:
    values = dict(summaries.scalars(tag))
    assert len(values) == len(summaries.scalars(tag)), f"{tag}: a step written twice"
    return values


# --- Unit tests -------------------------------------------------------------------------


def test_dead_fraction_counts_units_over_the_last_axis():
    # 2 examples x 3 positions x 4 units.
    values = np.zeros((2, 3, 4))
    values[..., 0] = -1.0  # dead: never above 0
    values[1, 2, 1] = 0.5  # alive in one example at one position
    values[..., 2] = 2.0  # alive everywhere
    # unit 3: exactly 0 everywhere, dead
    assert dead_fraction(values) == 0.5
    assert dead_fraction(np.array([[0.0, 1.0], [0.0, 0.0]])) == 0.5
    assert dead_fraction(np.ones((5, 3))) == 0.0
    assert dead_fraction(-np.ones((5, 3))) == 1.0


def test_relu_layers_and_update_ratio():
    assert ends_in_relu(keras.layers.Dense(3, activation="relu"))
    assert ends_in_relu(keras.layers.Conv1D(3, 2, activation="relu"))
    assert ends_in_relu(keras.layers.Activation("relu"))
    assert ends_in_relu(keras.layers.ReLU())
    assert not ends_in_relu(keras.layers.ReLU(negative_slope=0.1))
    assert not ends_in_relu(keras.layers.Dense(3, activation="softmax"))
    assert not ends_in_relu(keras.layers.MaxPool1D(2))
    assert update_ratio(np.array([3.0, 4.0]), np.array([3.0, 5.0])) == pytest.approx(0.2)
    assert update_ratio(np.zeros(3), np.array([0.0, 2.0, 0.0])) == 1.0  # a zero start
    assert update_ratio(np.zeros(3), np.zeros(3)) == 0.0


# --- Real runs --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", [*MODES, "functional", "subclass"])
def test_every_variable_has_a_gradient_norm_and_update_ratio(runs, name):
    config, result, _ = runs[name]
    summaries = _train_summaries(result)
    paths = list(_weights(config, result, 0))
    due = _due(config)
    for path in paths:
        assert sorted(_scalar(summaries, f"{GRADIENT_NORM}/{path}")) == due, path
        assert sorted(_scalar(summaries, f"{UPDATE_RATIO}/{path}")) == due, path
    written = {t for t in summaries.tensors if t.startswith((GRADIENT_NORM, UPDATE_RATIO))}
    expected = {f"{kind}/{path}" for kind in (GRADIENT_NORM, UPDATE_RATIO) for path in paths}
    assert written == expected | {GRADIENT_NORM}
    overall = _scalar(summaries, GRADIENT_NORM)
    assert sorted(overall) == due
    for step in due:
        parts = [_scalar(summaries, f"{GRADIENT_NORM}/{path}")[step] for path in paths]
        assert all(np.isfinite(parts)) and max(parts) > 0
        assert overall[step] == pytest.approx(math.sqrt(sum(p * p for p in parts)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fit", "functional"])
def test_update_ratio_matches_the_checkpoints(runs, name):
    config, result, _ = runs[name]
    summaries = _train_summaries(result)
    due = _due(config)
    for epoch in due:
        start = _weights(config, result, (epoch - 1) * STEPS_PER_EPOCH)
        end = _weights(config, result, epoch * STEPS_PER_EPOCH)
        for path, before in start.items():
            change = np.linalg.norm(end[path] - before)
            size = np.linalg.norm(before) or np.linalg.norm(end[path])  # a zero bias: / |end|
            written = _scalar(summaries, f"{UPDATE_RATIO}/{path}")[epoch]
            assert written == pytest.approx(change / size, rel=1e-4, abs=1e-7), (epoch, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fit", "functional"])
def test_activations_and_dead_relus_match_the_final_model(runs, name):
    config, result, _ = runs[name]
    summaries = _train_summaries(result)
    model = _restored(config, result, config.epochs * STEPS_PER_EPOCH)
    x_probe = sources.load(config).probe(PROBE)[0]
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    outputs = keras.Model(model.inputs[0], [layer.output for layer in layers])(x_probe)
    relus = 0
    for layer, output in zip(layers, outputs):
        output = np.asarray(output)
        histograms = summaries.histograms(f"{ACTIVATIONS}/{layer.name}")
        assert [step for step, _ in histograms] == _due(config), layer.name
        assert histogram_count(histograms[-1][1]) == output.size, layer.name
        dead = _scalar(summaries, f"{DEAD_RELU}/{layer.name}")
        if not ends_in_relu(layer):
            assert not dead, layer.name
            continue
        relus += 1
        assert all(0.0 <= value <= 1.0 for value in dead.values())
        units = output.shape[-1]
        recomputed = np.all(output <= 0, axis=tuple(range(output.ndim - 1))).mean()
        # A unit whose largest output is a rounding error from 0 may flip; one at most.
        assert dead[config.epochs] == pytest.approx(recomputed, abs=1.0 / units + 1e-9), layer.name
    assert relus >= 2
    if name == "functional":  # this model has dead units by epoch 2; 0 == 0 proves little
        assert (
            max(
                _scalar(summaries, f"{DEAD_RELU}/{layer.name}")[2]
                for layer in layers
                if ends_in_relu(layer)
            )
            > 0
        )


@pytest.mark.slow
def test_the_three_loops_write_the_same_health_tags(runs):
    tags = {
        mode: {t for t in _train_summaries(runs[mode][1]).tensors if t.startswith("health/")}
        for mode in MODES
    }
    assert tags["fit"] == tags["train_on_batch"] == tags["tape"]
    assert any(t.startswith(ACTIVATIONS) for t in tags["fit"])
    assert any(t.startswith(DEAD_RELU) for t in tags["fit"])
    for mode in MODES:  # epoch summaries: the same steps in every loop
        summaries = _train_summaries(runs[mode][1])
        assert {tuple(summaries.steps(t)) for t in tags[mode]} == {(1, 2)}, mode
    assert not any("activations" in line for mode in MODES for line in runs[mode][2])


@pytest.mark.slow
def test_a_subclassed_model_says_so_once_and_still_gets_norms(runs):
    config, result, lines = runs["subclass"]
    assert [line for line in lines if "activations" in line] == [SUBCLASS_LINE]
    summaries = _train_summaries(result)
    assert not [t for t in summaries.tensors if t.startswith((ACTIVATIONS, DEAD_RELU))]
    assert _scalar(summaries, GRADIENT_NORM)[1] > 0
