"""T5 encoder-decoder in Flax linen, configured by a :class:`T5Config`.

Pre-norm blocks with RMS layer norm, no biases, relative position biases
computed once per stack and shared by its layers, no attention scaling (T5
folds 1/sqrt(head_dim) into the query initialisation). Every parameter carries
logical axis names and the main activations logical sharding constraints; the
names are mapped to mesh axes only in :mod:`cdc_jax.partitioning`.

Token id 0 is padding (and the decoder start token), so masks come from
``tokens > 0``; packed rows add segment ids. Relative positions are taken from
array indices, which equal in-segment positions because packed segments are
contiguous, so ``*_positions`` features are not needed.

Decoding with ``decode=True`` uses the flax 'cache' collection: a first call
with full-length decoder inputs (the cache is absent) creates zeroed
self-attention caches, the cross-attention keys/values of the encoder output
and a step counter; each later call takes one decoder token per row.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.models.t5_config import T5Config

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


def _param_init(init: Callable, names: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(init, names)


def _constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  # A no-op unless traced under partitioning.activate (rules + mesh).
  return nn.with_logical_constraint(x, names)


def _dense(x: Array, kernel: Array, *, contract: int = 1) -> Array:
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


def _fan_in(in_axis: int | Sequence[int] = -2, out_axis: int | Sequence[int] = -1,
            scale: float = 1.0) -> Callable:
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
    scale = self.param("scale", _param_init(nn.initializers.ones_init(), ("embed",)),
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
        "embedding", _param_init(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
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
        _param_init(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
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
    return self.param(name, _param_init(init, names), shape, jnp.float32).astype(self.dtype)

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
                            _fan_in(**in_out, scale=1.0 / self.head_dim))
    k_kernel = self._kernel("key", heads_shape, heads_names, _fan_in(**in_out))
    v_kernel = self._kernel("value", heads_shape, heads_names, _fan_in(**in_out))
    o_kernel = self._kernel("out", (self.num_heads, self.head_dim, emb),
                            ("heads", "kv", "embed"), _fan_in(in_axis=(0, 1), out_axis=2))
    names = ("batch", "length", "heads", "kv")

    def project(x: Array, kernel: Array) -> Array:
      return _constrain(_dense(x, kernel), names)

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
    return _constrain(_dense(out, o_kernel, contract=2), ("batch", "length", "embed"))


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
      kernel = self.param(name, _param_init(_fan_in(), ("embed", "mlp")),
                          (emb, self.mlp_dim), jnp.float32)
      h = _ACTIVATIONS[activation](_dense(x, kernel.astype(self.dtype)))
      hidden = h if hidden is None else hidden * h
    hidden = _constrain(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    kernel = self.param("wo", _param_init(_fan_in(), ("mlp", "embed")),
                        (self.mlp_dim, emb), jnp.float32)
    return _constrain(_dense(hidden, kernel.astype(self.dtype)), ("batch", "length", "embed"))


def _attention(config: T5Config, name: str, *, is_cross: bool = False) -> Attention:
  return Attention(num_heads=config.num_heads, head_dim=config.head_dim,
                   dtype=config.compute_dtype, dropout_rate=config.dropout_rate,
                   is_cross=is_cross, name=name)


def _norm(config: T5Config, name: str) -> RMSNorm:
  return RMSNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, name=name)


def _mlp(config: T5Config) -> MlpBlock:
  return MlpBlock(mlp_dim=config.mlp_dim, activations=config.mlp_activations,
                  dtype=config.compute_dtype, dropout_rate=config.dropout_rate, name="mlp")


class EncoderLayer(nn.Module):
  """Self-attention and MLP, each pre-normed and residual."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
    """The next hidden states; ``bias`` holds position bias and mask."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate)
    h = _norm(cfg, "pre_attention_layer_norm")(x)
    h = _attention(cfg, "attention")(h, h, bias, deterministic=deterministic)
    x = x + dropout(h, deterministic=deterministic)
    h = _mlp(cfg)(_norm(cfg, "pre_mlp_layer_norm")(x), deterministic=deterministic)
    return _constrain(x + dropout(h, deterministic=deterministic), ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """Causal self-attention, cross-attention and MLP, each pre-normed and residual."""
  config: T5Config

  @nn.compact
  def __call__(self, y: Array, encoded: Array | None, self_bias: Array, cross_bias: Array, *,
               deterministic: bool, decode: bool, decode_position: Array | None) -> Array:
    """The next hidden states; biases hold position bias (self only) and masks."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate)
    h = _norm(cfg, "pre_self_attention_layer_norm")(y)
    h = _attention(cfg, "self_attention")(h, h, self_bias, deterministic=deterministic,
                                          decode=decode, decode_position=decode_position)
    y = y + dropout(h, deterministic=deterministic)
    h = _norm(cfg, "pre_cross_attention_layer_norm")(y)
    h = _attention(cfg, "encoder_decoder_attention", is_cross=True)(
        h, encoded, cross_bias, deterministic=deterministic, decode=decode)
    y = y + dropout(h, deterministic=deterministic)
    h = _mlp(cfg)(_norm(cfg, "pre_mlp_layer_norm")(y), deterministic=deterministic)
    return _constrain(y + dropout(h, deterministic=deterministic), ("batch", "length", "embed"))


def _mask_bias(mask: Array) -> Array:
  return jnp.where(mask, 0.0, MASK_BIAS).astype(jnp.float32)


def _pair_mask(query_valid: Array, key_valid: Array, query_segments: Array | None,
               key_segments: Array | None) -> Array:
  """(batch, 1, q, k) mask: both positions valid and in the same segment."""
  mask = query_valid[:, :, None] & key_valid[:, None, :]
  if query_segments is not None:
    mask &= query_segments[:, :, None] == key_segments[:, None, :]
  return mask[:, None]


