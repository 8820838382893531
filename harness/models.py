"""The built-in models and user models named by import path.

The built-in models follow the inputs (`input_kind`): `sequential`, `functional`
and `subclass` for token ids, and `sequential` also as a small Conv2D model for
images and an MLP for feature vectors. Each built-in builder has the signature
`(input_shape, task, num_words, x_train) -> keras.Model` and ends in the task's
head. A user's builder `package.module:function` takes `(input_spec, task)` (the
`tf.TensorSpec` of the input, or a dict of them, and the `harness.task.Task`) or,
as before, `(input_shape, num_classes)`.
"""

import inspect
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from harness import user_code
from harness.errors import UsageError
from harness.task import SingleOutput, Task

TOKENS, IMAGES, FEATURES, NAMED = "token ids", "images", "feature vectors", "named inputs"
EMBEDDING_DIM = 7


def sequential(input_shape: tuple, task: SingleOutput, num_words: int, x_train=None) -> keras.Model:
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
            task.head(),
        ],
        name="sequential",
    )


def functional(input_shape: tuple, task: SingleOutput, num_words: int, x_train=None) -> keras.Model:
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
    return keras.Model(tokens, task.head()(merged), name="functional")


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
        self.head = SingleOutput(num_classes).head()

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


def subclass(input_shape: tuple, task: SingleOutput, num_words: int, x_train=None) -> keras.Model:
    """The ResidualClassifier, built for `input_shape`."""
    model = ResidualClassifier(task.num_classes, num_words, name="subclass")
    model.build((None, *input_shape))
    return model


def conv2d(input_shape: tuple, task: SingleOutput, num_words: int, x_train=None) -> keras.Model:
    """The old tutorial's small image model: two Conv2D(padding='same') -> pool blocks,
    global average pooling, Dense(64) -> head."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="float32"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPool2D(padding="same"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPool2D(padding="same"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(64, activation="relu"),
            task.head(),
        ],
        name="sequential",
    )


def mlp(input_shape: tuple, task: SingleOutput, num_words: int, x_train=None) -> keras.Model:
    """Normalization (adapted to the training features) -> Dense(64) x 2 -> head."""
    normalization = layers.Normalization()
    if x_train is not None:  # arrays, or a tf.data.Dataset of batches
        normalization.adapt(x_train)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="float32"),
            normalization,
            layers.Dense(64, activation="relu"),
            layers.Dense(64, activation="relu"),
            task.head(),
        ],
        name="sequential",
    )


def multi_io(input_spec: dict, task: Task, num_words: int, x_train=None) -> keras.Model:
    """The tickets model of Keras's functional-API guide (see harness.multi_io)."""
    from harness import multi_io as tickets  # the task module builds on this one's users

    return tickets.build(input_spec["body"].shape[1], task.num_departments, num_words)


def _tickets_run(config) -> tuple:
    from harness import multi_io as tickets

    return tickets.own_run(config)


# Built-in models that train on data and a task of their own, not --dataset's:
# name -> a function of the Config giving (RunData, Task).
OWN_RUNS: dict[str, Callable[..., tuple]] = {"multi_io": _tickets_run}

# Built-in model name -> {the kind of input it takes: builder}.
BUILTIN: dict[str, dict[str, Callable[..., keras.Model]]] = {
    "sequential": {TOKENS: sequential, IMAGES: conv2d, FEATURES: mlp},
    "functional": {TOKENS: functional},
    "subclass": {TOKENS: subclass},
    "multi_io": {NAMED: multi_io},
}
NEW_STYLE = (
    "input_spec",
    "task",
)  # a user builder's parameters; others get (input_shape, num_classes)


def token_spec(length: int) -> tf.TensorSpec:
    """The spec of a batch of token-id sequences of `length`."""
    return tf.TensorSpec((None, length), tf.int32)


def input_kind(spec) -> str:
    """TOKENS (int [batch, length]), IMAGES ([batch, height, width, channels]),
    FEATURES (float [batch, n]), NAMED (a dict of inputs) or a description of
    what no built-in model takes."""
    if isinstance(spec, dict):
        return NAMED
    rank = spec.shape.rank
    if rank == 2:
        return TOKENS if spec.dtype.is_integer else FEATURES
    if rank == 4:
        return IMAGES
    return f"{spec.dtype.name} {describe(spec)}"


def describe(spec) -> str:
    """'[batch, 8, 8, 3]', or per input for a dict."""
    if isinstance(spec, dict):
        return ", ".join(f"{name}: {spec[name].dtype.name} {describe(spec[name])}" for name in spec)
    return "[" + ", ".join(["batch", *map(str, spec.shape[1:])]) + "]"


