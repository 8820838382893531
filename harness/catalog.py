"""Facts about the datasets and models that the flags are checked against.

`data.py` and `models.py` own these, but they import TensorFlow; the facts live
here, TensorFlow-free, so that `Config.validate()` can reject a --data_dir
without the dataset's file, or a --max_len a model cannot convolve, before
TensorFlow loads (`data.py` checks --data_dir again where it reads the file).
"""

import os
import re

from harness.errors import UsageError

BUILTIN_DATASETS = ("synthetic", "reuters", "imdb")
DATA_FILES = {"reuters": "reuters.npz", "imdb": "imdb.npz"}
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# What --dataset may name, and how it is read (see harness.sources).
BUILTIN, FUNCTION, NPZ, TEXT_FOLDER, IMAGE_FOLDER, GIVEN = (
    "builtin",
    "function",
    "npz",
    "text folder",
    "image folder",
    "given",
)
# How a run records the objects given to harness.train(model=..., data=...): its
# --model and --dataset become "given:<name>".
GIVEN_PREFIX = "given:"
# The files Keras's folder loaders read.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TEXT_SUFFIXES = (".txt",)
DATASET_HELP = (
    "synthetic, reuters, imdb, a folder of class subfolders (text or images), "
    "an .npz file, or package.module:function returning the data"
)
# The classes of each built-in dataset (synthetic: the default of --num_classes).
DATASET_CLASSES = {"synthetic": 46, "reuters": 46, "imdb": 2}
# A built-in model that trains on synthetic data of its own, not --dataset's
# (harness.models.OWN_RUNS): name -> (its outputs, its default classes, the fewest).
OWN_DATA_MODELS = {"multi_io": (("priority", "department"), 4, 3)}
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


def dataset_kind(dataset: str) -> str:
    """How --dataset is read: BUILTIN, FUNCTION, NPZ, TEXT_FOLDER, IMAGE_FOLDER or
    GIVEN (data passed to harness.train).

    Raises:
        UsageError: it names none of these, a missing file or folder, or a folder
            without class subfolders of .txt or image files.
    """
    if dataset in BUILTIN_DATASETS:
        return BUILTIN
    if dataset.startswith(GIVEN_PREFIX):
        return GIVEN
    if IMPORT_PATH.match(dataset):
        return FUNCTION
    if dataset.endswith(".npz"):
        if not os.path.isfile(dataset):
            raise UsageError(f"--dataset={dataset!r}: no such file")
        return NPZ
    if not os.path.isdir(dataset):
        raise UsageError(
            f"--dataset={dataset!r} is not allowed: it is no folder or file here; "
            f"use {DATASET_HELP}"
        )
    return folder_kind(dataset)


def class_folders(folder: str) -> list:
    """The class subfolders of `folder` (sorted), as Keras's loaders see them."""
    return sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)))


def folder_kind(dataset: str) -> str:
    """TEXT_FOLDER or IMAGE_FOLDER, from the files in the class subfolders of the
    training folder (`<dataset>/train` if there is one, else `<dataset>`)."""
    train = os.path.join(dataset, "train")
    root = train if os.path.isdir(train) else dataset
    classes = class_folders(root)
    layout = (
        f"lay it out as {dataset}/<class>/<files>, or as {dataset}/train/<class>/<files> "
        f"and {dataset}/validation/<class>/<files>"
    )
    if len(classes) < 2:
        raise UsageError(
            f"--dataset={dataset!r}: {root} has {len(classes)} class subfolder(s), "
            f"classification needs at least 2; {layout}"
        )
    suffixes = {
        os.path.splitext(name)[1].lower()
        for label in classes
        for _, _, names in os.walk(os.path.join(root, label))
        for name in names
    }
    images, texts = suffixes & set(IMAGE_SUFFIXES), suffixes & set(TEXT_SUFFIXES)
    if images and texts:
        raise UsageError(
            f"--dataset={dataset!r}: the class folders hold both text (.txt) and image "
            "files; keep one kind"
        )
    if not (images or texts):
        raise UsageError(
            f"--dataset={dataset!r}: the class folders under {root} hold no .txt or image "
            f"({', '.join(IMAGE_SUFFIXES)}) files; {layout}"
        )
    return IMAGE_FOLDER if images else TEXT_FOLDER
