"""Figures of a coalition sweep (matplotlib, Agg backend; imported by the report only).

Each ``plot_*`` function writes one PNG and returns its path, or raises
:class:`MissingRuns` saying which runs it would need.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # Files only: no display on training machines.
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)

from cdc_jax import names  # noqa: E402
from cdc_jax.coalitions import analysis as analysis_lib  # noqa: E402
from cdc_jax.coalitions import incentives  # noqa: E402
from cdc_jax.coalitions.incentives import Coalition, SeedAverage, Setting  # noqa: E402
from cdc_jax.coalitions.results import RunResult  # noqa: E402

_DPI = 110
_MARKERS = "osD^v<>"
# Key-token runs record k in ``selection`` (cdc_jax.contribution.variants.key_tokens_selection).
_K_SELECTION = re.compile(r"key_tokens(?::(?P<selector>[a-z][a-z0-9_]*))?:k=(?P<k>[0-9]+)\Z")
K_FILENAME = "key_tokens_k.png"


class MissingRuns(Exception):
  """The runs a figure needs are not in the sweep."""


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=_DPI)
  plt.close(fig)
  return path


def _save_curves(fig: plt.Figure, ax: plt.Axes, path: str | os.PathLike, *, xlabel: str,
                 title: str) -> Path:
  """Labels a figure of test-accuracy curves (one per member and coalition) and saves it."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel("test accuracy")
  ax.set_title(title)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def _colors(keys: Sequence[str]) -> dict[str, tuple]:
  cmap = plt.get_cmap("tab10")
  return {k: cmap(i % 10) for i, k in enumerate(keys)}


def plot_levels(by_setting: Mapping[Setting, Mapping[Coalition, SeedAverage]],
                path: str | os.PathLike, analyses: Mapping[Setting, object] | None = None) -> Path:
  """Accuracy vs granularity level, one line per (community, format).

  Left: each community alone; right: in the grand coalition of all
  communities of these runs. Needs either at two levels or more.
  """
  communities = sorted({i for runs in by_setting.values() for c in runs for i in c})
  grand = frozenset(communities)
  panels = {"standalone": {}, f"grand coalition {incentives.coalition_name(grand)}": {}}
  for setting, runs in by_setting.items():
    for community in communities:
      for panel, coalition in zip(panels, (frozenset({community}), grand)):
        if coalition in runs:
          line = panels[panel].setdefault((community, setting.format), {})
          interval = analysis_lib.accuracy_interval(analyses, setting, coalition, community)
          line[setting.level] = (runs[coalition].accuracy[community], interval)
  if not any(len(line) >= 2 for lines in panels.values() for line in lines.values()):
    raise MissingRuns("needs standalone or grand-coalition runs of a community at two or more "
                      "levels (same format)")
  colors = _colors(communities)
  formats = [f for f in names.FORMATS if any(f == s.format for s in by_setting)]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for ax, (title, lines) in zip(axes, panels.items()):
    for (community, fmt), points in sorted(lines.items()):
      levels = sorted(points)
      values, yerr = _values_and_yerr([points[l] for l in levels])
      ax.errorbar(levels, values, yerr=yerr, capsize=3, color=colors[community],
                  marker=_MARKERS[formats.index(fmt) % len(_MARKERS)],
                  linestyle=("-", "--", ":", "-.")[formats.index(fmt) % 4],
                  label=f"{community} / {fmt}")
    chance = {c: a.chance[c] for a in (analyses or {}).values() for c in a.chance}
    for community, level in sorted(chance.items()):
      if any(c == community for c, _ in lines):
        ax.axhline(level, color=colors[community], linestyle=(0, (1, 3)), linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("rationale level (1 = shortest ... 6 = full CoT)")
    ax.set_xticks(list(names.LEVELS))
    ax.grid(alpha=0.3)
    if lines:
      ax.legend(fontsize=7)
  axes[0].set_ylabel("test accuracy" + (" (95% interval; dotted: chance)" if analyses else ""))
  return _save(fig, path)


def _yerr(value, interval) -> list[list[float]] | None:
  """Asymmetric error bar of ``value`` from an Interval (None without one)."""
  if interval is None:
    return None
  return [[max(value - interval.low, 0.0)], [max(interval.high - value, 0.0)]]


def plot_coalitions(runs: Mapping[Coalition, SeedAverage], setting: Setting,
                    path: str | os.PathLike, analysis=None) -> Path:
  """Grouped bars: each community's accuracy alone and in every coalition it is in.

  With ``analysis`` (a SettingAnalysis) bars get 95% error bars and each
  community a dashed chance line (max of uniform guess and majority class).
  """
  communities = sorted({i for c in runs for i in c})
  if not any(len(c) > 1 for c in runs):
    raise MissingRuns(f"needs runs of coalitions of two or more communities ({setting})")
  sizes = sorted({len(c) for c in runs})
  colors = {s: plt.get_cmap("viridis")(0.85 * (s - 1) / max(max(sizes) - 1, 1)) for s in sizes}
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(runs)), 4.5))
  x, ticks, labels, centers = 0.0, [], [], []
  labelled = set()
  for community in communities:
    coalitions = sorted((c for c in runs if community in c), key=lambda c: (len(c), sorted(c)))
    start = x
    for coalition in coalitions:
      size = len(coalition)
      value = runs[coalition].accuracy[community]
      bounds = analysis.accuracy.get(coalition, {}).get(community) if analysis else None
      ax.bar(x, value, width=0.8, color=colors[size], yerr=_yerr(value, bounds), capsize=3,
             label=None if size in labelled else ("alone" if size == 1 else f"{size} communities"))
      labelled.add(size)
      ticks.append(x)
      labels.append(incentives.coalition_name(coalition))
      x += 1
    centers.append(((start + x - 1) / 2, community))
    if analysis is not None and community in analysis.chance:
      ax.hlines(analysis.chance[community], start - 0.45, x - 0.55, colors="red",
                linestyles="dashed", linewidth=1.2,
                label=None if "chance" in labelled else "chance level")
      labelled.add("chance")
    x += 1  # A gap between communities.
  ax.set_xticks(ticks, labels, rotation=60, fontsize=7)
  for center, community in centers:
    ax.text(center, 1.02, community, transform=ax.get_xaxis_transform(), ha="center",
            fontweight="bold")
  ax.set_ylabel("test accuracy of the community" + (" (95% interval)" if analysis else ""))
  ax.set_title(f"coalition vs standalone accuracy ({setting})", pad=18)
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, path)


