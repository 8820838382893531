"""The user data `scripts/bench.py --source` measures the harness on, and the same data
fed to the bare baselines as a user would feed `model.fit` (see bench.SOURCES).

- `reuters_datasets`: a `--dataset=scripts.bench_data:reuters_datasets` function
  returning Reuters (the shared reuters.npz) as a pair of `tf.data.Dataset`s of
  unbatched (token ids, topic) examples: 8,982 training newswires shuffled with the
  seed, 2,246 for validation, pre-padded to 300 ids under 10,000.
- `digits_folder`: an image folder of scikit-learn's bundled 8x8 digits (1,400
  training and 350 validation PNGs; scikit-learn is a test dependency).
"""

import os
from pathlib import Path

import numpy as np

SHARED_DATA = Path(
    os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
REUTERS_TRAIN, MAX_LEN, NUM_WORDS, OOV = 8982, 300, 10000, 2
DIGITS_PER_CLASS = (140, 35)  # training and validation images of each digit
TRAIN_SIZES = {"datasets": REUTERS_TRAIN, "images": 10 * DIGITS_PER_CLASS[0]}


def reuters_datasets(seed):
    """(train, validation) `tf.data.Dataset`s of Reuters (see the module docstring)."""
    import keras
    import tensorflow as tf

    with np.load(SHARED_DATA / "reuters.npz", allow_pickle=True) as f:
        wires, topics = f["x"], f["y"]
    ids = [[w if w < NUM_WORDS else OOV for w in wire] for wire in wires]
    x = keras.utils.pad_sequences(ids, maxlen=MAX_LEN).astype(np.int32)
    y = topics.astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((x[:REUTERS_TRAIN], y[:REUTERS_TRAIN]))
    validation = tf.data.Dataset.from_tensor_slices((x[REUTERS_TRAIN:], y[REUTERS_TRAIN:]))
    return train.shuffle(REUTERS_TRAIN, seed=seed), validation


def digits_folder(root: str) -> str:
    """`root`/train/<digit>/*.png and `root`/validation/<digit>/*.png; `root`."""
    from tests.user_data import digits_folder as write

    return str(write(Path(root), *DIGITS_PER_CLASS))


def baseline_sets(source: str, dataset: str, batch_size: int, image_size: tuple, seed: int):
    """(train, validation) batches of `source`'s data as a user feeds `model.fit`: the
    function's datasets batched; the image folder through Keras's loader, rescaled,
    cached and prefetched as Keras's image classification guide does."""
    import keras
    import tensorflow as tf

    if source == "datasets":
        train, validation = reuters_datasets(seed)
        return train.batch(batch_size).prefetch(tf.data.AUTOTUNE), validation.batch(batch_size)
    sets = []
    for split in ("train", "validation"):
        images = keras.utils.image_dataset_from_directory(
            os.path.join(dataset, split),
            image_size=image_size,
            batch_size=batch_size,
            shuffle=split == "train",
            seed=seed,
            verbose=False,
        )
        rescaled = images.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        sets.append(rescaled.cache().prefetch(tf.data.AUTOTUNE))
    return tuple(sets)
