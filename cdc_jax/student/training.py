"""The student's training loop: a task or mixture, a model, a resumable run.

Restarting the same run resumes from the latest checkpoint in ``model_dir``
(parameters, optimizer state and data position), restored into the state's
abstract shapes (nothing is initialised first), so a preempted run ends
bitwise identical to an uninterrupted one on CPU (with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``: multi-threaded matmuls may
sum in a different order under load). The command line is
``python -m cdc_jax.train``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import optax

from cdc_jax import arguments, progress
from cdc_jax.models import partitioning
from cdc_jax.student import checkpoints, input_pipeline
from cdc_jax.student import trainer as trainer_lib
from cdc_jax.tasks import lengths as lengths_lib


def _initial_params(trainer: trainer_lib.Trainer, init_from: str) -> Any:
  """A HF T5 checkpoint's, GGUF file's, HF Llama dir's or cdc checkpoint's parameters."""
  path = Path(init_from)
  if (path / "config.json").exists() or path.is_file():  # HF T5 dir, GGUF file or HF Llama dir.
    params = trainer.model.load_external(path)
  else:
    params, _ = checkpoints.restore_params(path)
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), trainer.abstract_state()["params"])
  got = jax.tree.map(lambda x: (tuple(x.shape), x.dtype), params)
  if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
    raise ValueError(f"parameters in {init_from} do not match the model config "
                     "(compare vocab size, sizes and T5 version)")
  return params


def _check_vocabulary(model: Any, mixture_or_task_name: str) -> None:
  import seqio

  for name, feature in seqio.get_mixture_or_task(mixture_or_task_name).output_features.items():
    if feature.vocabulary.vocab_size > model.config.vocab_size:
      raise ValueError(
          f"{mixture_or_task_name}: the '{name}' vocabulary has {feature.vocabulary.vocab_size} "
          f"ids but the model's embedding only {model.config.vocab_size} rows; raise VOCAB_SIZE")


def train(*, model: Any, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int | str], batch_size: int, train_steps: int,
          model_dir: str, optimizer: optax.GradientTransformation,
          learning_rate_fn: optax.Schedule | None, pack: bool, seed: int,
          mesh_shape: Sequence[int], accumulation_steps: int, checkpoint_every: int,
          keep_checkpoints: int | None, log_every: int, init_from: str | None,
          check_training_data: Callable[..., Any] | None,
          register_tasks: Callable[[], Any] | None, tensorboard: bool = True) -> dict[str, float]:
  """Trains ``model`` and returns the metrics of the last logged step.

  Every setting but ``tensorboard`` is required: the values live in
  ``gin/runs/train.gin`` (and the experiment files that override its macros).

  Args:
    model: the model wrapper (``encoder_decoder.build_model`` for T5,
      ``decoder_only.build_model`` for a Llama-family student).
    mixture_or_task_name: a registered SeqIO task or mixture.
    task_feature_lengths: {"inputs": ..., "targets": ...}: tokens, or a percentile of
      the training data ('p95'); cut examples are counted in ``model_dir/lengths.json``.
    batch_size: global batch size.
    train_steps: total optimizer steps (a resumed run continues to this).
    model_dir: checkpoints, ``metrics.jsonl``, TensorBoard events.
    optimizer: e.g. ``optimizers.adafactor(learning_rate=learning_rate_fn)``.
    learning_rate_fn: the optimizer's schedule, logged as ``learning_rate`` (None: not logged).
    pack: pack examples (seqio EncDecFeatureConverter).
    seed: parameter init, dropout and data order.
    mesh_shape: (data, model) mesh; -1 takes the remaining devices.
    accumulation_steps: micro-batches per step (gradient accumulation).
    checkpoint_every: steps between checkpoints (and one at the end).
    keep_checkpoints: checkpoints kept (the latest ones; None: all).
    log_every: steps between metric writes and the non-finite check.
    init_from: a HF T5 checkpoint directory or a cdc checkpoint to start from.
    check_training_data: called as ``(model_dir, mixture_or_task_name, write=...)``
      once the tasks are registered, on every process (``write`` on process 0);
      gin binds the consent check that refuses withdrawn records and writes
      ``training_manifest.json`` (``training_manifest.write_training_manifest``).
    register_tasks: called first, to register tasks (gin: @catalog.register_tasks; None:
      the caller registered them).
    tensorboard: also write TensorBoard event files.
  """
  arguments.require_non_negative_int(train_steps=train_steps)  # 0: save the initial student.
  arguments.require_positive_int(batch_size=batch_size, accumulation_steps=accumulation_steps,
                                 checkpoint_every=checkpoint_every, log_every=log_every)
  arguments.require_feature_lengths(task_feature_lengths)
  if register_tasks is not None:
    register_tasks()
  _check_vocabulary(model, mixture_or_task_name)
  is_main = jax.process_index() == 0
  # Percentile lengths ('p95') become numbers; examples the lengths cut are counted and warned of.
  task_feature_lengths = lengths_lib.audit_feature_lengths(
      mixture_or_task_name, task_feature_lengths, split="train",
      out_dir=model_dir if is_main else None)
  if check_training_data is not None:
    check_training_data(model_dir, mixture_or_task_name, write=is_main)
  data = input_pipeline.DataConfig(mixture_or_task_name=mixture_or_task_name,
                                   task_feature_lengths=dict(task_feature_lengths),
                                   batch_size=batch_size, pack=pack, seed=seed,
                                   feature_converter_cls=model.FEATURE_CONVERTER_CLS)
  trainer = trainer_lib.Trainer(
      model, optimizer, partitioning.make_mesh(mesh_shape),
      input_pipeline.model_feature_shapes(data),
      config=trainer_lib.TrainerConfig(accumulation_steps=accumulation_steps, dropout_seed=seed),
      learning_rate_fn=learning_rate_fn)
  checkpointer = checkpoints.Checkpointer(model_dir, keep=keep_checkpoints)
  base_weights = model.base_fingerprint()

  def meta(consumed: int) -> dict[str, Any]:
    return {"consumed_batches": consumed, "seed": seed,
            "mixture_or_task_name": mixture_or_task_name, "base_weights": base_weights}

  latest = checkpointer.latest_step()
  if latest is not None:  # Resume: restore into the abstract state, initialise nothing.
    state, saved = checkpointer.restore(latest, trainer.abstract_state())
    checkpoints.check_base_weights(saved, base_weights, model_dir)
    start, consumed = int(state["step"]), int(saved["consumed_batches"])
    logging.info("resumed from step %d (%d batches consumed)", start, consumed)
  else:
    state = trainer.init_state(seed, params=_initial_params(trainer, init_from)
                               if init_from else None)
    start, consumed = 0, 0
  if start >= train_steps:
    logging.info("already trained to step %d >= train_steps %d", start, train_steps)
    if latest is None:  # train_steps=0: the untrained (e.g. pretrained) student, for zero-shot eval.
      checkpointer.save(0, state, meta(0))
    checkpointer.close()
    return {}

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
      checkpointer.save(done, state, meta(consumed))
  checkpointer.close()
  if writer:
    writer.close()
  return last
