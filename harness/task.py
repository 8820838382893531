"""What a run trains for: the `Task` (head, loss, metrics, log keys) and the optimizer.

A task is the seam between the data and the model: the data's labels choose it
(`for_labels`), the built-in models end in its `head()`, a user's model is
checked against it (`check_outputs`), and every loop compiles the model with its
`compile_args`, so `fit`, `train_on_batch` and `tape` report the same `logs`
keys (`loss`, `accuracy`, ... and `val_`-prefixed ones).
"""

import abc
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

_OPTIMIZERS = {
    "nadam": keras.optimizers.Nadam,
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "ftrl": keras.optimizers.Ftrl,
}
REGRESSION = None  # the `num_classes` of a regression task
BINARY, CATEGORICAL, REAL = "binary", "categorical", "regression"

# Metric name -> {kind of task: constructor}; a metric applies to the kinds it names.
METRICS = {
    "accuracy": {
        BINARY: lambda: keras.metrics.BinaryAccuracy(name="accuracy"),
        CATEGORICAL: lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
    },
    "top5_accuracy": {
        CATEGORICAL: lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")
    },
    "top3_accuracy": {
        CATEGORICAL: lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3_accuracy")
    },
    "crossentropy": {
        BINARY: lambda: keras.metrics.BinaryCrossentropy(name="crossentropy"),
        CATEGORICAL: lambda: keras.metrics.SparseCategoricalCrossentropy(name="crossentropy"),
    },
    "auc": {BINARY: lambda: keras.metrics.AUC(name="auc")},
    "precision": {BINARY: lambda: keras.metrics.Precision(name="precision")},
    "recall": {BINARY: lambda: keras.metrics.Recall(name="recall")},
    "mae": {REAL: lambda: keras.metrics.MeanAbsoluteError(name="mae")},
    "mse": {REAL: lambda: keras.metrics.MeanSquaredError(name="mse")},
    "rmse": {REAL: lambda: keras.metrics.RootMeanSquaredError(name="rmse")},
}
DEFAULT_METRICS = {
    BINARY: ("accuracy", "auc"),
    CATEGORICAL: ("accuracy", "top5_accuracy"),  # ("accuracy",) up to 5 classes
    REAL: ("mae", "rmse"),
}


def kind(num_classes: int | None) -> str:
    """binary (2 classes), categorical (more) or regression (None)."""
    if num_classes is REGRESSION:
        return REAL
    return BINARY if num_classes == 2 else CATEGORICAL


def _kind_name(num_classes: int | None) -> str:
    return {BINARY: "binary", REAL: "regression"}.get(kind(num_classes), f"{num_classes}-class")


def loss(num_classes: int | None) -> keras.losses.Loss:
    """Binary cross-entropy for two classes, sparse categorical for more, mean squared
    error for regression."""
    return {
        BINARY: lambda: keras.losses.BinaryCrossentropy(name="loss"),
        CATEGORICAL: lambda: keras.losses.SparseCategoricalCrossentropy(name="loss"),
        REAL: lambda: keras.losses.MeanSquaredError(name="loss"),
    }[kind(num_classes)]()


def applies(name: str, num_classes: int | None) -> bool:
    """Whether metric `name` applies to a task with `num_classes` classes."""
    return kind(num_classes) in METRICS[name]


def metric_names(num_classes: int | None, names: Sequence[str] = ()) -> tuple:
    """The metrics of a run: `names`, or the task's defaults (accuracy and AUC for
    the binary task, accuracy and top-5 accuracy for more than 5 classes, accuracy
    for 3 to 5, MAE and RMSE for regression).

    Raises:
        ValueError: a name is unknown or does not apply to the task.
    """
    defaults = DEFAULT_METRICS[kind(num_classes)]
    if kind(num_classes) == CATEGORICAL and num_classes <= 5:
        defaults = ("accuracy",)  # the top 5 of 5 or fewer classes always hold the label
    names = tuple(names) or defaults
    for name in names:
        if name not in METRICS:
            raise ValueError(
                f"--metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}"
            )
        if not applies(name, num_classes):
            fitting = [n for n in METRICS if applies(n, num_classes)]
            raise ValueError(
                f"--metrics: {name!r} does not apply to a {_kind_name(num_classes)} "
                f"task; choose from {', '.join(fitting)}"
            )
    return names


def metrics(num_classes: int | None, names: Sequence[str] = ()) -> list:
    """Fresh metric objects for `metric_names(num_classes, names)`."""
    return [METRICS[n][kind(num_classes)]() for n in metric_names(num_classes, names)]


def compile_args(num_classes: int | None, names: Sequence[str] = ()) -> tuple[dict, list]:
    """`model.compile` loss and metrics for a one-output task, and the log keys
    they produce. Raises ValueError as `metric_names` does."""
    names = metric_names(num_classes, names)
    return {"loss": loss(num_classes), "metrics": metrics(num_classes, names)}, ["loss", *names]


