"""Rewrites a finished sweep's per-example outcomes from its runs' saved predictions.

    python -m cdc_jax.coalitions.rescore results/real_cpu [--runs csqa.L1.cot_label.s0 ...]

For when the scoring of a baseline changes (the majority class of multiple
choice became an answer position, not an answer text): each finished run's
``examples.jsonl`` is rebuilt from its ``eval/*.predictions.jsonl`` with the
run's own configuration (``run.json``: the communities it registered), in a
fresh process per run, as the run itself wrote it; then the sweep's tables.
Nothing is decoded again. The students' outcomes come from the same
predictions, so a changed ``correct`` is an error; the changed baseline fields
are counted and printed.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from cdc_jax.coalitions import examples as examples_lib
from cdc_jax.coalitions import results, runner
from cdc_jax.coalitions.experiment import RUN_CONFIG

BASELINE_FIELDS = ("majority_correct", "teacher_correct", "chance")
RescoreFn = Callable[[Path], None]


def rescore_in_subprocess(run_dir: Path) -> None:
  """Runs ``experiment --examples_only`` on ``run_dir``; raises naming it on failure."""
  command = runner.run_command(run_dir) + ["--examples_only"]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"{run_dir}: rescoring failed (exit {done.returncode}):\n"
                       f"{done.stderr[-2000:]}")


def _outcomes(run_dir: Path) -> dict[tuple[str, str], examples_lib.ExampleOutcome]:
  path = run_dir / results.EXAMPLES_FILENAME
  if not path.exists():
    return {}
  return {(o.community, o.id): o for o in examples_lib.read_examples(path).get(None, [])}


def rescore_sweep(sweep_dir: str | Path, *, runs: Sequence[str] = (),
                  rescore_fn: RescoreFn = rescore_in_subprocess) -> collections.Counter:
  """Rescores the finished runs of ``sweep_dir`` (all, or ``runs``); returns change counts.

  The counts are keyed by field ('majority_correct', ...) plus 'runs' and
  'outcomes'. Raises ValueError naming a run whose student outcome changed or
  a named run that is not finished.
  """
  sweep_dir = Path(sweep_dir)
  finished = sorted(p.parent for p in sweep_dir.glob(f"*/{results.RESULT_FILENAME}")
                    if (p.parent / RUN_CONFIG).exists())
  if runs:
    by_name = {d.name: d for d in finished}
    missing = [r for r in runs if r not in by_name]
    if missing:
      raise ValueError(f"{sweep_dir}: no finished run (result.json and {RUN_CONFIG}) named "
                       f"{missing}")
    finished = [by_name[r] for r in runs]
  counts = collections.Counter()
  for i, run_dir in enumerate(finished, 1):
    before = _outcomes(run_dir)
    rescore_fn(run_dir)
    after = _outcomes(run_dir)
    changed = collections.Counter()
    for key, new in after.items():
      old = before.get(key)
      if old is None:
        continue
      if old.correct != new.correct or old.answer != new.answer:
        raise ValueError(f"{run_dir / results.EXAMPLES_FILENAME}: the student's outcome of "
                         f"{key[0]} example {key[1]!r} changed; its predictions are not the run's")
      changed.update(f for f in BASELINE_FIELDS if getattr(old, f) != getattr(new, f))
    counts.update(changed)
    counts.update(runs=1, outcomes=len(after))
    print(f"[{i}/{len(finished)}] {run_dir.name}: {len(after)} outcomes; changed "
          f"{dict(changed) or 'none'}", flush=True)
  runner.write_tables(sweep_dir)
  return counts


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("sweep_dir", type=Path)
  parser.add_argument("--runs", nargs="*", default=(), help="run directory names (default: all)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  counts = rescore_sweep(args.sweep_dir, runs=args.runs)
  print(f"{args.sweep_dir}: {counts['runs']} runs, {counts['outcomes']} outcomes rewritten; "
        f"changed: " + ", ".join(f"{f} {counts[f]}" for f in BASELINE_FIELDS), flush=True)


if __name__ == "__main__":
  main()
