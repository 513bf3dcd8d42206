"""Tests of cdc_jax.coalitions.incentives on hand-computed accuracies."""

from __future__ import annotations

import pytest

from cdc_jax.coalitions import incentives
from cdc_jax.coalitions.incentives import Setting
from cdc_jax.coalitions.results import RunResult

C = frozenset
ACC = {
    C("a"): {"a": 0.50, "b": 0.05},
    C("b"): {"b": 0.40},
    C("ab"): {"a": 0.60, "b": 0.30},
    C("bc"): {"b": 0.45, "c": 0.20},
    C("abc"): {"a": 0.70, "b": 0.50, "c": 0.40},
}


def test_standalone_and_greedy_gain():
  assert incentives.standalone(ACC, "a") == 0.5
  assert incentives.standalone(ACC, "c") is None
  assert incentives.greedy_gain(ACC, C("ab"), "a") == pytest.approx(0.1)
  assert incentives.greedy_gain(ACC, C("ab"), "b") == pytest.approx(-0.1)
  assert incentives.greedy_gain(ACC, C("abc"), "c") is None
  with pytest.raises(KeyError, match=r"no run of coalition \{a,c\}"):
    incentives.greedy_gain(ACC, C("ac"), "a")


def test_individual_rationality_with_tolerance():
  assert incentives.individually_rational(ACC, C("ab")) is False
  assert incentives.individually_rational(ACC, C("ab"), tolerance=0.1 + 1e-9) is True
  assert incentives.individually_rational(ACC, C("abc")) is None  # No run of {c}.
  assert incentives.individually_rational(ACC, C("a")) is True


def test_welfare_and_worst_off():
  assert incentives.macro_welfare(ACC, C("abc")) == pytest.approx(1.6 / 3)
  # Example-weighted: (300*0.7 + 100*0.5 + 100*0.4) / 500; non-members' counts are ignored.
  examples = {"a": 300, "b": 100, "c": 100, "d": 10_000}
  assert incentives.weighted_welfare(ACC, C("abc"), examples) == pytest.approx(0.6)
  assert incentives.worst_off(ACC, C("abc")) == 0.4
  # A non-member evaluated on {a}'s run does not count toward {a}'s welfare.
  assert incentives.macro_welfare(ACC, C("a")) == 0.5


def test_altruistic_contribution():
  # a to {a,b,c}: mean of b: 0.50-0.45 and c: 0.40-0.20.
  assert incentives.altruistic_contribution(ACC, C("abc"), "a") == pytest.approx(0.125)
  assert incentives.altruistic_contribution(ACC, C("ab"), "a") == pytest.approx(-0.1)
  assert incentives.altruistic_contribution(ACC, C("ab"), "b") == pytest.approx(0.1)
  assert incentives.altruistic_contribution(ACC, C("abc"), "b") is None  # No run of {a,c}.
  assert incentives.altruistic_contribution(ACC, C("a"), "a") is None


def _run(members, accuracy, *, seed=0, level=6, fmt="cot_label", proportions=None, eps=None,
         examples=None) -> RunResult:
  examples = examples or {c: 100 for c in accuracy}
  return RunResult(run=f"{''.join(members)}-{seed}-{level}-{fmt}-{proportions}-{eps}",
                   members=tuple(members), level=level, format=fmt, seed=seed,
                   accuracy=accuracy, num_examples=examples,
                   train_examples={c: 1 for c in members}, steps=1, wall_s=0.0,
                   proportions=proportions, eps=eps)


def test_coalition_table_averages_seeds_per_setting():
  rows = [
      _run("a", {"a": 0.4}, seed=0), _run("a", {"a": 0.6}, seed=1),
      _run("b", {"b": 0.3}),
      _run("ab", {"a": 0.7, "b": 0.2}, seed=0, examples={"a": 300, "b": 100}),
      _run("ab", {"a": 0.5, "b": 0.4}, seed=1, examples={"a": 300, "b": 100}),
      _run("a", {"a": 0.9}, fmt="label_only"),
      _run("a", {"a": 0.1}, eps=1.0),
      _run("ab", {"a": 0.9, "b": 0.1}, proportions={"a": 0.9, "b": 0.1}),
  ]
  table = incentives.coalition_table(rows)
  assert [(str(r.setting), r.members, r.seeds) for r in table] == [
      ("L6 cot_label", ("a",), 2), ("L6 cot_label", ("b",), 1), ("L6 cot_label", ("a", "b"), 2),
      ("L6 cot_label eps=1.0", ("a",), 1), ("L6 label_only", ("a",), 1)]
  a_alone, _, ab = table[:3]
  assert a_alone.accuracy == {"a": pytest.approx(0.5)}
  assert a_alone.accuracy_std == {"a": pytest.approx(0.1414213562)}
  assert ab.accuracy == {"a": pytest.approx(0.6), "b": pytest.approx(0.3)}
  assert ab.standalone == {"a": pytest.approx(0.5), "b": 0.3}
  assert ab.gain == {"a": pytest.approx(0.1), "b": pytest.approx(0.0)}
  assert ab.individually_rational is True
  assert ab.macro_welfare == pytest.approx(0.45)
  assert ab.weighted_welfare == pytest.approx((300 * 0.6 + 100 * 0.3) / 400)
  assert ab.worst_off == pytest.approx(0.3)
  assert ab.altruistic == {"a": pytest.approx(0.0), "b": pytest.approx(0.1)}
  assert table[3].gain == {"a": 0.0}  # Private runs compare with private runs only.


def test_duplicate_seed_is_an_error():
  rows = [_run("a", {"a": 0.4}), RunResult(**{**_run("a", {"a": 0.5}).__dict__, "run": "x"})]
  with pytest.raises(ValueError, match=r"runs 'a-0-6-cot_label-None-None' and 'x' repeat "
                     r"coalition \{a\} \(L6 cot_label\) with the same seed 0"):
    incentives.coalition_table(rows)


def test_singleton_with_proportion_one_is_natural():
  row = _run("a", {"a": 0.4}, proportions={"a": 1.0})
  assert incentives.mixture_of(row) is None
  assert incentives.coalition_table([row])[0].accuracy == {"a": 0.4}


def test_proportion_points():
  rows = [_run("a", {"a": 0.5}), _run("b", {"b": 0.4}),
          _run("ab", {"a": 0.6, "b": 0.45}),  # Natural mixture: not a point.
          _run("ab", {"a": 0.7, "b": 0.3}, proportions={"a": 0.75, "b": 0.25},
               examples={"a": 300, "b": 100}),
          _run("ab", {"a": 0.55, "b": 0.5}, proportions={"a": 0.25, "b": 0.75}),
          _run("abc", {"a": 0.5, "b": 0.5, "c": 0.5},
               proportions={"a": 0.5, "b": 0.25, "c": 0.25})]
  points = incentives.proportion_points(rows)
  assert [p.proportions for p in points] == [{"a": 0.25, "b": 0.75}, {"a": 0.75, "b": 0.25}]
  low, high = points
  assert low.members == ("a", "b") and low.setting == Setting(6, "cot_label")
  assert low.gain == {"a": pytest.approx(0.05), "b": pytest.approx(0.1)}
  assert high.gain == {"a": pytest.approx(0.2), "b": pytest.approx(-0.1)}
  assert high.macro_welfare == pytest.approx(0.5)
  assert high.weighted_welfare == pytest.approx((300 * 0.7 + 100 * 0.3) / 400)
  # Without standalone runs the gains are unknown.
  assert incentives.proportion_points(rows[3:4])[0].gain == {"a": None, "b": None}
