"""Sharding by logical axis names on 8 fake CPU devices (run in a subprocess).

The checks live in ``_check_on_8_devices``; the pytest test re-runs this file
as a script with XLA_FLAGS forcing 8 host devices, since the device count is
fixed when JAX first initialises.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdc_jax.models import partitioning

REPO = Path(__file__).resolve().parent.parent


def test_sharding_on_8_fake_devices():
  # Low XLA optimisation: these tiny programs then compile about twice as fast.
  flags = ("--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
           "--xla_llvm_disable_expensive_passes=true")
  env = {**os.environ, "XLA_FLAGS": flags,
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith("ALL CHECKS PASSED"), result.stdout


def test_make_mesh_rejects_bad_shapes():
  with pytest.raises(ValueError, match="needs 6 devices"):
    partitioning.make_mesh((3, 2))
  with pytest.raises(ValueError, match="at most one -1"):
    partitioning.make_mesh((-1, -1))
  with pytest.raises(ValueError, match="differ in length"):
    partitioning.make_mesh((1,))


def test_rules_for_mesh_drops_missing_axes():
  import jax
  mesh = partitioning.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  rules = dict(partitioning.rules_for_mesh(mesh))
  assert rules["batch"] == "data" and rules["mlp"] is None and rules["vocab"] is None
  with pytest.raises(ValueError, match=r"\['mystery'\]"):
    partitioning.check_rules_cover({"w": jax.sharding.PartitionSpec("embed", "mystery")})


def _check_on_8_devices() -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import PartitionSpec as P

  from cdc_jax.models import encoder_decoder, t5_config

  assert jax.device_count() == 8, jax.devices()
  config = t5_config.t5_config("tiny", vocab_size=32, dropout_rate=0.0)
  model = encoder_decoder.build_model(config)
  shapes = {"encoder_input_tokens": (8, 6), "decoder_input_tokens": (8, 5)}
  rng = np.random.default_rng(0)
  enc = rng.integers(2, 32, (8, 6)).astype(np.int32)
  enc[:, 4], enc[:4, 5] = 1, 0
  targets = rng.integers(2, 32, (8, 5)).astype(np.int32)
  targets[:, 3:] = [1, 0]
  batch = {"encoder_input_tokens": enc, "decoder_target_tokens": targets,
           "decoder_input_tokens": np.asarray(encoder_decoder.shift_right(targets))}
  logical = model.param_logical_axes(shapes)
  logits_fn = jax.jit(model.compute_logits)
  loss_fn = jax.jit(model.loss_fn)
  predict = jax.jit(model.predict_batch, static_argnames=("max_decode_len", "num_beams"))

  for mesh_shape in ((4, 2), (8, 1)):
    mesh = partitioning.make_mesh(mesh_shape)
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
    shardings = partitioning.param_shardings(logical, mesh)
    if mesh_shape == (4, 2):
      # An rbg key: threefry init kernels take tens of seconds to compile on CPU.
      params = jax.jit(functools.partial(model.init_params, input_shapes=shapes),
                       out_shardings=shardings)(jax.random.key(0, impl="unsafe_rbg"))
    else:
      params = jax.device_put(host_params, shardings)  # the same values, data parallel
    layer = params["encoder"]["layers_0"]
    expected = {
        "wi_0": (layer["mlp"]["wi_0"], P(None, "model")),
        "wo": (layer["mlp"]["wo"], P("model", None)),
        "query": (layer["attention"]["query"], P(None, "model", None)),
        "out": (layer["attention"]["out"], P("model", None, None)),
        "embedding": (params["token_embedder"]["embedding"], P("model", None)),
        "logits": (params["decoder"]["logits_kernel"], P(None, "model")),
        "relpos": (params["decoder"]["relpos_bias"]["rel_embedding"], P("model", None)),
        "scale": (layer["pre_mlp_layer_norm"]["scale"], P(None)),
    }
    for name, (array, spec) in expected.items():
      assert array.sharding == jax.sharding.NamedSharding(mesh, spec), (
          mesh_shape, name, array.sharding)
    # Each device holds 1/model of the MLP columns of the 64 x 128 kernel.
    assert {s.data.shape for s in layer["mlp"]["wi_0"].addressable_shards} == {
        (64, 128 // mesh_shape[1])}

    # Unsharded reference: the same values on one device.
    host_params = jax.device_get(params)
    assert np.std(host_params["decoder"]["layers_0"]["mlp"]["wo"]) > 0.01
    sharded_batch = partitioning.shard_batch(batch, mesh)
    assert sharded_batch["encoder_input_tokens"].sharding.spec == P("data", None)
    with partitioning.activate(mesh):
      logits = jax.jit(model.compute_logits)(params, sharded_batch)
      constrained = jax.jit(model.compute_logits).lower(params, sharded_batch).as_text()
    free = jax.jit(model.compute_logits).lower(params, sharded_batch).as_text()
    # Activation constraints are emitted only under activate().
    assert free.count("sharding_constraint") == 0 < constrained.count("sharding_constraint")
    # The logits constraint ('batch', 'length', 'vocab') took effect.
    assert logits.sharding.is_equivalent_to(
        jax.sharding.NamedSharding(mesh, P("data", None, "model")), 3), logits.sharding
    np.testing.assert_allclose(np.asarray(logits), np.asarray(logits_fn(host_params, batch)),
                               atol=1e-5, rtol=1e-5)
    if mesh_shape[1] == 1:
      continue  # data parallelism: the (4, 2) checks below cover the rest
    with partitioning.activate(mesh):
      loss, _ = jax.jit(model.loss_fn)(params, sharded_batch, None)
      tokens = jax.jit(model.predict_batch, static_argnames=("max_decode_len", "num_beams"))(
          params, sharded_batch, max_decode_len=4)
    np.testing.assert_allclose(float(loss), float(loss_fn(host_params, batch, None)[0]),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(tokens),
                                  np.asarray(predict(host_params, batch, max_decode_len=4)))
  print("ALL CHECKS PASSED")


if __name__ == "__main__":
  _check_on_8_devices()
