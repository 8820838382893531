"""What the tutorials show besides the three loops (issue 8): the multi-input,
multi-output tickets model, --metrics, the GPU flags on a CPU-only machine and
SavedModel export.

Real TensorFlow training in this process (`harness.train` with tiny
configs); the entrypoint runs as a subprocess only where its exit status and
stderr are the contract, and the exported SavedModels are loaded in a fresh
Python process that never imports the harness or Keras's saving code.

TensorBoard: the event files are read with `harness.callbacks.events`.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import proc_util
import pytest
import tensorflow as tf

from harness import devices, multi_io, task
from harness.callbacks import events
from harness.config import MODES, Config, parse_loss_weights
from harness.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
CPU_LINE = "training on the CPU"
MULTI_IO_KEYS = (
    "loss",
    "priority_loss",
    "department_loss",
    "priority_accuracy",
    "department_accuracy",
)
# Faster runs: no weight/gradient histograms (they are tested elsewhere).
FAST = dict(histogram_freq=0, **proc_util.OBSERVERS_OFF)


def _no_gpu() -> bool:
    return not tf.config.list_physical_devices("GPU")


cpu_only = pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU")


# --- Helpers ----------------------------------------------------------------------------


def tensorboard(run_dir) -> dict:
    """{"train": {tag: [(step, value), ...]}, "validation": ...} of a run's epoch scalars."""
    return {
        split: events.read(Path(run_dir) / split).scalars_named("epoch_")
        for split in ("train", "validation")
    }


def check_logged(result, lines, keys, epochs, load_json) -> None:
    """Every key (and its val_ twin) is in history.json, the summary table and
    TensorBoard (epoch_<key> in train/ and validation/, one value per epoch,
    equal to the history's)."""
    run_dir = Path(result.run_dir)
    history = load_json(run_dir / "history.json")
    assert history == result.history
    lines = "\n".join(lines).splitlines()
    table = {line.split()[0] for line in lines if line.strip()}
    events = tensorboard(run_dir)
    for key in keys:
        for name, split in ((key, "train"), (f"val_{key}", "validation")):
            assert name in history, (name, sorted(history))
            assert len(history[name]) == epochs and all(map(math.isfinite, history[name]))
            assert name in table, f"{name} missing from the summary table:\n" + "\n".join(lines)
            tag = f"epoch_{key}"
            assert tag in events[split], (split, tag, sorted(events[split]))
            steps, values = zip(*events[split][tag])
            assert list(steps) == list(range(1, epochs + 1)), (split, tag, steps)
            np.testing.assert_allclose(values, history[name], rtol=1e-6, err_msg=f"{split} {tag}")


def check_cpu_line_once(lines) -> None:
    """The startup output says exactly once that the run trains on the CPU, before
    the line describing the run."""
    lines = "\n".join(lines).splitlines()
    cpu = [i for i, line in enumerate(lines) if CPU_LINE in line]
    assert len(cpu) == 1, lines
    first_run_line = next(i for i, line in enumerate(lines) if line.startswith("harness: mode="))
    assert cpu[0] < first_run_line, lines


def harness_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def start_cli(args, cwd) -> subprocess.Popen:
    """`python -m harness.run ARGS`, started in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run", *args],
        cwd=cwd,
        env=harness_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple:
    """(exit status, stdout, stderr) of a process from `start_cli`."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as timeout_error:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"{process.args} still ran after {timeout} s: {err[-2000:]}"
        ) from timeout_error
    return process.returncode, out, err


def weighted_sum(history, prefix, index, weights) -> float:
    return sum(
        weights[output] * history[f"{prefix}{output}_loss"][index] for output in multi_io.OUTPUTS
    )


# --- Multi-input, multi-output model -------------------------------------------------------

EPOCHS = 3


@pytest.fixture(scope="module")
def multi_io_runs(tiny_config, run_train, tmp_path_factory) -> dict:
    """The tickets model for 3 epochs in every loop: {mode: (Result, printed lines)}."""
    logdir = tmp_path_factory.mktemp("multi_io")
    return {
        mode: run_train(
            tiny_config(logdir, mode=mode, model="multi_io", epochs=EPOCHS, run_name=mode, **FAST)
        )
        for mode in MODES
    }


