"""The hyperparameters of a run: what the HParams tab compares, and what a default
run name says.

A hyperparameter is every option that changes what is trained or how: the
"What to train" and "How to train" options, less the few that change only
speed or what is logged (`NOT_HYPERPARAMETERS`). Importing this module does not
import TensorFlow.
"""

import dataclasses
import os

from harness import config as config_module
from harness.config import Config
from harness.options import csv, flag_kind

NOT_HYPERPARAMETERS = (
    "data_dir",  # where a file is, not what it holds (its hash is checked)
    "metrics",  # what is measured, not trained
    "steps_per_execution",
    "intra_op_threads",
    "inter_op_threads",
)
# Short forms for run names; other options go by their own name.
_SHORT = {
    "learning_rate": "lr",
    "batch_size": "bs",
    "optimizer": "",
    "dataset": "",
    "clip_norm": "clip",
    "epochs": "ep",
    "num_examples": "n",
    "validation_split": "val",
    "lr_halve_epochs": "halve",
    "lr_schedule": "",
    "lr_plateau_patience": "lr_patience",
    "warmup_steps": "warmup",
    "mixed_precision": "mp",
    "jit_compile": "xla",
    "early_stopping_patience": "patience",
    "early_stopping_min_delta": "min_delta",
    "early_stopping_restore_best": "restore",
}
_NAME_PART_MAX = 80  # bytes of a default run name spent on what differs


def fields() -> list:
    """The Config fields that are hyperparameters, in declaration order."""
    return [
        field
        for field in dataclasses.fields(Config)
        if field.metadata["group"] in (config_module.WHAT, config_module.HOW)
        and field.name not in NOT_HYPERPARAMETERS
    ]


def values(config: Config, task_name: str) -> dict:
    """Hyperparameter -> this run's value, as the HParams tab takes them (str, int,
    float, bool): an unset number is 0, an unset text '', a list 'a,b'; `task` is
    the task the run trains for (e.g. '46-class'), not 'auto'."""
    result = {}
    for field in fields():
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            value = _text(value)
        elif value is None:
            value = 0 if _kind(field) in (int, float) else ""
        result[field.name] = value
    result["task"] = task_name
    return result


def domains() -> dict:
    """Hyperparameter -> the values it may take, for those with a fixed set."""
    result = {}
    for field in fields():
        if field.metadata["choices"] and field.name != "task":
            result[field.name] = tuple(field.metadata["choices"])
        elif _kind(field) is bool:
            result[field.name] = (False, True)
    return result


def differences(config: Config) -> str:
    """What sets this run apart from the defaults, for its default name: e.g.
    'lr0.003-bs64-adam' (model and mode are named already; at most ~80 bytes)."""
    defaults = Config()
    parts = []
    for field in fields():
        value = getattr(config, field.name)
        if field.name in ("mode", "model") or value == getattr(defaults, field.name):
            continue
        if isinstance(value, tuple):
            value = _text(value) or "none"
        elif isinstance(value, bool):
            value = "" if value else "off"
        elif isinstance(value, str):  # a path or an import path: its last part
            value = os.path.basename(value.rstrip("/")).rpartition(":")[2]
        parts.append(f"{short_name(field.name)}{value}")
    name = "-".join(parts)
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in name)[
        :_NAME_PART_MAX
    ].strip("-._")


def short_name(name: str) -> str:
    """The short form of option `name` in run names: 'lr' for learning_rate, '' for optimizer."""
    return _SHORT.get(name, name)


def _kind(field: dataclasses.Field) -> type:
    return flag_kind(field, Config)


def _text(values: tuple) -> str:
    """A list option as it is typed: '5,8', 'priority=1.0,department=0.2'."""
    return csv(f"{item[0]}={item[1]}" if isinstance(item, tuple) else item for item in values)
