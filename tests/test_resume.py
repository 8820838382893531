"""Checkpoints and `resume`: a stopped run continues as if it had never stopped.

In every loop: 6 epochs straight vs 3 epochs then `resume=True` to 6 (same
run directory). The resumed run must give the same validation losses (1e-4),
a continuous history.json, TensorBoard curves with every step exactly once,
the learning-rate halving of epoch 2 still applied and that of epoch 5 applied
after the resume, the newest `keep_checkpoints` checkpoints, and a `best.keras`
that loads safely and is the best epoch's model. The runs use the subclassed
model, so loading `best.keras` needs harness.models' registered custom layers.

Real TensorFlow, no mocks. About 25 s on an idle 2-core CPU.
"""

import json
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness.models  # noqa: F401  (registers the custom layers for loading)
from harness import data, train
from harness.callbacks.events import read
from harness.config import Config

MODES = ("fit", "train_on_batch", "tape")
LR = 3e-3  # large enough that the loss moves a lot between epochs (the test has teeth)
HALVINGS = (2, 5)  # one before the stop at epoch 3, one after
KEEP = 2
EVERY = 3  # summary_every_steps
TINY = dict(
    model="subclass",
    num_examples=200,
    max_len=40,
    num_words=500,
    num_classes=5,
    batch_size=32,
    learning_rate=LR,
    lr_halve_epochs=HALVINGS,
    keep_checkpoints=KEEP,
    summary_every_steps=EVERY,
    histogram_freq=0,
    verbose=0,
)
STEPS_PER_EPOCH = math.ceil(TINY["num_examples"] / TINY["batch_size"])  # 7


def _rates(epochs: int) -> list:
    return [LR * 0.5 ** sum(1 for h in HALVINGS if h <= epoch) for epoch in range(1, epochs + 1)]


@pytest.fixture(scope="module", params=MODES)
def pair(request, tmp_path_factory):
    """(straight Result, resumed Result, resumed run's console) for one mode."""
    mode = request.param
    logdir = tmp_path_factory.mktemp(f"resume-{mode}")
    keras.backend.clear_session()
    straight = train(
        Config(mode=mode, epochs=6, logdir=str(logdir), run_name="straight", **TINY),
        print_fn=lambda s: None,
    )
    keras.backend.clear_session()
    first = train(
        Config(mode=mode, epochs=3, logdir=str(logdir), run_name="resumed", **TINY),
        print_fn=lambda s: None,
    )
    assert first.history["epoch"] == [1, 2, 3]
    console = []
    keras.backend.clear_session()
    resumed = train(
        Config(mode=mode, epochs=6, resume=True, logdir=str(logdir), run_name="resumed", **TINY),
        print_fn=console.append,
    )
    assert resumed.run_dir == first.run_dir
    return straight, resumed, console


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(pair):
    straight, resumed, _ = pair
    assert resumed.history["epoch"] == list(range(1, 7))
    assert resumed.history["val_loss"][-1] == pytest.approx(
        straight.history["val_loss"][-1], abs=1e-4
    )
    np.testing.assert_allclose(resumed.history["val_loss"], straight.history["val_loss"], atol=1e-4)
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], atol=1e-4)
    # The comparison means something: the loss moved far more than the tolerance.
    assert abs(straight.history["val_loss"][-1] - straight.history["val_loss"][2]) > 1e-2


@pytest.mark.slow
def test_history_file_is_continuous(pair):
    _, resumed, _ = pair
    saved = json.loads((Path(resumed.run_dir) / "history.json").read_text())
    assert saved["epoch"] == list(range(1, 7))
    for name, values in saved.items():
        assert len(values) == 6, name


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.slow
def test_tensorboard_steps_written_once(pair, split):
    straight, resumed, _ = pair
    found = read(Path(resumed.run_dir) / split).scalars_named("epoch_")
    reference = read(Path(straight.run_dir) / split).scalars_named("epoch_")
    assert set(found) == set(reference) and "epoch_loss" in found
    for tag, points in found.items():
        assert [step for step, _ in points] == list(range(1, 7)), tag  # in order, no repeats
    np.testing.assert_allclose(
        [v for _, v in found["epoch_loss"]], [v for _, v in reference["epoch_loss"]], atol=1e-4
    )
    if split == "train":
        events = read(Path(resumed.run_dir) / "train")
        steps = [s for s, _ in events.scalars("batch_loss")]
        assert steps == list(range(EVERY, 6 * STEPS_PER_EPOCH + 1, EVERY))
        assert len(events.graph.node) > 0  # written once, by the first part
        root = read(resumed.run_dir)
        for tag in root.tensors:  # hparams and flags are not written twice
            assert len(root.values(tag)) == 1, tag