@pytest.mark.slow
def test_multi_io_loss_agrees_across_loops(multi_io_runs):
    """The same weighted loss, from the same weights and batches, in every loop."""
    reference = multi_io_runs["fit"][0].history
    for mode in MODES:
        history = multi_io_runs[mode][0].history
        assert history["epoch"] == list(range(1, EPOCHS + 1))
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(
                history[key], reference[key], rtol=0.01, err_msg=f"{mode} {key} vs fit"
            )
        assert history["loss"][-1] < history["loss"][0], (mode, history["loss"])


@pytest.mark.slow
def test_multi_io_logs_every_output_in_every_loop(multi_io_runs, load_json):
    """History, summary table and TensorBoard have each output's loss and accuracy,
    with the same keys and tags in every loop."""
    tag_sets = {}
    for mode, (result, lines) in multi_io_runs.items():
        check_logged(result, lines, MULTI_IO_KEYS, EPOCHS, load_json)
        check_cpu_line_once(lines)
        events = tensorboard(result.run_dir)
        tag_sets[mode] = {split: set(scalars) for split, scalars in events.items()}
        assert set(result.history) == {
            "epoch",
            *MULTI_IO_KEYS,
            *(f"val_{key}" for key in MULTI_IO_KEYS),
        }, mode
        assert {
            "epoch_priority_loss",
            "epoch_department_loss",
            "epoch_priority_accuracy",
            "epoch_department_accuracy",
        } <= tag_sets[mode]["validation"]
    assert tag_sets["train_on_batch"] == tag_sets["fit"] == tag_sets["tape"], tag_sets


@pytest.mark.slow
def test_multi_io_total_loss_is_the_weighted_sum(multi_io_runs):
    """loss = priority_loss * 1.0 + department_loss * 0.2 (the default weights).

    train_on_batch's epoch figures are batch-size-weighted averages of exact
    per-batch values, and the relation is linear, so it holds exactly there, on
    train and validation alike. In fit and tape Keras averages the per-output
    train losses per batch (7 batches of 32 and one of 26 here): close, not exact.
    """
    weights = multi_io.DEFAULT_LOSS_WEIGHTS
    assert weights == {"priority": 1.0, "department": 0.2}
    for mode, (result, _) in multi_io_runs.items():
        history = result.history
        for epoch in range(EPOCHS):
            total = weighted_sum(history, "", epoch, weights)
            assert history["loss"][epoch] == pytest.approx(total, rel=3e-3), (mode, epoch)
            # Not the unweighted sum: department_loss (about ln 4) weighs 0.2.
            assert (
                history["loss"][epoch]
                < weights["priority"] * history["priority_loss"][epoch]
                + 0.5 * history["department_loss"][epoch]
            )
    tob = multi_io_runs["train_on_batch"][0].history
    for prefix in ("", "val_"):
        for epoch in range(EPOCHS):
            assert tob[f"{prefix}loss"][epoch] == pytest.approx(
                weighted_sum(tob, prefix, epoch, weights), rel=1e-5
            ), (prefix, epoch)


@pytest.mark.slow
def test_multi_io_validation_per_output_losses_agree_between_fit_and_tape(multi_io_runs):
    """fit and tape report the same per-output validation losses.

    Both read Keras's CompileLoss trackers, which in Keras 3.15 weigh each batch by its
    *static* batch size (None in a traced function, so 1): an unweighted mean of batch means.
    train_on_batch weighs by batch size, so its per-output figures are the exact ones and
    differ from the other two by a little when the last batch is partial.
    """
    fit = multi_io_runs["fit"][0].history
    tape = multi_io_runs["tape"][0].history
    for key in ("val_priority_loss", "val_department_loss", "val_loss"):
        np.testing.assert_allclose(tape[key], fit[key], rtol=1e-5, err_msg=key)


@pytest.mark.slow
def test_multi_io_custom_loss_weights(make_config, run_train, load_json):
    """loss_weights priority=1, department=1 make the loss the plain sum."""
    weights = {"priority": 1.0, "department": 1.0}
    config = make_config(
        mode="train_on_batch",
        model="multi_io",
        epochs=2,
        loss_weights=tuple(weights.items()),
        **FAST,
    )
    result, _ = run_train(config)
    history = result.history
    for prefix in ("", "val_"):
        for epoch in range(2):
            total = history[f"{prefix}loss"][epoch]
            assert total == pytest.approx(
                weighted_sum(history, prefix, epoch, weights), rel=1e-5
            ), (prefix, epoch)
            assert total != pytest.approx(
                weighted_sum(history, prefix, epoch, multi_io.DEFAULT_LOSS_WEIGHTS), rel=0.05
            )
    flags = load_json(Path(result.run_dir) / "flags.json")
    assert dict(map(tuple, flags["loss_weights"])) == weights


