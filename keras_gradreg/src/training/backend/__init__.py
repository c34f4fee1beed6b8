"""Per-backend differentiation, chosen once at import like Keras's trainers.

Each module exposes `train_step` (the `GradRegModel.train_step` for that
backend; JAX's takes and returns the stateless training state),
`check_distribution()` (raises for a distributed setup the backend cannot
train correctly), and `values_and_input_gradient(fn, x)` and
`compile_attack(model, fn)` for the attacks (with `COMPILES_PER_SHAPE`),
`train_function(model,
function)`, which adapts the train function Keras built (torch.compile),
and `global_random_state()` / `set_global_random_state(state)` for the
framework's global generator (torch's; None elsewhere). These modules are the only
files of the library that import tensorflow, jax or torch.
"""

import keras

_BACKEND = keras.backend.backend()

#: Whether `compile_attack`'s programs compile once per input shape (XLA
#: on TensorFlow and JAX), so the attacks pad their batches to a few
#: sizes; torch runs them eagerly, any batch at its own size.
COMPILES_PER_SHAPE = _BACKEND != "torch"

if _BACKEND == "tensorflow":
    from keras_gradreg.src.training.backend.common import (
        check_distribution,
        global_random_state,
        set_global_random_state,
        train_function,
    )
    from keras_gradreg.src.training.backend.tensorflow import (
        compile_attack,
        first_local_batch,
        multi_worker_logs,
        train_step,
        values_and_input_gradient,
    )
elif _BACKEND == "jax":
    from keras_gradreg.src.training.backend.common import (
        check_distribution,
        first_local_batch,
        global_random_state,
        multi_worker_logs,
        set_global_random_state,
        train_function,
    )
    from keras_gradreg.src.training.backend.jax import (
        compile_attack,
        train_step,
        values_and_input_gradient,
    )
elif _BACKEND == "torch":
    from keras_gradreg.src.training.backend.common import (
        first_local_batch,
        multi_worker_logs,
    )
    from keras_gradreg.src.training.backend.torch import (
        check_distribution,
        compile_attack,
        global_random_state,
        set_global_random_state,
        train_function,
        train_step,
        values_and_input_gradient,
    )
else:  # pragma: no cover - numpy/openvino cannot train
    raise ImportError(
        "keras_gradreg trains with the tensorflow, jax or torch backend. "
        f"Received: KERAS_BACKEND={_BACKEND!r}"
    )

__all__ = [
    "check_distribution",
    "compile_attack",
    "first_local_batch",
    "global_random_state",
    "multi_worker_logs",
    "set_global_random_state",
    "train_function",
    "train_step",
    "values_and_input_gradient",
]
