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
from harness import options, rundir
from harness.errors import HarnessError, RunInterrupted, UsageError

_DEFINE = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
}
_FIELDS = dataclasses.fields(config_lib.Config)


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines one flag per Config field in `flag_values`, typed, with its default and help."""
    for field in _FIELDS:
        _DEFINE[options.flag_kind(field, config_lib.Config)](
            field.name,
            options.flag_default(field),
            options.help_text(field),
            flag_values=flag_values,
        )


define_flags(flags.FLAGS)
FLAGS = flags.FLAGS


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> config_lib.Config:
    """The validated `Config` the flags give, named now if --run_name is unset."""
    config = config_lib.Config(
        **{field.name: options.from_flag(field, flag_values[field.name].value) for field in _FIELDS}
    )
    if not config.run_name and not config.resume:  # --resume needs one: validate() says so
        config = dataclasses.replace(
            config, run_name=rundir.default_run_name(config, datetime.datetime.now())
        )
    return config.validate()


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(
            f"unexpected arguments {' '.join(argv[1:])!r}: all options are --flags (see --helpfull)"
        )
    config = config_from_flags()
    run_dir = rundir.plan(config)  # the run directory's checks too, before TensorFlow loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TF's C++ info/warnings
    logging.set_verbosity(logging.WARNING)
    with stderr_silenced():  # TF's C++ start-up lines, printed before its logging is set
        from harness.training import train
    train(config, run_dir=run_dir)
    return 0


@contextlib.contextmanager
def stderr_silenced():
    """Sends file descriptor 2 to /dev/null for the block (C++ writes included)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def parse_flags(argv: list) -> list:
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
    kept = [
        arg
        for arg in argv[1:]
        if not arg.startswith(("--run_name", "--resume", "--noresume", "--overwrite"))
    ]
    return shlex.join(
        [sys.executable, "-m", "harness.run", *kept, f"--run_name={run_name}", "--resume"]
    )


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
    app.run(_main_or_exit, flags_parser=parse_flags)
