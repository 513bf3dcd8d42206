"""Rescoring a finished sweep's per-example outcomes from its saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc_jax.coalitions import examples, experiment, rescore, results
from cdc_jax.data import records as R
from tests.train_helpers import REPO


def _choice_community(directory: Path) -> Path:
  """Five-way questions whose own options never repeat; the answer is option (b) in train."""
  def rec(i, split, pos):
    choices = tuple(f"thing{i}{letter}" for letter in "abcde")
    return R.TraceRecord(id=f"{split}{i}", community="picks", split=split,
                         question=f"Which thing {i}?", answer=choices[pos], answer_type="choice",
                         choices=choices, rationales={1: f"Thing {i} it is."}, teacher="oracle",
                         provenance={"source": "test", "license": "CC0-1.0"})
  manifest = R.CommunityManifest(name="picks", description="choices", answer_type="choice",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0-1.0")
  return R.write_community(directory / "picks", manifest, {
      "train": [rec(i, "train", 1) for i in range(12)],
      "test": [rec(100 + i, "test", 1 if i < 3 else 4) for i in range(4)]})


def _finished_run(sweep: Path, manifest: Path) -> Path:
  """A run as a sweep leaves it, with the old scoring's majority (the answer text)."""
  spec = experiment.CoalitionSpec(members=("picks",), level=1, fmt="cot_label", seed=0)
  run_dir = sweep / spec.run_id
  (run_dir / "eval").mkdir(parents=True)
  gin = sweep / "run.gin"
  gin.write_text("from __gin__ import dynamic_registration\n"
                 "from cdc_jax.tasks import catalog\n"
                 f"catalog.register_tasks.communities = ['{manifest}']\n"
                 "catalog.register_tasks.embedded = False\n"
                 "catalog.register_tasks.vocab_size = 400\n")
  experiment.write_run_config(run_dir, spec, gin_files=[str(gin)], gin_bindings=[])
  test = R.load_community(manifest).records["test"]
  predictions = [(r, r.answer if i % 2 == 0 else None) for i, r in enumerate(test)]
  (run_dir / "eval" / "cdc.picks.L1.cot_label.predictions.jsonl").write_text("".join(
      json.dumps({"id": r.id, "parsed_answer": p, "correct": p is not None}) + "\n"
      for r, p in predictions))
  examples.write_examples(run_dir / results.EXAMPLES_FILENAME, [
      examples.ExampleOutcome(community="picks", id=r.id, correct=p is not None, answer=p,
                              majority_correct=False, chance=0.2) for r, p in predictions])
  results.write_result(run_dir, results.RunResult(
      run=spec.run_id, members=("picks",), level=1, format="cot_label", seed=0,
      accuracy={"picks": 0.5}, num_examples={"picks": 4}, train_examples={"picks": 12}, steps=1,
      wall_s=1.0))
  return run_dir


def test_rescore_rewrites_the_majority_as_a_choice_position(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  sweep = tmp_path / "sweep"
  run_dir = _finished_run(sweep, _choice_community(tmp_path / "data"))
  counts = rescore.rescore_sweep(sweep)
  assert counts == {"runs": 1, "outcomes": 4, "majority_correct": 3}
  got = examples.read_examples(run_dir / results.EXAMPLES_FILENAME)[None]
  assert [(o.correct, o.majority_correct) for o in got] == [
      (True, True), (False, True), (True, True), (False, False)]
  assert examples.read_examples(sweep / results.EXAMPLES_FILENAME)[run_dir.name] == got
  with pytest.raises(ValueError, match=r"no finished run .* named \['nope'\]"):
    rescore.rescore_sweep(sweep, runs=["nope"])


def test_rescore_refuses_predictions_that_change_the_students_outcome(tmp_path):
  sweep = tmp_path / "sweep"
  run_dir = sweep / "r"
  run_dir.mkdir(parents=True)
  (run_dir / experiment.RUN_CONFIG).write_text("{}")
  results.write_result(run_dir, results.RunResult(
      run="r", members=("c",), level=1, format="cot_label", seed=0, accuracy={"c": 1.0},
      num_examples={"c": 1}, train_examples={"c": 1}, steps=1, wall_s=1.0))
  path = run_dir / results.EXAMPLES_FILENAME
  examples.write_examples(path, [examples.ExampleOutcome(community="c", id="x", correct=True)])

  def flip(d):
    examples.write_examples(path, [examples.ExampleOutcome(community="c", id="x", correct=False)])
  with pytest.raises(ValueError, match="example 'x' changed"):
    rescore.rescore_sweep(sweep, rescore_fn=flip)