@pytest.mark.slow
def test_multi_io_targets_depend_on_the_inputs(make_config, run_train):
    """Trained longer, the model beats chance on the department (4 classes) and the
    majority class on the priority, on held-out tickets; the chosen metrics go to
    the outputs they apply to (AUC: the binary priority only).

    The priority (an urgent tag) is learnt slowly: at the default learning rate
    val_priority_accuracy stays at the majority rate for 8 epochs of 2000
    tickets (its AUC does rise), hence the higher rate here.
    """
    config = make_config(
        mode="tape",
        model="multi_io",
        num_examples=2000,
        epochs=4,
        learning_rate=3e-3,
        metrics=("accuracy", "auc"),
        **FAST,
    )
    splits = multi_io.synthetic(
        num_examples=config.num_examples,
        num_words=config.num_words,
        max_len=config.max_len,
        num_departments=config.classes,
        seed=config.seed,
    )
    urgent = float(np.mean(splits.y_val["priority"]))
    majority = max(urgent, 1 - urgent)
    result, _ = run_train(config)
    history = result.history
    assert "val_priority_auc" in history and "val_department_auc" not in history
    assert max(history["val_department_accuracy"]) > 0.6, history["val_department_accuracy"]
    assert max(history["val_priority_accuracy"]) > majority + 0.03, (
        majority,
        history["val_priority_accuracy"],
    )
    assert max(history["val_priority_auc"]) > 0.75, history["val_priority_auc"]
    assert history["val_loss"][-1] < 0.85 * history["val_loss"][0], history["val_loss"]


@pytest.mark.parametrize(
    "text",
    [
        "priority",
        "priority:1",
        "priority=x",
        "priority=1.0;department=0.2",
        "=1",
        "urgency=1",
        "Priority=1",
        "priority=-1",
        "department=-0.5",
        "priority=nan",
        "priority=inf",
        "priority=1,priority=2",
    ],
)
def test_bad_loss_weights_are_usage_errors(text):
    with pytest.raises(UsageError, match=r"--loss_weights.*(priority.*department|output=weight)"):
        parse_loss_weights(text)


def test_loss_weights_parse():
    assert parse_loss_weights("") == ()
    assert parse_loss_weights(" priority = 1.0 , department=0.2 ") == (
        ("priority", 1.0),
        ("department", 0.2),
    )
    assert parse_loss_weights("department=0") == (("department", 0.0),)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss_weights=(("priority", 1.0),)), "--loss_weights applies to .*multi_io"),
        (
            dict(model="functional", loss_weights=(("department", 1.0),)),
            "--loss_weights applies to .*multi_io",
        ),
        (dict(model="multi_io", dataset="reuters"), "--model=multi_io .*--dataset=reuters"),
        (dict(model="multi_io", dataset="imdb"), "--model=multi_io .*--dataset=imdb"),
    ],
)
def test_multi_io_usage_errors(overrides, message, make_config, logdir):
    with pytest.raises(UsageError, match=message):
        make_config(**overrides)
    assert not logdir.exists()


def test_config_rejects_unknown_loss_weight_outputs(make_config, logdir):
    with pytest.raises(UsageError, match="--loss_weights"):
        make_config(model="multi_io", loss_weights=(("urgency", 1.0),))
    assert not logdir.exists()


def test_multi_io_with_two_departments_is_rejected_or_trains(make_config, run_train, logdir):
    try:
        config = make_config(model="multi_io", num_classes=2, **FAST)
    except UsageError:  # rejected up front, before anything is written: fine
        assert not logdir.exists()
        return
    result, _ = run_train(config)
    assert "val_department_accuracy" in result.history


def test_multi_io_metrics_go_to_the_outputs_they_apply_to():
    _, keys = multi_io.compile_args(4, ("accuracy", "auc", "top3_accuracy"), {})
    assert keys == [
        "loss",
        "priority_loss",
        "department_loss",
        "priority_accuracy",
        "priority_auc",
        "department_accuracy",
        "department_top3_accuracy",
    ]
    _, keys = multi_io.compile_args(4, (), {})
    assert keys == list(MULTI_IO_KEYS)
    with pytest.raises(ValueError, match="choose from accuracy, top5_accuracy"):
        multi_io.compile_args(4, ("f1",), {})


# --- --metrics -----------------------------------------------------------------------------

