"""The run configuration: a frozen, validated record of every option.

`run.py` turns absl flags into a `Config`; everything else takes a `Config`
(or plain arguments) and never reads FLAGS. `Config.validate()` rejects every
bad value up front, naming the flag, the value received and what is allowed.
"""

import dataclasses
import math
import os
import re
from typing import Optional

from callbacks.profile_windows import parse_profile_steps, validate_windows
from harness.errors import UsageError

MODES = ("fit", "train_on_batch", "tape")
BUILTIN_MODELS = ("sequential", "functional", "subclass", "multi_io")
DATASETS = ("synthetic", "reuters", "imdb")
OPTIMIZERS = ("nadam", "adam", "sgd", "rmsprop", "adagrad", "adadelta", "ftrl")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Keras 3's fit and train_on_batch under MultiWorkerMirroredStrategy fail ("Attempt to
# convert a value (PerReplica...) to a Tensor"; "Invalid reduction dimension 0").
KERAS_MULTI_WORKER_ISSUE = "keras-team/keras#20585 (tensorflow/tensorflow#72388)"
# The shortest --max_len each built-in model takes: its convolutions and
# poolings shrink the sequence, and a shorter one leaves nothing to convolve
# (tests/test_loops.py checks these against the models themselves).
MIN_MAX_LEN = {"sequential": 12, "functional": 55, "subclass": 4}
DATA_FILES = {"reuters": "reuters.npz", "imdb": "imdb.npz"}
MULTI_IO_OUTPUTS = ("priority", "department")
AUTO_EXECUTION_STEPS = 100
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_RUN_NAME = re.compile(r"^[\w.\-]+$")
# The largest whole number a flag takes: TensorFlow holds sizes, counts and token ids
# as int32, and a larger value overflows there (or asks for impossible memory).
MAX_INT = 2**31 - 1
# Tighter limits: NumPy's seeds (keras.utils.set_random_seed) are 0 .. 2**32 - 1; a
# thread pool far above any machine's cores would exhaust the OS's threads.
MAX_OF = {"seed": 2**32 - 1, "intra_op_threads": 4096, "inter_op_threads": 4096,
          "profiler_port": 65535}
NAME_MAX = 255  # bytes in one file name, on every common file system


