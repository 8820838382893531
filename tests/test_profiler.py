"""Tests for the profiler callback, the profile tables and scripts/profile_report.py.

Real TensorFlow, no mocks: tiny models train for a few steps under each driver
(`fit`, `train_on_batch`, a `GradientTape` loop, by hand and through the
harness and its command line), and the tests read the captures written to disk
back through xprof. The GPU tables are checked on a real 8xV100 capture
from the shared data folder (see its README), always read from a temporary copy.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from harness import train
from harness.callbacks import profile_render, profile_xprof
from harness.callbacks.profile_windows import parse_profile_steps
from harness.callbacks.profiler import ProfilerCallback, profiler_options, start_profiler_server
from harness.config import MODES, Config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
GPU_CAPTURE = SHARED_DATA / "profiles" / "gpu_v100x8_tf_bert_tensorflow-profiler-demo.xplane.pb"
VOCAB, LENGTH, CLASSES, BATCH = 500, 24, 4, 16


# --- Helpers ---------------------------------------------------------------------------


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 8),
            keras.layers.Conv1D(8, 3, activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(steps: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, (steps * BATCH, LENGTH), dtype=np.int32)
    y = rng.integers(0, CLASSES, (steps * BATCH,), dtype=np.int32)
    return x, y


def _drive_by_hand(driver: str, callback: ProfilerCallback, steps: int) -> None:
    """Runs `steps` train steps with a manually driven CallbackList."""
    model = _model()
    x, y = _data(steps)
    callbacks = keras.callbacks.CallbackList([callback], model=model)

    @tf.function
    def tape_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = model.loss(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {"loss": loss}

    callbacks.on_train_begin()
    for i in range(steps):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        callbacks.on_train_batch_begin(i)
        if driver == "tape":
            logs = {k: float(v) for k, v in tape_step(xb, yb).items()}
        else:
            logs = model.train_on_batch(xb, yb, return_dict=True)
        callbacks.on_train_batch_end(i, logs)
    callbacks.on_train_end()


def _xplanes(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("plugins/profile/*/*.xplane.pb"))


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/profile_report.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- parse_profile_steps and argument checks ---------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10,15", [(10, 15)]),
        ("10,15;200,205", [(10, 15), (200, 205)]),
        (" 3 , 5 ; 7,7 ", [(3, 5), (7, 7)]),
        ("1,1", [(1, 1)]),
        ("", []),
    ],
)
def test_parse_profile_steps_accepts(text, expected):
    assert parse_profile_steps(text) == expected


@pytest.mark.parametrize(
    "text, named",
    [
        ("10", "'10'"),
        ("a,b", "'a,b'"),
        ("1,2,3", "'1,2,3'"),
        ("-1,3", "'-1,3'"),
        ("2.5,4", "'2.5,4'"),
        ("10,15;x", "'x'"),
        ("0,3", "(0, 3)"),
        ("10,5", "(10, 5)"),
        ("1,5;3,8", "(3, 8)"),
        ("7,8;1,2", "(1, 2)"),
    ],
)
def test_parse_profile_steps_rejects_and_names_the_bad_value(text, named):
    with pytest.raises(ValueError) as error:
        parse_profile_steps(text)
    assert named in str(error.value)


@pytest.mark.parametrize("windows", [[(5, 3)], [(0, 2)], [(1, 3), (3, 4)], [(4, 5), (1, 2)]])
def test_callback_rejects_bad_windows(tmp_path, windows):
    with pytest.raises(ValueError, match="profile window"):
        ProfilerCallback(tmp_path, windows)


@pytest.mark.parametrize("port", [0, 65536, "6009", True])
def test_profiler_server_rejects_bad_ports(port):
    with pytest.raises(ValueError, match="port"):
        start_profiler_server(port)


# --- Captures from the three drivers -----------------------------------------------------


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    """One `model.fit` of 8 steps profiling steps 3..5; returns (run_dir, callback, output)."""
    run_dir = tmp_path_factory.mktemp("fit_run")
    output: list[str] = []
    callback = ProfilerCallback(run_dir, [(3, 5)], print_fn=output.append)
    x, y = _data(8)
    _model().fit(x, y, batch_size=BATCH, epochs=1, callbacks=[callback], verbose=0)
    return run_dir, callback, output


def test_fit_writes_capture_and_tables_next_to_it(fit_run):
    run_dir, callback, output = fit_run
    xplanes = _xplanes(run_dir)
    assert len(xplanes) == 1 and xplanes[0].stat().st_size > 0
    folder = xplanes[0].parent
    assert callback.captures == [folder]
    assert folder.name.endswith("_steps_3-5")
    for table in ("ops", "kernels", "steps"):
        assert (folder / f"profile_{table}.csv").is_file()
    assert (folder / "profile_tables.md").is_file()
    assert len(output) == 1 and not output[0].startswith("WARNING")
    assert "Top 20 ops by self time" in output[0]


def test_fit_tables_hold_real_ops_and_the_captured_steps(fit_run):
    run_dir, _, _ = fit_run
    tables = profile_xprof.build_tables(_xplanes(run_dir))
    ops = [op for op in tables.ops if "Conv" in op.op_name or "MatMul" in op.op_type]
    assert ops, [op.op_name for op in tables.ops]
    assert all(op.total_self_us > 0 and op.count == 3 for op in ops)
    assert tables.hardware_type == "CPU_ONLY"
    assert [step.step for step in tables.steps] == ["train 3", "train 4", "train 5"]
    assert tables.step_count == 3 and tables.avg_step_ms > 0
    assert tables.compute_share + tables.input_share + tables.other_share == pytest.approx(1.0)


def test_cpu_capture_has_an_empty_kernel_table(fit_run):
    run_dir, _, output = fit_run
    tables = profile_xprof.build_tables(_xplanes(run_dir))
    assert tables.kernels == ()
    assert "no GPU kernels traced (CPU-only capture)" in profile_render.format_tables(tables)
    assert "no GPU kernels traced (CPU-only capture)" in output[0]
    csv_lines = (_xplanes(run_dir)[0].parent / "profile_kernels.csv").read_text().splitlines()
    assert csv_lines == [
        "kernel_name,count,total_us,avg_us,uses_tensor_cores,"
        "tensor_core_eligible,op_name,grid,block"
    ]


@pytest.mark.parametrize("driver", ["tape", "train_on_batch"])
def test_hand_driven_loops_capture_each_window(tmp_path, driver):
    output: list[str] = []
    callback = ProfilerCallback(tmp_path, [(2, 3), (5, 6)], print_fn=output.append)
    _drive_by_hand(driver, callback, steps=7)
    # Both windows end within the same second; each still gets its own folder.
    assert [folder.name.rsplit("_steps_", 1)[1] for folder in callback.captures] == ["2-3", "5-6"]
    assert len(_xplanes(tmp_path)) == 2
    steps = [
        [step.step for step in profile_xprof.build_tables(capture).steps]
        for capture in profile_xprof.find_captures(tmp_path)
    ]
    assert steps == [["train 2", "train 3"], ["train 5", "train 6"]]
    assert not any(line.startswith("WARNING") for line in output)


def test_window_cut_short_by_train_end_is_still_saved(tmp_path):
    callback = ProfilerCallback(tmp_path, [(3, 10)], print_fn=lambda _: None)
    _drive_by_hand("tape", callback, steps=4)
    steps = profile_xprof.build_tables(_xplanes(tmp_path)).steps
    assert [step.step for step in steps] == ["train 3", "train 4"]


def test_no_windows_means_no_profiling(tmp_path):
    output: list[str] = []
    x, y = _data(3)
    callback = ProfilerCallback(tmp_path, [], print_fn=output.append)
    _model().fit(x, y, batch_size=BATCH, epochs=1, callbacks=[callback], verbose=0)
    assert not (tmp_path / "plugins").exists() and output == []


def test_failed_start_is_one_warning_and_training_goes_on(tmp_path):
    output: list[str] = []
    callback = ProfilerCallback(tmp_path / "run", [(2, 3)], print_fn=output.append)
    x, y = _data(4)
    tf.profiler.experimental.start(str(tmp_path / "other"))  # Occupies the only session.
    try:
        history = _model().fit(x, y, batch_size=BATCH, epochs=1, callbacks=[callback], verbose=0)
    finally:
        tf.profiler.experimental.stop(save=False)
    assert len(history.history["loss"]) == 1
    assert len(output) == 1 and "\n" not in output[0]
    assert output[0].startswith("WARNING: ProfilerCallback: could not start the profiler")
    assert callback.captures == []


def test_profiler_options_reach_the_profiler(tmp_path):
    def traced_python_function():
        return tf.reduce_sum(tf.ones((4, 4)))

    tf.profiler.experimental.start(str(tmp_path), options=profiler_options(python_tracer_level=1))
    traced_python_function()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace.FromString(_xplanes(tmp_path)[0].read_bytes())
    names = {
        plane.event_metadata[event.metadata_id].name
        for plane in space.planes
        for line in plane.lines
        for event in line.events
    }
    # Python-tracer events ("$file:line function") exist only if the level was applied.
    assert any(name.endswith(" traced_python_function") for name in names)


# --- The harness's three loops: xprof sees each window's steps ------------------------------

# Six steps (xprof drops the first and last of a capture with more than five) across the
# end of the first epoch (TINY: 8 steps an epoch, 2 validation batches) and its validation.
WINDOW = (6, 11)
TINY_STEPS_PER_EPOCH = 8


class _Executions(keras.callbacks.Callback):
    """The (first, last) global step of each train execution, and the (first, last)
    batch of each validation call, one list per epoch."""

    def on_train_begin(self, logs=None):
        self.train, self.test = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._offset = epoch * TINY_STEPS_PER_EPOCH + 1

    def on_train_batch_begin(self, batch, logs=None):
        self._first = batch

    def on_train_batch_end(self, batch, logs=None):
        self.train.append((self._offset + self._first, self._offset + batch))

    def on_test_begin(self, logs=None):
        self.test.append([])

    def on_test_batch_begin(self, batch, logs=None):
        self._first = batch

    def on_test_batch_end(self, batch, logs=None):
        self.test[-1].append((self._first, batch))


@pytest.fixture(scope="module")
def harness_runs(tmp_path_factory, tiny_config):
    """Per mode, a 2-epoch tiny harness run profiling WINDOW: (Result, lines, _Executions)."""
    runs = {}
    for mode in MODES:
        logdir = tmp_path_factory.mktemp(f"profiled-{mode}")
        executions, lines = _Executions(), []
        result = train(
            tiny_config(logdir, mode=mode, epochs=2, profile_steps=(WINDOW,)),
            print_fn=lines.append,
            callbacks=[executions],
        )
        runs[mode] = (result, lines, executions)
    return runs


def _xprof_steps(capture: tuple[Path, ...], tool: str) -> list[str]:
    """The step labels of an xprof tool's step-time table, read from a copy of the capture."""
    from xprof.convert import raw_to_tool_data

    with tempfile.TemporaryDirectory() as scratch:
        copies = [str(shutil.copy(path, scratch)) for path in capture]
        data, _ = raw_to_tool_data.xspace_to_tool_data(copies, tool, {})
    tables = [
        table
        for table in json.loads(data)
        if any(col.get("id") == "stepnum" for col in table.get("cols", []))
    ]
    assert len(tables) == 1, (tool, data[:500])
    return [row["c"][0]["v"] for row in tables[0].get("rows", [])]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", ["overview_page", "input_pipeline_analyzer"])
