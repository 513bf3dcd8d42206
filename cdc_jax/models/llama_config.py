"""The shape and numerics of a Llama-family decoder (``LlamaConfig``)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

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
