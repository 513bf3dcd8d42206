"""Teacher decoder on tiny random configs: KV cache, left padding, sampling, configs."""

import dataclasses
import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdc_jax.models import llama, llama_decode
from cdc_jax.teacher import generation

TINY = llama.LlamaConfig(
    vocab_size=97, hidden=32, intermediate=64, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
    max_seq_len=128)


def random_params(config: llama.LlamaConfig, seed: int = 0, scale: float = 0.3):
  """Random params built in numpy (no XLA compile), shaped like the model's init.

  Weights larger than the 0.02 init give peaked logits, so greedy choices are
  far from ties and batched vs single-row rounding cannot flip them.
  """
  rng = np.random.default_rng(seed)
  dtype = config.jnp_dtype

  def draw(leaf):
    if leaf.ndim == 1:  # Norm scales.
      return jnp.asarray(1.0 + 0.1 * rng.standard_normal(leaf.shape), dtype)
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), dtype)

  return jax.tree.map(draw, nn.unbox(llama.abstract_params(config)))


@pytest.fixture(scope="module")
def tiny_params():
  return random_params(TINY)


@functools.cache
def _forward():
  model = llama.Llama(TINY)
  return jax.jit(lambda p, t, m: model.apply({"params": p}, t, attention_mask=m)[0])


def test_param_tree_shapes_and_logical_axes():
  abstract = llama.abstract_params(TINY)
  layer = abstract["layers_0"]
  # Weights keep Hugging Face's [out, in] layout.
  assert layer["attn"]["q_proj"]["weight"].names == ("heads", "kv", "embed")
  assert layer["attn"]["q_proj"]["weight"].value.shape == (4, 8, 32)
  assert layer["attn"]["k_proj"]["weight"].names == ("kv_heads", "kv", "embed")
  assert layer["attn"]["k_proj"]["weight"].value.shape == (2, 8, 32)
  assert layer["attn"]["o_proj"]["weight"].names == ("embed", "heads", "kv")
  assert layer["mlp"]["gate_proj"]["weight"].names == ("mlp", "embed")
  assert layer["mlp"]["down_proj"]["weight"].names == ("embed", "mlp")
  assert layer["input_norm"]["scale"].names == ("embed",)
  assert abstract["embed_tokens"].names == ("vocab", "embed")
  assert "lm_head" not in abstract
  untied = llama.abstract_params(dataclasses.replace(TINY, tie_word_embeddings=False))
  assert untied["lm_head"]["weight"].names == ("vocab", "embed")
  assert untied["lm_head"]["weight"].value.shape == (97, 32)
  n = sum(x.size for x in jax.tree.leaves(nn.unbox(abstract)))
  assert n == 97 * 32 + 32 + 2 * (2 * 32 + 32 * 4 * 8 * 2 + 32 * 2 * 8 * 2 + 3 * 32 * 64)


def test_kv_cache_decoding_equals_full_forward(tiny_params):
  model = llama.Llama(TINY)
  tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, TINY.vocab_size))
  full = _forward()(tiny_params, tokens, np.ones((2, 12), bool))
  prefill = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
  # Positions default to the count of valid cache slots.
  step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
  # Prefill 5 tokens, then one token at a time.
  logits, cache = prefill(tiny_params, tokens[:, :5], llama.init_cache(TINY, batch=2, length=16))
  steps = [logits]
  for t in range(5, 12):
    logits, cache = step(tiny_params, tokens[:, t:t + 1], cache)
    steps.append(logits)
  assert int(cache.index) == 12
  assert np.asarray(cache.valid).sum() == 24
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4, rtol=1e-4)


def test_left_padded_forward_matches_unpadded(tiny_params):
  seq = [5, 6, 7, 8]
  # Row 0 right-padded (causal: pads after the sequence cannot matter), row 1 left-padded.
  tokens = np.zeros((2, 12), np.int32)
  tokens[0, :4] = seq
  tokens[1, 8:] = seq
  mask = np.zeros((2, 12), bool)
  mask[0, :4] = True
  mask[1, 8:] = True
  out = np.asarray(_forward()(tiny_params, tokens, mask))
  assert not np.isnan(out).any()
  np.testing.assert_allclose(out[1, 8:], out[0, :4], atol=1e-4, rtol=1e-4)


class _FakeTokenizer:
  vocab_size = TINY.vocab_size
  pad_id = 0
  stop_ids = (3,)
  chat_template = None


def _generator(params, **kwargs) -> generation.Generator:
  return generation.Generator(TINY, params, _FakeTokenizer(), **kwargs)


def _reference_greedy(params, prompt, n, width=12):
  """Greedy decoding by re-running the full forward pass (no cache) each step.

  Sequences are right-padded to ``width`` tokens in a batch of 2 so one program
  serves all steps; causal attention makes the trailing pads irrelevant.
  """
  ids = list(prompt)
  out = []
  for _ in range(n):
    buffer = np.zeros((2, width), np.int32)
    buffer[0, :len(ids)] = ids
    token = int(np.argmax(_forward()(params, buffer, np.ones((2, width), bool))[0, len(ids) - 1]))
    out.append(token)
    ids.append(token)
  return out


