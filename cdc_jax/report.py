r"""Report of a coalition sweep: Markdown tables and PNG figures.

  python -m cdc_jax.report SWEEP_DIR [--with OTHER_SWEEP_DIR ...] [--out DIR] \
      [--tolerance 0.0] [--resamples 2000]

Reads ``SWEEP_DIR/results.jsonl`` if present, else every
``SWEEP_DIR/*/result.json`` (and the same of every ``--with`` directory: settings
run in different sweeps are then compared too), and writes ``report.md`` and
its figures into ``--out`` (default: SWEEP_DIR); see
:mod:`cdc_jax.coalitions.report`.
Formulas: docs/incentives.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cdc_jax.coalitions import bootstrap, incentives
from cdc_jax.coalitions import report as report_lib


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("sweep_dir", type=Path, help="sweep directory")
  parser.add_argument("--out", type=Path, default=None, help="output directory (default: sweep)")
  parser.add_argument("--tolerance", type=float, default=0.0,
                      help="individual rationality allows gains down to -tolerance")
  parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES,
                      help="bootstrap resamples of test examples and seeds")
  parser.add_argument("--with", dest="also", type=Path, action="append", default=[],
                      metavar="SWEEP_DIR", help="another sweep directory whose runs join the "
                      "report (repeatable; use --out to leave SWEEP_DIR's own report as it is)")
  args = parser.parse_args(argv)
  done = report_lib.report_sweep(args.sweep_dir, out_dir=args.out, tolerance=args.tolerance,
                                 resamples=args.resamples, also=args.also)
  settings = len({incentives.setting_of(r) for r in done.rows})
  also = "".join(f" and {d}" for d in args.also)
  print(f"read {len(done.rows)} runs ({settings} settings) from {done.source}{also}")
  for note in done.notes:
    print(note)
  if done.contrasts:
    print("settings compared (paired differences, 95% intervals; ~: contains 0):")
  for c in done.contrasts:
    print(f"  {c.community} in {incentives.coalition_name(c.coalition)}: {c.setting} - "
          f"{c.reference} = {bootstrap.format_interval(c.difference, signed=True, mark=True)}")
  print(f"wrote {done.path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
