"""Every number of a sweep's tables with its paired-bootstrap interval.

:func:`analyse` pairs the runs of each setting on their test example ids
(:mod:`cdc_jax.coalitions.examples`), bootstraps examples and seeds
(:mod:`cdc_jax.coalitions.bootstrap`) and returns, per setting, accuracies,
gains, welfares, altruistic contributions, Shapley/Banzhaf values, the
baselines (majority class, teacher, zero-shot student) and chance levels.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from cdc_jax.coalitions import bootstrap, games, incentives
from cdc_jax.coalitions.bootstrap import Interval
from cdc_jax.coalitions.examples import ExampleOutcome
from cdc_jax.coalitions.incentives import Coalition, Setting
from cdc_jax.coalitions.results import RunResult

MAJORITY, TEACHER, ZERO_SHOT = "majority class", "teacher", "zero-shot student"


@dataclasses.dataclass(frozen=True)
class SettingAnalysis:
  """One setting's numbers with intervals (natural-mixture runs).

  ``ir`` per coalition: 'yes'/'no' (the point estimate's verdict) with '~'
  appended when a member's gain interval contains 0 (noise can flip it), '-'
  without standalone runs. ``core`` is a sentence (None without all
  coalitions). ``chance`` is max(uniform guess, majority-class accuracy).
  """
  setting: Setting
  communities: tuple[str, ...]
  seeds: tuple[int, ...]
  num_examples: Mapping[str, int]
  resamples: int
  accuracy: Mapping[Coalition, Mapping[str, Interval]]
  gain: Mapping[Coalition, Mapping[str, Interval | None]]
  macro_welfare: Mapping[Coalition, Interval]
  weighted_welfare: Mapping[Coalition, Interval]
  worst_off: Mapping[Coalition, Interval]
  altruistic: Mapping[Coalition, Mapping[str, Interval | None]]
  ir: Mapping[Coalition, str]
  shapley: Mapping[str, Interval] | None
  banzhaf: Mapping[str, Interval] | None
  core: str | None
  baselines: Mapping[str, Mapping[str, Interval]]
  chance: Mapping[str, float]
  coalition_seeds: Mapping[Coalition, int] = dataclasses.field(default_factory=dict)
  # acc_i(C) - acc_i(zero-shot student), paired on i's examples (where a zero-shot run exists).
  over_zero_shot: Mapping[Coalition, Mapping[str, Interval]] = dataclasses.field(
      default_factory=dict)

  @property
  def method(self) -> str:
    return bootstrap.describe(sorted(self.num_examples.items()), self.resamples, self.seeds)

  def significant_effects(self) -> list[tuple[str, Interval]]:
    """Gains and altruistic contributions whose interval excludes 0, as (label, interval)."""
    out = []
    for coalition in sorted(self.gain, key=lambda c: (len(c), sorted(c))):
      if len(coalition) == 1:
        continue
      name = incentives.coalition_name(coalition)
      for i, g in self.gain[coalition].items():
        if g is not None and g.excludes_zero:
          out.append((f"gain of {i} in {name}", g))
      for i, a in self.altruistic[coalition].items():
        if a is not None and a.excludes_zero:
          out.append((f"altruistic contribution of {i} to {name}", a))
    return out


def _stack(outcomes: Mapping[int, Mapping[str, bool]], ids: Sequence[str], *,
           what: str) -> np.ndarray:
  return np.stack([bootstrap.align(outcomes[s], ids, what=f"{what} seed {s}")
                   for s in sorted(outcomes)])


def build_outcomes(rows: Sequence[RunResult],
                   examples: Mapping[str, Sequence[ExampleOutcome]]) -> bootstrap.Outcomes:
  """Aligns one setting's runs (natural mixtures and zero-shot) on their example ids.

  Every run must have outcomes; runs evaluated on a community must share its
  ids (order does not matter); a missing or extra id is an error naming the run.
  """
  missing = [r.run for r in rows if r.run not in examples]
  if missing:
    raise ValueError(f"runs without per-example outcomes: {', '.join(missing)}")
  per_run = {r.run: collections.defaultdict(dict) for r in rows}
  for r in rows:
    for o in examples[r.run]:
      per_run[r.run][o.community][o.id] = o
  ids: dict[str, tuple[str, ...]] = {}
  for r in rows:  # The first run evaluated on a community fixes its ids.
    for c, outcomes in sorted(per_run[r.run].items()):
      ids.setdefault(c, tuple(sorted(outcomes)))
  grouped: dict[Coalition | str, dict[str, dict[int, dict[str, bool]]]] = collections.defaultdict(
      lambda: collections.defaultdict(dict))
  baseline_runs = {}
  for r in rows:
    key: Coalition | str = ZERO_SHOT if r.baseline == "zero_shot" else r.coalition
    for c in r.accuracy:
      outcomes = per_run[r.run].get(c)
      if outcomes is None:
        raise ValueError(f"run {r.run!r}: no per-example outcomes for {c!r}")
      if key == ZERO_SHOT and r.seed in grouped[key][c]:
        continue  # A setting's own zero-shot run comes before one shared from another level.
      grouped[key][c][r.seed] = {i: o.correct for i, o in outcomes.items()}
      for name, field in ((MAJORITY, "majority_correct"), (TEACHER, "teacher_correct")):
        values = {i: getattr(o, field) for i, o in outcomes.items()}
        if None not in values.values():
          baseline_runs.setdefault((name, c), (r.run, values))
  correct: dict[Coalition | str, dict[str, np.ndarray]] = {}
  for key, by_community in grouped.items():
    correct[key] = {c: _stack(seeds, ids[c], what=f"coalition {key}" if isinstance(key, str)
                              else f"coalition {incentives.coalition_name(key)} on {c}")
                    for c, seeds in by_community.items()}
  for (name, c), (run, values) in baseline_runs.items():
    correct.setdefault(name, {})[c] = bootstrap.align(values, ids[c], what=f"run {run!r}")[None]
  return bootstrap.Outcomes(ids=ids, correct=correct)


def _chance(rows: Sequence[RunResult], examples: Mapping[str, Sequence[ExampleOutcome]],
            boot: bootstrap.Bootstrap) -> dict[str, float]:
  chance = {}
  for r in rows:
    for o in examples.get(r.run, ()):
      chance.setdefault(o.community, []).append(o.chance or 0.0)
  out = {}
  for c, values in chance.items():
    uniform = float(np.mean(values[:boot.num_examples(c)]))
    majority = boot.accuracy(MAJORITY, c)[0] if boot.has(MAJORITY, c) else 0.0
    out[c] = max(uniform, float(majority))
  return out


def analyse_setting(rows: Sequence[RunResult], examples: Mapping[str, Sequence[ExampleOutcome]],
                    *, resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = 0,
                    tolerance: float = 0.0) -> SettingAnalysis:
  """The intervals of one setting's natural-mixture (and zero-shot) runs."""
  rows = [r for r in rows if r.baseline is not None or incentives.mixture_of(r) is None]
  setting = incentives.setting_of(rows[0])
  boot = bootstrap.Bootstrap(build_outcomes(rows, examples), resamples=resamples, seed=seed)
  coalitions = sorted({r.coalition for r in rows if r.baseline is None},
                      key=lambda c: (len(c), sorted(c)))
  communities = tuple(sorted({i for c in coalitions for i in c}))
  iv = boot.interval
  accuracy = {c: {i: iv(boot.accuracy(c, i)) for i in sorted(c)} for c in coalitions}
  gain, altruistic, ir = {}, {}, {}
  for c in coalitions:
    raw = {i: bootstrap.gain(boot, c, i) for i in sorted(c)}
    gain[c] = {i: None if g is None else iv(g) for i, g in raw.items()}
    altruistic[c] = {i: None if a is None else iv(a) for i, a in
                     ((i, bootstrap.altruistic(boot, c, i)) for i in sorted(c))}
    if any(g is None for g in gain[c].values()):
      ir[c] = "-"
    else:
      verdict = all(g.value >= -tolerance for g in gain[c].values())
      noisy = any(not g.excludes_zero for g in gain[c].values()) and len(c) > 1
      ir[c] = ("yes" if verdict else "no") + ("~" if noisy else "")
  shapley = banzhaf = core = None
  if not games.missing_coalitions(communities, coalitions):
    values = bootstrap.game_values(boot, communities)
    phi = bootstrap.shapley(values, communities)
    shapley = {i: iv(v) for i, v in phi.items()}
    banzhaf = {i: iv(v) for i, v in bootstrap.banzhaf(values, communities).items()}
    core = _core_sentence(values, phi, communities, boot) + "; " + _core_emptiness(
        values, communities)
  baselines = {name: {c: iv(boot.accuracy(name, c)) for c in communities if boot.has(name, c)}
               for name in (MAJORITY, TEACHER, ZERO_SHOT)}
  over_zero_shot = {c: {i: iv(boot.accuracy(c, i) - boot.accuracy(ZERO_SHOT, i))
                        for i in sorted(c) if boot.has(ZERO_SHOT, i)} for c in coalitions}
  seeds = tuple(sorted({r.seed for r in rows if r.baseline is None}))
  return SettingAnalysis(
      setting=setting, communities=communities, seeds=seeds,
      num_examples={c: boot.num_examples(c) for c in communities},
      resamples=resamples, accuracy=accuracy, gain=gain,
      macro_welfare={c: iv(bootstrap.macro_welfare(boot, c)) for c in coalitions},
      weighted_welfare={c: iv(bootstrap.weighted_welfare(boot, c)) for c in coalitions},
      worst_off={c: iv(bootstrap.worst_off(boot, c)) for c in coalitions},
      altruistic=altruistic, ir=ir, shapley=shapley, banzhaf=banzhaf, core=core,
      baselines={k: v for k, v in baselines.items() if v}, chance=_chance(rows, examples, boot),
      coalition_seeds={c: len({r.seed for r in rows if r.baseline is None and r.coalition == c})
                       for c in coalitions},
      over_zero_shot={c: v for c, v in over_zero_shot.items() if v})


def _core_sentence(values: Mapping[Coalition, np.ndarray], phi: Mapping[str, np.ndarray],
                   players: Sequence[str], boot: bootstrap.Bootstrap) -> str:
  """Whether the Shapley allocation is in the core, and whether noise decides it."""
  deficits = bootstrap.core_deficits(values, phi)
  violated = {s: boot.interval(d) for s, d in deficits.items() if d[0] > 1e-9}
  if not violated:
    near = [s for s, d in deficits.items() if boot.interval(d).high > 0]
    text = "the Shapley allocation is in the core"
    if near:
      text += (" but noise decides it: a resample puts it outside for "
               + ", ".join(incentives.coalition_name(s) for s in near))
    return text
  parts = [f"{incentives.coalition_name(s)} short by {d.value:.3f} [{d.low:.3f}, {d.high:.3f}]"
           + ("" if d.low > 0 else " (noise: the interval reaches 0)") for s, d in violated.items()]
  noisy = all(d.low <= 0 for d in violated.values())
  return ("the Shapley allocation is not in the core (" + "; ".join(parts) + ")"
          + (": decided by noise" if noisy else ""))


_CORE_RESAMPLES = 200  # One small LP each: a subsample of the replicates is enough for a share.


def _core_emptiness(values: Mapping[Coalition, np.ndarray], players: Sequence[str]) -> str:
  """Whether the core is empty on the data, and in what share of resamples."""
  def empty(b: int) -> bool:
    game = games.Game(tuple(players), {c: float(v[b]) for c, v in values.items()})
    return games.solve_core_lp(game).core_is_empty
  observed = empty(0)
  count = min(_CORE_RESAMPLES, len(next(iter(values.values()))) - 1)
  share = float(np.mean([empty(b) for b in range(1, count + 1)]))
  verdict = "empty" if observed else "not empty"
  noisy = (share < 0.95) if observed else (share > 0.05)
  return (f"the core is {verdict} on the data and empty in {100 * share:.0f}% of {count} "
          f"resamples" + (": decided by noise" if noisy else ""))


def _shared_zero_shot(rows: Sequence[RunResult], setting: Setting) -> list[RunResult]:
  """Zero-shot runs of ``setting``'s format at other levels (nearest level first).

  The untrained student sees the question alone (``formats.render_inputs``
  takes no level) and is scored on the gold answer, so its outcomes do not
  depend on the level: a sweep runs it once per format (``SweepSpec``) and
  every level's setting uses it for the communities it has no own run for.
  """
  others = [r for r in rows if r.baseline == "zero_shot" and r.level != setting.level
            and dataclasses.replace(incentives.setting_of(r), level=setting.level) == setting]
  return sorted(others, key=lambda r: (abs(r.level - setting.level), r.level, r.run))


def analyse(rows: Sequence[RunResult], examples: Mapping[str, Sequence[ExampleOutcome]], *,
            resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = 0,
            tolerance: float = 0.0) -> dict[Setting, SettingAnalysis]:
  """Per setting (with every run's outcomes available), the intervals of its tables."""
  by_setting: dict[Setting, list[RunResult]] = collections.defaultdict(list)
  for r in rows:
    by_setting[incentives.setting_of(r)].append(r)
  out = {}
  for setting in sorted(by_setting, key=incentives.setting_sort_key):
    group = [r for r in by_setting[setting]
             if r.baseline is not None or incentives.mixture_of(r) is None]
    group += [r for r in _shared_zero_shot(rows, setting) if r.run in examples]
    if any(r.baseline is None for r in group) and all(r.run in examples for r in group):
      out[setting] = analyse_setting(group, examples, resamples=resamples, seed=seed,
                                     tolerance=tolerance)
  return out


def accuracy_interval(analyses: Mapping[Setting, SettingAnalysis] | None, setting: Setting,
                      members: Sequence[str], member: str) -> Interval | None:
  """The 95% interval of ``member``'s accuracy in ``members``' run of ``setting``, or None."""
  a = (analyses or {}).get(setting)
  return a.accuracy.get(frozenset(members), {}).get(member) if a else None
