"""Everything that depends on the Keras backend in use.

This is the one module allowed to import TensorFlow (`tf.*`): the rest of the
library speaks `keras` and `keras.ops`, so the same stages run under
`KERAS_BACKEND=jax` on a machine without TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np


def name() -> str:
    return keras.backend.backend()


class Gpu(NamedTuple):
    name: str
    capability: float  # CUDA compute capability, 8.0 and later with bfloat16 arithmetic; 0.0 when not known


def first_gpu() -> Gpu | None:
    """The GPU the backend computes on, or None on a CPU."""
    backend = name()
    if backend == "jax":
        import jax

        first = jax.devices()[0]
        if first.platform != "gpu":
            return None
        return Gpu(first.device_kind, float(getattr(first, "compute_capability", 0)))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        major, minor = details.get("compute_capability", (0, 0))
        return Gpu(details.get("device_name", gpus[0].name), major + minor / 10)
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return Gpu(torch.cuda.get_device_name(0), major + minor / 10)
    return None


def device() -> str:
    """'gpu:<model>' when the backend computes on a GPU, else 'cpu'."""
    gpu = first_gpu()
    return f"gpu:{gpu.name}" if gpu else "cpu"


def accelerators() -> list[str]:
    """The GPUs and TPUs the backend computes on, by the names its data-parallel engine takes (none under torch,
    which this project does not distribute)."""
    backend = name()
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices() if d.platform in ("gpu", "tpu")]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for kind in ("GPU", "TPU") for d in tf.config.list_logical_devices(kind)]
    return []


def cpu_devices() -> list[str]:
    """The backend's CPU devices: one, unless more were configured before it started (XLA's
    `--xla_force_host_platform_device_count` under JAX, logical devices under TensorFlow)."""
    backend = name()
    if backend == "jax":
        import jax

        return [f"cpu:{d.id}" for d in jax.devices("cpu")]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("CPU")]
    return ["cpu:0"]


def data_parallel(devices: list[str]) -> Any:
    """The backend's engine for one model on `devices`, each step's batch split among them: Keras'
    `DataParallel` distribution under JAX, a `MirroredStrategy` under TensorFlow. Both have `scope()`, inside
    which the model is built, compiled and fitted."""
    backend = name()
    if backend == "jax":
        return keras.distribution.DataParallel(devices=devices)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices=devices)
    raise NotImplementedError(f"data-parallel training under the {backend} backend")


def share_the_device() -> None:
    """Let processes started from now on share one GPU: each takes device memory as it needs it, instead of
    JAX's default of 75% or TensorFlow's of all of it at start-up (a setting they read when they start)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


def trainings_at_once(setting: int | str, folds: int) -> int:
    """A study's `parallel` as a number: "auto" trains all of an arm's folds at once on a GPU (small models
    leave it idle most of the time) and two at a time on a CPU of two cores or more (one training's Python and
    MLflow work overlaps the other's arithmetic: 1.2x on two cores, docs/performance.md)."""
    if setting != "auto":
        return int(setting)
    if device().startswith("gpu"):
        return folds
    return min(folds, 2) if (os.cpu_count() or 1) >= 2 else 1


def steps_per_execution(setting: int | str) -> int:
    """A recipe's `steps_per_execution` as a number: "auto" is 16 on a GPU and 1 on a CPU (where grouping steps
    gains nothing: docs/performance.md)."""
    if setting != "auto":
        return int(setting)
    return 16 if device().startswith("gpu") else 1


def compile_steps(model: keras.Model, steps: int) -> None:
    """Run the compiled `model`'s groups of `steps` training steps as one program where the backend allows:
    under JAX a scan of Keras' own train step (Keras loops over single-step programs in Python)."""
    if name() == "jax":
        from cnnlab.training.scan_steps import use_scanned_steps

        use_scanned_steps(model, steps)


