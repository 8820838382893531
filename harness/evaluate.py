"""Evaluate a saved run's checkpoint on its test or validation split.

usage: python -m harness.evaluate --run_name=X [--checkpoint=best|latest|ckpt-N]
                                  [--split=test|validation] [--logdir=logs]

Writes <run>/eval-<checkpoint>-<split>/: TensorBoard scalars
`evaluation_<metric>_vs_iterations` at the checkpoint's global step (beside the
run's validation curve) and eval.json; evaluating again replaces that folder.
`--checkpoint=best --split=validation` reproduces the best epoch's val_* figures.
"""

import os
import shutil
from collections.abc import Callable

from absl import flags

from harness import rundir, saved_run

SPLITS = ("test", "validation")
EVAL_FILE = "eval.json"


def define_flags(flag_values: flags.FlagValues) -> None:
    """evaluate's own flags (the run and checkpoint flags are saved_run's)."""
    flags.DEFINE_enum(
        "split",
        "test",
        SPLITS,
        "test: the data's test split (the validation split where the data has none); "
        "validation: the batches the run validated on",
        flag_values=flag_values,
    )


def evaluate(run: saved_run.SavedRun, split: str, print_fn: Callable[[str], None] = print) -> dict:
    """Evaluates `run`'s model on `split`, writes its evaluation run; returns eval.json's record."""
    import tensorflow as tf

    config = run.config
    batches = run.splits.test(config.batch_size) if split == "test" else None
    if batches is None:
        if split == "test":
            print_fn(
                "harness: the data has no test split apart from the validation split the "
                "run validated on (and chose its best checkpoint by): evaluating that"
            )
        split = "validation"
        batches = run.splits.validation(config.batch_size)
        if config.validation_steps:  # the batches training validated on
            batches = batches.take(config.validation_steps)
    metrics = {
        name: float(value)
        for name, value in run.model.evaluate(batches, return_dict=True, verbose=0).items()
    }
    examples = sum(int(tf.shape(tf.nest.flatten(x)[0])[0]) for x, _ in batches)
    record = {
        "run": run.located.run_dir,
        "checkpoint": run.located.checkpoint,
        "path": run.path,
        "global_step": run.global_step,
        "epoch": run.epoch,
        "split": split,
        "examples": examples,
        "metrics": metrics,
    }
    folder = os.path.join(run.located.run_dir, f"eval-{run.located.checkpoint}-{split}")
    shutil.rmtree(folder, ignore_errors=True)  # the harness's own: a new evaluation replaces it
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default(step=run.global_step):
        for name, value in metrics.items():
            tf.summary.scalar(f"evaluation_{name}_vs_iterations", value)
    writer.close()
    rundir.write_json(os.path.join(folder, EVAL_FILE), record)
    print_fn(
        f"harness: {run.located.checkpoint} (global step {run.global_step}, epoch "
        f"{run.epoch:g}) on the {split} split, {examples} examples:\n"
        f"{saved_run.metrics_table(metrics)}\nharness: written to {folder}"
    )
    return record


def main(flag_values: flags.FlagValues) -> int:
    located = saved_run.locate(flag_values.logdir, flag_values.run_name, flag_values.checkpoint)
    claim = rundir.Claim(located.run_dir)  # no training writes the run while it is read
    try:
        saved_run.quiet_tensorflow()
        evaluate(saved_run.open_run(located), flag_values.split)
    finally:
        claim.release()
    return 0


if __name__ == "__main__":
    saved_run.cli(main, define_flags, __doc__)
