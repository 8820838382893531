"""Train a Keras model three ways and see everything in TensorBoard.

usage: python -m harness.run --mode=fit|train_on_batch|tape [--flag=value ...]

Trains one model with Keras's fit, a train_on_batch loop or a GradientTape loop:
the same data, callbacks and TensorBoard summaries in each. A run writes
<logdir>/<run_name>/: event files, checkpoints, the best model, its flags and
its history. Examples:

  python -m harness.run --mode=tape --epochs=5 --run_name=first
  python -m harness.run --mode=tape --epochs=8 --run_name=first --resume
  python -m tensorboard.main --logdir logs --host 127.0.0.1

Ctrl-C stops a run with a checkpoint and prints the command that resumes it.
--helpfull lists every flag; a bad value is one line and exit status 2.
"""

# The entrypoint (absl prints the docstring above for --help): absl flags -> a
# validated, frozen `Config` -> `train(config)`. This is the only module that
# reads FLAGS. A `HarnessError` becomes one line on stderr and its exit status
# (2 for usage errors), never a traceback.

import contextlib
import dataclasses
import datetime
import os
import shlex
import sys

from absl import app, flags, logging

from harness import config as config_lib
from harness import rundir
from harness.errors import HarnessError, RunInterrupted, UsageError

_D = config_lib.Config()
# Flags whose text is parsed into a tuple by `_config()`.
_LIST_FLAGS = ("lr_halve_epochs",)

flags.DEFINE_string("mode", _D.mode, "Training loop: " + " | ".join(config_lib.MODES))
flags.DEFINE_string("model", _D.model, "Model: " + " | ".join(config_lib.BUILTIN_MODELS)
                    + " | package.module:function (a builder (input_shape, num_classes))")
flags.DEFINE_string("dataset", _D.dataset, "Dataset: " + " | ".join(config_lib.DATASETS))
flags.DEFINE_string("data_dir", _D.data_dir,
                    "Folder holding reuters.npz / imdb.npz (offline use; the hash is checked)")
flags.DEFINE_integer("num_words", _D.num_words, "Vocabulary size (most frequent words)")
flags.DEFINE_integer("max_len", _D.max_len, "Sequence length after padding/truncation")
flags.DEFINE_integer("num_classes", _D.num_classes,
                     "Synthetic data only: classes (default 46; 2 = binary task)")
flags.DEFINE_integer("num_examples", _D.num_examples,
                     "Training examples: synthetic data generates this many (default 8982, "
                     "+20% for validation); reuters/imdb keep the first N of the shuffled "
                     "training split (default all)")
flags.DEFINE_integer("epochs", _D.epochs, "Epochs to train (in total, when resuming)")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size")
flags.DEFINE_integer("steps_per_epoch", _D.steps_per_epoch,
                     "Train steps per epoch (default: one pass over the training set)")
flags.DEFINE_integer("validation_steps", _D.validation_steps,
                     "Validation batches per epoch (default: the whole validation set)")
flags.DEFINE_string("optimizer", _D.optimizer, "Optimizer: " + " | ".join(config_lib.OPTIMIZERS))
flags.DEFINE_float("learning_rate", _D.learning_rate, "Initial learning rate")
flags.DEFINE_float("clip_norm", _D.clip_norm, "Clip each gradient to this norm (off if unset)")
flags.DEFINE_integer("seed", _D.seed, "Seed for weights, synthetic data and data order")
flags.DEFINE_string("logdir", _D.logdir, "Folder holding the run directories")
flags.DEFINE_string("run_name", _D.run_name, "Run directory name (default <model>-<mode>-<time>)")
flags.DEFINE_bool("overwrite", _D.overwrite, "Replace an existing run directory")
flags.DEFINE_bool("resume", _D.resume, "Continue the run --run_name from its last checkpoint")
flags.DEFINE_integer("verbose", _D.verbose, "0 = quiet, 1 = progress bar, 2 = one line per epoch")
flags.DEFINE_integer("summary_every_steps", _D.summary_every_steps,
                     "Write batch_loss and the learning rate every N steps (0 = off)")
flags.DEFINE_integer("histogram_freq", _D.histogram_freq,
                     "Weight and gradient histograms every N epochs (0 = off)")
flags.DEFINE_string("lr_halve_epochs", ",".join(map(str, _D.lr_halve_epochs)),
                    "1-based epochs at whose start the learning rate is multiplied by "
                    "--lr_halve_factor, e.g. 5,8 (empty = never)")
flags.DEFINE_float("lr_halve_factor", _D.lr_halve_factor, "Multiplier at each halving epoch")
flags.DEFINE_integer("checkpoint_every_steps", _D.checkpoint_every_steps,
                     "Also checkpoint every N steps (0 = only at epoch ends)")
flags.DEFINE_integer("keep_checkpoints", _D.keep_checkpoints, "Checkpoints to keep")
flags.DEFINE_string("profile_steps", "",
                    "Global steps to profile, START,STOP inclusive; several windows with ';' "
                    "(e.g. 10,15;200,205). Empty = no profiling")
