"""HF safetensors loading: tiny random transformers Llama models round-trip to our decoder."""

import json

import numpy as np
import pytest
import torch
import transformers

from cdc_jax.models import llama, llama_weights

TOKENS = np.array([[3, 17, 99, 5, 64, 2, 120, 7, 7, 31], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


def _save_hf_model(path, *, tie: bool, rope_llama3: bool, shard: bool,
                   dtype: torch.dtype = torch.float32):
  torch.manual_seed(0)
  rope = {"rope_type": "default", "rope_theta": 500.0}
  if rope_llama3:
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
  config = transformers.LlamaConfig(
      vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
      rms_norm_eps=1e-6, tie_word_embeddings=tie, rope_parameters=rope)
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():  # Larger than the 0.02 init, so logits differ clearly by position.
    for p in model.parameters():
      p.mul_(10.0) if p.ndim > 1 else p.add_(0.1 * torch.randn_like(p))
    for p in model.parameters():  # Saved in ``dtype`` (Llama-3 checkpoints are bfloat16).
      p.copy_(p.to(dtype).float())
    # The reference runs in float32 on exactly the saved values (converting the
    # model itself would also round its RoPE frequency buffer).
    ref = model(torch.tensor(TOKENS)).logits.numpy()
  model.to(dtype).save_pretrained(path, max_shard_size="40KB" if shard else "1GB")
  return ref


@pytest.mark.parametrize("tie,rope_llama3,shard,dtype", [
    (True, False, False, torch.float32),
    (False, True, True, torch.float32),
    (False, True, True, torch.bfloat16),
])
def test_safetensors_round_trip_matches_transformers(tmp_path, tie, rope_llama3, shard, dtype):
  ref = _save_hf_model(tmp_path, tie=tie, rope_llama3=rope_llama3, shard=shard, dtype=dtype)
  assert (tmp_path / "model.safetensors.index.json").is_file() == shard
  config, params = llama_weights.load_safetensors(tmp_path)
  assert config.tie_word_embeddings == tie
  assert ("lm_head" in params) == (not tie)
  assert (config.num_heads, config.num_kv_heads, config.head_dim) == (4, 2, 8)
  if rope_llama3:
    assert config.rope_scaling == llama.RopeScaling(8.0, 1.0, 4.0, 64)
  else:
    assert config.rope_scaling is None and config.rope_theta == 500.0
  out, _ = llama.Llama(config).apply({"params": params}, TOKENS)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=1e-4)


def test_llama3_rope_frequencies_match_transformers():
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  hf_config = transformers.LlamaConfig(
      hidden_size=64, num_attention_heads=1, head_dim=64, max_position_embeddings=8192,
      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192})
  ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
  config = llama.LlamaConfig(vocab_size=8, hidden=64, intermediate=8, num_layers=1, num_heads=1,
                             num_kv_heads=1, head_dim=64, rope_theta=500000.0,
                             rope_scaling=llama.RopeScaling(8.0, 1.0, 4.0, 8192))
  np.testing.assert_allclose(llama.rope_inv_freq(config), ref.numpy(), rtol=1e-6)


def test_load_errors_name_file_and_field(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    llama_weights.load_safetensors(tmp_path)
  _save_hf_model(tmp_path, tie=True, rope_llama3=False, shard=False)
  cfg = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 65}))
  with pytest.raises(ValueError, match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(64, 32\), "
                                       r"expected \(65, 32\)"):
    llama_weights.load_safetensors(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
  with pytest.raises(KeyError, match="'lm_head.weight' not found"):
    llama_weights.load_safetensors(tmp_path)
  bad = {**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}
  (tmp_path / "config.json").write_text(json.dumps(bad))
  with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
    llama_weights.load_safetensors(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
  with pytest.raises(ValueError, match="model_type='mistral', expected 'llama'"):
    llama_weights.load_safetensors(tmp_path)


def test_read_safetensors_maps_bfloat16_exactly_and_names_bad_files(tmp_path):
  from safetensors.torch import save_file
  weights = {"a": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.arange(4.0)}
  save_file(weights, str(tmp_path / "w.safetensors"))
  tensors = llama_weights.read_safetensors(tmp_path / "w.safetensors")
  assert sorted(tensors) == ["a", "b"]
  assert tensors["a"].dtype == "bfloat16" and tensors["a"].shape == (3, 5)
  np.testing.assert_array_equal(tensors["a"].astype(np.float32), weights["a"].float().numpy())
  np.testing.assert_array_equal(tensors["b"], [0.0, 1.0, 2.0, 3.0])
  save_file({"i": torch.zeros(2, dtype=torch.int8)}, str(tmp_path / "int.safetensors"))
  with pytest.raises(ValueError, match=r"int.safetensors: tensor 'i' has dtype 'I8'"):
    llama_weights.read_safetensors(tmp_path / "int.safetensors")
  (tmp_path / "short.safetensors").write_bytes(b"\x01")
  with pytest.raises(ValueError, match="short.safetensors: not a safetensors file"):
    llama_weights.read_safetensors(tmp_path / "short.safetensors")
  data = (tmp_path / "w.safetensors").read_bytes()
  (tmp_path / "cut.safetensors").write_bytes(data[:-8])
  with pytest.raises(ValueError, match=r"cut.safetensors: tensor '.': data_offsets .* do not fit"):
    llama_weights.read_safetensors(tmp_path / "cut.safetensors")
