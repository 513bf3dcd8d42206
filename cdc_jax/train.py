"""Train a T5 student on a SeqIO task or mixture.

    python -m cdc_jax.train --gin_file=gin/experiments/embedded_tiny.gin \
        --gin.MODEL_DIR="'/tmp/cdc_run'" --gin.TRAIN_STEPS=200

Restarting the same command resumes from the latest checkpoint in
``model_dir`` (parameters, optimizer state and data position), so a
preempted run ends bitwise identical to an uninterrupted one on CPU (with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``: multi-threaded matmuls may
sum in a different order under load).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import optax

from cdc_jax import checkpoints, consent, distributed, input_pipeline, optimizers, partitioning
from cdc_jax import arguments, progress
from cdc_jax import trainer as trainer_lib
from cdc_jax.tasks import lengths as lengths_lib


def _load_initial_params(trainer: trainer_lib.Trainer, state: dict, init_from: str) -> dict:
  """Replaces fresh parameters with a HF T5 checkpoint's or a cdc checkpoint's."""
  path = Path(init_from)
  if (path / "config.json").exists() or path.is_file():  # HF T5 dir, GGUF file or HF Llama dir.
    params = trainer.model.load_external(path)
  else:
    params, _ = checkpoints.restore_params(path)
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), state["params"])
  got = jax.tree.map(lambda x: (tuple(x.shape), x.dtype), params)
  if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
    raise ValueError(f"parameters in {init_from} do not match the model config "
                     "(compare vocab size, sizes and T5 version)")
  state["params"] = jax.device_put(params, trainer.param_shardings)
  return state


def _check_vocabulary(model: Any, mixture_or_task_name: str) -> None:
  import seqio

  for name, feature in seqio.get_mixture_or_task(mixture_or_task_name).output_features.items():
    if feature.vocabulary.vocab_size > model.config.vocab_size:
      raise ValueError(
          f"{mixture_or_task_name}: the '{name}' vocabulary has {feature.vocabulary.vocab_size} "
          f"ids but the model's embedding only {model.config.vocab_size} rows; raise VOCAB_SIZE")


def train(*, model: Any, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int | str], batch_size: int, train_steps: int,
          model_dir: str, optimizer: optax.GradientTransformation | None = None,
          learning_rate_fn: optax.Schedule | None = None, pack: bool = True, seed: int = 0,
          mesh_shape: Sequence[int] = (-1, 1), accumulation_steps: int = 1,
          checkpoint_every: int = 1000, keep_checkpoints: int | None = 3, log_every: int = 50,
          init_from: str | None = None, register_tasks: Callable[[], Any] | None = None,
          tensorboard: bool = True,
          simulate_preemption_at_step: int | None = None) -> dict[str, float]:
  """Trains ``model`` and returns the metrics of the last logged step.

  Args:
    model: the model wrapper (``encoder_decoder.build_model`` for T5,
      ``decoder_only.build_model`` for a Llama-family student).
    mixture_or_task_name: a registered SeqIO task or mixture.
    task_feature_lengths: {"inputs": ..., "targets": ...}: tokens, or a percentile of
      the training data ('p95'); cut examples are counted in ``model_dir/lengths.json``.
    batch_size: global batch size.
    train_steps: total optimizer steps (a resumed run continues to this).
    model_dir: checkpoints, ``metrics.jsonl``, TensorBoard events.
    optimizer: default Adafactor with ``learning_rate_fn``.
    learning_rate_fn: default T5's rsqrt schedule (base 1.0, 10k warm-up).
    pack: pack examples (seqio EncDecFeatureConverter).
    seed: parameter init and data order.
    mesh_shape: (data, model) mesh; -1 takes the remaining devices.
    accumulation_steps: micro-batches per step (gradient accumulation).
    checkpoint_every: steps between checkpoints (and one at the end).
    keep_checkpoints: checkpoints kept (the latest ones).
    log_every: steps between metric writes and the non-finite check.
    init_from: a HF T5 checkpoint directory or a cdc checkpoint to start from.
    register_tasks: called first, to register tasks (gin: @catalog.register_tasks).
    tensorboard: also write TensorBoard event files.
    simulate_preemption_at_step: fault injection for drills and tests: after
      saving the checkpoint of this step, the process SIGKILLs itself.
  """
  arguments.require_non_negative_int(train_steps=train_steps)  # 0: save the initial student.
  arguments.require_positive_int(batch_size=batch_size, accumulation_steps=accumulation_steps,
                                 checkpoint_every=checkpoint_every, log_every=log_every)
  arguments.require_feature_lengths(task_feature_lengths)
  if register_tasks is not None:
    register_tasks()
  _check_vocabulary(model, mixture_or_task_name)
  # Percentile lengths ('p95') become numbers; examples the lengths cut are counted and warned of.
  task_feature_lengths = lengths_lib.audit_feature_lengths(
      mixture_or_task_name, task_feature_lengths, split="train",
      out_dir=model_dir if jax.process_index() == 0 else None)
  # Every process refuses withdrawn data; process 0 records what the run uses.
  consent.write_training_manifest(model_dir, mixture_or_task_name, write=jax.process_index() == 0)
  learning_rate_fn = learning_rate_fn or optimizers.rsqrt_schedule()
  optimizer = optimizer or optimizers.adafactor(learning_rate=learning_rate_fn)
  data = input_pipeline.DataConfig(mixture_or_task_name=mixture_or_task_name,
                                   task_feature_lengths=dict(task_feature_lengths),
                                   batch_size=batch_size, pack=pack, seed=seed,
                                   feature_converter_cls=model.FEATURE_CONVERTER_CLS)
  mesh = partitioning.make_mesh(mesh_shape)
  trainer = trainer_lib.Trainer(
      model, optimizer, mesh, input_pipeline.model_feature_shapes(data),
      config=trainer_lib.TrainerConfig(accumulation_steps=accumulation_steps, dropout_seed=seed),
      learning_rate_fn=learning_rate_fn)
  state = trainer.init_state(seed)
  checkpointer = checkpoints.Checkpointer(model_dir, keep=keep_checkpoints)
  start, consumed = 0, 0
  latest = checkpointer.latest_step()
  base_weights = model.base_fingerprint()
  if latest is not None:
    state, meta = checkpointer.restore(latest, state)
    checkpoints.check_base_weights(meta, base_weights, model_dir)
    start, consumed = int(state["step"]), int(meta["consumed_batches"])
    logging.info("resumed from step %d (%d batches consumed)", start, consumed)
  elif init_from:
    state = _load_initial_params(trainer, state, init_from)
  if start >= train_steps:
    logging.info("already trained to step %d >= train_steps %d", start, train_steps)
    if latest is None:  # train_steps=0: the untrained (e.g. pretrained) student, for zero-shot eval.
      checkpointer.save(0, state, {"consumed_batches": 0, "seed": seed,
                                   "mixture_or_task_name": mixture_or_task_name,
                                   "base_weights": base_weights})
    checkpointer.close()
    return {}

  is_main = jax.process_index() == 0
  writer = progress.MetricsWriter(model_dir, tensorboard=tensorboard) if is_main else None
  bar = progress.Progress(train_steps, label=f"train {mixture_or_task_name}", unit="steps",
                          start=start, interval=10.0)
  batches = input_pipeline.train_batches(data, skip_batches=consumed)
  pending: list[tuple[int, dict]] = []
  tokens, t_last, last = 0, time.perf_counter(), {}
  for step in range(start, train_steps):
    local = next(batches)
    tokens += input_pipeline.count_tokens(local) * jax.process_count()
    state, metrics = trainer.train_step(state, trainer.place_batch(local))
    consumed += 1
    pending.append((step + 1, metrics))
    done = step + 1
    if done % log_every == 0 or done == train_steps:
      trainer_lib.check_finite([(s, m["loss"]) for s, m in pending])
      elapsed = time.perf_counter() - t_last
      last = {k: float(v) for k, v in jax.device_get(pending[-1][1]).items()}
      last.update(steps_per_sec=len(pending) / elapsed, tokens_per_sec=tokens / elapsed)
      if writer:
        writer.write(done, last)
      bar.update(len(pending), force=True, extra=(
          f"loss {last['loss']:.3f} | tok acc {100 * last['accuracy']:.1f}% | "
          f"lr {last.get('learning_rate', float('nan')):.2e} | {last['tokens_per_sec']:.0f} tok/s"))
      pending, tokens, t_last = [], 0, time.perf_counter()
    if done % checkpoint_every == 0 or done == train_steps:
      checkpointer.save(done, state, {"consumed_batches": consumed, "seed": seed,
                                      "mixture_or_task_name": mixture_or_task_name,
                                      "base_weights": base_weights})
      if done == simulate_preemption_at_step:
        os.kill(os.getpid(), signal.SIGKILL)
  checkpointer.close()
  if writer:
    writer.close()
  return last


def main(argv: Sequence[str] | None = None) -> None:
  from cdc_jax import config_cli

  argv = list(sys.argv[1:] if argv is None else argv)
  bindings, rest = config_cli.split_gin_bindings(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  config_cli.add_gin_flags(parser)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--multihost_auto", action="store_true",
                      help="let JAX detect the cluster (TPU pods, Slurm)")
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  distributed.initialize(coordinator_address=args.coordinator_address,
                         num_processes=args.num_processes, process_id=args.process_id,
                         auto=args.multihost_auto)
  config_cli.parse_gin(args.gin_file, bindings, args.gin_search_path)
  config_cli.require_macros('cdc_jax.train', 'train')
  metrics = config_cli.configured('cdc_jax.train', 'train')()
  if jax.process_index() == 0:
    print(json.dumps({"final_metrics": metrics}, sort_keys=True))


if __name__ == "__main__":
  main()
