"""The paired bootstrap, example pairing, significance marks and baselines."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from cdc_jax import report as report_cli
from cdc_jax.coalitions import analysis, bootstrap, examples, results, tables
from cdc_jax.coalitions.examples import ExampleOutcome
from cdc_jax.coalitions.results import RunResult
from cdc_jax.data import records


def _outcomes(vectors: dict, ids=None) -> bootstrap.Outcomes:
  """Outcomes of one community 'a' from coalition -> (seeds, n) arrays."""
  n = np.asarray(next(iter(vectors.values()))).shape[-1]
  ids = ids or tuple(f"a-{i:03d}" for i in range(n))
  return bootstrap.Outcomes(ids={"a": ids}, correct={
      k: {"a": np.atleast_2d(np.asarray(v, dtype=float))} for k, v in vectors.items()})


def test_bootstrap_variance_of_a_mean_matches_the_binomial_closed_form():
  rng = np.random.default_rng(1)
  n = 400
  correct = (rng.random(n) < 0.3).astype(float)
  p = correct.mean()
  boot = bootstrap.Bootstrap(_outcomes({frozenset({"a"}): correct}), resamples=4000, seed=0)
  acc = boot.accuracy(frozenset({"a"}), "a")
  assert acc[0] == pytest.approx(p)  # Index 0: the data as observed.
  # The bootstrap variance of a mean of n Bernoulli draws is p(1-p)/n (the plug-in variance).
  assert acc[1:].var() == pytest.approx(p * (1 - p) / n, rel=0.1)
  assert acc[1:].mean() == pytest.approx(p, abs=0.005)
  iv = boot.interval(acc)
  half = 1.96 * np.sqrt(p * (1 - p) / n)
  assert iv.low == pytest.approx(p - half, abs=0.01) and iv.high == pytest.approx(p + half, abs=0.01)


def test_paired_difference_of_identical_outcomes_has_zero_width():
  rng = np.random.default_rng(2)
  same = (rng.random(80) < 0.6).astype(float)
  boot = bootstrap.Bootstrap(_outcomes({frozenset({"a"}): same, frozenset({"a", "b"}): same}),
                             resamples=500)
  diff = boot.interval(bootstrap.gain(boot, frozenset({"a", "b"}), "a"))
  assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
  assert not diff.excludes_zero
  # Unpaired resamples of the two would give a wide interval; paired ones give exactly 0.
  assert boot.interval(boot.accuracy(frozenset({"a"}), "a")).high > 0.65


def test_seeds_are_resampled_too():
  # Two seeds, each constant over examples: all the spread comes from the seed draw.
  seeds = np.array([np.ones(50), np.zeros(50)])
  boot = bootstrap.Bootstrap(_outcomes({frozenset({"a"}): seeds}), resamples=2000)
  acc = boot.accuracy(frozenset({"a"}), "a")
  assert acc[0] == pytest.approx(0.5)
  assert set(np.round(acc[1:], 6)) == {0.0, 0.5, 1.0}  # Seed draws {1,1}, {1,0}, {0,0}.
  assert np.mean(np.isclose(acc[1:], 0.5)) == pytest.approx(0.5, abs=0.05)


def test_thousands_of_resamples_are_fast():
  rng = np.random.default_rng(3)
  players = ["a", "b", "c"]
  coalitions = [frozenset(c) for c in ([p] for p in players)] + [
      frozenset(x) for x in (("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c"))]
  correct = {c: {i: (rng.random((3, 60)) < 0.5).astype(float) for i in c} for c in coalitions}
  outcomes = bootstrap.Outcomes(ids={i: tuple(map(str, range(60))) for i in players},
                                correct=correct)
  start = time.perf_counter()
  boot = bootstrap.Bootstrap(outcomes, resamples=5000)
  values = bootstrap.game_values(boot, players)
  phi = bootstrap.shapley(values, players)
  for c in coalitions:
    for i in c:
      bootstrap.gain(boot, c, i)
      bootstrap.altruistic(boot, c, i)
  assert time.perf_counter() - start < 1.0
  # Shapley values are efficient on every replicate: they sum to v(N).
  np.testing.assert_allclose(sum(phi.values()), values[frozenset(players)])


def test_align_pairs_by_id_whatever_the_order_and_names_missing_ids():
  ids = ("x-1", "x-2", "x-3")
  got = bootstrap.align({"x-3": True, "x-1": False, "x-2": True}, ids, what="run r")
  np.testing.assert_array_equal(got, [0.0, 1.0, 1.0])
  with pytest.raises(ValueError, match=r"run r: lacks example ids x-2; has unexpected example "
                     r"ids x-9"):
    bootstrap.align({"x-1": True, "x-3": True, "x-9": False}, ids, what="run r")


def test_significance_marks_and_formatting():
  assert bootstrap.significance_mark(bootstrap.Interval(0.1, -0.02, 0.2)) == "~"
  assert bootstrap.significance_mark(bootstrap.Interval(0.1, 0.01, 0.2)) == ""
  assert bootstrap.significance_mark(bootstrap.Interval(-0.1, -0.2, -0.01)) == ""
  assert bootstrap.format_interval(bootstrap.Interval(0.067, -0.02, 0.15), signed=True,
                                   mark=True) == "+0.067 [-0.020, +0.150]~"
  assert bootstrap.format_interval(bootstrap.Interval(0.6, 0.55, 0.68)) == "0.600 [0.550, 0.680]"
  assert bootstrap.format_interval(None) == "-"


def test_majority_answer_and_chance():
  assert examples.majority_answer(["no", "yes", "no"]) == "no"
  assert examples.majority_answer(["b", "a"]) == "a"  # Ties: alphabetically first.
  with pytest.raises(ValueError, match="no training answers"):
    examples.majority_answer([])
  rec = lambda **kw: records.TraceRecord(id="q", community="c", split="test", question="?",
                                         rationales={6: "r"}, **kw)
  assert examples.chance_of(rec(answer="yes", answer_type="boolean")) == 0.5
  assert examples.chance_of(rec(answer="b", answer_type="choice",
                                choices=("a", "b", "c", "d"))) == 0.25
  assert examples.chance_of(rec(answer="7", answer_type="number")) == 0.0


def test_majority_class_of_choice_questions_is_a_position():
  # Every question lists its own options, so no answer text repeats; position (c) is the most
  # common, and it answers a new question with that question's third option.
  rec = lambda i, answer, choices, split="train": records.TraceRecord(
      id=f"q{i}", community="c", split=split, question="?", answer=answer, answer_type="choice",
      rationales={}, choices=tuple(choices))
  train = [rec(0, "cat", ["dog", "bird", "cat"]), rec(1, "pear", ["apple", "plum", "pear"]),
           rec(2, "red", ["red", "blue", "green"])]
  majority = examples.majority_class(train)
  assert majority == examples.MajorityClass(position=2)
  assert majority.describe() == "choice (c)"
  assert majority.correct("sun", "choice", ["moon", "star", "sun"])
  assert not majority.correct("moon", "choice", ["moon", "star", "sun"])
  assert not majority.correct("yes", "choice", ["yes", "no"])  # No third option.
  # Ties go to the first position.
  assert examples.majority_class(train[:1] + train[2:]) == examples.MajorityClass(position=0)
  with pytest.raises(ValueError, match="exactly one"):
    examples.MajorityClass()


def test_outcomes_from_predictions_score_majority_and_teacher(tmp_path):
  test = [records.TraceRecord(id=f"t{i}", community="c", split="test", question=f"q{i}?",
                              answer=a, answer_type="boolean", rationales={6: "r"},
                              teacher_answer=t)
          for i, (a, t) in enumerate([("yes", "yes"), ("no", "yes"), ("no", None)])]
  preds = tmp_path / "p.jsonl"
  preds.write_text("".join(json.dumps({"id": f"t{i}", "parsed_answer": p, "correct": c}) + "\n"
                           for i, (p, c) in enumerate([("yes", True), ("", False), ("no", True)])))
  majority = examples.majority_class([dataclasses.replace(r, split="train") for r in test])
  assert majority == examples.MajorityClass(answer="no")
  got = examples.outcomes_from_predictions(preds, "c", test, majority)
  assert [(o.correct, o.answer, o.majority_correct, o.teacher_correct, o.chance) for o in got] == [
      (True, "yes", False, True, 0.5), (False, None, True, False, 0.5),
      (True, "no", True, None, 0.5)]
  path = tmp_path / "examples.jsonl"
  assert examples.write_examples(path, got) == 3
  assert examples.read_examples(path) == {None: got}
  preds.write_text(json.dumps({"id": "zz", "parsed_answer": "yes", "correct": True}) + "\n")
  with pytest.raises(results.ResultError, match=r"p.jsonl:1: field 'id': 'zz' is not a test"):
    examples.outcomes_from_predictions(preds, "c", test, majority)


def test_read_examples_names_file_line_and_field(tmp_path):
  path = tmp_path / "examples.jsonl"
  path.write_text('{"community": "a", "id": "1", "correct": true}\n'
                  '{"community": "a", "id": "2", "correct": "yes"}\n')
  with pytest.raises(results.ResultError, match=r"examples.jsonl:2: field 'correct'"):
    examples.read_examples(path)
  path.write_text('{"community": "a", "id": "1", "correct": true}\n' * 2)
  with pytest.raises(results.ResultError, match=r"examples.jsonl:2: field 'id'.*repeats line 1"):
    examples.read_examples(path)


# ---------------------------------------------------------------------------
# A small sweep with per-example outcomes: analysis, pairing errors, report.

N = 200


def _sweep(rng_seed: int = 0, *, shuffle: bool = True):
  """Coalitions of a, b over 2 seeds; a gains a lot in {a,b}, b gains nothing."""
  rng = np.random.default_rng(rng_seed)
  rate = {(("a",), "a"): 0.5, (("b",), "b"): 0.6, (("a", "b"), "a"): 0.8,
          (("a", "b"), "b"): 0.6}
  rows, outcomes = [], {}
  for seed in (0, 1):
    for members in (("a",), ("b",), ("a", "b")):
      run = f"{'_'.join(members)}.L6.cot_label.s{seed}"
      lines = []
      for c in members:
        correct = rng.random(N) < rate[(members, c)]
        order = rng.permutation(N) if shuffle else np.arange(N)
        lines += [ExampleOutcome(c, f"{c}-{i:04d}", bool(correct[i]), answer="x",
                                 majority_correct=i % 3 == 0, teacher_correct=i % 10 != 0,
                                 chance=0.25) for i in map(int, order)]
      outcomes[run] = lines
      rows.append(RunResult(
          run=run, members=members, level=6, format="cot_label", seed=seed,
          accuracy={c: float(np.mean([o.correct for o in lines if o.community == c]))
                    for c in members},
          num_examples={c: N for c in members}, train_examples={c: 10 for c in members},
          steps=10, wall_s=1.0))
  return rows, outcomes


def test_analysis_pairs_runs_and_marks_what_is_significant():
  rows, outcomes = _sweep()
  (result,) = analysis.analyse(rows, outcomes, resamples=1000).values()
  ab, a = frozenset({"a", "b"}), frozenset({"a"})
  assert result.num_examples == {"a": N, "b": N}
  assert result.accuracy[a]["a"].value == pytest.approx(
      np.mean([rows[0].accuracy["a"], rows[3].accuracy["a"]]))
  assert result.gain[ab]["a"].excludes_zero and result.gain[ab]["a"].value > 0.2
  assert not result.gain[ab]["b"].excludes_zero
  # The verdict follows the point estimates; '~' because b's gain is within noise.
  assert result.ir[ab] == ("yes~" if result.gain[ab]["b"].value >= 0 else "no~")
  assert result.chance == {"a": pytest.approx(max(0.25, np.mean([i % 3 == 0 for i in range(N)]))),
                           "b": pytest.approx(0.335)}
  assert result.baselines[analysis.TEACHER]["a"].value == pytest.approx(0.9)
  assert result.baselines[analysis.MAJORITY]["b"].value == pytest.approx(0.335)
  assert result.shapley is not None and result.core is not None
  labels = [label for label, _ in result.significant_effects()]
  assert "gain of a in {a,b}" in labels and "gain of b in {a,b}" not in labels
  text = tables.interval_table(result)
  assert "standalone a:" in text and "coalition effects whose 95% interval excludes 0" in text
  assert "teacher" in text and "chance level" in text and f"a: {N}, b: {N}" in text


def test_analysis_rejects_runs_with_missing_example_ids():
  rows, outcomes = _sweep()
  run = "a_b.L6.cot_label.s1"
  outcomes[run] = [o for o in outcomes[run] if o.id not in ("a-0007", "a-0011")]
  with pytest.raises(ValueError, match=r"coalition \{a,b\} on a seed 1: lacks example ids "
                     r"a-0007, a-0011"):
    analysis.analyse(rows, outcomes, resamples=10)


def _write_sweep(sweep, rows, outcomes):
  """A sweep directory: each run's result.json and examples.jsonl."""
  for row in rows:
    results.write_result(sweep / row.run, row)
    examples.write_examples(sweep / row.run / results.EXAMPLES_FILENAME, outcomes[row.run])
  return sweep


