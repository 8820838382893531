"""`--eval_figures_freq`: confusion matrix, PR curves and worst examples, read back from
the event files of real runs and checked against a recomputation.

Each loop trains the same tiny 8-class run (module fixture, 2 epochs, figures every
epoch) with a callback that predicts the validation set with `model.predict` at every
epoch end, after the figures were written from the same weights; the tests recompute
the confusion counts, the PR curves and the worst examples from those predictions and
compare. Then one run each of the binary task, regression (Boston housing .npz),
multi_io, an image folder, and (a process of its own) MirroredStrategy on two CPU
devices. The pure functions (`confusion`, the 46-class heatmap, one trace, a failed
rendering, the tasks' outputs) are checked without training.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import data, train
from harness.callbacks import confusion
from harness.callbacks import eval_figures as ef
from harness.callbacks.events import read
from harness.config import MODES, Config
from harness.multi_io import Tickets
from harness.task import SingleOutput
from tests import user_data

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
NUM_CLASSES = 8  # more than TOP_K_CLASSES, few enough to learn something in 2 epochs
TINY = dict(
    num_examples=250,
    max_len=60,
    num_words=1000,
    batch_size=32,
    epochs=EPOCHS,
    verbose=0,
    eval_figures_freq=1,
    histogram_freq=0,
    diagnostics_freq=0,
    embeddings_freq=0,
    learning_rate=0.01,
)


class Recorder(keras.callbacks.Callback):
    """`model.predict` of the validation inputs at every epoch end: {1-based epoch: p}."""

    def __init__(self, x_val) -> None:
        super().__init__()
        self.x_val = x_val
        self.predictions = {}

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.predictions[epoch + 1] = self.model.predict(self.x_val, batch_size=32, verbose=0)


def _run(logdir: Path, name: str, x_val=None, **flags) -> tuple:
    """(validation Summaries, Recorder or None, printed lines) of one tiny run."""
    keras.backend.clear_session()
    config = Config(**{**TINY, "logdir": str(logdir), "run_name": name, **flags}).validate()
    recorder = Recorder(x_val) if x_val is not None else None
    lines = []
    result = train(config, print_fn=lines.append, callbacks=[recorder] if recorder else [])
    return read(str(Path(result.run_dir) / "validation")), recorder, lines


def _text(summaries, tag: str, step: int) -> str:
    return summaries.latest(tag)[step].item().decode()


def _table(text: str) -> list:
    """The body rows of a markdown table, as lists of cell strings."""
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _png(summaries, tag: str, step: int, index: int = 0) -> np.ndarray:
    """Image `index` of an image summary, decoded; checks its stated width and height."""
    value = summaries.latest(tag)[step]
    image = tf.io.decode_png(value[2 + index]).numpy()
    assert (int(value[0]), int(value[1])) == (image.shape[1], image.shape[0])
    return image


def _pr_expected(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[TP, FP, TN, FN, precision, recall] at thresholds i / 200, counted directly."""
    n = ef.PR_THRESHOLDS
    above = np.clip(scores, 0, 1)[None, :] * (n - 1) >= np.arange(n)[:, None]
    tp = (above & labels).sum(1)
    fp = (above & ~labels).sum(1)
    tn, fn = (~labels).sum() - fp, labels.sum() - tp
    precision = tp / np.maximum(1, tp + fp)
    recall = tp / np.maximum(1, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float64)


# --- The three loops, 8 classes ----------------------------------------------------------


@pytest.fixture(scope="module")
def tokens():
    """The validation split the tiny runs see (the synthetic data of seed 42)."""
    return data.synthetic(
        num_examples=250, num_words=1000, max_len=60, num_classes=NUM_CLASSES, seed=42
    )


@pytest.fixture(scope="module", params=MODES)
def run(request, tokens, tmp_path_factory) -> tuple:
    """(validation Summaries, {epoch: predictions}, lines) of the 8-class run in one loop."""
    logdir = tmp_path_factory.mktemp(f"figures-{request.param}")
    summaries, recorder, lines = _run(
        logdir, request.param, tokens.x_val, mode=request.param, num_classes=NUM_CLASSES
    )
    return summaries, recorder.predictions, lines


