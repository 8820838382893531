"""Early stopping whose patience survives a resume.

`EarlyStopping` stops training once `monitor` has gone `patience` epochs without
improving on its best by more than `min_delta`. Its state (the best value and
the epochs waited) is a function of the monitored values alone
(`patience_state`), so a resumed run starts from the values its history holds
and stops at the epoch an uninterrupted run stops at.
"""

import math
from collections.abc import Callable, Sequence

import keras


def improves(
    value: float, best: float | None, higher_is_better: bool, min_delta: float = 0.0
) -> bool:
    """Whether `value` beats `best` by more than `min_delta` (a non-finite value never
    does; anything finite beats no best)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


def patience_state(
    values: Sequence[float], higher_is_better: bool, min_delta: float
) -> tuple[float | None, int]:
    """(best value, epochs since it) after the epochs whose monitored values are `values`."""
    best, wait = None, 0
    for value in values:
        if improves(float(value), best, higher_is_better, min_delta):
            best, wait = float(value), 0
        else:
            wait += 1
    return best, wait


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when `monitor` stops improving; optionally restores the best
    model's weights (the `.keras` file at `best_path`, which `BestModel` keeps) when
    it stops.

    Args:
        monitor: a key of the epoch logs, e.g. `val_loss`.
        higher_is_better: whether larger values of `monitor` are better.
        patience: epochs without an improvement before training stops.
        min_delta: what counts as an improvement: more than this.
        earlier: the monitored values of the epochs before a resume.
        best_path: the best model to restore the weights of when stopping; None: keep
            the last epoch's weights.
        print_fn: where the line saying why training stopped goes.
    """

    def __init__(
        self,
        monitor: str,
        higher_is_better: bool,
        patience: int,
        min_delta: float = 0.0,
        *,
        earlier: Sequence[float] = (),
        best_path: str | None = None,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.patience = patience
        self.min_delta = min_delta
        self.best_path = best_path
        self.print_fn = print_fn
        self.best, self.wait = patience_state(earlier, higher_is_better, min_delta)
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = float((logs or {}).get(self.monitor, math.nan))
        if improves(value, self.best, self.higher_is_better, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.model.stop_training = True
        self.stopped_epoch = epoch + 1
        restored = ""
        if self.best_path:
            self.model.load_weights(self.best_path)
            restored = "; the best model's weights are restored"
        self.print_fn(
            f"Epoch {epoch + 1}: early stopping: {self.monitor} has not improved on "
            f"{self.best:.4g} by more than {self.min_delta:g} for {self.wait} epochs{restored}"
        )
