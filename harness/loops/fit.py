"""`FitLoop`: Keras's own `model.fit`, driving the run's callbacks."""

from __future__ import annotations

from harness.loops.base import Loop, Schedule


class FitLoop(Loop):
    """`model.fit`; a run resumed mid-epoch first finishes that epoch in its own call."""

    mode = "fit"
    steps_per_execution_divides_epoch = True  # Keras would run extra steps otherwise

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
        del jit_compile  # fit takes it from model.compile
        if metrics_state is not None:
            from harness.callbacks.epoch_state import VariablesState  # TensorFlow: only when run

            metrics_state.attach(VariablesState(lambda: model.metrics_variables))
        epoch = schedule.initial_epoch
        if schedule.initial_step_in_epoch:
            model.fit(
                train.batches(schedule.start_step),
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=validation,
                callbacks=callbacks,
                steps_per_epoch=schedule.steps_per_epoch - schedule.initial_step_in_epoch,
                verbose=0,
                shuffle=False,
            )
            if model.stop_training:
                return
            epoch += 1
        if epoch < schedule.epochs:
            model.fit(
                train.batches(epoch * schedule.steps_per_epoch),
                epochs=schedule.epochs,
                initial_epoch=epoch,
                steps_per_epoch=schedule.steps_per_epoch,
                validation_data=validation,
                callbacks=callbacks,
                verbose=0,
                shuffle=False,
            )
