"""`train(config)`: build everything a run needs, pick the loop, run it.

The one place that wires the pieces together: data, model, optimizer, the run
directory, the callbacks (written once, identical in every loop) and the loop.
Everything that can be wrong with the flags is found before the run directory
is touched.
"""

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from harness import (
    catalog,
    data,
    devices,
    distribute,
    export,
    hparams,
    loops,
    models,
    pipeline,
    report,
    rundir,
    sources,
    task,
    tracing,
)
from harness.callbacks import files, lr_schedule, run_info
from harness.callbacks.best_model import BestModel
from harness.callbacks.checkpoint import (
    Checkpointing,
    checkpoint_prefixes,
    make_manager,
    restore_latest,
)
from harness.callbacks.diagnostics import LayerHealth
from harness.callbacks.early_stopping import EarlyStopping, patience_state
from harness.callbacks.embeddings import EmbeddingProjector
from harness.callbacks.epoch_state import EpochMetricsState
from harness.callbacks.eval_figures import EvalFigures
from harness.callbacks.events import purge_after
from harness.callbacks.guards import Interrupted, NonFinite, NonFiniteLossGuard, StopOnSignal
from harness.callbacks.history_file import HistoryFile
from harness.callbacks.lr_halving import LearningRateHalving
from harness.callbacks.profiler import ProfilerCallback, start_profiler_server
from harness.callbacks.summary import TensorBoardSummaries
from harness.config import Config
from harness.errors import HarnessError, RunInterrupted, UsageError


@dataclasses.dataclass
class Result:
    """What a finished run leaves behind."""

    run_dir: str
    history: dict
    trace_counts: dict  # traces of the train and test steps: see tracing.py


def train(
    config: Config,
    print_fn: Callable[[str], None] = print,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    *,
    run_dir: str | None = None,
    model: keras.Model | Callable | None = None,
    data: tuple | None = None,
) -> Result:
    """Trains the model `config` describes and returns where it went and how it did.

    Args:
        config: the run's options.
        print_fn: where console lines go.
        callbacks: more Keras callbacks, driven like the harness's own in every loop.
        run_dir: what `rundir.plan(config)` returned, where the caller checked the
            run directory already (the entrypoint does, before TensorFlow loads);
            None: it is checked here.
        model: a `keras.Model`, or a builder `(input_spec, task) -> keras.Model`,
            trained instead of `config.model`; one compiled already keeps its loss
            and metrics. Recorded as model "given:<its name>".
        data: `((x_train, y_train), (x_val, y_val))` arrays, a dict of them as an
            .npz holds, or a pair of `tf.data.Dataset`s of unbatched (x, y)
            examples, trained on instead of `config.dataset` (recorded as
            "given:data"). A resumed run must be given the same model and data.

    Raises:
        UsageError: a bad value or combination; nothing has been written then.
        RunInterrupted: SIGTERM or Ctrl-C; the current step was checkpointed.
        HarnessError: the loss became NaN or Inf; no checkpoint or best model
            was written from that step on.
    """
    config = _with_given(config, model, data)
    if not config.validated:  # the entrypoint's configs are validated before TF loads
        config.validate()
    threads_line = devices.configure_threads(config.intra_op_threads, config.inter_op_threads)
    keras.backend.clear_session()  # fresh layer names: the same tags in every run
    device_line = devices.configure(
        config.gpus, config.gpu_memory_growth, config.gpu_memory_limit_mb
    )
    strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
    chief = distribute.is_chief(strategy)
    if chief:
        run_dir = run_dir or rundir.plan(config)
    else:
        run_dir = tempfile.mkdtemp(prefix="harness-worker-")
        print_fn(
            f"{distribute.describe(strategy)}: this worker trains and writes nothing; "
            "the chief (worker 0) writes the run"
        )
    # The epoch's metric state is a plain host variable: a variable of unknown shape
    # created under MultiWorkerMirroredStrategy crashes its broadcast.
    metrics_state = EpochMetricsState()
    try:
        with strategy.scope():
            result = _train(
                config,
                run_dir,
                print_fn if chief else _quiet,
                [device_line, threads_line, distribute.describe(strategy)],
                list(callbacks),
                metrics_state,
                (model, data),
            )
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _train(
    config: Config,
    run_dir: str,
    print_fn: Callable[[str], None],
    startup_lines: list,
    user_callbacks: list,
    metrics_state: EpochMetricsState,
    given: tuple,
) -> Result:
    """Everything of `train` that runs inside the strategy's scope; `given`: the
    (model, data) objects passed to `train`."""
    given_model, given_data = given
    keras.utils.set_random_seed(config.seed)
    splits, run_task = data_and_task(config, run_dir if config.resume else None, given_data)
    model, log_keys = compiled_model(config, run_task, splits, given_model)
    steps_per_epoch = pipeline.steps_for(
        splits.train_size, config.batch_size, config.steps_per_epoch
    )
    loops.get(config.mode).check_epoch(steps_per_epoch, config.execution_steps)

    stop_guard = StopOnSignal(
        steps_per_epoch=steps_per_epoch, end_step=config.epochs * steps_per_epoch
    )
    stop_guard.catch()  # from the moment the run directory exists
    claim = None  # this process's hold on the run directory, for the run's life
    try:
        claim = rundir.create(config, run_dir)
        sources.save_vocabulary(splits, run_dir)
        manager = make_manager(
            model,
            os.path.join(run_dir, rundir.CHECKPOINT_DIR),
            config.keep_checkpoints,
            warn=print_fn,
            extra={
                "epoch_metrics": metrics_state.saved,
                **lr_schedule.checkpointed(model.optimizer),
            },
        )
        checkpointing = Checkpointing(
            manager,
            config.checkpoint_every_steps,
            steps_per_epoch,
            before_save=metrics_state.capture,
        )
        stop_guard.on_stop = checkpointing.save
        return _train_in(
            config,
            run_dir,
            model,
            splits,
            (run_task, log_keys),
            steps_per_epoch,
            checkpointing,
            metrics_state,
            stop_guard,
            print_fn,
            startup_lines,
            user_callbacks,
        )
    finally:
        stop_guard.restore_handlers()
        if claim:
            claim.release()


