"""Paired bootstrap intervals over test examples and seeds.

Every accuracy of a sweep is a mean of 0/1 outcomes over a community's test
examples and the run's seeds. One bootstrap replicate draws, per community,
the test examples with replacement (the *same* draw for every coalition and
baseline evaluated on that community, so differences are paired) and, per
number of seeds, the seed indices with replacement (the same draw for every
coalition with that many seeds). Any statistic that is a function of the
accuracies (gains, welfares, altruistic contributions, Shapley and Banzhaf
values) is computed on every replicate; its 95% interval is the 2.5 and 97.5
percentiles. Formulas: docs/incentives.md.

The draws are multinomial counts, so one replicate of a coalition is a
weighted mean: ``acc_b = sum_s V[b,s]/S * sum_e W[b,e]/n * correct[s,e]``,
one matrix product per (coalition, community) for all replicates at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

Coalition = frozenset[str]
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its bootstrap percentile interval."""
  value: float
  low: float
  high: float

  @property
  def excludes_zero(self) -> bool:
    """Whether the interval lies strictly on one side of 0 (a significant difference)."""
    return self.low > 0 or self.high < 0

  def above(self, level: float) -> bool:
    """Whether the whole interval lies above ``level`` (e.g. a chance level)."""
    return self.low > level


def interval(point: float, replicates: np.ndarray, *,
             confidence: float = DEFAULT_CONFIDENCE) -> Interval:
  """The percentile interval of ``replicates`` around the estimate ``point``."""
  replicates = np.asarray(replicates, dtype=float)
  if replicates.ndim != 1 or replicates.size < 2:
    raise ValueError(f"expected a 1-D array of at least 2 replicates, got shape {replicates.shape}")
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(replicates, [tail, 100 - tail])
  return Interval(float(point), float(low), float(high))


@dataclasses.dataclass(frozen=True)
class Outcomes:
  """0/1 outcomes of one setting, aligned by example id.

  ``ids[c]`` are community ``c``'s test example ids (sorted); ``correct[C][c]``
  is a (seeds, examples) array of coalition (or baseline) ``C`` on ``c``'s
  examples, columns in ``ids[c]`` order.
  """
  ids: Mapping[str, tuple[str, ...]]
  correct: Mapping[Coalition | str, Mapping[str, np.ndarray]]


def align(outcomes: Mapping[str, Mapping[str, bool]], ids: Sequence[str], *,
          what: str) -> np.ndarray:
  """Outcomes of one run (id -> correct) as a 0/1 vector in ``ids`` order.

  Raises ValueError naming ``what`` and the ids that are missing or extra.
  """
  missing = sorted(set(ids) - set(outcomes))
  extra = sorted(set(outcomes) - set(ids))
  if missing or extra:
    def show(xs: list[str]) -> str:
      return ", ".join(xs[:5]) + (f" (and {len(xs) - 5} more)" if len(xs) > 5 else "")
    parts = ([f"lacks example ids {show(missing)}"] if missing else []) + (
        [f"has unexpected example ids {show(extra)}"] if extra else [])
    raise ValueError(f"{what}: {'; '.join(parts)}; runs must be evaluated on the same test "
                     "examples to be paired")
  return np.fromiter((bool(outcomes[i]) for i in ids), dtype=np.float64, count=len(ids))


class Bootstrap:
  """Replicated accuracies of one setting: ``accuracy(C, c)`` -> (1 + B,) array.

  Index 0 is the estimate on the data as observed (mean over seeds and
  examples); indices 1..B are the replicates.
  """

  def __init__(self, outcomes: Outcomes, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
               confidence: float = DEFAULT_CONFIDENCE):
    if resamples < 2:
      raise ValueError(f"resamples must be at least 2, got {resamples}")
    self.outcomes, self.resamples, self.confidence = outcomes, resamples, confidence
    rng = np.random.default_rng(seed)
    # Per community, multinomial counts of each example (row 0: every example once).
    self._example_weights = {}
    for community in sorted(outcomes.ids):
      n = len(outcomes.ids[community])
      if n == 0:
        raise ValueError(f"community {community!r} has no test examples")
      draws = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
      self._example_weights[community] = np.vstack([np.ones((1, n)), draws]) / n
    self._rng = rng
    self._seed_weights: dict[int, np.ndarray] = {}
    self._cache: dict[tuple, np.ndarray] = {}

  def _seeds(self, count: int) -> np.ndarray:
    if count not in self._seed_weights:
      draws = self._rng.multinomial(count, np.full(count, 1.0 / count), size=self.resamples)
      self._seed_weights[count] = np.vstack([np.ones((1, count)), draws]) / count
    return self._seed_weights[count]

  def num_examples(self, community: str) -> int:
    return len(self.outcomes.ids[community])

  def has(self, key: Coalition | str, community: str) -> bool:
    return community in self.outcomes.correct.get(key, {})

  def accuracy(self, key: Coalition | str, community: str) -> np.ndarray:
    """``(1 + B,)`` accuracies of coalition/baseline ``key`` on ``community``."""
    if (key, community) not in self._cache:
      correct = self.outcomes.correct[key][community]  # (seeds, examples)
      per_seed = self._example_weights[community] @ correct.T  # (1 + B, seeds)
      weights = self._seeds(correct.shape[0])
      self._cache[(key, community)] = np.einsum("bs,bs->b", per_seed, weights)
    return self._cache[(key, community)]

  def interval(self, values: np.ndarray) -> Interval:
    """The estimate (index 0) and percentile interval (indices 1..B) of a statistic."""
    return interval(values[0], values[1:], confidence=self.confidence)


