"""Evaluation figures: what the model gets wrong on the validation set, in TensorBoard.

Every `freq` epochs, and at the last, `EvalFigures` predicts the whole validation set once and
writes to the validation writer, at step = 1-based epoch, for each output
(tags get `/<output>` appended when the model has several):

- classification: `confusion_matrix`, a row-normalised heatmap image (row i: where
  the examples of true class i went); `most_confused`, a markdown table of the
  most frequent (true -> predicted) mistakes; PR curves for the pr_curves plugin:
  `pr_curve` for a binary output, `pr_curve/<class>` one-vs-rest for the
  `TOP_K_CLASSES` classes with the most validation examples otherwise;
- every output: `worst_examples`, a markdown table of the most confidently wrong
  examples (regression: the largest absolute errors), their inputs as words
  (token ids and a vocabulary), as images (the image summary `worst_examples/images`
  for image inputs; TensorBoard shows one kind of summary per tag) or as their first
  feature values.

Each output's kind is the task's (`outputs`: output name -> number of classes; 2:
binary, None: regression); the confusion-matrix parts live in `confusion`. The
figures are best-effort: a rendering or writing failure is one warning line,
training goes on (a multi-label output, say, gets that line). The prediction itself is outside
that guard: a `tf.function` of `model(x, training=False)`, traced once per run,
called batch by batch (under a strategy in its cross-replica context, where every
variable reads its primary copy).
"""

import re
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary

from .confusion import class_names, confusion, heatmap, markdown_cell, most_confused_table

TOP_K_CLASSES = 5  # one-vs-rest PR curves for this many classes of an N-class output
WORST = 10  # rows of the worst-examples table
WORDS_SHOWN = 40  # tokens of a worst example shown
FEATURES_SHOWN = 6  # values of a feature vector shown
PR_THRESHOLDS = 201  # the pr_curves plugin's default