def plot_proportions(points: Sequence[incentives.ProportionPoint],
                     path: str | os.PathLike) -> Path:
  """Accuracy vs the first member's share in a two-community coalition.

  Left (utilitarian): each member's accuracy and the welfares; right
  (altruistic): what each member's data does for the other (its gain over
  training alone), drawn when the standalone runs exist.
  """
  if len(points) < 2:
    raise MissingRuns("needs runs of a two-community coalition at two or more proportions")
  a, b = points[0].members
  shares = [p.proportions[a] for p in points]
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  for member in (a, b):
    left.plot(shares, [p.accuracy[member] for p in points], marker="o", label=f"acc {member}")
  left.plot(shares, [p.macro_welfare for p in points], "k--", marker="s", label="macro welfare")
  left.plot(shares, [p.weighted_welfare for p in points], "k:", marker="^",
            label="example-weighted welfare")
  left.set_title(f"utilitarian view ({points[0].setting})")
  for giver, taker in ((a, b), (b, a)):
    gains = [p.gain[taker] for p in points]
    if all(g is not None for g in gains):
      right.plot(shares, gains, marker="o", label=f"{giver}'s data for {taker}")
  if right.lines:
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.legend(fontsize=8)
  else:
    right.text(0.5, 0.5, f"no standalone runs of {a} or {b}", ha="center",
               transform=right.transAxes)
  right.set_title("altruistic view: gain over training alone")
  for ax in (left, right):
    ax.set_xlabel(f"proportion of {a} in {incentives.coalition_name((a, b))}")
    ax.grid(alpha=0.3)
  left.set_ylabel("test accuracy")
  left.legend(fontsize=8)
  return _save(fig, path)