@pytest.mark.slow
def test_what_is_inside_the_model_is_written_once_per_step_across_the_resume(pair):
    """Layer health, the Projector, validation against the global step and the
    evaluation figures (every 5 epochs and at the last: the first part's epoch 3 too)."""
    straight, resumed, _ = pair
    for result, figure_epochs in ((straight, [5, 6]), (resumed, [3, 5, 6])):
        run = Path(result.run_dir)
        train_events, validation = read(run / "train"), read(run / "validation")
        health = [s for s, _ in train_events.scalars("health/gradient_norm")]
        assert health == list(range(1, 7))
        per_step = [s for s, _ in validation.scalars("evaluation_loss_vs_iterations")]
        assert per_step == [STEPS_PER_EPOCH * epoch for epoch in range(1, 7)]
        assert validation.steps("confusion_matrix") == figure_epochs
        assert "embeddings-6" in (run / "train" / "checkpoint").read_text()
    straight_norms = read(Path(straight.run_dir) / "train").scalars("health/gradient_norm")
    resumed_norms = read(Path(resumed.run_dir) / "train").scalars("health/gradient_norm")
    np.testing.assert_allclose(
        [v for _, v in resumed_norms], [v for _, v in straight_norms], rtol=1e-3
    )


@pytest.mark.slow
def test_halving_survives_the_resume(pair):
    straight, resumed, console = pair
    for result in (straight, resumed):
        rates = read(Path(result.run_dir) / "train").scalars("epoch_learning_rate")
        np.testing.assert_allclose([v for _, v in rates], _rates(6), rtol=1e-6)
    announced = [line for line in console if re.search(r"learning rate", line, re.I)]
    assert len(announced) == 1 and re.search(r"Epoch 5\b", announced[0]), console
    assert any("Resumed from" in line or "resum" in line.lower() for line in console), console


@pytest.mark.slow
def test_checkpoints_kept(pair):
    _, resumed, _ = pair
    directory = Path(resumed.run_dir) / "checkpoints"
    state = tf.train.get_checkpoint_state(str(directory))
    assert state is not None
    kept = [Path(p).name for p in state.all_model_checkpoint_paths]
    last = 6 * STEPS_PER_EPOCH
    assert kept == [f"ckpt-{last - STEPS_PER_EPOCH * i}" for i in reversed(range(KEEP))]
    assert Path(state.model_checkpoint_path).name == f"ckpt-{last}"
    for name in kept:
        assert (directory / f"{name}.index").exists()
    # Nothing older than the kept ones is left on disk.
    on_disk = {p.name.split(".")[0] for p in directory.glob("ckpt-*.index")}
    assert on_disk == set(kept)


@pytest.mark.slow
def test_best_model_loads_safely_and_is_the_best_epoch(pair):
    _, resumed, _ = pair
    path = Path(resumed.run_dir) / "best.keras"
    assert path.exists()
    model = keras.saving.load_model(path, safe_mode=True)
    assert type(model).__name__ == "ResidualClassifier"
    splits = data.synthetic(
        num_examples=TINY["num_examples"],
        num_words=TINY["num_words"],
        max_len=TINY["max_len"],
        num_classes=TINY["num_classes"],
        seed=Config().seed,
    )
    probabilities = model.predict(splits.x_val, batch_size=64, verbose=0)
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(splits.y_val, probabilities)))
    assert loss == pytest.approx(min(resumed.history["val_loss"]), abs=1e-4)


@pytest.mark.slow
def test_checkpoint_every_steps_numbers_by_global_step(tmp_path):
    keras.backend.clear_session()
    result = train(
        Config(
            mode="tape",
            epochs=2,
            checkpoint_every_steps=5,
            logdir=str(tmp_path),
            run_name="steps",
            **{**TINY, "keep_checkpoints": 10},
        ),
        print_fn=lambda s: None,
    )
    state = tf.train.get_checkpoint_state(str(Path(result.run_dir) / "checkpoints"))
    steps = [int(Path(p).name.split("-")[1]) for p in state.all_model_checkpoint_paths]
    # step 0 (before training), every 5 global steps, plus each epoch end (7, 14),
    # never the same step twice
    assert steps == [0, 5, 7, 10, 14]
    reader = tf.train.load_checkpoint(state.all_model_checkpoint_paths[1])
    iterations = [name for name in reader.get_variable_to_shape_map() if "iterations" in name]
    assert iterations and int(reader.get_tensor(iterations[0])) == 5
