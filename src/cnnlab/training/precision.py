"""A recipe's `precision`: the dtype policy its model trains in, and the float32 model that is saved.

Mixed bfloat16 keeps the weights in float32 and computes in bfloat16. It pays only where the hardware has
bfloat16 arithmetic: a GPU of compute capability 8.0 or later, or a CPU with AVX-512 BF16 or AMX under
TensorFlow (oneDNN); elsewhere bfloat16 is emulated and slower than float32, so "auto" trains in float32
there. The saved model always computes in float32, so evaluating or explaining it never depends on the
machine that trained it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras

from cnnlab.params import Precision
from cnnlab.training import backend

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@functools.cache
def native_bfloat16() -> bool:
    """Whether this machine computes bfloat16 natively for the backend in use."""
    gpu = backend.first_gpu()
    if gpu is not None:
        return gpu.capability >= 8.0
    return backend.name() == "tensorflow" and bool(cpu_flags() & set(BF16_CPU_FLAGS))


def policy_name(precision: Precision) -> str:
    """The Keras dtype policy a recipe's `precision` trains in on this machine."""
    if precision == "auto":
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    return precision


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under the dtype policy `name` (Keras keeps one global policy), then restore it."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def is_float32(model: keras.Model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers(include_self=False))


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` with every layer computing in float32 and the same weights (mixed-precision weights are
    float32 already); `model` itself if it computes in float32."""
    if is_float32(model):
        return model

    def in_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    with dtype_policy("float32"):
        copy = keras.models.clone_model(model, clone_function=in_float32)
    copy.set_weights(model.get_weights())
    return copy
