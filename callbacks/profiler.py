"""Profile chosen global-step windows with the TensorFlow profiler, in any training loop.

`ProfilerCallback` starts a profiler session at the first step of each window,
marks every step inside it with a `Trace("train", step_num=...)` (the step
markers behind the Profile tab's step-time breakdown) and stops after the last
step. The capture is written where TensorBoard's Profile tab finds it,
`<run_dir>/plugins/profile/<session>/<host>.xplane.pb`, and summarized as
tables (see `profile_xprof` and `profile_render`) that are printed and saved next to it.

Profiling is best-effort: a failure to start, stop or summarize a capture is
one warning line and training goes on.

Things about the TF 2.21 profiler and xprof 2.24 that this module works around:

- `ProfilerOptions` fields given as Python ints are ignored: the binding tries
  `bool` before `int`, every int becomes a bool, and the C++ side logs
  "host_tracer_level expects an i value" and keeps its defaults.
  `profiler_options` passes values that cannot be read as bool, so they are
  read as ints and take effect.
- Session folders are named by the time of `stop()` to the second, so two
  captures stopped in the same second would share a folder and the second
  would overwrite the first. Each capture's folder is therefore renamed to
  `<timestamp>_steps_<start>-<stop>` right after it is written.
- xprof's step-time analysis (overview page, input pipeline) drops the first
  and the last step of a capture that holds more than 5 steps, as possibly
  incomplete: a window of 6 steps showed 4. A window of more than 5 steps is
  therefore framed by two padding steps, "profile_padding <n>", each a single
  no-op (xprof ignores a step marker around no op at all), which xprof drops
  instead. A window that the run's end cuts short is padded by the steps it
  keeps; one stopped early anyway (early stopping, a signal) to 3 steps or
  fewer shows the padding in the Profile tab (the tables leave it out).
- xprof finds no step at all in a capture in which a `tf.while_loop` ran (a
  compiled call of several steps, as the tape loop makes): the loops run the
  steps of a window one per compiled call (see `harness.loops`).
"""

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from . import profile_render, profile_xprof
from .base import StepCallback
from .profile_windows import Window, validate_windows

# xprof drops the first and last step of a capture with more steps than this.
XPROF_KEEPS_ALL_STEPS_UP_TO = 5


class _NativeInt:
    """An int the profiler binding cannot read as a bool (it has no `__bool__`)."""

    def __init__(self, value: int) -> None:
        self._value = value

    def __index__(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return repr(self._value)


def profiler_options(
    *, host_tracer_level: int = 2, python_tracer_level: int = 0, device_tracer_level: int = 1
) -> tf.profiler.experimental.ProfilerOptions:
    """Builds `ProfilerOptions` whose levels really reach the profiler.

    Plain ints in `ProfilerOptions` are ignored by TF 2.21 (see the module
    docstring); these values go through as ints.

    Args:
        host_tracer_level: CPU tracing: 1 user annotations only, 2 also
            expensive TF ops, 3 verbose.
        python_tracer_level: 1 traces Python function calls, 0 does not.
        device_tracer_level: 1 traces GPU/TPU activity, 0 does not.

    Returns:
        Options for `tf.profiler.experimental.start`.
    """
    return tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=_NativeInt(host_tracer_level),
        python_tracer_level=_NativeInt(python_tracer_level),
        device_tracer_level=_NativeInt(device_tracer_level),
        delay_ms=_NativeInt(0),  # Only used by remote sessions; an int avoids a warning.
    )