flags.DEFINE_integer("profiler_port", _D.profiler_port,
                     "Start the profiler server on this port for TensorBoard's 'Capture "
                     "profile' (0 = off). It listens on all interfaces, not only loopback")
flags.DEFINE_integer("steps_per_execution", _D.steps_per_execution,
                     "Train steps per compiled call (fit and tape; callbacks see each call). "
                     "0 = auto: 1 for fit, up to 100 for tape (between step summaries and "
                     "checkpoints)")
flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile the train step with XLA")
flags.DEFINE_bool("mixed_precision", _D.mixed_precision,
                  "Mixed precision: bfloat16 on a CPU, float16 with loss scaling on a GPU")
flags.DEFINE_string("metrics", "",
                    "Comma-separated metrics (default per task: accuracy,top5_accuracy or "
                    "accuracy,auc); choices: accuracy, top5_accuracy, top3_accuracy, "
                    "crossentropy, auc, precision, recall")
flags.DEFINE_string("loss_weights", "",
                    "--model=multi_io: weight of each output's loss, e.g. "
                    "priority=1.0,department=0.2 (the default)")
flags.DEFINE_string("gpus", "", "GPU indices to use, e.g. 0 or 0,1 (default: all)")
flags.DEFINE_bool("gpu_memory_growth", _D.gpu_memory_growth,
                  "Allocate GPU memory as needed instead of all at once")
flags.DEFINE_integer("gpu_memory_limit_mb", _D.gpu_memory_limit_mb,
                     "Cap each GPU's memory in MB (0 = no cap)")
flags.DEFINE_bool("export", _D.export,
                  "Export the best (or final) model as a SavedModel under the run directory")
flags.DEFINE_string("strategy", _D.strategy,
                    "tf.distribute strategy: " + " | ".join(config_lib.STRATEGIES)
                    + " (multi_worker reads the cluster from TF_CONFIG)")
flags.DEFINE_integer("cpu_replicas", _D.cpu_replicas,
                     "With --strategy=mirrored and no GPU: split the CPU into N logical "
                     "devices (to try data parallelism on a CPU-only machine)")
flags.DEFINE_integer("intra_op_threads", _D.intra_op_threads,
                     "Threads one op may split its work over (0 = TensorFlow's choice: "
                     "the number of cores)")
flags.DEFINE_integer("inter_op_threads", _D.inter_op_threads,
                     "Ops that may run at once (0 = TensorFlow's choice: the number of cores)")
flags.DEFINE_string("monitor", _D.monitor, "Metric that picks the best model (best.keras)")

FLAGS = flags.FLAGS


def _config() -> config_lib.Config:
    values = {field.name: FLAGS[field.name].value
              for field in config_lib.dataclasses.fields(config_lib.Config)
              if field.name in FLAGS}
    for name in _LIST_FLAGS:
        values[name] = config_lib.parse_int_list(name, values[name])
    values["profile_steps"] = config_lib.parse_windows(values["profile_steps"])
    values["metrics"] = config_lib.parse_name_list(values["metrics"])
    values["loss_weights"] = config_lib.parse_loss_weights(values["loss_weights"])
    values["gpus"] = config_lib.parse_int_list("gpus", values["gpus"]) or None
    return config_lib.Config(**values).validate()


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: "
                         "all options are --flags (see --helpfull)")
    config = _config()
    if not config.run_name:
        config = dataclasses.replace(
            config, run_name=rundir.default_run_name(config, datetime.datetime.now()))
    rundir.plan(config)  # the run directory's checks too, before TensorFlow loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TF's C++ info/warnings
    logging.set_verbosity(logging.WARNING)
    with _stderr_silenced():  # TF's C++ start-up lines, printed before its logging is set
        from harness.train import train
    train(config)
    return 0


@contextlib.contextmanager
def _stderr_silenced():
    """Sends file descriptor 2 to /dev/null for the block (C++ writes included)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _parse_flags(argv: list) -> list:
    """absl's parser, with a bad flag as one line and exit status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"harness: error: {error} (see --helpfull)", file=sys.stderr)
        sys.exit(2)
    except SystemExit:  # absl's --help / --helpfull printed the help asked for
        sys.exit(0)


def resume_command(argv: list, run_name: str) -> str:
    """The command that continues run `run_name`: `argv` with --resume and its name."""
    kept = [arg for arg in argv[1:] if not arg.startswith(("--run_name", "--resume",
                                                            "--noresume", "--overwrite"))]
    return shlex.join([sys.executable, "-m", "harness.run", *kept, f"--run_name={run_name}",
                       "--resume"])


def _main_or_exit(argv) -> None:
    try:
        sys.exit(main(argv))
    except RunInterrupted as stop:
        if FLAGS.verbose == 1:  # end the progress bar's line: Keras redraws it with '\r'
            print(flush=True)
        command = resume_command(sys.argv, stop.run_name)
        if stop.failed:
            print(f"harness: error: {stop}; then resume with: {command}", file=sys.stderr)
        else:
            print(f"harness: {stop}\nharness: resume with: {command}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except HarnessError as error:
        print(getattr(error, "user_traceback", ""), end="", file=sys.stderr)  # UserCodeError
        print(f"harness: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(_main_or_exit, flags_parser=_parse_flags)