class EvalFigures(keras.callbacks.Callback):
    """Writes the evaluation figures every `freq` epochs (see the module docstring).

    Args:
        writer: `name -> tf.summary.SummaryWriter`, the run's writer per folder;
            everything goes to `writer("validation")`.
        freq: every this many epochs (1-based epoch % freq == 0) and at the last
            (`params["epochs"]`, which the loops' `CallbackList` sets); 0 = never.
        validation: the validation set, a finite batched `tf.data.Dataset` of
            (x, y); x and y may be dicts (named inputs and outputs).
        outputs: output name -> its number of classes (2: binary; None: regression),
            the run task's `outputs()`; '' names the one output of a single-output
            model (whatever the model calls it).
        class_names: the class names (`names[i]` for class i), a dict of them per
            output name, or None ("class i").
        words: token id -> word for token-id inputs, or None (the ids are shown).
        print_fn: where the warning line goes when a figure cannot be written.
    """

    def __init__(
        self,
        writer: Callable[[str], tf.summary.SummaryWriter],
        freq: int,
        validation: tf.data.Dataset,
        *,
        outputs: dict,
        class_names: tuple | dict | None = None,
        words: tuple | None = None,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.freq = freq
        self.validation = validation
        self.outputs = dict(outputs)
        self.class_names = class_names
        self.words = words
        self.print_fn = print_fn
        self._predict = None

    @property
    def traces(self) -> int:
        """How often the prediction function was traced (1 once it has run)."""
        return self._predict.experimental_get_tracing_count() if self._predict else 0

    def on_epoch_end(self, epoch, logs=None) -> None:
        step = epoch + 1
        last = step == self.params.get("epochs")  # a short run gets its figures too
        if not self.freq or (step % self.freq and not last):
            return
        if self._predict is None:
            self._predict = _prediction_function(self.model, self.validation.element_spec[0])
        collected, failure = Collected(self.outputs), None
        for x, y in self.validation:
            predictions = self._predict(x)  # outside the guard: a broken model is an error
            try:
                collected.add(x, y, predictions)
            except Exception as error:  # best-effort figures: training goes on
                failure = error
                break
        if failure is None:
            try:
                self._write(collected, step)
            except Exception as error:
                failure = error
        if failure is not None:
            message = " ".join(str(failure).split())[:300]
            self.print_fn(
                f"harness: warning: evaluation figures of epoch {step} not written "
                f"({type(failure).__name__}: {message})"
            )

    def _write(self, collected: "Collected", step: int) -> None:
        outputs = collected.outputs()
        with self.writer("validation").as_default(step=step):
            for name, output in outputs.items():
                self._write_output(name, output, collected.worst[name], step, len(outputs) > 1)

    # --- Writing ---------------------------------------------------------------------

    def _write_output(self, name: str, output: tuple, worst: "Worst", step: int, multi: bool):
        """Writes one output's figures; `output`: (labels, predictions, kind)."""
        y, p, kind = output
        suffix = f"/{name}" if multi else ""
        names = self._names(name, p, kind)
        if kind != REGRESSION:
            counts = confusion(y, predicted_classes(p, kind), len(names))
            title = f"{name}: " if multi else ""
            title += f"confusion matrix, epoch {step} (each true class's row sums to 1)"
            image = heatmap(counts, names, title)
            tf.summary.image(f"confusion_matrix{suffix}", image[None])
            tf.summary.text(f"most_confused{suffix}", most_confused_table(counts, names))
            for tag, labels, scores in pr_curves(y, p, kind, names):
                write_pr_curve(f"pr_curve{suffix}{tag}", labels, scores)
        table, images = worst_table(worst, kind, names, self.words)
        tf.summary.text(f"worst_examples{suffix}", table)
        if images is not None:
            tf.summary.image(f"worst_examples{suffix}/images", images, max_outputs=WORST)

    def _names(self, name: str, p: np.ndarray, kind: str) -> tuple:
        if kind == REGRESSION:
            return ()
        n = 2 if kind == BINARY else p.shape[-1]
        given = self.class_names
        if isinstance(given, dict):
            given = given.get(name)
        return class_names(given, n)


# --- Kinds, labels and scores ----------------------------------------------------------

BINARY, CATEGORICAL, REGRESSION = "binary", "categorical", "regression"


def _prediction_function(model: keras.Model, x_spec) -> Callable:
    """`x -> model(x, training=False)` compiled, traced once for every batch size."""

    def relaxed(spec):
        return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)

    specs = tf.nest.flatten(x_spec)
    if all(isinstance(spec, tf.TensorSpec) for spec in specs):
        signature = [tf.nest.map_structure(relaxed, x_spec)]
        return tf.function(lambda x: model(x, training=False), input_signature=signature)
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def _by_output(value, names: list | None = None) -> dict:
    """{output name: tensor}; '' for a model with one output."""
    if isinstance(value, dict):
        return dict(value)
    flat = tf.nest.flatten(value)
    if names and len(names) == len(flat):
        return dict(zip(names, flat))
    return {"": flat[0]} if len(flat) == 1 else {str(i): t for i, t in enumerate(flat)}


def kind_of(num_classes: int | None) -> str:
    """An output's kind from its number of classes: None regression, 2 binary."""
    if num_classes is None:
        return REGRESSION
    return BINARY if num_classes == 2 else CATEGORICAL


def _kinds(declared: dict, names: list) -> dict:
    """{output name: kind} of the model's outputs `names`, from the task's `declared`
    classes by name (a single-output task's one entry fits whatever name)."""
    if len(declared) == len(names) == 1:
        declared = {names[0]: next(iter(declared.values()))}
    if missing := [name for name in names if name not in declared]:
        raise ValueError(f"outputs {missing} are not among the task's {sorted(declared)}")
    return {name: kind_of(declared[name]) for name in names}


def _labels(y: np.ndarray, kind: str) -> np.ndarray:
    """Class ids [n] for a classification output, targets [n, targets] for regression."""
    if kind == REGRESSION:
        return y.reshape(len(y), -1).astype(np.float64)
    if y.size != len(y):
        raise ValueError(
            f"labels of shape {y.shape}: one class id per example expected "
            "(multi-label outputs get no figures)"
        )
    return np.rint(y.reshape(len(y))).astype(np.int64)


def positive_probability(p: np.ndarray) -> np.ndarray:
    """The probability of class 1 of a binary output (one sigmoid unit or two softmax)."""
    return p[:, -1]


