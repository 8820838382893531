"""Keras callbacks that observe a training run the same way in every loop.

This package depends on TensorFlow/Keras/TensorBoard only, never on `harness`.
Each callback is driven by a `keras.callbacks.CallbackList`, so it behaves the
same under `model.fit`, a `train_on_batch` loop or a `GradientTape` loop.
"""
