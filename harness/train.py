"""`train(config)`: build everything a run needs, pick the loop, run it.

The one place that wires the pieces together: data, model, optimizer, the run
directory, the callbacks (written once, identical in every loop) and the loop.
"""

import dataclasses
import os
from typing import Callable

import keras

from callbacks.checkpoint import Checkpointing, make_manager, restore_latest
from callbacks.history_file import HistoryFile
from callbacks.lr_halving import LearningRateHalving
from callbacks.profiler import ProfilerCallback, start_profiler_server
from callbacks.summary import TensorBoardSummaries
from harness import data, loops, models, report, rundir, task, tracing
from harness.config import Config
from harness.errors import UsageError


# Flags compared across runs in TensorBoard's HParams tab.
HPARAMS = ("mode", "model", "dataset", "optimizer", "learning_rate", "batch_size", "seed",
           "epochs", "num_words", "max_len")


@dataclasses.dataclass
class Result:
    """What a finished run leaves behind."""

    run_dir: str
    history: dict
    trace_counts: dict  # traces of the train/test step, by epoch: see tracing.py


def train(config: Config, print_fn: Callable[[str], None] = print) -> Result:
    """Trains the model `config` describes and returns where it went and how it did.

    Raises:
        UsageError: a bad value or combination found while preparing the run;
            nothing has been written then.
    """
    config.validate()
    run_dir = rundir.plan(config)
    keras.utils.set_random_seed(config.seed)
    splits = data.load(config.dataset, num_words=config.num_words, max_len=config.max_len,
                       seed=config.seed, num_classes=config.classes,
                       num_examples=config.num_examples, data_dir=config.data_dir)
    model = models.build(config.model, (config.max_len,), splits.num_classes,
                         config.num_words)
    model.compile(optimizer=task.optimizer(config.optimizer, config.learning_rate,
                                           config.clip_norm),
                  loss=task.loss(splits.num_classes), metrics=task.metrics(splits.num_classes))
    monitorable = ["loss"] + [m.name for m in task.metrics(splits.num_classes)]
    monitorable += [f"val_{name}" for name in monitorable]
    if config.monitor not in monitorable:
        raise UsageError(f"--monitor={config.monitor!r} is not a metric of this run: use one "
                         f"of {', '.join(monitorable)}")
    halving = None
    if config.lr_halve_epochs:
        halving = LearningRateHalving(config.learning_rate, config.lr_halve_epochs,
                                      config.lr_halve_factor, print_fn)
        _usage(halving.check, model.optimizer)
    steps_per_epoch = data.steps_for(len(splits.x_train), config.batch_size,
                                     config.steps_per_epoch)

    rundir.create(config, run_dir)
    manager = make_manager(model, os.path.join(run_dir, rundir.CHECKPOINT_DIR),
                           config.keep_checkpoints)
    global_step = _restore(config, manager, steps_per_epoch, print_fn) if config.resume else 0
    schedule = loops.Schedule(epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                              initial_epoch=global_step // steps_per_epoch,
                              initial_step_in_epoch=global_step % steps_per_epoch)
    if schedule.initial_epoch >= config.epochs:
        raise UsageError(f"--resume: the run already finished {schedule.initial_epoch} "
                         f"epochs; pass a larger --epochs to train further")
    validation = data.validation_dataset(splits.x_val, splits.y_val,
                                         batch_size=config.batch_size)
    if config.validation_steps:
        validation = validation.take(config.validation_steps)
    train_stream = data.train_stream(splits.x_train, splits.y_train,
                                     batch_size=config.batch_size, seed=config.seed,
                                     start_step=global_step)
    summaries = TensorBoardSummaries(
        run_dir, probe_batch=(splits.x_train[:config.batch_size],
                              splits.y_train[:config.batch_size]),
        batch_size=config.batch_size, every_steps=config.summary_every_steps,
        histogram_freq=config.histogram_freq, hparams=_hparams(config),
        flags=dataclasses.asdict(config))
    profiler = None
    if config.profile_steps:
        profiler = ProfilerCallback(run_dir, config.profile_steps, print_fn=print_fn)
    if config.profiler_port:
        start_profiler_server(config.profiler_port)
        print_fn(f"harness: profiler server on port {config.profiler_port} (all network "
                 "interfaces, no authentication): in TensorBoard's Profile tab, Capture "
                 f"profile from localhost:{config.profiler_port}")
    callback_list = keras.callbacks.CallbackList(
        [c for c in (halving, profiler, summaries,
                     Checkpointing(manager, config.checkpoint_every_steps, print_fn),
                     _best_model(config, run_dir, schedule.initial_epoch),
                     HistoryFile(os.path.join(run_dir, rundir.HISTORY_FILE),
                                 schedule.initial_epoch)) if c is not None],
        add_history=True, add_progbar=config.verbose > 0, verbose=config.verbose,
        epochs=config.epochs, steps=steps_per_epoch, model=model)

    print_fn(report.startup(config, run_dir, splits, steps_per_epoch, schedule))
    traces = tracing.count_traces(model)
    loops.run(config.mode, model, train_stream, validation, callback_list,
                       schedule, metrics=lambda: task.metrics(splits.num_classes))
    history = rundir.read_json(os.path.join(run_dir, rundir.HISTORY_FILE))
    print_fn(report.summary(history, run_dir, config.logdir))
    return Result(run_dir=run_dir, history=history, trace_counts=dict(traces))


def _restore(config: Config, manager, steps_per_epoch: int, print_fn) -> int:
    boundary_only = steps_per_epoch if config.mode == "fit" else None
    path = restore_latest(manager, boundary_only)
    if path is None:
        raise UsageError(f"--resume: no usable checkpoint in {manager.directory}; "
                         "start the run again without --resume")
    step = int(manager.checkpoint.optimizer.iterations.numpy())
    print_fn(f"Resumed from {path} at global step {step}")
    return step


def _best_model(config: Config, run_dir: str,
                initial_epoch: int) -> keras.callbacks.ModelCheckpoint:
    """Keeps `best.keras`, the model with the best `--monitor` so far.

    On resume the best value already reached (from history.json) is the bar,
    so a worse epoch after the resume does not replace the best model."""
    best = None
    path = os.path.join(run_dir, rundir.HISTORY_FILE)
    if initial_epoch and os.path.exists(path):
        values = rundir.read_json(path).get(config.monitor, [])[:initial_epoch]
        if values:
            best = max(values) if report.higher_is_better(config.monitor) else min(values)
    return keras.callbacks.ModelCheckpoint(
        os.path.join(run_dir, rundir.BEST_MODEL_FILE), monitor=config.monitor,
        mode="max" if report.higher_is_better(config.monitor) else "min",
        save_best_only=True, initial_value_threshold=best, verbose=0)


def _hparams(config: Config) -> dict:
    """The hyperparameters shown in TensorBoard's HParams tab."""
    return {name: getattr(config, name) for name in HPARAMS}


def _usage(check: Callable, *args) -> None:
    try:
        check(*args)
    except ValueError as error:
        raise UsageError(str(error)) from None
