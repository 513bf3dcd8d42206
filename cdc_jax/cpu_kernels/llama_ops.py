"""The Llama's ``"amx"`` ops: its blocks on the hand-written CPU kernels of ``ffi``.

``pack_params`` turns the model's own params into those these blocks read:
every matmul weight in AMX tile order, q/k/v joined as ``attn/qkv_proj`` and
gate/up as ``mlp/gate_up_proj``. ``amx_unsupported_reason`` says why a config
cannot run on them here (dtype, CPU, compiler, shapes). Decoding only: the
kernels have no gradients, so a student never trains on them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.cpu_kernels import ffi
from cdc_jax.models import llama
from cdc_jax.models.llama import LlamaConfig


def amx_unsupported_reason(config: LlamaConfig) -> str | None:
  """Why ``config`` cannot run on the ``"amx"`` ops here (None if it can)."""
  if config.dtype != "bfloat16" or config.jnp_param_dtype != jnp.bfloat16:
    return f"dtype {config.dtype} (the kernels are bfloat16)"
  reason = ffi.unavailable_reason()
  if reason is not None:
    return reason
  h, kv, d = config.num_heads, config.num_kv_heads, config.head_dim
  for out_size, in_size in (((h + 2 * kv) * d, config.hidden), (config.hidden, h * d),
                            (2 * config.intermediate, config.hidden),
                            (config.hidden, config.intermediate),
                            (config.vocab_size, config.hidden)):
    reason = ffi.matmul_shape_error(out_size, in_size)
    if reason is not None:
      return reason
  return ffi.attention_shape_error(h // kv, d)


def pack_params(params: Any, config: LlamaConfig) -> Any:
  """The params of the ``"amx"`` blocks, from the model's own (unboxed, one device).

  The packed params are new arrays (the caller may drop the originals). Raises
  ValueError with the reason where the kernels cannot run.
  """
  reason = amx_unsupported_reason(config)
  if reason is not None:
    raise ValueError(f"the amx kernels cannot run this model: {reason}")
  ffi.load()
  host = jax.tree.map(np.asarray, params)
  out = dict(host)
  for i in range(config.num_layers):
    layer = dict(host[f"layers_{i}"])
    attn, mlp = layer["attn"], layer["mlp"]
    qkv = np.concatenate([attn[n]["weight"] for n in ("q_proj", "k_proj", "v_proj")], axis=0)
    layer["attn"] = {"qkv_proj": {"weight": ffi.pack_weight(qkv, 1)},
                     "o_proj": {"weight": ffi.pack_weight(attn["o_proj"]["weight"], 2)}}
    layer["mlp"] = {
        "gate_up_proj": {"weight": ffi.pack_gated(mlp["gate_proj"]["weight"],
                                                  mlp["up_proj"]["weight"])},
        "down_proj": {"weight": ffi.pack_weight(mlp["down_proj"]["weight"], 1)}}
    out[f"layers_{i}"] = layer
  if config.tie_word_embeddings:
    out["embed_tokens"] = ffi.pack_weight(host["embed_tokens"], 1)
  else:
    out["lm_head"] = {"weight": ffi.pack_weight(host["lm_head"]["weight"], 1)}
  return jax.tree.map(jnp.asarray, out)  # One device copy of every leaf.


def _packed(module: nn.Module, shape: tuple[int, ...]) -> jax.Array:
  # Packed weights are never sharded (one device): no logical axis names.
  return module.param("weight", nn.initializers.zeros, shape, jnp.bfloat16)


class PackedLinear(nn.Module):
  """``x[..., *in] -> [..., *out]`` (float32) on a packed bf16 weight ``[*out, *in]``."""
  out_shape: tuple[int, ...]
  in_shape: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return ffi.matmul(x, _packed(self, self.out_shape + self.in_shape), len(self.in_shape))


def _no_lora(lora: llama.LoraConfig | None) -> None:
  if lora is not None:
    raise ValueError("the amx ops run decoding only; merge LoRA adapters first")


class AmxAttention(nn.Module):
  """Attention with q/k/v in one matmul; a decode step fuses RoPE, the cache write and attention."""
  config: LlamaConfig
  lora: llama.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, rope, mask, layer_cache, write_index, attend=1):
    _no_lora(self.lora)
    cfg = self.config
    e, h, kv, d = cfg.hidden, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    o_proj = PackedLinear((e,), (h, d), name="o_proj")
    qkv = PackedLinear((h + 2 * kv, d), (e,), name="qkv_proj")(x)
    batch, length = x.shape[:2]
    if length == 1 and layer_cache is not None and len(layer_cache[0]) == 1 and attend == 1:
      # Decode: one call that reads only the slots filled so far.
      (key_cache,), (value_cache,) = layer_cache
      out, key_cache, value_cache = ffi.decode_attention(
          qkv[:, 0], rope[0][:, 0, 0], rope[1][:, 0, 0], key_cache, value_cache, mask[:, 0],
          write_index, groups=h // kv, scale=d ** -0.5)
      return o_proj(out.reshape(batch, 1, h, d)), ((key_cache,), (value_cache,))
    q, k, v = qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
    out, layer_cache = llama.attend_with_cache(q, k, v, rope, mask, layer_cache, write_index,
                                               attend, cfg.jnp_dtype)
    return o_proj(out), layer_cache


class AmxMlp(nn.Module):
  """SwiGLU with gate, up and silu in one call, then the down projection."""
  config: LlamaConfig
  lora: llama.LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _no_lora(self.lora)
    e, m = self.config.hidden, self.config.intermediate
    gate_up = GateUp((2 * m, e), name="gate_up_proj")()
    return PackedLinear((e,), (m,), name="down_proj")(ffi.gated_matmul(x, gate_up))


class GateUp(nn.Module):
  """The joined gate/up weight (``ffi.pack_gated`` layout)."""
  shape: tuple[int, int]

  @nn.compact
  def __call__(self) -> jax.Array:
    return _packed(self, self.shape)


class AmxLmHead(nn.Module):
  """Logits from the packed tied embedding, or a packed ``lm_head`` weight."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
    cfg = self.config
    if cfg.tie_word_embeddings:
      return ffi.matmul(x, embedding, 1)
    return ffi.matmul(x, _packed(self, (cfg.vocab_size, cfg.hidden)), 1)


def _embed(table: jax.Array, tokens: jax.Array, config: LlamaConfig) -> jax.Array:
  if config.tie_word_embeddings:  # The table is packed for the LM head.
    return ffi.packed_rows(table, tokens).astype(jnp.float32)
  return llama.take_rows(table, tokens, config)


AMX_OPS = llama.LlamaOps(
    name="amx", attention=AmxAttention, mlp=AmxMlp, lm_head=AmxLmHead, embed=_embed,
    argmax=ffi.argmax, segmented_cache=False, prepare=pack_params,
    unsupported=amx_unsupported_reason, training=False)