def test_report_with_examples_prints_intervals(tmp_path, capsys):
  rows, outcomes = _sweep()
  sweep = _write_sweep(tmp_path / "sweep", rows, outcomes)
  assert report_cli.main([str(sweep), "--resamples", "200"]) == 0
  text = (sweep / "report.md").read_text()
  assert "200 paired bootstrap resamples" in text
  assert "with 95% intervals and baselines" in text
  assert "| teacher | - |" in text
  assert "~ marks a difference whose 95% interval contains 0" in text


def test_fine_tuned_minus_zero_shot_is_paired_on_the_same_examples(tmp_path):
  rows, outcomes = _sweep()
  zero_run = "zero_shot.a_b.L6.cot_label.s0"
  outcomes[zero_run] = [ExampleOutcome(c, f"{c}-{i:04d}", i % 4 == 0, answer="x",
                                       majority_correct=i % 3 == 0, teacher_correct=i % 10 != 0,
                                       chance=0.25) for c in ("a", "b") for i in range(N)]
  rows.append(RunResult(run=zero_run, members=("a", "b"), level=6, format="cot_label", seed=0,
                        accuracy={"a": 0.25, "b": 0.25}, num_examples={"a": N, "b": N},
                        train_examples={"a": 0, "b": 0}, steps=0, wall_s=1.0,
                        baseline="zero_shot"))
  (result,) = analysis.analyse(rows, outcomes, resamples=500).values()
  a, ab = frozenset({"a"}), frozenset({"a", "b"})
  over = result.over_zero_shot[a]["a"]
  assert over.value == pytest.approx(result.accuracy[a]["a"].value - 0.25)
  assert over.excludes_zero and over.low > 0.1
  # Paired: the difference's interval is narrower than the two accuracies' widths added.
  widths = (result.accuracy[a]["a"].high - result.accuracy[a]["a"].low
            + result.baselines[analysis.ZERO_SHOT]["a"].high
            - result.baselines[analysis.ZERO_SHOT]["a"].low)
  assert over.high - over.low < widths
  assert set(result.over_zero_shot[ab]) == {"a", "b"}

  sweep = _write_sweep(tmp_path / "sweep", rows, outcomes)
  assert report_cli.main([str(sweep), "--resamples", "500"]) == 0
  text = (sweep / "report.md").read_text()
  assert "| fine-tuned - zero-shot | a | b |" in text
  assert f"| {{a}} | {bootstrap.format_interval(over, signed=True, mark=True)} | - |" in text
  assert (f"standalone a: {bootstrap.format_interval(result.accuracy[a]['a'])} is above its "
          f"chance level 0.335; fine-tuned - zero-shot "
          f"{bootstrap.format_interval(over, signed=True)} (above the zero-shot student)") in text


