"""The layers of the T5 encoder-decoder (:mod:`cdc_jax.models.t5`), in Flax linen.

RMS layer norm, the shared token embedding (also the output projection),
relative position biases and their buckets, multi-head attention with a
decoding cache, and the (gated) MLP. No biases and no attention scaling (T5
folds 1/sqrt(head_dim) into the query initialisation). Every parameter carries
logical axis names and the main activations logical sharding constraints; the
names are mapped to mesh axes only in :mod:`cdc_jax.models.partitioning`.
"""


from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array
# Additive bias of a masked attention logit; finite so fully masked (padding)
# rows give a uniform softmax instead of NaN.
MASK_BIAS = -1e10

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


def param_init(init: Callable, names: tuple[str | None, ...]) -> Callable:
  """``init`` that names the parameter's axes (``names``) for the partitioning rules."""
  return nn.with_logical_partitioning(init, names)


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  """``x`` with a sharding constraint on its logical axes ``names``."""
  # A no-op unless traced under partitioning.activate (rules + mesh).
  return nn.with_logical_constraint(x, names)


def dense(x: Array, kernel: Array, *, contract: int = 1) -> Array:
  """Contracts the last ``contract`` axes of ``x`` with the first ones of ``kernel``.

  The token axes (all other axes of ``x``) are flattened into one first:
  XLA:CPU gives the weight gradient of a contraction over two token axes
  (batch, length) a transposed copy of the output gradient and a slow dot
  (3x slower for the output layer of a tiny model); over one token axis it
  is a plain matrix product.
  """
  lead, features, out = x.shape[:-contract], x.shape[-contract:], kernel.shape[contract:]
  y = jnp.dot(x.reshape(math.prod(lead), math.prod(features)),
              kernel.reshape(math.prod(features), math.prod(out)))
  return y.reshape(lead + out)


def fan_in(in_axis: int | Sequence[int] = -2, out_axis: int | Sequence[int] = -1,
           scale: float = 1.0) -> Callable:
  """T5's truncated-normal initialiser scaled by the fan-in of ``in_axis``."""
  return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal",
                                          in_axis=in_axis, out_axis=out_axis)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """Bucket of each ``key_position - query_position``, as in T5.

  Half the buckets (or all, if unidirectional) are exact small distances, the
  rest grow logarithmically up to ``max_distance``. A unidirectional bucket
  only distinguishes keys at or before the query.
  """
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # Same float32 operation order as the reference so boundaries agree; the
  # maximum avoids log(0) in the branch that `where` discards.
  scaled = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact)
  scaled = scaled / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  if_large = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), num_buckets - 1)
  return buckets + jnp.where(is_small, distance, if_large)


