"""The teacher decoder sharded on a (data, model) = (2, 4) mesh of 8 fake CPU devices.

The checks run in a subprocess because the device count must be set (XLA_FLAGS)
before jax is imported; the child prints a JSON report that we assert on.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json
    import flax.linen as nn
    import jax
    import numpy as np
    from cdc_jax.models import llama, llama_sharding
    from cdc_jax.teacher import generation

    cfg = llama.LlamaConfig(vocab_size=128, hidden=32, intermediate=64, num_layers=2,
                            num_heads=8, num_kv_heads=4, head_dim=8, max_seq_len=64,
                            tie_word_embeddings=False)
    rng = np.random.default_rng(0)
    params_np = jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32),
                             nn.unbox(llama.abstract_params(cfg)))
    mesh = llama_sharding.make_teacher_mesh((2, 4))
    shardings = llama_sharding.param_shardings(llama.abstract_params(cfg), mesh)
    params = jax.device_put(params_np, shardings)
    tokens = rng.integers(0, 128, (4, 10)).astype(np.int32)
    model = llama.Llama(cfg)
    forward = lambda p, t: model.apply({"params": p}, t)[0]
    ref = np.asarray(jax.jit(forward)(jax.device_put(params_np, jax.devices()[0]), tokens))
    with jax.set_mesh(mesh), nn.logical_axis_rules(llama_sharding.TEACHER_RULES):
      out = jax.jit(forward)(params, tokens)

    class Tok:
      vocab_size, pad_id, stop_ids, chat_template = 128, 0, (), None
    prompts = [[5, 9, 11], [12], [50, 51, 52, 53], [7, 8]]
    plain = generation.Generator(cfg, params_np, Tok()).generate_ids(prompts, max_new_tokens=5)
    sharded = generation.Generator(cfg, params, Tok(), mesh=mesh).generate_ids(
        prompts, max_new_tokens=5)
    # 18 shared tokens: a 16-token prefix is prefilled once at batch 1.
    prefixed = [list(range(20, 38)) + p for p in prompts]
    plain_prefixed = generation.Generator(cfg, params_np, Tok(), share_prefix=False).generate_ids(
        prefixed, max_new_tokens=5)
    sharded_prefixed = generation.Generator(cfg, params, Tok(), mesh=mesh).generate_ids(
        prefixed, max_new_tokens=5)

    # The same weights through the safetensors loader, placed on the mesh tensor by tensor.
    import tempfile
    from safetensors.numpy import save_file
    from cdc_jax.models import llama_weights
    hf = {"model.embed_tokens.weight": params_np["embed_tokens"],
          "lm_head.weight": params_np["lm_head"]["weight"],
          "model.norm.weight": params_np["final_norm"]["scale"]}
    for i in range(cfg.num_layers):
      p, l = f"model.layers.{i}.", params_np[f"layers_{i}"]
      hf[p + "input_layernorm.weight"] = l["input_norm"]["scale"]
      hf[p + "post_attention_layernorm.weight"] = l["post_attention_norm"]["scale"]
      for name in ("q_proj", "k_proj", "v_proj"):
        w = l["attn"][name]["weight"]
        hf[p + f"self_attn.{name}.weight"] = w.reshape(-1, w.shape[-1])
      hf[p + "self_attn.o_proj.weight"] = l["attn"]["o_proj"]["weight"].reshape(cfg.hidden, -1)
      for name in ("gate_proj", "up_proj", "down_proj"):
        hf[p + f"mlp.{name}.weight"] = l["mlp"][name]["weight"]
    hf_dir = tempfile.mkdtemp()
    save_file({k: np.ascontiguousarray(v) for k, v in hf.items()}, hf_dir + "/model.safetensors")
    json.dump({"model_type": "llama", "vocab_size": 128, "hidden_size": 32,
               "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 8, "max_position_embeddings": 64,
               "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False},
              open(hf_dir + "/config.json", "w"))
    _, loaded = llama_weights.load_safetensors(hf_dir, mesh=mesh)
    loaded_specs_equal = jax.tree.all(jax.tree.map(
        lambda a, b: a.sharding.spec == b.sharding.spec, loaded, params))
    loaded_values_equal = jax.tree.all(jax.tree.map(
        lambda a, b: bool((np.asarray(a) == b).all()), loaded, params_np))

    layer = params["layers_0"]
    print(json.dumps({
        "loaded_specs_equal": bool(loaded_specs_equal),
        "loaded_values_equal": bool(loaded_values_equal),
        "devices": len(jax.devices()),
        "max_abs_diff": float(np.abs(np.asarray(out) - ref).max()),
        "logits_spec": list(out.sharding.spec),
        "specs": {
            "embed_tokens": list(params["embed_tokens"].sharding.spec),
            "lm_head": list(params["lm_head"]["weight"].sharding.spec),
            "q_proj": list(layer["attn"]["q_proj"]["weight"].sharding.spec),
            "k_proj": list(layer["attn"]["k_proj"]["weight"].sharding.spec),
            "o_proj": list(layer["attn"]["o_proj"]["weight"].sharding.spec),
            "gate_proj": list(layer["mlp"]["gate_proj"]["weight"].sharding.spec),
            "down_proj": list(layer["mlp"]["down_proj"]["weight"].sharding.spec),
            "input_norm": list(layer["input_norm"]["scale"].sharding.spec),
        },
        "q_proj_shard_shape": list(layer["attn"]["q_proj"]["weight"].addressable_shards[0].data.shape),
        "generation_equal": plain == sharded,
        "prefix_generation_equal": plain_prefixed == sharded_prefixed,
    }))
""")


def test_sharded_forward_and_param_shardings():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8
  assert report["max_abs_diff"] < 1e-5
  assert report["logits_spec"] == ["data", None, "model"]
  assert report["specs"] == {
      "embed_tokens": ["model", None],
      "lm_head": ["model", None],
      "q_proj": ["model", None, None],
      "k_proj": ["model", None, None],
      "o_proj": [None, "model", None],
      "gate_proj": ["model", None],
      "down_proj": [None, "model"],
      "input_norm": [None],
  }
  assert report["q_proj_shard_shape"] == [2, 8, 32]  # 8 heads over model=4.
  assert report["generation_equal"] is True
  assert report["loaded_specs_equal"] is True and report["loaded_values_equal"] is True
  assert report["prefix_generation_equal"] is True
