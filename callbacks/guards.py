"""Guards that stop a run cleanly: a non-finite loss, or a stop signal.

Both raise from `on_train_batch_end`, so no callback placed after them in the
list sees that batch: put them first, and a checkpoint or best model is never
written with NaN weights or for a half-finished step.
"""

import math
import signal
import threading
from typing import Callable

from callbacks.base import StepCallback


class NonFinite(RuntimeError):
    """Training produced NaN or Inf: in the loss, or in the weights about to be saved."""

    def __init__(self, what: str, step: int) -> None:
        super().__init__(f"{what} at global step {step}")
        self.step = step


class Interrupted(RuntimeError):
    """Training stopped on SIGTERM or SIGINT after saving the current step."""

    def __init__(self, signal_number: int, step: int) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name} after global step {step}")
        self.signal_number = signal_number
        self.step = step


class NonFiniteLossGuard(StepCallback):
    """Raises `NonFinite` at the first train step whose loss is NaN or Inf.

    The loss in the logs is the epoch's running average, which turns non-finite
    at the very step the batch loss does.
    """

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.model.stop_training = True
            raise NonFinite(f"the training loss became {loss}", self.global_step)


class StopOnSignal(StepCallback):
    """Turns SIGTERM and the first SIGINT (Ctrl-C) into a clean stop.

    The signal handler only records the request; at the end of the current
    train step `on_stop()` runs (e.g. saving a checkpoint of that step) and
    `Interrupted` is raised. A second Ctrl-C interrupts at once, as usual.
    Handlers are installed while training runs, and only in the main thread.

    Args:
        on_stop: called before `Interrupted` is raised.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, on_stop: Callable[[], None]) -> None:
        super().__init__()
        self.on_stop = on_stop
        self.requested = 0
        self._previous = {}

    def _handle(self, signal_number, frame) -> None:
        self.requested = signal_number
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.requested:
            self.on_stop()
            self.restore_handlers()
            raise Interrupted(self.requested, self.global_step)

    def on_train_end(self, logs=None) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Puts back the signal handlers that were there before training."""
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
        self._previous = {}
