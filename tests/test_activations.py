"""The SwiGLU our models use on an x86 CPU: MLX's own to float32 noise, value and gradient, at every scale."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models import activations as mlx_lm_activations

from slearn_mlx import activations
from slearn_mlx.models import load_model


def silu_float64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """silu and its derivative, in float64."""
    sigmoid = 1 / (1 + np.exp(-x))
    return x * sigmoid, sigmoid * (1 + x * (1 - sigmoid))


def test_swiglu_is_silu_times_x_to_float32_noise_with_its_gradient():
    gate = mx.linspace(-40, 40, 400_001)
    x = mx.random.normal(gate.shape)
    value, derivative = silu_float64(np.asarray(gate, dtype=np.float64))
    got = np.asarray(activations.swiglu(gate, x), dtype=np.float64)
    assert np.abs(got - value * np.asarray(x)).max() < 2e-5
    ours = mx.grad(lambda g: activations.swiglu(g, mx.ones_like(g)).sum())(gate)
    theirs = mx.grad(lambda g: (nn.silu(g)).sum())(gate)
    assert np.abs(np.asarray(ours) - derivative).max() < 5e-6
    assert np.abs(np.asarray(theirs) - derivative).max() < 5e-6


def test_saturates_at_both_ends_as_silu_does():
    got = activations.swiglu(mx.array([-1e4, -100.0, 0.0, 100.0, 1e4]), mx.ones(5))
    assert np.allclose(np.asarray(got), [0, 0, 0, 100, 1e4], atol=1e-3)


@pytest.mark.skipif(not activations.replaces_swiglu(), reason="MLX has SIMD exp on this device")
def test_loaded_models_use_it_and_give_the_logits_mlx_lm_gives(tiny_model):
    model, _ = load_model(tiny_model)
    module = __import__(type(model).__module__, fromlist=["swiglu"])
    assert module.swiglu is activations.swiglu
    tokens = mx.array([[1, 5, 9, 13, 2, 7]])
    ours = model(tokens)
    module.swiglu = mlx_lm_activations.swiglu
    try:
        theirs = model(tokens)
    finally:
        module.swiglu = activations.swiglu
    assert mx.allclose(ours, theirs, atol=1e-4).item()
