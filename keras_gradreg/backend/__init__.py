"""Per-backend differentiation, chosen once at import like Keras's trainers.

Each module exposes `train_step` (the `GradRegModel.train_step` for that
backend; JAX's takes and returns the stateless training state) and
`values_and_input_gradient(fn, x)` and `compile_attack(model, fn)` for the
attacks. These modules are the
only files of the library that import tensorflow, jax or torch.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_gradreg.backend.tensorflow import (
        compile_attack,
        train_step,
        values_and_input_gradient,
    )
elif _BACKEND == "jax":
    from keras_gradreg.backend.jax import (
        compile_attack,
        train_step,
        values_and_input_gradient,
    )
elif _BACKEND == "torch":
    from keras_gradreg.backend.torch import (
        compile_attack,
        train_step,
        values_and_input_gradient,
    )
else:  # pragma: no cover - numpy/openvino cannot train
    raise ImportError(
        "keras_gradreg trains with the tensorflow, jax or torch backend. "
        f"Received: KERAS_BACKEND={_BACKEND!r}"
    )

__all__ = ["compile_attack", "train_step", "values_and_input_gradient"]