@pytest.mark.slow
def test_every_epoch_writes_every_figure_without_a_warning(run):
    summaries, _, lines = run
    assert not [line for line in lines if "evaluation figures" in line], lines
    for tag in ("confusion_matrix", "most_confused", "worst_examples"):
        assert summaries.steps(tag) == list(range(1, EPOCHS + 1)), tag
    assert len([tag for tag in summaries.tensors if tag.startswith("pr_curve/")]) == 5


@pytest.mark.slow
def test_the_confusion_matrix_image_and_table_match_the_predictions(run, tokens):
    summaries, predictions, _ = run
    names = confusion.class_names(None, NUM_CLASSES)
    width, height = confusion.heatmap_size(names)
    for epoch in range(1, EPOCHS + 1):
        image = _png(summaries, "confusion_matrix", epoch)
        assert image.shape[:2] == (height, width)
        assert image.std() > 10  # a drawing, not a blank
        counts = confusion.confusion(tokens.y_val, predictions[epoch].argmax(-1), NUM_CLASSES)
        shares = confusion.row_normalised(counts)
        np.testing.assert_allclose(shares.sum(1), 1.0)  # every class has examples here
        expected = [
            [names[t], names[q], str(count), f"{share:.1%}"]
            for t, q, count, share in confusion.most_confused(counts)
        ]
        rows = _table(_text(summaries, "most_confused", epoch))
        assert rows == expected and 0 < len(rows) <= confusion.TOP_CONFUSED
        for true, predicted, count, share in rows:  # the share is of the true class's row
            t, q = names.index(true), names.index(predicted)
            assert int(count) == counts[t, q]
            assert share == f"{counts[t, q] / counts[t].sum():.1%}"


@pytest.mark.slow
def test_pr_curves_of_the_top_classes_match_a_recomputation(run, tokens):
    summaries, predictions, _ = run
    y = tokens.y_val
    top = ef.top_classes(y, NUM_CLASSES)
    support = np.bincount(y, minlength=NUM_CLASSES)
    assert len(top) == ef.TOP_K_CLASSES and min(support[top]) >= max(np.delete(support, top))
    for epoch in range(1, EPOCHS + 1):
        for c in top:
            tag = f"pr_curve/class_{c}"
            assert summaries.metadata[tag].plugin_data.plugin_name == "pr_curves"
            curve = summaries.latest(tag)[epoch]
            assert curve.shape == (6, ef.PR_THRESHOLDS)
            expected = _pr_expected(y == c, predictions[epoch][:, c].astype(np.float64))
            np.testing.assert_allclose(curve, expected, atol=1e-6)


@pytest.mark.slow
def test_worst_examples_are_the_most_confidently_wrong_in_words(run, tokens):
    summaries, predictions, _ = run
    names = confusion.class_names(None, NUM_CLASSES)
    for epoch in range(1, EPOCHS + 1):
        p = predictions[epoch].astype(np.float64)
        scores = ef.wrongness(tokens.y_val, p, ef.CATEGORICAL)
        order = np.argsort(-scores, kind="stable")[: ef.WORST]
        order = order[np.isfinite(scores[order])]
        rows = _table(_text(summaries, "worst_examples", epoch))
        assert len(rows) == len(order) > 0
        for row, i in zip(rows, order):
            assert row[1:5] == [
                names[tokens.y_val[i]],
                names[p[i].argmax()],
                f"{p[i].max():.3f}",
                f"{p[i, tokens.y_val[i]]:.3f}",
            ]
            shown = row[5].replace("&lt;", "<").replace("&gt;", ">")
            assert shown == ef.describe_input(tokens.x_val[i], tokens.words)
            assert len(shown.split()) <= ef.WORDS_SHOWN + 1
        if tokens.words is not None:  # words, not ids
            assert not re.fullmatch(r"[\d …]+", rows[0][5]), rows[0][5]


# --- The other tasks and inputs ----------------------------------------------------------