BINARY = ("accuracy", "auc", "precision", "recall")
MULTICLASS = ("accuracy", "top3_accuracy", "crossentropy")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "num_classes, names", [(2, BINARY), (46, MULTICLASS)], ids=["binary", "46-class"]
)
@pytest.mark.slow
def test_chosen_metrics_are_logged_everywhere(
    mode, num_classes, names, make_config, run_train, load_json, capsys
):
    """Each chosen metric is on the console (the verbose=2 epoch line and the summary
    table), in history.json and TensorBoard, in every loop; the defaults are not."""
    config = make_config(
        mode=mode, num_classes=num_classes, metrics=names, verbose=2, steps_per_epoch=4, **FAST
    )
    result, lines = run_train(config)
    console = capsys.readouterr().out
    keys = ("loss", *names)
    check_logged(result, lines, keys, 1, load_json)
    check_cpu_line_once(lines)
    epoch_lines = [line for line in console.splitlines() if " - loss: " in line]
    assert len(epoch_lines) == 1, console
    for key in keys:
        assert f" - {key}: " in epoch_lines[0] and f" - val_{key}: " in epoch_lines[0], (
            key,
            epoch_lines[0],
        )
    unchosen = {"top5_accuracy", *BINARY, *MULTICLASS} - set(names)
    events = tensorboard(result.run_dir)
    for name in unchosen:
        assert name not in result.history and f"epoch_{name}" not in events["train"], name
        assert f" {name}: " not in epoch_lines[0], name


@pytest.mark.parametrize(
    "num_classes, names, message",
    [
        (
            46,
            ("accuracy", "f1"),
            "unknown metric 'f1'; choose from accuracy, top5_accuracy, "
            "top3_accuracy, crossentropy, auc, precision, recall",
        ),
        (2, ("Accuracy",), "unknown metric 'Accuracy'; choose from accuracy"),
        (
            46,
            ("auc",),
            "'auc' does not apply to a 46-class task; choose from accuracy, "
            "top5_accuracy, top3_accuracy, crossentropy$",
        ),
        (46, ("precision",), "'precision' does not apply to a 46-class task"),
        (
            2,
            ("top5_accuracy",),
            "'top5_accuracy' does not apply to a binary task; choose from "
            "accuracy, crossentropy, auc, precision, recall$",
        ),
    ],
)
def test_bad_metrics_are_usage_errors(num_classes, names, message, make_config, run_train, logdir):
    config = make_config(num_classes=num_classes, metrics=names)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        run_train(config)
    assert not logdir.exists()


def test_default_metrics_per_task():
    assert task.metric_names(2) == ("accuracy", "auc")
    assert task.metric_names(46) == ("accuracy", "top5_accuracy")
    assert task.metric_names(4, ("top3_accuracy",)) == ("top3_accuracy",)


# --- GPU flags on a CPU-only machine -------------------------------------------------------


def test_gpu_flag_defaults():
    config = Config()
    assert (config.gpus, config.gpu_memory_growth, config.gpu_memory_limit_mb) == (None, True, 0)


@cpu_only
@pytest.mark.parametrize("growth, limit", [(True, 0), (False, 0), (True, 512)])
def test_cpu_machine_accepts_the_memory_flags(growth, limit):
    line = devices.configure(None, growth, limit)
    assert CPU_LINE in line and "\n" not in line


@cpu_only
@pytest.mark.parametrize("gpus", [(0,), (1,), (0, 1)])
def test_naming_a_gpu_on_a_cpu_machine_is_a_usage_error(gpus, make_config, run_train, logdir):
    config = make_config(gpus=gpus)
    with pytest.raises(
        UsageError,
        match=rf"--gpus={','.join(map(str, gpus))}: this machine "
        "has no GPU",
    ):
        run_train(config)
    assert not logdir.exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(gpus=(-1,)), r"--gpus=-1 is not allowed"),
        (dict(gpus=(0, -2)), r"--gpus=0,-2 is not allowed"),
        (dict(gpu_memory_limit_mb=-5), r"--gpu_memory_limit_mb=-5 is not allowed"),
        (
            dict(intra_op_threads=-1),
            r"--intra_op_threads=-1 is not allowed: it must be 0 "
            r"\(TensorFlow's choice\)",
        ),
        (dict(inter_op_threads=-2), r"--inter_op_threads=-2 is not allowed"),
    ],
)
def test_bad_device_values_are_usage_errors(overrides, message, make_config):
    with pytest.raises(UsageError, match=message):
        make_config(**overrides)


