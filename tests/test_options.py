"""Options declared once: the flags, docs/flags.md's tables and the loops' rules come
from the `Config` fields and the loop registry, and none of it needs TensorFlow."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_util import harness_env  # noqa: E402

from harness import flags_doc, loops  # noqa: E402
from harness.config import Config  # noqa: E402
from harness.errors import UsageError  # noqa: E402


def test_the_flag_tables_are_current():
    tables = flags_doc.FLAGS_DOC.read_text()
    assert flags_doc.updated(tables) == tables, "run: python -m harness.flags_doc --write"
    for field in dataclasses.fields(Config):
        assert f"| `--{field.name}` |" in tables, field.name


def test_the_flags_are_checked_without_tensorflow():
    """The entrypoint, the config and the loop registry import no TensorFlow."""
    code = (
        "import sys, harness.run, harness.loops, harness.flags_doc; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_modes_come_from_the_loop_registry():
    assert loops.MODES == tuple(loops.LOOPS) == ("fit", "train_on_batch", "tape")
    for mode, loop in loops.LOOPS.items():
        assert loop.mode == mode and isinstance(loops.get(mode), loops.Loop)


@pytest.mark.parametrize("mode, expected", [("fit", 1), ("train_on_batch", 1), ("tape", 20)])
def test_auto_steps_per_execution_is_the_loops(mode, expected):
    assert (
        Config(mode=mode, summary_every_steps=40, checkpoint_every_steps=60).execution_steps
        == expected
    )


def test_validate_marks_the_config_and_a_replaced_copy_is_checked_again():
    config = Config().validate()
    assert config.validated and not Config().validated
    with pytest.raises(UsageError, match="--epochs=0"):
        dataclasses.replace(config, epochs=0).validate()
