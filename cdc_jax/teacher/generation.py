"""Batched, jitted decoding with a KV cache: greedy and temperature/top-k sampling.

One XLA program per (batch bucket, shared-prefix bucket, prompt bucket,
new-token bucket, top_k) runs prefill and the whole decode loop
(``lax.while_loop``), so there is no per-token Python or dispatch overhead.
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
import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.models import llama
from cdc_jax.teacher import chat, sharding
from cdc_jax.teacher import tokenizer as tokenizer_lib

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Fine steps for short prompts: prefill of padding is wasted compute.
PROMPT_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                  4096, 6144, 8192)
NEW_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Stop ids are a fixed-size runtime input, so changing them does not recompile.
MAX_STOP_IDS = 8


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


def _pick_tokens(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: int,
                 argmax: Any = llama.greedy_tokens) -> jax.Array:
  """Greedy ``argmax`` if temperature == 0, else a (top-k restricted) sample."""

  def sample(_):
    scaled = logits / temperature
    if top_k:
      kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
      scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)

  # A cond, not a select: sampling noise over the vocabulary is not free on CPU.
  return jax.lax.cond(temperature > 0, sample, lambda _: argmax(logits), None)


def generate_tokens(
    params: Any,
    prefix_tokens: jax.Array,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    rng: jax.Array,
    temperature: jax.Array,
    max_new_tokens: jax.Array,
    stop_ids: jax.Array,
    *,
    config: llama.LlamaConfig,
    num_new: int,
    top_k: int,
    pad_id: int,
    ops: llama.LlamaOps = llama.XLA_OPS,
    lora: llama.LoraConfig | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Decodes up to ``min(max_new_tokens[row], num_new)`` tokens for left-padded prompts.

  Args:
    prefix_tokens: ``[1, prefix_len]``, tokens that begin every row's prompt
      (``prefix_len`` may be 0). They are prefilled once, at batch 1, and
      their keys/values copied to every row.
    prompt_tokens, prompt_mask: ``[batch, prompt_len]``, the rest of each
      prompt, left-padded; a row with no True in its mask is inactive (batch
      padding).
    max_new_tokens: ``[batch]`` int32, each row's own limit.
    stop_ids: ``[MAX_STOP_IDS]`` int32, padded with -1 (matches nothing).
  Returns:
    tokens ``[batch, num_new]`` (pad after a row stops), the number of
    generated tokens per row (stop token included) and whether each row stopped.
  """
  model = llama.Llama(config, ops, lora)  # With LoRA, params hold the adapters too.
  batch, prompt_len = prompt_tokens.shape
  prefix_len = prefix_tokens.shape[1]
  prompt_mask = prompt_mask.astype(jnp.bool_)
  # Ops whose decode attention reads only the filled slots want one phase, one segment.
  ends = decode_phases(num_new) if ops.segmented_cache else (num_new,)
  base = prefix_len + prompt_len
  # Decode step s writes slot base + s - 1; phase k's steps fill segment k.
  bounds = [0] + [base + e - 1 for e in ends[:-1]] + [base + num_new]
  cache = llama.init_cache(config, batch=batch, length=base + num_new,
                           segments=[b - a for a, b in zip(bounds, bounds[1:])])
  if prefix_len:
    _, shared = model.apply({"params": params}, prefix_tokens,
                            cache=llama.init_cache(config, batch=1, length=prefix_len),
                            last_only=True)
    cache = llama.fill_prefix(cache, shared)
  positions = prefix_len + jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
  logits, cache = model.apply(
      {"params": params}, prompt_tokens, positions=positions, attention_mask=prompt_mask,
      cache=cache, attend_segments=1, last_only=True)
  stop = stop_ids.astype(jnp.int32)
  limits = jnp.minimum(max_new_tokens.astype(jnp.int32), num_new)

  token = _pick_tokens(logits[:, 0], jax.random.fold_in(rng, 0), temperature, top_k,
                       ops.argmax)
  inactive = ~prompt_mask.any(axis=1)
  token = jnp.where(inactive, pad_id, token)
  stopped = jnp.isin(token, stop) & ~inactive
  out = jnp.full((batch, num_new), pad_id, jnp.int32).at[:, 0].set(token)
  lengths = jnp.where(inactive, 0, 1).astype(jnp.int32)
  state = (jnp.ones((), jnp.int32), token, prefix_len + prompt_mask.sum(axis=1).astype(jnp.int32),
           cache, out,
           stopped, stopped | inactive | (lengths >= limits), lengths)

  def cond(end, state):
    step, *_, done, _ = state
    return (step < end) & ~jnp.all(done)

  def body(attend, state):
    step, token, pos, cache, out, stopped, done, lengths = state
    logits, cache = model.apply(
        {"params": params}, token[:, None], positions=pos[:, None], cache=cache,
        attend_segments=attend)
    token = _pick_tokens(logits[:, 0], jax.random.fold_in(rng, step), temperature, top_k,
                         ops.argmax)
    token = jnp.where(done, pad_id, token)
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
    lengths = lengths + (~done).astype(jnp.int32)
    hit = jnp.isin(token, stop) & ~done
    return (step + 1, token, pos + 1, cache, out, stopped | hit, done | hit | (lengths >= limits),
            lengths)

  # One loop per phase, each attending to the cache segments filled by then.
  for k, end in enumerate(ends):
    state = jax.lax.while_loop(functools.partial(cond, end), functools.partial(body, k + 1), state)
  _, _, _, _, out, stopped, _, lengths = state
  return out, lengths, stopped


