"""The three loops, every built-in model, both heads and user models.

Real TensorFlow training in this process through `harness.train`, with
tiny configs; each test reads back what the run left on disk (history.json,
flags.json, the checkpoints) and checks its contents.
"""

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import models, pipeline, task, tracing, train
from harness.catalog import MIN_MAX_LEN
from harness.config import BUILTIN_MODELS, MODES, Config
from harness.errors import UsageError
from harness.loops.tape_steps import _StaticBatches

MULTICLASS_METRICS = ("loss", "accuracy", "top5_accuracy")
BINARY_METRICS = ("loss", "accuracy", "auc")


def _keys(metrics) -> set:
    return {"epoch", *metrics, *(f"val_{name}" for name in metrics)}


def _global_step(checkpoint: str) -> int:
    """The optimizer's step count saved in `checkpoint`."""
    reader = tf.train.load_checkpoint(checkpoint)
    names = [
        name
        for name, shape in tf.train.list_variables(checkpoint)
        if name.startswith("optimizer/") and "iterations" in name and shape == []
    ]
    assert len(names) == 1, names
    return int(reader.get_tensor(names[0]))


def check_run(result, config: Config, metrics, load_json) -> dict:
    """Asserts what every finished run leaves on disk; returns its history."""
    run_dir = Path(result.run_dir)
    assert run_dir.parent == Path(config.logdir)
    if config.run_name:
        assert run_dir.name == config.run_name

    history = load_json(run_dir / "history.json")
    assert history == result.history
    assert history["epoch"] == list(range(1, config.epochs + 1))
    assert _keys(metrics) <= set(history), sorted(history)
    other_head = set(
        _keys(BINARY_METRICS if metrics == MULTICLASS_METRICS else MULTICLASS_METRICS)
    ) - _keys(metrics)
    assert not other_head & set(history), sorted(history)
    for name in _keys(metrics) - {"epoch"}:
        values = history[name]
        assert len(values) == config.epochs and all(math.isfinite(v) for v in values), name
        if name.endswith("loss"):
            assert all(v > 0 for v in values), (name, values)
        else:
            assert all(0 <= v <= 1 for v in values), (name, values)

    flags = load_json(run_dir / "flags.json")
    for name in ("mode", "model", "dataset", "epochs", "batch_size", "seed", "max_len"):
        assert flags[name] == getattr(config, name), name

    steps = config.steps_per_epoch or math.ceil(config.num_examples / config.batch_size)
    checkpoint = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert checkpoint is not None and checkpoint.endswith(f"ckpt-{steps * config.epochs}")
    assert _global_step(checkpoint) == steps * config.epochs
    return history


# --- Every loop with every built-in model ------------------------------------------------

# The single-input models; multi_io has its own tests below.
SINGLE_INPUT_MODELS = [model for model in BUILTIN_MODELS if model != "multi_io"]


@pytest.mark.parametrize("model", SINGLE_INPUT_MODELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_every_mode_trains_every_builtin_model(mode, model, make_config, run_train, load_json):
    config = make_config(mode=mode, model=model, run_name=f"{model}-{mode}")
    result, lines = run_train(config)
    check_run(result, config, MULTICLASS_METRICS, load_json)
    text = "\n".join(lines)
    assert f"mode={mode} model={model}" in text and "46-class" in text


# Each loop once on the binary task, each with another model.
@pytest.mark.parametrize("mode, model", list(zip(MODES, SINGLE_INPUT_MODELS)))
@pytest.mark.slow
def test_binary_head_reports_accuracy_and_auc(mode, model, make_config, run_train, load_json):
    config = make_config(mode=mode, model=model, num_classes=2, run_name="binary")
    result, lines = run_train(config)
    history = check_run(result, config, BINARY_METRICS, load_json)
    assert "binary" in "\n".join(lines)
    # Chance-level binary cross-entropy is ln 2; a 46-way softmax would start near ln 46.
    assert history["loss"][0] < 1.0


@pytest.mark.parametrize("model", SINGLE_INPUT_MODELS)
@pytest.mark.parametrize("classes, units", [(46, 46), (2, 1)])
def test_head_follows_the_task(model, classes, units):
    built = models.build(model, models.token_spec(60), task.SingleOutput(classes), 1000)
    out = np.asarray(built(np.ones((3, 60), dtype="int32")))
    assert out.shape == (3, units) and np.all((out >= 0) & (out <= 1))
    if units > 1:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)  # softmax