def _train_in(
    config: Config,
    run_dir: str,
    model: keras.Model,
    splits: data.RunData,
    task_and_keys: tuple,
    steps_per_epoch: int,
    checkpointing: Checkpointing,
    metrics_state: EpochMetricsState,
    stop_guard: StopOnSignal,
    print_fn: Callable[[str], None],
    startup_lines: list,
    user_callbacks: list,
) -> Result:
    """The part of `_train` that runs in the run directory, with stop signals caught;
    `task_and_keys`: the task and the keys the model logs."""
    run_task, log_keys = task_and_keys
    global_step = 0
    if config.resume:
        global_step = _restore(
            model,
            rundir.path(config),
            config.keep_checkpoints,
            checkpointing.manager.checkpoint,
            print_fn,
        )
    schedule = loops.Schedule.at_step(
        global_step, config.epochs, steps_per_epoch, config.execution_steps
    )
    if schedule.initial_step_in_epoch and not tf.distribute.has_strategy():
        # The epoch's train metrics go on from the checkpoint's running state (Keras's
        # metric variables under a strategy take no assignment between replicas'
        # steps: there the resumed epoch averages the steps after the resume).
        loops.build_metrics(model, splits.probe(config.batch_size))
        metrics_state.resume_at(schedule.initial_epoch)
    _check_not_stopped_early(config, run_dir, schedule.initial_epoch)
    if schedule.initial_epoch >= config.epochs:
        if config.export:  # a finished run exported (again): nothing is trained or rewritten
            history = rundir.read_json(os.path.join(run_dir, rundir.HISTORY_FILE))
            _export(run_dir, model, splits, print_fn)
            return Result(run_dir=run_dir, history=history, trace_counts={})
        raise UsageError(
            f"--resume: the run already finished {schedule.initial_epoch} "
            "epochs; pass a larger --epochs to train further, or --export "
            "to export it"
        )
    if config.resume:
        rundir.save_flags(config, run_dir)  # e.g. the larger --epochs it now trains to
        dropped, damaged = purge_after(run_dir, global_step, schedule.initial_epoch)
        if dropped:
            print_fn(
                f"harness: dropped summaries written after step {global_step} "
                "(they are written again now)"
            )
        if damaged:
            print_fn(
                f"harness: warning: skipped {damaged} damaged stretch(es) of event "
                "records; the summaries in them are lost, the rest are kept"
            )
    validation = splits.validation(config.batch_size)
    if config.validation_steps:
        validation = validation.take(config.validation_steps)
    stream = splits.stream(config.batch_size, config.seed)
    callback_list = keras.callbacks.CallbackList(
        [
            metrics_state,
            *_callbacks(
                config,
                run_dir,
                splits,
                schedule,
                print_fn,
                validation=validation,
                run_task=run_task,
                log_keys=log_keys,
            ),
            *user_callbacks,
            checkpointing,
            stop_guard,
        ],
        add_history=True,
        add_progbar=config.verbose > 0,
        verbose=config.verbose,
        epochs=config.epochs,
        steps=steps_per_epoch,
        model=model,
    )
    if not global_step:
        checkpointing.save()  # step 0: a run stopped before its first step resumes too

    for line in filter(None, startup_lines):
        print_fn(line)
    print_fn(report.startup(config, run_dir, splits, run_task, steps_per_epoch, schedule))
    traces = tracing.count_traces(model)
    try:
        loops.run(
            config.mode,
            model,
            stream,
            validation,
            callback_list,
            schedule,
            jit_compile=config.jit_compile,
            metrics_state=metrics_state,
        )
    except (Interrupted, NonFinite, files.WriteFailed) as stop:
        callback_list.on_train_end()  # flushes the summaries, puts signal handlers back
        raise _stopped(stop, run_dir, checkpointing.manager) from None
    history = rundir.read_json(os.path.join(run_dir, rundir.HISTORY_FILE))
    print_fn(report.summary(history, run_dir, config.logdir))
    if config.export:
        _export(run_dir, model, splits, print_fn)
    return Result(run_dir=run_dir, history=history, trace_counts=dict(traces))