def plot_shapley(values: Mapping[Setting, Mapping[str, float]], path: str | os.PathLike,
                 intervals: Mapping[Setting, Mapping[str, object]] | None = None) -> Path:
  """Grouped bars of Shapley values (total-welfare game), one bar per setting.

  ``intervals`` (setting -> community -> Interval) draw 95% error bars.
  """
  if not values:
    raise MissingRuns("needs all 2^K - 1 coalitions of a setting")
  communities = sorted({i for v in values.values() for i in v})
  settings = list(values)
  width = 0.8 / len(settings)
  colors = _colors([str(s) for s in settings])
  fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(communities)), 4.2))
  for k, setting in enumerate(settings):
    xs = [j + (k - (len(settings) - 1) / 2) * width for j in range(len(communities))]
    heights = [values[setting].get(i, 0.0) for i in communities]
    bounds = (intervals or {}).get(setting)
    yerr = None
    if bounds and all(i in bounds for i in communities):
      yerr = [[max(h - bounds[i].low, 0.0) for h, i in zip(heights, communities)],
              [max(bounds[i].high - h, 0.0) for h, i in zip(heights, communities)]]
    ax.bar(xs, heights, width=width, yerr=yerr, capsize=3, color=colors[str(setting)],
           label=str(setting))
  ax.axhline(0.0, color="grey", linewidth=0.8)
  ax.set_xticks(range(len(communities)), communities)
  ax.set_ylabel("Shapley value (total-welfare game)")
  ax.set_title("Shapley value per community")
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, path)


def plot_privacy(averages: Sequence[SeedAverage], path: str | os.PathLike,
                 analyses: Mapping[Setting, object] | None = None) -> Path:
  """Accuracy vs privacy budget eps per (coalition, member, level, format).

  Non-private accuracy (eps None) of the same runs is a dotted line. With
  ``analyses`` points get 95% error bars and each community its chance level
  (dash-dot).
  """
  private = [a for a in averages if a.setting.eps is not None and a.mixture is None]
  if not private:
    raise MissingRuns("needs runs with a privacy budget eps")
  lines: dict[tuple, dict[float, float]] = {}
  for average in private:
    for member in average.members:
      key = (average.setting.level, average.setting.format, average.setting.selection,
             average.members, member)
      lines.setdefault(key, {})[average.setting.eps] = (
          average.accuracy[member],
          analysis_lib.accuracy_interval(analyses, average.setting, average.members, member))
  baseline = {(a.setting.level, a.setting.format, a.setting.selection, a.members, m):
              a.accuracy[m] for a in averages
              if a.setting.eps is None and a.mixture is None for m in a.members}
  colors = _colors([str(k) for k in lines])
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for key, points in sorted(lines.items(), key=lambda kv: str(kv[0])):
    level, fmt, _, members, member = key
    eps = sorted(points)
    label = f"{member} in {incentives.coalition_name(members)} L{level} {fmt}"
    _curve(ax, eps, [points[e] for e in eps], color=colors[str(key)], label=label)
    _chance_line(ax, analyses, member, colors[str(key)])
    if key in baseline:
      ax.axhline(baseline[key], color=colors[str(key)], linestyle=":", linewidth=1)
  ax.set_xscale("log")
  # Ticks at the measured budgets, in plain numbers (a log axis prints 2x10^0).
  ax.set_xticks(sorted({e for points in lines.values() for e in points}))
  ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  return _save_curves(fig, ax, path,
                      xlabel="privacy budget eps (dotted: no privacy"
                             + (", dash-dot: chance)" if analyses else ")"),
                      title="privacy-utility curve" + (" (95% intervals)" if analyses else ""))


def parse_k(selection: str | None) -> tuple[str, int] | None:
  """``(selector, k)`` of a key_tokens selection string, else None.

  >>> parse_k("key_tokens:k=4"), parse_k("key_tokens:attribution:k=2"), parse_k(None)
  (('salience', 4), ('attribution', 2), None)
  """
  match = _K_SELECTION.match(selection or "")
  if not match:
    return None
  return match["selector"] or "salience", int(match["k"])


def k_points(rows: Sequence[RunResult]) -> dict[tuple, dict[int, float]]:
  """(community, members, level, selector) -> {k: seed-averaged accuracy} of natural mixtures."""
  return {key: {k: value for k, (value, _) in points.items()}
          for key, points in k_curves(rows).items()}


