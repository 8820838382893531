"""The tf.data pipeline a loop reads arrays through.

The training pipeline is an endless stream of batches whose order depends only
on (seed, epoch of the data), so any loop, and any resumed run, sees the same
batches at the same global step: per pass: permutation(seed, pass) -> parts of
it gathered in one op each (a part ahead) -> batches sliced from each part ->
prefetch.
"""

import math
from typing import Protocol

import tensorflow as tf

ROWS_PER_GATHER = 4096  # training rows gathered at a time (see TrainStream)
BATCHES_AHEAD = 4  # training batches prefetched (see _prefetched)


class Batches(Protocol):
    """The training batches a loop reads: `TrainStream` (arrays) or
    `user_datasets.DatasetStream` (a user's tf.data pipeline).

    `batches(step)` is every batch from global step `step` on. The tape loop reads
    `full_batches(step)` (static batch size) and, where `next_partial_step` says so,
    `partial_batches(step)`; a stream without static shapes gives every batch from
    `full_batches`, `partial_size` 0 and no partial steps.
    """

    partial_size: int

    def batches(self, start_step: int = 0) -> tf.data.Dataset: ...

    def full_batches(self, start_step: int = 0) -> tf.data.Dataset: ...

    def partial_batches(self, start_step: int = 0) -> tf.data.Dataset: ...

    def next_partial_step(self, step: int) -> int | None: ...


def num_examples(x) -> int:
    """The examples in an array or a dict of arrays."""
    return len(tf.nest.flatten(x)[0])


class TrainStream:
    """The training batches: an endless stream of shuffled passes over (`x`, `y`).

    Every pass over the data (a "data epoch") is a permutation seeded by (`seed`,
    pass number) and ends with its partial batch, so the batch at a given global
    step is the same in every loop and after a resume. The permutation is read
    in parts of `rows_per_gather` rows (rounded down to whole batches, at least
    one), each gathered in one op a part ahead of training, and the batches are
    slices of the part: less tf.data CPU per batch than an element-wise
    cache -> shuffle -> batch pipeline (docs/performance.md), and memory flat as
    the data grows: the arrays (held once, however many datasets are made) plus
    two parts.

    `batches` is the stream itself. `full_batches` and `partial_batches` cut the
    same stream in two, each with a static batch size, for a loop that reads them
    from two iterators (see harness.loops.tape_steps).
    """

    def __init__(
        self, x, y, *, batch_size: int, seed: int, rows_per_gather: int = ROWS_PER_GATHER
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.size = num_examples(x)
        self.batches_per_pass = math.ceil(self.size / batch_size)
        self.partial_size = self.size % batch_size  # 0: every batch is full
        self._rows_per_part = batch_size * max(1, rows_per_gather // batch_size)
        self._arrays = tf.nest.map_structure(tf.constant, (x, y))

    def batches(self, start_step: int = 0) -> tf.data.Dataset:
        """Every batch, from global step `start_step` on."""
        return self._sliced(start_step, with_partial=True)

    def full_batches(self, start_step: int = 0) -> tf.data.Dataset:
        """The full batches from global step `start_step` on, with a static batch size."""
        return self._sliced(start_step, with_partial=False)

    def partial_batches(self, start_step: int = 0) -> tf.data.Dataset:
        """The partial batch of every pass from global step `start_step` on (shape static)."""
        if not self.partial_size:
            raise ValueError(
                f"{self.size} examples make whole batches of {self.batch_size}: "
                "the stream has no partial batches"
            )
        # The pass holding `start_step`: its partial batch is its last step, so not yet trained.
        first_pass = start_step // self.batches_per_pass
        tail = self.size - self.partial_size
        passes = tf.data.Dataset.range(first_pass, 2**62)
        return _prefetched(passes.map(lambda n: self._gather(self._permutation(n)[tail:])))

    def next_partial_step(self, step: int) -> int | None:
        """The first global step from `step` on that trains on a partial batch (None: never)."""
        if not self.partial_size:
            return None
        return step + (self.batches_per_pass - 1 - step % self.batches_per_pass)

    def _sliced(self, start_step: int, *, with_partial: bool) -> tf.data.Dataset:
        first_pass, offset = divmod(start_step, self.batches_per_pass)

        def parts_of(order):
            return _slices(order, self._rows_per_part)

        def batches_of(*part):
            return _slices(part, self.batch_size, with_rest=with_partial)

        parts = (
            tf.data.Dataset.range(first_pass, 2**62)
            .map(self._permutation)
            .flat_map(parts_of)
            .map(self._gather)
            .prefetch(1)
        )
        # Without the partial batches the offset is the same: a pass's partial batch is its last.
        return _prefetched(parts.flat_map(batches_of).skip(offset))

    def _permutation(self, pass_number):
        return tf.random.experimental.stateless_shuffle(
            tf.range(self.size),
            seed=tf.stack([tf.constant(self.seed, tf.int64), pass_number]),
            alg="philox",
        )

    def _gather(self, rows):
        return tf.nest.map_structure(lambda array: tf.gather(array, rows), self._arrays)


def _prefetched(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` prefetched BATCHES_AHEAD batches ahead with tf.data's autotuner off.

    On two cores tf.data's thread gets the CPU late, and a deeper fixed buffer
    covers that better than the autotuner (docs/performance.md); the batches are
    slices, so nothing needs tuning."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(BATCHES_AHEAD).with_options(options)


def _slices(tensors, length: int, *, with_rest: bool = True) -> tf.data.Dataset:
    """`tensors` (a nest) cut along axis 0 into slices of `length` rows, then (if
    `with_rest`) a shorter rest; the whole slices have a static first dimension."""
    rows = tf.shape(tf.nest.flatten(tensors)[0])[0]
    whole = rows - rows % length
    full = tf.nest.map_structure(
        lambda tensor: tf.reshape(tensor[:whole], [-1, length, *tensor.shape[1:]]), tensors
    )
    slices = tf.data.Dataset.from_tensor_slices(full)
    if not with_rest:
        return slices
    rest = tf.nest.map_structure(lambda tensor: tensor[whole:], tensors)
    nonempty = tf.data.Dataset.from_tensors(rest).filter(
        lambda *part: tf.shape(tf.nest.flatten(part)[0])[0] > 0
    )
    return slices.concatenate(nonempty)


def validation_dataset(x, y, *, batch_size: int) -> tf.data.Dataset:
    """The validation batches in a fixed order."""
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .cache()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def steps_for(num_examples: int, batch_size: int, steps: int | None) -> int:
    """`steps` if given, else the batches in one pass over `num_examples`."""
    return steps if steps else math.ceil(num_examples / batch_size)
