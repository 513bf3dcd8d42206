"""T5X-style wrapper of the Llama decoder as a student: init, loss, decoding and scoring.

Batches are the features of :class:`PromptCompletionConverter` (seqio's prefix-LM
converter with the loss on targets only): ``decoder_target_tokens`` are the
prompt (the task's ``inputs``) followed by the completion (its ``targets``),
``decoder_input_tokens`` the same shifted right with token 0 first,
``decoder_loss_weights`` 1 on completion tokens only, and
``decoder_causal_attention`` 1 over the prompt (plus the position that predicts
the first completion token); packed batches add ``decoder_segment_ids`` and
``decoder_positions``. A Llama attends causally everywhere: the prompt mask
only tells decoding where each prompt ends.

The wrapper has the interface of ``EncoderDecoderModel`` (``init_params``,
``param_logical_axes``, ``loss_fn``, ``predict_batch``, ``score_batch``,
``FEATURE_CONVERTER_CLS``) plus what a pretrained student needs and a T5 has
trivially: ``pretrained`` (weights from a GGUF file or a HF safetensors
directory), ``merge_params`` (LoRA: the frozen base plus the trained adapters)
and ``base_fingerprint`` (which base weights a checkpoint expects).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from cdc_jax.models import llama, llama_decode, losses

Array = jax.Array
Batch = Mapping[str, Array]


class PromptCompletionConverter(seqio.PrefixLMFeatureConverter):
  """seqio's prefix-LM features with the loss on the completion (``targets``) only."""

  def __init__(self, pack: bool = True, **kwargs: Any):
    super().__init__(loss_on_targets_only=True, pack=pack, **kwargs)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """Host (numpy) weights a student starts from.

  trainable: replaces the random init of the trained parameters (full
    fine-tuning), or None (LoRA: adapters start fresh).
  frozen: parameters that are used but not trained (LoRA's base), or None.
  """
  trainable: Any = None
  frozen: Any = None


def _is_adapter(path: tuple[str, ...]) -> bool:
  return path[-1] in ("lora_a", "lora_b")


def split_params(params: Any) -> tuple[dict, dict]:
  """(adapters, everything else) of a full param tree, as nested dicts."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  adapters = {k: v for k, v in flat.items() if _is_adapter(k)}
  base = {k: v for k, v in flat.items() if not _is_adapter(k)}
  return (flax.traverse_util.unflatten_dict(adapters), flax.traverse_util.unflatten_dict(base))


def merge_trees(adapters: Any, base: Any) -> dict:
  """The full param tree: ``base`` with the adapter leaves added."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(base))
  flat.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(adapters)))
  return flax.traverse_util.unflatten_dict(flat)


def fold_adapters(params: Any, lora: llama.LoraConfig) -> dict:
  """Params with every adapter folded into its weight (``W + scale * B A``), adapters removed."""
  adapters, base = split_params(params)
  flat = flax.traverse_util.flatten_dict(base)
  flat_adapters = flax.traverse_util.flatten_dict(adapters)
  for path, a in flat_adapters.items():
    if path[-1] != "lora_a":
      continue
    owner = path[:-1]
    b = np.asarray(flat_adapters[owner + ("lora_b",)], np.float32)
    a = np.asarray(a, np.float32)
    weight = flat[owner + ("weight",)]
    rank = a.shape[0]
    update = b.reshape(-1, rank) @ a.reshape(rank, -1)
    flat[owner + ("weight",)] = (np.asarray(weight, np.float32)
                                 + lora.scale * update.reshape(weight.shape)).astype(weight.dtype)
  return flax.traverse_util.unflatten_dict(flat)


def file_fingerprint(path: str | os.PathLike) -> str:
  """sha256 over a weights file, or over a directory's ``*.safetensors`` and ``config.json``.

  Hashed once per process and file version (path, size, mtime): a sweep
  checks it at every train, evaluate and merge.
  """
  path = Path(path)
  files = [path] if path.is_file() else sorted(
      p for p in path.iterdir() if p.suffix == ".safetensors" or p.name == "config.json")
  if not files:
    raise FileNotFoundError(f"no weights at {path}")
  return _hash_files(tuple((str(f.absolute()), f.stat().st_size, f.stat().st_mtime_ns)
                           for f in files))


@functools.lru_cache(maxsize=None)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
  digest = hashlib.sha256()
  for name, _, _ in files:
    file = Path(name)
    digest.update(file.name.encode())
    with open(file, "rb") as f:
      for block in iter(functools.partial(f.read, 1 << 24), b""):
        digest.update(block)
  return digest.hexdigest()


