"""The run configuration: a frozen record of every option, each declared once.

Each field is an `options.option`: its type, default, help, choices, parser and
checks. `run.py` derives the flags from the fields, `flags_doc` docs/flags.md's
tables, and `Config.validate()` runs each field's checks, then the rules that
tie fields together, raising UsageError with the flag, the value received and
what is allowed. Everything else takes a `Config` and never reads FLAGS.
Importing this module does not import TensorFlow.
"""

import dataclasses
import math
import re

from harness import catalog, loops
from harness.callbacks.profile_windows import parse_profile_steps, validate_windows
from harness.errors import UsageError
from harness.options import (
    at_least,
    check_field,
    csv,
    non_negative,
    off_or_positive,
    option,
    parse_int_list,
    parse_name_list,
    positive,
    threads,
)

MODES = loops.MODES
BUILTIN_MODELS = ("sequential", "functional", "subclass", "multi_io")
DATASETS = catalog.BUILTIN_DATASETS
TASKS = ("auto", "classification", "regression")
OPTIMIZERS = ("nadam", "adam", "sgd", "rmsprop", "adagrad", "adadelta", "ftrl")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
LR_SCHEDULES = ("halve", "plateau", "cosine")
MULTI_IO_OUTPUTS = catalog.OWN_DATA_MODELS["multi_io"][0]
_RUN_NAME = re.compile(r"^[\w.\-]+$")
NAME_MAX = 255  # bytes in one file name, on every common file system
# docs/flags.md's tables, in order (see flags_doc.py).
WHAT, HOW, WHERE, PROFILING, DEVICES = GROUPS = (
    "What to train",
    "How to train",
    "Where it goes and what is written",
    "Profiling",
    "Devices and scale",
)


def _check_model(name: str, value: str) -> None:
    if value not in BUILTIN_MODELS and not catalog.IMPORT_PATH.match(value):
        raise UsageError(
            f"--{name}={value!r} is not allowed: use one of "
            f"{', '.join(BUILTIN_MODELS)} or a builder 'package.module:function'"
        )


def _check_dataset(name: str, value: str) -> None:
    catalog.dataset_kind(value)


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise UsageError(f"--{name}={value} is not allowed: give a fraction between 0 and 1")


def parse_image_size(text: str) -> tuple | None:
    """Parses --image_size 'H,W' (or '' for the default)."""
    size = parse_int_list("image_size", text)
    if size and (len(size) != 2 or min(size) < 1):
        raise UsageError(
            f"--image_size={text!r} is not allowed: give height,width in pixels, e.g. 64,64"
        )
    return size or None


def _check_run_name(flag: str, name: str) -> None:
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
    raise UsageError(f"--{flag}={name!r} is not allowed: {problem}")


def _check_verbose(name: str, value: int) -> None:
    if value > 2:
        raise UsageError(
            f"--{name}={value} is not allowed: use 0 (quiet), 1 (progress bar) "
            "or 2 (one line per epoch)"
        )


def _check_epochs(name: str, epochs: tuple) -> None:
    if any(epoch < 1 for epoch in epochs):
        raise UsageError(
            f"--{name}={csv(epochs)} is not allowed: epochs are 1-based positive numbers"
        )


def _check_gpus(name: str, indices: tuple) -> None:
    if any(index < 0 for index in indices):
        raise UsageError(f"--{name}={csv(indices)} is not allowed: GPU indices are 0, 1, ...")


def _check_windows(name: str, windows: tuple) -> None:
    try:
        validate_windows(windows)
    except ValueError as error:
        raise UsageError(f"--{name}: {error}") from None


def _check_loss_weights(name: str, weights: tuple) -> None:
    names = [output for output, _ in weights]
    outputs = " and ".join(MULTI_IO_OUTPUTS)
    for output, value in weights:
        if output not in MULTI_IO_OUTPUTS or not math.isfinite(value) or value < 0:
            raise UsageError(
                f"--{name}: {output}={value} is not allowed: the outputs are "
                f"{outputs}, weights are finite and >= 0"
            )
        if names.count(output) > 1:
            raise UsageError(
                f"--{name}: {output} is given twice; give each of {outputs} at most once"
            )