def test_batched_left_padded_generation_equals_per_prompt(tiny_params):
  gen = _generator(tiny_params, stop_ids=())
  prompts = [[5, 9, 11, 40, 2, 7], [12], [50, 51, 52], [7, 7, 7, 60]]
  batched = gen.generate_ids(prompts, max_new_tokens=6)
  for prompt, (ids, count, stopped) in zip(prompts, batched):
    single = gen.generate_ids([prompt], max_new_tokens=6)[0]
    assert (ids, count, stopped) == single
    assert ids == _reference_greedy(tiny_params, prompt, 6)
    assert count == 6 and not stopped


def test_phased_decoding_over_cache_segments_equals_full_forward(tiny_params):
  # 70 new tokens: the 128-token bucket decodes in two phases (64, 128), the second
  # attending to one more cache segment; left padding and a shared prefix included.
  assert llama_decode.decode_phases(128) == (64, 128)
  gen = _generator(tiny_params, stop_ids=(), prompt_buckets=(16, 32))
  common = list(range(20, 37))
  prompts = [common + [5, 9, 11], common + [12]]
  results = gen.generate_ids(prompts, max_new_tokens=70)
  for prompt, (ids, count, stopped) in zip(prompts, results):
    assert (count, stopped) == (70, False)
    assert ids == _reference_greedy(tiny_params, prompt, 70, width=96)
  cache = llama.init_cache(TINY, batch=1, length=8, segments=(3, 5))
  assert cache.segments == (3, 5) and cache.length == 8
  with pytest.raises(ValueError, match="must be positive and sum to length=8"):
    llama.init_cache(TINY, batch=1, length=8, segments=(3, 4))


def test_shared_prompt_prefix_is_prefilled_once_with_the_same_results(tiny_params):
  common = list(range(20, 38))  # 18 tokens that begin every prompt.
  prompts = [common + [5, 9], common + [12], common + [50, 51, 52], common]
  shared = _generator(tiny_params, stop_ids=())
  plain = _generator(tiny_params, stop_ids=(), share_prefix=False)
  # One token of the shortest prompt stays unshared; 17 rounds down to the 16 bucket.
  assert shared.shared_prefix_length(prompts) == 16
  assert shared.shared_prefix_length([common + [1], [2] + common]) == 0
  assert shared.shared_prefix_length([common + [1]]) == 0
  assert plain.shared_prefix_length(prompts) == 0
  got = shared.generate_ids(prompts, max_new_tokens=6)
  assert got == plain.generate_ids(prompts, max_new_tokens=6)
  for prompt, result in zip(prompts, got):
    assert result == plain.generate_ids([prompt], max_new_tokens=6)[0]


def test_generation_stops_per_row_at_stop_token(tiny_params):
  gen = _generator(tiny_params)
  free = _generator(tiny_params, stop_ids=())
  prompts = [[5, 9, 11], [12, 13], [20], [30, 31, 32, 33]]
  unconstrained = free.generate_ids(prompts, max_new_tokens=16)
  # Stop on a token that some row emits mid-way.
  stop = unconstrained[0][0][4]
  gen.stop_ids = (stop,)
  results = gen.generate_ids(prompts, max_new_tokens=16)
  stopped_rows = 0
  for (ids, count, stopped), (free_ids, _, _) in zip(results, unconstrained):
    if stop in free_ids:
      cut = free_ids.index(stop)
      assert (ids, count, stopped) == (free_ids[:cut], cut + 1, True)
      stopped_rows += 1
    else:
      assert (ids, count, stopped) == (free_ids, 16, False)
  assert stopped_rows >= 1


def test_per_prompt_limits_in_one_batch_equal_separate_calls(tiny_params):
  gen = _generator(tiny_params)
  free = _generator(tiny_params, stop_ids=())
  prompts = [[5, 9, 11], [12, 13], [20], [30, 31, 32, 33]]
  limits = [3, 20, 1, 9]  # One batch, decoded in the 32-token bucket.
  mixed = gen.generate_ids(prompts, max_new_tokens=limits)
  assert mixed == [gen.generate_ids([p], max_new_tokens=n)[0] for p, n in zip(prompts, limits)]
  cut = free.generate_ids(prompts, max_new_tokens=limits)
  longest = free.generate_ids(prompts, max_new_tokens=20)
  for (ids, count, stopped), (full, _, _), n in zip(cut, longest, limits):
    assert (ids, count, stopped) == (full[:n], n, False)
  with pytest.raises(ValueError, match=r"2 max_new_tokens for 4 prompts"):
    gen.generate_ids(prompts, max_new_tokens=[1, 2])
  with pytest.raises(ValueError, match=r"max_new_tokens must be >= 1, got 0 for prompts\[1\]"):
    gen.generate_ids(prompts[:2], max_new_tokens=[4, 0])


