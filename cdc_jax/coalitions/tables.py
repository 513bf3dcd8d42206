"""Plain-text tables of a coalition sweep: accuracies, gains, intervals and verdicts.

What ``make demo`` prints and the report's Markdown sections are built from:
:func:`summary_table` (community x coalition accuracy, gains, Shapley per
setting), :func:`interval_table` (the same with 95% intervals, baselines and
chance levels) and :func:`verdicts` (which standalone students beat chance,
which coalition effects are significant). Formulas: docs/incentives.md.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

from cdc_jax.coalitions import analysis as analysis_lib
from cdc_jax.coalitions import bootstrap, games, incentives
from cdc_jax.coalitions.incentives import Coalition, SeedAverage, Setting
from cdc_jax.coalitions.results import RunResult


def fmt(value: float | None, *, signed: bool = False) -> str:
  """``0.617`` (``+0.067`` when ``signed``); ``-`` for a missing value."""
  if value is None:
    return "-"
  return f"{value:+.3f}" if signed else f"{value:.3f}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """Aligned plain-text columns: the first left-aligned, the others right-aligned."""
  widths = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header))]
  lines = [" ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                    for j, (c, w) in enumerate(zip(r, widths))).rstrip()
           for r in [header, *rows]]
  return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown (GitHub) table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def coalition_sort_key(coalition: Iterable[str]) -> tuple:
  """Smaller coalitions first, then alphabetically."""
  return (len(frozenset(coalition)), sorted(coalition))


@dataclasses.dataclass(frozen=True)
class GameSummary:
  """Shapley and core analysis of one setting with all coalitions."""
  game: games.Game
  shapley: Mapping[str, float]
  banzhaf: Mapping[str, float]
  shapley_macro: Mapping[str, float]
  core_check: games.CoreCheck
  core_lp: games.CoreLP


def game_summary(runs: Mapping[Coalition, SeedAverage]) -> GameSummary | list[Coalition]:
  """The setting's game analysis, or the coalitions it lacks."""
  acc = incentives.accuracies(runs)
  players = sorted({i for c in runs for i in c})
  missing = games.missing_coalitions(players, runs)
  if missing:
    return missing
  game = games.game_from_accuracies(acc, players=players)
  shapley = games.shapley_values(game)
  return GameSummary(
      game, shapley, games.banzhaf_values(game),
      games.shapley_values(games.game_from_accuracies(acc, players=players, welfare="macro")),
      games.check_core(game, shapley), games.solve_core_lp(game))


def summary_table(rows: Sequence[RunResult],
                  analyses: Mapping[Setting, analysis_lib.SettingAnalysis] | None = None) -> str:
  """Plain-text tables per setting: community x coalition accuracy, gains, Shapley.

  Natural-mixture runs only, averaged over seeds; '-' where a community is not
  a member or a run is missing. With ``analyses`` (from per-example outcomes)
  each setting also gets its table with 95% intervals, baselines, chance
  levels and its significant coalition effects (:func:`interval_table`).
  """
  blocks = []
  by_setting = incentives.natural_by_setting(rows)
  for setting in sorted(by_setting, key=incentives.setting_sort_key):
    runs = by_setting[setting]
    acc = incentives.accuracies(runs)
    coalitions = sorted(runs, key=coalition_sort_key)
    communities = sorted({i for c in coalitions for i in c})
    summary = game_summary(runs)
    shapley = summary.shapley if isinstance(summary, GameSummary) else {}
    seeds = sorted({len(a.seeds) for a in runs.values()})
    header = ["community", *map(incentives.coalition_name, coalitions), "shapley"]
    accuracy_rows = [[i, *(fmt(acc[c][i]) if i in c else "-" for c in coalitions),
                      fmt(shapley.get(i))] for i in communities]
    gain_rows = [[i, *(fmt(incentives.greedy_gain(acc, c, i), signed=True) if i in c else "-"
                       for c in coalitions)] for i in communities]
    seed_text = "-".join(map(str, sorted({seeds[0], seeds[-1]})))
    blocks.append(f"== {setting}: {len(coalitions)} coalitions, {seed_text} seed(s) each ==\n"
                  f"accuracy (test split of each community):\n"
                  f"{text_table(header, accuracy_rows)}\n"
                  f"gain over training alone:\n{text_table(header[:-1], gain_rows)}")
    if not shapley:
      blocks[-1] += (f"\nshapley: needs {len(summary)} more coalition(s): "
                     f"{', '.join(map(incentives.coalition_name, summary))}")
    if analyses is not None and setting in analyses:
      blocks[-1] += "\n" + interval_table(analyses[setting])
    elif analyses is not None:
      blocks[-1] += "\n(no intervals: some runs of this setting lack per-example outcomes)"
  return "\n\n".join(blocks) if blocks else "no natural-mixture runs"


