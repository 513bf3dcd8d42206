"""Incentives of communities to join a coalition, computed from sweep results.

Runs are compared within a :class:`Setting` (level, format, eps, selection):
for a coalition ``C`` and member ``i``, ``acc_i(C)`` is ``i``'s test accuracy
of the student trained on ``C``'s data, averaged over seeds. The formulas are
in docs/incentives.md. Coalition analyses use natural-mixture runs
(``proportions`` None); proportion sweeps are analysed by
:func:`proportion_points`.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import statistics
from typing import Iterable, Mapping, Sequence

from cdc_jax.coalitions.results import RunResult

Coalition = frozenset[str]
# Seed-averaged accuracy: coalition -> community -> accuracy on its test split.
Accuracies = Mapping[Coalition, Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class Setting:
  """What runs share to be comparable: everything but the coalition and seed."""
  level: int
  format: str
  eps: float | None = None
  selection: str | None = None

  def __str__(self) -> str:
    extra = "".join(f" {k}={v}" for k, v in (("eps", self.eps), ("selection", self.selection))
                    if v is not None)
    return f"L{self.level} {self.format}{extra}"


def setting_of(row: RunResult) -> Setting:
  """The setting a run belongs to."""
  return Setting(row.level, row.format, row.eps, row.selection)


def setting_sort_key(setting: Setting) -> tuple:
  """Orders settings by level, format, then non-private before private, then selection (its
  numbers by value: key_tokens:k=4 before k=16)."""
  selection = tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                    for part in re.split(r"(\d+)", setting.selection or "") if part)
  return (setting.level, setting.format, setting.eps is not None, setting.eps or 0.0,
          setting.selection is not None, selection)


def mixture_of(row: RunResult) -> tuple[tuple[str, float], ...] | None:
  """The run's mixture: None for the natural one, else sorted (member, proportion).

  A singleton has one possible mixture, so ``{i: 1.0}`` counts as natural.
  """
  if row.proportions is None or len(row.members) == 1:
    return None
  return tuple(sorted(row.proportions.items()))


def coalition_name(members: Iterable[str]) -> str:
  """``{a,b}``-style name of a coalition (sorted)."""
  return "{" + ",".join(sorted(members)) + "}"


@dataclasses.dataclass(frozen=True)
class SeedAverage:
  """The runs of one coalition, setting and mixture, averaged over seeds.

  ``accuracy`` and ``num_examples`` average each community over the seeds
  that evaluated it; ``accuracy_std`` is the sample std (0 with one seed).
  """
  setting: Setting
  members: tuple[str, ...]
  mixture: tuple[tuple[str, float], ...] | None
  seeds: tuple[int, ...]
  runs: tuple[str, ...]
  accuracy: Mapping[str, float]
  accuracy_std: Mapping[str, float]
  num_examples: Mapping[str, float]


def average_over_seeds(rows: Iterable[RunResult]) -> list[SeedAverage]:
  """Groups runs by (setting, members, mixture) and averages over seeds.

  Raises ValueError naming both runs when two share a group and a seed.
  """
  groups: dict[tuple, list[RunResult]] = collections.defaultdict(list)
  for row in rows:
    if row.baseline is not None:  # Zero-shot runs are baselines, not coalitions.
      continue
    groups[(setting_of(row), row.members, mixture_of(row))].append(row)
  out = []
  for (setting, members, mixture), runs in groups.items():
    by_seed: dict[int, RunResult] = {}
    for run in runs:
      if run.seed in by_seed:
        raise ValueError(f"runs {by_seed[run.seed].run!r} and {run.run!r} repeat coalition "
                         f"{coalition_name(members)} ({setting}) with the same seed {run.seed}")
      by_seed[run.seed] = run
    accuracy, std, examples = {}, {}, {}
    for community in sorted({c for r in runs for c in r.accuracy}):
      values = [r.accuracy[community] for r in runs if community in r.accuracy]
      accuracy[community] = statistics.fmean(values)
      std[community] = statistics.stdev(values) if len(values) > 1 else 0.0
      examples[community] = statistics.fmean(
          r.num_examples[community] for r in runs if community in r.num_examples)
    out.append(SeedAverage(setting, members, mixture, tuple(sorted(by_seed)),
                           tuple(r.run for r in sorted(runs, key=lambda r: r.seed)),
                           accuracy, std, examples))
  out.sort(key=lambda a: (setting_sort_key(a.setting), len(a.members), a.members,
                          a.mixture or ()))
  return out


def natural_by_setting(rows: Iterable[RunResult]) -> dict[Setting, dict[Coalition, SeedAverage]]:
  """Natural-mixture runs averaged over seeds, as setting -> coalition -> average."""
  out: dict[Setting, dict[Coalition, SeedAverage]] = {}
  for average in average_over_seeds(rows):
    if average.mixture is None:
      out.setdefault(average.setting, {})[frozenset(average.members)] = average
  return out


def accuracies(averages: Mapping[Coalition, SeedAverage]) -> dict[Coalition, Mapping[str, float]]:
  """The :data:`Accuracies` view of one setting's averages."""
  return {coalition: a.accuracy for coalition, a in averages.items()}