@pytest.mark.slow
def test_every_loop_gives_xprof_all_steps_of_the_window(harness_runs, mode, tool):
    """Item 14: the tape loop's capture had no step (a compiled loop hides the step
    markers from xprof) and the others showed 4 of these 6 (xprof drops the first and
    last step of a capture of more than 5 steps)."""
    result, lines, _ = harness_runs[mode]
    captures = profile_xprof.find_captures(result.run_dir)
    assert len(captures) == 1
    assert _xprof_steps(captures[0], tool) == [f"train {step}" for step in range(6, 12)]
    printed = [line for line in lines if line.startswith("ProfilerCallback: profiled steps 6-11")]
    assert len(printed) == 1 and "CPU_ONLY): 6 steps, avg" in printed[0]


@pytest.mark.slow
def test_tape_runs_only_the_window_one_step_per_call(harness_runs):
    """Item 15: profiling no longer runs every tape step in its own call. Executions keep
    their automatic size (100 here, cut at epoch ends) and stop short of the window; its
    steps, and the validation batches evaluated while it is open, go one per call. The
    first step of a run that profiles runs alone too (the one-step call's first run)."""
    assert Config(mode="tape", profile_steps=(WINDOW,)).execution_steps == 100
    _, _, executions = harness_runs["tape"]
    assert executions.train == [(1, 1), (2, 5), *((step, step) for step in range(6, 12)), (12, 16)]
    assert executions.test == [[(0, 0), (1, 1)], [(0, 1)]]