def build(name: str, spec, task: Task, num_words: int, x_train=None, given=None) -> keras.Model:
    """Builds a built-in model for the input `spec` by name, or calls a user's
    builder: `given` (the Python API's `model=`, a builder or a `keras.Model`) or the
    `package.module:function` that `name` is; `x_train` adapts the MLP's normalization.

    A user's model is checked at once, before anything is written: called on a
    batch of the task's input, its outputs must fit the task and it must have
    trainable weights.

    Raises:
        UsageError: no built-in model of that name takes this input; the import
            path does not import or is not a builder; the model does not fit the task.
        UserCodeError: the user's builder (or the module it is in) raised; the
            error carries the frames of the user's code.
    """
    if given is None and name in BUILTIN:
        kind = input_kind(spec)
        if kind not in BUILTIN[name]:
            fitting = [n for n, builders in BUILTIN.items() if kind in builders]
            use = f"--model={' or --model='.join(fitting)}" if fitting else "your own --model"
            raise UsageError(
                f"--model={name} takes {' or '.join(BUILTIN[name])}; this data's inputs are "
                f"{kind if kind in (TOKENS, IMAGES, FEATURES) else describe(spec)}: use {use} "
                "(a builder package.module:function)"
            )
        shape = spec if kind == NAMED else tuple(spec.shape[1:])
        return BUILTIN[name][kind](shape, task, num_words, x_train)
    where = "model=" if given is not None else f"--model={name!r}"
    if isinstance(given, keras.Model):
        if tf.distribute.has_strategy():
            raise UsageError(
                "model= is a model built already; under a distribution strategy give a "
                "builder (input_spec, task) -> keras.Model, so that its variables are "
                "made in the strategy's scope"
            )
        check_fits_task(where, given, spec, task)
        return given
    if given is not None and (isinstance(given, layers.Layer) or not callable(given)):
        raise UsageError(
            f"model= is a {type(given).__name__}; give a keras.Model or a builder "
            "(input_spec, task) -> keras.Model"
        )
    builder = given or user_code.import_function(
        "model", name, "a builder (input_spec, task) -> keras.Model"
    )
    params = user_code.parameters(builder)
    if params is not None and params[:2] == list(NEW_STYLE):
        args = (spec, task)
    elif isinstance(spec, dict) or not isinstance(task, SingleOutput):
        raise UsageError(
            f"{where} takes ({', '.join(params or ())}); for this data the builder "
            "must take (input_spec, task)"
        )
    else:
        args = (tuple(spec.shape[1:]), task.num_classes)
        if params is not None and not _binds(builder, args):
            raise UsageError(
                f"{where} takes ({', '.join(params)}), not a builder "
                "(input_spec, task) or (input_shape, num_classes) -> keras.Model"
            )
    model = user_code.call(where, builder, args, what="a model builder")
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"{where} returned {type(model).__name__}, not a "
            "keras.Model: the builder must return a model"
        )
    check_fits_task(where, model, spec, task)
    return model


def compiled_args(model: keras.Model) -> dict | None:
    """The loss, loss weights and metrics a user compiled `model` with (None: not
    compiled), for the harness to compile it again with its own optimizer."""
    if not model.compiled:
        return None
    # Keras 3 keeps compile()'s arguments as given; get_compile_config() would
    # serialize them, which a user's custom loss or metric may not support.
    given = model._compile_config.config
    keys = ("loss", "loss_weights", "metrics", "weighted_metrics")
    return {key: given[key] for key in keys if given.get(key) is not None}


def _binds(function: Callable, args: tuple) -> bool:
    try:
        inspect.signature(function).bind(*args)
    except TypeError:
        return False
    return True


def check_fits_task(where: str, model: keras.Model, spec, task: Task) -> None:
    """Raises UsageError unless `model`, called on a batch of zeros shaped by `spec`,
    gives outputs that fit `task` and has trainable weights."""
    batch = tf.nest.map_structure(
        lambda s: np.zeros((2, *s.shape[1:]), dtype=s.dtype.as_numpy_dtype), spec
    )
    try:
        outputs = model(batch, training=False)
    except Exception as error:  # noqa: BLE001 - a model that cannot take the input
        raise UsageError(
            f"{where}: the model fails on the task's input "
            f"({_dtypes(spec)} {describe(spec)}): "
            f"{type(error).__name__}: {user_code.one_line(error)}"
        ) from None
    problem = task.check_outputs(outputs, 2)
    if problem:
        raise UsageError(f"{where} {problem}")
    if not model.trainable_weights:
        raise UsageError(
            f"{where} has no trainable weights: there is nothing to "
            "train (are all its layers frozen, trainable=False?)"
        )


def _dtypes(spec) -> str:
    return "" if isinstance(spec, dict) else spec.dtype.name
