"""A Llama-family decoder (Llama 2/3, SmolLM2) in Flax linen: the teacher and the student.

RoPE (``rotate_half`` convention, as in Hugging Face checkpoints), grouped-query
attention, RMSNorm, SwiGLU MLP, tied or untied embeddings and a fixed-size KV
cache. Every parameter and activation carries logical axis names so a large
teacher shards over a ``(data, model)`` mesh (see ``teacher/sharding.py``).

The cache holds, per layer, keys and values of shape
``[batch, kv_heads, slots, head_dim]``, split along the slots into segments,
a per-slot validity mask and a shared write index. Rows of a batch may be
left-padded: pads are written into the cache but marked invalid, and each
row's RoPE positions are passed explicitly, so a batch of prompts of different
lengths decodes in lock-step. A call may attend to the leading segments only
(``attend_segments``): decoding then reads just the part of the cache filled
so far, where one array would be read whole every step (slicing it copies).

Layouts are chosen for XLA:CPU's matmul kernels: projection weights are
stored ``[out, in]`` as in Hugging Face checkpoints (contracting the last axis
of both operands runs up to 2x faster at decode batch sizes than ``[in, out]``),
and the cache keeps each KV head's keys contiguous over time, so attention is
a batched matmul with no per-step transpose of the cache.

The model computes with injected implementations (``LlamaOps``: the attention
and MLP blocks, the embedding lookup, the LM head and the greedy argmax),
chosen by name from a small registry (``get_ops``). ``"xla"`` is this module's
own and runs anywhere (training included); plugins such as the optional CPU
decode kernels (``cdc_jax.cpu_kernels``, ``"amx"``) register theirs. The
model has no kernel branch of its own.

``LoraConfig`` adds low-rank adapters to named projections (``lora_a``/``lora_b``
beside their ``weight``), for parameter-efficient fine-tuning of a student.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style RoPE frequency scaling (``rope_type: llama3``)."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Shape and numerics of a Llama-family decoder.

  ``dtype`` names the KV-cache and matmul-input dtype; matmuls accumulate in
  float32 and the residual stream, norms, softmax and logits are float32
  ("bfloat16" is mixed precision, "float32" exact). ``param_dtype`` (default
  ``dtype``) stores the weights: "float32" with ``dtype="bfloat16"`` trains on
  float32 master weights with bfloat16 compute.
  """
  vocab_size: int
  hidden: int
  intermediate: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  tie_word_embeddings: bool = True
  max_seq_len: int = 2048
  dtype: str = "float32"
  rope_scaling: RopeScaling | None = None
  param_dtype: str | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden", "intermediate", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"LlamaConfig.num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"LlamaConfig.head_dim={self.head_dim} must be even for RoPE")
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in DTYPES and not (name == "param_dtype" and value is None):
        raise ValueError(f"LlamaConfig.{name}={value!r}: expected one of {sorted(DTYPES)}")

  @property
  def jnp_dtype(self) -> jnp.dtype:
    """The compute (and KV-cache) dtype as a jnp dtype."""
    return DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self) -> jnp.dtype:
    """The stored parameter dtype (``param_dtype``, default ``dtype``)."""
    return DTYPES[self.param_dtype or self.dtype]


@flax.struct.dataclass
class KVCache:
  """Decoding state: per-layer keys/values, slot validity and the write index.

  keys/values: per layer, a tuple of segments ``[batch, kv_heads, size_j, head_dim]``
    that together hold the cache's slots in order.
  valid: ``[batch, cache_length]`` bool, True where a slot holds a real token.
  index: int32 scalar, the next slot to write.
  """
  keys: tuple[tuple[jax.Array, ...], ...]
  values: tuple[tuple[jax.Array, ...], ...]
  valid: jax.Array
  index: jax.Array

  @property
  def length(self) -> int:
    """Number of slots in the cache."""
    return self.valid.shape[1]

  @property
  def segments(self) -> tuple[int, ...]:
    """The slot count of each segment."""
    return tuple(k.shape[2] for k in self.keys[0])


def init_cache(config: LlamaConfig, *, batch: int, length: int,
               segments: Sequence[int] | None = None) -> KVCache:
  """An empty cache for ``batch`` rows and ``length`` slots (``segments``: sizes, default one)."""
  segments = (length,) if segments is None else tuple(segments)
  if sum(segments) != length or min(segments) < 1:
    raise ValueError(f"cache segments {segments} must be positive and sum to length={length}")

  def zeros() -> tuple[jax.Array, ...]:
    return tuple(_constrain(jnp.zeros((batch, config.num_kv_heads, n, config.head_dim),
                                      config.jnp_dtype), _CACHE_AXES) for n in segments)

  return KVCache(
      keys=tuple(zeros() for _ in range(config.num_layers)),
      values=tuple(zeros() for _ in range(config.num_layers)),
      valid=jnp.zeros((batch, length), jnp.bool_),
      index=jnp.zeros((), jnp.int32))


