"""Selection policies: the learnability gap's bands on a constructed case, the reverse direction,
explore/exploit re-scoring, explicit budgets, the heuristic, equal-token random baselines."""

import ast
import dataclasses
import json
import math

import gin
import jax
import numpy as np
import pytest

from cdc_jax import config_cli
from cdc_jax.contribution import allocation, budgets, heuristic, rewards, selection
from cdc_jax.contribution.allocation import GapBand
from cdc_jax.contribution.budgets import Budget
from cdc_jax.data import records as R
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.tasks import formats, vocabulary


def _record(i, teacher="12", rationales=None, split="train"):
  return R.TraceRecord(id=i, community="picks", split=split, question=f"How many lamps in {i}?",
                       answer="12", answer_type="number",
                       rationales=rationales or {6: "3 * 4 = 12."}, teacher="oracle",
                       teacher_answer=teacher, provenance={"source": "test", "license": "CC0"})


def _community(tmp_path, records):
  manifest = R.CommunityManifest(name="picks", description="lamps", answer_type="number",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0")
  return R.write_community(tmp_path / "picks", manifest,
                           {"train": records, "test": [_record("t0", split="test")]})


# ---------------------------------------------------------------------------
# The learnability gap on a case whose bands are known.
# id -> (teacher answer: '12' right, '13' wrong, None unknown; student s; reference t; tokens)
GAP_CASE = {
    "a": ("12", -0.02, -0.5, 10),  # s >= student_fit -0.05: too easy (student fits)
    "b": ("12", -1.0, -0.95, 10),  # gap 0.05 <= min_gap 0.1: too easy (no gap)
    "c": ("12", -1.5, -0.5, 30),   # gap 1.0: learnable
    "d": (None, -2.0, -0.3, 50),   # gap 1.7: learnable (teacher answer unknown is no veto)
    "e": ("12", -3.0, -0.6, 10),   # gap 2.4 > max_gap 2.0: out of reach (beyond reach)
    "f": ("13", -1.0, -0.2, 10),   # teacher wrong: out of reach, student below the reference
    "g": ("13", -0.3, -1.2, 10),   # teacher wrong, student 0.9 above: the reference lacks it
    "h": ("12", -1.2, -0.7, 20),   # gap 0.5: learnable
    "i": (None, -0.4, -0.9, 10),   # gap -0.5: too easy; student 0.5 above, teacher unknown: lacks
}
BAND = GapBand(min_gap=0.1, max_gap=2.0, student_fit=-0.05, reverse_margin=0.2)


def _gap_records():
  return [_record(i, teacher) for i, (teacher, *_) in GAP_CASE.items()]


def _column(k):
  return lambda records: [GAP_CASE[r.id][k] for r in records]


STUDENT, REFERENCE, TOKENS = _column(1), _column(2), _column(3)


def test_gap_bands_reasons_and_reverse_direction_on_a_constructed_case():
  recs = _gap_records()
  gaps = {g.id: g for g in allocation.gap_scores(recs, student=STUDENT(recs),
                                                 reference=REFERENCE(recs), band=BAND)}
  assert {i: (g.band, g.reason) for i, g in gaps.items()} == {
      "a": ("too_easy", "student_fits"), "b": ("too_easy", "no_gap"),
      "c": ("learnable", "within_reach"), "d": ("learnable", "within_reach"),
      "e": ("out_of_reach", "beyond_reach"), "f": ("out_of_reach", "teacher_wrong"),
      "g": ("out_of_reach", "teacher_wrong"), "h": ("learnable", "within_reach"),
      "i": ("too_easy", "no_gap")}
  assert {i: g.gap for i, g in gaps.items()} == pytest.approx(
      {i: t - s for i, (_, s, t, _) in GAP_CASE.items()})
  assert allocation.learnable_order(list(gaps.values())) == ["d", "c", "h"]
  report = allocation.gap_report(list(gaps.values()))
  assert report["bands"] == {"too_easy": 3, "learnable": 3, "out_of_reach": 3}
  assert report["teacher_lacks"] == ["g", "i"]  # Not "a": its teacher is right.
  assert report["gap_quantiles"]["q00"] == pytest.approx(-0.9)
  assert report["gap_quantiles"]["q100"] == pytest.approx(2.4)
  # A wrong teacher is no veto when the band does not require it: f's gap 0.8 is learnable.
  loose = dataclasses.replace(BAND, require_teacher_correct=False)
  f = allocation.gap_scores(recs[5:6], student=[-1.0], reference=[-0.2], band=loose)[0]
  assert (f.id, f.band) == ("f", "learnable")


def test_learnability_gap_policy_keeps_the_learnable_band_under_each_budget():
  recs = _gap_records()
  inputs = selection.PolicyInputs(student=STUDENT, reference=REFERENCE, band=BAND)
  pick = lambda budget: [r.id for r in selection.select(
      recs, policy="learnability_gap", budget=budget, inputs=inputs, count_tokens=TOKENS).records]
  assert pick(Budget(traces=1)) == ["d"]
  assert pick(Budget(traces=2)) == ["c", "d"]            # Original order in the output.
  assert pick(Budget(fraction=0.5)) == ["c", "d", "h"]   # 5 of 9 allowed, only 3 learnable.
  assert pick(Budget(tokens=70)) == ["d", "h"]           # d=50, c=30 does not fit, h=20 does.
  chosen = selection.select(recs, policy="learnability_gap", budget=Budget(tokens=70),
                            inputs=inputs, count_tokens=TOKENS)
  assert chosen.kept_tokens == 70
  # Correctness as the reward: learnable = the teacher right and the student wrong.
  correct_student = {"a": 1, "b": 0, "c": 0, "d": 1, "e": 0, "f": 1, "g": 0, "h": 0, "i": 1}
  known = [r for r in recs if r.teacher_answer is not None]
  gaps = allocation.gap_scores(known, student=[correct_student[r.id] for r in known],
                               reference=rewards.teacher_correctness(known))
  assert allocation.learnable_order(gaps) == ["b", "c", "e", "h"]
  assert [g.id for g in gaps if g.band == "too_easy"] == ["a"]
  assert [g.id for g in gaps if g.teacher_lacks] == ["f"]  # Student right, teacher wrong.
  with pytest.raises(ValueError, match=r"unknown \(no teacher_answer\) for records \['d', 'i'\]"):
    rewards.teacher_correctness(recs)


def test_gap_without_a_reference_is_the_students_loss_and_has_no_reverse_direction():
  recs = _gap_records()
  gaps = allocation.gap_scores(recs, student=STUDENT(recs), band=BAND)
  assert [g.gap for g in gaps] == pytest.approx([-s for _, s, _, _ in GAP_CASE.values()])
  assert allocation.learnable_order(gaps) == ["d", "c", "h", "b", "i"]  # e: 3.0 > 2.0.
  assert allocation.gap_report(gaps)["teacher_lacks"] is None
  with pytest.raises(ValueError, match="min_gap < max_gap"):
    GapBand(min_gap=1.0, max_gap=1.0)
  with pytest.raises(ValueError, match="student reward is not finite for records"):
    rewards.reward_values(lambda r: [math.nan] * len(r), recs, "student")
  with pytest.raises(ValueError, match="reference reward returned 1 values for 9"):
    rewards.reward_values(lambda r: [0.0], recs, "reference")


# ---------------------------------------------------------------------------
# Explore / exploit.


def test_allocate_rounds_rescores_with_a_fresh_student_each_round():
  # Reference: the ceiling 0 (gap = the student's loss); band (0.1, 1.5].
  rounds_of_student = [
      {"r0": -0.05, "r1": -1.0, "r2": -1.2, "r3": -2.5, "r4": -3.0, "r5": -1.0},
      {"r0": -0.05, "r1": -0.05, "r3": -1.4, "r4": -2.9, "r5": -1.0},  # r1 learnt, r3 in reach.
      {"r0": -0.05, "r1": -0.05, "r4": -1.0, "r5": -1.0},              # r4 now in reach.
  ]
  calls = []

  def student_for_round(index, chosen):
    calls.append((index, chosen))
    return lambda records: [rounds_of_student[index][r.id] for r in records]

  recs = [_record(f"r{k}", "13" if k == 5 else "12") for k in range(6)]
  band = GapBand(min_gap=0.1, max_gap=1.5)
  rounds = allocation.allocate_rounds(recs, rounds=3, round_budget=Budget(traces=1),
                                      student_for_round=student_for_round, band=band)
  assert [r.chosen for r in rounds] == [("r2",), ("r3",), ("r4",)]
  assert calls == [(0, ()), (1, ("r2",)), (2, ("r2", "r3"))]
  assert [dict(r.bands) for r in rounds] == [
      {"too_easy": 1, "learnable": 2, "out_of_reach": 3},
      {"too_easy": 2, "learnable": 1, "out_of_reach": 2},
      {"too_easy": 2, "learnable": 1, "out_of_reach": 1}]
  # Scored once, the first round's order would have taken r1 second: the re-score skips it.
  once = allocation.gap_scores(recs, student=[rounds_of_student[0][r.id] for r in recs],
                               band=band)
  assert allocation.learnable_order(once) == ["r2", "r1"]

  # Explore: half of each round's 2 traces is a seeded sample of what is not known wrong.
  explored = []
  for seed in range(8):
    calls.clear()
    out = allocation.allocate_rounds(recs, rounds=1, round_budget=Budget(traces=2),
                                     student_for_round=student_for_round, band=band,
                                     explore=0.5, seed=seed)
    assert out[0].exploited == ("r2",) and len(out[0].explored) == 1
    explored.append(out[0].explored[0])
  assert set(explored) <= {"r0", "r1", "r3", "r4"} and len(set(explored)) > 1
  with pytest.raises(ValueError, match="explore must be in"):
    allocation.allocate_rounds(recs, rounds=1, round_budget=Budget(traces=1),
                               student_for_round=student_for_round, explore=1.5)


# ---------------------------------------------------------------------------
# Budgets.


def test_budgets_are_explicit_and_invalid_ones_are_refused():
  assert Budget(traces=1).max_traces(9) == 1  # Not "every trace".
  assert Budget(fraction=1.0).max_traces(9) == 9
  assert Budget(fraction=0.5).max_traces(9) == 5 and Budget(fraction=0.01).max_traces(9) == 1
  assert Budget(traces=100).max_traces(9) == 9 and Budget(tokens=5).max_traces(9) is None
  assert [Budget(traces=3).name, Budget(fraction=0.25).name, Budget(tokens=900).name] == [
      "traces=3", "fraction=0.25", "tokens=900"]
  assert selection.selection_name("random", Budget(tokens=900)) == "random:tokens=900"
  for kwargs, message in [({}, "exactly one of"), ({"traces": 2, "fraction": 0.5}, "exactly one"),
                          ({"traces": 1.0}, "traces must be a whole number"),
                          ({"traces": 0}, "traces must be a whole number"),
                          ({"traces": True}, "traces must be a whole number"),
                          ({"tokens": -3}, "tokens must be a whole number"),
                          ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
                          ({"fraction": 0.0}, r"fraction must be in \(0, 1\]")]:
    with pytest.raises(ValueError, match=message):
      Budget(**kwargs)
  with pytest.raises(ValueError, match="counts tokens: give a token counter"):
    budgets.take_within_budget(["a"], Budget(tokens=3), total=1)
  with pytest.raises(ValueError, match=r"records \['b'\] are not whole numbers"):
    budgets.token_counts([_record("a"), _record("b")], lambda r: [1, 2.5])


def test_cli_budget_flags(tmp_path, capsys):
  source = _community(tmp_path, _gap_records())
  run = lambda *flags: selection.main(["--community", str(source), "--policy", "random",
                                       "--out", str(tmp_path / "out"), *flags])
  assert run("--budget_traces", "1") == 0
  assert len(R.load_community(tmp_path / "out").records["train"]) == 1
  assert "kept 1 of 9 traces (random, budget traces=1)" in capsys.readouterr().out
  for flags, message in [(["--budget", "1"], "--budget was removed"),
                         ([], "exactly one of traces="),
                         (["--budget_fraction", "2"], "budget fraction must be in (0, 1], got 2.0"),
                         (["--budget_traces", "0.5"], "invalid int value"),
                         (["--budget_traces", "2", "--budget_tokens", "9"], "not allowed with"),
                         (["--budget_traces", "2", "--policy", "learnability_gap"],
                          "needs --checkpoint")]:
    with pytest.raises(SystemExit):
      run(*flags)
    assert message in capsys.readouterr().err, flags
  (tmp_path / "no_tokens.json").write_text(json.dumps({"kept_tokens": None}))
  with pytest.raises(SystemExit):
    run("--match_tokens_of", str(tmp_path / "no_tokens.json"))
  assert "counted tokens as None" in capsys.readouterr().err


def test_allocation_gin_binds_the_band():
  gin.clear_config()
  try:
    args = selection._parser().parse_args(["--community", "c", "--out", "o", "--gin_file",
                                           "gin/contribution/allocation.gin"])
    band, student = selection._configure(args, ["MAX_GAP = 2.5"])
  finally:
    gin.clear_config()
  assert student is None
  assert band == GapBand(min_gap=0.1, max_gap=2.5, student_fit=None,
                         require_teacher_correct=True, reverse_margin=0.0)


# ---------------------------------------------------------------------------
# The heuristic policy (the earlier default) and the equal-token random baseline.

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


def _records():
  return [_record(i, teacher, rationales) for i, (teacher, rationales) in TRACES.items()]


def stub(records):
  return [LEARNABILITY[r.id] for r in records]


def test_heuristic_usefulness_components():
  recs = {r.id: r for r in _records()}
  assert [heuristic.usefulness(recs[i]) for i in sorted(recs)] == [1.0, 0.0, 0.5, 0.5, 0.0, 1.0]
  assert heuristic.level_agreement(recs["r2"]) == 0.5
  assert heuristic.teacher_correct(recs["r4"]) is None
  text = R.TraceRecord(id="x", community="picks", split="train", question="Capital?",
                       answer="Paris", answer_type="text",
                       rationales={1: "It is Paris.", 2: "It is Lyon."}, teacher="oracle",
                       provenance={"source": "t", "license": "t"})
  assert heuristic.usefulness(text) == 0.5  # Agreement 1 of 2, teacher answer unknown.
  boolean = R.TraceRecord(id="y", community="picks", split="train", question="Is it?",
                          answer="yes", answer_type="boolean", rationales={6: "It is."},
                          teacher="oracle", provenance={"source": "t", "license": "t"})
  assert heuristic.level_agreement(boolean) is None and heuristic.usefulness(boolean) == 0.5


def test_heuristic_scores_and_selections_are_exact():
  recs = _records()
  assert heuristic.rank_scale([1.0, 1.0, 2.0]) == [0.25, 0.25, 1.0]
  scores = {s.id: s for s in heuristic.score_traces(recs, learnability=stub)}
  assert {i: s.learnability_rank for i, s in scores.items()} == pytest.approx(
      {"r3": 0.0, "r5": 0.2, "r0": 0.4, "r1": 0.6, "r2": 0.8, "r4": 1.0})
  assert {i: s.score for i, s in scores.items()} == pytest.approx(
      {"r0": 0.7, "r1": 0.3, "r2": 0.65, "r3": 0.25, "r4": 0.5, "r5": 0.6})
  pick = lambda budget, weight=0.5: [r.id for r in selection.select(
      recs, policy="heuristic", budget=budget,
      inputs=selection.PolicyInputs(student=stub, weight=weight)).records]
  assert pick(Budget(traces=3)) == ["r0", "r2", "r5"]
  assert pick(Budget(traces=3), weight=1.0) == ["r1", "r2", "r4"]  # Learnability alone.
  assert pick(Budget(traces=3), weight=0.0) == ["r0", "r2", "r5"]  # r2 beats r3 on id.
  assert pick(Budget(fraction=0.5)) == ["r0", "r2", "r5"]
  assert pick(Budget(traces=100)) == [r.id for r in recs]          # Capped at the community.
  with pytest.raises(ValueError, match="returned 2 values for 6"):
    heuristic.score_traces(recs, learnability=lambda r: [0.0, 1.0])
  with pytest.raises(ValueError, match="needs the student's reward"):
    selection.select(recs, policy="heuristic", budget=Budget(traces=1))
  with pytest.raises(ValueError, match=r"unknown selection policy 'lada': expected one of "
                                       r"\['heuristic', 'learnability_gap', 'random'\]"):
    selection.select(recs, policy="lada", budget=Budget(traces=1))
  with pytest.raises(ValueError, match="already registered"):
    selection.register_policy("random", selection.random_policy)


def test_write_selection_gap_policy_vs_random_at_equal_token_budget(tmp_path):
  source = _community(tmp_path, _gap_records())
  inputs = selection.PolicyInputs(student=STUDENT, reference=REFERENCE, band=BAND, seed=1)
  gap = selection.write_selection(source, tmp_path / "gap", policy="learnability_gap",
                                  budget=Budget(tokens=70), inputs=inputs, count_tokens=TOKENS)
  assert gap["selected"] == ["d", "h"] and (gap["kept_tokens"], gap["of_tokens"]) == (70, 160)
  assert gap["report"]["teacher_lacks"] == ["g", "i"]
  on_disk = json.loads((tmp_path / "gap" / "selection.json").read_text())
  assert on_disk["report"]["bands"] == {"too_easy": 3, "learnable": 3, "out_of_reach": 3}
  assert [s["id"] for s in on_disk["scores"]] == list(GAP_CASE)
  matched = selection.matched_token_budget(on_disk)
  assert matched == Budget(tokens=70)
  with pytest.raises(ValueError, match="kept no traces: there is no token budget to match"):
    selection.matched_token_budget({"kept_tokens": 0, "source": "picks"})
  tokens = dict(zip(GAP_CASE, TOKENS(_gap_records())))
  picks = set()
  for seed in range(6):
    out = tmp_path / f"random{seed}"
    summary = selection.write_selection(
        source, out, policy="random", budget=matched, count_tokens=TOKENS,
        inputs=dataclasses.replace(inputs, seed=seed))
    kept = sum(tokens[i] for i in summary["selected"])
    # First fit over a shuffle: within one trace of the budget, never over it.
    assert summary["kept_tokens"] == kept and 70 - max(tokens.values()) < kept <= 70
    train = R.load_community(out).records["train"]
    assert [r.id for r in train] == summary["selected"]
    assert all(r.provenance["selection"] == {"policy": "random", "budget": "tokens=70", "of": 9,
                                             "seed": seed} for r in train)
    assert [r.id for r in R.load_community(out).records["test"]] == ["t0"]
    picks.add(tuple(summary["selected"]))
  assert len(picks) > 1
  with pytest.raises(ValueError, match="already selected"):
    selection.write_selection(tmp_path / "random0", tmp_path / "again", policy="random",
                              budget=Budget(traces=2))
  with pytest.raises(TypeError, match="budget must be a selection.Budget"):
    selection.write_selection(source, tmp_path / "x", policy="random", budget=1)


# ---------------------------------------------------------------------------
# The model-backed reward (one small tiny-T5 test).


def test_model_log_likelihood_and_token_counts_with_a_tiny_t5(tmp_path):
  recs = _records()
  texts = [formats.render_example(fmt="cot_label", question=r.question, answer=r.answer,
                                  rationale=r.rationales[6]) for r in recs]
  vocab = vocabulary.load_vocabulary(vocabulary.train_vocabulary(
      [t for ex in texts for t in ex.values()], vocab_size=400, cache_dir=tmp_path))
  model = build_model(t5_config("tiny", vocab_size=512, dropout_rate=0.0))
  params = jax.jit(lambda key: model.init_params(key, {"encoder_input_tokens": (1, 32),
                                                      "decoder_input_tokens": (1, 32)}))(
                                                          jax.random.key(0, impl="unsafe_rbg"))
  reward = rewards.model_log_likelihood(model=model, vocabulary=vocab, params=params,
                                        input_length=32, target_length=32, batch_size=4)
  values = reward(recs)
  assert len(values) == 6 and all(np.isfinite(values)) and all(v < 0 for v in values)
  ids = vocab.encode(texts[5]["targets"]) + [1]
  inputs = vocab.encode(texts[5]["inputs"]) + [1]
  batch = {"encoder_input_tokens": np.array([inputs + [0] * (32 - len(inputs))], np.int32),
           "decoder_target_tokens": np.array([ids + [0] * (32 - len(ids))], np.int32)}
  expected = float(jax.jit(model.score_batch)(params, batch)[0]) / len(ids)
  assert values[5] == pytest.approx(expected, rel=1e-5)
  counts = rewards.vocabulary_token_counter(vocab)(recs)
  assert counts[5] == len(ids) + len(inputs)
  with pytest.raises(ValueError, match="exactly one of"):
    rewards.model_log_likelihood(model=model, vocabulary=vocab)


# ---------------------------------------------------------------------------
# The comparison sweep: the policy's selection and equal-token random selections.


def test_allocation_sweep_materialises_equal_token_variants_and_reuses_them(tmp_path, monkeypatch):
  from cdc_jax.coalitions import sweep
  from cdc_jax.contribution import allocation_sweep

  source = _community(tmp_path, _gap_records())
  calls, scored = [], []

  def student(records):
    scored.append(len(records))
    return STUDENT(records)

  def fake_sweep(**kwargs):
    calls.append(kwargs)
    return []

  monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
  run = lambda: allocation_sweep.run_allocation_sweep(
      spec=sweep.SweepSpec(communities=("picks",), levels=(1, 6), formats=("label_cot",)),
      sweep_dir=str(tmp_path / "sweep"), source_communities=[str(source)],
      gin_files=["gin/experiments/coalition_tiny.gin"], budget_tokens=70, random_seeds=(0, 1),
      band=BAND, student=student, reference=REFERENCE, count_tokens=TOKENS)
  run()
  gap_name = "learnability_gap:tokens=70"
  names = [gap_name, f"random:tokens_of={gap_name}:seed=0", f"random:tokens_of={gap_name}:seed=1"]
  assert [c["spec"].selection for c in calls] == names
  assert all((c["spec"].levels, c["spec"].formats) == ((6,), ("cot_label",)) for c in calls)
  for call in calls:
    manifests = ast.literal_eval(call["gin_bindings"][-1].split(" = ", 1)[1])  # COMMUNITIES
    selected = R.load_community(manifests[0]).records["train"]
    kept = sum(GAP_CASE[r.id][3] for r in selected)
    assert 20 < kept <= 70 and "catalog.register_tasks.embedded = False" in call["gin_bindings"]
    if call["spec"].selection == gap_name:
      assert [r.id for r in selected] == ["d", "h"]
  assert scored == [9]
  run()  # Matching selection.json files: reused, the student is not asked again.
  assert scored == [9] and len(calls) == 6


COMMON = ["SWEEP_DIR = '/tmp/s'", "DATA_ROOT = '/data/c'",
          "RUN_GIN_FILES = ['gin/experiments/coalition_tiny.gin']"]
MANIFESTS = ["/data/c/strategyqa/community.json"]


@pytest.mark.parametrize("files,fn,runs", [
    (["gin/sweeps/claim_formats.gin"], "sweep.run_sweep", 12),
    (["gin/sweeps/claim_key_tokens.gin"], "variants.run_key_tokens_sweep", 3),  # Per k.
    (["gin/sweeps/claim_privacy.gin"], "variants.run_privacy_sweep", 3),        # Per eps.
    (["gin/models/t5_1_1_tiny.gin", "gin/sweeps/claim_allocation.gin"],
     "allocation_sweep.run_allocation_sweep", 3)])                               # Per selection.
def test_claim_sweeps_parse_and_bind_the_real_communities(files, fn, runs):
  allocation_run = fn.startswith("allocation_sweep")
  extra = ["STUDENT_CHECKPOINT = '/m'", "SPM_MODEL = '/v.model'"] if allocation_run else []
  gin.clear_config()
  try:
    config_cli.parse_gin(files, COMMON + extra)
    spec = gin.query_parameter(f"{fn}.spec").scoped_configurable_fn()
    if fn in ("sweep.run_sweep", "variants.run_key_tokens_sweep"):
      bindings = gin.query_parameter("%RUN_GIN_BINDINGS").scoped_configurable_fn()
      assert bindings == [f"COMMUNITIES = {MANIFESTS!r}", "catalog.register_tasks.embedded = False"]
    else:
      assert gin.query_parameter(f"{fn}.source_communities").scoped_configurable_fn() == MANIFESTS
    if allocation_run:
      assert gin.query_parameter(f"{fn}.band").scoped_configurable_fn() == GapBand(
          min_gap=0.1, max_gap=3.0)
  finally:
    gin.clear_config()
  assert len(spec.runs()) == runs and spec.communities == ["strategyqa"]


def test_claim_allocation_smollm2_scores_with_the_student_s_weights_prompt_and_vocabulary():
  """The 2-core SmolLM2 claim: csqa level 3, 3 selections x 2 seeds; its base weights score the
  traces in the runs' chat prompt and vocabulary (checked unevaluated: nothing is loaded)."""
  fn = "allocation_sweep.run_allocation_sweep"
  gin.clear_config()
  try:
    config_cli.parse_gin(["gin/sweeps/claim_allocation_smollm2.gin"], COMMON[:2])
    value = lambda name: gin.query_parameter(f"{fn}.{name}").scoped_configurable_fn()
    assert value("source_communities") == ["/data/c/csqa/community.json"]
    assert [gin.query_parameter(m) for m in ("%LEVEL", "%BUDGET_TOKENS", "%RANDOM_SEEDS",
                                             "%RUN_GIN_FILES")] == [
        3, 22800, [0, 1], ["gin/experiments/smollm2_lora_coalition_cpu.gin"]]
    assert [repr(gin.query_parameter(p)) for p in ("%STUDENT_CHECKPOINT", f"{fn}.vocabulary",
                                                   f"{fn}.model")] == [
        "%WEIGHTS", "%VOCABULARY", "%MODEL"]
    options = value("task_options")
    assert (options.prompt_template, options.inputs_eos) == ("chat", False)
    spec = value("spec")
  finally:
    gin.clear_config()
  assert spec.communities == ["csqa"] and len(spec.runs()) == 2  # Per selection.