class RMSNorm(nn.Module):
  """T5 layer norm: rescale by the root mean square, no centring, no bias."""
  epsilon: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``x`` normalised over its last axis, in the compute dtype."""
    scale = self.param("scale", param_init(nn.initializers.ones_init(), ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale).astype(self.dtype)


class Embed(nn.Module):
  """Token embedding, shared by encoder, decoder and (if tied) the output layer."""
  vocab_size: int
  features: int
  dtype: jnp.dtype

  def setup(self):
    self.embedding = self.param(
        "embedding", param_init(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
        (self.vocab_size, self.features), jnp.float32)

  def __call__(self, tokens: Array) -> Array:
    """Embeddings (..., features) of integer ``tokens``."""
    return jnp.take(self.embedding.astype(self.dtype), tokens, axis=0)

  def attend(self, x: Array) -> Array:
    """Logits of ``x`` against every embedding row."""
    # One token axis, for the reason given in _dense.
    tokens = x.reshape(-1, x.shape[-1])
    logits = jnp.einsum("te,ve->tv", tokens, self.embedding.astype(self.dtype))
    return logits.reshape(x.shape[:-1] + (self.vocab_size,))


class RelativePositionBias(nn.Module):
  """Per-head bias from the bucketed relative position of key and query."""
  num_heads: int
  num_buckets: int
  max_distance: int
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """Bias of shape (1, heads, len(query_positions), len(key_positions)), float32."""
    table = self.param(
        "rel_embedding",
        param_init(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    buckets = relative_position_bucket(
        key_positions[None, :] - query_positions[:, None], bidirectional=self.bidirectional,
        num_buckets=self.num_buckets, max_distance=self.max_distance)
    return jnp.take(table, buckets, axis=1)[None]


class Attention(nn.Module):
  """Multi-head dot-product attention without biases or logit scaling.

  In decode mode a self-attention layer keeps all keys/values of the steps so
  far in 'cache'; a cross-attention layer projects the encoder output once,
  on the cache-creating call, and reads it from 'cache' afterwards.
  """
  num_heads: int
  head_dim: int
  dtype: jnp.dtype
  dropout_rate: float
  is_cross: bool = False

  def _kernel(self, name: str, shape: tuple[int, ...], names: tuple[str, ...],
              init: Callable) -> Array:
    return self.param(name, param_init(init, names), shape, jnp.float32).astype(self.dtype)

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None, bias: Array, *,
               deterministic: bool, decode: bool = False,
               decode_position: Array | None = None) -> Array:
    """Attention output (batch, q_length, emb) given an additive float32 ``bias``."""
    emb = inputs_q.shape[-1]
    heads_shape = (emb, self.num_heads, self.head_dim)
    heads_names = ("embed", "heads", "kv")
    in_out = {"in_axis": 0, "out_axis": (1, 2)}
    # T5 folds the 1/sqrt(head_dim) of dot-product attention into the query init.
    q_kernel = self._kernel("query", heads_shape, heads_names,
                            fan_in(**in_out, scale=1.0 / self.head_dim))
    k_kernel = self._kernel("key", heads_shape, heads_names, fan_in(**in_out))
    v_kernel = self._kernel("value", heads_shape, heads_names, fan_in(**in_out))
    o_kernel = self._kernel("out", (self.num_heads, self.head_dim, emb),
                            ("heads", "kv", "embed"), fan_in(in_axis=(0, 1), out_axis=2))
    names = ("batch", "length", "heads", "kv")

    def project(x: Array, kernel: Array) -> Array:
      return constrain(dense(x, kernel), names)

    query = project(inputs_q, q_kernel)
    if self.is_cross and decode and self.has_variable("cache", "cached_key"):
      key = self.get_variable("cache", "cached_key")
      value = self.get_variable("cache", "cached_value")
    else:
      source = inputs_q if not self.is_cross else inputs_kv
      key, value = project(source, k_kernel), project(source, v_kernel)
      if decode and self.is_cross:
        self.put_variable("cache", "cached_key", key)
        self.put_variable("cache", "cached_value", value)
      elif decode and self.has_variable("cache", "cached_key"):
        start = (0, decode_position, 0, 0)
        key = jax.lax.dynamic_update_slice(self.get_variable("cache", "cached_key"), key, start)
        value = jax.lax.dynamic_update_slice(
            self.get_variable("cache", "cached_value"), value, start)
        self.put_variable("cache", "cached_key", key)
        self.put_variable("cache", "cached_value", value)
      elif decode:
        # Cache-creating call: room for every position of the full-length input.
        self.put_variable("cache", "cached_key", jnp.zeros_like(key))
        self.put_variable("cache", "cached_value", jnp.zeros_like(value))

    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) + bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return constrain(dense(out, o_kernel, contract=2), ("batch", "length", "embed"))


class MlpBlock(nn.Module):
  """Position-wise MLP; several activations are multiplied (gated variants)."""
  mlp_dim: int
  activations: tuple[str, ...]
  dtype: jnp.dtype
  dropout_rate: float

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    """MLP output with the shape of ``x``."""
    emb = x.shape[-1]
    hidden = None
    for i, activation in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      kernel = self.param(name, param_init(fan_in(), ("embed", "mlp")),
                          (emb, self.mlp_dim), jnp.float32)
      h = _ACTIVATIONS[activation](dense(x, kernel.astype(self.dtype)))
      hidden = h if hidden is None else hidden * h
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    kernel = self.param("wo", param_init(fan_in(), ("mlp", "embed")),
                        (self.mlp_dim, emb), jnp.float32)
    return constrain(dense(hidden, kernel.astype(self.dtype)), ("batch", "length", "embed"))