# ---------------------------------------------------------------------------
# The incentives: pure functions of seed-averaged accuracies.


def _members_accuracy(acc: Accuracies, coalition: Coalition) -> dict[str, float]:
  if coalition not in acc:
    raise KeyError(f"no run of coalition {coalition_name(coalition)}")
  return {i: acc[coalition][i] for i in sorted(coalition)}


def standalone(acc: Accuracies, member: str) -> float | None:
  """``acc_i({i})``: the member's accuracy training alone (None without that run)."""
  alone = acc.get(frozenset({member}))
  return None if alone is None else alone[member]


def greedy_gain(acc: Accuracies, coalition: Coalition, member: str) -> float | None:
  """``acc_i(C) - acc_i({i})``: what joining ``C`` gains ``i`` (None without ``{i}``)."""
  own = standalone(acc, member)
  return None if own is None else _members_accuracy(acc, coalition)[member] - own


def individually_rational(acc: Accuracies, coalition: Coalition, *,
                          tolerance: float = 0.0) -> bool | None:
  """Whether every member gains at least ``-tolerance`` (None if a standalone is missing)."""
  gains = [greedy_gain(acc, coalition, i) for i in sorted(coalition)]
  if any(g is None for g in gains):
    return None
  return all(g >= -tolerance for g in gains)


def macro_welfare(acc: Accuracies, coalition: Coalition) -> float:
  """Mean of the members' accuracies on ``C``: every community counts the same."""
  return statistics.fmean(_members_accuracy(acc, coalition).values())


def weighted_welfare(acc: Accuracies, coalition: Coalition,
                     num_examples: Mapping[str, float]) -> float:
  """Members' accuracies weighted by test examples: accuracy on the pooled test sets."""
  members = _members_accuracy(acc, coalition)
  total = sum(num_examples[i] for i in members)
  return sum(num_examples[i] * a for i, a in members.items()) / total


def worst_off(acc: Accuracies, coalition: Coalition) -> float:
  """The lowest member accuracy on ``C`` (the Rawlsian view)."""
  return min(_members_accuracy(acc, coalition).values())


def altruistic_contribution(acc: Accuracies, coalition: Coalition, member: str) -> float | None:
  """Mean over ``j in C \\ {i}`` of ``acc_j(C) - acc_j(C \\ {i})``.

  What ``i``'s data does for the others. None when ``C = {i}`` or the run of
  ``C \\ {i}`` is missing.
  """
  rest = coalition - {member}
  if not rest or rest not in acc:
    return None
  with_i = _members_accuracy(acc, coalition)
  without_i = _members_accuracy(acc, rest)
  return statistics.fmean(with_i[j] - without_i[j] for j in sorted(rest))


# ---------------------------------------------------------------------------
# Tables.


