"""Loads local Hugging Face T5 checkpoints (T5 1.0, T5 1.1, Flan-T5) into our params.

A checkpoint directory holds ``config.json`` and either ``model.safetensors``
or ``model.safetensors.index.json`` with the shards it names. Nothing is
downloaded. Every tensor of the checkpoint is either used or one of the few
HF keeps as aliases; anything else is an error, as is a missing tensor.

Output layer: HF T5 has an ``lm_head`` and a flag ``scale_decoder_outputs``
(before transformers 5: ``tie_word_embeddings``) that multiplies the decoder
output by d_model**-0.5. A separate ``lm_head.weight`` that differs from
``shared.weight`` is a separate head, as in HF. Tied and scaled is T5 1.0
(``logits_via_embedding``); any other combination loads as an untied head
holding a copy of the checkpoint's head (and the scale folded in), which
computes the same logits.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from cdc_jax.models.t5_config import T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tensors HF stores as aliases of others or never uses.
_IGNORABLE = frozenset({
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
})
# HF activation names -> ours ('gelu' in HF is the exact erf form).
_HF_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "silu": "silu",
    "swish": "silu",
}


class _Tensors:
  """Reads named tensors, as float32 numpy arrays, from one or more safetensors files."""

  def __init__(self, directory: Path):
    single, index = directory / WEIGHTS_FILE, directory / INDEX_FILE
    if single.is_file():
      files = [single]
    elif index.is_file():
      try:
        weight_map = json.loads(index.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
      files = [directory / name for name in sorted(set(weight_map.values()))]
      for file in files:
        if not file.is_file():
          raise FileNotFoundError(f"{index} names shard {file.name}, which does not exist")
    else:
      raise FileNotFoundError(f"{directory}: neither {WEIGHTS_FILE} nor {INDEX_FILE} found "
                              "(only safetensors checkpoints are supported)")
    self.files = files
    self.location: dict[str, Path] = {}
    for file in files:
      with safe_open(file, framework="np") as f:
        for name in f.keys():
          self.location[name] = file
    self.used: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self.location

  def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor ``name``, checked to have ``shape``."""
    if name not in self.location:
      raise KeyError(f"checkpoint lacks tensor '{name}' (looked in "
                     f"{', '.join(str(f) for f in self.files)})")
    file = self.location[name]
    with safe_open(file, framework="np") as f:
      if f.get_slice(name).get_dtype() == "BF16":
        array = _read_bf16(file, name)
      else:
        array = f.get_tensor(name)
    if tuple(array.shape) != tuple(shape):
      raise ValueError(f"{file}: tensor '{name}' has shape {tuple(array.shape)}, "
                       f"config.json implies {tuple(shape)}")
    self.used.add(name)
    return np.asarray(array, dtype=np.float32)


def _read_bf16(file: Path, name: str) -> np.ndarray:
  # numpy has no bfloat16, so safetensors cannot return one; read the raw
  # bytes (layout: u64 header size, JSON header, data) and widen to float32.
  with open(file, "rb") as f:
    header_size = int.from_bytes(f.read(8), "little")
    info = json.loads(f.read(header_size))[name]
    start, end = info["data_offsets"]
    f.seek(8 + header_size + start)
    raw = np.frombuffer(f.read(end - start), dtype=np.uint16)
  return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _read_config(directory: Path) -> tuple[dict[str, Any], T5Config]:
  path = directory / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: not a Hugging Face checkpoint directory")
  try:
    hf = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e})") from e
  if hf.get("model_type", "t5") not in ("t5", "mt5"):
    raise ValueError(f"{path}: field 'model_type' is {hf['model_type']!r}, expected 't5'")
  for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
    if field not in hf:
      raise ValueError(f"{path}: field '{field}' missing")
  proj = hf.get("feed_forward_proj", "relu")
  parts = proj.split("-")
  gated = len(parts) == 2 and parts[0] == "gated"
  act = "gelu_new" if proj == "gated-gelu" else parts[-1]  # as HF's T5Config does
  if len(parts) > 2 or (len(parts) == 2 and not gated) or act not in _HF_ACTIVATIONS:
    raise ValueError(f"{path}: field 'feed_forward_proj' {proj!r} is not supported: expected "
                     f"'<act>' or 'gated-<act>' with <act> in {sorted(_HF_ACTIVATIONS)}")
  activations = (_HF_ACTIVATIONS[act], "linear") if gated else (_HF_ACTIVATIONS[act],)
  config = T5Config(
      vocab_size=hf["vocab_size"], emb_dim=hf["d_model"], num_heads=hf["num_heads"],
      num_encoder_layers=hf["num_layers"],
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], mlp_activations=activations,
      dropout_rate=hf.get("dropout_rate", 0.1), logits_via_embedding=False,
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6))
  return hf, config


