"""The built-in models and user models named by import path.

Every builder has the signature `(input_shape, num_classes, num_words) -> keras.Model`
and ends in the task's head: softmax over N classes, or one sigmoid unit when
`num_classes == 2`. A user's builder `package.module:function` takes
`(input_shape, num_classes)`.
"""

import importlib
from typing import Callable

import keras
from keras import layers

from harness.errors import UsageError

EMBEDDING_DIM = 7


def head(num_classes: int) -> layers.Layer:
    """The output layer for the task; float32 even under mixed precision, so the
    probabilities and the loss keep full precision."""
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="head", dtype="float32")
    return layers.Dense(num_classes, activation="softmax", name="head", dtype="float32")


def sequential(input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """Embedding -> Conv1D(64,5) -> pool -> Conv1D(32,3) -> pool -> Flatten -> head."""
    return keras.Sequential([
        keras.Input(shape=input_shape, dtype="int32"),
        layers.Embedding(num_words, EMBEDDING_DIM),
        layers.Conv1D(64, 5, activation="relu"),
        layers.MaxPool1D(2),
        layers.Conv1D(32, 3, activation="relu"),
        layers.MaxPool1D(2),
        layers.Flatten(),
        head(num_classes),
    ], name="sequential")


def functional(input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """Three SeparableConv1D branches (kernel 3, 5, 7) over one embedding, concatenated."""
    tokens = keras.Input(shape=input_shape, dtype="int32", name="tokens")
    embedded = layers.Embedding(num_words, EMBEDDING_DIM)(tokens)
    branches = []
    for k in (3, 5, 7):
        x = layers.SeparableConv1D(64, k, activation="relu")(embedded)
        x = layers.MaxPool1D(k)(x)
        x = layers.SeparableConv1D(32, k, activation="relu")(x)
        branches.append(layers.GlobalMaxPool1D()(x))
    merged = layers.Concatenate()(branches)
    return keras.Model(tokens, head(num_classes)(merged), name="functional")


@keras.saving.register_keras_serializable(package="harness")
class ResBlock(layers.Layer):
    """Three 'same' convolutions added back to the input, then MaxPool1D(2)."""

    def __init__(self, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.conv1 = layers.Conv1D(64, kernel_size, activation="relu", padding="same")
        self.conv2 = layers.Conv1D(32, kernel_size, activation="relu", padding="same")
        self.conv3 = None
        self.pool = layers.MaxPool1D(2)

    def build(self, input_shape):
        self.conv3 = layers.Conv1D(input_shape[-1], self.kernel_size, activation="relu",
                                   padding="same")
        self.conv1.build(input_shape)
        self.conv2.build(self.conv1.compute_output_shape(input_shape))
        self.conv3.build(self.conv2.compute_output_shape(
            self.conv1.compute_output_shape(input_shape)))
        self.pool.build(input_shape)

    def call(self, inputs):
        x = self.conv3(self.conv2(self.conv1(inputs)))
        return self.pool(inputs + x)

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="harness")
class ResidualClassifier(keras.Model):
    """Embedding -> ResBlock(7) -> ResBlock(5) -> Flatten -> head, as a Model subclass."""

    def __init__(self, num_classes: int, num_words: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.num_words = num_words
        self.embedding = layers.Embedding(num_words, EMBEDDING_DIM)
        self.block7 = ResBlock(7)
        self.block5 = ResBlock(5)
        self.flatten = layers.Flatten()
        self.head = head(num_classes)

    def build(self, input_shape):
        # Builds every sublayer, so the variables exist before the first call
        # (the optimizer and the checkpoint are built from them) and a saved
        # model can be rebuilt from its config.
        shape = tuple(input_shape)
        for layer in (self.embedding, self.block7, self.block5, self.flatten, self.head):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs):
        x = self.block5(self.block7(self.embedding(inputs)))
        return self.head(self.flatten(x))

    def get_config(self):
        return {"num_classes": self.num_classes, "num_words": self.num_words,
                "name": self.name}


def subclass(input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """The ResidualClassifier, built for `input_shape`."""
    model = ResidualClassifier(num_classes, num_words, name="subclass")
    model.build((None, *input_shape))
    return model


def multi_io(input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """The tickets model of Keras's functional-API guide (see harness.multi_io)."""
    from harness import multi_io as tickets  # the task module builds on this one's users
    return tickets.build(input_shape[0], num_classes, num_words)


BUILTIN: dict[str, Callable[..., keras.Model]] = {
    "sequential": sequential, "functional": functional, "subclass": subclass,
    "multi_io": multi_io}


def build(name: str, input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """Builds a built-in model by name or calls a user's `package.module:function`.

    Raises:
        UsageError: the import path does not import or does not return a keras.Model.
    """
    if name in BUILTIN:
        return BUILTIN[name](input_shape, num_classes, num_words)
    module_name, _, function_name = name.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--model={name!r} does not import ({type(error).__name__}: "
                         f"{error}); give 'package.module:function' of a builder "
                         "(input_shape, num_classes) -> keras.Model on PYTHONPATH") from None
    if not callable(builder):
        raise UsageError(f"--model={name!r} names a {type(builder).__name__}, not a builder "
                         "function (input_shape, num_classes) -> keras.Model")
    model = builder(input_shape, num_classes)
    if not isinstance(model, keras.Model):
        raise UsageError(f"--model={name!r} returned {type(model).__name__}, not a "
                         "keras.Model: the builder must return a model")
    return model
