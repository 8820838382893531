"""The epoch's running train metrics, carried across a resume in mid-epoch.

A run resumed from a checkpoint taken part-way through an epoch would average
that epoch's train metrics (history, `batch_loss`, `epoch_*`) over the steps
after the resume only. `EpochMetricsState` keeps the metrics' running state in
the checkpoint (a vector, `saved`, written just before each save) and hands it
back to the loop when the resumed epoch begins, after the loop has reset its
metrics: the resumed run logs what the uninterrupted run logged.

What the state is depends on the loop (Keras's metric variables, the tape
loop's loss mean, the `train_on_batch` loop's running sums): the loop attaches
a `MetricState` that reads and writes it.
"""

from collections.abc import Callable
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf


class MetricState(Protocol):
    """Reads and writes a loop's running train metrics as one flat vector."""

    def get_state(self) -> np.ndarray:
        """The running state now."""

    def set_state(self, values: np.ndarray) -> None:
        """Sets the running state to `values` (a vector `get_state` returned)."""


class VariablesState:
    """A `MetricState` over metric variables (Keras's, or any `keras.Variable`s).

    Args:
        variables: returns the variables; asked at each read and write, since
            Keras creates a model's compiled metrics at its first train step.
    """

    def __init__(self, variables: Callable[[], list]) -> None:
        self.variables = variables

    def get_state(self) -> np.ndarray:
        return np.concatenate(
            [np.ravel(v.numpy()).astype(np.float64) for v in self.variables()] or [np.zeros(0)]
        )

    def set_state(self, values: np.ndarray) -> None:
        variables = self.variables()
        sizes = [int(np.prod(v.shape)) for v in variables]
        if len(values) != sum(sizes):
            raise ValueError(
                f"the checkpoint's metric state has {len(values)} values, "
                f"the model's metrics {sum(sizes)}"
            )
        for variable, part in zip(variables, np.split(values, np.cumsum(sizes)[:-1])):
            variable.assign(np.reshape(part, variable.shape).astype(variable.dtype))


class EpochMetricsState(keras.callbacks.Callback):
    """Saves the loop's running metrics with each checkpoint; restores them once.

    Put `saved` in the checkpoint, call `capture()` right before each save, and
    `resume_at(epoch)` after restoring a checkpoint taken in mid-epoch. Place
    this callback first: its `on_epoch_begin` must run before any other
    callback reads the logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.saved = tf.Variable(
            np.zeros(0),
            shape=tf.TensorShape([None]),
            dtype=tf.float64,
            trainable=False,
            name="epoch_metrics",
        )
        self.state: MetricState | None = None
        self._resume_epoch: int | None = None

    def attach(self, state: MetricState) -> None:
        """The loop's metrics, read at each save and written when resuming."""
        self.state = state

    def capture(self) -> None:
        """Copies the running state into `saved` (call right before a checkpoint save)."""
        if self.state is not None:
            self.saved.assign(self.state.get_state())

    def resume_at(self, epoch: int) -> None:
        """The restored `saved` is handed back when `epoch` (0-based) begins."""
        self._resume_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if epoch == self._resume_epoch and self.state is not None:
            values = self.saved.numpy()
            if values.size:
                self.state.set_state(values)
        self._resume_epoch = None