def predicted_classes(p: np.ndarray, kind: str) -> np.ndarray:
    """The predicted class of each example."""
    if kind == BINARY:
        return (positive_probability(p) >= 0.5).astype(np.int64)
    return np.argmax(p, axis=-1)


def class_probabilities(p: np.ndarray, kind: str) -> np.ndarray:
    """[n, classes] probabilities (a binary output's two)."""
    if kind == BINARY:
        positive = positive_probability(p)
        return np.stack([1 - positive, positive], axis=1)
    return p


def wrongness(y: np.ndarray, p: np.ndarray, kind: str) -> np.ndarray:
    """How wrong each example is: the probability given to the (wrong) predicted class
    of a misclassified example, -inf for a right one; regression: the absolute error
    (the largest over the targets)."""
    if kind == REGRESSION:
        return np.abs(p.reshape(len(p), -1) - y).max(axis=1)
    predicted = predicted_classes(p, kind)
    confidence = class_probabilities(p, kind)[np.arange(len(y)), predicted]
    return np.where(predicted != y, confidence, -np.inf)


class Collected:
    """The validation labels and predictions of each output, batch by batch, and the
    worst examples so far; `declared`: the task's output name -> number of classes."""

    def __init__(self, declared: dict) -> None:
        self.declared = declared
        self.kinds = None
        self.labels, self.predictions, self.worst = {}, {}, {}

    def add(self, x, y, predictions) -> None:
        """Takes in one batch: its inputs, labels and the model's predictions."""
        batch = _by_output(predictions)
        y = _by_output(y, names=list(batch))
        if self.kinds is None:
            self.kinds = _kinds(self.declared, list(batch))
            self.worst = {name: Worst() for name in batch}
        x_numpy = None
        for name, p in batch.items():
            labels = _labels(y[name].numpy(), self.kinds[name])
            p = p.numpy().astype(np.float64)
            self.labels.setdefault(name, []).append(labels)
            self.predictions.setdefault(name, []).append(p)
            scores = wrongness(labels, p, self.kinds[name])
            if self.worst[name].would_keep(scores):
                if x_numpy is None:
                    x_numpy = tf.nest.map_structure(lambda t: t.numpy(), x)
                self.worst[name].add(scores, x_numpy, labels, p)

    def outputs(self) -> dict:
        """{output: (labels, predictions, kind)} of everything added."""
        return {
            name: (
                np.concatenate(self.labels[name]),
                np.concatenate(self.predictions[name]),
                kind,
            )
            for name, kind in (self.kinds or {}).items()
        }


class Worst:
    """The `WORST` highest-scoring examples seen so far, with their inputs."""

    def __init__(self) -> None:
        self.scores = np.empty(0)
        self.x = self.y = self.p = None

    def would_keep(self, scores: np.ndarray) -> bool:
        """Whether any of `scores` enters the table."""
        finite = scores[np.isfinite(scores)]
        if not finite.size:
            return False
        return len(self.scores) < WORST or finite.max() > self.scores.min()

    def add(self, scores: np.ndarray, x, y: np.ndarray, p: np.ndarray) -> None:
        """Merges a batch's examples in, keeping the worst."""
        if self.x is None:
            merged = (scores, x, y, p)
        else:
            merged = tf.nest.map_structure(
                lambda old, new: np.concatenate([old, new]),
                (self.scores, self.x, self.y, self.p),
                (scores, x, y, p),
            )
        keep = np.argsort(-merged[0], kind="stable")[:WORST]
        keep = keep[np.isfinite(merged[0][keep])]
        self.scores, self.x, self.y, self.p = tf.nest.map_structure(lambda a: a[keep], merged)


# --- PR curves -------------------------------------------------------------------------


def top_classes(y: np.ndarray, n: int, k: int = TOP_K_CLASSES) -> list:
    """The `k` classes with the most examples in `y` (ties: the lower class id)."""
    support = np.bincount(y, minlength=n)
    return [int(c) for c in np.argsort(-support, kind="stable")[:k]]


def pr_curves(y: np.ndarray, p: np.ndarray, kind: str, names: tuple) -> list:
    """[(tag suffix, bool labels, scores in [0, 1])]: one curve for a binary output,
    one-vs-rest curves of the top classes otherwise."""
    if kind == BINARY:
        return [("", y == 1, positive_probability(p))]
    return [(f"/{_tag_part(names[c])}", y == c, p[:, c]) for c in top_classes(y, len(names))]