def load_weights(path: str | os.PathLike, *, dtype: str, param_dtype: str | None,
                 max_seq_len: int | None) -> tuple[llama.LlamaConfig, Any]:
  """Config and host params from a GGUF file or a HF Llama safetensors directory."""
  from cdc_jax.models import llama_weights

  path = Path(path)
  stored = param_dtype or dtype
  if path.is_dir():
    config, params = llama_weights.load_safetensors(path, dtype=stored, max_seq_len=max_seq_len)
  else:
    config, params = llama_weights.load_gguf(path, dtype=stored, max_seq_len=max_seq_len)
  config = dataclasses.replace(config, dtype=dtype, param_dtype=param_dtype)
  return config, jax.tree.map(np.asarray, params)


@dataclasses.dataclass(frozen=True, eq=False)
class DecoderOnlyModel:
  """Loss, prediction and scoring for a Llama decoder trained on prompt/completion pairs.

  Attributes:
    module: the Flax network (``llama.Llama``, with ``lora`` for adapters).
    config: its configuration.
    weights: the GGUF file or HF directory it was built from (None: random init).
    eos_id: the completion's end token (the vocabulary's EOS); decoding stops there.
    z_loss: coefficient of the auxiliary ``log(Z)**2`` loss per target token.
    pretrained: the host weights, read once when the model is built.
  """
  module: llama.Llama
  config: llama.LlamaConfig
  _: dataclasses.KW_ONLY
  weights: str | None = None
  eos_id: int = 2
  z_loss: float = 0.0
  pretrained: Pretrained = Pretrained()

  FEATURE_CONVERTER_CLS = PromptCompletionConverter
  PREDICT_FEATURES = ("decoder_input_tokens", "decoder_causal_attention")

  @property
  def lora(self) -> llama.LoraConfig | None:
    return self.module.lora

  # --- Parameters -------------------------------------------------------------

  def _variables(self, rng: Array) -> Any:
    tokens = jnp.zeros((1, 1), jnp.int32)
    return self.module.init({"params": rng}, tokens)["params"]

  def init_params(self, rng: Array, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Any:
    """Fresh trained parameters: the LoRA adapters, or the whole model (full fine-tuning)."""
    del input_shapes
    params = nn.meta.unbox(self._variables(rng))
    return split_params(params)[0] if self.lora is not None else params

  def _logical_axes(self) -> Any:
    return nn.get_partition_spec(jax.eval_shape(self._variables, jax.random.key(0)))

  def param_logical_axes(self, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Any:
    """PartitionSpec tree of the trained parameters' logical axis names."""
    del input_shapes
    specs = self._logical_axes()
    return split_params(specs)[0] if self.lora is not None else specs

  def frozen_logical_axes(self) -> Any:
    """PartitionSpec tree of the frozen parameters (None without LoRA)."""
    return None if self.lora is None else split_params(self._logical_axes())[1]

  def merge_params(self, trainable: Any, frozen: Any) -> Any:
    """The module's full parameters from the trained ones and the frozen base."""
    return trainable if frozen is None else merge_trees(trainable, frozen)

  def base_fingerprint(self) -> str | None:
    """sha256 of the base weights the trained parameters belong to (None: random init)."""
    return None if self.weights is None else file_fingerprint(self.weights)

  def load_external(self, path: str | os.PathLike) -> Any:
    """Full parameters from a GGUF file or HF Llama directory (fresh adapters: B = 0)."""
    config, params = load_weights(path, dtype=self.config.dtype,
                                  param_dtype=self.config.param_dtype,
                                  max_seq_len=self.config.max_seq_len)
    if dataclasses.replace(config, max_seq_len=self.config.max_seq_len) != self.config:
      raise ValueError(f"{path} holds a different model ({config}) than this student "
                       f"({self.config})")
    if self.lora is None:
      return params
    # Jitted, XLA drops the random init of the base weights that eager init computes (only the
    # adapters are returned): 9 s instead of 14 s for SmolLM2-135M on 2 busy CPU cores.
    return merge_trees(jax.device_get(jax.jit(self.init_params)(jax.random.key(0))), params)

  # --- Loss -------------------------------------------------------------------

  def compute_logits(self, params: Any, batch: Batch, dropout_rng: Array | None = None) -> Array:
    """Logits ``[batch, length, vocab]`` for ``decoder_input_tokens`` (LoRA dropout iff rng)."""
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    logits, _ = self.module.apply(
        {"params": params}, batch["decoder_input_tokens"],
        positions=batch.get("decoder_positions"), segment_ids=batch.get("decoder_segment_ids"),
        rngs=rngs)
    return logits

  def loss_fn(self, params: Any, batch: Batch,
              dropout_rng: Array | None) -> tuple[Array, dict[str, Array]]:
    """Mean cross-entropy over completion tokens (+ z-loss) and summed metrics, as T5's
    (``losses.token_loss``)."""
    return losses.token_loss(self.compute_logits(params, batch, dropout_rng), batch,
                             z_loss=self.z_loss)

  def score_batch(self, params: Any, batch: Batch) -> Array:
    """Log-likelihood of each row's weighted (completion) tokens, shape (batch,)."""
    if "decoder_segment_ids" in batch:
      raise ValueError("score_batch works on one example per row (use pack=False)")
    logits = self.compute_logits(params, batch).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    target = jnp.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None],
                                 axis=-1)[..., 0]
    return jnp.sum(target * losses.loss_weights(batch), axis=-1)

  # --- Decoding -------------------------------------------------------------

  def prompt_features(self, rows: Sequence[Sequence[int]], length: int) -> dict[str, np.ndarray]:
    """``PREDICT_FEATURES`` of tokenized prompts, as seqio's prefix-LM features: 0, then the prompt."""
    tokens = np.zeros((len(rows), length + 1), np.int32)
    causal = np.zeros((len(rows), length + 1), np.int32)
    for i, row in enumerate(rows):
      row = list(row)[:length]
      tokens[i, 1:len(row) + 1] = row
      causal[i, :len(row) + 1] = 1
    return {"decoder_input_tokens": tokens, "decoder_causal_attention": causal}

  def predict_batch(self, params: Any, batch: Batch, *, max_decode_len: int,
                    num_beams: int = 1) -> Array:
    """Greedy completions ``[batch, max_decode_len]``: EOS included, then 0.

    Each row's prompt is ``decoder_input_tokens`` where ``decoder_causal_attention``
    is 1 (token 0, then the task's inputs); decoding is the teacher's
    (``llama_decode.generate_tokens``) on the same Llama, with a KV cache.
    """
    if num_beams != 1:
      raise ValueError(f"the decoder-only student decodes greedily; num_beams={num_beams}")
    if max_decode_len < 1:
      raise ValueError(f"max_decode_len must be positive, got {max_decode_len}")
    tokens = jnp.asarray(batch["decoder_input_tokens"], jnp.int32)
    lengths = jnp.sum(jnp.asarray(batch["decoder_causal_attention"]) > 0, axis=1)
    width = tokens.shape[1]
    # Right-aligned prompts (left padding), as the generator reads them.
    source = jnp.arange(width)[None, :] - (width - lengths)[:, None]
    mask = source >= 0
    prompts = jnp.where(mask, jnp.take_along_axis(tokens, jnp.maximum(source, 0), axis=1), 0)
    batch_size = tokens.shape[0]
    stop = jnp.full((llama_decode.MAX_STOP_IDS,), -1, jnp.int32).at[0].set(self.eos_id)
    out, _, _ = llama_decode.generate_tokens(
        params, jnp.zeros((1, 0), jnp.int32), prompts, mask, jax.random.PRNGKey(0),
        jnp.float32(0.0),
        jnp.full((batch_size,), max_decode_len, jnp.int32), stop, config=self.config,
        num_new=max_decode_len, top_k=0, pad_id=0, lora=self.lora)
    return out