# Decode phases end after these many new tokens (and at the new-token bucket).
# None ends before 64: the extra segment's dots cost more than the shorter
# window saves for the first 32 tokens (64-token bucket, two phases: -3 to -7%).
DECODE_PHASE_ENDS = (64, 128, 256, 512, 1024, 2048, 4096)


def decode_phases(num_new: int) -> tuple[int, ...]:
  """The new-token counts at which decode phases end; the last is ``num_new``.

  Each phase is its own loop that attends only to the cache slots filled by
  its end: attention reads the cache whole every step, so with a 256-token
  bucket a step early on cost 1.6x one with a 64-token bucket (SmolLM2, bf16,
  batch 32). Each phase is one more copy of the decoder in the program, so
  phases double in length.

  >>> decode_phases(16), decode_phases(64), decode_phases(256)
  ((16,), (64,), (64, 128, 256))
  """
  return tuple(e for e in DECODE_PHASE_ENDS if e < num_new) + (num_new,)


@functools.lru_cache(maxsize=None)
def generate_program(config: llama.LlamaConfig, *, num_new: int, top_k: int, pad_id: int,
                     ops: llama.LlamaOps = llama.XLA_OPS, mesh: jax.sharding.Mesh | None = None,
                     rules: tuple[Any, ...] = ()) -> Any:
  """The jitted ``generate_tokens`` for one new-token bucket and top_k, shared by Generators.

  jax.jit then compiles it once per (batch, prompt length) bucket. With
  ``mesh`` the outputs are replicated over it. ``mesh`` and ``rules`` also key
  the cache: the caller traces under that mesh and those logical rules, which
  jit's own cache does not see.
  """
  del rules
  fn = functools.partial(generate_tokens, config=config, num_new=num_new, top_k=top_k,
                         pad_id=pad_id, ops=ops)
  if mesh is None:
    return jax.jit(fn)
  # Replicated outputs (a few small int arrays): every process of a multi-host
  # mesh can read the whole result.
  return jax.jit(fn, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


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
      rules: Sequence[tuple[str, str | None]] = sharding.TEACHER_RULES,
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
    if len(self.stop_ids) > MAX_STOP_IDS:
      raise ValueError(f"at most {MAX_STOP_IDS} stop ids, got {len(self.stop_ids)}")
    self.mesh = mesh
    self.rules = tuple(rules)
    self.share_prefix = share_prefix
    self._chat_format: chat.ChatFormat | None = None

  @classmethod
  def from_gguf(cls, path: str | os.PathLike[str], *, dtype: str = "float32",
                max_seq_len: int | None = None, **kwargs: Any) -> Generator:
    """A Generator for a llama GGUF file (weights and tokenizer from the file)."""
    from cdc_jax.teacher import llama_weights
    config, params = llama_weights.load_gguf(path, dtype=dtype, max_seq_len=max_seq_len,
                                             mesh=kwargs.get("mesh"))
    return cls(config, params, tokenizer_lib.tokenizer_from_gguf(path), **kwargs)

  @classmethod
  def from_safetensors(cls, directory: str | os.PathLike[str], *, dtype: str = "float32",
                       max_seq_len: int | None = None, **kwargs: Any) -> Generator:
    """A Generator for a HF Llama dir (config.json, model*.safetensors, tokenizer.json)."""
    from cdc_jax.teacher import llama_weights
    config, params = llama_weights.load_safetensors(
        directory, dtype=dtype, max_seq_len=max_seq_len, mesh=kwargs.get("mesh"))
    return cls(config, params, tokenizer_lib.tokenizer_from_hf_dir(directory), **kwargs)

  @property
  def chat_format(self) -> chat.ChatFormat:
    """The chat format of the model's stored template."""
    if self._chat_format is None:
      self._chat_format = chat.chat_format_from_template(self.tokenizer.chat_template)
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
    return sharding.place(np.asarray(value), jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec()))

  def _program(self, num_new: int, top_k: int) -> Any:
    return generate_program(self.config, num_new=num_new, top_k=top_k,
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
      prompts = [chat.user_prompt(p, fmt=self.chat_format, system=system) for p in prompts]
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
    stop = np.full((MAX_STOP_IDS,), -1, np.int32)
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