def _relpos(config: T5Config, *, bidirectional: bool) -> RelativePositionBias:
  return RelativePositionBias(
      num_heads=config.num_heads, num_buckets=config.relative_attention_num_buckets,
      max_distance=config.relative_attention_max_distance, bidirectional=bidirectional,
      name="relpos_bias")


class Encoder(nn.Module):
  """Embedding, encoder layers and a final norm."""
  config: T5Config
  shared_embedding: Embed

  @nn.compact
  def __call__(self, tokens: Array, segment_ids: Array | None = None, *,
               deterministic: bool) -> Array:
    """Encoded tokens (batch, length, emb_dim)."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate)
    x = dropout(self.shared_embedding(tokens), deterministic=deterministic)
    x = _constrain(x, ("batch", "length", "embed"))
    positions = jnp.arange(tokens.shape[1])
    valid = tokens > 0
    bias = (_relpos(cfg, bidirectional=True)(positions, positions)
            + _mask_bias(_pair_mask(valid, valid, segment_ids, segment_ids)))
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, name=f"layers_{i}")(x, bias, deterministic=deterministic)
    x = _norm(cfg, "encoder_norm")(x)
    return dropout(x, deterministic=deterministic)


class Decoder(nn.Module):
  """Embedding, decoder layers, final norm and output logits."""
  config: T5Config
  shared_embedding: Embed

  @nn.compact
  def __call__(self, encoded: Array | None, encoder_input_tokens: Array,
               decoder_input_tokens: Array, decoder_target_tokens: Array | None = None,
               encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, *, deterministic: bool,
               decode: bool = False) -> Array:
    """Logits (batch, length, vocab) of the token after each decoder input."""
    cfg = self.config
    encoder_valid = encoder_input_tokens > 0
    decode_position = None
    if decode and self.has_variable("cache", "cache_index"):
      # One step: the query sits at cache_index, keys are the cached positions.
      decode_position = self.get_variable("cache", "cache_index")
      key_positions = self.get_variable("cache", "key_positions")
      self.put_variable("cache", "cache_index", decode_position + 1)
      self_bias = (_relpos(cfg, bidirectional=False)(decode_position[None], key_positions)
                   + _mask_bias(key_positions <= decode_position)[None, None, None, :])
      cross_bias = _mask_bias(encoder_valid)[:, None, None, :]
    else:
      length = decoder_input_tokens.shape[1]
      positions = jnp.arange(length, dtype=jnp.int32)
      if decode:
        self.put_variable("cache", "cache_index", jnp.array(0, jnp.int32))
        self.put_variable("cache", "key_positions", positions)
      # The inputs start with pad id 0, so validity comes from the targets.
      decoder_valid = (decoder_target_tokens > 0 if decoder_target_tokens is not None
                       else jnp.ones(decoder_input_tokens.shape, bool))
      causal = positions[:, None] >= positions[None, :]
      self_mask = _pair_mask(decoder_valid, decoder_valid, decoder_segment_ids,
                             decoder_segment_ids) & causal[None, None]
      self_bias = _relpos(cfg, bidirectional=False)(positions, positions) + _mask_bias(self_mask)
      cross_bias = _mask_bias(_pair_mask(decoder_valid, encoder_valid, decoder_segment_ids,
                                         encoder_segment_ids))

    dropout = nn.Dropout(cfg.dropout_rate)
    y = dropout(self.shared_embedding(decoder_input_tokens), deterministic=deterministic)
    y = _constrain(y, ("batch", "length", "embed"))
    for i in range(cfg.num_decoder_layers):
      y = DecoderLayer(cfg, name=f"layers_{i}")(
          y, encoded, self_bias, cross_bias, deterministic=deterministic, decode=decode,
          decode_position=decode_position)
    y = dropout(_norm(cfg, "decoder_norm")(y), deterministic=deterministic)
    if cfg.logits_via_embedding:
      # Tied output layer: rescale as T5 (and HF) do, since the embedding has unit scale.
      logits = self.shared_embedding.attend(y * cfg.emb_dim**-0.5)
    else:
      kernel = self.param("logits_kernel", _param_init(_fan_in(), ("embed", "vocab")),
                          (cfg.emb_dim, cfg.vocab_size), jnp.float32)
      logits = _dense(y, kernel.astype(cfg.compute_dtype))
    return _constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
  """The T5 encoder-decoder; ``__call__`` returns decoder logits (batch, length, vocab)."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, cfg.compute_dtype)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None, *,
             enable_dropout: bool = False) -> Array:
    """Encoder output (batch, length, emb_dim)."""
    return self.encoder(encoder_input_tokens, encoder_segment_ids,
                        deterministic=not enable_dropout)

  def decode(self, encoded: Array | None, encoder_input_tokens: Array,
             decoder_input_tokens: Array, decoder_target_tokens: Array | None = None,
             encoder_segment_ids: Array | None = None,
             decoder_segment_ids: Array | None = None, *, enable_dropout: bool = False,
             decode: bool = False) -> Array:
    """Decoder logits; ``encoded`` may be None for decode steps after cache creation."""
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                        decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                        deterministic=not enable_dropout, decode=decode)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None,
               encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, *, enable_dropout: bool = False,
               decode: bool = False) -> Array:
    """Logits of the decoder targets given encoder and (shifted) decoder inputs.

    ``decoder_target_tokens`` only supplies the decoder padding mask (targets
    > 0); without it every decoder position is valid.
    """
    if (encoder_segment_ids is None) != (decoder_segment_ids is None):
      raise ValueError("packed inputs need both encoder_segment_ids and decoder_segment_ids")
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                       enable_dropout=enable_dropout, decode=decode)
