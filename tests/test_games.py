"""Tests of cdc_jax.coalitions.games on games whose values are known by hand."""

from __future__ import annotations

import itertools

import pytest

from cdc_jax.coalitions import games
from cdc_jax.coalitions.results import RunResult
from cdc_jax.coalitions.incentives import Setting


def _game(players, value) -> games.Game:
  return games.Game(tuple(players), {c: value(c) for c in games.all_coalitions(players)})


def _approx(values: dict) -> dict:
  return {k: pytest.approx(v, abs=1e-12) for k, v in values.items()}


GLOVE = _game("abc", lambda c: float("a" in c and len(c) >= 2))  # a: left glove; b, c: right.
MAJORITY = _game("abc", lambda c: float(len(c) >= 2))
HAND_VALUES = {"a": 1, "b": 2, "c": 3, "ab": 6, "ac": 7, "bc": 8, "abc": 12}
HAND = _game("abc", lambda c: HAND_VALUES["".join(sorted(c))])


def test_all_coalitions_order():
  assert games.all_coalitions(("x", "y", "z")) == [
      frozenset("x"), frozenset("y"), frozenset("z"), frozenset("xy"), frozenset("xz"),
      frozenset("yz"), frozenset("xyz")]


def test_glove_game():
  assert games.shapley_values(GLOVE) == _approx({"a": 2 / 3, "b": 1 / 6, "c": 1 / 6})
  assert games.banzhaf_values(GLOVE) == _approx({"a": 0.75, "b": 0.25, "c": 0.25})
  # The core is the single point (1, 0, 0); Shapley gives {a,b} only 5/6 of its 1.
  check = games.check_core(GLOVE, games.shapley_values(GLOVE))
  assert check.efficient and not check.in_core
  assert [(c, pytest.approx(d)) for c, d in check.violations] == [
      (frozenset("ab"), 1 / 6), (frozenset("ac"), 1 / 6)]
  lp = games.solve_core_lp(GLOVE)
  assert not lp.core_is_empty and not games.core_is_empty(GLOVE)
  assert lp.min_total == pytest.approx(1.0)
  assert lp.allocation == _approx({"a": 1.0, "b": 0.0, "c": 0.0})
  assert games.check_core(GLOVE, lp.allocation).in_core


def test_majority_game_has_empty_core():
  assert games.shapley_values(MAJORITY) == _approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
  assert games.banzhaf_values(MAJORITY) == _approx({"a": 0.5, "b": 0.5, "c": 0.5})
  lp = games.solve_core_lp(MAJORITY)
  assert lp.core_is_empty and games.core_is_empty(MAJORITY)
  # The three pairs with weight 1/2 are balanced and earn 3/2 > v(N) = 1.
  assert lp.min_total == pytest.approx(1.5)
  assert lp.balanced_weights == _approx(
      {frozenset("ab"): 0.5, frozenset("ac"): 0.5, frozenset("bc"): 0.5})


def test_four_player_majority_game_lp():
  # Every pair earns 1: x(N) >= 2 (sum over the 6 pairs gives 3 x(N) >= 6), v(N) = 1.
  game = _game("abcd", lambda c: float(len(c) >= 2))
  lp = games.solve_core_lp(game)
  assert lp.min_total == pytest.approx(2.0)
  assert lp.core_is_empty


def test_additive_game():
  weights = {"a": 0.3, "b": -0.1, "c": 0.5, "d": 0.25}
  game = _game("abcd", lambda c: sum(weights[i] for i in c))
  assert games.shapley_values(game) == _approx(weights)
  assert games.banzhaf_values(game) == _approx(weights)
  assert games.check_core(game, weights).in_core
  assert not games.core_is_empty(game)
  assert games.solve_core_lp(game).min_total == pytest.approx(sum(weights.values()))


def test_hand_computed_three_player_game():
  # phi_a = 1/3*1 + 1/6*(6-2) + 1/6*(7-3) + 1/3*(12-8) = 3, and so on.
  assert games.shapley_values(HAND) == _approx({"a": 3.0, "b": 4.0, "c": 5.0})
  assert games.banzhaf_values(HAND) == _approx({"a": 13 / 4, "b": 17 / 4, "c": 21 / 4})
  assert games.check_core(HAND, {"a": 3, "b": 4, "c": 5}).in_core
  check = games.check_core(HAND, {"a": 1, "b": 2, "c": 9})
  assert check.efficient and check.violations == ((frozenset("ab"), 3.0),)
  inefficient = games.check_core(HAND, {"a": 3, "b": 4, "c": 6})
  assert inefficient.surplus == 1.0 and not inefficient.efficient and not inefficient.in_core
  lp = games.solve_core_lp(HAND)
  assert lp.min_total == pytest.approx(12.0) and not lp.core_is_empty
  assert games.check_core(HAND, lp.allocation, tolerance=1e-9).in_core


