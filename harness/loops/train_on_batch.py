"""`TrainOnBatchLoop`: the manual skeleton over `model.train_on_batch` / `test_on_batch`."""

from __future__ import annotations

from harness.loops.base import Loop, Schedule, manual_loop


class TrainOnBatchLoop(Loop):
    """One `train_on_batch` call per step (see `on_batch_steps`)."""

    mode = "train_on_batch"
    one_batch_per_call = True

    def run(
        self,
        model,
        train,
        validation,
        callbacks,
        schedule: Schedule,
        *,
        jit_compile: bool = False,
        metrics_state=None,
    ) -> None:
        del jit_compile  # train_on_batch takes it from model.compile
        from harness.loops.on_batch_steps import OnBatchSteps, compiled_metric_resets

        steps = OnBatchSteps(model)
        if metrics_state is not None:
            metrics_state.attach(steps)
        with compiled_metric_resets(model):
            manual_loop(model, steps, train, validation, callbacks, schedule)