@pytest.mark.parametrize("model", SINGLE_INPUT_MODELS)
def test_min_max_len_matches_each_model(model):
    """Config rejects a --max_len the model cannot take, and accepts the shortest it can."""
    shortest = MIN_MAX_LEN[model]
    built = models.build(model, models.token_spec(shortest), task.SingleOutput(46), 100)
    assert built(np.ones((1, shortest), dtype="int32")).shape == (1, 46)
    with pytest.raises(ValueError):  # Keras: the sequence shrinks to nothing
        models.build(model, models.token_spec(shortest - 1), task.SingleOutput(46), 100)(
            np.ones((1, shortest - 1), "int32")
        )
    with pytest.raises(UsageError, match=f"--max_len={shortest - 1} .*--model={model}"):
        Config(model=model, max_len=shortest - 1).validate()


# --- User models by import path ------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, num_classes, metrics",
    [("tape", None, MULTICLASS_METRICS), ("train_on_batch", 2, BINARY_METRICS)],
)
@pytest.mark.slow
def test_user_model_by_import_path(mode, num_classes, metrics, make_config, run_train, load_json):
    config = make_config(mode=mode, model="tests.user_models:tiny", num_classes=num_classes)
    result, _ = run_train(config)
    check_run(result, config, metrics, load_json)
    # The default run name is <function>-<mode>-<timestamp>.
    assert Path(result.run_dir).name.startswith(f"tiny-{mode}-")


@pytest.mark.parametrize(
    "path, message",
    [
        ("tests.user_models:missing", "does not import"),
        ("tests.no_such_module:tiny", "does not import"),
        ("no_such_package.models:build", "does not import"),
        ("tests.user_models:not_a_model", "not a keras.Model"),
        ("tests.user_models:NOT_A_FUNCTION", "not a builder"),
    ],
)
def test_bad_user_model_is_a_clear_error(path, message, make_config, run_train, logdir):
    with pytest.raises(UsageError, match=message) as error:
        run_train(make_config(model=path))
    assert f"--model={path!r}" in str(error.value)
    assert not logdir.exists()  # nothing written


# --- The loops agree, and never retrace -----------------------------------------------------


@pytest.fixture(scope="module")
def runs_by_mode(tmp_path_factory, tiny_config, run_train):
    """For each mode, a 1-epoch and a 3-epoch run of the same config (same seed).

    The learning rate is raised so the tiny model moves visibly in 3 epochs:
    agreement between curves that barely move would prove little.
    """
    runs = {}
    for mode in MODES:
        logdir = tmp_path_factory.mktemp(f"agree-{mode}")
        runs[mode] = tuple(
            run_train(
                tiny_config(
                    logdir, mode=mode, epochs=epochs, learning_rate=0.01, run_name=f"e{epochs}"
                )
            )[0]
            for epochs in (1, 3)
        )
    return runs


@pytest.mark.parametrize("name", ["loss", "val_loss"])
@pytest.mark.slow
def test_loops_agree_for_three_epochs(runs_by_mode, name):
    reference = runs_by_mode["fit"][1].history[name]
    assert len(reference) == 3
    assert reference[-1] < 0.98 * reference[0], reference  # the model did learn
    for mode in ("train_on_batch", "tape"):
        values = runs_by_mode[mode][1].history[name]
        for epoch, (ours, theirs) in enumerate(zip(values, reference), start=1):
            assert abs(ours - theirs) <= 0.01 * abs(theirs), (mode, name, epoch, values, reference)


@pytest.mark.slow
def test_same_seed_repeats_the_first_epoch(runs_by_mode):
    for mode, (one, three) in runs_by_mode.items():
        for name in ("loss", "val_loss", "accuracy"):
            assert one.history[name][0] == pytest.approx(three.history[name][0], rel=1e-4), (
                mode,
                name,
            )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_no_retracing_after_the_first_epoch(runs_by_mode, mode):
    """250 examples in batches of 32: each epoch ends with a partial batch of 26."""
    one, three = runs_by_mode[mode]
    assert one.trace_counts["train"] >= 1 and one.trace_counts["test"] >= 1
    assert three.trace_counts == one.trace_counts


class _TracesAfterEachEpoch(keras.callbacks.Callback):
    """The number of train-step traces so far, at the end of each epoch."""

    def on_train_begin(self, logs=None):
        self.counts, self.train = tracing.count_traces(self.model), []

    def on_epoch_end(self, epoch, logs=None):
        self.train.append(self.counts["train"])


