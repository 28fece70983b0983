"""Building blocks shared by every family: projections, norms, embeddings.

Every projection goes through `matmul`, whose custom VJP computes the weight gradient on
explicitly flattened 2-D operands. With XLA's default VJP the CPU layout pass asks for the
upstream gradient transposed and recomputes e.g. the GELU backward column by column; the
explicit form is the same math and makes the train step 1.25x faster on the CPU
(benchmarks/README.md). Matmul inputs are cast to the compute dtype with fp32 accumulation
and fp32 outputs, so the residual stream, norms and softmax stay in fp32.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Axes = tuple[str | None, ...]


def _dot(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
  """a [..., K] @ b [K, N] with inputs in `dtype`, accumulated and returned in fp32."""
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype),
                             (((a.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x_NxK: jax.Array, w_KxM: jax.Array, dtype=jnp.float32) -> jax.Array:
  """x [..., K] @ w [K, M] -> fp32 [..., M], with a CPU-friendly backward."""
  return _dot(x_NxK, w_KxM, dtype)


def _matmul_fwd(x, w, dtype):
  return _dot(x, w, dtype), (x, w)


def _weight_grad(x_NxK: jax.Array, g_NxM: jax.Array, dtype) -> jax.Array:
  """dW = x^T g [K, M], with the transpose materialised on the CPU.

  XLA folds a transpose into the dot, and XLA:CPU hands a dot that contracts the leading dims
  to Eigen at about half YNNPACK's speed. So the smaller operand is transposed explicitly (the
  barrier keeps XLA from folding it back): x^T g when x is smaller, else (g^T x)^T. For the
  vocabulary-sized products (LM head, ponder mixture) this halves the weight-gradient time.
  """
  if jax.default_backend() != "cpu":
    return _dot(x_NxK.T, g_NxM, dtype)
  barrier = jax.lax.optimization_barrier
  if x_NxK.size <= g_NxM.size:
    return _dot(barrier(x_NxK.T), g_NxM, dtype)
  return barrier(_dot(barrier(g_NxM.T), x_NxK, dtype)).T


def _matmul_bwd(dtype, residuals, g):
  x, w = residuals
  k, m = w.shape
  dx = _dot(g, w.T, dtype).astype(x.dtype)
  dw = _weight_grad(x.reshape(-1, k), g.reshape(-1, m), dtype).astype(w.dtype)
  return dx, dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def param_with_axes(module: nn.Module, name: str, init, shape: Sequence[int], axes: Axes):
  """A fp32 parameter whose logical axis names travel with it (for sharding rules)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)


class Dense(nn.Module):
  """y = x @ W (+ b), contracting the last `len(in_shape)` dims of x.

  `in_shape`/`out_shape` may be multi-dimensional (e.g. out (heads, head_dim)); the kernel has
  shape in_shape + out_shape with logical axes `in_axes + out_axes`.
  """
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  in_axes: Axes
  out_axes: Axes
  use_bias: bool = False
  std: float = 0.02
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = param_with_axes(self, "kernel", truncated_normal(self.std),
                             self.in_shape + self.out_shape, self.in_axes + self.out_axes)
    n_in, k, m = len(self.in_shape), math.prod(self.in_shape), math.prod(self.out_shape)
    batch_shape = x.shape[:x.ndim - n_in]
    y = matmul(x.reshape(*batch_shape, k), kernel.reshape(k, m), jnp.dtype(self.dtype))
    y = y.reshape(*batch_shape, *self.out_shape)
    if self.use_bias:
      y = y + param_with_axes(self, "bias", nn.initializers.zeros, self.out_shape, self.out_axes)
    return y


def truncated_normal(std: float):
  """Normal(0, std) truncated at +-3 std, as PonderLM and Hugging Face initialise weights."""
  return nn.initializers.truncated_normal(stddev=std, lower=-3.0, upper=3.0)


class Norm(nn.Module):
  """LayerNorm (scale and bias) or RMSNorm (scale only), computed in fp32."""
  kind: str  # 'layernorm' | 'rmsnorm'
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    d = x_BxLxD.shape[-1]
    x = x_BxLxD.astype(jnp.float32)
    scale = param_with_axes(self, "scale", nn.initializers.ones, (d,), ("norm",))
    if self.kind == "rmsnorm":
      return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * scale
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    bias = param_with_axes(self, "bias", nn.initializers.zeros, (d,), ("norm",))
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