def _check_not_stopped_early(config: Config, run_dir: str, initial_epoch: int) -> None:
    """Refuses to resume a run that early stopping ended (it would stop again at once)."""
    if not config.early_stopping_patience or config.export:
        return
    values = _earlier_values(config, run_dir, initial_epoch)
    _, wait = patience_state(
        values, report.higher_is_better(config.monitor), config.early_stopping_min_delta
    )
    if wait >= config.early_stopping_patience:
        raise UsageError(
            f"--resume: the run stopped early after epoch {initial_epoch} ({config.monitor} "
            f"did not improve for {wait} epochs); pass a larger --early_stopping_patience "
            "(or 0) to train it further"
        )


def _export(
    run_dir: str, model: keras.Model, splits: data.RunData, print_fn: Callable[[str], None]
) -> None:
    """Exports the model in memory with the best weights (see export.saved_model)."""
    sample_input = splits.probe(1)[0]
    print_fn(export.how_to_load(export.saved_model(run_dir, model, sample_input), sample_input))


def _quiet(line: str) -> None:
    """Output of a worker that is not the chief: nothing."""


def _stopped(stop: Exception, run_dir: str, manager: tf.train.CheckpointManager) -> HarnessError:
    """The error that tells the user why training stopped and what is on disk."""
    run_name = os.path.basename(run_dir)
    if isinstance(stop, Interrupted):
        return RunInterrupted(
            f"{stop}; checkpoint saved in {run_dir}",
            exit_code=128 + stop.signal_number,
            run_name=run_name,
        )
    if isinstance(stop, files.WriteFailed):
        step = int(manager.checkpoint.optimizer.iterations.numpy())
        if not os.path.isdir(run_dir):
            return HarnessError(
                f"{stop} at global step {step}: the run directory {run_dir} "
                "was deleted during training; start the run again"
            )
        intact = manager.latest_checkpoint
        kept = (
            f"checkpoint {intact} is intact"
            if intact
            else "no checkpoint was written, the run starts again from step 0"
        )
        return RunInterrupted(
            f"{stop} at global step {step}; {kept}; free space or make {run_dir} writable",
            exit_code=1,
            run_name=run_name,
            failed=True,
        )
    return HarnessError(
        f"{stop}: training stopped. The checkpoints and best model from before it are "
        f"untouched ({run_dir}); lower --learning_rate or set --clip_norm, then start "
        "again or --resume from the last good checkpoint"
    )


def _with_given(config: Config, model, given_data) -> Config:
    """`config` naming the model and data given to `train`, as "given:<name>"."""
    changes = {}
    if model is not None:
        name = model.name if isinstance(model, keras.Model) else getattr(model, "__name__", "")
        changes["model"] = catalog.GIVEN_PREFIX + (
            re.sub(r"\W", "_", name).lstrip("0123456789_") or "model"
        )
    if given_data is not None:
        changes["dataset"] = catalog.GIVEN_PREFIX + "data"
    return dataclasses.replace(config, **changes) if changes else config