# ---------------------------------------------------------------------------
# Statistics on replicated accuracies: each maps (1 + B,) arrays to one.


def _members(boot: Bootstrap, coalition: Coalition) -> list[np.ndarray]:
  return [boot.accuracy(coalition, i) for i in sorted(coalition)]


def gain(boot: Bootstrap, coalition: Coalition, member: str) -> np.ndarray | None:
  """``acc_i(C) - acc_i({i})``, paired on ``i``'s examples (None without ``{i}``)."""
  alone = frozenset({member})
  if not boot.has(alone, member):
    return None
  return boot.accuracy(coalition, member) - boot.accuracy(alone, member)


def macro_welfare(boot: Bootstrap, coalition: Coalition) -> np.ndarray:
  return np.mean(_members(boot, coalition), axis=0)


def weighted_welfare(boot: Bootstrap, coalition: Coalition) -> np.ndarray:
  members = sorted(coalition)
  counts = np.array([boot.num_examples(i) for i in members], dtype=float)
  return np.tensordot(counts / counts.sum(), np.array(_members(boot, coalition)), axes=1)


def worst_off(boot: Bootstrap, coalition: Coalition) -> np.ndarray:
  return np.min(_members(boot, coalition), axis=0)


def altruistic(boot: Bootstrap, coalition: Coalition, member: str) -> np.ndarray | None:
  """Mean over ``j in C \\ {i}`` of ``acc_j(C) - acc_j(C \\ {i})`` (None if not defined)."""
  rest = coalition - {member}
  if not rest or not all(boot.has(rest, j) for j in rest):
    return None
  return np.mean([boot.accuracy(coalition, j) - boot.accuracy(rest, j) for j in sorted(rest)],
                 axis=0)


def game_values(boot: Bootstrap, players: Sequence[str], *,
                welfare: str = "total") -> dict[Coalition, np.ndarray]:
  """``v(C)`` per replicate for every non-empty coalition (total or macro welfare)."""
  out = {}
  for size in range(1, len(players) + 1):
    for c in itertools.combinations(sorted(players), size):
      coalition = frozenset(c)
      values = np.array(_members(boot, coalition))
      out[coalition] = values.sum(axis=0) if welfare == "total" else values.mean(axis=0)
  return out


def _weighted_marginals(values: Mapping[Coalition, np.ndarray], players: Sequence[str],
                        weight: Callable[[int, int], float]) -> dict[str, np.ndarray]:
  """``sum_S weight(|S|, k) * (v(S + i) - v(S))`` over ``S`` without ``i``, per player ``i``.

  Shapley and Banzhaf values are both linear in ``v``, so one pass over the
  coalitions gives them for every replicate at once.
  """
  k = len(players)
  zero = np.zeros_like(next(iter(values.values())))
  out = {}
  for i in players:
    others = [p for p in players if p != i]
    total = zero.copy()
    for size in range(k):
      w = weight(size, k)
      for s in itertools.combinations(others, size):
        s = frozenset(s)
        total += w * (values[s | {i}] - (values[s] if s else zero))
    out[i] = total
  return out


def shapley(values: Mapping[Coalition, np.ndarray],
            players: Sequence[str]) -> dict[str, np.ndarray]:
  """Exact Shapley values of replicated games."""
  return _weighted_marginals(values, players, lambda size, k: (
      math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)))


def banzhaf(values: Mapping[Coalition, np.ndarray],
            players: Sequence[str]) -> dict[str, np.ndarray]:
  """Raw Banzhaf values of replicated games."""
  return _weighted_marginals(values, players, lambda size, k: 1 / 2 ** (k - 1))


def core_deficits(values: Mapping[Coalition, np.ndarray],
                  allocation: Mapping[str, np.ndarray]) -> dict[Coalition, np.ndarray]:
  """``v(S) - x(S)`` per replicate for every coalition but the grand one."""
  players = sorted(allocation)
  grand = frozenset(players)
  return {s: values[s] - sum(allocation[i] for i in s) for s in values if s and s != grand}


def significance_mark(value: Interval | None) -> str:
  """'~' when the interval contains 0 (not significant), '' otherwise."""
  return "" if value is None or value.excludes_zero else "~"


def format_interval(value: Interval | None, *, signed: bool = False, mark: bool = False) -> str:
  """``0.617 [0.550, 0.683]``; ``+0.067 [-0.020, +0.150]~`` with ``mark`` for an n.s. gain."""
  if value is None:
    return "-"
  spec = "+.3f" if signed else ".3f"
  text = f"{value.value:{spec}} [{value.low:{spec}}, {value.high:{spec}}]"
  return text + (significance_mark(value) if mark else "")


def describe(boot_sizes: Iterable[tuple[str, int]], resamples: int, seeds: Sequence[int],
             confidence: float = DEFAULT_CONFIDENCE) -> str:
  """One sentence stating the method, resamples and test-set sizes (for reports)."""
  sizes = ", ".join(f"{c}: {n}" for c, n in boot_sizes)
  return (f"{round(100 * confidence)}% intervals: paired percentile bootstrap, {resamples} "
          f"resamples of test examples (the same resample for every coalition, so differences "
          f"are paired) and of seeds ({len(seeds)} seed(s): {', '.join(map(str, seeds))}); "
          f"test examples per community: {sizes}.")
