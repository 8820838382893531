"""The data users bring (--dataset=<file>.npz | <folder> | package.module:function):
each source trains in every loop and resumes exactly, and bad data is one line."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from proc_util import Harness, assert_one_error_line, harness_lines

from harness import train
from harness.callbacks import events
from harness.config import MODES, Config
from tests import user_data

EPOCHS = 2
# Each source: (--dataset (a function of the data folder and the shared data), flags).
SOURCES = {
    "npz": (lambda made, shared: str(shared / "boston_housing.npz"), {"validation_split": 0.2}),
    "function": (lambda made, shared: "tests.user_data:boston", {}),
    "datasets": (lambda made, shared: "tests.user_data:digits_datasets", {}),
    "images": (lambda made, shared: str(made / "digits"), {"image_size": (8, 8)}),
    "text": (lambda made, shared: str(made / "news"), {"num_words": 2000, "max_len": 60}),
}
TASK_METRIC = {
    "npz": "mae",
    "function": "mae",
    "datasets": "accuracy",
    "images": "accuracy",
    "text": "accuracy",
}


@pytest.fixture(scope="module")
def made(tmp_path_factory, shared_data) -> Path:
    """The folders a user would have: digits as PNG files, newswires as text files."""
    root = tmp_path_factory.mktemp("user-data")
    user_data.digits_folder(root / "digits")
    user_data.newswire_folder(root / "news")
    return root


def _config(logdir: Path, dataset: str, mode: str, run_name: str, **flags) -> Config:
    return Config(
        dataset=dataset,
        mode=mode,
        batch_size=32,
        verbose=0,
        logdir=str(logdir),
        run_name=run_name,
        **flags,
    ).validate()


@pytest.fixture(scope="module", params=[(s, m) for s in SOURCES for m in MODES], ids=str)
def straight_and_resumed(request, made, shared_data, tmp_path_factory) -> tuple:
    """(source, straight Result, resumed Result): EPOCHS epochs at once, and one epoch
    then a resume to EPOCHS."""
    source, mode = request.param
    dataset, flags = SOURCES[source]
    dataset = dataset(made, shared_data)
    logdir = tmp_path_factory.mktemp(f"{source}-{mode}")
    results = []
    for name, epochs, resume in (("straight", EPOCHS, False), ("r", 1, False), ("r", EPOCHS, True)):
        keras.backend.clear_session()
        config = _config(logdir, dataset, mode, name, epochs=epochs, resume=resume, **flags)
        results.append(train(config, print_fn=lambda s: None))
    return source, results[0], results[2]


@pytest.mark.slow
def test_every_source_trains_in_every_loop_and_resumes_exactly(straight_and_resumed):
    source, straight, resumed = straight_and_resumed
    assert resumed.history["epoch"] == list(range(1, EPOCHS + 1))
    for key in ("loss", "val_loss", f"val_{TASK_METRIC[source]}"):
        np.testing.assert_allclose(resumed.history[key], straight.history[key], atol=1e-4)
    # The comparison means something: training moved the loss.
    assert abs(straight.history["loss"][1] - straight.history["loss"][0]) > 1e-3
    assert Path(resumed.run_dir, "best.keras").is_file()


@pytest.mark.slow
def test_text_folder_vocabulary_is_kept_and_reused(made, tmp_path):
    dataset = str(made / "news")
    config = _config(tmp_path, dataset, "fit", "t", epochs=1, num_words=500, max_len=40)
    run_dir = Path(train(config, print_fn=lambda s: None).run_dir)
    vocabulary = (run_dir / "vocabulary.txt").read_text().split("\n")
    assert vocabulary[:2] == ["", "[UNK]"] and 100 < len(vocabulary) <= 500
    assert "the" in vocabulary[:20]  # the most frequent words first


def test_regression_labels_give_a_regression_task(shared_data, tmp_path, run_train):
    config = _config(
        tmp_path,
        str(shared_data / "boston_housing.npz"),
        "tape",
        "reg",
        epochs=1,
        validation_split=0.25,
        histogram_freq=0,
    )
    result, lines = run_train(config)
    assert "(380 train / 126 validation, regression)" in "\n".join(lines)
    assert {"loss", "mae", "rmse", "val_mae", "val_rmse"} <= set(result.history)
    flags = json.loads(Path(result.run_dir, "flags.json").read_text())
    assert flags["validation_split"] == 0.25


def test_function_gets_the_seed_when_it_takes_one(tmp_path, run_train, shared_data):
    config = _config(
        tmp_path, "tests.user_data:boston_seeded", "fit", "s", epochs=1, histogram_freq=0
    )
    result, lines = run_train(config)
    assert "(404 train / 102 validation, regression)" in "\n".join(lines)


# --- Bad data: one line, exit 2, nothing written -------------------------------------------


def _bad_data(root: Path) -> dict:
    """{case: (--dataset, extra flags, fragments of the error line)}."""
    empty = root / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no class folders here")
    unreadable = root / "unreadable"
    for label in ("a", "b"):
        (unreadable / label).mkdir(parents=True)
        (unreadable / label / "table.csv").write_text("1,2,3")
    texts = root / "texts"
    for label in ("a", "b"):
        (texts / label).mkdir(parents=True)
        (texts / label / "1.txt").write_text(f"a text of class {label}")
    arrays = {
        "no-y": {"x_train": np.ones((8, 3)), "x_val": np.ones((2, 3)), "y_val": np.ones(2)},
        "lengths": {
            "x_train": np.ones((8, 3)),
            "y_train": np.ones(7),
            "x_val": np.ones((2, 3)),
            "y_val": np.ones(2),
        },
        "text-labels": {
            "x_train": np.ones((4, 3)),
            "y_train": np.array(["a", "b", "a", "b"]),
            "x_val": np.ones((2, 3)),
            "y_val": np.array(["a", "b"]),
        },
        "one-class": {
            "x_train": np.ones((4, 3)),
            "y_train": np.zeros(4, int),
            "x_val": np.ones((2, 3)),
            "y_val": np.zeros(2, int),
        },
        "no-validation": {"x_train": np.ones((4, 3)), "y_train": np.ones(4)},
    }
    for name, content in arrays.items():
        np.savez(root / f"{name}.npz", **content)
    return {
        "no-class-folders": (str(empty), [], ["0 class subfolder(s)", "<class>/<files>"]),
        "no-readable-files": (str(unreadable), [], ["hold no .txt or image"]),
        "npz-missing-array": (str(root / "no-y.npz"), [], ["has no y_train", "x_train, x_val"]),
        "npz-lengths": (str(root / "lengths.npz"), [], ["differ in length", "y_train 7"]),
        "labels-fit-no-task": (str(root / "text-labels.npz"), [], ["fit no task"]),
        "one-class": (str(root / "one-class.npz"), [], ["1 class(es)"]),
        "no-validation": (str(root / "no-validation.npz"), [], ["--validation_split"]),
        "missing-file": (str(root / "absent.npz"), [], ["no such file"]),
        "function-returns-wrong": (
            "tests.user_data:returns_a_list",
            [],
            ["gave a list of 3", "tf.data.Datasets"],
        ),
        "function-mismatched": ("tests.user_data:mismatched", [], ["differ in length"]),
        "datasets-repeated-forever": (
            "tests.user_data:datasets_repeated_forever",
            [],
            ["train dataset repeats forever", "drop .repeat()"],
        ),
        "datasets-batched": (
            "tests.user_data:datasets_batched",
            [],
            ["looks batched", "drop .batch()"],
        ),
        "datasets-of-dicts": ("tests.user_data:datasets_of_dicts", [], ["give (x, y) examples"]),
        "datasets-with-validation-split": (
            "tests.user_data:digits_datasets",
            ["--validation_split=0.2"],
            ["validation data of its own", "drop --validation_split"],
        ),
        "task-forced-on-a-folder": (str(texts), ["--task=regression"], ["--task"]),
        "model-does-not-fit": (
            "tests.user_data:boston",
            ["--model=tests.user_models:ten_classes"],
            ["outputs [batch, 10]", "needs one output [batch, 1]", "regression"],
        ),
    }


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, shared_data) -> dict:
    """{case: (process, work folder)} of each bad --dataset, run at once."""
    cases = _bad_data(tmp_path_factory.mktemp("bad-data"))
    cases["function-raises"] = ("tests.user_data:raises", [], [])
    processes = {}
    try:
        for case, (dataset, extra, _) in cases.items():
            work = tmp_path_factory.mktemp(case)
            flags = [f"--dataset={dataset}", *extra, "--logdir=logs", "--run_name=r"]
            processes[case] = Harness(flags, work, name="out")
        for process in processes.values():
            process.wait(timeout=240)
    finally:
        for process in processes.values():
            process.kill()
    return {case: (processes[case], cases[case][2]) for case in cases}


BAD_CASES = [
    "no-class-folders",
    "no-readable-files",
    "npz-missing-array",
    "npz-lengths",
    "labels-fit-no-task",
    "one-class",
    "no-validation",
    "missing-file",
    "function-returns-wrong",
    "function-mismatched",
    "datasets-repeated-forever",
    "datasets-batched",
    "datasets-of-dicts",
    "datasets-with-validation-split",
    "task-forced-on-a-folder",
    "model-does-not-fit",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_data_is_one_line_exit_2_before_the_logdir(bad_runs, case):
    process, fragments = bad_runs[case]
    assert_one_error_line(process.completed(), *fragments)
    assert not (process.cwd / "logs").exists()


@pytest.mark.slow
def test_a_data_function_that_raises_shows_its_frames_then_one_line(bad_runs):
    process, _ = bad_runs["function-raises"]
    result = process.completed()
    assert result.returncode == 2, result.stderr[-3000:]
    lines = harness_lines(result.stderr)
    text = "\n".join(lines)
    assert lines[0] == "Traceback (most recent call last):", lines
    assert 'user_data.py", line' in text and "in _parse_rows" in text, text
    assert "harness/" not in text.replace("harness: error:", ""), text
    assert lines[-1].startswith(
        "harness: error: --dataset='tests.user_data:raises': the function raised ValueError"
    ), lines[-1]
    assert not (process.cwd / "logs").exists()


def test_folder_checks_run_before_tensorflow_loads(tmp_path):
    """The layout is checked by the config, which imports no TensorFlow."""
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    with pytest.raises(Exception, match="0 class subfolder"):
        Config(dataset=str(tmp_path)).validate()


@pytest.fixture(scope="module")
def mirrored_pipeline_runs(tmp_path_factory, shared_data) -> dict:
    """{mode: run directory} of the tf.data source trained under MirroredStrategy on two
    CPU devices with a profile window, the three loops at once."""
    work = tmp_path_factory.mktemp("mirrored-pipeline")
    flags = [
        "--dataset=tests.user_data:digits_datasets",
        "--epochs=2",
        "--batch_size=32",
        "--strategy=mirrored",
        "--cpu_replicas=2",
        "--profile_steps=3,5",
        "--logdir=logs",
    ]
    processes = {
        m: Harness([*flags, f"--mode={m}", f"--run_name={m}"], work, name=m) for m in MODES
    }
    try:
        for process in processes.values():
            process.wait(timeout=300)
            assert process.completed().returncode == 0, process.stderr[-3000:]
    finally:
        for process in processes.values():
            process.kill()
    return {mode: work / "logs" / mode for mode in MODES}


@pytest.mark.slow
def test_a_pipeline_under_mirrored_is_profiled_and_logged_alike_in_every_loop(
    mirrored_pipeline_runs,
):
    losses = {}
    for mode, run_dir in mirrored_pipeline_runs.items():
        assert list(run_dir.glob("plugins/profile/*/*.xplane.pb")), mode
        train_events = events.read(str(run_dir / "train"))
        assert train_events.graph is not None, mode
        for tag in ("sequential/head/kernel", "sequential/head/kernel/gradient"):
            assert train_events.steps(tag), (mode, tag)
        validation = events.read(str(run_dir / "validation")).latest("epoch_loss")
        losses[mode] = [float(validation[epoch]) for epoch in (1, 2)]
    for mode in MODES:
        np.testing.assert_allclose(losses[mode], losses["fit"], atol=1e-4)
    assert losses["fit"][1] != losses["fit"][0]
