"""Learnability-aware selection: exact scores and selections, random baseline, written communities."""

import json

import jax
import numpy as np
import pytest

from cdc_jax.contribution import selection
from cdc_jax.data import records as R
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.tasks import formats, vocabulary

# id -> (teacher_answer, rationales); gold answer 12 for all.
TRACES = {
    "r0": ("12", {1: "3 * 4 = 12.", 6: "Three rows of four: 3 * 4 = 12."}),  # U = 1
    "r1": ("13", {6: "3 * 4 = 13."}),                                          # U = 0
    "r2": (None, {1: "3 + 4 = 7.", 6: "3 * 4 = 12."}),                         # U = 0.5
    "r3": ("12", {6: "4 * 4 = 16."}),                                          # U = (1 + 0) / 2
    "r4": (None, {6: "it is big"}),                                            # U = 0
    "r5": ("12", {1: "= 12", 6: "so 12"}),                                     # U = 1
}
LEARNABILITY = {"r0": -1.0, "r1": -0.5, "r2": -0.2, "r3": -3.0, "r4": -0.1, "r5": -2.0}


def _records(split="train", n=None):
  items = list(TRACES.items())[:n]
  return [R.TraceRecord(id=i if split == "train" else f"t{i}", community="picks", split=split,
                        question=f"How many lamps in row {i}?", answer="12",
                        answer_type="number", rationales=rationales, teacher="oracle",
                        teacher_answer=teacher, provenance={"source": "test", "license": "CC0"})
          for i, (teacher, rationales) in items]


def stub(records):
  return [LEARNABILITY[r.id] for r in records]


