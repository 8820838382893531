"""Checkpoints that resume exactly: model, optimizer and global step.

A `tf.train.CheckpointManager` keeps the newest `keep` checkpoints of a
`tf.train.Checkpoint(model=..., optimizer=...)`. The optimizer holds the global
step (`iterations`) and the learning rate; together with a data stream whose
order is a function of the step, that is everything an exact resume needs.
"""

import contextlib
import errno
import os
from collections.abc import Callable

import keras
import tensorflow as tf
from google.protobuf import text_format

from . import files
from .base import StepCallback, ends_epoch
from .guards import NonFinite


def make_manager(
    model: keras.Model,
    directory: str,
    keep: int,
    warn: Callable[[str], None] = print,
    extra: dict | None = None,
) -> tf.train.CheckpointManager:
    """A manager over the model, its (built) optimizer and the `extra` trackables
    (e.g. the epoch's running metrics, `epoch_state.EpochMetricsState.saved`).

    A damaged index file (`checkpoint`: emptied, cut short) is rebuilt from the
    checkpoint files on disk, with a warning: it only lists them.
    """
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, **(extra or {}))
    try:
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)
    except (ValueError, tf.errors.OpError, text_format.ParseError) as error:
        prefixes = _checkpoints_on_disk(directory)
        warn(
            f"warning: the checkpoint index {os.path.join(directory, 'checkpoint')} is "
            f"damaged ({type(error).__name__}); rebuilt from the {len(prefixes)} "
            "checkpoints on disk"
        )
        index = os.path.join(directory, "checkpoint")
        with files.write_errors(index):
            if prefixes:
                tf.compat.v1.train.update_checkpoint_state(
                    directory, prefixes[-1], all_model_checkpoint_paths=prefixes
                )
            else:
                os.remove(index)
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def restore_latest(
    manager: tf.train.CheckpointManager, warn: Callable[[str], None] = print
) -> str | None:
    """Restores the newest checkpoint that reads back whole.

    A checkpoint that is cut short or corrupt is skipped with a warning and
    the one before it is tried. Returns the restored path, or None if no
    checkpoint could be restored.
    """
    for path in reversed(checkpoint_prefixes(manager)):
        try:
            manager.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except (tf.errors.OpError, AssertionError, ValueError, IndexError) as error:
            warn(
                f"warning: checkpoint {path} is unreadable ({type(error).__name__}); "
                "trying the one before it"
            )
    return None


def checkpoint_prefixes(manager: tf.train.CheckpointManager) -> list:
    """The run's checkpoints, oldest first: the manager's list, or the files on
    disk when its index file (`checkpoint`) is missing, empty or damaged."""
    return manager.checkpoints or _checkpoints_on_disk(manager.directory)


def _checkpoints_on_disk(directory: str) -> list:
    """The checkpoints in `directory` by their files, oldest first, for when the
    manager's index file (`checkpoint`) is missing or damaged."""
    prefixes = [
        path[: -len(".index")] for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index"))
    ]
    return sorted(prefixes, key=lambda prefix: int(prefix.rsplit("-", 1)[1]))


def all_finite(variables) -> bool:
    """Whether every floating-point value in `variables` is finite."""
    checks = [
        tf.reduce_all(tf.math.is_finite(v)) for v in variables if tf.as_dtype(v.dtype).is_floating
    ]
    return bool(tf.reduce_all(checks)) if checks else True


class Checkpointing(StepCallback):
    """Saves a checkpoint at every epoch end and every `every_steps` train steps.

    Checkpoints are numbered by global step. The epoch-end checkpoint is the
    epoch's commit: put this callback after every callback that writes the
    epoch's record (summaries, best model, history), so a checkpoint at an
    epoch's last step always means the epoch is recorded; a step checkpoint
    due at that step waits for the epoch end. A crash before it resumes from
    an earlier checkpoint and redoes the epoch. A step that was just saved is
    not saved twice; `before_save` runs right before each save (e.g. copying
    state into a variable the checkpoint holds). Weights or optimizer state
    holding NaN or Inf are never saved: `NonFinite` is raised instead (a step's
    update can break the weights while its loss, computed before the update, is
    still finite).
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        every_steps: int = 0,
        steps_per_epoch: int = 0,
        before_save: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self.before_save = before_save
        self._last_saved = -1

    def save(self) -> str:
        """Saves the current state now, numbered by the optimizer's step count
        (also called on interruption, from any point of a batch's callbacks)."""
        step = int(self.model.optimizer.iterations.numpy())
        if self._last_saved != step:
            if not all_finite(self.model.variables + self.model.optimizer.variables):
                raise NonFinite("the weights or the optimizer state became NaN or Inf", step)
            prefix = os.path.join(self.manager.directory, f"ckpt-{step}")
            try:
                with files.write_errors(prefix):
                    self._check_directory()
                    self.before_save()
                    self.manager.save(checkpoint_number=step)
            except files.WriteFailed:
                _remove_partial(prefix)
                raise
            self._last_saved = step
        return self.manager.latest_checkpoint

    def _check_directory(self) -> None:
        """TensorFlow would quietly create a deleted checkpoint folder (and run
        directory) again; after the first save, a missing folder is an error."""
        if self._last_saved >= 0 and not os.path.isdir(self.manager.directory):
            raise FileNotFoundError(errno.ENOENT, "the folder was deleted", self.manager.directory)

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.crossed(self.every_steps) and not ends_epoch(
            self.global_step, self.steps_per_epoch
        ):
            self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.save()


def _remove_partial(prefix: str) -> None:
    """Removes what a failed save of checkpoint `prefix` left (its files and the
    temporary folder TensorFlow writes them in first)."""
    for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*"):
        with contextlib.suppress(tf.errors.OpError):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
