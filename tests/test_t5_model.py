"""The T5 student: shapes, axis names, cached decoding, beam search, packing, gin files."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdc_jax.models import partitioning
from cdc_jax.models import encoder_decoder, t5_config

GIN_DIR = Path(__file__).resolve().parent.parent / "gin" / "models"
VOCAB = 32
CONFIG = t5_config.t5_config("tiny", vocab_size=VOCAB, dropout_rate=0.0)
SHAPES = {"encoder_input_tokens": (2, 6), "decoder_input_tokens": (2, 5)}
ENCODER_TOKENS = jnp.array([[3, 4, 5, 1, 0, 0], [6, 7, 8, 9, 10, 1]], jnp.int32)

EXPECTED_AXES = {
    "embedding": ("vocab", "embed"),
    "rel_embedding": ("heads", "relpos_buckets"),
    "scale": ("embed",),
    "query": ("embed", "heads", "kv"),
    "key": ("embed", "heads", "kv"),
    "value": ("embed", "heads", "kv"),
    "out": ("heads", "kv", "embed"),
    "wi": ("embed", "mlp"),
    "wi_0": ("embed", "mlp"),
    "wi_1": ("embed", "mlp"),
    "wo": ("mlp", "embed"),
    "logits_kernel": ("embed", "vocab"),
}


def _random_params(model, seed=0):
  """Host-random params of the model's shapes (unit norm scales, fan-in kernels).

  Executing init_params compiles one RNG kernel per parameter, which takes
  tens of seconds on a small CPU; test_partitioning runs the real init.
  """
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(lambda r: model.init_params(r, SHAPES), jax.random.key(0))

  def one(path, leaf):
    if path[-1].key == "scale":
      return jnp.asarray(1.0 + 0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    fan_in = leaf.shape[0] if path[-1].key != "out" else leaf.shape[0] * leaf.shape[1]
    std = 1.0 if path[-1].key in ("embedding", "rel_embedding") else fan_in**-0.5
    return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(one, abstract)


@pytest.fixture(scope="module")
def model_and_params():
  model = encoder_decoder.build_model(CONFIG)
  return model, _random_params(model)


def _leaves(tree):
  return {"/".join(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(
              tree, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))}


def test_presets_have_published_dims():
  base = t5_config.t5_config("base")
  assert (base.emb_dim, base.num_heads, base.num_encoder_layers, base.head_dim,
          base.mlp_dim) == (768, 12, 12, 64, 2048)
  assert base.mlp_activations == ("gelu", "linear") and not base.logits_via_embedding
  large_10 = t5_config.t5_config("large", version="1.0")
  assert (large_10.emb_dim, large_10.num_heads, large_10.num_decoder_layers,
          large_10.mlp_dim) == (1024, 16, 24, 4096)
  assert large_10.mlp_activations == ("relu",) and large_10.logits_via_embedding
  with pytest.raises(ValueError, match="size 'xl'"):
    t5_config.t5_config("xl", version="1.0")
  with pytest.raises(ValueError, match="mlp_activations"):
    dataclasses.replace(CONFIG, mlp_activations=("tanh",))


def test_shapes_and_param_count():
  model = encoder_decoder.build_model(CONFIG)
  params = jax.eval_shape(lambda r: model.init_params(r, SHAPES), jax.random.key(0))
  leaves = _leaves(params)
  assert sum(x.size for x in leaves.values()) == 201_728
  assert all(x.dtype == jnp.float32 for x in leaves.values())
  assert leaves["encoder/layers_1/attention/query"].shape == (64, 4, 16)
  assert leaves["decoder/layers_0/encoder_decoder_attention/out"].shape == (4, 16, 64)
  assert leaves["decoder/layers_1/mlp/wi_1"].shape == (64, 128)
  assert leaves["decoder/relpos_bias/rel_embedding"].shape == (4, 32)
  assert leaves["decoder/logits_kernel"].shape == (64, VOCAB)
  batch = {"encoder_input_tokens": ENCODER_TOKENS,
           "decoder_input_tokens": jnp.array([[0, 5, 6, 1, 0], [0, 7, 1, 0, 0]], jnp.int32),
           "decoder_target_tokens": jnp.array([[5, 6, 1, 0, 0], [7, 1, 0, 0, 0]], jnp.int32)}
  assert jax.eval_shape(model.compute_logits, params, batch).shape == (2, 5, VOCAB)
  assert jax.eval_shape(model.score_batch, params, batch).shape == (2,)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_every_param_has_logical_axes(version):
  config = t5_config.t5_config("tiny", version=version, vocab_size=VOCAB)
  model = encoder_decoder.build_model(config)
  axes = _leaves(model.param_logical_axes(SHAPES))
  shapes = _leaves(jax.eval_shape(lambda r: model.init_params(r, SHAPES), jax.random.key(0)))
  assert axes.keys() == shapes.keys()
  assert ("decoder/logits_kernel" in axes) == (version == "1.1")
  for name, spec in axes.items():
    assert tuple(spec) == EXPECTED_AXES[name.rsplit("/", 1)[-1]], name
    assert len(spec) == len(shapes[name].shape), name
  partitioning.check_rules_cover(model.param_logical_axes(SHAPES))


def _naive_greedy(model, params, encoder_tokens, length):
  """Argmax decoding by re-running the full decoder on the growing prefix.

  Returns the tokens and the log-probabilities of all positions' tokens.
  """
  inputs = np.zeros((encoder_tokens.shape[0], length + 1), np.int32)
  apply = jax.jit(model.module.apply)
  for i in range(length):
    logits = apply({"params": params}, encoder_tokens, jnp.asarray(inputs[:, :-1]))
    inputs[:, i + 1] = np.asarray(jnp.argmax(logits[:, i], axis=-1))
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  return inputs[:, 1:], np.take_along_axis(log_probs, inputs[:, 1:, None], -1)[..., 0]


@functools.partial(jax.jit, static_argnames=("model",))
def _token_log_probs(model, params, encoder_tokens, sequences):
  """Log-probability of each token of each sequence given its prefix."""
  logits = model.module.apply({"params": params}, encoder_tokens,
                              encoder_decoder.shift_right(sequences))
  return jnp.take_along_axis(jax.nn.log_softmax(logits), sequences[..., None], -1)[..., 0]


def _until_eos(sequences, eos_id):
  """Mask of the positions up to and including each row's first EOS."""
  return np.cumsum(sequences == eos_id, axis=1) - (sequences == eos_id) == 0


