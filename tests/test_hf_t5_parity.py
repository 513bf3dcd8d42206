"""load_hf_t5 reproduces the logits of random tiny PyTorch T5 models (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import transformers

from cdc_jax.models import encoder_decoder, hf_t5

VOCAB = 48
# Encoder rows end in EOS then padding; decoder inputs start with 0.
ENCODER_TOKENS = np.array([[5, 9, 13, 22, 7, 1, 0, 0], [30, 4, 4, 17, 1, 0, 0, 0],
                           [8, 2, 40, 41, 42, 43, 44, 1]], np.int64)
DECODER_TOKENS = np.array([[0, 3, 19, 6, 1, 11], [0, 25, 25, 2, 9, 1], [0, 47, 1, 12, 13, 14]],
                          np.int64)


def _hf_model(feed_forward_proj: str, *, tie_word_embeddings: bool = True,
              untie_head: bool = False) -> transformers.T5ForConditionalGeneration:
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      dropout_rate=0.0, feed_forward_proj=feed_forward_proj,
      tie_word_embeddings=tie_word_embeddings)
  model = transformers.T5ForConditionalGeneration(config)
  with torch.no_grad():
    # HF initialises norms to 1 and some kernels to tiny values; randomise all
    # so a swapped or transposed tensor cannot go unnoticed.
    for param in model.parameters():
      param.normal_(0.0, 0.5)
  if untie_head:
    # transformers 5 ties lm_head to shared; a new parameter unties it, as in
    # real T5 1.1 / Flan-T5 checkpoints.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 0.5)
  return model.eval()


def _hf_logits(model: transformers.T5ForConditionalGeneration) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ENCODER_TOKENS),
                attention_mask=torch.tensor(ENCODER_TOKENS > 0).long(),
                decoder_input_ids=torch.tensor(DECODER_TOKENS))
  return out.logits.numpy()


def _our_logits(path: Path) -> tuple[hf_t5.T5Config, np.ndarray]:
  config, params = hf_t5.load_hf_t5(path)
  model = encoder_decoder.build_model(config)
  batch = {"encoder_input_tokens": ENCODER_TOKENS.astype(np.int32),
           "decoder_input_tokens": DECODER_TOKENS.astype(np.int32),
           # Every decoder position valid, as in the HF call above.
           "decoder_target_tokens": np.ones_like(DECODER_TOKENS, np.int32)}
  abstract = model.param_logical_axes({k: v.shape for k, v in batch.items()})
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      abstract, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  return config, np.asarray(model.compute_logits(params, batch))


@pytest.mark.parametrize("proj,tie,untie,expect_activations,expect_tied", [
    ("relu", True, False, ("relu",), True),                   # T5 1.0
    ("gated-gelu", False, True, ("gelu", "linear"), False),   # T5 1.1 / Flan-T5
    ("gated-gelu", False, False, ("gelu", "linear"), False),  # 1.1 saved by transformers 5
    ("gated-silu", True, True, ("silu", "linear"), False),    # untied head, scaled output
])
def test_logits_match_pytorch(tmp_path, proj, tie, untie, expect_activations, expect_tied):
  model = _hf_model(proj, tie_word_embeddings=tie, untie_head=untie)
  model.save_pretrained(tmp_path)
  config, ours = _our_logits(tmp_path)
  assert config.mlp_activations == expect_activations
  assert config.logits_via_embedding is expect_tied
  assert (config.emb_dim, config.num_encoder_layers, config.num_decoder_layers) == (32, 2, 3)
  np.testing.assert_allclose(ours, _hf_logits(model), atol=1e-4, rtol=1e-4)


def test_sharded_checkpoint(tmp_path):
  model = _hf_model("gated-gelu", tie_word_embeddings=False, untie_head=True)
  model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / hf_t5.INDEX_FILE).is_file()
  shards = json.loads((tmp_path / hf_t5.INDEX_FILE).read_text())["weight_map"].values()
  assert len(set(shards)) > 3
  _, ours = _our_logits(tmp_path)
  np.testing.assert_allclose(ours, _hf_logits(model), atol=1e-4, rtol=1e-4)


def test_bfloat16_checkpoint_widens_exactly(tmp_path):
  model = _hf_model("relu").to(torch.bfloat16)
  model.save_pretrained(tmp_path)
  _, params = hf_t5.load_hf_t5(tmp_path)
  expected = model.shared.weight.float().detach().numpy()
  np.testing.assert_array_equal(params["token_embedder"]["embedding"], expected)
  wo = model.decoder.block[2].layer[2].DenseReluDense.wo.weight.float().detach().numpy()
  np.testing.assert_array_equal(params["decoder"]["layers_2"]["mlp"]["wo"], wo.T)


def test_missing_tensor_and_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf_t5.load_hf_t5(tmp_path)
  model = _hf_model("relu")
  model.save_pretrained(tmp_path)
  (tmp_path / "model.safetensors").rename(tmp_path / "other.safetensors")
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf_t5.load_hf_t5(tmp_path)

  from safetensors.numpy import load_file, save_file
  tensors = load_file(tmp_path / "other.safetensors")
  del tensors["decoder.block.1.layer.1.EncDecAttention.k.weight"]
  tensors["encoder.extra.weight"] = np.zeros(3, np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(KeyError, match=r"decoder\.block\.1\.layer\.1\.EncDecAttention\.k\.weight"):
    hf_t5.load_hf_t5(tmp_path)
  tensors["decoder.block.1.layer.1.EncDecAttention.k.weight"] = np.zeros((32, 32), np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match="encoder.extra.weight"):
    hf_t5.load_hf_t5(tmp_path)
  tensors["decoder.block.1.layer.1.EncDecAttention.k.weight"] = np.zeros((32, 31), np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=r"has shape \(32, 31\)"):
    hf_t5.load_hf_t5(tmp_path)