# --- The command line: warnings at the start, nothing stray on stderr -------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`python -m harness.run`: a tape run of 8 steps profiling '2,3;20,30', with
    --profiler_port on a port in use. Returns (port, CompletedProcess)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # run.py's own
    logdir = tmp_path_factory.mktemp("cli")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.run",
                "--mode=tape",
                "--num_examples=250",
                "--max_len=60",
                "--num_words=1000",
                "--batch_size=32",
                "--epochs=1",
                "--verbose=0",
                f"--logdir={logdir}",
                "--profile_steps=2,3;20,30",
                f"--profiler_port={port}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    return port, result


@pytest.mark.slow
def test_profiler_port_in_use_is_one_warning_not_a_server_line(cli_run):
    """Item 16: a port in use printed 'profiler server on port N' (TF only logs that the
    bind failed); profiling is best-effort, so it is one warning and training goes on."""
    port, result = cli_run
    about_port = [line for line in result.stdout.splitlines() if str(port) in line]
    assert about_port == [
        f"WARNING: profiler server not started: port {port} is in use "
        "(Address already in use); training continues without it."
    ]
    assert "profiler server on port" not in result.stdout


@pytest.mark.slow
def test_window_beyond_the_last_step_is_one_warning_at_the_start(cli_run):
    """Item 16: a window after the run's last step was silently never captured."""
    _, result = cli_run
    lines = result.stdout.splitlines()
    warned = [i for i, line in enumerate(lines) if "20-30" in line]
    assert [lines[i] for i in warned] == [
        "WARNING: ProfilerCallback: profile window 20-30 ends after the run's last step 8; "
        "it is never captured."
    ]
    captured = next(
        i for i, line in enumerate(lines) if line.startswith("ProfilerCallback: profiled steps 2-3")
    )
    assert warned[0] < captured