def parse_windows(text: str) -> tuple:
    """Parses --profile_steps ('10,15' or '10,15;200,205'); raises UsageError."""
    try:
        return tuple(parse_profile_steps(text))
    except ValueError as error:
        raise UsageError(f"--profile_steps={text!r} is not allowed: {error}") from None


def parse_loss_weights(text: str) -> tuple:
    """Parses 'priority=1.0,department=0.2' into (('priority', 1.0), ...)."""
    weights = []
    for part in parse_name_list(text):
        name, _, value = part.partition("=")
        try:
            weights.append((name.strip(), float(value)))
        except ValueError:
            raise UsageError(
                f"--loss_weights={text!r} is not allowed: give output=weight "
                "pairs, e.g. priority=1.0,department=0.2"
            ) from None
    _check_loss_weights("loss_weights", tuple(weights))
    return tuple(weights)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every option of a run. Field names are the flag names."""

    mode: str = option("fit", "Training loop: {choices}", group=WHAT, choices=MODES)
    model: str = option(
        "sequential",
        f"Model: {' | '.join(BUILTIN_MODELS)} | package.module:function (a "
        "builder (input_spec, task) -> keras.Model)",
        group=WHAT,
        checks=(_check_model,),
    )
    dataset: str = option(
        "synthetic", f"Dataset: {catalog.DATASET_HELP}", group=WHAT, checks=(_check_dataset,)
    )
    task: str = option(
        "auto",
        "What the labels are: {choices} (auto: integer labels are classes, floats "
        "regression targets; .npz and function data)",
        group=WHAT,
        choices=TASKS,
    )
    validation_split: float | None = option(
        None,
        "Hold out this fraction of the training data, seeded by --seed, for validation; "
        "the data's own held-out split (reuters/imdb: Keras's test split; x_test; test/) "
        "becomes a test split never used for choosing (default: validate on that split, "
        "as the tutorials did; needed when the data has no held-out split)",
        group=WHAT,
        checks=(_check_fraction,),
        shown="none",
    )
    image_size: tuple | None = option(
        None,
        "Image folders: resize the images to height,width",
        group=WHAT,
        parse=parse_image_size,
        shown="64,64",
    )
    data_dir: str | None = option(
        None,
        "Folder holding reuters.npz / imdb.npz (offline use; the file's hash is checked)",
        group=WHAT,
    )
    num_words: int = option(
        10000,
        "Vocabulary size (the most frequent words)",
        group=WHAT,
        checks=(positive, at_least(3, "0 is padding, 1 the start mark, 2 out-of-vocabulary")),
    )
    max_len: int = option(
        300, "Sequence length after padding/truncation", group=WHAT, checks=(positive,)
    )
    num_classes: int | None = option(
        None,
        "Synthetic data only: classes (default 46; 2 gives the binary, IMDB-like "
        "task); with --model=multi_io the departments (default 4)",
        group=WHAT,
        checks=(at_least(2, "2 is the binary task"),),
        shown="46",
    )
    num_examples: int | None = option(
        None,
        "Training examples: synthetic data generates this many (default 8982, +20% "
        "for validation); reuters/imdb keep the first N of the training split (Keras's "
        "loaders shuffle it with --seed; default all; validation stays whole)",
        group=WHAT,
        checks=(positive,),
        shown="synthetic: 8982; reuters/imdb: all",
    )
    epochs: int = option(
        10, "Epochs to train (in total, also when resuming)", group=HOW, checks=(positive,)
    )
    batch_size: int = option(32, "Global batch size", group=HOW, checks=(positive,))
    steps_per_epoch: int | None = option(
        None,
        "Train steps per epoch (default: one pass over the training set)",
        group=HOW,
        checks=(positive,),
        shown="whole set",
    )
    validation_steps: int | None = option(
        None,
        "Validation batches per epoch (default: the whole validation set)",
        group=HOW,
        checks=(positive,),
        shown="whole set",
    )
    optimizer: str = option("nadam", "Optimizer: {choices}", group=HOW, choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "Initial learning rate", group=HOW, checks=(positive,))
    clip_norm: float | None = option(
        None,
        "Clip each gradient to this norm, like tf.clip_by_norm(g, 5) in the old "
        "recipe (off if unset)",
        group=HOW,
        checks=(positive,),
        shown="off",
    )
    seed: int = option(
        42,
        "Seed for the weights, the synthetic data and the data order",
        group=HOW,
        checks=(non_negative,),
        maximum=2**32 - 1,
    )
    logdir: str = option("logs", "Folder holding the run directories", group=WHERE)
    run_name: str | None = option(
        None,
        "Run directory name (default <model>-<mode>-<time>, with the options that differ "
        "from their defaults after the mode, e.g. sequential-fit-lr0.003-bs64-<time>)",
        group=WHERE,
        checks=(_check_run_name,),
        shown="<model>-<mode>-<time>",
    )
    overwrite: bool = option(
        False,
        "Replace an existing run directory (without it an existing run is never touched)",
        group=WHERE,
    )
    resume: bool = option(
        False, "Continue the run --run_name from its last checkpoint", group=WHERE
    )
    verbose: int = option(
        1,
        "0 = quiet, 1 = progress bar, 2 = one line per epoch",
        group=WHERE,
        checks=(off_or_positive, _check_verbose),
    )
    summary_every_steps: int = option(
        100,
        "Write batch_loss, the learning rate and the model's own tf.summary calls every "
        "N steps (0 = off)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    histogram_freq: int = option(
        1,
        "Weight and gradient histograms every N epochs (0 = off)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    embeddings_freq: int = option(
        1,
        "Every N epochs: each Embedding layer's weights for the Projector, with the words "
        "as metadata (0 = off)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    eval_figures_freq: int = option(
        5,
        "Every N epochs and at the last: predict the validation set for a confusion "
        "matrix, PR curves and the most confidently wrong examples (0 = off)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    diagnostics_freq: int = option(
        1,
        "Every N epochs: per-layer health on the probe batch (gradient norms, "
        "update/weight ratios, activation histograms, dead ReLU units; 0 = off)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    early_stopping_patience: int = option(
        0,
        "Stop once --monitor has gone N epochs without improving by more than "
        "--early_stopping_min_delta (0 = never; exact across --resume)",
        group=HOW,
        checks=(off_or_positive,),
    )
    early_stopping_min_delta: float = option(
        0.0,
        "What counts as an improvement for --early_stopping_patience: more than this",
        group=HOW,
        checks=(non_negative,),
    )
    early_stopping_restore_best: bool = option(
        False,
        "When stopping early, go back to the best model's weights (best.keras by --monitor)",
        group=HOW,
    )
    lr_halve_epochs: tuple = option(
        (5,),
        "1-based epochs at whose start the learning rate is multiplied by "
        "--lr_halve_factor, e.g. 5,8 (empty = never)",
        group=HOW,
        parse=lambda text: parse_int_list("lr_halve_epochs", text),
        checks=(_check_epochs,),
    )
    lr_halve_factor: float = option(
        0.5,
        "Multiplier at each halving epoch (and each plateau cut)",
        group=HOW,
        checks=(positive,),
    )
    lr_schedule: str = option(
        "halve",
        "Learning-rate schedule: {choices} (halve: at --lr_halve_epochs; plateau: "
        "x--lr_halve_factor after --lr_plateau_patience epochs without a better "
        "--monitor; cosine: down to 0 over the run's steps, every step)",
        group=HOW,
        choices=LR_SCHEDULES,
    )
    lr_plateau_patience: int = option(
        2,
        "Epochs without a better --monitor (by any amount) before each plateau cut",
        group=HOW,
        checks=(positive,),
    )
    warmup_steps: int = option(
        0,
        "Raise the learning rate linearly over the first N steps, with any --lr_schedule (0 = off)",
        group=HOW,
        checks=(non_negative,),
    )
    checkpoint_every_steps: int = option(
        0,
        "Also checkpoint every N steps (0 = only at epoch ends, where checkpoints are "
        "always written)",
        group=WHERE,
        checks=(off_or_positive,),
    )
    keep_checkpoints: int = option(3, "Checkpoints to keep", group=WHERE, checks=(positive,))
    monitor: str = option(
        "val_loss",
        "Metric that picks the best model, best.keras (lower is better for "
        "losses, higher otherwise)",
        group=WHERE,
    )
    profile_steps: tuple = option(
        (),
        "Global steps to profile, START,STOP inclusive; several windows with ';' "
        "(e.g. 10,15;200,205). Empty = no profiling",
        group=PROFILING,
        parse=parse_windows,
        checks=(_check_windows,),
        text=lambda windows: ";".join(map(csv, windows)),
        shown="off",
    )
    profiler_port: int = option(
        0,
        "Start the profiler server on this port for TensorBoard's 'Capture profile' "
        "(0 = off). It listens on all interfaces, not only loopback",
        group=PROFILING,
        checks=(off_or_positive,),
        maximum=65535,
    )
    steps_per_execution: int = option(
        0,
        "Train (and validation) steps per compiled call (fit and tape, not "
        "train_on_batch; callbacks see each call). 0 = auto: 1 for fit, up to 100 for tape "
        "(between step summaries and checkpoints; a profile window's steps run one per "
        "call)",
        group=HOW,
        checks=(off_or_positive,),
        shown="0 = auto",
    )
    jit_compile: bool = option(False, "Compile the train step with XLA", group=HOW)
    mixed_precision: bool = option(
        False, "Mixed precision: bfloat16 on a CPU, float16 with loss scaling on a GPU", group=HOW
    )
    metrics: tuple = option(
        (),
        "Comma-separated metrics (default per task: accuracy,top5_accuracy; accuracy,auc "
        "for two classes; mae,rmse for regression; accuracy for multi_io); choices: "
        "accuracy, top5_accuracy, top3_accuracy, crossentropy, auc, precision, recall, "
        "mae, mse, rmse",
        group=WHAT,
        parse=parse_name_list,
        shown="per task",
    )
    gpus: tuple | None = option(
        None,
        "GPU indices to use, e.g. 0 or 0,1 (default: all)",
        group=DEVICES,
        parse=lambda text: parse_int_list("gpus", text) or None,
        checks=(_check_gpus,),
        shown="all",
    )
    gpu_memory_growth: bool = option(
        True, "Allocate GPU memory as needed instead of all at once", group=DEVICES
    )
    gpu_memory_limit_mb: int = option(
        0, "Cap each GPU's memory in MB (0 = no cap)", group=DEVICES, checks=(off_or_positive,)
    )
    export: bool = option(
        False,
        "Export the best (or final) model as a SavedModel under the run directory",
        group=WHERE,
    )
    loss_weights: tuple = option(
        (),
        "--model=multi_io: weight of each output's loss, e.g. "
        "priority=1.0,department=0.2 (the default)",
        group=WHAT,
        parse=parse_loss_weights,
        checks=(_check_loss_weights,),
        text=lambda weights: csv(f"{output}={weight}" for output, weight in weights),
        shown="`priority=1.0,department=0.2`",
    )
    strategy: str = option(
        "default",
        "tf.distribute strategy: {choices} (multi_worker reads the cluster from TF_CONFIG)",
        group=DEVICES,
        choices=STRATEGIES,
    )
    cpu_replicas: int = option(
        0,
        "With --strategy=mirrored and no GPU: split the CPU into N logical devices (to "
        "try data parallelism on a CPU-only machine)",
        group=DEVICES,
        checks=(off_or_positive,),
    )
    intra_op_threads: int = option(
        0,
        "Threads one op may split its work over (0 = TensorFlow's choice: the number of cores)",
        group=HOW,
        checks=(threads,),
        maximum=4096,
    )
    inter_op_threads: int = option(
        0,
        "Ops that may run at once (0 = TensorFlow's choice: the number of cores)",
        group=HOW,
        checks=(threads,),
        maximum=4096,
    )

    def validate(self) -> "Config":
        """Returns self, marked validated, if every value is allowed; raises UsageError
        otherwise. The run directory's checks are `rundir.plan`'s."""
        for field in dataclasses.fields(self):
            check_field(field, getattr(self, field.name))
        for rule in _RULES:
            rule(self)
        object.__setattr__(self, "_validated", True)  # frozen: not a field, not compared
        return self

    @property
    def validated(self) -> bool:
        """Whether `validate()` passed on this instance (a `replace`d copy is not)."""
        return getattr(self, "_validated", False)

    @property
    def execution_steps(self) -> int:
        """Train steps per compiled call: --steps_per_execution, or the loop's auto
        (see `harness.loops.base.Loop.execution_steps`)."""
        return loops.get(self.mode).execution_steps(self)

    @property
    def classes(self) -> int | None:
        """The classes of a built-in dataset or model (None: the labels of the user's
        data tell)."""
        if self.num_classes is not None:
            return self.num_classes
        if self.model in catalog.OWN_DATA_MODELS:
            return catalog.OWN_DATA_MODELS[self.model][1]
        return catalog.DATASET_CLASSES.get(self.dataset)


def _num_classes_only_synthetic(config: Config) -> None:
    if config.num_classes is not None and config.dataset != "synthetic":
        raise UsageError(
            f"--num_classes applies only to --dataset=synthetic; "
            f"{config.dataset} has a fixed number of classes"
        )


def _max_len_fits_model(config: Config) -> None:
    if catalog.dataset_kind(config.dataset) in (catalog.BUILTIN, catalog.TEXT_FOLDER):
        catalog.check_max_len(config.model, config.max_len)


def _cpu_replicas_only_mirrored(config: Config) -> None:
    if config.cpu_replicas and config.strategy != "mirrored":
        raise UsageError(
            f"--cpu_replicas={config.cpu_replicas} applies to --strategy=mirrored only"
        )


def _own_data_model_rules(config: Config) -> None:
    """A model with data of its own (multi_io) takes no --dataset and at least its
    fewest classes; only it weighs its outputs' losses."""
    own = catalog.OWN_DATA_MODELS.get(config.model)
    if own and config.dataset != "synthetic":
        raise UsageError(
            f"--model={config.model} trains on its own synthetic data; "
            f"--dataset={config.dataset} is not its input: drop --dataset"
        )
    if config.loss_weights and not own:
        raise UsageError("--loss_weights applies to a multi-output model (--model=multi_io) only")
    if own and config.num_classes is not None and config.num_classes < own[2]:
        raise UsageError(
            f"--num_classes={config.num_classes} is not allowed with "
            f"--model={config.model}: its classes are a softmax over at least {own[2]}"
        )


