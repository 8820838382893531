"""Checkpoints that resume exactly: model, optimizer and global step.

A `tf.train.CheckpointManager` keeps the newest `keep` checkpoints of a
`tf.train.Checkpoint(model=..., optimizer=...)`. The optimizer holds the global
step (`iterations`) and the learning rate; together with a data stream whose
order is a function of the step, that is everything an exact resume needs.
"""

from typing import Callable, Optional

import keras
import tensorflow as tf

from callbacks.base import StepCallback


def make_manager(model: keras.Model, directory: str, keep: int) -> tf.train.CheckpointManager:
    """A manager over the model and its (built) optimizer."""
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def restore_latest(manager: tf.train.CheckpointManager,
                   steps_per_epoch: Optional[int] = None) -> Optional[str]:
    """Restores the newest checkpoint (with `steps_per_epoch`, the newest at an
    epoch boundary). Returns its path, or None if there is none."""
    candidates = list(reversed(manager.checkpoints))
    if steps_per_epoch:
        candidates = [path for path in candidates
                      if _step_of(path) % steps_per_epoch == 0]
    if not candidates:
        return None
    manager.checkpoint.restore(candidates[0]).assert_existing_objects_matched()
    return candidates[0]


def _step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


class Checkpointing(StepCallback):
    """Saves a checkpoint at every epoch end and every `every_steps` train steps.

    Checkpoints are numbered by global step. A step that was just saved is not
    saved twice (an epoch end that falls on a step checkpoint).
    """

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int = 0,
                 print_fn: Callable[[str], None] = print) -> None:
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self.print_fn = print_fn
        self._last_saved = -1

    def save(self) -> str:
        """Saves the current state now (also used on interruption)."""
        if self._last_saved != self.global_step:
            self.manager.save(checkpoint_number=self.global_step)
            self._last_saved = self.global_step
        return self.manager.latest_checkpoint

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.every_steps and self.global_step % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.save()
