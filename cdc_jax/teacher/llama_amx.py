"""The Llama decoder on the hand-written CPU kernels (``LlamaConfig.kernels="amx"``).

``pack_params`` turns the params of the XLA path into those the kernels read:
every matmul weight in AMX tile order, q/k/v joined as ``attn/qkv_proj`` and
gate/up as ``mlp/gate_up_proj``. ``amx_unsupported_reason`` says why a
config cannot run on them here (dtype, CPU, compiler, shapes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.teacher import cpu_kernels
from cdc_jax.teacher.llama import LlamaConfig


def amx_unsupported_reason(config: LlamaConfig) -> str | None:
  """Why ``config`` cannot run with ``kernels="amx"`` here (None if it can)."""
  if config.dtype != "bfloat16":
    return f"dtype {config.dtype} (the kernels are bfloat16)"
  reason = cpu_kernels.unavailable_reason()
  if reason is not None:
    return reason
  h, kv, d = config.num_heads, config.num_kv_heads, config.head_dim
  for out_size, in_size in (((h + 2 * kv) * d, config.hidden), (config.hidden, h * d),
                            (2 * config.intermediate, config.hidden),
                            (config.hidden, config.intermediate),
                            (config.vocab_size, config.hidden)):
    reason = cpu_kernels.matmul_shape_error(out_size, in_size)
    if reason is not None:
      return reason
  return cpu_kernels.attention_shape_error(h // kv, d)


def pack_params(params: Any, config: LlamaConfig) -> tuple[LlamaConfig, Any]:
  """``(config, params)`` for ``kernels="amx"``, from the params of ``kernels="xla"``.

  Params are unboxed and on one device; the packed ones are new arrays (the
  caller may drop the originals). Raises ValueError with the reason where the
  kernels cannot run.
  """
  reason = amx_unsupported_reason(config)
  if reason is not None:
    raise ValueError(f"kernels='amx' cannot run this model: {reason}")
  cpu_kernels.load()
  host = jax.tree.map(np.asarray, params)

  def packed(weight: np.ndarray, num_in: int = 1) -> np.ndarray:
    return cpu_kernels.pack_weight(weight, num_in)

  out = dict(host)
  for i in range(config.num_layers):
    layer = dict(host[f"layers_{i}"])
    attn, mlp = layer["attn"], layer["mlp"]
    qkv = np.concatenate([attn[n]["weight"] for n in ("q_proj", "k_proj", "v_proj")], axis=0)
    layer["attn"] = {"qkv_proj": {"weight": packed(qkv)},
                     "o_proj": {"weight": packed(attn["o_proj"]["weight"], 2)}}
    layer["mlp"] = {
        "gate_up_proj": {"weight": cpu_kernels.pack_gated(mlp["gate_proj"]["weight"],
                                                          mlp["up_proj"]["weight"])},
        "down_proj": {"weight": packed(mlp["down_proj"]["weight"])}}
    out[f"layers_{i}"] = layer
  if config.tie_word_embeddings:
    out["embed_tokens"] = packed(host["embed_tokens"])
  else:
    out["lm_head"] = {"weight": packed(host["lm_head"]["weight"])}
  out = jax.tree.map(jnp.asarray, out)  # One device copy of every leaf.
  return dataclasses.replace(config, kernels="amx"), out
