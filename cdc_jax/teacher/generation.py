"""The teacher's generator: batched, bucketed prompts through the Llama's decode loop.

One XLA program (:mod:`cdc_jax.models.llama_decode`) per (batch bucket,
shared-prefix bucket, prompt bucket, new-token bucket, top_k) runs prefill and
the whole decode loop, greedy or temperature/top-k sampling.
Prompts of a batch usually begin alike (chat template, system prompt,
instructions): the longest common prefix, rounded down to a prompt bucket, is
prefilled once and shared by every row. The rest of each prompt is left-padded
to the prompt bucket and the batch is filled with inactive rows up to the
batch bucket; the loop stops when every row has emitted a stop token or
reached its own ``max_new_tokens``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from cdc_jax.models import llama, llama_chat, llama_decode, llama_sharding
from cdc_jax.models import llama_tokenizer as tokenizer_lib

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Fine steps for short prompts: prefill of padding is wasted compute.
PROMPT_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                  4096, 6144, 8192)
NEW_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Generation:
  """One completion.

  finished: True if the model emitted a stop token (not cut by max_new_tokens).
  num_generated_tokens counts that stop token; ``text`` and ``token_ids`` leave it out.
  """
  text: str
  num_prompt_tokens: int
  num_generated_tokens: int
  finished: bool
  token_ids: tuple[int, ...] = ()


def _local_value(array: jax.Array) -> np.ndarray:
  """A (replicated, possibly multi-host) array as numpy, from this process's copy."""
  if array.is_fully_addressable:
    return np.asarray(array)
  return np.asarray(array.addressable_data(0))


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f"{what} {n} exceeds the largest bucket {max(buckets)}")


def _choose_ops(config: llama.LlamaConfig, params: Any, kernels: str,
               mesh: jax.sharding.Mesh | None) -> tuple[llama.LlamaOps, Any, str]:
  """(ops, params in their layout, note) for the requested kernels: "auto" or an ops name.

  "auto" takes the CPU kernel plugin ("amx") where it can run, else "xla".
  """
  if kernels != "auto" and kernels not in llama.ops_names():
    raise ValueError(f"kernels={kernels!r}: expected 'auto' or one of {llama.ops_names()}")
  if kernels == "xla":
    return llama.XLA_OPS, params, "xla (requested)"
  name = "amx" if kernels == "auto" else kernels

  def fall_back(reason: str) -> tuple[llama.LlamaOps, Any, str]:
    if kernels != "auto":
      raise ValueError(f"kernels={name!r} cannot run this model here: {reason}")
    return llama.XLA_OPS, params, f"xla ({name} kernels: {reason})"

  if mesh is not None or jax.default_backend() != "cpu":
    return fall_back("they run on one CPU device, not on "
                     + ("a mesh" if mesh is not None else f"the {jax.default_backend()} backend"))
  try:
    ops = llama.get_ops(name)
  except ValueError as error:
    return fall_back(str(error))
  reason = ops.unsupported(config) if ops.unsupported is not None else None
  if reason is not None:
    return fall_back(reason)
  if ops.prepare is not None:
    params = ops.prepare(params, config)
  return ops, params, f"{name} (hand-written CPU kernels)"


