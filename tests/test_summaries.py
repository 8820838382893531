"""The unified TensorBoard summaries, read back from the event files of real runs.

Each of the three loops (`fit`, `train_on_batch`, `tape`) trains the same tiny
run once (module fixture: 3 epochs, batch scalars every 3 steps, histograms
every epoch, the learning rate halved at epoch 2); the tests then read
`<run>/`, `<run>/train/` and `<run>/validation/` with TensorBoard's own
`EventAccumulator` and check that every kind of summary is there, in every
mode, with the same tags and sensible values. Also: `LearningRateHalving`
refuses a learning-rate schedule, and `scripts/compare_modes.py` runs.

Real TensorFlow, no mocks. About 12 s on an idle 2-core CPU.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import tb_util  # noqa: E402  (also puts the repository root on sys.path)
import tensorflow as tf  # noqa: E402
from tensorboard.plugins.hparams import metadata as hparams_metadata  # noqa: E402

from harness import (
    models,  # noqa: E402
    task,  # noqa: E402
    train,  # noqa: E402
)
from harness.callbacks.events import histogram_count, read  # noqa: E402
from harness.callbacks.lr_halving import LearningRateHalving  # noqa: E402
from harness.callbacks.summary import write_histogram  # noqa: E402
from harness.config import Config  # noqa: E402

REPO = tb_util.REPO
MODES = ("fit", "train_on_batch", "tape")
LR = 1e-3
EPOCHS = 3
EVERY = 3  # summary_every_steps
NUM_EXAMPLES, MAX_LEN, BATCH = 300, 60, 32
STEPS_PER_EPOCH = math.ceil(NUM_EXAMPLES / BATCH)  # 10
HALVE_AT = 2
EPOCH_TAGS = ("epoch_loss", "epoch_accuracy", "epoch_top5_accuracy")
TRAIN_ONLY_EPOCH_TAGS = ("epoch_learning_rate", "epoch_examples_per_second", "epoch_seconds")
BATCH_TAGS = ("batch_loss", "batch_learning_rate")
ROOT_TAGS = {
    "_hparams_/session_start_info",
    "_hparams_/experiment",
    "flags",
    "model_summary",
}


def _config(logdir, mode: str, **overrides) -> Config:
    options = dict(
        mode=mode,
        epochs=EPOCHS,
        num_examples=NUM_EXAMPLES,
        max_len=MAX_LEN,
        batch_size=BATCH,
        learning_rate=LR,
        logdir=str(logdir),
        run_name=mode,
        verbose=0,
        summary_every_steps=EVERY,
        histogram_freq=1,
        lr_halve_epochs=(HALVE_AT,),
        embeddings_freq=0,  # the Projector, eval figures and layer health: own tests
        eval_figures_freq=0,
        diagnostics_freq=0,
    )
    options.update(overrides)
    return Config(**options)


@pytest.fixture(scope="module")
def weights():
    """{variable path: number of values} of the model every run trains.

    Built in a fresh Keras session, like each run below, so the layer names
    (hence the histogram tags) are the ones a run gets in a fresh process.
    """
    keras.backend.clear_session()
    model = models.build(
        "sequential", models.token_spec(MAX_LEN), task.SingleOutput(46), Config().num_words
    )
    paths = {v.path: int(np.prod(v.shape)) for v in model.trainable_variables}
    keras.backend.clear_session()
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory, weights):
    """{mode: (Result, console lines)}: one finished run per loop.

    Each run starts from a cleared Keras session, as a run from the command
    line does; without it the histogram tags depend on how many models the
    process built before (see test_histogram_tags_do_not_depend_on_earlier_models).
    """
    logdir = tmp_path_factory.mktemp("summaries")
    results = {}
    for mode in MODES:
        keras.backend.clear_session()
        console = []
        result = train(_config(logdir, mode), print_fn=console.append)
        results[mode] = (result, console)
    return results


def _dirs(result, split: str) -> Path:
    return Path(result.run_dir) / split


# --- Same tags everywhere ---------------------------------------------------------------


@pytest.mark.slow
def test_three_modes_write_the_same_tags(runs, weights):
    expected = {
        "": ROOT_TAGS,
        "train": {
            *EPOCH_TAGS,
            *TRAIN_ONLY_EPOCH_TAGS,
            *BATCH_TAGS,
            *weights,
            *(f"{path}/gradient" for path in weights),
            "keras",
        },
        "validation": {
            *EPOCH_TAGS,
            *(f"evaluation_{tag[6:]}_vs_iterations" for tag in EPOCH_TAGS),
        },
    }
    for split, tags in expected.items():
        by_mode = {
            mode: set(read(_dirs(result, split)).tensors) for mode, (result, _) in runs.items()
        }
        for mode, found in by_mode.items():
            assert found == tags, (
                f"{mode} {split or 'root'}/: missing {tags - found}, unexpected {found - tags}"
            )


@pytest.mark.slow
def test_three_modes_agree_on_the_curves(runs):
    """Same seed, data and flags: the loops reproduce each other (DESIGN.md: ~1e-3)."""
    for split in ("train", "validation"):
        for tag in EPOCH_TAGS:
            curves = {
                mode: [v for _, v in read(_dirs(r, split)).scalars(tag)]
                for mode, (r, _) in runs.items()
            }
            reference = curves["fit"]
            for mode, curve in curves.items():
                np.testing.assert_allclose(
                    curve, reference, rtol=1e-3, atol=1e-3, err_msg=f"{split}/{tag}: {mode} vs fit"
                )


# --- Per-epoch scalars ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_epoch_scalars_in_train(runs, mode):
    result, _ = runs[mode]
    history = json.loads((Path(result.run_dir) / "history.json").read_text())
    events = read(_dirs(result, "train"))
    got = {tag: events.scalars(tag) for tag in (*EPOCH_TAGS, *TRAIN_ONLY_EPOCH_TAGS)}
    for tag, points in got.items():
        assert [step for step, _ in points] == list(range(1, EPOCHS + 1)), tag
        assert all(math.isfinite(v) for _, v in points), (tag, points)
    for tag in EPOCH_TAGS:  # the same numbers as history.json (float32 in the event file)
        np.testing.assert_allclose(
            [v for _, v in got[tag]], history[tag[len("epoch_") :]], rtol=1e-6, err_msg=tag
        )
    for (_, accuracy), (_, top5) in zip(got["epoch_accuracy"], got["epoch_top5_accuracy"]):
        assert 0.0 <= accuracy <= top5 <= 1.0
    assert all(v > 0 for _, v in got["epoch_loss"])
    examples_per_epoch = STEPS_PER_EPOCH * BATCH
    for (_, speed), (_, seconds) in zip(got["epoch_examples_per_second"], got["epoch_seconds"]):
        assert speed > 0 and seconds > 0
        # Speed is over the training part of the epoch, seconds the whole epoch
        # (validation included), so speed * seconds covers at least the examples.
        assert speed * seconds >= examples_per_epoch * (1 - 1e-4), (speed, seconds)
        assert speed < 1e7, speed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_validation_scalars_equal_history(runs, mode):
    result, _ = runs[mode]
    history = json.loads((Path(result.run_dir) / "history.json").read_text())
    assert history["epoch"] == list(range(1, EPOCHS + 1))
    events = read(_dirs(result, "validation"))
    for tag in EPOCH_TAGS:
        points = events.scalars(tag)
        assert [step for step, _ in points] == list(range(1, EPOCHS + 1)), tag
        np.testing.assert_allclose(
            [v for _, v in points], history["val_" + tag[len("epoch_") :]], rtol=1e-6, err_msg=tag
        )


# --- Batch scalars ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_batch_scalars_every_n_global_steps(runs, mode):
    result, _ = runs[mode]
    events = read(_dirs(result, "train"))
    expected_steps = list(range(EVERY, EPOCHS * STEPS_PER_EPOCH + 1, EVERY))
    losses = events.scalars("batch_loss")
    rates = events.scalars("batch_learning_rate")
    assert [s for s, _ in losses] == expected_steps
    assert [s for s, _ in rates] == expected_steps
    assert all(math.isfinite(v) and v > 0 for _, v in losses)
    for step, rate in rates:  # global step -> 1-based epoch
        epoch = (step - 1) // STEPS_PER_EPOCH + 1
        want = LR if epoch < HALVE_AT else LR / 2
        assert rate == pytest.approx(want, rel=1e-6), (step, rate)
    # batch_loss is the epoch's running mean: at an epoch's last step it is the epoch loss.
    last = EPOCHS * STEPS_PER_EPOCH
    assert last % EVERY == 0
    epoch_loss = dict(events.scalars("epoch_loss"))[EPOCHS]
    assert dict(losses)[last] == pytest.approx(epoch_loss, rel=1e-5)


# --- Histograms -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_weight_and_gradient_histograms(runs, weights, mode):
    result, _ = runs[mode]
    events = read(_dirs(result, "train"))
    for path, size in weights.items():
        for tag in (path, f"{path}/gradient"):
            points = events.values(tag)
            assert [s for s, _ in points] == list(range(1, EPOCHS + 1)), tag
            for _, histogram in points:
                assert histogram.ndim == 2 and histogram.shape[1] == 3, tag
                assert histogram_count(histogram) == size, tag
        # A gradient histogram with some non-zero values (not all buckets at 0).
        for step, gradient in events.values(f"{path}/gradient"):
            used = gradient[gradient[:, 2] > 0]
            assert np.abs(used[:, :2]).max() > 0, f"{path}/gradient is all zero at {step}"
    # Training changed the weights between the first and the last histogram.
    kernel = next(path for path in weights if path.endswith("head/kernel"))
    first, last = events.values(kernel)[0][1], events.values(kernel)[-1][1]
    assert not np.array_equal(first, last)


@pytest.mark.parametrize(
    "name, data",
    [
        ("normal", np.random.default_rng(0).normal(size=(400, 7)).astype(np.float32)),
        ("one_value", np.full((3, 4), 0.25, np.float32)),
        ("empty", np.zeros((0, 5), np.float32)),
        (
            "sparse_gradient",
            tf.IndexedSlices(
                tf.constant([[1.0, -2.0], [3.0, 0.5]]), tf.constant([0, 3]), tf.constant([5, 2])
            ),
        ),
    ],
)
def test_histograms_are_what_tf_summary_histogram_writes(tmp_path, name, data):
    """write_histogram counts in NumPy; TensorBoard must read back the same
    summary tf.summary.histogram writes: tag, plugin, step and buckets."""
    with tf.summary.create_file_writer(str(tmp_path / "tf")).as_default(step=4):
        tf.summary.histogram(name, data)
    with tf.summary.create_file_writer(str(tmp_path / "ours")).as_default(step=4):
        write_histogram(name, data)
    expected, ours = (read(tmp_path / kind) for kind in ("tf", "ours"))
    assert list(ours.tensors) == list(expected.tensors) == [name]
    assert (
        ours.metadata[name].plugin_data.plugin_name
        == expected.metadata[name].plugin_data.plugin_name
        == "histograms"
    )
    ((step, buckets),) = ours.values(name)
    ((expected_step, expected_buckets),) = expected.values(name)
    assert step == expected_step == 4
    np.testing.assert_allclose(buckets, expected_buckets, rtol=1e-12)


def test_histograms_leave_out_non_finite_values(tmp_path):
    with tf.summary.create_file_writer(str(tmp_path)).as_default(step=1):
        write_histogram("w", np.array([1.0, np.nan, 2.0, np.inf, 3.0], np.float32))
    ((_, buckets),) = read(tmp_path).values("w")
    assert histogram_count(buckets) == 3
    assert (buckets[0, 0], buckets[-1, 1]) == (1.0, 3.0)


# --- Graph, hyperparameters, flags -----------------------------------------------------


@pytest.mark.slow
def test_graph_of_the_train_step_in_every_mode(runs):
    op_types = {}
    for mode, (result, _) in runs.items():
        graph = read(_dirs(result, "train")).graph
        assert len(graph.node) > 100, (mode, len(graph.node))
        op_types[mode] = {node.op for node in graph.node}
        # forward, loss, backward and the optimizer's update are all in it
        for op in ("Conv2D", "MatMul", "Softmax", "Conv2DBackpropFilter", "AssignSubVariableOp"):
            assert op in op_types[mode], (mode, op)
        for split in ("", "validation"):
            assert read(_dirs(result, split)).graph is None, (mode, split)
    assert op_types["fit"] == op_types["train_on_batch"] == op_types["tape"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_hparams_session_in_the_root_run(runs, mode):
    result, _ = runs[mode]
    events = read(_dirs(result, ""))
    tag = hparams_metadata.SESSION_START_INFO_TAG
    assert tag in events.tensors
    content = events.metadata[tag].plugin_data
    assert content.plugin_name == hparams_metadata.PLUGIN_NAME
    info = hparams_metadata.parse_session_start_info_plugin_data(content.content)
    hparams = {
        name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()
    }
    assert hparams["mode"] == mode
    assert hparams["model"] == "sequential"
    assert hparams["dataset"] == "synthetic"
    assert hparams["optimizer"] == "nadam"
    assert hparams["learning_rate"] == pytest.approx(LR)
    assert hparams["batch_size"] == BATCH
    assert hparams["seed"] == Config().seed
    assert info.group_name == Path(result.run_dir).name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_flags_text_summary(runs, mode):
    result, _ = runs[mode]
    events = read(_dirs(result, ""))
    assert events.metadata["flags"].plugin_data.plugin_name == "text"
    [(step, text)] = events.values("flags")
    text = text.item().decode()
    assert f"| mode | '{mode}' |" in text
    assert "| summary_every_steps | 3 |" in text
    for field in Config.__dataclass_fields__:
        assert f"| {field} |" in text, field


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_hparams_experiment_compares_validation_loss_first(runs, mode):
    """The experiment config: every hyperparameter that changes training, and the
    metrics in order, validation loss and accuracy first, no learning rate or seconds."""
    result, _ = runs[mode]
    events = read(_dirs(result, ""))
    content = events.metadata[hparams_metadata.EXPERIMENT_TAG].plugin_data.content
    experiment = hparams_metadata.parse_experiment_plugin_data(content)
    metrics = [(m.name.group, m.name.tag) for m in experiment.metric_infos]
    assert metrics[:4] == [
        ("validation", "epoch_loss"),
        ("validation", "epoch_accuracy"),
        ("train", "epoch_loss"),
        ("train", "epoch_accuracy"),
    ]
    assert {tag for _, tag in metrics} == set(EPOCH_TAGS)
    names = {info.name for info in experiment.hparam_infos}
    assert {"clip_norm", "mixed_precision", "task", "lr_halve_epochs", "max_len"} <= names
    assert not names & {"logdir", "run_name", "verbose", "intra_op_threads"}
    optimizer = next(i for i in experiment.hparam_infos if i.name == "optimizer")
    assert "adam" in [v.string_value for v in optimizer.domain_discrete.values]
    info = hparams_metadata.parse_session_start_info_plugin_data(
        events.metadata[hparams_metadata.SESSION_START_INFO_TAG].plugin_data.content
    )
    assert info.hparams["task"].string_value == "46-class"
    assert info.hparams["clip_norm"].number_value == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_validation_against_the_global_step(runs, mode):
    result, _ = runs[mode]
    events = read(_dirs(result, "validation"))
    for tag in EPOCH_TAGS:
        per_epoch = events.scalars(tag)
        per_step = events.scalars(f"evaluation_{tag[6:]}_vs_iterations")
        assert [step for step, _ in per_step] == [
            STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)
        ]
        assert [value for _, value in per_step] == [value for _, value in per_epoch]


@pytest.mark.slow
def test_model_summary_and_keras_graph(runs):
    result, _ = runs["tape"]
    events = read(_dirs(result, ""))
    [(_, text)] = events.values("model_summary")
    text = text.item().decode()
    assert 'Model: "sequential"' in text and "Total params" in text
    assert all(line.startswith("    ") for line in text.splitlines())  # preformatted
    train_events = read(_dirs(result, "train"))  # beside the op graph
    [(step, config)] = train_events.values("keras")
    assert step == 0
    assert train_events.metadata["keras"].plugin_data.plugin_name == "graph_keras_model"
    layers = json.loads(config.item().decode())["config"]["layers"]
    assert any(layer["class_name"] == "Conv1D" for layer in layers)


@pytest.mark.parametrize("mode", MODES)
def test_user_summaries_recorded_in_every_loop(tmp_path, mode):
    """A tf.summary call inside the user's layer is written to model/ every
    summary_every_steps steps, at the step count before the step, also inside the
    tape loop's compiled multi-step calls, and nothing is retraced after epoch 1."""
    import user_models

    every, epochs = 4, 2
    traces_per_epoch = []

    class Traces(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            traces_per_epoch.append(user_models.SummarySpy.traces)

    keras.backend.clear_session()
    config = _config(tmp_path, mode, epochs=epochs, summary_every_steps=every, histogram_freq=0)
    result = train(
        config, print_fn=lambda line: None, callbacks=[Traces()], model=user_models.spied
    )
    events = read(Path(result.run_dir) / "model")
    [mean_tag] = [tag for tag in events.tensors if tag.endswith("spy_mean")]
    [values_tag] = [tag for tag in events.tensors if tag.endswith("spy_values")]
    expected = list(range(0, epochs * STEPS_PER_EPOCH, every))
    assert [step for step, _ in events.scalars(mean_tag)] == expected
    assert [step for step, _ in events.histograms(values_tag)] == expected
    assert traces_per_epoch[1] == traces_per_epoch[0]
    for split in ("train", "validation"):  # recorded in model/ only
        assert not [tag for tag in read(Path(result.run_dir) / split).tensors if "spy" in tag]


def test_resume_purge_keeps_global_step_summaries_by_their_steps(tmp_path):
    """Before a resume from global step 8 (epoch 1 done): the model's own summaries
    from step 8 on (written during step 9) and evaluation_*_vs_iterations after step
    8 are dropped; epoch summaries after epoch 1 are dropped."""
    from harness.callbacks.events import MODEL_FOLDER, purge_after

    for folder, tag, steps in (
        (MODEL_FOLDER, "spy_mean", range(0, 12, 2)),
        ("validation", "evaluation_loss_vs_iterations", (4, 8, 12)),
        ("validation", "epoch_loss", (1, 2, 3)),
    ):
        with tf.summary.create_file_writer(str(tmp_path / folder)).as_default():
            for step in steps:
                tf.summary.scalar(tag, float(step), step=step)
    purge_after(str(tmp_path), global_step=8, epochs_done=1)
    model, validation = read(tmp_path / MODEL_FOLDER), read(tmp_path / "validation")
    assert [step for step, _ in model.scalars("spy_mean")] == [0, 2, 4, 6]
    assert [s for s, _ in validation.scalars("evaluation_loss_vs_iterations")] == [4, 8]
    assert [step for step, _ in validation.scalars("epoch_loss")] == [1]


# --- Learning-rate halving --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_learning_rate_halved_at_epoch_2(runs, mode):
    result, console = runs[mode]
    rates = read(_dirs(result, "train")).scalars("epoch_learning_rate")
    assert [s for s, _ in rates] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in rates], [LR, LR / 2, LR / 2], rtol=1e-6)
    announced = [
        line
        for line in console
        if re.search(r"learning rate", line, re.I) and re.search(r"\bepoch\b", line, re.I)
    ]
    assert len(announced) == 1, console
    assert re.search(r"Epoch 2\b", announced[0]) and "0.0005" in announced[0], announced


