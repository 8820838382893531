"""A user's own `tf.data` pipelines as run data: a pair of `tf.data.Dataset`s of
unbatched `(x, y)` examples, which the harness batches.

The pipelines are read once at the start, to count the examples and take the labels
(which choose the task, as for arrays); training then streams them. The batch at
global step s is the s-th batch of `train.batch(batch_size).repeat()`, so a resumed
run skips to its step and sees the batches an uninterrupted run saw, provided the
pipeline gives the same examples in the same order each time it is read (a seeded
`shuffle`, no `AUTOTUNE`-ordered `interleave` with `deterministic=False`). A
non-deterministic pipeline trains, but its resumed run sees different batches.
"""

import numpy as np
import tensorflow as tf

from harness import task
from harness.errors import UsageError

# Examples read per batch when counting and collecting the labels.
_SCAN_BATCH = 4096


class DatasetStream:
    """The training batches of a user's pipeline (see `pipeline.Batches`): every batch
    from one iterator, the batch size not static, no partial batches of their own."""

    partial_size = 0

    def __init__(self, train: tf.data.Dataset, batch_size: int, cast) -> None:
        self._train = train
        self._cast = cast
        self.batch_size = batch_size

    def batches(self, start_step: int = 0) -> tf.data.Dataset:
        """Every batch, from global step `start_step` on (the skipped ones are read,
        not cast)."""
        batched = self._train.batch(self.batch_size).repeat().skip(start_step)
        return _cast_batches(batched, self._cast)

    full_batches = batches

    def partial_batches(self, start_step: int = 0) -> tf.data.Dataset:
        raise ValueError("a user's pipeline streams its partial batches with the full ones")

    def next_partial_step(self, step: int) -> int | None:
        return None


class DatasetSplits:
    """A user's training and validation pipelines, counted and checked (see `data.RunData`)."""

    vocabulary = class_names = words = None

    def __init__(self, where: str, train, val, forced_task: str, num_examples: int | None):
        train, val = (_checked(where, split, ds) for split, ds in (("train", train), ("val", val)))
        if num_examples:
            train = train.take(num_examples)
        labels = {split: _labels(ds) for split, ds in (("train", train), ("val", val))}
        for split, y in labels.items():
            if not len(y):
                raise UsageError(f"{where}: the {split} dataset is empty")
        if num_examples and num_examples > len(labels["train"]):
            raise UsageError(
                f"--num_examples={num_examples} is not allowed: {where} has "
                f"{len(labels['train'])} training examples; use at most that"
            )
        try:
            fitting = task.for_labels(labels["train"], labels["val"], forced_task)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        self.num_classes = fitting.num_classes
        self.targets = fitting.targets
        self.train_size, self.val_size = len(labels["train"]), len(labels["val"])
        label_dtype = tf.float32 if self.num_classes is task.REGRESSION else tf.int32
        self._cast = _caster(label_dtype, self.targets)
        self._train, self._val = train, val

    def probe(self, size: int) -> tuple:
        """The first `size` training examples, as one fixed (x, y) batch."""
        return self._cast(*self._train.batch(size).take(1).get_single_element())

    def input_spec(self):
        """The `tf.TensorSpec` of a batch of inputs (a dict of them for named inputs)."""
        x_spec = self._train.element_spec[0]
        return tf.nest.map_structure(
            lambda s: tf.TensorSpec((None, *s.shape), _input_dtype(s.dtype)), x_spec
        )

    def features(self) -> tf.data.Dataset:
        """Batches of the training inputs, for a preprocessing layer's `adapt`."""
        return _cast_batches(self._train.batch(_SCAN_BATCH), self._cast).map(lambda x, y: x)

    def stream(self, batch_size: int, seed: int) -> DatasetStream:
        """The training batches; the order is the pipeline's own (`seed` is its to use)."""
        return DatasetStream(self._train, batch_size, self._cast)

    def validation(self, batch_size: int) -> tf.data.Dataset:
        """The validation batches, in the pipeline's order."""
        return _cast_batches(self._val.batch(batch_size), self._cast)

    def test(self, batch_size: int) -> None:
        """None: a pair of pipelines has no test split apart from validation."""
        return None


def is_pair(value) -> bool:
    """Whether `value` is a pair of `tf.data.Dataset`s."""
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(ds, tf.data.Dataset) for ds in value)
    )


def _checked(where: str, split: str, ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` if it holds finite, unbatched (x, y) examples of numbers."""
    if ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise UsageError(
            f"{where}: the {split} dataset repeats forever; return one pass over the "
            "examples (drop .repeat()), the harness repeats it"
        )
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise UsageError(
            f"{where}: the {split} dataset's elements are {_shown(spec)}; give (x, y) "
            "examples, e.g. tf.data.Dataset.from_tensor_slices((x, y))"
        )
    x_spec, y_spec = spec
    for name, s in [*_named("x", x_spec), ("y", y_spec)]:
        if not isinstance(s, tf.TensorSpec) or not (s.dtype.is_floating or s.dtype.is_integer):
            raise UsageError(
                f"{where}: the {split} dataset's {name} is {_shown(s)}; give numeric tensors "
                "(text: tokenize it in the pipeline, or give a folder of .txt files)"
            )
    if y_spec.shape.rank and y_spec.shape[0] is None:
        raise UsageError(
            f"{where}: the {split} dataset looks batched (y has shape {y_spec.shape}); "
            "give unbatched examples (drop .batch()), the harness batches them"
        )
    return ds


def _named(name: str, spec) -> list:
    if isinstance(spec, dict):
        return [(f"{name}/{k}", s) for k, s in spec.items()]
    return [(name, spec)]


def _shown(spec) -> str:
    return repr(spec).replace("\n", " ")


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    """Every label of `ds`, in one read of it."""
    batches = list(ds.map(lambda x, y: y).batch(_SCAN_BATCH).as_numpy_iterator())
    return np.concatenate(batches) if batches else np.zeros((0,))


def _input_dtype(dtype: tf.DType) -> tf.DType:
    """What the model's inputs take: float32 for floats, int32 token ids otherwise."""
    return tf.float32 if dtype.is_floating else tf.int32


def _caster(label_dtype: tf.DType, targets: int):
    """A batch's (x, y) cast as the model takes them: float inputs as float32, integer
    inputs as int32, labels as the task takes them ([batch] classes, [batch, targets])."""

    def cast(x, y):
        x = tf.nest.map_structure(lambda t: tf.cast(t, _input_dtype(t.dtype)), x)
        y = tf.cast(y, label_dtype)
        shape = [-1, targets] if label_dtype == tf.float32 else [-1]
        return x, tf.reshape(y, shape)

    return cast


def _cast_batches(batches: tf.data.Dataset, cast) -> tf.data.Dataset:
    """`batches` cast, a batch at a time (not per example: less tf.data work), prefetched."""
    mapped = batches.map(cast, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return mapped.prefetch(tf.data.AUTOTUNE)
