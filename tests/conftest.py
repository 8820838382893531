"""Fixtures shared by the harness tests.

- The repository root goes on `sys.path`, so `harness`, `callbacks` and the
  user builder `tests.user_models:tiny` import without an install.
- `shared_data` / `reuters_npz`: the real data folder (`../shared/data` beside
  the repository, or `$HARNESS_SHARED_DATA`); tests that need it skip, saying
  why, when it is absent.
- `make_config` / `run_train`: tiny, real training runs in this process (a
  subprocess would pay ~5 s of TensorFlow import each time).
"""

import json
import os
import sys
from pathlib import Path

import proc_util
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(
    os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

# Small enough for ~1 s per epoch; 250 is not a multiple of 32, so every pass
# over the data ends with a partial batch (8 train steps, 2 validation batches).
TINY = dict(
    num_examples=250,
    max_len=60,
    num_words=1000,
    batch_size=32,
    epochs=1,
    verbose=0,
    **proc_util.OBSERVERS_OFF,  # the tests of the Projector, figures and health turn them on
)


def pytest_configure(config):
    # Keras 3.15 under NumPy 2 warns on every tensor -> array conversion.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test if it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data folder {SHARED_DATA} not found (set HARNESS_SHARED_DATA "
            "to the folder holding reuters.npz)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def reuters_npz(shared_data: Path) -> Path:
    """The real, Keras-identical reuters.npz; skips the test if it is missing."""
    path = shared_data / "reuters.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found: the Reuters tests need the real file")
    return path


@pytest.fixture
def offline(monkeypatch):
    """Makes any download attempt fail at once, even on a machine with internet
    (Keras tries one after a failed hash check)."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """A --logdir that does not exist yet (so 'nothing written' is easy to check)."""
    return tmp_path / "logs"


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(logdir, **overrides)`: a validated tiny `Config` (any scope)."""
    from harness.config import Config

    def make(logdir, **overrides) -> "Config":
        return Config(**{**TINY, "logdir": str(logdir), **overrides}).validate()

    return make


@pytest.fixture
def make_config(tiny_config, logdir: Path):
    """`make_config(**overrides)`: a tiny `Config` writing under this test's logdir."""
    return lambda **overrides: tiny_config(logdir, **overrides)


@pytest.fixture(scope="session")
def run_train():
    """Runs `harness.train(config)` and returns (Result, printed lines)."""
    from harness import train

    def run(config):
        lines: list = []
        result = train(config, print_fn=lines.append)
        return result, lines

    return run


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def load_json():
    """Reads a JSON artifact (history.json, flags.json)."""
    return read_json