def _tiny_model(optimizer) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _schedule_optimizer() -> keras.optimizers.Optimizer:
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=10, decay_rate=0.9)
    return keras.optimizers.Adam(learning_rate=schedule)


def test_halving_a_schedule_is_a_clear_error():
    optimizer = _schedule_optimizer()
    with pytest.raises(ValueError, match="learning-rate halving.*schedule"):
        LearningRateHalving.check(optimizer)
    # Used as a plain callback, it refuses before the first step, not silently.
    model = _tiny_model(optimizer)
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32")
    with pytest.raises(ValueError, match="schedule"):
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[LearningRateHalving((2,), print_fn=lambda s: None)],
        )
    LearningRateHalving.check(keras.optimizers.Adam(1e-3))  # a plain rate is fine


# --- Known problems ---------------------------------------------------------------------


def test_halving_error_names_the_schedule():
    with pytest.raises(ValueError, match="ExponentialDecay"):
        LearningRateHalving.check(_schedule_optimizer())


@pytest.mark.slow
def test_histogram_tags_do_not_depend_on_earlier_models(tmp_path, weights):
    keras.backend.clear_session()
    models.build(
        "sequential", models.token_spec(MAX_LEN), task.SingleOutput(46), Config().num_words
    )  # an earlier model
    result = train(
        _config(tmp_path, "tape", epochs=1, summary_every_steps=0), print_fn=lambda s: None
    )
    histograms = {
        tag
        for tag in set(read(_dirs(result, "train")).tensors)
        if not tag.startswith(("epoch_", "batch_")) and tag != "keras"
    }
    assert histograms == {*weights, *(f"{path}/gradient" for path in weights)}