# --- CPU thread pools ------------------------------------------------------------------------

# In a fresh interpreter, since TensorFlow fixes its thread pools when it starts: a run with
# the flags set, then one asking for other counts in the same process.
THREADS_SCRIPT = textwrap.dedent("""
    import json, sys
    from harness.config import Config
    from harness.errors import UsageError
    from harness import train
    logdir = sys.argv[1]
    tiny = dict(mode="tape", epochs=1, num_examples=64, max_len=30, num_words=200,
                histogram_freq=0, verbose=0, logdir=logdir)
    lines = []
    result = train(Config(run_name="threads", intra_op_threads=1, inter_op_threads=3, **tiny),
                   print_fn=lines.append)
    import tensorflow as tf  # the pools of the running TensorFlow
    try:
        train(Config(run_name="other", inter_op_threads=4, **tiny), print_fn=lines.append)
        error = None
    except UsageError as e:
        error = str(e)
    print(json.dumps({"lines": lines, "run_dir": result.run_dir, "error": error,
                      "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                      "inter": tf.config.threading.get_inter_op_parallelism_threads()}))
""")


@pytest.mark.slow
def test_thread_flags_set_tensorflows_pools(tmp_path, load_json):
    logdir = tmp_path / "logs"
    process = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(logdir)],
        cwd=tmp_path,
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.strip().splitlines()[-1])
    assert (out["intra"], out["inter"]) == (1, 3)
    assert (
        "harness: CPU threads: intra-op 1 (threads per op), inter-op 3 (ops at once)"
        in out["lines"]
    )
    flags = load_json(Path(out["run_dir"]) / "flags.json")
    assert (flags["intra_op_threads"], flags["inter_op_threads"]) == (1, 3)
    assert load_json(Path(out["run_dir"]) / "history.json")["epoch"] == [1]
    # Other counts once TensorFlow runs: a usage error, before the run directory exists.
    assert "--inter_op_threads=4 could not be applied" in out["error"]
    assert "3 threads" in out["error"]
    assert sorted(p.name for p in logdir.iterdir()) == ["threads"]


def test_thread_flags_default_to_tensorflows_choice():
    config = Config()
    assert (config.intra_op_threads, config.inter_op_threads) == (0, 0)
    assert devices.configure_threads(0, 0) is None


# --- The entrypoint's exit status (subprocesses, run side by side) ------------------------

# (flags, exit status, text the one stderr line must hold)
CLI_CASES = [
    (["--gpus=0"], 2, "--gpus=0: this machine has no GPU"),
    (["--gpus=1"], 2, "--gpus=1: this machine has no GPU"),
    (["--gpus=-1"], 2, "--gpus=-1 is not allowed"),
    (["--gpu_memory_limit_mb=-5"], 2, "--gpu_memory_limit_mb=-5 is not allowed"),
    (["--metrics=accuracy,f1"], 2, "unknown metric 'f1'; choose from accuracy, top5_accuracy"),
    (["--loss_weights=priority:1", "--model=multi_io"], 2, "give output=weight pairs"),
    (["--loss_weights=priority=1"], 2, "--loss_weights applies to a multi-output model"),
    (["--model=multi_io", "--dataset=reuters"], 2, "--model=multi_io trains on its own"),
]


@cpu_only
@pytest.mark.slow
def test_cli_usage_errors_are_one_line_exit_2(tmp_path):
    tiny = [
        "--epochs=1",
        "--num_examples=64",
        "--max_len=60",
        "--num_words=1000",
        f"--logdir={tmp_path / 'logs'}",
    ]
    processes = [(case, start_cli([*case[0], *tiny], tmp_path)) for case in CLI_CASES]
    for (flags, status, text), process in processes:
        code, out, err = finish(process)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == status, (flags, code, err[-3000:])
        assert len(lines) == 1 and lines[0].startswith("harness: error: "), (flags, err[-3000:])
        assert text in lines[0], (flags, lines[0])
        assert "Traceback" not in err + out
    assert not (tmp_path / "logs").exists()


# --- SavedModel export ---------------------------------------------------------------------

EXPORTED = ("sequential", "multi_io", "subclass")
N_INPUTS = 7

