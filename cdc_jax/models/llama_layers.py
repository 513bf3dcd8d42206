"""The Llama's building blocks: RoPE, projections (with LoRA adapters), RMSNorm, attention.

Layouts are chosen for XLA:CPU's matmul kernels: projection weights are
stored ``[out, in]`` as in Hugging Face checkpoints (contracting the last axis
of both operands runs up to 2x faster at decode batch sizes than ``[in, out]``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.models.llama_cache import CACHE_AXES, write_cache
from cdc_jax.models.llama_config import LlamaConfig

def _constrain(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
  return nn.with_logical_constraint(x, axes)


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
  """Inverse RoPE frequencies ``[head_dim // 2]`` (float32), with Llama-3 scaling if set."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
  scaling = config.rope_scaling
  if scaling is None:
    return inv_freq.astype(np.float32)
  # Mirrors transformers' _compute_llama3_parameters.
  low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
  high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin ``[batch, length, 1, head_dim]`` (float32) for ``positions [batch, length]``.

  Built once per forward pass and passed to every layer (XLA may still fuse
  the cheap cos/sin into each layer's consumers).
  """
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x [batch, length, heads, head_dim]`` by the ``rope_tables`` of its positions."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  xf = x.astype(jnp.float32)
  return (xf * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def _dense_init(axes: tuple[str, ...]) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), axes)


# Rows at which ``project`` switches to ``x @ weight^T`` (decode batches stay below).
MANY_ROWS = 256


@jax.custom_vjp
def _rows_by_weight(x: jax.Array, weight: jax.Array) -> jax.Array:
  """``x [rows, in] @ weight [out, in]^T`` accumulated in float32.

  The VJP is written by hand so that XLA:CPU sees the weight gradient as one
  2-D dot contracting the rows of ``dy [rows, out]`` and ``x [rows, in]``. The
  autodiff transpose of the same product over ``[batch, length, ...]`` operands
  contracts two row axes; layout assignment then writes a transposed copy of
  the big ``dy`` before a YNNPACK dot, in a loop fusion that runs at about
  130 MB/s (a third of a decoder layer's backward in the SmolLM2 LoRA step;
  docs/benchmarks.md has the profile and the measured step times).
  """
  return jax.lax.dot_general(x, weight, (((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _rows_by_weight_fwd(x: jax.Array, weight: jax.Array):
  return _rows_by_weight(x, weight), (x, weight)


def _rows_by_weight_bwd(residuals, dy: jax.Array):
  x, weight = residuals
  dx = jax.lax.dot_general(dy.astype(weight.dtype), weight, (((1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
  dweight = jax.lax.dot_general(dy.astype(x.dtype), x, (((0,), (0,)), ((), ())),
                                preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dweight.astype(weight.dtype)


_rows_by_weight.defvjp(_rows_by_weight_fwd, _rows_by_weight_bwd)


def project(x: jax.Array, weight: jax.Array, num_in: int) -> jax.Array:
  """``x[..., *in] -> [..., *out]`` for ``weight [*out, *in]``, accumulating in float32.

  Few rows (decoding: one token per row) are written as ``weight @ x^T`` then
  transposed: XLA:CPU keeps the weight as the row-major left operand (its
  stored layout) instead of copying it into a transposed buffer, which its
  layout assignment does for a right-hand operand inside the decode loop; the
  matmul runs up to 2x faster. Many rows (training, prefill) are flattened to
  one 2-D ``x @ weight^T`` with a hand-written VJP (``_rows_by_weight``): the
  transposes of the other form and of its autodiff gradients cost more there.
  """
  num_out = weight.ndim - num_in
  batch = x.ndim - num_in
  if math.prod(x.shape[:batch]) >= MANY_ROWS:
    out_shape, in_size = weight.shape[:num_out], math.prod(weight.shape[num_out:])
    y = _rows_by_weight(x.astype(weight.dtype).reshape(-1, in_size),
                        weight.reshape(-1, in_size))
    return y.reshape(x.shape[:batch] + out_shape)
  dims = ((tuple(range(num_out, weight.ndim)), tuple(range(batch, x.ndim))), ((), ()))
  y = jax.lax.dot_general(weight, x.astype(weight.dtype), dims,
                          preferred_element_type=jnp.float32)
  return y.transpose(tuple(range(num_out, num_out + batch)) + tuple(range(num_out)))


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters: a target projection computes ``W x + (alpha / rank) * B A dropout(x)``.

  ``A [rank, *in]`` starts uniform in +-1/sqrt(in) and ``B [*out, rank]`` at zero,
  so a fresh adapter leaves the model unchanged. Adapters are float32 (master
  weights) and compute in the model's dtype.
  """
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

  def __post_init__(self):
    if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
      raise ValueError(f"LoraConfig.rank must be a positive int, got {self.rank!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
    unknown = sorted(set(self.targets) - set(PROJECTIONS))
    if unknown or not self.targets:
      raise ValueError(f"LoraConfig.targets {tuple(self.targets)}: expected a non-empty subset "
                       f"of {PROJECTIONS}" + (f" (unknown: {unknown})" if unknown else ""))

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _lora_a_init(num_in: int) -> nn.initializers.Initializer:
  bound = 1.0 / math.sqrt(num_in)
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


class Linear(nn.Module):
  """``x[..., *in_shape] -> [..., *out_shape]`` without bias, accumulating in float32.

  The ``weight`` is stored ``out_shape + in_shape`` (Hugging Face's ``[out, in]``)
  in ``param_dtype``. Inputs and weight are cast to ``dtype`` and the product
  comes out in float32: with bfloat16 this is the bf16 x bf16 -> f32 dot that
  XLA:CPU runs on its fast (YNNPACK/AMX) kernels, and the residual stream
  stays float32. With ``lora``, adapters ``lora_a``/``lora_b`` add their
  low-rank update (dropout on their input while a 'dropout' rng is given).
  """
  out_shape: tuple[int, ...]
  in_shape: tuple[int, ...]
  axes: tuple[str, ...]
  dtype: jnp.dtype
  param_dtype: jnp.dtype | None = None
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", _dense_init(self.axes), self.out_shape + self.in_shape,
                        self.param_dtype or self.dtype)
    num_in = len(self.in_shape)
    y = project(x, weight.astype(self.dtype), num_in)
    if self.lora is None:
      return y
    out_axes, in_axes = self.axes[:len(self.out_shape)], self.axes[len(self.out_shape):]
    a = self.param("lora_a", nn.with_logical_partitioning(
        _lora_a_init(math.prod(self.in_shape)), ("lora_rank",) + in_axes),
        (self.lora.rank,) + self.in_shape, jnp.float32)
    b = self.param("lora_b", nn.with_logical_partitioning(
        nn.initializers.zeros, out_axes + ("lora_rank",)),
        self.out_shape + (self.lora.rank,), jnp.float32)
    if self.lora.dropout and self.has_rng("dropout"):
      x = nn.Dropout(self.lora.dropout, deterministic=False)(x)
    low = project(x, a.astype(self.dtype), num_in)
    # The scale multiplies the rank-wide `low`, not the [rows, out] update: in the backward pass
    # that spares a full-size multiply of the output gradient per adapter.
    return y + project(low * self.lora.scale, b.astype(self.dtype), 1)


def linear(config: LlamaConfig, lora: LoraConfig | None, name: str, out_shape: tuple[int, ...],
           in_shape: tuple[int, ...], axes: tuple[str, ...]) -> Linear:
  """The projection ``name`` of a block, with adapters where ``lora`` targets it."""
  adapters = lora if lora is not None and name in lora.targets else None
  return Linear(out_shape, in_shape, axes, config.jnp_dtype, config.jnp_param_dtype, adapters,
                name=name)


class RMSNorm(nn.Module):
  """Root-mean-square layer norm with a learned scale; float32 in and out."""
  eps: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        (x.shape[-1],), self.dtype)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return scale.astype(jnp.float32) * x


def attend_with_cache(q: jax.Array, k: jax.Array, v: jax.Array, rope: tuple[jax.Array, jax.Array],
                      mask: jax.Array, layer_cache: Any, write_index: jax.Array, attend: int,
                      dtype: jnp.dtype) -> tuple[jax.Array, Any]:
  """Grouped-query attention of projected ``q [b, t, h, d]``, ``k``/``v [b, t, kv, d]``.

  RoPE is applied here. With ``layer_cache`` (key segments, value segments)
  the chunk is written into the last segment seen, at ``write_index``, and
  ``mask [batch, length, slots seen]`` says which slots each query attends
  to. Returns ``([b, t, h, d] float32, the updated layer cache or None)``.
  """
  batch, length, h, d = q.shape
  kv = k.shape[2]
  groups = h // kv
  # The softmax scale is folded into the queries (fewer elements than the scores).
  q = (apply_rope(q, *rope) * (d ** -0.5)).astype(dtype)
  k = apply_rope(k, *rope).astype(dtype)
  q = _constrain(q, ("batch", "length", "heads", "kv"))
  # [batch, kv_heads, length, head_dim]: the cache layout.
  k = _constrain(k.transpose(0, 2, 1, 3), CACHE_AXES)
  v = _constrain(v.astype(dtype).transpose(0, 2, 1, 3), CACHE_AXES)
  if layer_cache is None:
    keys, values = (k,), (v,)
  else:
    key_segs, value_segs = layer_cache
    offset = write_index - sum(c.shape[2] for c in key_segs[:attend - 1])
    start = (0, 0, offset, 0)
    last_k, last_v = (_constrain(write_cache(c[attend - 1], x, start), CACHE_AXES)
                      for c, x in ((key_segs, k), (value_segs, v)))
    keys = key_segs[:attend - 1] + (last_k,)
    values = value_segs[:attend - 1] + (last_v,)
    layer_cache = (keys + key_segs[attend:], values + value_segs[attend:])

  # Query head i uses kv head i // groups, as transformers' repeat_kv does. The
  # (length, group) queries of one kv head form the rows of one matmul.
  q = q.reshape(batch, length, kv, groups, d).transpose(0, 2, 1, 3, 4)
  q = q.reshape(batch, kv, length * groups, d)
  scores = jnp.concatenate(
      [jnp.einsum("bkmd,bktd->bkmt", q, k, preferred_element_type=jnp.float32) for k in keys],
      axis=-1).reshape(batch, kv, length, groups, -1)
  # A finite floor keeps fully masked (pad) query rows from producing NaNs.
  scores = jnp.where(mask[:, None, :, None, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype).reshape(batch, kv, length * groups, -1)
  out, start = 0.0, 0
  for v in values:  # Each segment's share of the weighted sum.
    size = v.shape[2]
    out = out + jnp.einsum("bkmt,bktd->bkmd", probs[..., start:start + size], v,
                           preferred_element_type=jnp.float32)
    start += size
  out = out.reshape(batch, kv, length, groups, d).transpose(0, 2, 1, 3, 4)
  out = _constrain(out.reshape(batch, length, h, d), ("batch", "length", "heads", "kv"))
  return out, layer_cache
