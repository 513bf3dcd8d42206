"""Accuracy vs tokens shared: the key-token budget k of a sweep's key_tokens runs.

    python -m cdc_jax.contribution.figures SWEEP_DIR [--out DIR]

Runs record k in ``selection`` as ``key_tokens:k=<k>`` (salience selector) or
``key_tokens:<selector>:k=<k>`` (:func:`cdc_jax.contribution.variants.key_tokens_selection`).
One line per (community, coalition, level, selector), averaged over seeds;
where the sweep also has the same coalition's ``label_cot`` run (the whole
rationale shared) and ``label_only`` run (none), they are drawn as dotted and
dashed reference lines.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Sequence

from cdc_jax.coalitions import figures as coalition_figures
from cdc_jax.coalitions import incentives
from cdc_jax.coalitions import results as results_lib
from cdc_jax.coalitions.results import RunResult

_K_SELECTION = re.compile(r"key_tokens(?::(?P<selector>[a-z][a-z0-9_]*))?:k=(?P<k>[0-9]+)\Z")
FILENAME = "key_tokens_k.png"


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
  lines: dict[tuple, dict[int, float]] = {}
  for average in incentives.average_over_seeds(rows):
    parsed = parse_k(average.setting.selection)
    if parsed is None or average.setting.format != "key_tokens" or average.mixture is not None:
      continue
    selector, k = parsed
    for member in average.members:
      key = (member, average.members, average.setting.level, selector)
      lines.setdefault(key, {})[k] = average.accuracy[member]
  return lines


def plot_accuracy_vs_k(rows: Sequence[RunResult], path: str | os.PathLike) -> Path:
  """Writes the accuracy-vs-k PNG; raises ``MissingRuns`` without key_tokens runs with k."""
  import matplotlib.pyplot as plt  # coalitions.figures set the Agg backend.

  lines = k_points(rows)
  if not lines:
    raise coalition_figures.MissingRuns(
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
    ax.plot(ks, [points[k] for k in ks], marker="o", color=color,
            label=f"{member} in {incentives.coalition_name(members)} L{level} {selector}")
    for fmt, style in (("label_cot", ":"), ("label_only", "--")):
      if (member, members, level, fmt) in references:
        ax.axhline(references[(member, members, level, fmt)], color=color, linestyle=style,
                   linewidth=1)
  all_k = sorted({k for points in lines.values() for k in points})
  ax.set_xscale("log", base=2)
  ax.set_xticks(all_k)
  ax.set_xticklabels([str(k) for k in all_k])
  ax.set_xlabel("rationale words shared k (dotted: whole rationale, dashed: none)")
  ax.set_ylabel("test accuracy")
  ax.set_title("accuracy vs tokens shared")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("sweep_dir", type=Path)
  parser.add_argument("--out", type=Path, default=None, help="directory (default: the sweep)")
  args = parser.parse_args(argv)
  rows, source = results_lib.load_sweep(args.sweep_dir)
  path = plot_accuracy_vs_k(rows, (args.out or args.sweep_dir) / FILENAME)
  print(f"read {len(rows)} runs from {source}; wrote {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