def epoch_shuffled(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> dict[str, Any]:
    """`fit` arguments that feed `x`, `y` in batches of `batch_size`, in a new order every epoch: the same
    orders for the same seed.

    Keras' own `shuffle=True` does not reshuffle under TensorFlow once a global seed is set (as
    `seed_everything` does): its tf.data pipeline draws each epoch's permutation with a random op that every
    epoch's new iterator starts afresh from the same seed, so every epoch visits the same batches in the same
    order, and a network without dropout overfits that one order (C3's no-dropout arm lost 4 points).
    Here one shuffle of the row numbers, seeded and reshuffled each iteration, picks each epoch's batches.
    Under JAX and torch Keras draws each epoch's permutation from NumPy's seeded global generator, which does
    reshuffle, and the arrays go to `fit` as they are.

    The images are cast to float32 one batch at a time, so 8-bit images stay 8-bit in memory (a float32
    copy of cats vs dogs' training split is 540 MB and takes seconds to make).
    """
    if name() != "tensorflow":
        return {"x": x.astype("float32"), "y": y, "batch_size": batch_size, "shuffle": True}
    import tensorflow as tf

    rows = tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return {"x": _picked_as_floats(rows, x, y).prefetch(tf.data.AUTOTUNE), "shuffle": False}  # the order is its own


# Keras' batch size for arrays given without one, as `fit` scores its `validation_data` when `x` is a data set.
KERAS_ARRAY_BATCH = 32


def held_out_batches(x: np.ndarray, y: np.ndarray) -> Any:
    """`fit`'s `validation_data` for `x`, `y`: the batches Keras would score the arrays in, with the images cast
    to float32 one batch at a time under TensorFlow (as `epoch_shuffled`), the arrays cast whole elsewhere."""
    if name() != "tensorflow":
        return x.astype("float32"), y
    import tensorflow as tf

    return _picked_as_floats(tf.data.Dataset.range(len(x)).batch(KERAS_ARRAY_BATCH), x, y)


def _picked_as_floats(rows: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """A tf.data set of the batches of `x` (as float32) and `y` at each batch of row numbers `rows`."""
    import tensorflow as tf

    # The arrays enter as one repeated element, not as constants of the map function (which caps them at 2 GB)
    arrays = tf.data.Dataset.from_tensors((tf.convert_to_tensor(x), tf.convert_to_tensor(y))).repeat()
    return tf.data.Dataset.zip(rows, arrays).map(
        lambda picked, xy: (tf.cast(tf.gather(xy[0], picked), "float32"), tf.gather(xy[1], picked))
    )


def build_training_state(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Create a compiled model's optimizer and metric variables before `fit`, from one example of `x`, `y`.

    Under TensorFlow with no distribution strategy, Keras creates them inside the first trace of its train
    step, and a `tf.function` that creates variables is traced twice: a second trace of the whole train step
    (about 1 s on a 2-core CPU for every training). Built here from symbolic shapes, with no step run and no
    random draw, the step is traced once and trains to the same weights. Keras builds them this way itself
    under a distribution strategy and on the other backends.
    """
    if name() != "tensorflow" or getattr(model, "_distribute_strategy", None) is not None:
        return
    model._symbolic_build(data_batch=(x[:1].astype("float32"), y[:1]))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TensorFlow's kernels deterministic."""
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(seed)
    if name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def input_gradient(score: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """d sum(score(x)) / dx as a NumPy array, under the running backend.

    Grad-CAM and filter patterns need gradients with respect to a tensor that is not a weight; each backend
    takes them its own way. Samples are independent at inference, so the sum gives each sample its own gradient.
    """
    return gradient_function(score, compiled=False)(x)[1]


def gradient_function(
    score: Callable[[Any], Any], compiled: bool = True
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """x -> (score(x), d sum(score(x)) / dx), to call many times (gradient ascent): the scores come from the
    same forward pass as the gradient. `compiled`: traced once under JAX (jax.jit) and TensorFlow
    (tf.function), as eager op-by-op passes through a large network are slow."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        def tf_gradient(tensor: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(tensor)
                scores = score(tensor)
                total = tf.reduce_sum(scores)
            return scores, tape.gradient(total, tensor)

        run = tf.function(tf_gradient, reduce_retracing=True) if compiled else tf_gradient
        return lambda x: tuple(t.numpy() for t in run(tf.convert_to_tensor(np.asarray(x, dtype=np.float32))))
    if backend == "jax":
        import jax

        def total_and_scores(v: Any) -> tuple[Any, Any]:
            scores = score(v)
            return scores.sum(), scores

        grad = jax.value_and_grad(total_and_scores, has_aux=True)
        run = jax.jit(grad) if compiled else grad

        def jax_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            (_, scores), gradient = run(jax.numpy.asarray(np.asarray(x, dtype=np.float32)))
            return np.asarray(scores), np.asarray(gradient)

        return jax_gradient
    if backend == "torch":
        import torch

        def torch_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            tensor = torch.tensor(np.asarray(x, dtype=np.float32), requires_grad=True)
            scores = score(tensor)
            scores.sum().backward()
            return scores.detach().cpu().numpy(), tensor.grad.detach().cpu().numpy()

        return torch_gradient
    raise NotImplementedError(f"input gradients under the {backend} backend")
