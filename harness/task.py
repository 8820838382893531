"""What the model is trained for: loss, metrics and optimizer.

Every loop uses these same definitions, so `fit`, `train_on_batch` and `tape`
report the same `logs` keys (`loss`, `accuracy`, ... and `val_`-prefixed ones).
"""

from collections.abc import Sequence

import keras
import tensorflow as tf

_OPTIMIZERS = {
    "nadam": keras.optimizers.Nadam,
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "ftrl": keras.optimizers.Ftrl,
}


def loss(num_classes: int) -> keras.losses.Loss:
    """Binary cross-entropy for two classes, sparse categorical otherwise."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(name="loss")
    return keras.losses.SparseCategoricalCrossentropy(name="loss")


# Metric name -> (constructor for the binary task, for the N-class task); None
# where the metric does not apply to that task.
_BINARY, _CATEGORICAL = 0, 1
METRICS = {
    "accuracy": (
        lambda: keras.metrics.BinaryAccuracy(name="accuracy"),
        lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
    ),
    "top5_accuracy": (
        None,
        lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
    ),
    "top3_accuracy": (
        None,
        lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3_accuracy"),
    ),
    "crossentropy": (
        lambda: keras.metrics.BinaryCrossentropy(name="crossentropy"),
        lambda: keras.metrics.SparseCategoricalCrossentropy(name="crossentropy"),
    ),
    "auc": (lambda: keras.metrics.AUC(name="auc"), None),
    "precision": (lambda: keras.metrics.Precision(name="precision"), None),
    "recall": (lambda: keras.metrics.Recall(name="recall"), None),
}
DEFAULT_METRICS = {_BINARY: ("accuracy", "auc"), _CATEGORICAL: ("accuracy", "top5_accuracy")}


def applies(name: str, num_classes: int) -> bool:
    """Whether metric `name` applies to a task with `num_classes` classes."""
    return METRICS[name][_BINARY if num_classes == 2 else _CATEGORICAL] is not None


def metric_names(num_classes: int, names: Sequence[str] = ()) -> tuple:
    """The metrics of a run: `names`, or the task's defaults (accuracy and AUC for
    the binary task, accuracy and top-5 accuracy otherwise).

    Raises:
        ValueError: a name is unknown or does not apply to the task.
    """
    task = _BINARY if num_classes == 2 else _CATEGORICAL
    names = tuple(names) or DEFAULT_METRICS[task]
    for name in names:
        if name not in METRICS:
            raise ValueError(
                f"--metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}"
            )
        if METRICS[name][task] is None:
            fitting = [n for n, makers in METRICS.items() if makers[task] is not None]
            raise ValueError(
                f"--metrics: {name!r} does not apply to a "
                f"{'binary' if task == _BINARY else f'{num_classes}-class'} "
                f"task; choose from {', '.join(fitting)}"
            )
    return names


def metrics(num_classes: int, names: Sequence[str] = ()) -> list:
    """Fresh metric objects for `metric_names(num_classes, names)`."""
    task = _BINARY if num_classes == 2 else _CATEGORICAL
    return [METRICS[name][task]() for name in metric_names(num_classes, names)]


def compile_args(num_classes: int, names: Sequence[str] = ()) -> tuple[dict, list]:
    """`model.compile` loss and metrics for a one-output task, and the log keys
    they produce. Raises ValueError as `metric_names` does."""
    names = metric_names(num_classes, names)
    return {"loss": loss(num_classes), "metrics": metrics(num_classes, names)}, ["loss", *names]


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
