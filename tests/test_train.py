"""The trainer: learning, resuming bitwise after SIGKILL, evaluation of a checkpoint."""

import json

import jax
import numpy as np
import pytest

from cdc_jax import checkpoints, evaluate, optimizers, progress, train
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.tasks import catalog
from tests import train_helpers


def tiny_model():
  return build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))


def test_loss_decreases_and_metrics_are_logged(tmp_path):
  catalog.register_tasks()
  metrics = train.train(
      model=tiny_model(), mixture_or_task_name="cdc.trivia.L6.label_only",
      task_feature_lengths={"inputs": 32, "targets": 16}, batch_size=16, train_steps=30,
      model_dir=str(tmp_path), learning_rate_fn=optimizers.constant_schedule(learning_rate=1e-2),
      log_every=5, checkpoint_every=30)
  rows = progress.read_metrics(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
  assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
  for key in ("loss", "accuracy", "learning_rate", "steps_per_sec", "tokens_per_sec"):
    assert np.isfinite(rows[-1][key]) and key in metrics
  assert rows[-1]["learning_rate"] == pytest.approx(1e-2)
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [30]


def test_non_finite_loss_names_the_step(tmp_path):
  catalog.register_tasks()
  # Step 1 computes its loss with the initial parameters; its NaN update shows at step 2.
  with pytest.raises(FloatingPointError, match="non-finite loss nan at step 2"):
    train.train(model=tiny_model(), mixture_or_task_name="cdc.trivia.L6.label_only",
                task_feature_lengths={"inputs": 32, "targets": 16}, batch_size=8, train_steps=3,
                model_dir=str(tmp_path), learning_rate_fn=optimizers.constant_schedule(
                    learning_rate=float("nan")), log_every=1, checkpoint_every=100)


def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(tmp_path):
  task = "cdc.strategy.L6.cot_label"
  args = lambda d: train_helpers.tiny_train_args(d, task, steps=6, extra=(
      "--gin.CHECKPOINT_EVERY=2",))
  # Multi-threaded Eigen contractions may split sums differently from run to
  # run on a busy machine; bitwise reproducibility on CPU asks for one thread.
  env = {"XLA_FLAGS": train_helpers.DETERMINISTIC_XLA_FLAGS}
  train_helpers.run_module("cdc_jax.train", args(tmp_path / "straight"), env=env)
  killed = train_helpers.run_module(
      "cdc_jax.train", args(tmp_path / "resumed") + ["--gin.train.simulate_preemption_at_step=4"],
      check=False, env=env)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert checkpoints.Checkpointer(tmp_path / "resumed").latest_step() == 4
  train_helpers.run_module("cdc_jax.train", args(tmp_path / "resumed"), env=env)
  straight, step_a = checkpoints.restore_params(tmp_path / "straight")
  resumed, step_b = checkpoints.restore_params(tmp_path / "resumed")
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  # The resumed run logged only the steps after the restart, with the same losses.
  rows_a = {r["step"]: r["loss"] for r in progress.read_metrics(tmp_path / "straight/metrics.jsonl")}
  rows_b = progress.read_metrics(tmp_path / "resumed/metrics.jsonl")
  assert [r["step"] for r in rows_b] == [2, 4, 6]
  assert rows_b[-1]["loss"] == rows_a[6]


def test_checkpoint_of_a_trivial_task_evaluates_to_full_accuracy(tmp_path):
  manifest = train_helpers.always_yes_community(tmp_path / "data")
  catalog.register_tasks(embedded=False, communities=[manifest])
  model = tiny_model()
  lengths = {"inputs": 16, "targets": 8}
  train.train(model=model, mixture_or_task_name="cdc.yesland.L6.label_only",
              task_feature_lengths=lengths, batch_size=8, train_steps=25,
              model_dir=str(tmp_path / "run"), pack=False,
              learning_rate_fn=optimizers.constant_schedule(learning_rate=1e-2),
              log_every=25, checkpoint_every=25, tensorboard=False)
  results = evaluate.evaluate(model=model, mixture_or_task_name="cdc.yesland.L6.label_only",
                              checkpoint=str(tmp_path / "run"), task_feature_lengths=lengths,
                              output_dir=str(tmp_path / "eval"), batch_size=4)
  assert results["cdc.yesland.L6.label_only"] == {"accuracy": 100.0, "answered": 100.0,
                                                 "num_examples": 8.0}
  rows = [json.loads(l) for l in
          (tmp_path / "eval/cdc.yesland.L6.label_only.predictions.jsonl").read_text().splitlines()]
  assert len(rows) == 8 and all(r["correct"] and r["parsed_answer"] == "yes" for r in rows)
  assert rows[0]["input"] == "Is 100 a number?" and rows[0]["prediction"] == "yes"
  summary = json.loads((tmp_path / "eval/metrics.json").read_text())
  assert summary["step"] == 25
