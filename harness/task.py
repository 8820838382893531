"""What the model is trained for: loss, metrics and optimizer.

Every loop uses these same definitions, so `fit`, `train_on_batch` and `tape`
report the same `logs` keys (`loss`, `accuracy`, ... and `val_`-prefixed ones).
"""

from typing import Optional

import keras
import tensorflow as tf

_OPTIMIZERS = {
    "nadam": keras.optimizers.Nadam, "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
    "ftrl": keras.optimizers.Ftrl,
}


def loss(num_classes: int) -> keras.losses.Loss:
    """Binary cross-entropy for two classes, sparse categorical otherwise."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(name="loss")
    return keras.losses.SparseCategoricalCrossentropy(name="loss")


def metrics(num_classes: int) -> list:
    """Fresh metric objects: accuracy and top-5 accuracy, or accuracy and AUC."""
    if num_classes == 2:
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")]


def optimizer(name: str, learning_rate: float,
              clip_norm: Optional[float] = None) -> keras.optimizers.Optimizer:
    """The named optimizer. `clip_norm` clips each gradient by its own norm,
    like `tf.clip_by_norm(g, clip_norm)` in the old tf.train recipe."""
    return _OPTIMIZERS[name](learning_rate=learning_rate, clipnorm=clip_norm)


def precision_policy(mixed: bool) -> str:
    """The Keras dtype policy: float16 (with loss scaling) on a GPU, bfloat16 on a
    CPU, which has no float16 speed-up; plain float32 unless `mixed`."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