def write_pr_curve(tag: str, labels: np.ndarray, scores: np.ndarray) -> None:
    """Writes a pr_curves plugin summary under exactly `tag` to the default writer."""
    scores = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    proto = pr_summary.pb(tag, np.asarray(labels, bool), scores, num_thresholds=PR_THRESHOLDS)
    for value in proto.value:
        value.tag = tag  # pb names it "<tag>/pr_curves"
    tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=None)


# --- Worst examples --------------------------------------------------------------------


def worst_table(worst: Worst, kind: str, names: tuple, words) -> tuple:
    """(markdown table of the worst examples, their images [k, h, w, c] or None)."""
    if worst.x is None or not len(worst.scores):
        return "No wrong validation examples.", None
    x, key = example_input(worst.x)
    images = _images(x)
    if kind == REGRESSION:
        lines = ["| # | true | predicted | absolute error | input |", "|---|---|---|---|---|"]
    else:
        lines = [
            "| # | true | predicted | confidence | p(true) | input |",
            "|---|---|---|---|---|---|",
        ]
    for i, score in enumerate(worst.scores):
        shown = f"image {i + 1}" if images is not None else describe_input(x[i], words)
        shown = markdown_cell(f"{key}: {shown}" if key else shown)
        if kind == REGRESSION:
            true, predicted = _values(worst.y[i]), _values(worst.p[i])
            lines.append(f"| {i + 1} | {true} | {predicted} | {score:.4g} | {shown} |")
        else:
            true = int(worst.y[i])
            predicted = int(predicted_classes(worst.p[i : i + 1], kind)[0])
            p_true = class_probabilities(worst.p[i : i + 1], kind)[0, true]
            true_name, predicted_name = markdown_cell(names[true]), markdown_cell(names[predicted])
            lines.append(
                f"| {i + 1} | {true_name} | {predicted_name} | {score:.3f} | {p_true:.3f} "
                f"| {shown} |"
            )
    return "\n".join(lines), images


def example_input(x) -> tuple:
    """(the input array to show, its name or ''): of named inputs, the first of token
    ids (integer, [n, length]), else the first."""
    if not isinstance(x, dict):
        flat = tf.nest.flatten(x)
        return flat[0], ""
    for key in sorted(x):
        if np.asarray(x[key]).dtype.kind in "iu" and np.ndim(x[key]) == 2:
            return x[key], key
    key = sorted(x)[0]
    return x[key], key


def describe_input(row: np.ndarray, words) -> str:
    """One example's input as text: words (or the ids) of its non-zero token ids,
    or the first values of a feature vector."""
    row = np.asarray(row)
    if row.dtype.kind in "iu" and row.ndim == 1:
        ids = [int(i) for i in row if i != 0]
        shown = (
            [str(words[i]) if 0 <= i < len(words) else f"[{i}]" for i in ids[:WORDS_SHOWN]]
            if words is not None
            else [str(i) for i in ids[:WORDS_SHOWN]]
        )
        return " ".join(shown) + (" …" if len(ids) > WORDS_SHOWN else "")
    flat = row.ravel()
    values = ", ".join(f"{v:.4g}" for v in flat[:FEATURES_SHOWN].tolist())
    return f"[{values}{', …' if flat.size > FEATURES_SHOWN else ''}]"


def _images(x) -> np.ndarray | None:
    """Float image inputs [k, h, w, c] as [0, 1] images of 1, 3 or 4 channels; else None."""
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype.kind != "f":
        return None
    if x.shape[-1] not in (1, 3, 4):
        x = x[..., :1]
    if x.size and x.max() > 1.0:  # 0..255 pixels
        x = x / 255.0
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _values(row: np.ndarray) -> str:
    flat = np.asarray(row).ravel()
    shown = ", ".join(f"{v:.4g}" for v in flat[:3].tolist())
    return shown + (", …" if flat.size > 3 else "")


def _tag_part(name: str) -> str:
    """A class name as one part of a tag: whitespace and slashes become '_'."""
    return re.sub(r"[\s/]+", "_", name.strip()) or "_"