@pytest.mark.slow
def test_tape_traces_the_partial_batch_step_in_the_first_epoch(make_config):
    """With epochs of 3 steps and passes of 8 (250 examples in batches of 32), the
    first partial batch is step 8, in the third epoch; its step is traced with the
    first execution all the same. (A run that never reaches it does not trace it.)"""
    traces = {}
    for epochs in (1, 4):
        counter = _TracesAfterEachEpoch()
        train(
            make_config(mode="tape", epochs=epochs, steps_per_epoch=3, run_name=f"e{epochs}"),
            print_fn=lambda line: None,
            callbacks=[counter],
        )
        traces[epochs] = counter.train
    assert traces[1] == [1]  # the full batches' step only
    assert traces[4] == [2, 2, 2, 2]  # and the partial batches' step, in epoch 1 too


class _ModelPeek(keras.callbacks.Callback):
    """Keeps the model the loop drove, and its `reset_metrics` at each epoch end."""

    def on_epoch_end(self, epoch, logs=None):
        self.reset_metrics = self.model.reset_metrics


@pytest.mark.slow
def test_train_on_batch_resets_metrics_in_one_compiled_call(make_config):
    """Keras resets the metrics in every `train_on_batch`; the loop compiles that
    reset once (the loops agree above, so each call still sees one batch) and
    gives the model its own method back afterwards."""
    peek = _ModelPeek()
    train(
        make_config(mode="train_on_batch", epochs=2), print_fn=lambda line: None, callbacks=[peek]
    )
    assert isinstance(peek.reset_metrics, tf.types.experimental.PolymorphicFunction)
    assert peek.reset_metrics.experimental_get_tracing_count() == 1
    assert "reset_metrics" not in vars(peek.model)


class _TestBatchHooks(keras.callbacks.Callback):
    """Records the validation batch indices the test batch hooks see."""

    def on_test_begin(self, logs=None):
        self.seen = []

    def on_test_batch_begin(self, batch, logs=None):
        self.seen.append(("begin", batch))

    def on_test_batch_end(self, batch, logs=None):
        self.seen.append(("end", batch))


@pytest.mark.slow
def test_tape_validates_in_executions(make_config):
    """The tape loop evaluates up to steps_per_execution validation batches per
    compiled call, the hooks seeing each execution's first and last batch (50
    examples in batches of 8: 7 batches, in calls of 3), with the figures of one
    call per batch."""
    seen, histories = {}, {}
    for per_execution in (1, 3):
        hooks = _TestBatchHooks()
        result = train(
            make_config(
                mode="tape",
                batch_size=8,
                steps_per_execution=per_execution,
                run_name=f"spe{per_execution}",
            ),
            print_fn=lambda line: None,
            callbacks=[hooks],
        )
        seen[per_execution], histories[per_execution] = hooks.seen, result.history
    assert seen[1] == [(hook, batch) for batch in range(7) for hook in ("begin", "end")]
    assert seen[3] == [("begin", 0), ("end", 2), ("begin", 3), ("end", 5), ("begin", 6), ("end", 6)]
    for name in ("val_loss", "val_accuracy", "val_top5_accuracy"):
        assert histories[3][name] == pytest.approx(histories[1][name], rel=1e-5), name


@pytest.mark.parametrize("start_step, counts", [(0, [3, 5, 9, 1, 7]), (6, [1, 2, 20])])
def test_tape_input_reads_the_stream_in_order(start_step, counts):
    """The tape loop reads full and partial batches from two iterators; however its
    executions cut the steps, it trains on the stream's batches in the stream's order."""
    x, y = np.arange(50 * 3, dtype=np.int32).reshape(50, 3), np.arange(50, dtype=np.int32)
    stream = pipeline.TrainStream(x, y, batch_size=8, seed=7)  # passes of 6 x 8 and then 2
    batches = _StaticBatches(stream, start_step, distribute=lambda dataset: dataset)
    read = []
    for count in counts:
        runs = batches.take(count)
        assert sum(steps for _, steps in runs) == count
        for iterator, steps in runs:
            read += [next(iterator)[1].numpy() for _ in range(steps)]
    expected = [labels.numpy() for _, labels in stream.batches(start_step).take(sum(counts))]
    assert [list(labels) for labels in read] == [list(labels) for labels in expected]
    assert {len(labels) for labels in read} == {8, 2}


# --- Learning ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_synthetic_data_is_learnable(tmp_path, run_train):
    """The default sequential model, 2 epochs: validation accuracy far above 1/46."""
    config = Config(
        num_examples=2000, epochs=2, verbose=0, logdir=str(tmp_path), run_name="learn"
    ).validate()
    result, _ = run_train(config)
    history = result.history
    assert history["val_accuracy"][-1] > 0.2, history
    assert history["loss"][-1] < history["loss"][0]