def _attention(t: _Tensors, prefix: str, c: T5Config) -> dict[str, np.ndarray]:
  inner = c.num_heads * c.head_dim
  out = {}
  for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
    w = t.get(f"{prefix}.{theirs}.weight", (inner, c.emb_dim))
    out[ours] = np.ascontiguousarray(w.T.reshape(c.emb_dim, c.num_heads, c.head_dim))
  w = t.get(f"{prefix}.o.weight", (c.emb_dim, inner))
  out["out"] = np.ascontiguousarray(w.T.reshape(c.num_heads, c.head_dim, c.emb_dim))
  return out


def _mlp(t: _Tensors, prefix: str, c: T5Config) -> dict[str, np.ndarray]:
  names = ["wi"] if len(c.mlp_activations) == 1 else [f"wi_{i}" for i in
                                                        range(len(c.mlp_activations))]
  out = {n: np.ascontiguousarray(t.get(f"{prefix}.{n}.weight", (c.mlp_dim, c.emb_dim)).T)
         for n in names}
  out["wo"] = np.ascontiguousarray(t.get(f"{prefix}.wo.weight", (c.emb_dim, c.mlp_dim)).T)
  return out


def _norm(t: _Tensors, name: str, c: T5Config) -> dict[str, np.ndarray]:
  return {"scale": t.get(name, (c.emb_dim,))}


def _relpos(t: _Tensors, stack: str, c: T5Config) -> dict[str, np.ndarray]:
  name = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
  return {"rel_embedding": np.ascontiguousarray(
      t.get(name, (c.relative_attention_num_buckets, c.num_heads)).T)}


def load_hf_t5(path: str | os.PathLike, *, dtype: str = "float32") -> tuple[T5Config, Any]:
  """Config and float32 params of the HF T5 checkpoint directory ``path``.

  Args:
    path: directory with config.json and safetensors weights.
    dtype: compute dtype of the returned config (parameters stay float32).

  Returns:
    (config, params): params is a nested dict of numpy arrays with the
    structure of ``EncoderDecoderModel.init_params`` for that config.
  """
  directory = Path(path)
  hf, config = _read_config(directory)
  tensors = _Tensors(directory)
  c = config
  for name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
    if name in tensors:
      embedding = tensors.get(name, (c.vocab_size, c.emb_dim))
      break
  else:
    tensors.get("shared.weight", (c.vocab_size, c.emb_dim))  # raises, naming the tensor

  encoder: dict[str, Any] = {"relpos_bias": _relpos(tensors, "encoder", c)}
  for i in range(c.num_encoder_layers):
    p = f"encoder.block.{i}.layer"
    encoder[f"layers_{i}"] = {
        "pre_attention_layer_norm": _norm(tensors, f"{p}.0.layer_norm.weight", c),
        "attention": _attention(tensors, f"{p}.0.SelfAttention", c),
        "pre_mlp_layer_norm": _norm(tensors, f"{p}.1.layer_norm.weight", c),
        "mlp": _mlp(tensors, f"{p}.1.DenseReluDense", c),
    }
  encoder["encoder_norm"] = _norm(tensors, "encoder.final_layer_norm.weight", c)

  decoder: dict[str, Any] = {"relpos_bias": _relpos(tensors, "decoder", c)}
  for i in range(c.num_decoder_layers):
    p = f"decoder.block.{i}.layer"
    decoder[f"layers_{i}"] = {
        "pre_self_attention_layer_norm": _norm(tensors, f"{p}.0.layer_norm.weight", c),
        "self_attention": _attention(tensors, f"{p}.0.SelfAttention", c),
        "pre_cross_attention_layer_norm": _norm(tensors, f"{p}.1.layer_norm.weight", c),
        "encoder_decoder_attention": _attention(tensors, f"{p}.1.EncDecAttention", c),
        "pre_mlp_layer_norm": _norm(tensors, f"{p}.2.layer_norm.weight", c),
        "mlp": _mlp(tensors, f"{p}.2.DenseReluDense", c),
    }
  decoder["decoder_norm"] = _norm(tensors, "decoder.final_layer_norm.weight", c)

  scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
  head = None
  if "lm_head.weight" in tensors:
    head = tensors.get("lm_head.weight", (c.vocab_size, c.emb_dim))
    if np.array_equal(head, embedding):
      head = None  # a stored copy of the tied embedding
  if head is None and scale:
    config = dataclasses.replace(config, logits_via_embedding=True, dtype=dtype)
  else:
    head = embedding if head is None else head
    factor = c.emb_dim**-0.5 if scale else 1.0
    decoder["logits_kernel"] = np.ascontiguousarray(head.T * np.float32(factor))
    config = dataclasses.replace(config, dtype=dtype)

  unused = sorted(set(tensors.location) - tensors.used - _IGNORABLE)
  if unused:
    raise ValueError(f"{directory}: checkpoint tensors not used by a T5 model: {unused}")
  params = {"token_embedder": {"embedding": embedding}, "encoder": encoder, "decoder": decoder}
  return config, params