# --- scripts/compare_modes.py -----------------------------------------------------------


@pytest.mark.slow
def test_compare_modes_script(tmp_path):
    logdir = tmp_path / "compare"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "compare_modes.py"),
            "--epochs=2",
            "--num_examples=200",
            "--max_len=40",
            "--summary_every_steps=0",
            f"--logdir={logdir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    # one block per metric, with the three modes side by side and one row per epoch
    for split, tag in (
        ("train", "epoch_loss"),
        ("validation", "epoch_loss"),
        ("train", "epoch_accuracy"),
        ("train", "epoch_learning_rate"),
    ):
        assert f"{split}/{tag}" in out, out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["epoch"])
    assert header.split()[1:4] == list(MODES), header
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s*[12]\s", line)]
    assert rows and all(len(row) >= 4 for row in rows), out
    for row in rows:
        [float(cell) for cell in row[1:4]]  # numbers, read back from the event files
    # the loss values printed are those in the event files
    fit_train_loss = read(logdir / "fit" / "train").scalars("epoch_loss")
    assert f"{fit_train_loss[-1][1]:.6f}" in out
    match = re.search(r"max relative difference of loss between modes:\s*([0-9.eE+-]+)", out)
    assert match, out
    assert 0 <= float(match.group(1)) < 1e-2
    for mode in MODES:
        assert (logdir / mode / "train").is_dir()