# Runs in a fresh interpreter: only TensorFlow, no harness, no Keras model code.
LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    jobs = json.loads(sys.argv[1])
    for saved_model, inputs, outputs in jobs:
        loaded = tf.saved_model.load(saved_model)
        with np.load(inputs) as arrays:
            x = {name: tf.constant(arrays[name]) for name in arrays.files}
        x = x["tokens"] if list(x) == ["tokens"] else x
        y = loaded.serve(x)
        y = {name: value.numpy() for name, value in y.items()} if isinstance(y, dict) \\
            else {"output": y.numpy()}
        np.savez(outputs, **y)
    print("loaded", len(jobs))
""")


def _inputs(model: str, config: Config) -> dict:
    rng = np.random.default_rng(7)
    if model != "multi_io":
        return {
            "tokens": rng.integers(0, config.num_words, (N_INPUTS, config.max_len), dtype=np.int32)
        }
    title = multi_io.title_length(config.max_len)
    return {
        "title": rng.integers(0, config.num_words, (N_INPUTS, title), dtype=np.int32),
        "body": rng.integers(0, config.num_words, (N_INPUTS, config.max_len), dtype=np.int32),
        "tags": (rng.random((N_INPUTS, multi_io.NUM_TAGS)) < 0.3).astype(np.float32),
    }


@pytest.fixture(scope="module")
def exports(tiny_config, run_train, tmp_path_factory) -> dict:
    """Each model trained with export=True, then every SavedModel loaded and run in
    one fresh process: {model: dict(config, result, lines, inputs, served, error)}."""
    logdir = tmp_path_factory.mktemp("export")
    runs, jobs = {}, []
    for model in EXPORTED:
        config = tiny_config(
            logdir, model=model, run_name=model, num_examples=100, epochs=1, export=True, **FAST
        )
        run = runs[model] = dict(config=config, inputs=_inputs(model, config), error=None)
        try:
            run["result"], run["lines"] = run_train(config)
        except Exception as error:  # noqa: BLE001 - reported by the model's test
            run["error"] = error
            continue
        inputs, outputs = logdir / f"{model}-in.npz", logdir / f"{model}-out.npz"
        np.savez(inputs, **run["inputs"])
        jobs.append((str(Path(run["result"].run_dir) / "saved_model"), str(inputs), str(outputs)))
        run["outputs"] = outputs
    if jobs:
        loader = subprocess.run(
            [sys.executable, "-c", LOADER, json.dumps(jobs)],
            capture_output=True,
            text=True,
            timeout=180,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            cwd=logdir,
            stdin=subprocess.DEVNULL,
        )
        assert loader.returncode == 0, loader.stderr[-3000:]
        for run in runs.values():
            if "outputs" in run:
                with np.load(run["outputs"]) as served:
                    run["served"] = dict(served)
    return runs


def _check_export(run) -> None:
    import keras

    if run["error"] is not None:
        raise run["error"]
    result, lines = run["result"], run["lines"]
    run_dir = Path(result.run_dir)
    saved_model = run_dir / "saved_model"
    assert (saved_model / "saved_model.pb").is_file()
    text = "\n".join(lines)
    assert f"SavedModel written to {saved_model}" in text, text
    assert f"tf.saved_model.load({str(saved_model)!r})" in text, text

    best = keras.saving.load_model(run_dir / "best.keras", safe_mode=True)
    inputs = run["inputs"]
    expected = best.predict(inputs["tokens"] if list(inputs) == ["tokens"] else inputs, verbose=0)
    expected = expected if isinstance(expected, dict) else {"output": expected}
    served = run["served"]
    assert set(served) == set(expected), (sorted(served), sorted(expected))
    for name, value in expected.items():
        assert served[name].shape == np.shape(value), name
        np.testing.assert_allclose(served[name], value, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_export_sequential_serves_like_the_best_model(exports):
    _check_export(exports["sequential"])
    assert exports["sequential"]["served"]["output"].shape == (N_INPUTS, 46)


@pytest.mark.slow
def test_export_multi_io_serves_like_the_best_model(exports):
    _check_export(exports["multi_io"])
    served = exports["multi_io"]["served"]
    assert served["priority"].shape == (N_INPUTS, 1)
    assert served["department"].shape == (N_INPUTS, 4)


@pytest.mark.slow
def test_export_subclass_serves_like_the_best_model(exports):
    _check_export(exports["subclass"])


@pytest.mark.slow
def test_export_multi_io_says_how_to_call_it(exports):
    run = exports["multi_io"]
    hint = "\n".join(line for line in run["lines"] if "saved_model" in line.lower())
    for name in multi_io.INPUTS:
        assert name in hint, hint