def test_more_prompts_than_largest_batch_bucket(tiny_params):
  gen = _generator(tiny_params, stop_ids=(), batch_buckets=(1, 4))
  prompts = [[i + 4] * (1 + i % 3) for i in range(6)]  # Chunks of 4 and 2 (padded to 4).
  results = gen.generate_ids(prompts, max_new_tokens=3)
  assert [r for r in results] == [gen.generate_ids([p], max_new_tokens=3)[0] for p in prompts]


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny_params):
  gen = _generator(tiny_params, stop_ids=())
  prompts = [[5, 9, 11], [12, 13], [20], [30, 31]]
  greedy = gen.generate_ids(prompts, max_new_tokens=8)
  a = gen.generate_ids(prompts, max_new_tokens=8, temperature=1.0, seed=1)
  b = gen.generate_ids(prompts, max_new_tokens=8, temperature=1.0, seed=1)
  c = gen.generate_ids(prompts, max_new_tokens=8, temperature=1.0, seed=2)
  assert a == b
  assert a != c
  assert gen.generate_ids(prompts, max_new_tokens=8, temperature=0.7, top_k=1, seed=3) == greedy


def test_top_k_restricts_samples():
  logits = jnp.array([[0.0, 5.0, 4.0, -1.0, 3.0]] * 4000)
  picks = np.asarray(llama_decode.pick_tokens(logits, jax.random.PRNGKey(0), jnp.float32(5.0), 2))
  assert set(picks.tolist()) == {1, 2}
  picks = np.asarray(llama_decode.pick_tokens(logits, jax.random.PRNGKey(0), jnp.float32(0.0), 2))
  assert set(picks.tolist()) == {1}


def test_greedy_tokens_is_argmax_with_first_index_on_ties():
  logits = jnp.array([[0.0, 3.0, 3.0, -1.0], [-5.0, -7.0, -5.0, -6.0], [1.0, 1.0, 1.0, 1.0],
                      [-jnp.inf, 2.0, jnp.inf, 0.0]])
  assert np.asarray(llama.greedy_tokens(logits)).tolist() == [1, 0, 0, 2]
  random = jax.random.normal(jax.random.PRNGKey(3), (5, 97))
  np.testing.assert_array_equal(llama.greedy_tokens(random), jnp.argmax(random, axis=-1))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_write_cache_writes_the_update_bit_exactly(dtype):
  cache = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8, 4)).astype(dtype)
  update = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 1, 4)).astype(dtype)
  out = jax.jit(llama.write_cache)(cache, update, (0, 0, jnp.int32(5), 0))
  assert out.dtype == dtype
  expected = np.asarray(cache.astype(jnp.float32)).copy()
  expected[:, :, 5:6] = np.asarray(update.astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(out.astype(jnp.float32)), expected)


def test_generate_rejects_bad_requests(tiny_params):
  gen = _generator(tiny_params)
  with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
    gen.generate_ids([[4], []], max_new_tokens=2)
  with pytest.raises(ValueError, match=r"prompts\[0\]: 120 tokens \+ max_new_tokens=16 exceed"):
    gen.generate_ids([[4] * 120], max_new_tokens=16)
  with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
    gen.generate_ids([[4]], max_new_tokens=0)
  with pytest.raises(ValueError, match="temperature must be >= 0"):
    gen.generate_ids([[4]], max_new_tokens=1, temperature=-1.0)


def test_bfloat16_mixed_precision_tracks_float32(tiny_params):
  bf16 = dataclasses.replace(TINY, dtype="bfloat16")
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), tiny_params)
  tokens = np.array([[5, 9, 11, 40, 2, 7]] * 2)
  mask = np.ones((2, 6), bool)
  ref = _forward()(tiny_params, tokens, mask)
  out = jax.jit(lambda p: llama.Llama(bf16).apply({"params": p}, tokens, attention_mask=mask)[0])(
      params16)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.15 * float(jnp.abs(ref).max()))
  gen = generation.Generator(bf16, params16, _FakeTokenizer())
  assert gen.batch_buckets[0] == (2 if jax.default_backend() == "cpu" else 1)


@pytest.mark.parametrize("field,value,message", [
    ("num_kv_heads", 3, "not a multiple of num_kv_heads=3"),
    ("head_dim", 7, "must be even"),
    ("dtype", "int8", "expected one of"),
    ("hidden", 0, "hidden must be a positive int"),
])
def test_config_validation(field, value, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(TINY, **{field: value})


def test_generate_tokens_is_one_program_per_bucket(tiny_params):
  gen = _generator(tiny_params, stop_ids=())
  program = gen._program(16, 0)
  gen.generate_ids([[4, 5]], max_new_tokens=3)
  before = program._cache_size()
  gen.generate_ids([[4, 5, 6, 7, 8]], max_new_tokens=5)  # Same buckets (1, 16, 16).
  _generator(tiny_params, stop_ids=(7,)).generate_ids([[4]], max_new_tokens=9)  # Shared.
  assert program._cache_size() == before
  assert gen._program(16, 0) is program