def data_and_task(config: Config, saved_run_dir: str | None, given_data) -> tuple:
    """(RunData, Task): a built-in model's own (multi_io's tickets), or the data given to
    `train` or named by --dataset with the task its labels call for; `saved_run_dir`: a
    run that exists already (resumed, reopened), whose text vocabulary is kept."""
    own_run = models.OWN_RUNS.get(config.model)
    if own_run:
        return own_run(config)
    if given_data is not None:
        splits = sources.from_value(config, given_data, "data=")
    else:
        splits = sources.load(config, saved_run_dir)
    return splits, task.SingleOutput(splits.num_classes, splits.targets)


def compiled_model(
    config: Config, run_task: task.Task, splits: data.RunData, given_model
) -> tuple[keras.Model, list]:
    """Builds and compiles the model (a user's compiled model keeps its loss and
    metrics, with the harness's optimizer); returns it and the keys it logs ('loss',
    'accuracy', ...). Rejects a --monitor it does not log."""
    try:
        compile_args, log_keys = run_task.compile_args(config.metrics)
    except ValueError as error:
        raise UsageError(str(error)) from None
    keras.mixed_precision.set_global_policy(task.precision_policy(config.mixed_precision))
    model = models.build(
        config.model,
        splits.input_spec(),
        run_task,
        config.num_words,
        splits.features(),
        given=given_model,
    )
    users = models.compiled_args(model)
    if users is not None and config.metrics:
        raise UsageError(
            f"--metrics={','.join(config.metrics)} does not apply: the model is compiled "
            "with metrics of its own; drop --metrics, or compile it without them"
        )
    model.compile(
        optimizer=task.optimizer(
            config.optimizer, _learning_rate(config, splits), config.clip_norm
        ),
        **(users if users is not None else compile_args),
        jit_compile=config.jit_compile,
        steps_per_execution=config.execution_steps,
    )
    if users is not None:
        log_keys = loops.metric_names(model, splits.probe(2))
    monitorable = [*log_keys, *(f"val_{name}" for name in log_keys)]
    if config.monitor not in monitorable:
        raise UsageError(
            f"--monitor={config.monitor!r} is not a metric of this run: use one "
            f"of {', '.join(monitorable)}"
        )
    if config.lr_halve_epochs:
        try:
            LearningRateHalving.check(model.optimizer)
        except ValueError as error:
            raise UsageError(str(error)) from None
    return model, log_keys