def test_cached_greedy_equals_full_reforward(model_and_params):
  model, params = model_and_params
  length = 8
  naive, naive_log_probs = _naive_greedy(model, params, ENCODER_TOKENS, length)
  # Make a token greedy emits mid-row 0 the EOS, so stopping is exercised.
  eos_id = int(next(t for t in naive[0, 2:] if t != 0))
  model = dataclasses.replace(model, eos_id=eos_id)
  expected = naive.copy()
  for row in expected:
    hits = np.flatnonzero(row == eos_id)
    if hits.size:
      row[hits[0] + 1:] = 0
  assert (expected == 0).sum() > (naive == 0).sum()
  predict = jax.jit(model.predict_batch_with_aux, static_argnames=("max_decode_len", "num_beams"))
  tokens, aux = predict(params, {"encoder_input_tokens": ENCODER_TOKENS}, max_decode_len=length)
  np.testing.assert_array_equal(tokens, expected)
  np.testing.assert_allclose(
      aux["scores"], np.sum(naive_log_probs * _until_eos(naive, eos_id), axis=1), atol=1e-5)


def test_beam_search_with_enough_beams_is_exhaustive(model_and_params):
  model, params = model_and_params
  everything = np.array(list(itertools.product(range(VOCAB), repeat=2)), np.int32)
  rows = ENCODER_TOKENS.shape[0]
  log_probs = np.stack([
      _token_log_probs(model, params, jnp.repeat(ENCODER_TOKENS[r:r + 1], len(everything), 0),
                       jnp.asarray(everything)) for r in range(rows)])
  # An EOS unlikely as first token, so the best sequences have two tokens
  # and the second step's choice matters.
  first_step = log_probs[:, ::VOCAB, 0]
  eos_id = int(np.argmin(first_step.max(axis=0)))
  model = dataclasses.replace(model, eos_id=eos_id)
  predict = jax.jit(model.predict_batch_with_aux, static_argnames=("max_decode_len", "num_beams"))
  # VOCAB beams keep every 1-token prefix, so 2 steps search all sequences.
  tokens, aux = predict(params, {"encoder_input_tokens": ENCODER_TOKENS}, max_decode_len=2,
                        num_beams=VOCAB)
  scores = np.sum(log_probs * _until_eos(everything, eos_id)[None], axis=-1)
  best = np.argmax(scores, axis=1)
  np.testing.assert_allclose(aux["scores"], scores[np.arange(rows), best], atol=1e-5)
  np.testing.assert_array_equal(tokens, everything[best])
  assert np.all(everything[best] != eos_id)
  # Greedy (first token = best first step) is not optimal here.
  assert np.any(everything[best][:, 0] != first_step.argmax(axis=1))


