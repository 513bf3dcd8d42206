"""T5 encoder-decoder in Flax linen, configured by a :class:`T5Config` (layers: ``t5_layers``).

Pre-norm blocks with RMS layer norm, no biases, relative position biases
computed once per stack and shared by its layers, no attention scaling (T5
folds 1/sqrt(head_dim) into the query initialisation). Every parameter carries
logical axis names and the main activations logical sharding constraints; the
names are mapped to mesh axes only in :mod:`cdc_jax.models.partitioning`.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.models.t5_config import T5Config
from cdc_jax.models.t5_layers import (MASK_BIAS, Attention, Embed, MlpBlock, RelativePositionBias,
                                      RMSNorm, constrain, dense, fan_in, param_init)

Array = jax.Array


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
    return constrain(x + dropout(h, deterministic=deterministic), ("batch", "length", "embed"))


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
    return constrain(y + dropout(h, deterministic=deterministic), ("batch", "length", "embed"))


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
    x = constrain(x, ("batch", "length", "embed"))
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
    y = constrain(y, ("batch", "length", "embed"))
    for i in range(cfg.num_decoder_layers):
      y = DecoderLayer(cfg, name=f"layers_{i}")(
          y, encoded, self_bias, cross_bias, deterministic=deterministic, decode=decode,
          decode_position=decode_position)
    y = dropout(_norm(cfg, "decoder_norm")(y), deterministic=deterministic)
    if cfg.logits_via_embedding:
      # Tied output layer: rescale as T5 (and HF) do, since the embedding has unit scale.
      logits = self.shared_embedding.attend(y * cfg.emb_dim**-0.5)
    else:
      kernel = self.param("logits_kernel", param_init(fan_in(), ("embed", "vocab")),
                          (cfg.emb_dim, cfg.vocab_size), jnp.float32)
      logits = dense(y, kernel.astype(cfg.compute_dtype))
    return constrain(logits, ("batch", "length", "vocab"))


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