@dataclasses.dataclass(frozen=True)
class Config:
    """Every option of a run. Field names are the flag names."""

    mode: str = "fit"
    model: str = "sequential"
    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    num_words: int = 10000
    max_len: int = 300
    num_classes: Optional[int] = None
    num_examples: Optional[int] = None  # synthetic: data.SYNTHETIC_EXAMPLES; else all
    epochs: int = 10
    batch_size: int = 32
    steps_per_epoch: Optional[int] = None
    validation_steps: Optional[int] = None
    optimizer: str = "nadam"
    learning_rate: float = 1e-3
    clip_norm: Optional[float] = None
    seed: int = 42
    logdir: str = "logs"
    run_name: Optional[str] = None
    overwrite: bool = False
    resume: bool = False
    verbose: int = 1
    summary_every_steps: int = 100
    histogram_freq: int = 1
    lr_halve_epochs: tuple = (5,)
    lr_halve_factor: float = 0.5
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 3
    monitor: str = "val_loss"
    profile_steps: tuple = ()
    profiler_port: int = 0
    steps_per_execution: int = 0  # 0 = auto: see Config.execution_steps
    jit_compile: bool = False
    mixed_precision: bool = False
    metrics: tuple = ()
    gpus: Optional[tuple] = None
    gpu_memory_growth: bool = True
    gpu_memory_limit_mb: int = 0
    export: bool = False
    loss_weights: tuple = ()  # (("priority", 1.0), ("department", 0.2)) for multi_io
    strategy: str = "default"
    cpu_replicas: int = 0
    intra_op_threads: int = 0  # 0 = TensorFlow's choice (the number of cores)
    inter_op_threads: int = 0  # 0 = TensorFlow's choice (the number of cores)

    def validate(self) -> "Config":
        """Returns self if every value is allowed; raises UsageError otherwise."""
        _choice("mode", self.mode, MODES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("strategy", self.strategy, STRATEGIES)
        if self.model not in BUILTIN_MODELS and not _IMPORT_PATH.match(self.model):
            raise UsageError(
                f"--model={self.model!r} is not allowed: use one of "
                f"{', '.join(BUILTIN_MODELS)} or a builder 'package.module:function'")
        for name, value in _whole_numbers(self):
            if value > MAX_OF.get(name, MAX_INT):
                raise UsageError(f"--{name}={value} is not allowed: it must be at most "
                                 f"{MAX_OF.get(name, MAX_INT)}")
        for name in ("num_words", "max_len", "epochs", "batch_size", "keep_checkpoints"):
            _positive(name, getattr(self, name))
        for name in ("num_examples", "steps_per_epoch", "validation_steps", "clip_norm"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        for name in ("learning_rate", "lr_halve_factor"):
            _positive(name, getattr(self, name))
        for name in ("summary_every_steps", "histogram_freq", "checkpoint_every_steps",
                     "profiler_port", "verbose", "gpu_memory_limit_mb", "cpu_replicas",
                     "steps_per_execution"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name}={getattr(self, name)} is not allowed: "
                                 "it must be 0 (off) or a positive number")
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name}={getattr(self, name)} is not allowed: it must be "
                                 "0 (TensorFlow's choice) or a positive number of threads")
        if self.seed < 0:
            raise UsageError(f"--seed={self.seed} is not allowed: it must be 0 or a positive "
                             "number")
        if self.verbose > 2:
            raise UsageError(f"--verbose={self.verbose} is not allowed: use 0 (quiet), "
                             "1 (progress bar) or 2 (one line per epoch)")
        if self.num_classes is not None:
            if self.num_classes < 2:
                raise UsageError(f"--num_classes={self.num_classes} is not allowed: "
                                 "it must be at least 2 (2 is the binary task)")
            if self.dataset != "synthetic":
                raise UsageError(f"--num_classes applies only to --dataset=synthetic; "
                                 f"{self.dataset} has a fixed number of classes")
        if self.max_len < MIN_MAX_LEN.get(self.model, 1):
            raise UsageError(f"--max_len={self.max_len} is not allowed with --model="
                             f"{self.model}: it must be at least {MIN_MAX_LEN[self.model]} "
                             "for that model's convolutions and poolings")
        if self.num_words < 3:
            raise UsageError(f"--num_words={self.num_words} is not allowed: it must be at "
                             "least 3 (0 is padding, 1 the start mark, 2 out-of-vocabulary)")
        if self.run_name is not None:
            _check_run_name(self.run_name)
        if self.gpus is not None and any(index < 0 for index in self.gpus):
            raise UsageError(f"--gpus={_csv(self.gpus)} is not allowed: GPU indices are 0, 1, ...")
        if any(e < 1 for e in self.lr_halve_epochs):
            raise UsageError(f"--lr_halve_epochs={_csv(self.lr_halve_epochs)} is not "
                             "allowed: epochs are 1-based positive numbers")
        try:
            validate_windows(self.profile_steps)
        except ValueError as error:
            raise UsageError(f"--profile_steps: {error}") from None
        if self.strategy == "multi_worker" and self.mode != "tape":
            raise UsageError(
                f"--strategy=multi_worker cannot run --mode={self.mode}: Keras 3's "
                f"{self.mode} fails under MultiWorkerMirroredStrategy "
                f"({KERAS_MULTI_WORKER_ISSUE}); use --mode=tape, the harness's own loop, "
                "which runs on many machines")
        if self.cpu_replicas and self.strategy != "mirrored":
            raise UsageError(f"--cpu_replicas={self.cpu_replicas} applies to "
                             "--strategy=mirrored only")
        if self.mode == "train_on_batch" and self.steps_per_execution > 1:
            raise UsageError(f"--steps_per_execution={self.steps_per_execution} does not apply "
                             "to --mode=train_on_batch, which trains one batch per call: use "
                             "--mode=fit or --mode=tape, or drop the flag")
        if self.model == "multi_io" and self.dataset != "synthetic":
            raise UsageError(f"--model=multi_io trains on its own synthetic tickets; "
                             f"--dataset={self.dataset} has one input: drop --dataset")
        if self.loss_weights and self.model != "multi_io":
            raise UsageError("--loss_weights applies to a multi-output model "
                             "(--model=multi_io) only")
        _check_loss_weights(self.loss_weights)
        if self.model == "multi_io" and self.num_classes is not None and self.num_classes < 3:
            raise UsageError(f"--num_classes={self.num_classes} is not allowed with "
                             "--model=multi_io: the departments are a softmax over at least 3")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: "
                             "give one of them")
        if self.resume and not self.run_name:
            raise UsageError("--resume needs --run_name naming the run to continue "
                             f"(a folder under --logdir={self.logdir})")
        check_logdir(self.logdir)
        if self.dataset in DATA_FILES and self.model != "multi_io":
            check_data_dir(self.dataset, self.data_dir)
        return self

    @property
    def execution_steps(self) -> int:
        """Train steps per compiled call: --steps_per_execution, or automatically 1
        for fit and train_on_batch (Keras's own default) and, for the tape loop, as
        many as fit between its periodic actions (batch summaries, step checkpoints;
        at most AUTO_EXECUTION_STEPS), so that Python runs once per hundred steps
        rather than once per step. (The tape loop runs the steps of a profile
        window one per call all the same: see `harness.loops`.)"""
        if self.steps_per_execution:
            return self.steps_per_execution
        if self.mode != "tape":
            return 1
        return math.gcd(AUTO_EXECUTION_STEPS, self.summary_every_steps,
                        self.checkpoint_every_steps)

    @property
    def binary(self) -> bool:
        """Whether the task is binary (one sigmoid unit) rather than N-way softmax."""
        return self.classes == 2

    @property
    def classes(self) -> int:
        """The number of classes the dataset has."""
        if self.num_classes is not None:
            return self.num_classes
        if self.model == "multi_io":
            return 4  # departments
        return 2 if self.dataset == "imdb" else 46


