"""Checkpoints that resume exactly: model, optimizer and global step.

A `tf.train.CheckpointManager` keeps the newest `keep` checkpoints of a
`tf.train.Checkpoint(model=..., optimizer=...)`. The optimizer holds the global
step (`iterations`) and the learning rate; together with a data stream whose
order is a function of the step, that is everything an exact resume needs.
"""

import os
from typing import Callable, Optional

import keras
import tensorflow as tf

from callbacks.base import StepCallback
from callbacks.guards import NonFinite


def make_manager(model: keras.Model, directory: str, keep: int) -> tf.train.CheckpointManager:
    """A manager over the model and its (built) optimizer."""
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def restore_latest(manager: tf.train.CheckpointManager,
                   warn: Callable[[str], None] = print) -> Optional[str]:
    """Restores the newest checkpoint that reads back whole.

    A checkpoint that is cut short or corrupt is skipped with a warning and
    the one before it is tried. Returns the restored path, or None if no
    checkpoint could be restored.
    """
    for path in reversed(manager.checkpoints or _checkpoints_on_disk(manager.directory)):
        try:
            manager.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except (tf.errors.OpError, AssertionError, ValueError, IndexError) as error:
            warn(f"warning: checkpoint {path} is unreadable ({type(error).__name__}); "
                 "trying the one before it")
    return None


def _checkpoints_on_disk(directory: str) -> list:
    """The checkpoints in `directory` by their files, oldest first, for when the
    manager's index file (`checkpoint`) is missing or damaged."""
    prefixes = [path[:-len(".index")] for path in tf.io.gfile.glob(
        os.path.join(directory, "ckpt-*.index"))]
    return sorted(prefixes, key=lambda prefix: int(prefix.rsplit("-", 1)[1]))


def all_finite(variables) -> bool:
    """Whether every floating-point value in `variables` is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables
              if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all(checks)) if checks else True


class Checkpointing(StepCallback):
    """Saves a checkpoint at every epoch end and every `every_steps` train steps.

    Checkpoints are numbered by global step. A step that was just saved is not
    saved twice (an epoch end that falls on a step checkpoint). Weights or
    optimizer state holding NaN or Inf are never saved: `NonFinite` is raised
    instead (a step's update can break the weights while its loss, computed
    before the update, is still finite).
    """

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int = 0) -> None:
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self._last_saved = -1

    def save(self) -> str:
        """Saves the current state now, numbered by the optimizer's step count
        (also called on interruption, from any point of a batch's callbacks)."""
        step = int(self.model.optimizer.iterations.numpy())
        if self._last_saved != step:
            if not all_finite(self.model.variables + self.model.optimizer.variables):
                raise NonFinite("the weights or the optimizer state became NaN or Inf", step)
            self.manager.save(checkpoint_number=step)
            self._last_saved = step
        return self.manager.latest_checkpoint

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.crossed(self.every_steps):
            self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.save()