def _community(tmp_path):
  manifest = R.CommunityManifest(name="picks", description="lamps", answer_type="number",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0")
  return R.write_community(tmp_path / "picks", manifest,
                           {"train": _records(), "test": _records("test", 2)})


def test_usefulness_components():
  recs = {r.id: r for r in _records()}
  assert [selection.usefulness(recs[i]) for i in sorted(recs)] == [1.0, 0.0, 0.5, 0.5, 0.0, 1.0]
  assert selection.level_agreement(recs["r2"]) == 0.5
  assert selection.teacher_correct(recs["r4"]) is None
  text = R.TraceRecord(id="x", community="picks", split="train", question="Capital?",
                       answer="Paris", answer_type="text",
                       rationales={1: "It is Paris.", 2: "It is Lyon."}, teacher="oracle",
                       provenance={"source": "t", "license": "t"})
  assert selection.usefulness(text) == 0.5  # Agreement 1 of 2, teacher answer unknown.
  boolean = R.TraceRecord(id="y", community="picks", split="train", question="Is it?",
                          answer="yes", answer_type="boolean", rationales={6: "It is."},
                          teacher="oracle", provenance={"source": "t", "license": "t"})
  assert selection.level_agreement(boolean) is None and selection.usefulness(boolean) == 0.5


def test_scores_and_selections_are_exact():
  recs = _records()
  assert selection.rank_scale([1.0, 1.0, 2.0]) == [0.25, 0.25, 1.0]
  scores = {s.id: s for s in selection.score_traces(recs, learnability=stub)}
  assert {i: s.learnability_rank for i, s in scores.items()} == pytest.approx(
      {"r3": 0.0, "r5": 0.2, "r0": 0.4, "r1": 0.6, "r2": 0.8, "r4": 1.0})
  assert {i: s.score for i, s in scores.items()} == pytest.approx(
      {"r0": 0.7, "r1": 0.3, "r2": 0.65, "r3": 0.25, "r4": 0.5, "r5": 0.6})
  pick = lambda budget, weight=0.5: [r.id for r in selection.select_by_score(
      recs, selection.score_traces(recs, learnability=stub, weight=weight), budget=budget)]
  assert pick(3) == ["r0", "r2", "r5"]
  assert pick(3, weight=1.0) == ["r1", "r2", "r4"]  # Learnability alone.
  assert pick(3, weight=0.0) == ["r0", "r2", "r5"]  # Usefulness alone; r2 beats r3 on id.
  assert pick(0.5) == ["r0", "r2", "r5"]            # A fraction of 6.
  assert pick(100) == [r.id for r in recs]          # The budget caps at the community.
  with pytest.raises(ValueError, match="budget must be"):
    pick(0)
  with pytest.raises(ValueError, match="returned 2 values for 6"):
    selection.score_traces(recs, learnability=lambda r: [0.0, 1.0])


def test_random_selection_has_the_same_budget_and_a_seed():
  recs = _records()
  picks = [[r.id for r in selection.select_random(recs, budget=3, seed=s)] for s in range(6)]
  assert all(len(p) == 3 and p == sorted(p) for p in picks)
  assert picks[0] == [r.id for r in selection.select_random(recs, budget=3, seed=0)]
  assert len({tuple(p) for p in picks}) > 1


def test_write_selection_learnability_vs_random_at_equal_budget(tmp_path):
  source = _community(tmp_path)
  summaries = {policy: selection.write_selection(source, tmp_path / policy, policy=policy,
                                                 budget=3, learnability=stub, seed=1)
               for policy in selection.POLICIES}
  for policy, summary in summaries.items():
    community = R.load_community(tmp_path / policy)
    train = community.records["train"]
    assert len(train) == 3 and [r.id for r in train] == summary["selected"]
    assert all(r.provenance["selection"]["policy"] == policy and
               r.provenance["selection"]["budget"] == 3 and r.provenance["selection"]["of"] == 6
               for r in train)
    assert [r.question for r in community.records["test"]] == [
        r.question for r in _records("test", 2)]
    assert all("selection" not in r.provenance for r in community.records["test"])
  assert summaries["learnability"]["selected"] == ["r0", "r2", "r5"]
  on_disk = json.loads((tmp_path / "learnability" / "selection.json").read_text())
  assert [s["id"] for s in on_disk["scores"]] == list(TRACES)
  assert selection.selection_name("random", 3) == "random:budget=3"
  with pytest.raises(ValueError, match="already selected"):
    selection.write_selection(tmp_path / "random", tmp_path / "again", policy="random", budget=2)
  with pytest.raises(ValueError, match="needs a learnability scorer"):
    selection.write_selection(source, tmp_path / "x", policy="learnability", budget=2)


def test_student_learnability_is_the_mean_token_log_likelihood(tmp_path):
  recs = _records()
  texts = [formats.render_example(fmt="cot_label", question=r.question, answer=r.answer,
                                  rationale=r.rationales[6]) for r in recs]
  vocab = vocabulary.load_vocabulary(vocabulary.train_vocabulary(
      [t for ex in texts for t in ex.values()], vocab_size=400, cache_dir=tmp_path))
  model = build_model(t5_config("tiny", vocab_size=512, dropout_rate=0.0))
  params = jax.jit(lambda key: model.init_params(key, {"encoder_input_tokens": (1, 32),
                                                      "decoder_input_tokens": (1, 32)}))(
                                                          jax.random.key(0, impl="unsafe_rbg"))
  learn = selection.student_learnability(model=model, vocabulary=vocab, params=params,
                                         input_length=32, target_length=32, batch_size=4)
  values = learn(recs)
  assert len(values) == 6 and all(np.isfinite(values)) and all(v < 0 for v in values)
  ids = vocab.encode(texts[5]["targets"]) + [1]
  inputs = vocab.encode(texts[5]["inputs"]) + [1]
  batch = {"encoder_input_tokens": np.array([inputs + [0] * (32 - len(inputs))], np.int32),
           "decoder_target_tokens": np.array([ids + [0] * (32 - len(ids))], np.int32)}
  expected = float(jax.jit(model.score_batch)(params, batch)[0]) / len(ids)
  assert values[5] == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match="exactly one of"):
    selection.student_learnability(model=model, vocabulary=vocab)