def data_file_hint(dataset: str) -> str:
    """How to get the data file of `dataset` onto an offline machine."""
    file_name = DATA_FILES[dataset]
    return (f"download {file_name} once (keras.datasets.{dataset}.load_data() on a machine "
            f"with internet) and pass --data_dir=<folder holding {file_name}>")


def check_data_dir(dataset: str, data_dir: Optional[str]) -> None:
    """Raises UsageError if --data_dir is given but does not hold the dataset's file."""
    if data_dir is None:
        return
    file_name = DATA_FILES[dataset]
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data_dir={data_dir!r} is not a folder: {data_file_hint(dataset)}")
    if not os.path.isfile(os.path.join(data_dir, file_name)):
        raise UsageError(f"--data_dir={data_dir!r} holds no {file_name}: "
                         f"{data_file_hint(dataset)}")


def check_logdir(logdir: str) -> None:
    """Raises UsageError unless `logdir` is, or can be created as, a writable folder.

    Part of `validate()`, so an unusable --logdir fails with the other bad
    flags, before TensorFlow is imported; it only looks, never creates.
    """
    existing = logdir
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    existing = existing or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--logdir={logdir!r} cannot be written ({existing} is not a "
                         "writable folder): choose another --logdir")


def parse_name_list(text: str) -> tuple:
    """Parses 'accuracy,auc' into ('accuracy', 'auc'); '' gives ()."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_loss_weights(text: str) -> tuple:
    """Parses 'priority=1.0,department=0.2' into (('priority', 1.0), ...)."""
    weights = []
    for part in parse_name_list(text):
        name, _, value = part.partition("=")
        try:
            weights.append((name.strip(), float(value)))
        except ValueError:
            raise UsageError(f"--loss_weights={text!r} is not allowed: give output=weight "
                             "pairs, e.g. priority=1.0,department=0.2") from None
    _check_loss_weights(tuple(weights))
    return tuple(weights)


def _check_loss_weights(weights: tuple) -> None:
    names = [name for name, _ in weights]
    for name, value in weights:
        if name not in MULTI_IO_OUTPUTS or not math.isfinite(value) or value < 0:
            raise UsageError(f"--loss_weights: {name}={value} is not allowed: the outputs "
                             f"are {' and '.join(MULTI_IO_OUTPUTS)}, weights are finite "
                             "and >= 0")
        if names.count(name) > 1:
            raise UsageError(f"--loss_weights: {name} is given twice; give each of "
                             f"{' and '.join(MULTI_IO_OUTPUTS)} at most once")


def parse_int_list(flag: str, text: str) -> tuple:
    """Parses '5,8' into (5, 8); '' gives (). Raises UsageError naming the flag."""
    text = text.strip()
    if not text:
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--{flag}={text!r} is not allowed: give comma-separated whole "
                         "numbers, e.g. 5,8 (or an empty value to disable)") from None
    return values


def parse_windows(text: str) -> tuple:
    """Parses --profile_steps ('10,15' or '10,15;200,205'); raises UsageError."""
    try:
        return tuple(parse_profile_steps(text))
    except ValueError as error:
        raise UsageError(f"--profile_steps={text!r} is not allowed: {error}") from None


def _choice(name: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise UsageError(f"--{name}={value!r} is not allowed: use one of {', '.join(allowed)}")


def _check_run_name(name: str) -> None:
    """Refuses a name that is no folder of its own under --logdir, or that a file
    system, a shell or a terminal would mangle."""
    size = len(name.encode())
    if not _RUN_NAME.match(name):
        problem = "use letters, digits, '.', '-' and '_' only"
    elif not name.strip("."):
        problem = "'.' and '..' name the log directory itself or its parent, not a run"
    elif name.startswith("-"):
        problem = "a leading '-' reads as an option in commands; start with a letter or digit"
    elif size > NAME_MAX:
        problem = f"it is {size} bytes long and a file name holds at most {NAME_MAX}"
    else:
        return
    raise UsageError(f"--run_name={name!r} is not allowed: {problem}")


def _whole_numbers(config: Config):
    """(flag, value) of every whole number in `config`, those of list flags too."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, int) and not isinstance(item, bool):
                yield field.name, item


def _positive(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"--{name}={value} is not allowed: it must be a finite number")
    if not value > 0:
        raise UsageError(f"--{name}={value} is not allowed: it must be greater than 0")


def _csv(values) -> str:
    return ",".join(str(v) for v in values)
