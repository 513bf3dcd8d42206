"""Accuracy vs tokens shared: the key-token budget k of a sweep's key_tokens runs.

    python -m cdc_jax.contribution.figures SWEEP_DIR [--out DIR]

Runs record k in ``selection`` as ``key_tokens:k=<k>`` (salience selector) or
``key_tokens:<selector>:k=<k>`` (:func:`cdc_jax.contribution.variants.key_tokens_selection`).
Draws :func:`cdc_jax.coalitions.figures.plot_accuracy_vs_k` (the report draws
it too, for a sweep with such runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cdc_jax.coalitions import figures
from cdc_jax.coalitions import results as results_lib


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("sweep_dir", type=Path)
  parser.add_argument("--out", type=Path, default=None, help="directory (default: the sweep)")
  args = parser.parse_args(argv)
  rows, source = results_lib.load_sweep(args.sweep_dir)
  path = figures.plot_accuracy_vs_k(rows, (args.out or args.sweep_dir) / figures.K_FILENAME)
  print(f"read {len(rows)} runs from {source}; wrote {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
