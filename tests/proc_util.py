"""Test helpers for real `python -m harness.run` processes and what they leave on disk.

Used by the tests that kill, signal and corrupt real runs (test_reliability.py,
test_faults.py) and check the CLI's errors:

- `Harness`: one subprocess of the entrypoint, its stdout/stderr captured in
  files (a pipe nobody reads could block it), started in its own session so a
  signal reaches only it; `wait_for` polls the disk while it runs.
- `snapshot`: every file under a folder with its size and mtime, to prove a
  refused command changed nothing.
- `checkpoint_steps` / `checkpoint_is_finite`: what a run's checkpoints hold.
- `in_a_tmpfs`: a script run with ./logs on a tmpfs of its own (a real full disk).
- `harness_lines` / `assert_one_error_line`: the one-line error contract.
- `duplicates`: the steps an event file holds twice (read with `harness.callbacks.events`).
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The Projector, the evaluation figures and layer health, off: most tests are about
# something else, and together they cost a tiny run ~0.5 s (their own tests turn them on).
OBSERVERS_OFF = {"embeddings_freq": 0, "eval_figures_freq": 0, "diagnostics_freq": 0}
OBSERVERS_OFF_FLAGS = [f"--{name}=0" for name in OBSERVERS_OFF]
_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")


def harness_env() -> dict:
    """The environment of a subprocess: this checkout importable, TF's C++ logs quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class Harness:
    """`python -m harness.run ARGS` running in the background.

    Args:
        args: the flags.
        cwd: the working directory.
        name: names the files stdout and stderr go to (in `cwd`).
        prefix: a command run in front of the interpreter (e.g. `unshare ...`).
    """

    def __init__(self, args: list, cwd: Path, name: str = "harness", prefix: tuple = ()) -> None:
        self.args = list(args)
        self.cwd = Path(cwd)
        self._out = self.cwd / f"{name}.stdout"
        self._err = self.cwd / f"{name}.stderr"
        with open(self._out, "w") as out, open(self._err, "w") as err:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "harness.run", *self.args],
                cwd=self.cwd,
                env=harness_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def send(self, signal_number: int) -> None:
        """Sends a signal to the process (only to it, by its id)."""
        self.process.send_signal(signal_number)

    def wait(self, timeout: float = 120) -> int:
        """Waits for the exit status; kills the process if it takes longer."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"harness {' '.join(self.args)} still ran after {timeout} s;"
                f" stderr: {self.stderr[-2000:]}"
            ) from None

    def completed(self) -> subprocess.CompletedProcess:
        """The finished process's exit status and output (see `wait`)."""
        return subprocess.CompletedProcess(
            self.args, self.process.returncode, self.stdout, self.stderr
        )

    def kill(self) -> None:
        """SIGKILL, if it still runs (cleanup)."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    def wait_for(
        self, condition: Callable[[], object], timeout: float = 120, interval: float = 0.003
    ):
        """Polls `condition()` until it is truthy while the process runs; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if not self.running():
                raise AssertionError(
                    f"harness exited with {self.process.returncode} before "
                    f"the awaited state; stderr: {self.stderr[-3000:]}"
                )
            time.sleep(interval)
        raise AssertionError(f"waited {timeout} s in vain; stderr: {self.stderr[-2000:]}")


def run(
    args: list, cwd: Path, timeout: float = 120, prefix: tuple = ()
) -> subprocess.CompletedProcess:
    """Runs `python -m harness.run ARGS` to the end and captures its output."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "harness.run", *args],
        cwd=cwd,
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime in ns)} of every file and folder under `folder`."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)) + ("/" if path.is_dir() else ""): (
            path.stat().st_size if path.is_file() else 0,
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
    }


def checkpoint_steps(checkpoint_dir: Path) -> list:
    """The global steps of the checkpoints in `checkpoint_dir` (by their index files)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    steps = []
    for name in os.listdir(checkpoint_dir):
        match = _CHECKPOINT.match(name)
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def listed_steps(checkpoint_dir: Path) -> list:
    """The steps the `checkpoint` state file lists (read without TensorFlow, for polling)."""
    try:
        text = (Path(checkpoint_dir) / "checkpoint").read_text()
    except OSError:
        return []
    return sorted(
        int(n) for n in re.findall(r'all_model_checkpoint_paths: "[^"]*ckpt-(\d+)"', text)
    )


def listed_checkpoints(checkpoint_dir: Path) -> list:
    """The checkpoint paths the `checkpoint` state file lists (what a resume tries)."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(checkpoint_dir))
    return list(state.all_model_checkpoint_paths) if state else []


def nonfinite_variables(checkpoint_prefix: str) -> list:
    """Names of the floating-point variables of a checkpoint holding NaN or Inf."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_prefix))
    return sorted(
        name
        for name, dtype in reader.get_variable_to_dtype_map().items()
        if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(name)))
    )


def duplicates(steps: list) -> list:
    """The steps that occur more than once."""
    seen, twice = set(), set()
    for step in steps:
        (twice if step in seen else seen).add(step)
    return sorted(twice)


def one_error_line(stderr: str) -> str | None:
    """The stderr lines that are not TF/absl start-up noise, if exactly one."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else None


def in_a_tmpfs(work: Path, script: str, flags: list, size: str) -> subprocess.CompletedProcess:
    """Runs the bash `script` in `work` with ./logs on a fresh tmpfs of `size` in a
    mount namespace of its own (a real full disk, a real read-only folder).

    In the script, `$PY` is this interpreter and `$HARNESS` the entrypoint with
    `flags`; the run directory `logs/r` is copied to ./after at the end, before the
    tmpfs goes away. Skips the test where mounting is not allowed.
    """
    import pytest

    probe = work / "mount-probe"
    probe.mkdir(exist_ok=True)
    if (
        subprocess.run(
            ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs tmpfs {probe}"],
            capture_output=True,
            timeout=30,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs unshare and mount rights)")
    (work / "logs").mkdir(exist_ok=True)
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "harness.run", *flags])
    full = (
        f"mount -t tmpfs -o size={size} tmpfs logs || exit 99\n"
        f"PY={shlex.quote(sys.executable)}\nHARNESS={shlex.quote(command)}\n"
        f"{script}\ncp -a logs/r after 2>/dev/null; exit 0\n"
    )
    return subprocess.run(
        ["unshare", "--mount", "bash", "-c", full],
        cwd=work,
        env={**harness_env(), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


# TensorFlow's C++ start-up lines, which no environment variable silences in TF 2.21.
TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\]"
    r"|To enable the following instructions)"
)


def harness_lines(stderr: str) -> list:
    """stderr without TensorFlow's C++ start-up noise."""
    return [line for line in stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]


def assert_one_error_line(process, *fragments: str, exit_code: int = 2) -> str:
    """The usage-error contract: exit 2, one `harness: error:` line, no traceback."""
    stdout = process.stdout if isinstance(process.stdout, str) else ""
    assert process.returncode == exit_code, (process.returncode, process.stderr[-3000:])
    assert "Traceback" not in process.stderr + stdout, process.stderr[-3000:]
    lines = harness_lines(process.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("harness: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