def _learning_rate(
    config: Config, splits: data.RunData
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's rate: a plain one, or a schedule over the run's steps (see
    `lr_schedule`)."""
    steps_per_epoch = pipeline.steps_for(
        splits.train_size, config.batch_size, config.steps_per_epoch
    )
    return lr_schedule.learning_rate(
        config.lr_schedule,
        config.learning_rate,
        config.warmup_steps,
        config.epochs * steps_per_epoch,
    )


def _callbacks(
    config: Config,
    run_dir: str,
    splits: data.RunData,
    schedule: loops.Schedule,
    print_fn: Callable[[str], None],
    *,
    validation: tf.data.Dataset,
    run_task: task.Task,
    log_keys: list,
) -> list:
    """The run's callbacks that observe and record it, in the order they must see
    each batch: the NaN guard first, so that nothing is written for a step with a
    NaN loss. `validation`: the validation batches (the evaluation figures predict
    them); `run_task`: the run's task (its outputs' kinds, for the figures);
    `log_keys`: what the model logs (the metrics HParams compares).
    The caller appends the user's callbacks, then the checkpointing (the epoch's
    commit: after everything that records the epoch), then the signal guard (last,
    so that every other callback has seen the step it stops after)."""
    callbacks = [NonFiniteLossGuard()]
    best_path = os.path.join(run_dir, rundir.BEST_MODEL_FILE)
    if config.lr_schedule == "halve" and config.lr_halve_epochs:
        callbacks.append(
            LearningRateHalving(config.lr_halve_epochs, config.lr_halve_factor, print_fn)
        )
    if config.profile_steps:
        callbacks.append(ProfilerCallback(run_dir, config.profile_steps, print_fn=print_fn))
    if config.profiler_port:  # a port in use is a warning line: profiling is best-effort
        start_profiler_server(config.profiler_port, print_fn=print_fn)
    if config.embeddings_freq:  # the Projector's checkpoint, config and words
        callbacks.append(EmbeddingProjector(run_dir, config.embeddings_freq, splits.words))
    probe = splits.probe(config.batch_size)
    summaries = TensorBoardSummaries(
        run_dir,
        probe_batch=probe,
        batch_size=config.batch_size,
        every_steps=config.summary_every_steps,
        histogram_freq=config.histogram_freq,
        **_compared(config, run_task, log_keys),
        flags=dataclasses.asdict(config),
    )
    if config.diagnostics_freq:  # before the summaries: their epoch end flushes the writer
        callbacks.append(
            LayerHealth(
                summaries.writer,
                config.diagnostics_freq,
                probe,
                print_fn=print_fn,
            )
        )
    if config.eval_figures_freq:  # before the summaries too (the flush)
        callbacks.append(
            EvalFigures(
                summaries.writer,
                config.eval_figures_freq,
                validation,
                outputs=run_task.outputs(),
                class_names=splits.class_names,
                words=splits.words,
                print_fn=print_fn,
            )
        )
    callbacks += [
        summaries,
        BestModel(
            best_path,
            config.monitor,
            report.higher_is_better(config.monitor),
            _best_so_far(config, run_dir, schedule.initial_epoch),
        ),
        HistoryFile(os.path.join(run_dir, rundir.HISTORY_FILE), schedule.initial_epoch),
    ]
    if config.lr_schedule == "plateau":  # after the summaries: they log the epoch's rate
        callbacks.append(
            lr_schedule.LearningRateOnPlateau(
                config.monitor,
                report.higher_is_better(config.monitor),
                config.lr_plateau_patience,
                config.lr_halve_factor,
                earlier=_earlier_values(config, run_dir, schedule.initial_epoch),
                print_fn=print_fn,
            )
        )
    if config.early_stopping_patience:  # after the best model: it may restore that
        callbacks.append(
            EarlyStopping(
                config.monitor,
                report.higher_is_better(config.monitor),
                config.early_stopping_patience,
                config.early_stopping_min_delta,
                earlier=_earlier_values(config, run_dir, schedule.initial_epoch),
                best_path=best_path if config.early_stopping_restore_best else None,
                print_fn=print_fn,
            )
        )
    return callbacks


def _restore(
    model: keras.Model,
    run_dir: str,
    keep: int,
    checkpoint: tf.train.Checkpoint,
    print_fn: Callable[[str], None],
) -> int:
    """Restores the newest readable checkpoint of `run_dir` (the chief's run
    directory, which other workers read but never write) into `checkpoint`'s
    objects; returns its global step, 0 when the run never saved one
    (`rundir.plan` allows that only for a run that recorded no epoch)."""
    extra = {
        name: getattr(checkpoint, name)
        for name in ("epoch_metrics", "lr_scale")
        if hasattr(checkpoint, name)
    }
    manager = make_manager(
        model, os.path.join(run_dir, rundir.CHECKPOINT_DIR), keep, warn=print_fn, extra=extra
    )
    if not checkpoint_prefixes(manager):
        print_fn("harness: the run has no checkpoint yet: it starts again from step 0")
        return 0
    path = restore_latest(manager, warn=print_fn)
    if path is None:
        raise UsageError(
            f"--resume: no usable checkpoint in {manager.directory}; "
            "start a new run (another --run_name) without --resume"
        )
    step = int(model.optimizer.iterations.numpy())
    print_fn(f"harness: resumed from {path} at global step {step}")
    return step


def _earlier_values(config: Config, run_dir: str, initial_epoch: int) -> list:
    """The --monitor values of the epochs before a resume, from history.json."""
    path = os.path.join(run_dir, rundir.HISTORY_FILE)
    if not initial_epoch or not os.path.exists(path):
        return []
    return rundir.read_json(path).get(config.monitor, [])[:initial_epoch]


def _best_so_far(config: Config, run_dir: str, initial_epoch: int) -> float | None:
    """The best --monitor value of the epochs before a resume."""
    values = _earlier_values(config, run_dir, initial_epoch)
    if not values:
        return None
    return max(values) if report.higher_is_better(config.monitor) else min(values)


def _compared(config: Config, run_task: task.Task, log_keys: list) -> dict:
    """What TensorBoard's HParams tab compares: the run's hyperparameters, the values
    of those with a fixed set, and the metrics (validation loss first)."""
    return {
        "hparams": hparams.values(config, run_task.describe()),
        "domains": hparams.domains(),
        "metrics": run_info.metric_order(log_keys),
    }