_CACHE_AXES = ("batch", "kv_heads", "cache_length", "kv")


def fill_prefix(cache: KVCache, prefix: KVCache) -> KVCache:
  """``cache`` with the single row of ``prefix`` copied into every row's first slots.

  For a prompt prefix shared by a whole batch: it is prefilled once at batch 1
  and each row then continues from slot ``prefix.index``. The prefix (one
  segment) must fit in the cache's first segment.
  """
  if prefix.length > cache.segments[0]:
    raise ValueError(f"a {prefix.length}-slot prefix does not fit the first cache segment "
                     f"({cache.segments[0]} slots)")

  def put(slots: jax.Array, shared: jax.Array) -> jax.Array:
    shared = jnp.broadcast_to(shared, slots.shape[:1] + shared.shape[1:]).astype(slots.dtype)
    return jax.lax.dynamic_update_slice(slots, shared, (0,) * slots.ndim)

  def layer(segs: tuple[jax.Array, ...], shared: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    return (_constrain(put(segs[0], shared[0]), _CACHE_AXES),) + segs[1:]

  return KVCache(
      keys=tuple(layer(c, p) for c, p in zip(cache.keys, prefix.keys)),
      values=tuple(layer(c, p) for c, p in zip(cache.values, prefix.values)),
      valid=put(cache.valid, prefix.valid),
      index=prefix.index)


def write_cache(cache: jax.Array, update: jax.Array, start: tuple[Any, ...]) -> jax.Array:
  """``cache`` with ``update`` written at ``start`` (a ``dynamic_update_slice``).

  A 16-bit float cache is updated as its uint16 bits (a lossless bitcast):
  XLA:CPU runs a bf16 ``dynamic_update_slice`` by converting the whole layer
  cache to float32 and back every decode step, 14% of the busy time of a
  SmolLM2 batch-32 step (profiled); as uint16, +3-5% tokens/s (measured).
  """
  update = update.astype(cache.dtype)
  if cache.dtype.itemsize != 2 or not jnp.issubdtype(cache.dtype, jnp.floating):
    return jax.lax.dynamic_update_slice(cache, update, start)
  bits = jax.lax.dynamic_update_slice(jax.lax.bitcast_convert_type(cache, jnp.uint16),
                                      jax.lax.bitcast_convert_type(update, jnp.uint16), start)
  return jax.lax.bitcast_convert_type(bits, cache.dtype)


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


def project(x: jax.Array, weight: jax.Array, num_in: int) -> jax.Array:
  """``x[..., *in] -> [..., *out]`` for ``weight [*out, *in]``, accumulating in float32.

  Written as ``weight @ x^T`` then transposed: XLA:CPU keeps the weight as the
  row-major left operand (its stored layout) instead of copying it into a
  transposed buffer, which its layout assignment does for a right-hand
  operand inside the decode loop; the matmul runs up to 2x faster.
  """
  num_out = weight.ndim - num_in
  batch = x.ndim - num_in
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
    return y + self.lora.scale * project(low, b.astype(self.dtype), 1)


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
  k = _constrain(k.transpose(0, 2, 1, 3), _CACHE_AXES)
  v = _constrain(v.astype(dtype).transpose(0, 2, 1, 3), _CACHE_AXES)
  if layer_cache is None:
    keys, values = (k,), (v,)
  else:
    key_segs, value_segs = layer_cache
    offset = write_index - sum(c.shape[2] for c in key_segs[:attend - 1])
    start = (0, 0, offset, 0)
    last_k, last_v = (_constrain(write_cache(c[attend - 1], x, start), _CACHE_AXES)
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


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE, reading and writing a KV cache."""
  config: LlamaConfig
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x, rope, mask, layer_cache, write_index, attend=1):
    """``layer_cache``: (key segments, value segments) or None; ``attend``: segments seen."""
    cfg, lora = self.config, self.lora
    e, h, kv, d = cfg.hidden, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = linear(cfg, lora, "q_proj", (h, d), (e,), ("heads", "kv", "embed"))(x)
    k = linear(cfg, lora, "k_proj", (kv, d), (e,), ("kv_heads", "kv", "embed"))(x)
    v = linear(cfg, lora, "v_proj", (kv, d), (e,), ("kv_heads", "kv", "embed"))(x)
    out, layer_cache = attend_with_cache(q, k, v, rope, mask, layer_cache, write_index, attend,
                                         cfg.jnp_dtype)
    o_proj = linear(cfg, lora, "o_proj", (e,), (h, d), ("embed", "heads", "kv"))
    return o_proj(out), layer_cache


class Mlp(nn.Module):
  """SwiGLU feed-forward block."""
  config: LlamaConfig
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, lora = self.config, self.lora
    e, m = cfg.hidden, cfg.intermediate
    gate = linear(cfg, lora, "gate_proj", (m,), (e,), ("mlp", "embed"))(x)
    up = linear(cfg, lora, "up_proj", (m,), (e,), ("mlp", "embed"))(x)
    hidden = _constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
    return linear(cfg, lora, "down_proj", (e,), (m,), ("embed", "mlp"))(hidden)


class LmHead(nn.Module):
  """Logits: the tied embedding's transpose, or an own ``weight [vocab, hidden]``."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
    cfg = self.config
    if cfg.tie_word_embeddings:
      return project(x, embedding.astype(cfg.jnp_dtype), 1)
    weight = self.param("weight", _dense_init(("vocab", "embed")), (cfg.vocab_size, cfg.hidden),
                        cfg.jnp_param_dtype)
    return project(x, weight.astype(cfg.jnp_dtype), 1)


def take_rows(table: jax.Array, tokens: jax.Array, config: LlamaConfig) -> jax.Array:
  """The embedding lookup: rows of ``table`` for ``tokens``, as float32."""
  del config
  return jnp.take(table, tokens, axis=0).astype(jnp.float32)


def greedy_tokens(logits: jax.Array) -> jax.Array:
  """``argmax`` over the last axis (first index on ties), as two plain reductions.

  XLA:CPU runs argmax as one variadic (value, index) reduction: 2.5 ms for
  [32, 49152] logits, 4% of a SmolLM2 decode step. A max and a min over the
  matching indices took 1.9 ms (profiled).
  """
  best = jnp.max(logits, axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  return jnp.min(jnp.where(logits == best, index, logits.shape[-1]), axis=-1)


@dataclasses.dataclass(frozen=True)
class LlamaOps:
  """The implementations a Llama computes with (hashable: it keys compiled programs).

  attention, mlp: block modules called as ``cls(config, lora=..., name=...)``
    with the call signatures of :class:`Attention` and :class:`Mlp`.
  lm_head: module ``cls(config, name="lm_head")``, called with (x, embedding table).
  embed: ``(table, tokens, config) -> float32 [batch, length, hidden]``.
  argmax: greedy token choice over the last axis of float32 logits.
  segmented_cache: decoding may split the KV cache into phases' segments.
  prepare: ``(params, config) -> params`` in the layout these blocks read
    (e.g. packed weights); None where the model's own layout is used.
  unsupported: ``config -> reason or None``: why these ops cannot run it here.
  training: the ops are differentiable (a student may train on them).
  """
  name: str
  attention: type[nn.Module] = Attention
  mlp: type[nn.Module] = Mlp
  lm_head: type[nn.Module] = LmHead
  embed: Callable[[jax.Array, jax.Array, LlamaConfig], jax.Array] = take_rows
  argmax: Callable[[jax.Array], jax.Array] = greedy_tokens
  segmented_cache: bool = True
  prepare: Callable[[Any, LlamaConfig], Any] | None = None
  unsupported: Callable[[LlamaConfig], str | None] | None = None
  training: bool = True


XLA_OPS = LlamaOps(name="xla")
# Plugins by name: an ops object, or "module:attribute" imported on first use
# (an optional plugin costs nothing until asked for).
_OPS: dict[str, LlamaOps | str] = {"xla": XLA_OPS, "amx": "cdc_jax.cpu_kernels.llama_ops:AMX_OPS"}


def register_ops(ops: LlamaOps | str, *, name: str | None = None) -> None:
  """Makes ``ops`` (or a "module:attribute" path to it) available by name."""
  key = name or (ops.name if isinstance(ops, LlamaOps) else None)
  if not key:
    raise ValueError("register_ops: a 'module:attribute' path needs name=")
  _OPS[key] = ops


def ops_names() -> tuple[str, ...]:
  """Names of the registered implementations."""
  return tuple(_OPS)


def get_ops(name: str) -> LlamaOps:
  """The implementations registered as ``name`` (importing a plugin on first use)."""
  if name not in _OPS:
    raise ValueError(f"unknown Llama ops {name!r}; registered: {sorted(_OPS)}")
  entry = _OPS[name]
  if isinstance(entry, str):
    module, attr = entry.split(":")
    try:
      entry = getattr(importlib.import_module(module), attr)
    except ImportError as e:
      raise ValueError(f"Llama ops {name!r}: its plugin {module} cannot be imported ({e})") from e
    _OPS[name] = entry
  return entry


class DecoderLayer(nn.Module):
  """Pre-norm attention + MLP block on a float32 residual stream."""
  config: LlamaConfig
  ops: LlamaOps = XLA_OPS
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x, rope, mask, layer_cache, write_index, attend=1):
    cfg = self.config
    h = RMSNorm(cfg.rms_norm_eps, cfg.jnp_param_dtype, name="input_norm")(x)
    h, layer_cache = self.ops.attention(cfg, lora=self.lora, name="attn")(
        h, rope, mask, layer_cache, write_index, attend)
    x = _constrain(x + h, ("batch", "length", "embed"))
    h = RMSNorm(cfg.rms_norm_eps, cfg.jnp_param_dtype, name="post_attention_norm")(x)
    x = _constrain(x + self.ops.mlp(cfg, lora=self.lora, name="mlp")(h),
                   ("batch", "length", "embed"))
    return x, layer_cache


class Llama(nn.Module):
  """The decoder. Call with tokens ``[batch, length]``; returns float32 logits.

  Without a cache, ``attention_mask [batch, length]`` (default all True) marks
  real tokens and attention is causal over this chunk; ``segment_ids`` (packed
  rows, 0 = padding) also keeps each example to its own tokens. With a cache,
  the chunk is written at ``cache.index`` and attends to every valid earlier
  slot of the first ``attend_segments`` cache segments (default all), the
  last of which must hold the chunk's slots.
  ``positions`` defaults to each row's count of earlier real tokens.
  ``last_only`` computes logits for the final position only (prefill).
  """
  config: LlamaConfig
  ops: LlamaOps = XLA_OPS
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(
      self,
      tokens: jax.Array,
      *,
      positions: jax.Array | None = None,
      attention_mask: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      cache: KVCache | None = None,
      attend_segments: int | None = None,
      last_only: bool = False,
  ) -> tuple[jax.Array, KVCache | None]:
    cfg = self.config
    batch, length = tokens.shape
    if attention_mask is None:
      attention_mask = (jnp.ones((batch, length), jnp.bool_) if segment_ids is None
                        else segment_ids > 0)
    attention_mask = attention_mask.astype(jnp.bool_)
    if positions is None:
      # Each row's RoPE position counts only its real tokens (left padding skipped).
      offset = 0 if cache is None else jnp.sum(cache.valid, axis=1, keepdims=True)
      positions = jnp.maximum(offset + jnp.cumsum(attention_mask, axis=1) - 1, 0)
    positions = positions.astype(jnp.int32)

    if cache is None:
      write_index = jnp.zeros((), jnp.int32)
      key_valid = attention_mask
      attend, seen = 1, length
    else:
      if segment_ids is not None:
        raise ValueError("segment_ids (packed rows) are for training, not for a KV cache")
      write_index = cache.index
      key_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, write_index))
      attend = len(cache.segments) if attend_segments is None else attend_segments
      if not 1 <= attend <= len(cache.segments):
        raise ValueError(f"attend_segments={attend_segments} for a cache of "
                         f"{len(cache.segments)} segments")
      seen = sum(cache.segments[:attend])
    query_slots = write_index + jnp.arange(length)
    mask = key_valid[:, None, :seen] & (jnp.arange(seen)[None, None, :]
                                        <= query_slots[None, :, None])
    if segment_ids is not None:
      mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])

    embedding = self.param("embed_tokens", _dense_init(("vocab", "embed")),
                           (cfg.vocab_size, cfg.hidden), cfg.jnp_param_dtype)
    x = _constrain(self.ops.embed(embedding, tokens, cfg), ("batch", "length", "embed"))
    rope = rope_tables(positions, rope_inv_freq(cfg))
    new_keys, new_values = [], []
    for i in range(cfg.num_layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, layer_cache = DecoderLayer(cfg, self.ops, self.lora, name=f"layers_{i}")(
          x, rope, mask, layer_cache, write_index, attend)
      if cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    if last_only:
      x = x[:, -1:]
    x = RMSNorm(cfg.rms_norm_eps, cfg.jnp_param_dtype, name="final_norm")(x)
    logits = _constrain(self.ops.lm_head(cfg, name="lm_head")(x, embedding),
                        ("batch", "length", "vocab"))
    if cache is None:
      return logits, None
    return logits, KVCache(
        keys=tuple(new_keys), values=tuple(new_values), valid=key_valid,
        index=write_index + length)


def abstract_params(config: LlamaConfig, *, lora: LoraConfig | None = None) -> object:
  """The boxed (logically partitioned) param tree as ShapeDtypeStructs."""
  model = Llama(config, lora=lora)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))["params"]


def init_params(config: LlamaConfig, rng: jax.Array, *, lora: LoraConfig | None = None) -> object:
  """Random parameters (unboxed), e.g. for tests with tiny configs."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return nn.unbox(Llama(config, lora=lora).init(rng, tokens)["params"])