def _values_and_yerr(points: Sequence[tuple[float, object]]) -> tuple[list[float], list | None]:
  """Values of ``(value, interval or None)`` points and their asymmetric error bars (None
  unless every point has an interval)."""
  values = [v for v, _ in points]
  bounds = [b for _, b in points]
  if not bounds or any(b is None for b in bounds):
    return values, None
  return values, [[max(v - b.low, 0.0) for v, b in zip(values, bounds)],
                  [max(b.high - v, 0.0) for v, b in zip(values, bounds)]]


def _curve(ax: plt.Axes, xs: Sequence[float], points: Sequence[tuple[float, object]], *,
           color, label: str) -> None:
  """Accuracy points ``(value, interval or None)``, with 95% error bars where all have one."""
  values, yerr = _values_and_yerr(points)
  ax.errorbar(xs, values, yerr=yerr, capsize=3, marker="o", color=color, label=label)


def _chance_line(ax: plt.Axes, analyses: Mapping[Setting, object] | None, member: str,
                 color) -> None:
  """``member``'s chance level (max of uniform guess and majority class) as a dash-dot line."""
  levels = [a.chance[member] for a in (analyses or {}).values() if member in a.chance]
  if levels:
    ax.axhline(max(levels), color=color, linestyle="-.", linewidth=1)


def k_curves(rows: Sequence[RunResult], analyses: Mapping[Setting, object] | None = None
             ) -> dict[tuple, dict[int, tuple[float, object]]]:
  """(community, members, level, selector) -> {k: (seed-averaged accuracy, 95% interval or
  None)} of the key_tokens runs: what :func:`plot_accuracy_vs_k` draws."""
  lines: dict[tuple, dict[int, tuple[float, object]]] = {}
  for average in incentives.average_over_seeds(rows):
    parsed = parse_k(average.setting.selection)
    if parsed is None or average.setting.format != "key_tokens" or average.mixture is not None:
      continue
    selector, k = parsed
    for member in average.members:
      key = (member, average.members, average.setting.level, selector)
      lines.setdefault(key, {})[k] = (
          average.accuracy[member],
          analysis_lib.accuracy_interval(analyses, average.setting, average.members, member))
  return lines


def plot_accuracy_vs_k(rows: Sequence[RunResult], path: str | os.PathLike,
                       analyses: Mapping[Setting, object] | None = None) -> Path:
  """Accuracy vs tokens shared: the key-token budget k of a sweep's key_tokens runs.

  One line per (community, coalition, level, selector), averaged over seeds;
  where the sweep also has the same coalition's ``label_cot`` run (the whole
  rationale shared) and ``label_only`` run (none), they are drawn as dotted
  and dashed reference lines. With ``analyses`` (SettingAnalysis per setting)
  points get 95% error bars and each community its chance level (dash-dot).
  Raises ``MissingRuns`` without key_tokens runs with k.
  """
  lines = k_curves(rows, analyses)
  if not lines:
    raise MissingRuns(
        "needs key_tokens runs whose selection records k ('key_tokens:k=4')")
  references = {}
  for average in incentives.average_over_seeds(rows):
    if average.setting.format in ("label_cot", "label_only") and average.mixture is None \
        and average.setting.eps is None and average.setting.selection is None:
      for member in average.members:
        references[(member, average.members, average.setting.level,
                    average.setting.format)] = average.accuracy[member]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colors = plt.get_cmap("tab10")
  for i, (key, points) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
    member, members, level, selector = key
    ks = sorted(points)
    color = colors(i % 10)
    _curve(ax, ks, [points[k] for k in ks], color=color,
           label=f"{member} in {incentives.coalition_name(members)} L{level} {selector}")
    _chance_line(ax, analyses, member, color)
    for fmt, style in (("label_cot", ":"), ("label_only", "--")):
      if (member, members, level, fmt) in references:
        ax.axhline(references[(member, members, level, fmt)], color=color, linestyle=style,
                   linewidth=1)
  all_k = sorted({k for points in lines.values() for k in points})
  ax.set_xscale("log", base=2)
  ax.set_xticks(all_k)
  ax.set_xticklabels([str(k) for k in all_k])
  return _save_curves(fig, ax, path,
                      xlabel="words shared k (dotted: whole rationale, dashed: none"
                             + (", dash-dot: chance)" if analyses else ")"),
                      title="accuracy vs tokens shared" + (" (95% intervals)" if analyses else ""))
