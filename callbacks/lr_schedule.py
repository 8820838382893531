"""Learning-rate schedules: cosine decay and warmup per step, a cut on a plateau.

Design: cosine and warmup change the rate every step, so they are a schedule on the
optimizer's `iterations` (which the checkpoint holds): exact across a resume and in
every loop, also inside a compiled call of many steps. Without them the rate stays a
plain variable, as before (a user's `ReduceLROnPlateau` may assign it). Halving and
the plateau cut *multiply* the rate they find at an epoch boundary (`multiply`): the
plain variable, or the schedule's `scale`, which the checkpoint holds beside the
optimizer (`checkpointed`). The plateau's state is a function of the monitored
values before a resume (`plateau_state`), like early stopping's patience.
"""

import math
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from .early_stopping import improves, patience_state


@keras.saving.register_keras_serializable(package="harness")
class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`initial_rate` x `scale` x linear warmup x cosine decay, at an optimizer step.

    Args:
        initial_rate: the rate after warmup, before any decay.
        warmup_steps: the rate rises linearly over these first steps, from
            `initial_rate / warmup_steps` at step 0 to `initial_rate` (0 = no warmup).
        decay_steps: the rate falls along a half cosine to 0 over these steps
            (0 = no decay); the run's steps, epochs x steps per epoch.
        scale: the start value of the multiplier that halving and the plateau cut.
    """

    def __init__(
        self,
        initial_rate: float,
        warmup_steps: int = 0,
        decay_steps: int = 0,
        scale: float = 1.0,
    ) -> None:
        self.initial_rate = initial_rate
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.scale = tf.Variable(scale, trainable=False, dtype=tf.float32, name="lr_scale")

    def __call__(self, step):
        step = tf.cast(tf.convert_to_tensor(step), tf.float32)
        rate = self.initial_rate * tf.convert_to_tensor(self.scale)
        if self.warmup_steps:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        if self.decay_steps:
            done = tf.minimum(step, float(self.decay_steps)) / self.decay_steps
            rate *= 0.5 * (1.0 + tf.cos(math.pi * done))
        return rate

    def get_config(self) -> dict:
        return {
            "initial_rate": self.initial_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "scale": float(self.scale.numpy()),
        }


def learning_rate(
    schedule: str, initial_rate: float, warmup_steps: int, total_steps: int
) -> float | StepSchedule:
    """What the optimizer gets: a plain rate unless the rate changes every step."""
    if schedule != "cosine" and not warmup_steps:
        return initial_rate
    return StepSchedule(initial_rate, warmup_steps, total_steps if schedule == "cosine" else 0)


def _multiplier(optimizer: keras.optimizers.Optimizer):
    """The variable to multiply to change `optimizer`'s rate; ValueError if there is none."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    # Keras 3's `learning_rate` property evaluates a schedule; `_learning_rate`
    # holds the schedule object itself (or the variable of a plain rate).
    rate = getattr(optimizer, "_learning_rate", optimizer.learning_rate)
    if isinstance(rate, StepSchedule):
        return rate.scale
    if isinstance(rate, keras.Variable):
        return rate
    raise ValueError(
        f"learning-rate halving or a plateau cut needs a plain learning rate, but the "
        f"optimizer uses a schedule ({type(rate).__name__}); remove the schedule or "
        "disable halving with an empty --lr_halve_epochs"
    )


def check(optimizer: keras.optimizers.Optimizer) -> None:
    """Raises ValueError if `optimizer`'s rate is a schedule that cannot be multiplied."""
    _multiplier(optimizer)


def multiply(optimizer: keras.optimizers.Optimizer, factor: float) -> float:
    """Multiplies `optimizer`'s rate by `factor`; returns the rate of its next step."""
    variable = _multiplier(optimizer)
    variable.assign(float(variable.numpy()) * factor)
    return float(tf.convert_to_tensor(optimizer.learning_rate))


def checkpointed(optimizer: keras.optimizers.Optimizer) -> dict:
    """The rate's state a checkpoint holds besides the optimizer (a schedule's scale)."""
    rate = getattr(getattr(optimizer, "inner_optimizer", optimizer), "_learning_rate", None)
    return {"lr_scale": rate.scale} if isinstance(rate, StepSchedule) else {}


def plateau_state(
    values: Sequence[float], higher_is_better: bool, patience: int
) -> tuple[float | None, int]:
    """(best value, epochs waited since the best or the last cut) after the epochs whose
    monitored values are `values`: a cut every `patience` epochs without a new best."""
    best, wait = patience_state(values, higher_is_better, 0.0)
    return best, wait % patience


class LearningRateOnPlateau(keras.callbacks.Callback):
    """Multiplies the rate by `factor` at the end of each `patience`-th epoch in a row
    in which `monitor` did not improve on its best (by any amount); the rate of that
    epoch is logged before it.

    Args:
        monitor: a key of the epoch logs, e.g. `val_loss`.
        higher_is_better: whether larger values of `monitor` are better.
        patience: epochs without an improvement before each cut.
        factor: the multiplier (0.5 halves).
        earlier: the monitored values of the epochs before a resume.
        print_fn: where the change is announced.
    """

    def __init__(
        self,
        monitor: str,
        higher_is_better: bool,
        patience: int,
        factor: float,
        *,
        earlier: Sequence[float] = (),
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.patience = patience
        self.factor = factor
        self.print_fn = print_fn
        self.best, self.wait = plateau_state(earlier, higher_is_better, patience)

    def on_train_begin(self, logs=None) -> None:
        check(self.model.optimizer)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = float((logs or {}).get(self.monitor, math.nan))
        if improves(value, self.best, self.higher_is_better):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        rate = multiply(self.model.optimizer, self.factor)
        self.print_fn(
            f"Epoch {epoch + 1}: {self.monitor} has not improved for {self.patience} "
            f"epoch(s): learning rate x{self.factor:g} -> {rate:.6g}"
        )