class Generator:
  """Holds a teacher's params and tokenizer; generates completions for prompt batches.

  Batches larger than the largest batch bucket are split into chunks of
  similar prompt length. With ``mesh``, params should already be placed on it
  (``llama_weights.load_*(mesh=...)``) and the model's logical constraints
  shard activations by ``rules``.

  ``kernels``: "xla", "amx" (the optional ``cdc_jax.cpu_kernels`` plugin: the
  hand-written CPU kernels; one CPU device, bfloat16) or "auto": "amx" where
  it can run, else "xla". ``ops`` holds the chosen implementations and
  ``kernels_note`` says which and why.
  """

  def __init__(
      self,
      config: llama.LlamaConfig,
      params: Any,
      tokenizer: tokenizer_lib.Tokenizer,
      *,
      batch_buckets: Sequence[int] = BATCH_BUCKETS,
      prompt_buckets: Sequence[int] = PROMPT_BUCKETS,
      new_token_buckets: Sequence[int] = NEW_TOKEN_BUCKETS,
      stop_ids: Sequence[int] | None = None,
      share_prefix: bool = True,
      mesh: jax.sharding.Mesh | None = None,
      rules: Sequence[tuple[str, str | None]] = llama_sharding.TEACHER_RULES,
      kernels: str = "auto",
  ):
    if tokenizer.vocab_size > config.vocab_size:
      raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only "
                       f"{config.vocab_size}")
    self.ops, params, self.kernels_note = _choose_ops(config, params, kernels, mesh)
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.batch_buckets = tuple(sorted(batch_buckets))
    if (config.dtype != "float32" and self.ops.name == "xla" and jax.default_backend() == "cpu"
        and self.batch_buckets[0] == 1):
      # XLA:CPU runs a one-row bf16 matmul by converting the weights to f32 every
      # step (~10x slower); two rows take the fast bf16 -> f32 kernel.
      self.batch_buckets = tuple(sorted({max(b, 2) for b in self.batch_buckets}))
    self.prompt_buckets = tuple(sorted(
        {b for b in prompt_buckets if b < config.max_seq_len} | {config.max_seq_len}))
    self.new_token_buckets = tuple(sorted(new_token_buckets))
    self.stop_ids = tuple(tokenizer.stop_ids if stop_ids is None else stop_ids)
    if len(self.stop_ids) > llama_decode.MAX_STOP_IDS:
      raise ValueError(f"at most {llama_decode.MAX_STOP_IDS} stop ids, got {len(self.stop_ids)}")
    self.mesh = mesh
    self.rules = tuple(rules)
    self.share_prefix = share_prefix
    self._chat_format: llama_chat.ChatFormat | None = None

  @classmethod
  def from_gguf(cls, path: str | os.PathLike[str], *, dtype: str = "float32",
                max_seq_len: int | None = None, **kwargs: Any) -> Generator:
    """A Generator for a llama GGUF file (weights and tokenizer from the file)."""
    from cdc_jax.models import llama_weights
    config, params = llama_weights.load_gguf(path, dtype=dtype, max_seq_len=max_seq_len,
                                             mesh=kwargs.get("mesh"))
    return cls(config, params, tokenizer_lib.tokenizer_from_gguf(path), **kwargs)

  @classmethod
  def from_safetensors(cls, directory: str | os.PathLike[str], *, dtype: str = "float32",
                       max_seq_len: int | None = None, **kwargs: Any) -> Generator:
    """A Generator for a HF Llama dir (config.json, model*.safetensors, tokenizer.json)."""
    from cdc_jax.models import llama_weights
    config, params = llama_weights.load_safetensors(
        directory, dtype=dtype, max_seq_len=max_seq_len, mesh=kwargs.get("mesh"))
    return cls(config, params, tokenizer_lib.tokenizer_from_hf_dir(directory), **kwargs)

  @property
  def chat_format(self) -> llama_chat.ChatFormat:
    """The chat format of the model's stored template."""
    if self._chat_format is None:
      self._chat_format = llama_chat.chat_format_from_template(self.tokenizer.chat_template)
    return self._chat_format

  def _context(self) -> contextlib.AbstractContextManager[Any]:
    stack = contextlib.ExitStack()
    if self.mesh is not None:
      stack.enter_context(jax.set_mesh(self.mesh))
      stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def _on_mesh(self, value: np.ndarray) -> Any:
    """``value`` replicated over the mesh (as-is without one).

    On a multi-host mesh a jitted program takes global arrays only; each process
    holds the same host value (same prompts, same seed) and supplies its copy.
    """
    if self.mesh is None:
      return value
    return llama_sharding.place(np.asarray(value), jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec()))

  def _program(self, num_new: int, top_k: int) -> Any:
    return llama_decode.generate_program(self.config, num_new=num_new, top_k=top_k,
                            pad_id=self.tokenizer.pad_id, ops=self.ops, mesh=self.mesh,
                            rules=self.rules if self.mesh is not None else ())

  def shared_prefix_length(self, prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt begins with, rounded down to a prompt bucket (0: none).

    At least one token of each prompt stays unshared: its logits start decoding.
    """
    if not self.share_prefix or len(prompts) < 2:
      return 0
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    common = 0
    while common < limit and all(p[common] == first[common] for p in prompts[1:]):
      common += 1
    return max((b for b in self.prompt_buckets if b <= common), default=0)

  def generate(
      self,
      prompts: Sequence[str],
      *,
      max_new_tokens: int | Sequence[int],
      temperature: float = 0.0,
      top_k: int = 0,
      seed: int = 0,
      as_chat: bool = False,
      system: str | None = None,
  ) -> list[Generation]:
    """Completions of ``prompts`` (raw text, or user messages when ``as_chat``).

    ``max_new_tokens``: one limit for all, or one per prompt (see ``generate_ids``).
    """
    if as_chat:
      prompts = [llama_chat.user_prompt(p, fmt=self.chat_format, system=system) for p in prompts]
    elif system is not None:
      raise ValueError("system= needs as_chat=True")
    ids = self.tokenizer.encode_batch(prompts) if prompts else []
    results = self.generate_ids(ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, seed=seed)
    texts = self.tokenizer.decode_batch([r[0] for r in results]) if results else []
    return [Generation(text=text, num_prompt_tokens=len(p), num_generated_tokens=n,
                       finished=fin, token_ids=tuple(toks))
            for text, p, (toks, n, fin) in zip(texts, ids, results)]

  def generate_ids(
      self,
      prompts: Sequence[Sequence[int]],
      *,
      max_new_tokens: int | Sequence[int],
      temperature: float = 0.0,
      top_k: int = 0,
      seed: int = 0,
  ) -> list[tuple[list[int], int, bool]]:
    """For each prompt (token ids): (generated ids without the stop token, count, stopped).

    ``max_new_tokens`` may differ by prompt: prompts with different limits
    share a batch (a row that reaches its limit idles until the batch ends),
    so one decode loop serves requests that would otherwise need several.
    """
    if isinstance(max_new_tokens, int):
      limits = [max_new_tokens] * len(prompts)
    else:
      limits = [int(n) for n in max_new_tokens]
      if len(limits) != len(prompts):
        raise ValueError(f"{len(limits)} max_new_tokens for {len(prompts)} prompts")
    for i, n in enumerate(limits):
      if n < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {n}"
                         + ("" if isinstance(max_new_tokens, int) else f" for prompts[{i}]"))
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0 or top_k > self.config.vocab_size:
      raise ValueError(f"top_k must be in [0, {self.config.vocab_size}], got {top_k}")
    for i, p in enumerate(prompts):
      if not p:
        raise ValueError(f"prompts[{i}] is empty (no tokens)")
      if len(p) + limits[i] > self.config.max_seq_len:
        raise ValueError(f"prompts[{i}]: {len(p)} tokens + max_new_tokens={limits[i]} exceed "
                         f"max_seq_len={self.config.max_seq_len}")
    stop = np.full((llama_decode.MAX_STOP_IDS,), -1, np.int32)
    stop[:len(self.stop_ids)] = self.stop_ids
    # Chunks of similar length waste less compute on padding.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunk = self.batch_buckets[-1]
    results: list[Any] = [None] * len(prompts)
    for c, start in enumerate(range(0, len(order), chunk)):
      rows = order[start:start + chunk]
      batch = _bucket(len(rows), self.batch_buckets, "batch size")
      num_new = _bucket(max(limits[i] for i in rows), self.new_token_buckets, "max_new_tokens")
      program = self._program(num_new, top_k)
      shared = self.shared_prefix_length([prompts[i] for i in rows])
      plen = _bucket(max(len(prompts[i]) for i in rows) - shared, self.prompt_buckets,
                     "prompt length")
      prefix = np.asarray([prompts[rows[0]][:shared]], np.int32).reshape(1, shared)
      tokens = np.full((batch, plen), self.tokenizer.pad_id, np.int32)
      mask = np.zeros((batch, plen), np.bool_)
      row_limits = np.ones((batch,), np.int32)  # Inactive rows: done after the first token.
      for r, i in enumerate(rows):
        row_limits[r] = limits[i]
        n = len(prompts[i]) - shared
        tokens[r, plen - n:] = prompts[i][shared:]
        mask[r, plen - n:] = True
      rng = np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), c))
      inputs = (prefix, tokens, mask, rng, np.float32(temperature), row_limits, stop)
      with self._context():
        out, lengths, stopped = program(self.params, *map(self._on_mesh, inputs))
      out, lengths, stopped = map(_local_value, (out, lengths, stopped))
      for r, i in enumerate(rows):
        n, fin = int(lengths[r]), bool(stopped[r])
        results[i] = (out[r, :n - 1 if fin else n].tolist(), n, fin)
    return results