def _zero_shot(level: int, members: tuple[str, ...], rate: int):
  """A zero-shot run at ``level``: right on every ``rate``-th example."""
  run = f"zero_shot.{'_'.join(members)}.L{level}.cot_label.s0"
  lines = [ExampleOutcome(c, f"{c}-{i:04d}", i % rate == 0, chance=0.25)
           for c in members for i in range(N)]
  row = RunResult(run=run, members=members, level=level, format="cot_label", seed=0,
                  accuracy={c: 1 / rate for c in members}, num_examples={c: N for c in members},
                  train_examples={c: 0 for c in members}, steps=0, wall_s=1.0,
                  baseline="zero_shot")
  return row, lines


def test_a_zero_shot_run_serves_every_level_of_its_format():
  # The untrained student's outcomes do not depend on the level: level 6's setting, which has no
  # zero-shot run of its own, uses level 1's; a setting's own run comes first.
  rows, outcomes = _sweep()
  for level, rate in ((1, 4), (3, 2)):
    row, lines = _zero_shot(level, ("a", "b"), rate)
    rows.append(row)
    outcomes[row.run] = lines
  (l6,) = analysis.analyse(rows, outcomes, resamples=200).values()  # Nothing trained at 1, 3.
  assert l6.setting.level == 6
  assert l6.baselines[analysis.ZERO_SHOT]["a"].value == pytest.approx(0.5)  # Level 3's, nearest.
  own, lines = _zero_shot(6, ("a",), 5)
  outcomes[own.run] = lines
  (l6,) = analysis.analyse(rows + [own], outcomes, resamples=200).values()
  assert l6.baselines[analysis.ZERO_SHOT]["a"].value == pytest.approx(0.2)  # Its own.
  assert l6.baselines[analysis.ZERO_SHOT]["b"].value == pytest.approx(0.5)  # Shared.
  other_format = RunResult(**{**own.__dict__, "run": "x", "format": "label_cot"})
  outcomes["x"] = lines
  only_other = [r for r in rows if r.baseline is None] + [other_format]
  (l6,) = analysis.analyse(only_other, outcomes, resamples=200).values()
  assert analysis.ZERO_SHOT not in l6.baselines  # Never across formats.
