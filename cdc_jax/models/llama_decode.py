"""Decoding the Llama with its KV cache: one jitted loop for prefill and every new token.

:func:`generate_tokens` prefills a shared prompt prefix once, then the rest of
each left-padded prompt, then runs the whole decode loop in ``lax.while_loop``
(greedy or temperature/top-k sampling), so there is no per-token Python or
dispatch overhead. The teacher's ``Generator`` (:mod:`cdc_jax.teacher.generation`)
and the decoder-only student (:mod:`cdc_jax.models.decoder_only`) both decode
through it; :func:`generate_program` is its jitted form, cached per bucket.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from cdc_jax.models import llama

# Stop ids are a fixed-size runtime input, so changing them does not recompile.
MAX_STOP_IDS = 8


def pick_tokens(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: int,
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

  token = pick_tokens(logits[:, 0], jax.random.fold_in(rng, 0), temperature, top_k,
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
    token = pick_tokens(logits[:, 0], jax.random.fold_in(rng, step), temperature, top_k,
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
