"""Guards that stop a run cleanly: a non-finite loss, or a stop signal.

Both raise from `on_train_batch_end`, so no callback placed after them in the
list sees that batch: put them first, and a checkpoint or best model is never
written with NaN weights or for a half-finished step.
"""

import math
import signal
import threading
from collections.abc import Callable

from .base import StepCallback, ends_epoch


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

    The signal handler only records the request; the stop comes at the next
    point where the run's record is whole: the end of the current train step,
    or, when that step is an epoch's last, the end of that epoch (after its
    validation, summaries, history and checkpoint, so a resume loses nothing).
    There `on_stop()` runs (e.g. saving a checkpoint of that step) and
    `Interrupted` is raised. A stop asked for during the run's last epoch end
    lets the run finish. A second Ctrl-C interrupts at once, as usual.
    Handlers are installed by `catch()` (call it as soon as there is a run to
    protect) or when training begins, and only in the main thread.

    Args:
        on_stop: called before `Interrupted` is raised (may be set once known).
        steps_per_epoch: train steps per epoch (0: stop at any step end).
        end_step: the global step the run ends at.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self,
        on_stop: Callable[[], None] = lambda: None,
        steps_per_epoch: int = 0,
        end_step: int = 0,
    ) -> None:
        super().__init__()
        self.on_stop = on_stop
        self.steps_per_epoch = steps_per_epoch
        self.end_step = end_step
        self.requested = 0
        self._previous = {}

    def _handle(self, signal_number, frame) -> None:
        self.requested = signal_number
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def catch(self) -> None:
        """Starts recording stop signals (until `restore_handlers`)."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        self.catch()
        if self.requested:  # a signal during setup
            self._stop()

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.requested and not ends_epoch(self.global_step, self.steps_per_epoch):
            self._stop()

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.requested and self.global_step < self.end_step:
            self._stop()

    def on_train_end(self, logs=None) -> None:
        self.restore_handlers()

    def _stop(self) -> None:
        self.on_stop()
        self.restore_handlers()
        raise Interrupted(self.requested, self.global_step)

    def restore_handlers(self) -> None:
        """Puts back the signal handlers that were there before training."""
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
        self._previous = {}
