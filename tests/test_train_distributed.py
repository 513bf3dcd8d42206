"""Sharded training on 8 fake CPU devices, and a two-process (multi-host) run."""

import json
import os
import subprocess
import sys
import textwrap

from tests import train_helpers

SHARDED_SCRIPT = textwrap.dedent("""
    import json, os
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    from cdc_jax.models import partitioning
    from cdc_jax.student import input_pipeline, optimizers
    from cdc_jax.student.trainer import Trainer, TrainerConfig
    from cdc_jax.models.encoder_decoder import build_model
    from cdc_jax.models.t5_config import t5_config
    from cdc_jax.tasks import catalog

    assert jax.device_count() == 8, jax.devices()
    catalog.register_tasks()
    data = input_pipeline.DataConfig(mixture_or_task_name="cdc.commonsense.L6.cot_label",
                                     task_feature_lengths={"inputs": 32, "targets": 32},
                                     batch_size=8, seed=1)
    batch = next(input_pipeline.train_batches(data))
    model = build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))
    shapes = input_pipeline.model_feature_shapes(data)
    out = {}
    for name, mesh in {"4x2": partitioning.make_mesh((4, 2)),
                       "1x1": partitioning.make_mesh((1, 1), devices=jax.devices()[:1])}.items():
      opt = optimizers.adafactor(learning_rate=1e-2)
      trainer = Trainer(model, opt, mesh, shapes, config=TrainerConfig(accumulation_steps=2))
      state = trainer.init_state(0)
      specs = {k: str(state["params"]["decoder"]["layers_0"]["mlp"][k].sharding.spec)
               for k in ("wi_0", "wo")}
      specs["embedding"] = str(state["params"]["token_embedder"]["embedding"].sharding.spec)
      specs["query"] = str(state["params"]["encoder"]["layers_0"]["attention"]["query"].sharding.spec)
      losses = []
      for _ in range(2):
        state, metrics = trainer.train_step(state, trainer.place_batch(batch))
        losses.append(float(metrics["loss"]))
      params = jax.device_get(state["params"])
      out[name] = {"specs": specs, "losses": losses,
                   "devices": len(state["params"]["decoder"]["layers_0"]["mlp"]["wi_0"].sharding.device_set),
                   "wo": np.asarray(params["decoder"]["layers_0"]["mlp"]["wo"]).tolist()}
    print("RESULT" + json.dumps(out))
""")


def _run_script(script, env):
  proc = subprocess.run([sys.executable, "-c", script], cwd=train_helpers.REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  return json.loads(line[len("RESULT"):])


def test_data_x_model_parallel_training_matches_one_device():
  env = dict(os.environ, PYTHONPATH=str(train_helpers.REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = _run_script(SHARDED_SCRIPT, env)
  sharded, single = out["4x2"], out["1x1"]
  assert sharded["specs"] == {"wi_0": "P(None, 'model')",
                              "wo": "P('model', None)",
                              "embedding": "P('model', None)",
                              "query": "P(None, 'model', None)"}
  assert sharded["devices"] == 8 and single["devices"] == 1
  for a, b in zip(sharded["losses"], single["losses"]):
    assert abs(a - b) < 1e-5 * max(1.0, abs(b))
  assert sharded["losses"][1] < sharded["losses"][0]
  import numpy as np
  np.testing.assert_allclose(sharded["wo"], single["wo"], rtol=1e-4, atol=1e-6)


def test_two_processes_train_one_model_and_agree_on_the_loss(tmp_path):
  args = train_helpers.tiny_train_args(tmp_path / "run", "cdc.arithmetic.L6.cot_label", steps=3,
                                       extra=("--gin.MESH_SHAPE=(2, 2)", "--gin.LOG_EVERY=1",
                                              "--gin.CHECKPOINT_EVERY=3"))
  errors = train_helpers.run_two_processes(
      "cdc_jax.train", args, env={pid: {"CDC_CACHE_DIR": str(tmp_path / f"cache{pid}")}
                                  for pid in range(2)})
  losses = []
  for err in errors:
    lines = [l for l in err.splitlines() if l.startswith("train cdc.arithmetic")]
    assert len(lines) == 3
    losses.append([l.split("| loss ")[1].split(" ")[0] for l in lines])
  assert losses[0] == losses[1]
  rows = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]  # Only process 0 writes metrics.
  assert [f"{r['loss']:.3f}" for r in rows] == losses[0]
