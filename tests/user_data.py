"""The data a user brings, written from real datasets, for the `--dataset` tests.

- `boston` / `boston_seeded`: `--dataset=package.module:function` sources of the
  Boston housing regression data (Keras's boston_housing.npz in the shared folder).
- `digits_datasets`: a function source returning a pair of `tf.data.Dataset`s of
  scikit-learn's bundled 8x8 handwritten digits, shuffled with the run's seed.
- `digits_folder`: a class-per-folder tree of PNG images of scikit-learn's bundled
  8x8 handwritten digits.
- `newswire_folder`: a class-per-folder tree of .txt files of real Reuters
  newswires, decoded with their word index.
- The other functions are the mistakes a user makes.
"""

import json
import os
from pathlib import Path

import numpy as np

SHARED_DATA = Path(
    os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
BOSTON_TRAIN = 404  # keras.datasets.boston_housing's training split (test_split=0.2)


def _boston(seed: int) -> tuple:
    with np.load(SHARED_DATA / "boston_housing.npz", allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    order = np.random.default_rng(seed).permutation(len(y))
    train, val = order[:BOSTON_TRAIN], order[BOSTON_TRAIN:]
    return (x[train], y[train]), (x[val], y[val])


def boston() -> tuple:
    """((x_train, y_train), (x_val, y_val)) of Boston housing, as Keras's loader returns."""
    return _boston(113)


def boston_seeded(seed):
    """The same, split by the run's --seed, as a dict like an .npz file's."""
    (x_train, y_train), (x_val, y_val) = _boston(seed)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


def raises():
    """A data function with a bug in it."""
    return _parse_rows("price,rooms\n24.0,six")


def _parse_rows(text: str):
    header, row = text.splitlines()
    return [float(value) for value in row.split(",")]


def returns_a_list():
    """Returns something that is not data."""
    return [1, 2, 3]


def mismatched():
    """x_train and y_train of different lengths."""
    (x_train, y_train), validation = boston()
    return (x_train, y_train[:-4]), validation


def _digits_arrays() -> tuple:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0)[..., None], digits.target


def digits_datasets(seed):
    """(train, validation) `tf.data.Dataset`s of unbatched (8x8x1 image, digit) examples:
    the first 400 digits, shuffled once with `seed` (the same order on every read), and
    the next 100."""
    import tensorflow as tf

    images, labels = _digits_arrays()
    train = tf.data.Dataset.from_tensor_slices((images[:400], labels[:400]))
    train = train.shuffle(400, seed=seed, reshuffle_each_iteration=False)
    return train, tf.data.Dataset.from_tensor_slices((images[400:500], labels[400:500]))


def datasets_repeated_forever():
    """A training dataset that never ends."""
    train, val = digits_datasets(0)
    return train.repeat(), val


def datasets_batched():
    """Datasets batched already."""
    train, val = digits_datasets(0)
    return train.batch(16), val.batch(16)


def datasets_of_dicts():
    """Datasets whose elements are dicts, not (x, y) pairs."""
    import tensorflow as tf

    images, labels = _digits_arrays()
    features = {"pixels": images[:100], "digit": labels[:100]}
    return tf.data.Dataset.from_tensor_slices(features), tf.data.Dataset.from_tensor_slices(
        features
    )


def digits_folder(root: Path, per_class: int = 30, validation_per_class: int = 8) -> Path:
    """root/train/<digit>/*.png and root/validation/<digit>/*.png from the 8x8 digits."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)[..., None]
    for split, first, count in (
        ("train", 0, per_class),
        ("validation", per_class, validation_per_class),
    ):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(digits.target == digit)[first : first + count]:
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels[i]).numpy())
    return root


def newswire_folder(root: Path, topics=(3, 4, 19), per_class: int = 40, split: bool = True) -> Path:
    """Reuters newswires as text files: root/train/<topic>/*.txt and
    root/validation/<topic>/*.txt (a fifth), or root/<topic>/*.txt if not `split`."""
    with np.load(SHARED_DATA / "reuters.npz", allow_pickle=True) as f:
        wires, labels = f["x"], f["y"]
    ranks = json.loads((SHARED_DATA / "reuters_word_index.json").read_text())
    words = {rank: word for word, rank in ranks.items()}
    held = per_class // 5 if split else 0
    for topic in topics:
        for n, i in enumerate(np.flatnonzero(labels == topic)[:per_class]):
            part = ("validation" if n < held else "train") if split else ""
            folder = root / part / f"topic{topic}"
            folder.mkdir(parents=True, exist_ok=True)
            text = " ".join(words.get(rank, "") for rank in wires[i])
            (folder / f"{i}.txt").write_text(text)
    return root
