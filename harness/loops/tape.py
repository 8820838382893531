"""`TapeLoop`: the manual skeleton over the harness's own `tf.GradientTape` step."""

from __future__ import annotations

from harness.loops.base import Loop, Schedule, manual_loop


class TapeLoop(Loop):
    """A compiled `GradientTape` step, many steps per call (see `tape_steps`).

    Its automatic steps per execution are as many as fit between its periodic
    actions (batch summaries, step checkpoints; at most 100), so that Python runs
    once per hundred steps rather than once per step; the steps of a profile
    window still run one per call (see `manual_loop`). It is the one loop that
    runs under MultiWorkerMirroredStrategy.
    """

    mode = "tape"
    auto_steps_per_execution = 100
    multi_worker = True

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
        from harness.callbacks.epoch_state import VariablesState  # TensorFlow: only when run
        from harness.loops.tape_steps import TapeSteps

        steps = TapeSteps(model, jit_compile)
        if metrics_state is not None:
            metrics_state.attach(
                VariablesState(lambda: [*model.metrics_variables, *steps.loss_mean.variables])
            )
        manual_loop(model, steps, train, validation, callbacks, schedule)