def test_core_lp_matches_brute_force_on_integer_games():
  # x(S) >= v(S) on a grid of integer allocations: with integer values and a
  # non-empty core, some integer-or-half point is in it for these small games.
  for values in ({"a": 0, "b": 0, "c": 0, "ab": 2, "ac": 2, "bc": 2, "abc": 3},
                 {"a": 0, "b": 0, "c": 0, "ab": 2, "ac": 2, "bc": 2, "abc": 2},
                 {"a": 1, "b": 0, "c": 0, "ab": 3, "ac": 1, "bc": 2, "abc": 4}):
    game = _game("abc", lambda c: values["".join(sorted(c))])
    grid = [x / 2 for x in range(-2, 2 * values["abc"] + 3)]
    brute = any(games.check_core(game, {"a": x, "b": y, "c": values["abc"] - x - y}).in_core
                for x, y in itertools.product(grid, grid))
    assert games.core_is_empty(game) == (not brute), values


def test_monte_carlo_shapley_covers_exact_values():
  exact = games.shapley_values(HAND)
  estimates = games.monte_carlo_shapley(HAND, HAND.players, num_permutations=400, seed=3)
  for player, estimate in estimates.items():
    assert estimate.low <= exact[player] <= estimate.high, (player, estimate)
    assert estimate.high - estimate.low < 0.5
    assert estimate.low == pytest.approx(estimate.mean - 1.96 * estimate.std / 20)
    assert estimate.num_permutations == 400
  # Each permutation's marginals add up to v(N), so the means do too.
  assert sum(e.mean for e in estimates.values()) == pytest.approx(12.0, abs=1e-12)
  again = games.monte_carlo_shapley(HAND, HAND.players, num_permutations=400, seed=3)
  assert again == estimates
  other = games.monte_carlo_shapley(HAND, HAND.players, num_permutations=400, seed=4)
  assert other != estimates


def test_monte_carlo_shapley_of_additive_game_is_exact():
  estimates = games.monte_carlo_shapley(lambda c: 2.0 * len(c), "xyz", num_permutations=10)
  assert {p: (e.mean, e.std) for p, e in estimates.items()} == {
      "x": (2.0, 0.0), "y": (2.0, 0.0), "z": (2.0, 0.0)}
  with pytest.raises(ValueError, match="at least 2"):
    games.monte_carlo_shapley(lambda c: 1.0, "xy", num_permutations=1)


def test_game_lists_missing_coalitions():
  values = {frozenset("a"): 1.0, frozenset("b"): 1.0, frozenset("abc"): 3.0}
  with pytest.raises(ValueError, match=r"lacks 4 of 7 coalitions: \{c\}, \{a,b\}, \{a,c\}, "
                     r"\{b,c\}"):
    games.Game(("a", "b", "c"), values)
  with pytest.raises(ValueError, match="non-players"):
    games.Game(("a",), {frozenset("a"): 1.0, frozenset("ab"): 1.0})
  with pytest.raises(ValueError, match="v\\(empty\\) must be 0"):
    games.Game(("a",), {frozenset(): 1.0, frozenset("a"): 1.0})


def _run(members, accuracy, seed=0, level=6) -> RunResult:
  return RunResult(run=f"{''.join(members)}-{seed}-{level}", members=tuple(members), level=level,
                   format="cot_label", seed=seed, accuracy=accuracy,
                   num_examples={c: 10 for c in accuracy},
                   train_examples={c: 5 for c in members}, steps=1, wall_s=0.0)


def test_game_from_results_total_and_macro_welfare():
  rows = [_run("a", {"a": 0.5, "b": 0.1}), _run("b", {"b": 0.4}),
          _run("ab", {"a": 0.6, "b": 0.4}, seed=0), _run("ab", {"a": 0.8, "b": 0.6}, seed=1),
          _run("a", {"a": 0.9}, level=1)]
  setting = Setting(6, "cot_label")
  total = games.game_from_results(rows, setting)
  assert total.players == ("a", "b")
  # Seeds averaged: acc(ab) = (0.7, 0.5); the non-member b in {a}'s run does not count.
  assert total.values == _approx({frozenset(): 0.0, frozenset("a"): 0.5, frozenset("b"): 0.4,
                                  frozenset("ab"): 1.2})
  macro = games.game_from_results(rows, setting, welfare="macro")
  assert macro(frozenset("ab")) == pytest.approx(0.6)
  assert games.shapley_values(total) == _approx({"a": 0.65, "b": 0.55})
  with pytest.raises(ValueError, match=r"setting L1 cot_label: the game of \{a,b\} lacks 2 of 3 "
                     r"coalitions: \{b\}, \{a,b\}"):
    games.game_from_results(rows, Setting(1, "cot_label"), players=("a", "b"))
  with pytest.raises(ValueError, match="no natural-mixture runs in setting L2 cot_label"):
    games.game_from_results(rows, Setting(2, "cot_label"))
  with pytest.raises(ValueError, match="unknown welfare"):
    games.game_from_results(rows, setting, welfare="mean")