SIGNIFICANCE_NOTE = ("~ marks a difference whose 95% interval contains 0 (not significant); "
                     "IR 'yes~'/'no~': individual rationality decided by noise (a member's gain "
                     "interval contains 0)")


def coalitions_of(a: analysis_lib.SettingAnalysis) -> list[Coalition]:
  """The analysed coalitions of a setting, in table order."""
  return sorted(a.accuracy, key=coalition_sort_key)


def interval_table(a: analysis_lib.SettingAnalysis) -> str:
  """Plain text: coalitions x communities with 95% intervals, baselines and verdicts."""
  iv = bootstrap.format_interval
  communities = list(a.communities)
  rows = [["chance level", *(fmt(a.chance.get(c)) for c in communities)]]
  for name, values in a.baselines.items():
    rows.append([name, *(iv(values.get(c)) for c in communities)])
  for c in coalitions_of(a):
    rows.append([incentives.coalition_name(c), *(iv(a.accuracy[c].get(i)) for i in communities)])
  gains = [[incentives.coalition_name(c),
            *(iv(a.gain[c].get(i), signed=True, mark=True) if i in c else "-"
              for i in communities), a.ir[c]]
           for c in coalitions_of(a) if len(c) > 1]
  welfare = [[incentives.coalition_name(c), iv(a.macro_welfare[c]), iv(a.weighted_welfare[c]),
              iv(a.worst_off[c])] for c in coalitions_of(a) if len(c) > 1]
  lines = [f"accuracy with 95% intervals:\n{text_table(['coalition', *communities], rows)}",
           f"gain over training alone ({SIGNIFICANCE_NOTE}):\n"
           f"{text_table(['coalition', *communities, 'IR'], gains)}",
           f"welfare:\n{text_table(['coalition', 'macro', 'weighted', 'worst-off'], welfare)}"]
  if a.shapley is not None:
    lines.append("Shapley / Banzhaf (total welfare):\n" + text_table(
        ["community", "Shapley", "Banzhaf"],
        [[i, iv(a.shapley[i], signed=True), iv(a.banzhaf[i], signed=True)]
         for i in communities]) + f"\ncore: {a.core}")
  lines.append(verdicts(a))
  lines.append(a.method)
  return "\n".join(lines)


def verdicts(a: analysis_lib.SettingAnalysis) -> str:
  """Which standalone students beat chance, and which coalition effects are significant."""
  out = []
  for c in a.communities:
    alone = a.accuracy.get(frozenset({c}), {}).get(c)
    if alone is None:
      continue
    verdict = "above" if alone.above(a.chance[c]) else "NOT above"
    line = (f"standalone {c}: {bootstrap.format_interval(alone)} is {verdict} its chance "
            f"level {a.chance[c]:.3f}")
    over = a.over_zero_shot.get(frozenset({c}), {}).get(c)
    if over is not None:
      line += (f"; fine-tuned - zero-shot {bootstrap.format_interval(over, signed=True)} "
               + ("(above the zero-shot student)" if over.low > 0 else
                  "(below the zero-shot student)" if over.high < 0 else "(not significant)"))
    out.append(line)
  effects = a.significant_effects()
  if effects:
    out.append("coalition effects whose 95% interval excludes 0: " + "; ".join(
        f"{label} {bootstrap.format_interval(v, signed=True)}" for label, v in effects))
  else:
    out.append("no coalition effect (gain or altruistic contribution) has a 95% interval that "
               "excludes 0: at these sizes every coalition effect is within noise")
  return "\n".join(out)
