"""The hand-written CPU decode kernels (AMX matmul, fused decode attention) vs the XLA path."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdc_jax.cpu_kernels import ffi as cpu_kernels
from cdc_jax.cpu_kernels import llama_ops
from cdc_jax.models import llama
from cdc_jax.teacher import generation
from tests.test_llama_model import random_params

# Only hardware without AMX skips. On a CPU that has it, a kernel that does not
# build, load or get AMX state fails under CI (and skips, with the reason, elsewhere).
REASON = cpu_kernels.unavailable_reason()
HARDWARE_REASON = cpu_kernels.hardware_reason()
needs_kernels = pytest.mark.skipif(
    REASON is not None and (HARDWARE_REASON is not None or not os.environ.get("CI")),
    reason=f"CPU kernels: {REASON}")


def test_kernels_are_available_where_the_cpu_has_amx():
  if HARDWARE_REASON is not None:
    pytest.skip(f"CPU kernels: {HARDWARE_REASON}")
  if REASON is not None and not os.environ.get("CI"):
    pytest.skip(f"CPU kernels: {REASON} (a failure under CI)")
  assert REASON is None, f"the CPU has AMX but the kernels cannot run: {REASON}"

# Sizes the kernels take: matmul dims multiples of 32, head_dim a multiple of 32.
TINY = llama.LlamaConfig(
    vocab_size=128, hidden=64, intermediate=96, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=32, max_seq_len=256, dtype="bfloat16")


def test_pack_weight_is_a_permutation_and_unpacks():
  w = np.arange(64 * 3 * 32, dtype=np.float32).reshape(64, 3, 32).astype(jnp.bfloat16)
  packed = cpu_kernels.pack_weight(w, num_in=2)
  assert packed.shape == w.shape and packed.dtype == w.dtype
  assert not np.array_equal(packed, w)
  np.testing.assert_array_equal(np.sort(packed.ravel()), np.sort(w.ravel()))
  np.testing.assert_array_equal(cpu_kernels.unpack_weight(packed, num_in=2), w)
  # The first B tile holds columns 0-15 of k 0..31 as (k pair, column, pair member).
  flat = packed.reshape(-1)
  w2 = w.reshape(64, 96)
  assert flat[0] == w2[0, 0] and flat[1] == w2[0, 1] and flat[2] == w2[1, 0]
  assert flat[32] == w2[0, 2]


def test_pack_weight_names_sizes_it_cannot_pack():
  with pytest.raises(ValueError, match=r"weight \[48, 64\]: both sizes must be multiples of 32"):
    cpu_kernels.pack_weight(np.zeros((48, 64), jnp.bfloat16), num_in=1)


def test_packed_rows_is_an_embedding_lookup():
  table = np.random.default_rng(0).standard_normal((96, 64)).astype(jnp.bfloat16)
  packed = jnp.asarray(cpu_kernels.pack_weight(table, num_in=1))
  rows = jnp.asarray([[0, 17, 95], [31, 32, 64]])
  np.testing.assert_array_equal(cpu_kernels.packed_rows(packed, rows), table[np.asarray(rows)])


@needs_kernels
@pytest.mark.parametrize("rows,out_shape,in_shape", [
    ((32,), (1536 // 8,), (576,)),   # decode batch 32
    ((1,), (64,), (32,)),            # one row: padded to a 16-row tile
    ((3, 7), (2, 48), (3, 32)),      # rows from two leading dims, multi-dim in/out
    ((48,), (96,), (64,)),           # three row tiles: an odd last one
    ((300,), (64,), (96,)),          # prefill: 19 row tiles in blocks of 8
])
def test_amx_matmul_equals_xla_dot(rows, out_shape, in_shape):
  cpu_kernels.load()
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal(out_shape + in_shape) * 0.1, jnp.bfloat16)
  x = jnp.asarray(rng.standard_normal(rows + in_shape), jnp.float32)
  expected = llama.project(x, w, len(in_shape))
  packed = jnp.asarray(cpu_kernels.pack_weight(np.asarray(w), len(in_shape)))
  got = jax.jit(cpu_kernels.matmul, static_argnums=2)(x, packed, len(in_shape))
  assert got.shape == rows + out_shape and got.dtype == jnp.float32
  # Same bf16 products, f32 sums in another order.
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _reference_attention(q, k_new, v_new, cos, sin, keys, values, valid, index, scale):
  """The XLA path's math for one decode step (llama.Attention), in jnp."""
  def rope(x):  # x [b, n, d]
    return llama.apply_rope(x[:, None], cos[:, None, None], sin[:, None, None])[:, 0]
  b, heads, d = q.shape
  kv = k_new.shape[1]
  qb = (rope(q) * scale).astype(jnp.bfloat16).reshape(b, kv, heads // kv, d)
  keys = keys.at[:, :, index].set(rope(k_new).astype(jnp.bfloat16))
  values = values.at[:, :, index].set(v_new.astype(jnp.bfloat16))
  scores = jnp.einsum("bkgd,bktd->bkgt", qb, keys, preferred_element_type=jnp.float32)
  live = valid & (jnp.arange(keys.shape[2]) <= index)[None]
  scores = jnp.where(live[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(jnp.bfloat16)
  out = jnp.einsum("bkgt,bktd->bkgd", probs, values, preferred_element_type=jnp.float32)
  return out, keys, values


@needs_kernels
@pytest.mark.parametrize("batch,kv,groups,d,slots,index", [
    (32, 3, 3, 64, 128, 100),  # SmolLM2's attention shape
    (2, 2, 4, 32, 40, 39),     # last slot
    (3, 1, 1, 16, 17, 0),      # first slot
    (2, 2, 8, 128, 64, 20),
])
def test_decode_attention_equals_the_xla_math(batch, kv, groups, d, slots, index):
  cpu_kernels.load()
  rng = np.random.default_rng(2)
  f32 = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  q, k_new, v_new = f32(batch, kv * groups, d), f32(batch, kv, d), f32(batch, kv, d)
  angles = f32(batch, d // 2)
  cos = jnp.cos(jnp.concatenate([angles, angles], -1))
  sin = jnp.sin(jnp.concatenate([angles, angles], -1))
  keys = f32(batch, kv, slots, d).astype(jnp.bfloat16)
  values = f32(batch, kv, slots, d).astype(jnp.bfloat16)
  valid = jnp.asarray(rng.random((batch, slots)) > 0.3).at[:, index].set(True)
  scale = d ** -0.5
  expected = _reference_attention(q, k_new, v_new, cos, sin, keys, values, valid, index, scale)
  qkv = jnp.concatenate([q, k_new, v_new], axis=1)
  got = jax.jit(lambda *a: cpu_kernels.decode_attention(*a, groups=groups, scale=scale))(
      qkv, cos, sin, keys, values, valid, index)
  assert got[0].shape == (batch, kv, groups, d)
  # The written slot is bit-exact; other slots are untouched.
  np.testing.assert_array_equal(np.asarray(got[1], np.float32), np.asarray(expected[1], np.float32))
  np.testing.assert_array_equal(np.asarray(got[2], np.float32), np.asarray(expected[2], np.float32))
  # Probabilities are rounded to bf16 on both sides; a rounding flip moves an output ~1e-3.
  np.testing.assert_allclose(got[0], expected[0], rtol=2e-3, atol=2e-3)


@needs_kernels
@pytest.mark.parametrize("rows", [1, 32, 40])
def test_gated_matmul_equals_silu_gate_times_up(rows):
  cpu_kernels.load()
  rng = np.random.default_rng(4)
  gate = rng.standard_normal((96, 64)).astype(jnp.bfloat16)
  up = rng.standard_normal((96, 64)).astype(jnp.bfloat16)
  x = jnp.asarray(rng.standard_normal((rows, 64)), jnp.float32)
  g = llama.project(x, jnp.asarray(gate), 1)
  u = llama.project(x, jnp.asarray(up), 1)
  expected = (jax.nn.silu(g) * u).astype(jnp.bfloat16)
  got = jax.jit(cpu_kernels.gated_matmul)(x, jnp.asarray(cpu_kernels.pack_gated(gate, up)))
  assert got.shape == (rows, 96) and got.dtype == jnp.bfloat16
  # One bf16 ulp where the f32 values round differently.
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32),
                             rtol=8e-3, atol=1e-4)


@needs_kernels
def test_argmax_is_greedy_tokens():
  cpu_kernels.load()
  rng = np.random.default_rng(5)
  logits = rng.standard_normal((7, 1000)).astype(np.float32)
  logits[1, [3, 700]] = 9.0      # ties: the first index wins
  logits[2, [999, 17]] = 9.0
  logits[3, 998] = 9.0           # in the tail past the last 16-wide block
  logits[4] = -np.inf
  logits = jnp.asarray(logits)
  got = jax.jit(cpu_kernels.argmax)(logits)
  np.testing.assert_array_equal(got, llama.greedy_tokens(logits))
  assert got.tolist()[1:5] == [3, 17, 998, 0]


@needs_kernels
def test_amx_model_tracks_the_xla_model_and_decodes_alike():
  params = random_params(TINY)
  amx = llama.get_ops("amx")
  assert amx is llama_ops.AMX_OPS and not amx.training
  packed = llama_ops.pack_params(params, TINY)
  tokens = jnp.asarray(np.random.default_rng(3).integers(0, 128, (4, 12)), jnp.int32)
  xla_logits = llama.Llama(TINY).apply({"params": params}, tokens)[0]
  amx_logits = llama.Llama(TINY, amx).apply({"params": packed}, tokens)[0]
  np.testing.assert_allclose(amx_logits, xla_logits, rtol=2e-2, atol=2e-2)

  xla_gen = generation.Generator(TINY, params, _Tokenizer(), stop_ids=(), kernels="xla")
  amx_gen = generation.Generator(TINY, params, _Tokenizer(), stop_ids=(), kernels="auto")
  assert amx_gen.ops is amx and amx_gen.kernels_note.startswith("amx")
  shared = list(range(20, 40))  # A 16-token shared prefix is prefilled once (batch 1).
  prompts = [[5, 9, 3, 7], [11, 2], [4, 4, 4, 4, 4, 4, 4], shared + [1, 2], shared + [7]]
  assert amx_gen.shared_prefix_length(prompts[3:]) == 16
  for batch in (prompts[:3], prompts[3:]):
    xla_out = xla_gen.generate_ids(batch, max_new_tokens=20)
    amx_out = amx_gen.generate_ids(batch, max_new_tokens=20)
    # Random peaked weights (scale 0.3): the bf16 rounding differences do not flip greedy picks.
    assert [t for t, _, _ in amx_out] == [t for t, _, _ in xla_out]
  sampled = amx_gen.generate_ids(prompts, max_new_tokens=8, temperature=1.0, top_k=5, seed=1)
  assert all(len(t) == 8 and all(0 <= i < TINY.vocab_size for i in t) for t, _, _ in sampled)


class _Tokenizer:
  vocab_size = TINY.vocab_size
  pad_id = 0
  stop_ids = ()
  chat_template = None


def test_kernels_choice_is_explained_and_validated():
  params = random_params(dataclasses.replace(TINY, dtype="float32"))
  f32 = dataclasses.replace(TINY, dtype="float32")
  gen = generation.Generator(f32, params, _Tokenizer(), kernels="auto")
  assert gen.ops is llama.XLA_OPS
  assert gen.kernels_note == "xla (amx kernels: dtype float32 (the kernels are bfloat16))"
  with pytest.raises(ValueError, match="kernels='amx' cannot run this model here: dtype float32"):
    generation.Generator(f32, params, _Tokenizer(), kernels="amx")
  with pytest.raises(ValueError, match="kernels='fast'"):
    generation.Generator(f32, params, _Tokenizer(), kernels="fast")
  with pytest.raises(ValueError, match="merge LoRA adapters first"):
    llama.Llama(TINY, llama.get_ops("amx"), llama.LoraConfig()).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
