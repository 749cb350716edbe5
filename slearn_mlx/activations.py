"""SwiGLU on MLX's x86 CPU backend, from arithmetic that backend runs fast.

MLX's CPU backend has no x86 SIMD yet (ml-explore/mlx#3019): its exp, and with it sigmoid and silu,
runs one element at a time, 27 ns an element on this project's 2-core CPU. In SmolLM2-135M's
MLPs that was a third of a forward pass over a training batch, and a quarter of a decoding step.
tanh as a ratio of polynomials (Eigen's float approximation) needs only multiplies, adds and one
divide, which MLX's compiled kernels run 3 to 5 times faster (compiled for each shape: a shapeless kernel
ran 2.7 times slower, while a new shape's kernel took 6 ms to make); silu(x) = x (1 + tanh(x/2)) / 2 from
it was within 3e-6 of silu computed in float64 over [-30, 30], MLX's own within 1.4e-6; the tests hold
swiglu to 2e-5 and its gradient to 5e-6 (tests/test_activations.py).

mlx-lm's models call `swiglu` from `mlx_lm.models.activations` by the name their own module
imported, so `use_fast_swiglu` points that name at ours (mlx_lm_internals.replace_swiglu), for the
architecture of the model given.
"""

import os
import platform

import mlx.core as mx

from .mlx_lm_internals import replace_swiglu

# tanh(x) = x P(x^2) / Q(x^2) on [-7.9, 7.9], where float32 tanh reaches +-1 (Eigen's ptanh_float).
TANH_NUMERATOR = [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                  1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03]
TANH_DENOMINATOR = [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03]
TANH_SATURATES = 7.90531110763549805


def polynomial(coefficients: list[float], x: mx.array) -> mx.array:
    result = coefficients[0]
    for c in coefficients[1:]:
        result = result * x + c
    return result


def tanh(x: mx.array) -> mx.array:
    x = mx.clip(x, -TANH_SATURATES, TANH_SATURATES)
    x2 = x * x
    return x * polynomial(TANH_NUMERATOR, x2) / polynomial(TANH_DENOMINATOR, x2)


@mx.compile
def sigmoid(x: mx.array) -> mx.array:
    return 0.5 + 0.5 * tanh(0.5 * x)


@mx.compile
def swiglu_value(gate: mx.array, x: mx.array) -> mx.array:
    return gate * sigmoid(gate) * x


@mx.compile
def swiglu_gradients(gate: mx.array, x: mx.array, cotangent: mx.array) -> tuple[mx.array, mx.array]:
    s = sigmoid(gate)
    return cotangent * x * s * (1 + gate * (1 - s)), cotangent * gate * s


@mx.custom_function
def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """mlx-lm's swiglu, silu(gate) * x, through the tanh above."""
    return swiglu_value(gate, x)


@swiglu.vjp
def swiglu_vjp(primals, cotangent, output):
    # silu's own derivative, s (1 + gate (1 - s)): differentiating the ratio of polynomials would
    # run some twenty element-wise operations, three times slower than MLX's sigmoid.
    return swiglu_gradients(*primals, cotangent)


KEEP_SWIGLU_ENV = "SLEARN_MLX_KEEP_SWIGLU"  # "1": mlx-lm's own, to compare (benchmarks/blas.py)


def replaces_swiglu() -> bool:
    """MLX computes on an x86 CPU, with no SIMD exp there, and the user did not ask to keep mlx-lm's."""
    return (mx.default_device() == mx.cpu and platform.machine().lower() in ("x86_64", "amd64")
            and os.environ.get(KEEP_SWIGLU_ENV) != "1")


def use_fast_swiglu(model) -> None:
    """Point the model's architecture at our swiglu where replaces_swiglu() and the architecture calls mlx-lm's."""
    if replaces_swiglu():
        replace_swiglu(model, swiglu)