def start_profiler_server(port: int, *, print_fn: Callable[[str], None] = print) -> bool:
    """Starts the profiler's gRPC server so TensorBoard can capture on demand.

    The server listens on `[::]:port`, i.e. on ALL network interfaces (IPv6
    wildcard, which also accepts IPv4 on Linux), not only on loopback, and has
    no authentication: anyone who can reach the port can trigger captures.
    It runs until the process exits. A capture requested through it while
    `ProfilerCallback` is recording (or the reverse) fails, as only one
    session can run at a time.

    TF's own start does not fail on a port in use (it logs two C++ errors and
    returns), so the port is tried first. A port in use is one warning line and
    no server: like every profiler failure it must not stop a training run,
    and the conflict comes from the machine (often another run's server), not
    from the command.

    Args:
        port: TCP port, 1..65535.
        print_fn: Receives the line saying where the server listens, or the
            warning that it could not start.

    Returns:
        Whether the server started.

    Raises:
        ValueError: If `port` is out of range.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"profiler port must be an int in 1..65535, got {port!r}")
    error = _bind_error(port)
    if error is not None:
        print_fn(
            f"WARNING: profiler server not started: port {port} is in use "
            f"({error.strerror or error}); training continues without it."
        )
        return False
    tf.profiler.experimental.server.start(port)
    print_fn(
        f"harness: profiler server on port {port}, listening on ALL network interfaces "
        "with no authentication; in TensorBoard's Profile tab use Capture profile with "
        f"localhost:{port}"
    )
    return True


def _bind_error(port: int) -> OSError | None:
    """Why the server could not bind `port` on all interfaces, or None if it can."""
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # No IPv6 here: the server falls back to IPv4 too.
            continue
        with probe:
            # As gRPC does: a port held only by closed connections (TIME_WAIT) is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                return error
            return None
    return None


class ProfilerCallback(StepCallback):
    """Captures profiler traces of chosen global-step windows and summarizes them.

    Works the same under `model.fit`, a `train_on_batch` loop or a custom
    `GradientTape` loop, as long as the loop drives it through a
    `keras.callbacks.CallbackList` (`on_train_begin`, `on_train_batch_begin/end`,
    `on_train_end`) and runs each step of a window in its own call (a call
    that loops over steps hides every step of the capture from xprof).

    When training begins, a window that ends after the run's last step
    (`params["epochs"] * params["steps"]`, where both are known) is one
    warning line.

    Args:
        run_dir: The run directory; captures go to `<run_dir>/plugins/profile/`.
        windows: Inclusive (start, stop) global-step windows, 1-based: (3, 5)
            profiles the 3rd, 4th and 5th train step. Empty: never profile.
        print_fn: Receives the printed tables and warning lines.
        top: How many ops and kernels the tables keep.

    Raises:
        ValueError: If `windows` is invalid (see `validate_windows`) or `top` < 1.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        windows: Sequence[Sequence[int]],
        *,
        print_fn: Callable[[str], None] = print,
        top: int = 20,
    ) -> None:
        super().__init__()
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        self.run_dir = Path(run_dir)
        self.windows = validate_windows(windows)
        self.captures: list[Path] = []  # Session folders written, oldest first.
        self._print = print_fn
        self._top = top
        self._window: Window | None = None  # The window being recorded.
        self._xplanes_before: dict[Path, int] = {}  # Capture files before the start.
        self._trace: tf.profiler.experimental.Trace | None = None
        self._skipped: set[Window] = set()  # Windows whose start failed.
        self._padded = False  # Whether the window being recorded began with a padding step.
        self._last_marked = 0  # The last step marked in the window being recorded.
        self._checked_end = False
        self._last_step: int | None = None  # The run's last step, where known.

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self._checked_end:  # A resumed `fit` begins twice; warn once.
            return
        self._checked_end = True
        epochs, steps = (self.params or {}).get("epochs"), (self.params or {}).get("steps")
        if not isinstance(epochs, int) or not isinstance(steps, int):
            return
        last = self._last_step = epochs * steps
        for window in self.windows:
            if window[1] > last:
                captured = (
                    "it is never captured"
                    if window[0] > last
                    else f"only steps {window[0]}-{last} are captured"
                )
                self._print(
                    f"WARNING: ProfilerCallback: profile window {_span(window)} ends "
                    f"after the run's last step {last}; {captured}."
                )

    def on_train_batch_begin(self, batch, logs=None) -> None:
        super().on_train_batch_begin(batch, logs)
        step = self.global_step + 1
        window = self._window_of(step)
        if window is None:
            return
        if self._window is None and window not in self._skipped:
            self._start(window)
        if self._window is not None:
            self._trace = tf.profiler.experimental.Trace("train", step_num=step, _r=1)
            self._trace.__enter__()
            self._last_marked = step

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        self._close_trace()
        if self._window is not None and self.global_step >= self._window[1]:
            self._stop()

    def on_train_end(self, logs=None) -> None:
        self._close_trace()
        if self._window is not None:
            self._stop()

    def _window_of(self, step: int) -> Window | None:
        for window in self.windows:
            if window[0] <= step <= window[1]:
                return window
        return None

    def _close_trace(self) -> None:
        if self._trace is not None:
            self._trace.__exit__(None, None, None)
            self._trace = None

    def _start(self, window: Window) -> None:
        self._xplanes_before = self._xplane_mtimes()
        try:
            tf.profiler.experimental.start(str(self.run_dir), options=profiler_options())
        except Exception as e:  # Profiling is best-effort: never stop training for it.
            self._skipped.add(window)
            self._warn(f"could not start the profiler for steps {_span(window)}", e)
            return
        self._window = window
        stop = min(window[1], self._last_step or window[1])
        self._padded = stop - window[0] + 1 > XPROF_KEEPS_ALL_STEPS_UP_TO
        if self._padded:
            _padding_step(window[0] - 1)

    def _stop(self) -> None:
        window, self._window = self._window, None
        try:
            if self._padded:
                _padding_step(self._last_marked + 1)
            tf.profiler.experimental.stop()
            folder = self._new_capture_folder(window)
        except Exception as e:  # Profiling is best-effort: never stop training for it.
            self._warn(f"could not save the profile of steps {_span(window)}", e)
            return
        self.captures.append(folder)
        try:
            tables = profile_xprof.build_tables(
                sorted(folder.glob(f"*{profile_xprof.XPLANE_SUFFIX}")), top=self._top
            )
            profile_render.write_tables(tables, folder)
        except Exception as e:  # Profiling is best-effort: never stop training for it.
            self._warn(f"profile of steps {_span(window)} saved in {folder}, but no tables", e)
            return
        self._print(
            f"ProfilerCallback: profiled steps {_span(window)}, tables saved in {folder}\n"
            + profile_render.format_tables(tables)
        )

    def _xplane_mtimes(self) -> dict[Path, int]:
        pattern = f"plugins/profile/*/*{profile_xprof.XPLANE_SUFFIX}"
        return {path: path.stat().st_mtime_ns for path in self.run_dir.glob(pattern)}

    def _new_capture_folder(self, window: Window) -> Path:
        """Finds the session folder just written and renames it after its steps."""
        fresh = {
            path.parent
            for path, mtime in self._xplane_mtimes().items()
            if self._xplanes_before.get(path) != mtime
        }
        if len(fresh) != 1:
            raise RuntimeError(f"expected one new capture folder in {self.run_dir}, found {fresh}")
        folder = fresh.pop()
        renamed = folder.with_name(f"{folder.name}_steps_{window[0]}-{window[1]}")
        if renamed.exists():
            return folder
        return folder.rename(renamed)

    def _warn(self, what: str, error: Exception) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self._print(
            f"WARNING: ProfilerCallback: {what} ({type(error).__name__}: {reason}); "
            "training continues."
        )


def _padding_step(step: int) -> None:
    """A step marker around one no-op, for xprof to drop instead of a real step."""
    with tf.profiler.experimental.Trace(profile_xprof.PADDING_STEP, step_num=step, _r=1):
        tf.raw_ops.NoOp()


def _span(window: Window) -> str:
    return f"{window[0]}-{window[1]}"