def build_model(*, weights: str | None = None, config: llama.LlamaConfig | None = None,
                dtype: str = "float32", param_dtype: str | None = None,
                max_seq_len: int | None = None, lora: llama.LoraConfig | None = None,
                eos_id: int = 2, z_loss: float = 0.0) -> DecoderOnlyModel:
  """A decoder-only student: pretrained from ``weights`` (GGUF file or HF dir) or ``config``.

  With ``lora`` only the adapters train; the pretrained weights stay frozen.
  ``max_seq_len`` is the positions a loaded checkpoint keeps (None: its own
  context length, as the weight loaders; gin sets ``MAX_SEQ_LEN``). ``dtype`` is the compute dtype, ``param_dtype`` the stored one (e.g.
  "bfloat16" compute on "float32" master weights).
  """
  if (weights is None) == (config is None):
    raise ValueError("build_model needs exactly one of weights= (a GGUF file or HF Llama "
                     "directory) and config= (a random-init LlamaConfig)")
  pretrained = Pretrained()
  if weights is not None:
    weights = str(weights)
    config, params = load_weights(weights, dtype=dtype, param_dtype=param_dtype,
                                  max_seq_len=max_seq_len)
    pretrained = Pretrained(frozen=params) if lora is not None else Pretrained(trainable=params)
  return DecoderOnlyModel(llama.Llama(config, lora=lora), config, weights=weights, eos_id=eos_id,
                          z_loss=z_loss, pretrained=pretrained)