@pytest.mark.slow
def test_capture_prints_no_xprof_error_on_stderr(cli_run):
    """Item 16: converting a capture printed xprof's 'E... No UnifiedProfileProcessor
    registered for tool: kernel_stats' (its C++ log, before a fallback that works)."""
    _, result = cli_run
    assert "ProfilerCallback: profiled steps 2-3" in result.stdout
    assert "UnifiedProfileProcessor" not in result.stderr


# --- GPU tables and the report script ------------------------------------------------------


@pytest.fixture
def gpu_capture(tmp_path) -> Path:
    """A temporary copy of the shared 8xV100 capture (never read in place)."""
    if not GPU_CAPTURE.is_file():
        pytest.skip(f"shared GPU capture not found: {GPU_CAPTURE} (set HARNESS_SHARED_DATA)")
    copy = tmp_path / "gpu" / GPU_CAPTURE.name
    copy.parent.mkdir()
    shutil.copyfile(GPU_CAPTURE, copy)
    return copy


def test_gpu_kernel_table_matches_the_capture_readme(gpu_capture):
    tables = profile_xprof.build_tables([gpu_capture])
    kernels = tables.kernels
    assert len(kernels) == 15
    assert sum(k.total_us for k in kernels) == pytest.approx(29690.7, abs=0.1)
    top = [(k.count, round(k.total_us, 1)) for k in kernels[:5]]
    assert top == [(194, 7908.3), (292, 6371.3), (194, 5476.3), (194, 5211.1), (102, 2397.2)]
    assert "FillPhiloxRandomKernelLaunch" in kernels[0].kernel_name
    assert "TensorConversionOp<Eigen::half" in kernels[1].kernel_name
    assert (kernels[0].grid, kernels[0].block) == ("160,1,1", "1024,1,1")
    assert not any(k.uses_tensor_cores for k in kernels) and all(k.op_name == "" for k in kernels)
    assert tables.hardware_type == "GPU" and tables.step_count == 1
    assert tables.avg_step_ms == pytest.approx(21.3, abs=0.05)
    assert tables.steps[0].compute_ms == pytest.approx(14.9, abs=0.05)
    assert sorted(p.name for p in gpu_capture.parent.iterdir()) == [gpu_capture.name]


def test_report_prints_the_gpu_tables(gpu_capture):
    result = _report(str(gpu_capture))
    assert result.returncode == 0, result.stderr
    kernel_section = result.stdout.split("GPU kernels (kernel_stats):\n", 1)[1].splitlines()
    header, rows = kernel_section[0], kernel_section[1:]
    assert header.split()[:4] == ["kernel", "count", "total", "us"]
    assert len(rows) == 15
    assert rows[0].split()[0].startswith("FillPhiloxRandomKernelLaunch<")
    assert rows[0].split()[-8:-5] == ["194", "7908.3", "40.8"]
    assert "1 step, avg 21.310 ms" in result.stdout
    assert sorted(p.name for p in gpu_capture.parent.iterdir()) == [gpu_capture.name]


def test_report_on_a_cpu_run_dir(fit_run):
    run_dir, _, _ = fit_run
    result = _report(str(run_dir), "--top", "5")
    assert result.returncode == 0, result.stderr
    assert "3 steps" in result.stdout and "Top 5 ops by self time" in result.stdout
    assert "no GPU kernels traced (CPU-only capture)" in result.stdout


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing", lambda tmp: tmp, lambda _: ""])
def test_report_missing_or_empty_path_is_one_error_line(tmp_path, make_path):
    result = _report(str(make_path(tmp_path)))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("profile_report: error: ")