def _user_data_rules(config: Config) -> None:
    """The options that apply to some kinds of --dataset only."""
    kind = catalog.dataset_kind(config.dataset)
    if config.task != "auto" and kind not in (catalog.NPZ, catalog.FUNCTION, catalog.GIVEN):
        raise UsageError(
            f"--task={config.task} applies to .npz and function data; "
            f"--dataset={config.dataset} is classification"
        )
    if config.validation_split is not None and config.model in catalog.OWN_DATA_MODELS:
        raise UsageError(
            f"--validation_split does not apply to --model={config.model}, which trains "
            "on its own synthetic data"
        )
    if config.image_size and kind != catalog.IMAGE_FOLDER:
        raise UsageError(
            f"--image_size applies to image folders; --dataset={config.dataset} is not one"
        )


def _resume_rules(config: Config) -> None:
    if config.resume and config.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: give one of them")
    if config.resume and not config.run_name:
        raise UsageError(
            "--resume needs --run_name naming the run to continue "
            f"(a folder under --logdir={config.logdir})"
        )


def _early_stopping_rules(config: Config) -> None:
    if config.early_stopping_patience:
        return
    for name in ("early_stopping_min_delta", "early_stopping_restore_best"):
        if getattr(config, name):
            raise UsageError(f"--{name} applies with --early_stopping_patience only; set that too")


