"""Cooperative games over communities: Shapley and Banzhaf values and the core.

A :class:`Game` is a characteristic function ``v`` over every non-empty
coalition of its players (``v(empty) = 0``). The default game of a sweep is
total welfare, ``v(C) = sum_{i in C} acc_i(C)``; macro welfare (the mean) is
the other choice. Emptiness of the core is decided exactly by the
Bondareva-Shapley LP, solved by a small built-in simplex (scipy is not a
dependency). Formulas: docs/incentives.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from cdc_jax.coalitions import incentives
from cdc_jax.coalitions.results import RunResult

Coalition = frozenset[str]
WELFARES = ("total", "macro")


def all_coalitions(players: Sequence[str]) -> list[Coalition]:
  """The ``2^K - 1`` non-empty coalitions, by size then player order."""
  return [frozenset(c) for size in range(1, len(players) + 1)
          for c in itertools.combinations(players, size)]


def _name(coalition: Iterable[str]) -> str:
  return incentives.coalition_name(coalition)


@dataclasses.dataclass(frozen=True)
class Game:
  """A characteristic function on every non-empty coalition of ``players``.

  Construction raises ValueError listing the coalitions that have no value.
  Calling the game on a coalition returns its value (0 for the empty one).
  """
  players: tuple[str, ...]
  values: Mapping[Coalition, float]

  def __post_init__(self):
    players = tuple(self.players)
    if not players or len(set(players)) != len(players):
      raise ValueError(f"a game needs distinct players, got {list(players)}")
    object.__setattr__(self, "players", players)
    values = {frozenset(c): float(v) for c, v in self.values.items()}
    unknown = [c for c in values if c and not c <= set(players)]
    if unknown:
      raise ValueError(f"coalitions {[_name(c) for c in unknown]} have non-players "
                       f"(players: {list(players)})")
    if values.get(frozenset(), 0.0) != 0.0:
      raise ValueError(f"v(empty) must be 0, got {values[frozenset()]}")
    missing = missing_coalitions(players, values)
    if missing:
      raise ValueError(f"the game of {_name(players)} lacks {len(missing)} of "
                       f"{2 ** len(players) - 1} coalitions: {', '.join(map(_name, missing))}")
    if not all(math.isfinite(v) for v in values.values()):
      raise ValueError("coalition values must be finite")
    values[frozenset()] = 0.0
    object.__setattr__(self, "values", values)

  def __call__(self, coalition: Iterable[str]) -> float:
    return self.values[frozenset(coalition)]

  @property
  def grand_coalition(self) -> Coalition:
    """All players."""
    return frozenset(self.players)


def missing_coalitions(players: Sequence[str], available: Iterable[Coalition]) -> list[Coalition]:
  """The non-empty coalitions of ``players`` not in ``available`` (by size)."""
  have = set(map(frozenset, available))
  return [c for c in all_coalitions(players) if c not in have]


def game_from_accuracies(acc: incentives.Accuracies, *, players: Sequence[str] | None = None,
                         welfare: str = "total") -> Game:
  """The welfare game of seed-averaged accuracies (coalition -> community -> accuracy).

  ``welfare='total'``: ``v(C) = sum_{i in C} acc_i(C)``; ``'macro'``: the mean.
  ``players`` defaults to every community of a coalition in ``acc``.
  """
  if welfare not in WELFARES:
    raise ValueError(f"unknown welfare {welfare!r}: expected one of {WELFARES}")
  if players is None:
    players = sorted({i for c in acc for i in c})
  players = tuple(players)
  reduce = sum if welfare == "total" else (lambda xs: sum(xs) / len(xs))
  values = {c: reduce([acc[c][i] for i in sorted(c)])
            for c in acc if c and c <= set(players)}
  return Game(players, values)


def game_from_results(rows: Iterable[RunResult], setting: incentives.Setting, *,
                      players: Sequence[str] | None = None, welfare: str = "total") -> Game:
  """The welfare game of one setting's natural-mixture runs (averaged over seeds).

  Raises ValueError naming the setting and listing missing coalitions.
  """
  averages = incentives.natural_by_setting(rows).get(setting, {})
  if not averages:
    raise ValueError(f"no natural-mixture runs in setting {setting}")
  try:
    return game_from_accuracies(incentives.accuracies(averages), players=players, welfare=welfare)
  except ValueError as e:
    raise ValueError(f"setting {setting}: {e}") from None


# ---------------------------------------------------------------------------
# Values.


def shapley_values(game: Game) -> dict[str, float]:
  """Exact Shapley values: ``phi_i = sum_S |S|!(K-|S|-1)!/K! (v(S+i) - v(S))``."""
  k = len(game.players)
  weight = [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
  out = {}
  for i in game.players:
    others = [p for p in game.players if p != i]
    out[i] = sum(weight[len(s)] * (game(set(s) | {i}) - game(s))
                 for size in range(k) for s in itertools.combinations(others, size))
  return out


def banzhaf_values(game: Game) -> dict[str, float]:
  """Raw Banzhaf values: ``beta_i = 2^-(K-1) sum_{S not containing i} (v(S+i) - v(S))``."""
  k = len(game.players)
  out = {}
  for i in game.players:
    others = [p for p in game.players if p != i]
    out[i] = sum(game(set(s) | {i}) - game(s)
                 for size in range(k) for s in itertools.combinations(others, size)) / 2 ** (k - 1)
  return out


@dataclasses.dataclass(frozen=True)
class ShapleyEstimate:
  """A Monte-Carlo Shapley estimate with its normal confidence interval."""
  mean: float
  std: float
  num_permutations: int
  z: float

  @property
  def stderr(self) -> float:
    return self.std / math.sqrt(self.num_permutations)

  @property
  def low(self) -> float:
    return self.mean - self.z * self.stderr

  @property
  def high(self) -> float:
    return self.mean + self.z * self.stderr


def monte_carlo_shapley(value: Callable[[Coalition], float], players: Sequence[str], *,
                        num_permutations: int, seed: int = 0,
                        z: float = 1.96) -> dict[str, ShapleyEstimate]:
  """Shapley values estimated from random player orders.

  Each permutation gives every player its marginal contribution
  ``v(P + i) - v(P)`` to the players ``P`` before it (``v(empty) = 0``); the
  estimate is their mean with interval ``mean +- z * std / sqrt(n)``. Each
  coalition's value is computed once.
  """
  if num_permutations < 2:
    raise ValueError(f"num_permutations must be at least 2, got {num_permutations}")
  players = tuple(players)
  cache: dict[Coalition, float] = {frozenset(): 0.0}

  def v(coalition: Coalition) -> float:
    if coalition not in cache:
      cache[coalition] = float(value(coalition))
    return cache[coalition]

  rng = np.random.default_rng(seed)
  marginals = np.zeros((num_permutations, len(players)))
  for t in range(num_permutations):
    before, previous = frozenset(), 0.0
    for index in rng.permutation(len(players)):
      before = before | {players[index]}
      current = v(before)
      marginals[t, index] = current - previous
      previous = current
  means, stds = marginals.mean(axis=0), marginals.std(axis=0, ddof=1)
  return {p: ShapleyEstimate(float(means[j]), float(stds[j]), num_permutations, z)
          for j, p in enumerate(players)}


# ---------------------------------------------------------------------------
# The core.


@dataclasses.dataclass(frozen=True)
class CoreCheck:
  """Whether an allocation is in the core, and where it fails.

  ``surplus`` is ``sum_i x_i - v(N)`` (0 for an efficient allocation);
  ``violations`` are the coalitions ``S`` with ``x(S) < v(S)`` and their
  deficits ``v(S) - x(S)``, largest first.
  """
  surplus: float
  violations: tuple[tuple[Coalition, float], ...]
  tolerance: float

  @property
  def efficient(self) -> bool:
    return abs(self.surplus) <= self.tolerance

  @property
  def in_core(self) -> bool:
    return self.efficient and not self.violations


def check_core(game: Game, allocation: Mapping[str, float], *,
               tolerance: float = 1e-9) -> CoreCheck:
  """Checks efficiency ``x(N) = v(N)`` and ``x(S) >= v(S)`` for every coalition ``S``."""
  if set(allocation) != set(game.players):
    raise ValueError(f"allocation is for {sorted(allocation)}, the game's players are "
                     f"{sorted(game.players)}")
  surplus = sum(allocation.values()) - game(game.grand_coalition)
  violations = []
  for coalition in all_coalitions(game.players)[:-1]:  # The grand coalition is efficiency's.
    deficit = game(coalition) - sum(allocation[i] for i in coalition)
    if deficit > tolerance:
      violations.append((coalition, deficit))
  violations.sort(key=lambda cv: -cv[1])
  return CoreCheck(surplus, tuple(violations), tolerance)


@dataclasses.dataclass(frozen=True)
class CoreLP:
  """The solution of the Bondareva-Shapley LP of a game.

  ``min_total`` is both ``min x(N) s.t. x(S) >= v(S) for all S`` and
  ``max sum_S w_S v(S)`` over balanced weights (``sum_{S ni i} w_S = 1``).
  The core is empty iff ``min_total > v(N)``; ``allocation`` attains
  ``min_total`` (a core allocation when the core is not empty) and
  ``balanced_weights`` (positive weights only) certify emptiness otherwise.
  """
  min_total: float
  grand_value: float
  allocation: Mapping[str, float]
  balanced_weights: Mapping[Coalition, float]
  tolerance: float

  @property
  def core_is_empty(self) -> bool:
    return self.min_total > self.grand_value + self.tolerance


def solve_core_lp(game: Game, *, tolerance: float = 1e-9, max_iterations: int = 10_000) -> CoreLP:
  """Solves the balancedness LP by the revised simplex method with Bland's rule.

  The LP ``max c.w s.t. A w = 1, w >= 0`` (``A`` is players x coalitions
  membership, ``c_S = v(S)``) starts from the feasible basis {grand coalition,
  all singletons but the last} (``w_N = 1``); Bland's rule rules out cycling
  on the many degenerate pivots of this LP.
  """
  players, coalitions = game.players, all_coalitions(game.players)
  k, m = len(players), len(coalitions)
  a = np.array([[1.0 if p in c else 0.0 for c in coalitions] for p in players])
  c = np.array([game(s) for s in coalitions])
  index = {s: j for j, s in enumerate(coalitions)}
  basis = [index[frozenset({p})] for p in players[:-1]] + [index[game.grand_coalition]]
  ones = np.ones(k)
  for _ in range(max_iterations):
    b = a[:, basis]
    weights = np.linalg.solve(b, ones)
    duals = np.linalg.solve(b.T, c[basis])
    reduced = c - duals @ a
    in_basis = set(basis)
    entering = next((j for j in range(m) if j not in in_basis and reduced[j] > tolerance), None)
    if entering is None:
      break
    direction = np.linalg.solve(b, a[:, entering])
    rows = [r for r in range(k) if direction[r] > tolerance]
    # The feasible set is bounded (0 <= w_S <= 1), so some row always limits the step.
    ratios = {r: max(weights[r], 0.0) / direction[r] for r in rows}
    best = min(ratios.values())
    leaving = min((r for r in rows if ratios[r] <= best + 1e-12), key=lambda r: basis[r])
    basis[leaving] = entering
  else:
    raise RuntimeError(f"core LP did not converge in {max_iterations} pivots")
  positive = {coalitions[j]: float(w) for j, w in zip(basis, weights) if w > tolerance}
  return CoreLP(float(c[basis] @ weights), game(game.grand_coalition),
                {p: float(x) for p, x in zip(players, duals)}, positive, tolerance)


def core_is_empty(game: Game, *, tolerance: float = 1e-9) -> bool:
  """Whether no allocation of ``v(N)`` gives every coalition at least its value."""
  return solve_core_lp(game, tolerance=tolerance).core_is_empty
