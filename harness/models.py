"""The built-in models and user models named by import path.

Every builder has the signature `(input_shape, num_classes, num_words) -> keras.Model`
and ends in the task's head: softmax over N classes, or one sigmoid unit when
`num_classes == 2`. A user's builder `package.module:function` takes
`(input_shape, num_classes)`.
"""

import importlib
import inspect
import os
import sysconfig
import traceback
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from harness.errors import UsageError, UserCodeError

EMBEDDING_DIM = 7


def head(num_classes: int) -> layers.Layer:
    """The output layer for the task; float32 even under mixed precision, so the
    probabilities and the loss keep full precision."""
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="head", dtype="float32")
    return layers.Dense(num_classes, activation="softmax", name="head", dtype="float32")


def sequential(input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """Embedding -> Conv1D(64,5) -> pool -> Conv1D(32,3) -> pool -> Flatten -> head."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            layers.Embedding(num_words, EMBEDDING_DIM),
            layers.Conv1D(64, 5, activation="relu"),
            layers.MaxPool1D(2),
            layers.Conv1D(32, 3, activation="relu"),
            layers.MaxPool1D(2),
            layers.Flatten(),
            head(num_classes),
        ],
        name="sequential",
    )


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
        self.conv3 = layers.Conv1D(
            input_shape[-1], self.kernel_size, activation="relu", padding="same"
        )
        self.conv1.build(input_shape)
        self.conv2.build(self.conv1.compute_output_shape(input_shape))
        self.conv3.build(
            self.conv2.compute_output_shape(self.conv1.compute_output_shape(input_shape))
        )
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
        return {"num_classes": self.num_classes, "num_words": self.num_words, "name": self.name}


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
    "sequential": sequential,
    "functional": functional,
    "subclass": subclass,
    "multi_io": multi_io,
}


def build(name: str, input_shape: tuple, num_classes: int, num_words: int) -> keras.Model:
    """Builds a built-in model by name or calls a user's `package.module:function`.

    A user's model is checked at once, before anything is written: called on a
    batch of the task's input, it must give one output shaped like the task's head
    and have trainable weights.

    Raises:
        UsageError: the import path does not import, is not a builder (input_shape,
            num_classes) -> keras.Model, or the model does not fit the task.
        UserCodeError: the user's builder (or the module it is in) raised; the
            error carries the frames of the user's code.
    """
    if name in BUILTIN:
        return BUILTIN[name](input_shape, num_classes, num_words)
    builder = _builder(name)
    try:
        model = builder(input_shape, num_classes)
    except Exception as error:  # the user's code: any error, shown with its frames
        if not _is_user_code(builder):  # e.g. os.path:join, a library function
            raise UsageError(
                f"--model={name!r} is not a model builder: calling it with "
                f"({input_shape}, {num_classes}) raised "
                f"{type(error).__name__}: {_one_line(error)}"
            ) from None
        raise UserCodeError(
            f"--model={name!r}: the builder raised {type(error).__name__}: "
            f"{_one_line(error)} (its traceback is above)",
            _user_frames(error),
        ) from error
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"--model={name!r} returned {type(model).__name__}, not a "
            "keras.Model: the builder must return a model"
        )
    check_fits_task(name, model, input_shape, num_classes)
    return model


def _builder(name: str) -> Callable:
    """The function `package.module:function` names, checked to take (input_shape, num_classes)."""
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"--model={name!r} does not import ({type(error).__name__}: "
            f"{error}); give 'package.module:function' of a builder "
            "(input_shape, num_classes) -> keras.Model on PYTHONPATH"
        ) from None
    except Exception as error:  # the user's module itself raised while importing
        raise UserCodeError(
            f"--model={name!r}: importing {module_name} raised "
            f"{type(error).__name__}: {_one_line(error)} (its traceback is "
            "above)",
            _user_frames(error),
        ) from error
    try:
        builder = getattr(module, function_name)
    except AttributeError as error:
        raise UsageError(
            f"--model={name!r} does not import (AttributeError: {error}); give "
            "'package.module:function' of a builder (input_shape, num_classes) "
            "-> keras.Model on PYTHONPATH"
        ) from None
    if not callable(builder):
        raise UsageError(
            f"--model={name!r} names a {type(builder).__name__}, not a builder "
            "function (input_shape, num_classes) -> keras.Model"
        )
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # some built-ins have none: calling them tells
        return builder
    try:
        signature.bind(("input_shape",), "num_classes")
    except TypeError:
        raise UsageError(
            f"--model={name!r} takes ({', '.join(signature.parameters)}), not "
            "a builder (input_shape, num_classes) -> keras.Model"
        ) from None
    return builder


def check_fits_task(name: str, model: keras.Model, input_shape: tuple, num_classes: int) -> None:
    """Raises UsageError unless `model`, called on a batch of the task's input
    (int32 tokens [batch, *input_shape]), gives one output [batch, units] with the
    head's units (1 for the binary task, else `num_classes`) and has trainable weights."""
    units = 1 if num_classes == 2 else num_classes
    head = (
        "one sigmoid unit for the binary task"
        if num_classes == 2
        else f"a softmax over {num_classes} classes"
    )
    needed = f"one output [batch, {units}] ({head})"
    batch = np.zeros((2, *input_shape), dtype=np.int32)
    try:
        outputs = tf.nest.flatten(model(batch, training=False))
    except Exception as error:  # noqa: BLE001 - a model that cannot take the input
        raise UsageError(
            f"--model={name!r}: the model fails on the task's input (int32 "
            f"[batch, {', '.join(map(str, input_shape))}]): "
            f"{type(error).__name__}: {_one_line(error)}"
        ) from None
    if len(outputs) != 1:
        raise UsageError(f"--model={name!r} has {len(outputs)} outputs; the task needs {needed}")
    shape = tuple(outputs[0].shape)
    if shape != (batch.shape[0], units):
        given = ", ".join(["batch", *map(str, shape[1:])])
        raise UsageError(f"--model={name!r} outputs [{given}]; the task needs {needed}")
    if not model.trainable_weights:
        raise UsageError(
            f"--model={name!r} has no trainable weights: there is nothing to "
            "train (are all its layers frozen, trainable=False?)"
        )


def _is_user_code(builder: Callable) -> bool:
    """Whether `builder` is the user's own Python code (not a built-in, nor a function
    of the standard library or an installed package)."""
    try:
        path = inspect.getfile(inspect.unwrap(builder))  # a function's or a class's file
    except TypeError:  # built-in
        return False
    if path.startswith("<"):  # frozen modules (os.path), exec'd strings
        return False
    path = os.path.realpath(path)
    libraries = {
        os.path.realpath(folder)
        for key, folder in sysconfig.get_paths().items()
        if key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    return not any(path.startswith(folder + os.sep) for folder in libraries)


def _user_frames(error: BaseException) -> str:
    """`error`'s traceback from the first frame that is not the harness's own."""
    tb = error.__traceback__
    # The harness's frames, then (for an import) importlib's, lead to the user's code.
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in _HARNESS_FILES
        or tb.tb_frame.f_code.co_filename.startswith(_IMPORTLIB)
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def _one_line(error: BaseException) -> str:
    """The error's message on one line (Keras's are often several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 300 else text[:297] + "..."


_HARNESS_FILES = {__file__, importlib.__file__}
_IMPORTLIB = "<frozen importlib"
