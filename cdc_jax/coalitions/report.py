"""Report of a coalition sweep: ``report.md`` with Markdown tables and PNG figures.

:func:`report_sweep` reads ``SWEEP_DIR/results.jsonl`` if present, else every
``SWEEP_DIR/*/result.json``, adds 95% paired-bootstrap intervals where the runs
have per-example outcomes, and writes ``report.md`` and its figures
(:func:`build_report`). A figure whose runs are absent is skipped with a note
saying which runs it needs. ``python -m cdc_jax.report SWEEP_DIR`` is its
command line. Formulas: docs/incentives.md.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax import names, provenance
from cdc_jax.coalitions import analysis as analysis_lib
from cdc_jax.coalitions import bootstrap
from cdc_jax.coalitions import contrasts as contrasts_lib
from cdc_jax.coalitions import examples as examples_lib
from cdc_jax.coalitions import incentives
from cdc_jax.coalitions import results as results_lib
from cdc_jax.coalitions import tables
from cdc_jax.coalitions.incentives import Coalition, SeedAverage, Setting
from cdc_jax.coalitions.results import RunResult

REPORT_FILENAME = "report.md"


def _runs_section(rows: Sequence[RunResult]) -> str:
  counts: dict[Setting, list[RunResult]] = collections.defaultdict(list)
  for row in rows:
    counts[incentives.setting_of(row)].append(row)
  table = []
  for setting in sorted(counts, key=incentives.setting_sort_key):
    group = counts[setting]
    table.append([str(setting), len(group), len({r.members for r in group}),
                  len({r.seed for r in group}),
                  sum(incentives.mixture_of(r) is not None for r in group)])
  return tables.markdown_table(
      ["setting", "runs", "coalitions", "seeds", "proportion-sweep runs"], table)


def _incentives_section(runs: Mapping[Coalition, SeedAverage], *, tolerance: float) -> str:
  rows = incentives.coalition_rows(runs, tolerance=tolerance)
  communities = sorted({i for c in runs for i in c})
  header = ["coalition", "seeds", *(f"acc {i}" for i in communities),
            *(f"gain {i}" for i in communities), "IR", "macro welfare", "weighted welfare",
            "worst-off", *(f"altruistic {i}" for i in communities)]
  table = []
  for row in rows:
    ir = {None: "-", True: "yes", False: "no"}[row.individually_rational]
    table.append([incentives.coalition_name(row.members), row.seeds,
                  *(tables.fmt(row.accuracy.get(i)) for i in communities),
                  *(tables.fmt(row.gain.get(i), signed=True) for i in communities), ir,
                  tables.fmt(row.macro_welfare), tables.fmt(row.weighted_welfare),
                  tables.fmt(row.worst_off),
                  *(tables.fmt(row.altruistic.get(i), signed=True) for i in communities)])
  return tables.markdown_table(header, table)


def _interval_section(a: analysis_lib.SettingAnalysis) -> str:
  """Markdown tables of one setting with 95% intervals, baselines and verdicts."""
  iv = bootstrap.format_interval
  communities = list(a.communities)
  acc_rows = [["chance level", "-", *(tables.fmt(a.chance.get(c)) for c in communities)]]
  acc_rows += [[name, "-", *(iv(v.get(c)) for c in communities)]
               for name, v in a.baselines.items()]
  acc_rows += [[incentives.coalition_name(c), a.coalition_seeds.get(c, len(a.seeds)),
                *(iv(a.accuracy[c].get(i)) for i in communities)] for c in tables.coalitions_of(a)]
  coalitions = [c for c in tables.coalitions_of(a) if len(c) > 1]
  gain_rows = [[incentives.coalition_name(c),
                *(iv(a.gain[c].get(i), signed=True, mark=True) if i in c else "-"
                  for i in communities), a.ir[c],
                *(iv(a.altruistic[c].get(i), signed=True, mark=True) if i in c else "-"
                  for i in communities)] for c in coalitions]
  welfare_rows = [[incentives.coalition_name(c), iv(a.macro_welfare[c]),
                   iv(a.weighted_welfare[c]), iv(a.worst_off[c])] for c in coalitions]
  parts = [a.method + " " + tables.SIGNIFICANCE_NOTE + ".",
           tables.markdown_table(["accuracy", "seeds", *communities], acc_rows),
           tables.markdown_table(["coalition", *(f"gain {i}" for i in communities), "IR",
                                  *(f"altruistic {i}" for i in communities)], gain_rows),
           tables.markdown_table(["coalition", "macro welfare", "weighted welfare", "worst-off"],
                                 welfare_rows)]
  if a.over_zero_shot:
    parts.append(tables.markdown_table(
        ["fine-tuned - zero-shot", *communities],
        [[incentives.coalition_name(c),
          *(iv(a.over_zero_shot[c].get(i), signed=True, mark=True) for i in communities)]
         for c in tables.coalitions_of(a) if c in a.over_zero_shot]))
  if a.shapley is not None:
    parts.append(tables.markdown_table(
        ["community", "Shapley", "Banzhaf"],
        [[i, iv(a.shapley[i], signed=True), iv(a.banzhaf[i], signed=True)]
         for i in communities]) + f"\n\nCore (total-welfare game): {a.core}.")
  parts.append("\n".join(f"- {line}" for line in tables.verdicts(a).splitlines()))
  return "\n\n".join(parts)


def _game_section(summary: tables.GameSummary | list[Coalition]) -> str:
  if not isinstance(summary, tables.GameSummary):
    return (f"Shapley values and core: skipped, {len(summary)} coalition(s) missing: "
            f"{', '.join(map(incentives.coalition_name, summary))}.")
  game = summary.game
  table = [[i, tables.fmt(game({i})), tables.fmt(summary.shapley[i]),
            tables.fmt(summary.banzhaf[i]), tables.fmt(summary.shapley_macro[i])]
           for i in game.players]
  check, lp = summary.core_check, summary.core_lp
  if check.in_core:
    core_text = "the Shapley allocation is in the core"
  else:
    violated = ", ".join(f"{incentives.coalition_name(c)} short by {d:.3f}"
                         for c, d in check.violations)
    core_text = f"the Shapley allocation is not in the core ({violated})"
  if lp.core_is_empty:
    weights = ", ".join(f"{incentives.coalition_name(c)}: {w:.2f}"
                        for c, w in sorted(lp.balanced_weights.items(),
                                           key=lambda cw: tables.coalition_sort_key(cw[0])))
    lp_text = (f"the core is empty: balanced weights ({weights}) give {lp.min_total:.3f} > "
               f"v(N) = {lp.grand_value:.3f}")
  else:
    allocation = ", ".join(f"{i}: {x:.3f}" for i, x in lp.allocation.items())
    lp_text = f"the core is not empty, e.g. ({allocation})"
  return (tables.markdown_table(["community", "v({i})", "Shapley", "Banzhaf", "Shapley (macro)"],
                                table) +
          f"\n\nv(N) = {game(game.grand_coalition):.3f} (total welfare); {core_text}; {lp_text}.")


def _proportion_section(points: Sequence[incentives.ProportionPoint]) -> str:
  table = [[str(p.setting), incentives.coalition_name(p.members),
            ", ".join(f"{i}: {x:.2f}" for i, x in p.proportions.items()), p.seeds,
            *(f"{i}: {p.accuracy[i]:.3f}" for i in p.members), tables.fmt(p.macro_welfare),
            tables.fmt(p.weighted_welfare),
            ", ".join(f"{i}: {tables.fmt(g, signed=True)}" for i, g in p.gain.items())]
           for p in points]
  return tables.markdown_table(["setting", "coalition", "proportions", "seeds", "acc 1st",
                                "acc 2nd", "macro welfare", "weighted welfare",
                                "gain over alone"], table)


def _privacy_section(averages: Sequence[SeedAverage],
                     analyses: Mapping[Setting, analysis_lib.SettingAnalysis],
                     contrasts: Sequence[contrasts_lib.Contrast]) -> str:
  """Accuracy per eps (95% interval where the runs have per-example outcomes) and its paired
  difference from the same coalition and setting without privacy (where that ran)."""
  vs_none = {(c.setting, c.coalition, c.community): c.difference for c in contrasts
             if c.reference == dataclasses.replace(c.setting, eps=None)}
  table = []
  for a in averages:
    if a.setting.eps is None or a.mixture is not None:
      continue
    accuracy, difference = [], []
    for i in a.members:
      interval = analysis_lib.accuracy_interval(analyses, a.setting, a.members, i)
      accuracy.append(f"{i}: " + (bootstrap.format_interval(interval) if interval
                                  else f"{a.accuracy[i]:.3f}"))
      diff = vs_none.get((a.setting, frozenset(a.members), i))
      if diff is not None:
        difference.append(f"{i}: {bootstrap.format_interval(diff, signed=True, mark=True)}")
    table.append([f"L{a.setting.level} {a.setting.format}", incentives.coalition_name(a.members),
                  a.setting.eps, len(a.seeds), ", ".join(accuracy),
                  ", ".join(difference) or "-"])
  return tables.markdown_table(
      ["setting", "coalition", "eps", "seeds", "accuracy", "minus without privacy"], table)


def _setting_slug(setting: Setting) -> str:
  """A file-name-safe, stable name of a setting."""
  slug = f"L{setting.level}_{setting.format}"
  if setting.eps is not None:
    slug += f"_eps{setting.eps:g}"
  if setting.selection is not None:
    slug += "_" + re.sub(r"[^A-Za-z0-9_.-]", "_", setting.selection)
  return slug


def _base_selection(rows: Sequence[RunResult]) -> str | None:
  """The most common selection among non-private runs (None wins ties)."""
  counts = collections.Counter(r.selection for r in rows if r.eps is None)
  if not counts:
    return None
  return min(counts, key=lambda s: (-counts[s], s is not None, s or ""))


def _primary_setting(by_setting: Mapping[Setting, Mapping[Coalition, SeedAverage]]) -> Setting:
  """The setting with the most coalitions (ties: more seeds, higher level, earlier format)."""
  return max(by_setting, key=lambda s: (len(by_setting[s]),
                                        sum(len(a.seeds) for a in by_setting[s].values()),
                                        s.level, -names.FORMATS.index(s.format)))


def build_report(rows: Sequence[RunResult], out_dir: str | os.PathLike, *, source: str = "",
                 tolerance: float = 0.0, notes: Sequence[str] = (),
                 analyses: Mapping[Setting, analysis_lib.SettingAnalysis] | None = None,
                 contrasts: Sequence[contrasts_lib.Contrast] = ()) -> Path:
  """Writes ``report.md`` and its figures into ``out_dir``; returns the report's path.

  ``analyses`` (:func:`cdc_jax.coalitions.analysis.analyse`) add 95% intervals,
  baselines and chance levels to the tables and error bars to the figures;
  ``contrasts`` (:func:`cdc_jax.coalitions.contrasts.contrast_settings`) a
  section comparing settings.
  """
  analyses = analyses or {}
  # matplotlib only when a report is drawn.
  from cdc_jax.coalitions import figures

  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  averages = incentives.average_over_seeds(rows)
  by_setting = incentives.natural_by_setting(rows)
  selection = _base_selection(rows)
  base = {s: r for s, r in by_setting.items() if s.eps is None and s.selection == selection}
  points = incentives.proportion_points(rows)
  sections = [f"# Coalition sweep report\n\n{len(rows)} runs read from `{source}`; "
              f"{len(by_setting)} settings with natural-mixture runs, "
              f"{len(points)} proportion-sweep points. Accuracies are averaged over seeds; "
              "formulas in docs/incentives.md.", *notes, _uncertainty_note(by_setting, analyses),
              "## Runs", _runs_section(rows)]

  written: set[str] = set()

  def figure(title: str, plot, *args, filename: str, **kwargs) -> None:
    try:
      path = plot(*args, out_dir / filename, **kwargs)
      written.add(path.name)
      sections.append(f"### {title}\n\n![{title}]({path.name})")
    except figures.MissingRuns as e:
      sections.append(f"### {title}\n\n*Figure skipped: {e}.*")

  sections.append("## Figures")
  base_text = f"non-private runs, selection={selection}"
  if not base:
    sections.append(f"*Figures of coalitions skipped: no natural-mixture runs ({base_text}).*")
  else:
    primary = _primary_setting(base)
    figure(f"Accuracy vs rationale level ({base_text})", figures.plot_levels, base,
           filename="levels.png", analyses=analyses)
    figure(f"Coalition vs standalone accuracy ({primary})", figures.plot_coalitions,
           base[primary], primary, filename="coalitions.png", analysis=analyses.get(primary))
    shapley = {}
    for setting in sorted(base, key=incentives.setting_sort_key):
      summary = tables.game_summary(base[setting])
      if setting.level == primary.level and isinstance(summary, tables.GameSummary):
        shapley[setting] = summary.shapley
    if not shapley:
      missing = ", ".join(map(incentives.coalition_name, tables.game_summary(base[primary])))
      sections.append(f"### Shapley values\n\n*Figure skipped: needs all 2^K - 1 coalitions of "
                      f"a setting at level {primary.level}; {primary} lacks {missing}.*")
    else:
      figure(f"Shapley values (level {primary.level})", figures.plot_shapley, shapley,
             filename="shapley.png",
             intervals={s: analyses[s].shapley for s in shapley
                        if s in analyses and analyses[s].shapley})
  sweeps = collections.defaultdict(list)
  for point in points:
    sweeps[(point.setting, point.members)].append(point)
  larger = [r.run for r in rows if incentives.mixture_of(r) is not None and len(r.members) > 2]
  if larger:
    sections.append(f"*{len(larger)} proportion-sweep runs of coalitions of three or more "
                    f"communities are not plotted: {', '.join(larger)}.*")
  if not sweeps:
    sections.append("### Accuracy vs proportion\n\n*Figure skipped: needs runs of a "
                    "two-community coalition with proportions set (a proportion sweep).*")
  for (setting, members), sweep in sorted(
      sweeps.items(), key=lambda kv: (incentives.setting_sort_key(kv[0][0]), kv[0][1])):
    filename = f"proportions_{'_'.join(members)}_{_setting_slug(setting)}.png"
    figure(f"Accuracy vs proportion of {members[0]} in "
           f"{incentives.coalition_name(members)} ({setting})", figures.plot_proportions, sweep,
           filename=filename)
  figure("Privacy-utility curve", figures.plot_privacy, averages, filename="privacy.png",
         analyses=analyses)
  if figures.k_points(rows):  # Only key-token sweeps have this axis.
    figure("Accuracy vs key tokens shared (k)", figures.plot_accuracy_vs_k, rows,
           filename=figures.K_FILENAME, analyses=analyses)

  sections.append("## Incentives per coalition")
  for setting in sorted(by_setting, key=incentives.setting_sort_key):
    sections += [f"### {setting}", _incentives_section(by_setting[setting], tolerance=tolerance),
                 "Shapley / Banzhaf values (total-welfare game; last column macro welfare):",
                 _game_section(tables.game_summary(by_setting[setting]))]
    if setting in analyses:
      sections += [f"#### {setting}: with 95% intervals and baselines",
                   _interval_section(analyses[setting])]
  if contrasts:
    sections += ["## Settings compared",
                 "Each coalition's accuracy in one setting minus its accuracy in another, paired "
                 "on the community's test examples (the same bootstrap draw for both settings; "
                 "seeds by index); ~ marks a difference whose 95% interval contains 0 (not "
                 "significant).",
                 contrasts_lib.contrast_table(contrasts)]
  if points:
    sections += ["## Proportion sweeps", _proportion_section(points)]
  if any(a.setting.eps is not None for a in averages):
    sections += ["## Privacy", _privacy_section(averages, analyses, contrasts)]
  path = out_dir / REPORT_FILENAME
  stale = [name for name in _figures_of(path) if name not in written]
  io_lib.atomic_write_text(path, "\n\n".join(sections) + "\n")
  for name in stale:  # Figures of an earlier report into this directory that this one lacks.
    (out_dir / name).unlink(missing_ok=True)
  return path


def _uncertainty_note(by_setting: Mapping[Setting, object],
                      analyses: Mapping[Setting, analysis_lib.SettingAnalysis]) -> str:
  """What the report says about intervals: their method, or why there are none."""
  if not analyses:
    return ("*No 95% intervals: the runs have no per-example outcomes (`examples.jsonl`, "
            "written by sweeps since per-example results were added); the tables are point "
            "estimates.*")
  first = next(iter(analyses.values()))
  missing = [str(s) for s in by_setting if s not in analyses]
  text = (f"Uncertainty: {first.resamples} paired bootstrap resamples over test examples and "
          "seeds (the same example resample for every coalition and baseline, so differences "
          "are paired; percentile intervals); method and test-set sizes are stated per setting. "
          f"{tables.SIGNIFICANCE_NOTE}. Chance level: max(uniform guess, majority-class accuracy). "
          "Baselines: majority class (train split's most common answer scored on test; for "
          "multiple choice its most common answer position), "
          "teacher (the records' teacher answers), zero-shot student (where the sweep ran one).")
  if missing:
    text += f" Settings without intervals (runs lack per-example outcomes): {', '.join(missing)}."
  return text


def _figures_of(report_path: Path) -> list[str]:
  """The PNG files (in its own directory) that an existing report shows; [] if none."""
  if not report_path.exists():
    return []
  return re.findall(r"!\[[^\]]*\]\(([^)/\\]+\.png)\)", report_path.read_text())


@dataclasses.dataclass(frozen=True)
class SweepReport:
  """What :func:`report_sweep` read and wrote."""
  path: Path
  rows: tuple[RunResult, ...]
  source: Path
  notes: tuple[str, ...]
  contrasts: tuple[contrasts_lib.Contrast, ...] = ()


def report_sweep(sweep_dir: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                 tolerance: float = 0.0, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 also: Sequence[str | os.PathLike] = ()) -> SweepReport:
  """Reads a sweep's results and outcomes and writes its report (into ``out_dir`` or the sweep).

  Args:
    sweep_dir: the sweep directory.
    out_dir: where ``report.md`` and its figures go (default: ``sweep_dir``).
    tolerance: individual rationality allows gains down to ``-tolerance``.
    resamples: bootstrap resamples of test examples and seeds.
    also: other sweep directories whose runs join the report (e.g. one setting run in a claim
      sweep, compared with another in the main sweep); a run name may appear only once.

  Raises:
    ValueError: a run of the same name in two of the directories.
  """
  dirs = [Path(sweep_dir), *map(Path, also)]
  rows: list[RunResult] = []
  examples: dict[str, list] = {}
  sources, notes, run_dirs, seen = [], [], [], {}
  for directory in dirs:
    found, source = results_lib.load_sweep(directory)
    for row in found:
      if row.run in seen:
        raise ValueError(f"run {row.run!r} is in both {seen[row.run]} and {directory}; a report "
                         "reads each run once")
      seen[row.run] = directory
    rows += found
    examples.update(examples_lib.collect_examples(directory, found))
    sources.append(str(source))
    run_dirs += [directory / row.run for row in found if (directory / row.run).is_dir()]
    unfinished = results_lib.unfinished_runs(directory) if source == directory else []
    if unfinished:
      notes.append(f"{len(unfinished)} run directories have no {results_lib.RESULT_FILENAME} "
                   f"(unfinished, not in this report): "
                   f"{', '.join(p.name for p in unfinished)}.")
  analyses = analysis_lib.analyse(rows, examples, resamples=resamples, tolerance=tolerance)
  with_outcomes = [r for r in rows if r.run in examples]
  contrasts = contrasts_lib.contrast_settings(with_outcomes, examples, resamples=resamples)
  recorded = provenance.summary(run_dirs)
  if recorded:
    notes.append(recorded)
  path = build_report(rows, out_dir or sweep_dir, source="`, `".join(sources), tolerance=tolerance,
                      notes=notes, analyses=analyses, contrasts=contrasts)
  return SweepReport(path, tuple(rows), Path(sources[0]), tuple(notes), tuple(contrasts))