@pytest.mark.slow
def test_binary_task_one_pr_curve_and_a_two_class_matrix(tmp_path):
    tokens = data.synthetic(num_examples=250, num_words=1000, max_len=60, num_classes=2, seed=42)
    summaries, recorder, _ = _run(tmp_path, "binary", tokens.x_val, mode="fit", num_classes=2)
    assert not [tag for tag in summaries.tensors if tag.startswith("pr_curve/")]
    positive = recorder.predictions[EPOCHS][:, 0].astype(np.float64)
    curve = summaries.latest("pr_curve")[EPOCHS]
    np.testing.assert_allclose(curve, _pr_expected(tokens.y_val == 1, positive), atol=1e-6)
    image = _png(summaries, "confusion_matrix", EPOCHS)
    assert image.shape[1::-1] == confusion.heatmap_size(confusion.class_names(None, 2))
    counts = confusion.confusion(tokens.y_val, positive >= 0.5, 2)
    rows = _table(_text(summaries, "most_confused", EPOCHS))
    assert [int(row[2]) for row in rows] == sorted(
        [int(counts[0, 1]), int(counts[1, 0])], reverse=True
    )[: len(rows)]


@pytest.mark.slow
def test_regression_has_worst_examples_by_absolute_error_only(tmp_path, shared_data):
    summaries, _, lines = _run(
        tmp_path,
        "boston",
        dataset=str(shared_data / "boston_housing.npz"),
        validation_split=0.2,
        mode="tape",
    )
    assert not [line for line in lines if "evaluation figures" in line], lines
    assert not [t for t in summaries.tensors if t.startswith(("pr_curve", "confusion", "most_"))]
    text = _text(summaries, "worst_examples", EPOCHS)
    assert "absolute error" in text
    rows = _table(text)
    assert len(rows) == ef.WORST
    errors = [float(row[3]) for row in rows]
    assert errors == sorted(errors, reverse=True)
    for row in rows:  # |true - predicted|, to the 4 digits shown
        assert abs(abs(float(row[1]) - float(row[2])) - float(row[3])) < 1e-2 * float(row[3])
        assert row[4].startswith("[") and row[4].count(",") == ef.FEATURES_SHOWN  # 6 values, …


@pytest.mark.slow
def test_multi_io_figures_per_output(tmp_path):
    summaries, _, lines = _run(tmp_path, "tickets", model="multi_io", mode="train_on_batch")
    assert not [line for line in lines if "evaluation figures" in line], lines
    tags = set(summaries.tensors)
    assert {
        "pr_curve/priority",
        *(f"pr_curve/department/class_{c}" for c in range(4)),
        "confusion_matrix/priority",
        "confusion_matrix/department",
        "most_confused/department",
        "worst_examples/priority",
        "worst_examples/department",
    } <= tags
    assert "pr_curve" not in tags and "confusion_matrix" not in tags
    assert summaries.latest("pr_curve/priority")[EPOCHS].shape == (6, ef.PR_THRESHOLDS)
    rows = _table(_text(summaries, "worst_examples/department", EPOCHS))
    assert rows and all(row[5].startswith("body: ") for row in rows)  # the token ids, decoded


