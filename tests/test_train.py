"""The trainer: learning, resuming bitwise after SIGKILL into an abstract state, evaluation."""

import json

import jax
import numpy as np
import pytest

from cdc_jax import progress
from cdc_jax.student import checkpoints, evaluation, training
from cdc_jax.student import trainer as trainer_lib
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.tasks import catalog
from tests import train_helpers


def tiny_model():
  return build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))


def test_loss_decreases_and_metrics_are_logged(tmp_path):
  catalog.register_tasks()
  metrics = training.train(
      model=tiny_model(), mixture_or_task_name="cdc.trivia.L6.label_only",
      task_feature_lengths={"inputs": 32, "targets": 16}, batch_size=16, train_steps=30,
      model_dir=str(tmp_path), **train_helpers.train_settings(log_every=5, checkpoint_every=30))
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
    training.train(model=tiny_model(), mixture_or_task_name="cdc.trivia.L6.label_only",
                   task_feature_lengths={"inputs": 32, "targets": 16}, batch_size=8,
                   train_steps=3, model_dir=str(tmp_path), **train_helpers.train_settings(
                       learning_rate=float("nan"), log_every=1, checkpoint_every=100))


def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(tmp_path):
  task = "cdc.strategy.L6.cot_label"
  args = lambda d: train_helpers.tiny_train_args(d, task, steps=6, extra=(
      "--gin.CHECKPOINT_EVERY=2",))
  # Multi-threaded Eigen contractions may split sums differently from run to
  # run on a busy machine; bitwise reproducibility on CPU asks for one thread.
  env = {"XLA_FLAGS": train_helpers.DETERMINISTIC_XLA_FLAGS}
  train_helpers.run_module("cdc_jax.train", args(tmp_path / "straight"), env=env)
  killed = train_helpers.run_train_killed_after_checkpoint(4, args(tmp_path / "resumed"), env=env)
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


def test_resume_restores_into_the_abstract_state_without_initialising(tmp_path, monkeypatch):
  catalog.register_tasks()
  run = lambda steps: training.train(
      model=tiny_model(), mixture_or_task_name="cdc.trivia.L6.label_only",
      task_feature_lengths={"inputs": 32, "targets": 16}, batch_size=8, train_steps=steps,
      model_dir=str(tmp_path), tensorboard=False,
      **train_helpers.train_settings(adamw=True, log_every=2, checkpoint_every=2))
  run(2)
  saved, _ = checkpoints.restore_params(tmp_path)

  def no_init(*args, **kwargs):
    raise AssertionError("a resumed run initialised its state")

  abstract = []
  real_abstract_state = trainer_lib.Trainer.abstract_state
  monkeypatch.setattr(trainer_lib.Trainer, "init_state", no_init)
  monkeypatch.setattr(trainer_lib.Trainer, "abstract_state",
                      lambda self: abstract.append(real_abstract_state(self)) or abstract[-1])
  monkeypatch.setattr(checkpoints.Checkpointer, "restore", _checked_restore(
      checkpoints.Checkpointer.restore, saved))
  assert np.isfinite(run(4)["loss"])
  leaves = jax.tree.leaves(abstract[0])
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None
                        for x in leaves)
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [2, 4]


def _checked_restore(restore, saved):
  """``Checkpointer.restore`` that asserts its target is abstract and the params come back."""
  def checked(self, step, target):
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(target))
    state, meta = restore(self, step, target)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state["params"])):
      np.testing.assert_array_equal(a, np.asarray(b))
    assert int(state["step"]) == step == 2 and meta["consumed_batches"] == 2
    return state, meta
  return checked


def test_checkpoint_of_a_trivial_task_evaluates_to_full_accuracy(tmp_path):
  manifest = train_helpers.always_yes_community(tmp_path / "data")
  catalog.register_tasks(embedded=False, communities=[manifest])
  model = tiny_model()
  lengths = {"inputs": 16, "targets": 8}
  training.train(model=model, mixture_or_task_name="cdc.yesland.L6.label_only",
                 task_feature_lengths=lengths, batch_size=8, train_steps=25,
                 model_dir=str(tmp_path / "run"), tensorboard=False,
                 **train_helpers.train_settings(pack=False, log_every=25, checkpoint_every=25))
  results = evaluation.evaluate(model=model, mixture_or_task_name="cdc.yesland.L6.label_only",
                                checkpoint=str(tmp_path / "run"), task_feature_lengths=lengths,
                                output_dir=str(tmp_path / "eval"),
                                **train_helpers.eval_settings(batch_size=4))
  assert results["cdc.yesland.L6.label_only"] == {"accuracy": 100.0, "answered": 100.0,
                                                 "num_examples": 8.0}
  rows = [json.loads(l) for l in
          (tmp_path / "eval/cdc.yesland.L6.label_only.predictions.jsonl").read_text().splitlines()]
  assert len(rows) == 8 and all(r["correct"] and r["parsed_answer"] == "yes" for r in rows)
  assert rows[0]["input"] == "Is 100 a number?" and rows[0]["prediction"] == "yes"
  summary = json.loads((tmp_path / "eval/metrics.json").read_text())
  assert summary["step"] == 25
