"""--validation_split holds the validation set out of the training split (seeded), so
the data's own held-out split stays unseen as a test split (`RunData.test`); without
it, built-in data validates on that split as before and has no test split."""

import dataclasses
from pathlib import Path

import numpy as np
import proc_util
import pytest

from harness import data, hparams, rundir, sources
from harness.errors import UsageError

SIZES = dict(num_words=1000, max_len=60, num_classes=46)


def rows(*arrays) -> list:
    """The (token ids, label) rows of (x, y) pairs, sorted: a multiset to compare."""
    pairs = [(x.tobytes(), int(label)) for x, y in arrays for x, label in zip(x, y)]
    return sorted(pairs)


def reuters(data_dir: Path, **overrides) -> data.Splits:
    values = dict(SIZES, seed=42, num_examples=None, data_dir=str(data_dir))
    return data.load("reuters", **{**values, **overrides})


def synthetic(**overrides) -> data.Splits:
    return data.synthetic(**{**SIZES, "seed": 42, "num_examples": 250, **overrides})


def labels_of_test(splits, batch_size: int = 64) -> np.ndarray:
    """The labels `splits.test` gives, in its order."""
    return np.concatenate([y.numpy() for _, y in splits.test(batch_size)])


@pytest.fixture(scope="module")
def reuters_both(reuters_npz) -> tuple:
    """Reuters without and with --validation_split=0.2 (same seed)."""
    folder = reuters_npz.parent
    return reuters(folder), reuters(folder, validation_split=0.2)


def test_reuters_validation_is_held_out_of_the_training_split(reuters_both):
    plain, split = reuters_both
    assert split.val_size == round(0.2 * plain.train_size)
    assert split.train_size + split.val_size == plain.train_size
    # Together (as a multiset) the training split: none of it lost, none taken twice.
    assert rows((split.x_train, split.y_train), (split.x_val, split.y_val)) == rows(
        (plain.x_train, plain.y_train)
    )


def test_reuters_test_split_is_keras_test_split(reuters_both):
    plain, split = reuters_both
    np.testing.assert_array_equal(split.x_test, plain.x_val)
    np.testing.assert_array_equal(labels_of_test(split), plain.y_val)


def test_the_old_default_validates_on_the_test_split_and_has_no_test(reuters_both):
    plain, _ = reuters_both
    assert plain.val_size == 2246 and plain.x_test is None
    assert plain.test(32) is None


def test_reuters_num_examples_cuts_training_not_validation(reuters_npz, reuters_both):
    _, split = reuters_both
    cut = reuters(reuters_npz.parent, validation_split=0.2, num_examples=100)
    np.testing.assert_array_equal(cut.x_val, split.x_val)
    np.testing.assert_array_equal(cut.x_train, split.x_train[:100])
    with pytest.raises(UsageError, match="has 7186 training examples"):
        reuters(reuters_npz.parent, validation_split=0.2, num_examples=8000)


def test_reuters_split_follows_the_seed(reuters_npz, reuters_both):
    _, split = reuters_both
    again = reuters(reuters_npz.parent, validation_split=0.2)
    np.testing.assert_array_equal(again.x_val, split.x_val)
    other = reuters(reuters_npz.parent, validation_split=0.2, seed=7)
    assert not np.array_equal(other.x_val, split.x_val)


def test_split_off_is_a_seeded_partition():
    x = np.arange(100)
    (train, _), (val, _) = data.split_off(x, x, 0.25, seed=1)
    assert len(val) == 25 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(x)
    assert np.array_equal(data.split_off(x, x, 0.25, seed=1)[1][0], val)
    assert not np.array_equal(data.split_off(x, x, 0.25, seed=2)[1][0], val)
    with pytest.raises(UsageError, match="leaves no training examples"):
        data.split_off(x[:1], x[:1], 0.5, seed=1)


def test_synthetic_validation_split():
    plain, split = synthetic(), synthetic(validation_split=0.2)
    assert plain.test(32) is None
    assert (split.train_size, split.val_size) == (200, 50)
    assert rows((split.x_train, split.y_train), (split.x_val, split.y_val)) == rows(
        (plain.x_train, plain.y_train)
    )
    np.testing.assert_array_equal(split.x_test, plain.x_val)
    np.testing.assert_array_equal(labels_of_test(split), plain.y_val)
    np.testing.assert_array_equal(synthetic(validation_split=0.2).x_val, split.x_val)
    assert not np.array_equal(synthetic(validation_split=0.2, seed=1).x_val, split.x_val)


@pytest.fixture
def npz(tmp_path):
    """`npz(**arrays)`: the path of an .npz of tiny token-id arrays, with those given."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple:
        return rng.integers(0, 50, size=(n, 8)), rng.integers(0, 3, size=n)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(40), split(10), split(12)
    every = dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    every.update(x_test=x_test, y_test=y_test)

    def make(*names: str) -> str:
        path = tmp_path / f"{'-'.join(names)}.npz"
        np.savez(path, **{name: every[name] for name in names})
        return str(path)

    return make


def test_npz_test_split(npz, make_config):
    def load(path: str, **overrides):
        return sources.load(make_config(dataset=path, num_examples=None, **overrides))

    both = load(npz("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    assert (both.val_size, len(labels_of_test(both))) == (10, 12)
    held = load(npz("x_train", "y_train", "x_test", "y_test"), validation_split=0.25)
    assert (held.train_size, held.val_size, len(labels_of_test(held))) == (30, 10, 12)
    # Without a split the test arrays stand in for validation, as before: no test split.
    alone = load(npz("x_train", "y_train", "x_test", "y_test"))
    assert (alone.val_size, alone.test(8)) == (12, None)
    with pytest.raises(UsageError, match="validation data of its own"):
        load(npz("x_train", "y_train", "x_val", "y_val"), validation_split=0.2)


def test_validation_split_options(make_config):
    config = make_config(dataset="reuters", validation_split=0.2)
    assert "val0.2" in hparams.differences(config)
    assert "validation_split" in rundir.RESUME_MUST_MATCH
    with pytest.raises(UsageError, match="--model=multi_io"):
        make_config(model="multi_io", validation_split=0.2)


def test_a_bad_fraction_is_one_error_line(tmp_path):
    process = proc_util.run(["--validation_split=1.5", f"--logdir={tmp_path / 'logs'}"], tmp_path)
    proc_util.assert_one_error_line(process, "--validation_split=1.5", "between 0 and 1")
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_fit_run_validates_on_the_held_out_part(make_config, run_train, load_json):
    config = make_config(validation_split=0.2, steps_per_epoch=2, run_name="held")
    result, _ = run_train(config)
    history = load_json(Path(config.logdir) / "held" / "history.json")
    assert "val_loss" in history
    assert load_json(Path(config.logdir) / "held" / "flags.json")["validation_split"] == 0.2
    other = dataclasses.replace(config, resume=True, validation_split=0.3)
    with pytest.raises(UsageError, match="--validation_split=0.3 contradicts"):
        rundir.plan(other)


def test_a_folder_with_test_subfolder(tmp_path, make_config):
    for split, count in (("train", 6), ("test", 2)):
        for label in ("ham", "spam"):
            folder = tmp_path / "texts" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.txt").write_text(f"{label} words number {i}")
    config = make_config(dataset=str(tmp_path / "texts"), num_examples=None)
    held = sources.load(dataclasses.replace(config, validation_split=0.25))
    assert (held.train_size, held.val_size, len(labels_of_test(held))) == (9, 3, 4)
    alone = sources.load(config)
    assert (alone.val_size, alone.test(8)) == (4, None)
