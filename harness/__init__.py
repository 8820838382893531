"""harness: train a Keras model three ways and see everything in TensorBoard.

The public surface: `train(config)` returns a `Result`; `Config` holds every option;
the errors a run raises. `train` and `Result` load TensorFlow, so they are imported on
first use: `python -m harness.run` must parse its flags (thread counts) before TensorFlow starts.
"""

from harness.config import Config
from harness.errors import HarnessError, RunInterrupted, UsageError, UserCodeError

__version__ = "0.2.0"

__all__ = [
    "Config",
    "HarnessError",
    "Result",
    "RunInterrupted",
    "UsageError",
    "UserCodeError",
    "__version__",
    "train",
]


def __getattr__(name: str):
    if name in ("train", "Result"):
        from harness import training

        value = getattr(training, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