@dataclasses.dataclass(frozen=True)
class CoalitionRow:
  """The incentives of one coalition in one setting (seed-averaged)."""
  setting: Setting
  members: tuple[str, ...]
  seeds: int
  accuracy: Mapping[str, float]
  accuracy_std: Mapping[str, float]
  standalone: Mapping[str, float | None]
  gain: Mapping[str, float | None]
  individually_rational: bool | None
  macro_welfare: float
  weighted_welfare: float
  worst_off: float
  altruistic: Mapping[str, float | None]


def coalition_rows(averages: Mapping[Coalition, SeedAverage], *,
                   tolerance: float = 0.0) -> list[CoalitionRow]:
  """The incentives of every coalition of one setting, smallest coalitions first."""
  acc = accuracies(averages)
  out = []
  for coalition, average in sorted(averages.items(), key=lambda kv: (len(kv[0]), sorted(kv[0]))):
    members = tuple(sorted(coalition))
    out.append(CoalitionRow(
        setting=average.setting, members=members, seeds=len(average.seeds),
        accuracy={i: average.accuracy[i] for i in members},
        accuracy_std={i: average.accuracy_std[i] for i in members},
        standalone={i: standalone(acc, i) for i in members},
        gain={i: greedy_gain(acc, coalition, i) for i in members},
        individually_rational=individually_rational(acc, coalition, tolerance=tolerance),
        macro_welfare=macro_welfare(acc, coalition),
        weighted_welfare=weighted_welfare(acc, coalition, average.num_examples),
        worst_off=worst_off(acc, coalition),
        altruistic={i: altruistic_contribution(acc, coalition, i) for i in members}))
  return out


def coalition_table(rows: Iterable[RunResult], *, tolerance: float = 0.0) -> list[CoalitionRow]:
  """Per-coalition incentives of every setting from natural-mixture runs.

  Runs of several seeds are averaged first; incentives are then computed from
  the averaged accuracies (so ``worst_off`` is the min of means).
  """
  by_setting = natural_by_setting(rows)
  out = []
  for setting in sorted(by_setting, key=setting_sort_key):
    out.extend(coalition_rows(by_setting[setting], tolerance=tolerance))
  return out


@dataclasses.dataclass(frozen=True)
class ProportionPoint:
  """One mixture of a two-community proportion sweep (seed-averaged).

  ``gain[i]`` is ``acc_i(C at this mixture) - acc_i({i})``; for two members it
  is also the other member's altruistic contribution at this mixture.
  """
  setting: Setting
  members: tuple[str, str]
  proportions: Mapping[str, float]
  seeds: int
  accuracy: Mapping[str, float]
  macro_welfare: float
  weighted_welfare: float
  gain: Mapping[str, float | None]


def proportion_points(rows: Sequence[RunResult]) -> list[ProportionPoint]:
  """Points of every two-community proportion sweep, sorted by the first member's share.

  A natural-mixture run of the pair is not a point (its proportions are not
  known); larger coalitions with proportions are not included.
  """
  averages = average_over_seeds(rows)
  natural: dict[Setting, dict[Coalition, Mapping[str, float]]] = {}
  for a in averages:
    if a.mixture is None:
      natural.setdefault(a.setting, {})[frozenset(a.members)] = a.accuracy
  out = []
  for a in averages:
    if a.mixture is None or len(a.members) != 2:
      continue
    coalition = frozenset(a.members)
    acc = {**natural.get(a.setting, {}), coalition: a.accuracy}
    out.append(ProportionPoint(
        setting=a.setting, members=a.members, proportions=dict(a.mixture), seeds=len(a.seeds),
        accuracy={i: a.accuracy[i] for i in a.members},
        macro_welfare=macro_welfare(acc, coalition),
        weighted_welfare=weighted_welfare(acc, coalition, a.num_examples),
        gain={i: greedy_gain(acc, coalition, i) for i in a.members}))
  out.sort(key=lambda p: (setting_sort_key(p.setting), p.members, p.proportions[p.members[0]]))
  return out
