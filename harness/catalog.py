"""Facts about the built-in datasets and models that the flags are checked against.

`data.py` and `models.py` own these, but they import TensorFlow; the facts live
here, TensorFlow-free, so that `Config.validate()` can reject a --data_dir
without the dataset's file, or a --max_len a model cannot convolve, before
TensorFlow loads (`data.py` checks --data_dir again where it reads the file).
"""

import os

from harness.errors import UsageError

DATA_FILES = {"reuters": "reuters.npz", "imdb": "imdb.npz"}
# The shortest --max_len each built-in model takes: its convolutions and
# poolings shrink the sequence, and a shorter one leaves nothing to convolve
# (tests/test_loops.py checks these against the models themselves).
MIN_MAX_LEN = {"sequential": 12, "functional": 55, "subclass": 4}


def data_file_hint(dataset: str) -> str:
    """How to get the data file of `dataset` onto an offline machine."""
    file_name = DATA_FILES[dataset]
    return (
        f"download {file_name} once (keras.datasets.{dataset}.load_data() on a machine "
        f"with internet) and pass --data_dir=<folder holding {file_name}>"
    )


def check_data_dir(dataset: str, data_dir: str | None) -> None:
    """Raises UsageError if --data_dir is given but does not hold the dataset's file."""
    if data_dir is None:
        return
    file_name = DATA_FILES[dataset]
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data_dir={data_dir!r} is not a folder: {data_file_hint(dataset)}")
    if not os.path.isfile(os.path.join(data_dir, file_name)):
        raise UsageError(f"--data_dir={data_dir!r} holds no {file_name}: {data_file_hint(dataset)}")


def check_max_len(model: str, max_len: int) -> None:
    """Raises UsageError if the built-in `model` cannot take sequences of `max_len`."""
    if max_len < MIN_MAX_LEN.get(model, 1):
        raise UsageError(
            f"--max_len={max_len} is not allowed with --model={model}: it must "
            f"be at least {MIN_MAX_LEN[model]} for that model's convolutions "
            "and poolings"
        )