def _lr_schedule_rules(config: Config) -> None:
    """An option of another --lr_schedule, given other than its default, is an error."""
    applies = {
        "lr_halve_epochs": ("halve",),
        "lr_halve_factor": ("halve", "plateau"),
        "lr_plateau_patience": ("plateau",),
    }
    defaults = {field.name: field.default for field in dataclasses.fields(Config)}
    for name, schedules in applies.items():
        if config.lr_schedule not in schedules and getattr(config, name) != defaults[name]:
            raise UsageError(
                f"--{name} applies with --lr_schedule={' or '.join(schedules)} only, "
                f"not --lr_schedule={config.lr_schedule}: drop it"
            )


def _data_dir_holds_the_file(config: Config) -> None:
    if config.dataset in catalog.DATA_FILES and config.model not in catalog.OWN_DATA_MODELS:
        catalog.check_data_dir(config.dataset, config.data_dir)


# The rules that tie fields together, after each field's own checks.
_RULES = (
    _num_classes_only_synthetic,
    _max_len_fits_model,
    loops.check,
    _cpu_replicas_only_mirrored,
    _own_data_model_rules,
    _user_data_rules,
    _resume_rules,
    _early_stopping_rules,
    _lr_schedule_rules,
    _data_dir_holds_the_file,
)
