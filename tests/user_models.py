"""User model builders for the `--model=package.module:function` tests.

`tiny` is what a user writes: `(input_shape, num_classes) -> keras.Model`,
ending in the task's head. The other names are the mistakes a user makes.
"""

import os
import signal

import keras
import tensorflow as tf
from keras import layers

# The builder is not told --num_words; this covers the default (and smaller).
VOCABULARY = 10000


def tiny(input_shape, num_classes):
    """Embedding -> global average -> head: the smallest model that learns."""
    if num_classes == 2:
        head = layers.Dense(1, activation="sigmoid")
    else:
        head = layers.Dense(num_classes, activation="softmax")
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            layers.Embedding(VOCABULARY, 8),
            layers.GlobalAveragePooling1D(),
            head,
        ],
        name="tiny",
    )


def not_a_model(input_shape, num_classes):
    """Returns a layer instead of a model."""
    return layers.Dense(num_classes)


NOT_A_FUNCTION = 42


class Scale(layers.Layer):
    """A custom layer a user writes and never registers with Keras: `best.keras`
    holds its name, but Keras cannot find the class to load it back."""

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="factor")

    def call(self, inputs):
        return inputs * self.factor


def custom_layer(input_shape, num_classes):
    """`tiny` with an unregistered custom layer after the embedding."""
    model = tiny(input_shape, num_classes)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            model.layers[0],
            Scale(),
            *model.layers[1:],
        ],
        name="custom_layer",
    )


def lambda_layer(input_shape, num_classes):
    """`tiny` with a Lambda layer, which Keras's safe mode refuses to load."""
    model = tiny(input_shape, num_classes)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            model.layers[0],
            layers.Lambda(lambda x: x * 0.5),
            *model.layers[1:],
        ],
        name="lambda_layer",
    )


def wrong_units(input_shape, num_classes):
    """A head with the wrong number of units for the task."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            layers.Embedding(VOCABULARY, 8),
            layers.GlobalAveragePooling1D(),
            layers.Dense(num_classes + 3, activation="softmax"),
        ],
        name="wrong_units",
    )


def two_outputs(input_shape, num_classes):
    """Two outputs where the task has one."""
    tokens = keras.Input(shape=input_shape, dtype="int32")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(VOCABULARY, 8)(tokens))
    return keras.Model(
        tokens,
        [
            layers.Dense(num_classes, activation="softmax")(pooled),
            layers.Dense(1, activation="sigmoid")(pooled),
        ],
    )


def no_weights(input_shape, num_classes):
    """A model whose every weight is frozen: nothing to train."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            layers.Embedding(VOCABULARY, num_classes if num_classes > 2 else 1, trainable=False),
            layers.GlobalAveragePooling1D(),
            layers.Activation("softmax" if num_classes > 2 else "sigmoid"),
        ],
        name="no_weights",
    )


def _check_vocabulary(size):
    raise ValueError(f"vocabulary size {size} is not a power of two")


def raises(input_shape, num_classes):
    """A builder with a bug: it raises from a helper of the user's own."""
    _check_vocabulary(VOCABULARY)


@keras.saving.register_keras_serializable(package="harness_tests")
class DiesInSave(layers.Layer):
    """Passes its input through; kills its own process (SIGKILL) in the Nth `.keras`
    save of the process, N from $HARNESS_TEST_DIE_IN_SAVE: a crash in mid-write of
    best.keras, at a moment no signal from outside can aim at."""

    saves = 0

    def call(self, inputs):
        return inputs

    def save_own_variables(self, store):
        DiesInSave.saves += 1
        if DiesInSave.saves == int(os.environ.get("HARNESS_TEST_DIE_IN_SAVE", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        super().save_own_variables(store)


def dies_in_save(input_shape, num_classes):
    """`tiny` with a `DiesInSave` layer after the embedding."""
    model = tiny(input_shape, num_classes)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            model.layers[0],
            DiesInSave(),
            *model.layers[1:],
        ],
        name="dies_in_save",
    )


def ten_classes(input_spec, task):
    """A builder of today's signature whose head is fixed at ten classes, whatever the task."""
    inputs = keras.Input(shape=input_spec.shape[1:], dtype=input_spec.dtype)
    features = layers.Flatten()(inputs)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(features))


@keras.saving.register_keras_serializable(package="tests")
class GatedDense(layers.Layer):
    """A custom layer, registered so that `best.keras` loads back: a dense layer whose
    output a learned sigmoid gate scales."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units, activation="relu")
        self.gate = layers.Dense(units, activation="sigmoid")

    def call(self, inputs):
        return self.dense(inputs) * self.gate(inputs)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def compiled_regressor(input_spec, task):
    """A feature-vector regressor with custom layers, compiled with its own loss and
    metrics (the harness keeps them, with its own optimizer)."""
    inputs = keras.Input(shape=input_spec.shape[1:], dtype=input_spec.dtype)
    hidden = layers.Normalization()(inputs)
    hidden = GatedDense(16)(hidden)
    model = keras.Model(inputs, layers.Dense(task.units)(GatedDense(8)(hidden)), name="gated")
    model.compile(loss=keras.losses.Huber(delta=5.0), metrics=["mae"])
    return model


class SummarySpy(layers.Layer):
    """Passes its input through, writing tf.summary calls as a user's layer does;
    `traces` counts the Python runs of `call` (one per trace of a compiled step)."""

    traces = 0

    def call(self, x):
        SummarySpy.traces += 1
        tf.summary.scalar("spy_mean", tf.reduce_mean(x))
        tf.summary.histogram("spy_values", x)
        return x


def spied(input_spec, task):
    """Embedding -> SummarySpy -> global average -> the task's head."""
    inputs = keras.Input(shape=input_spec.shape[1:], dtype=input_spec.dtype)
    x = layers.Embedding(VOCABULARY, 8)(inputs)
    x = SummarySpy(name="spy")(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, task.head()(x), name="spied")