class Task(abc.ABC):
    """What a run trains for: the outputs a model must give, and how they are scored."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A few words for the console, e.g. '46-class' or 'regression'."""

    @abc.abstractmethod
    def compile_args(self, metric_names: Sequence[str]) -> tuple[dict, list]:
        """`model.compile` loss (and weights) and metrics, and the log keys they give.
        Raises ValueError for a metric that is unknown or does not apply."""

    @abc.abstractmethod
    def outputs(self) -> dict:
        """Output name -> its number of classes (2: binary; None: regression); ''
        names the one output of a single-output model."""

    @abc.abstractmethod
    def output_spec(self) -> str | dict:
        """What the model must output, for `check_outputs` and its messages."""

    @abc.abstractmethod
    def check_outputs(self, outputs, batch: int) -> str | None:
        """What is wrong with a model's `outputs` on a batch of `batch`; None if they fit."""


class SingleOutput(Task):
    """One head: classification over `num_classes` (2: one sigmoid unit) or, with
    `num_classes=None`, regression onto `targets` real values."""

    def __init__(self, num_classes: int | None, targets: int = 1) -> None:
        self.num_classes = num_classes
        self.targets = targets

    @property
    def units(self) -> int:
        """The head's units."""
        if self.num_classes is REGRESSION:
            return self.targets
        return 1 if self.num_classes == 2 else self.num_classes

    def describe(self) -> str:
        return _kind_name(self.num_classes)

    def head(self, name: str = "head") -> layers.Layer:
        """The output layer; float32 even under mixed precision, so the predictions
        and the loss keep full precision."""
        activation = {BINARY: "sigmoid", CATEGORICAL: "softmax", REAL: None}
        return layers.Dense(
            self.units, activation=activation[kind(self.num_classes)], name=name, dtype="float32"
        )

    def compile_args(self, metric_names: Sequence[str]) -> tuple[dict, list]:
        return compile_args(self.num_classes, metric_names)

    def outputs(self) -> dict:
        return {"": self.num_classes}

    def output_spec(self) -> str:
        what = {
            BINARY: "one sigmoid unit for the binary task",
            CATEGORICAL: f"a softmax over {self.num_classes} classes",
            REAL: f"{self.units} real value(s) for the regression task",
        }[kind(self.num_classes)]
        return f"one output [batch, {self.units}] ({what})"

    def check_outputs(self, outputs, batch: int) -> str | None:
        outputs = tf.nest.flatten(outputs)
        if len(outputs) != 1:
            return f"has {len(outputs)} outputs; the task needs {self.output_spec()}"
        shape = tuple(outputs[0].shape)
        if shape != (batch, self.units):
            given = ", ".join(["batch", *map(str, shape[1:])])
            return f"outputs [{given}]; the task needs {self.output_spec()}"
        return None


def for_labels(y_train, y_val, forced: str = "auto") -> SingleOutput:
    """The task a single output's labels call for: integer (or bool) labels are
    classes 0..N-1, floats are regression targets; `forced` (--task) overrides.

    Raises:
        ValueError: labels that fit no task (text, negative classes, one class,
            fractional values forced to classification).
    """
    labels = np.concatenate(
        [np.asarray(y_train).reshape(len(y_train), -1), np.asarray(y_val).reshape(len(y_val), -1)]
    )
    if labels.dtype.kind not in "biuf":
        raise ValueError(
            f"labels of dtype {labels.dtype} fit no task: give integer class ids "
            "0..N-1 for classification or floats for regression"
        )
    regression = forced == "regression" or (forced == "auto" and labels.dtype.kind == "f")
    if regression:
        return SingleOutput(REGRESSION, targets=labels.shape[1])
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError(
            "--task=classification: the labels are fractional floats, not class ids; "
            "give integer class ids 0..N-1, or drop --task for regression"
        )
    if labels.shape[1] != 1:
        raise ValueError(
            f"classification labels must be one class id per example, not {labels.shape[1]} "
            "values (one-hot labels: pass their argmax)"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"class ids must be 0..N-1; the labels hold {int(labels.min())} "
            "(for real-valued targets, give float labels or --task=regression)"
        )
    num_classes = int(labels.max()) + 1 if labels.size else 0
    if num_classes < 2:
        raise ValueError(
            f"the labels hold {num_classes} class(es); classification needs at least 2"
        )
    return SingleOutput(num_classes)


def optimizer(
    name: str, learning_rate: float, clip_norm: float | None = None
) -> keras.optimizers.Optimizer:
    """The named optimizer. `clip_norm` clips each gradient by its own norm,
    like `tf.clip_by_norm(g, clip_norm)` in the old tf.train recipe."""
    return _OPTIMIZERS[name](learning_rate=learning_rate, clipnorm=clip_norm)


def precision_policy(mixed: bool) -> str:
    """The Keras dtype policy: float16 (with loss scaling) on a GPU, bfloat16 on a
    CPU, which has no float16 speed-up; plain float32 unless `mixed`."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