def _pack(examples, length):
  """One packed row in the layout of seqio.EncDecFeatureConverter(pack=True)."""
  row = {k: np.zeros(length, np.int32) for k in (
      "encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
      "decoder_input_tokens", "decoder_target_tokens", "decoder_segment_ids",
      "decoder_positions", "decoder_loss_weights")}
  enc = dec = 0
  for segment, (inputs, targets) in enumerate(examples, start=1):
    row["encoder_input_tokens"][enc:enc + len(inputs)] = inputs
    row["encoder_segment_ids"][enc:enc + len(inputs)] = segment
    row["encoder_positions"][enc:enc + len(inputs)] = np.arange(len(inputs))
    row["decoder_target_tokens"][dec:dec + len(targets)] = targets
    row["decoder_input_tokens"][dec:dec + len(targets)] = [0] + targets[:-1]
    row["decoder_segment_ids"][dec:dec + len(targets)] = segment
    row["decoder_positions"][dec:dec + len(targets)] = np.arange(len(targets))
    row["decoder_loss_weights"][dec:dec + len(targets)] = 1
    enc, dec = enc + len(inputs), dec + len(targets)
  return row


def _stack(rows):
  return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_packed_loss_equals_unpacked_loss(model_and_params):
  model, params = model_and_params
  rng = np.random.default_rng(0)
  examples = [(list(rng.integers(2, VOCAB, n)) + [1], list(rng.integers(2, VOCAB, m)) + [1])
              for n, m in [(4, 3), (6, 5), (2, 6), (5, 2), (3, 3)]]
  unpacked = _stack([_pack([e], 10) for e in examples])
  for k in ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
            "decoder_positions"):
    del unpacked[k]
  packed = _stack([_pack(examples[:3], 20), _pack(examples[3:], 20)])
  loss_fn = jax.jit(model.loss_fn)
  loss, metrics = loss_fn(params, unpacked, None)
  packed_loss, packed_metrics = loss_fn(params, packed, None)
  assert float(metrics["num_tokens"]) == float(packed_metrics["num_tokens"]) == 24.0
  assert float(metrics["num_examples"]) == float(packed_metrics["num_examples"]) == 5.0
  assert float(metrics["num_correct"]) == float(packed_metrics["num_correct"])
  np.testing.assert_allclose(packed_loss, loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(packed_metrics["z_loss"], metrics["z_loss"], rtol=1e-5)
  # The loss is the mean weighted token cross-entropy plus z-loss.
  per_example = jax.jit(model.score_batch)(params, unpacked)
  np.testing.assert_allclose(metrics["cross_ent_sum"], -jnp.sum(per_example), rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["cross_ent_sum"] / 24 + metrics["z_loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="decoder_segment_ids"):
    model.score_batch(params, packed)


def test_dropout_is_seeded(model_and_params):
  _, params = model_and_params
  model = encoder_decoder.build_model(dataclasses.replace(CONFIG, dropout_rate=0.3))
  batch = _stack([_pack([([5, 6, 7, 1], [8, 9, 1])], 6)] * 2)
  loss_fn = jax.jit(model.loss_fn)
  # rbg keys: threefry dropout masks take many seconds to compile on CPU.
  loss_a, _ = loss_fn(params, batch, jax.random.key(1, impl="unsafe_rbg"))
  loss_b, _ = loss_fn(params, batch, jax.random.key(1, impl="unsafe_rbg"))
  loss_c, _ = loss_fn(params, batch, jax.random.key(2, impl="unsafe_rbg"))
  assert float(loss_a) == float(loss_b) != float(loss_c)


# (emb_dim, num_heads, num_encoder_layers, mlp_dim, logits_via_embedding)
GIN_FILES = {
    "t5_1_1_tiny": (64, 4, 2, 128, False), "t5_1_1_small": (512, 6, 8, 1024, False),
    "t5_1_1_base": (768, 12, 12, 2048, False), "t5_1_1_large": (1024, 16, 24, 2816, False),
    "t5_1_0_small": (512, 8, 6, 2048, True), "t5_1_0_base": (768, 12, 12, 3072, True),
}


@pytest.mark.parametrize("name,dims", sorted(GIN_FILES.items()))
def test_gin_files_build_models(name, dims):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(GIN_DIR / f"{name}.gin")], ["VOCAB_SIZE = 100"])
    model = gin.get_configurable(encoder_decoder.build_model)()
  finally:
    gin.clear_config()
  c = model.config
  assert isinstance(model, encoder_decoder.EncoderDecoderModel)
  assert (c.emb_dim, c.num_heads, c.num_encoder_layers, c.mlp_dim,
          c.logits_via_embedding) == dims
  assert c.vocab_size == 100 and c.dropout_rate == 0.1


def test_every_t5_gin_file_is_tested():
  # The decoder-only students' files are tested in tests/test_decoder_student.py.
  assert sorted(p.stem for p in GIN_DIR.glob("t5_*.gin")) == sorted(GIN_FILES)