@pytest.mark.slow
def test_image_folder_worst_examples_are_images(tmp_path):
    pytest.importorskip("sklearn")
    folder = user_data.digits_folder(tmp_path / "digits")
    summaries, _, lines = _run(
        tmp_path / "logs", "digits", dataset=str(folder), image_size=(8, 8), mode="fit"
    )
    assert not [line for line in lines if "evaluation figures" in line], lines
    rows = _table(_text(summaries, "worst_examples", EPOCHS))
    assert rows and [row[5] for row in rows] == [f"image {i + 1}" for i in range(len(rows))]
    images = summaries.latest("worst_examples/images")[EPOCHS]
    assert len(images) - 2 == len(rows)
    assert _png(summaries, "worst_examples/images", EPOCHS).shape == (8, 8, 3)
    names = [str(d) for d in range(10)]  # the folders' names
    assert {row[1] for row in rows} <= set(names)
    assert {f"pr_curve/{name}" for name in names} & set(summaries.tensors)


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    command = [
        sys.executable,
        "-m",
        "harness.run",
        "--mode=tape",
        "--strategy=mirrored",
        "--cpu_replicas=2",
        *(f"--{k}={v}" for k, v in TINY.items()),
        f"--logdir={tmp_path}",
        "--run_name=mirrored",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "evaluation figures" not in done.stdout + done.stderr
    summaries = read(str(tmp_path / "mirrored" / "validation"))
    for tag in ("confusion_matrix", "most_confused", "worst_examples"):
        assert summaries.steps(tag) == [1, 2], tag
    assert len([tag for tag in summaries.tensors if tag.startswith("pr_curve/")]) == 5


# --- Without training --------------------------------------------------------------------


def test_confusion_counts_and_the_most_confused_pairs():
    counts = confusion.confusion([0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 0, 0, 0, 0, 2], 3)
    np.testing.assert_array_equal(counts, [[1, 2, 0], [1, 1, 0], [3, 0, 1]])
    np.testing.assert_allclose(confusion.row_normalised(counts).sum(1), 1.0)
    assert confusion.most_confused(counts) == [(2, 0, 3, 0.75), (0, 1, 2, 2 / 3), (1, 0, 1, 0.5)]
    assert confusion.most_confused(np.diag([3, 4])) == []
    assert confusion.class_names(("a", "b"), 3) == ("a", "b", "class 2")


def test_a_46_class_heatmap_is_readable_and_quick():
    names = tuple(keras.datasets.reuters.get_label_names())
    counts = np.random.default_rng(0).integers(0, 20, (46, 46))
    confusion.heatmap(counts, names)  # matplotlib's first figure loads its fonts
    start = time.perf_counter()
    image = confusion.heatmap(counts, names)
    seconds = time.perf_counter() - start
    width, height = confusion.heatmap_size(names)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert width >= 46 * confusion._CELL_INCHES * confusion.DPI  # cells of ~22 pixels
    assert seconds < 2.0  # about 0.3 s here; 2 cores shared with other tests


def _tiny_model() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))


def test_predictions_trace_once_and_a_failed_rendering_is_one_warning(tmp_path, monkeypatch):
    model = _tiny_model()
    model.compile(loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 4)).astype(np.float32), rng.integers(0, 3, 50).astype(np.int32)
    validation = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 16, 16, 16, 2
    writer = tf.summary.create_file_writer(str(tmp_path))
    lines = []
    figures = ef.EvalFigures(
        lambda name: writer, 2, validation, outputs={"": 3}, print_fn=lines.append
    )
    figures.set_model(model)
    figures.set_params({"epochs": 5})
    for epoch in range(5):
        figures.on_epoch_end(epoch)
    assert figures.traces == 1 and not lines
    writer.flush()
    assert read(str(tmp_path)).steps("confusion_matrix") == [2, 4, 5]  # and the last epoch

    def broken(*args):
        raise ValueError("no fonts")

    monkeypatch.setattr(ef, "heatmap", broken)
    figures.on_epoch_end(5)
    assert figures.traces == 1
    assert len(lines) == 1 and "epoch 6" in lines[0] and "ValueError: no fonts" in lines[0]


def test_the_tasks_declare_their_outputs_and_kinds():
    assert SingleOutput(46).outputs() == {"": 46}
    assert SingleOutput(2).outputs() == {"": 2}
    assert SingleOutput(None, targets=3).outputs() == {"": None}
    assert Tickets(4, {"priority": 1.0}).outputs() == {"priority": 2, "department": 4}
    assert [ef.kind_of(n) for n in (None, 2, 46)] == [ef.REGRESSION, ef.BINARY, ef.CATEGORICAL]
    assert ef._kinds({"": None}, ["price"]) == {"price": ef.REGRESSION}  # any one name
    with pytest.raises(ValueError, match="not among"):
        ef._kinds({"priority": 2, "department": 4}, ["priority", "urgency"])
