"""Test helpers: run a real TensorBoard server (event files: `harness.callbacks.events`).

Shared by test_summaries.py, test_resume.py and test_tensorboard_server.py.
Importing this module also puts the repository root on `sys.path`, so
`import harness` / `import callbacks` work however pytest was started.

Serving: `TensorBoardServer` starts the `tensorboard` executable of the
running Python's environment on a free loopback port in its own process group,
waits until it answers, offers `get_json` / `post_json` on its HTTP data API,
and always kills the whole group on exit.
"""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- A real TensorBoard server ---------------------------------------------------------


def tensorboard_executable() -> Path:
    """The `tensorboard` script of the environment running these tests."""
    return Path(sys.executable).parent / "tensorboard"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Loopback requests never go through a proxy. urllib.request.urlopen would use a
# process-wide opener whose proxies were read from the environment at its first
# use (possibly inside another test that pointed http_proxy at a dead port).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 10.0) -> tuple:
    """(status, body bytes) of a GET; HTTP errors are returned, not raised.

    A gzip-encoded body (the profile plugin sends its JSON that way) is unpacked.
    """
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, _decoded(response)
    except urllib.error.HTTPError as error:
        return error.code, _decoded(error)


def _decoded(response) -> bytes:
    body = response.read()
    if response.headers.get("Content-Encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    return body


def poll(
    fetch: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "the condition",
    process: subprocess.Popen | None = None,
    log: Path | None = None,
):
    """Calls `fetch` until it returns something truthy, and returns that.

    Connection errors count as "not yet". Raises AssertionError after
    `timeout` seconds, or as soon as `process` has exited, quoting `log`.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the process exited with {process.returncode} while waiting for {what}{_tail(log)}"
            )
        try:
            result = fetch()
            if result:
                return result
        except (OSError, ValueError) as error:  # refused, reset, not JSON yet
            last_error = error
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} "
                f"(last error: {last_error!r}){_tail(log)}"
            )
        time.sleep(interval)


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Ends `process` and everything it started (it must lead its own session)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    else:  # the leader is gone; end any child it left behind in its group
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class TensorBoardServer:
    """The real `tensorboard` serving `logdir` on 127.0.0.1, as a context manager.

    Args:
        logdir: the folder to serve.
        log_file: where the server's stdout and stderr go (quoted on failure).
        extra_args: more command-line flags.
        startup_timeout: seconds to wait for the first answer.
    """

    def __init__(
        self, logdir, log_file, *, extra_args: Sequence[str] = (), startup_timeout: float = 60.0
    ) -> None:
        self.logdir = Path(logdir)
        self.log_file = Path(log_file)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            str(tensorboard_executable()),
            "--logdir",
            str(self.logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--reload_interval",
            "1",
            *extra_args,
        ]
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "TensorBoardServer":
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        try:
            self.wait_for(
                lambda: http_get(self.url + "/data/runs", timeout=2)[0] == 200,
                what=f"TensorBoard to answer on {self.url}",
                timeout=self.startup_timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def wait_for(self, fetch: Callable[[], object], *, what: str, timeout: float = 60.0):
        """`poll` tied to this server: fails at once if it died, quoting its log."""
        return poll(fetch, timeout=timeout, what=what, process=self.process, log=self.log_file)

    def get(self, route: str, **params) -> tuple:
        """(status, body bytes) of GET `route` with query `params`."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return http_get(f"{self.url}{route}{query}")

    def wait_for_run(self, run: str) -> None:
        """Waits until the server lists `run` with its train and validation runs
        (startup answers before the first load of the logdir)."""
        self.wait_for(
            lambda: {run, f"{run}/train", f"{run}/validation"} <= set(self.get_json("/data/runs")),
            what="TensorBoard to list the run",
        )

    def get_json(self, route: str, **params):
        """The JSON body of GET `route`; AssertionError on a non-200 answer."""
        status, body = self.get(route, **params)
        assert status == 200, f"GET {route} {params} -> {status}: {body[:500]!r}"
        return json.loads(body)

    def post_json(self, route: str, payload: dict):
        """The JSON answer to POST `route` with a JSON body (the HParams plugin's API)."""
        request = urllib.request.Request(
            self.url + route,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=30) as response:
                return json.loads(_decoded(response))
        except urllib.error.HTTPError as error:
            raise AssertionError(
                f"POST {route} {payload} -> {error.code}: {_decoded(error)[:500]!r}"
            ) from None


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not Path(log).exists():
        return ""
    text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    return "\n--- log tail ---\n" + "\n".join(text)
