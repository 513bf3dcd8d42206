"""`make demo`: the embedded benchmark end to end.

Builds the embedded communities of the demo world (``synthetic.demo_world()``)
and prints their statistics, chance levels and one example of every target
format; then runs the coalition sweep of ``gin/sweeps/embedded_demo.gin``
(standalone runs and every coalition of three communities, two seeds, tiny T5
students trained for real), writes the report and prints the community x
coalition table, then every number with its 95% paired-bootstrap interval,
the baselines, which standalone students beat chance and which coalition
effects have an interval that excludes 0.

    python -m cdc_jax.demo [--out runs/demo] [--workers 2] [--gin.TRAIN_STEPS=...]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def print_communities(manifests) -> None:
  """Statistics of each community: counts, teacher accuracy, words per level."""
  from cdc_jax.data import records as records_lib
  from cdc_jax.tasks import formats

  from cdc_jax.coalitions import examples

  print(f"{'community':<12} {'type':<8} {'train':>5} {'test':>5} {'teacher acc':>11} "
        f"{'chance':>6}  mean words per rationale level 1..6")
  for path in manifests:
    c = records_lib.load_community(path)
    recs = [r for split in c.records.values() for r in split]
    acc = 100 * statistics.mean(bool(r.teacher_correct) for r in recs)
    words = " ".join(f"{statistics.mean(formats.rationale_length(r.rationales[lv]) for r in recs):5.1f}"
                     for lv in range(1, 7))
    # Chance: a uniform guess or the train split's majority answer, whichever scores higher on test.
    test = c.records["test"]
    majority = examples.majority_class(c.records["train"])
    chance = max(statistics.mean(examples.chance_of(r) for r in test),
                 statistics.mean(majority.correct(r.answer, r.answer_type, r.choices)
                                 for r in test))
    print(f"{c.name:<12} {c.manifest.answer_type:<8} {len(c.records['train']):>5} "
          f"{len(test):>5} {acc:>10.1f}% {chance:>6.3f}  {words}")


def print_task_samples(community: str, level: int) -> None:
  """One training example of every format of ``community`` at ``level``."""
  import seqio
  from cdc_jax import names

  for fmt in names.FORMATS:
    parts = names.STEP_BY_STEP_PARTS if fmt == "step_by_step" else (None,)
    for part in parts:
      name = names.task_name(community, level, fmt, part)
      ds = seqio.get_mixture_or_task(name).get_dataset(
          None, split="train", shuffle=False, use_cached=False)
      ex = next(ds.as_numpy_iterator())
      print(f"-- {name}\n   inputs:  {ex['inputs_pretokenized'].decode()}\n"
            f"   targets: {ex['targets_pretokenized'].decode()}  ({len(ex['targets'])} tokens)")


def run_experiment(out: str, *, workers: int, bindings: Sequence[str]) -> None:
  """The demo sweep, the report and the printed summary."""
  import time
  from cdc_jax import config_cli
  from cdc_jax.coalitions import analysis, examples, report, results, tables

  start = time.time()
  config_cli.parse_gin(["gin/sweeps/embedded_demo.gin"],
                       [f"SWEEP_DIR = {out!r}", f"WORKERS = {workers}", *bindings])
  rows = config_cli.configured("cdc_jax.coalitions.sweep", "run_sweep")()
  outcomes = examples.collect_examples(out, rows)
  analyses = analysis.analyse(rows, outcomes)
  path = report.build_report(rows, out, source=str(Path(out) / results.TABLE_FILENAME),
                             analyses=analyses)
  print(f"\n== results ({len(rows)} runs, {time.time() - start:.0f} s)")
  print(tables.summary_table(rows, analyses))
  print(f"\nreport: {path}")


def main(argv: Sequence[str] | None = None) -> None:
  import sys
  from cdc_jax import config_cli

  bindings, rest = config_cli.split_gin_bindings(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--level", type=int, default=6, help="rationale level of the samples")
  parser.add_argument("--out", default="runs/demo", help="sweep directory and report")
  parser.add_argument("--workers", type=int, default=2, help="parallel training runs")
  parser.add_argument("--samples_only", action="store_true", help="skip the experiment")
  args = parser.parse_args(rest)

  from cdc_jax.data import synthetic
  from cdc_jax.tasks import catalog

  world = synthetic.demo_world()  # The runs register the same world (gin/sweeps/embedded_demo.gin).
  manifests = catalog.embedded_communities(world)
  print(f"== embedded communities ({manifests[0].parent.parent}; {world})")
  print_communities(manifests)
  registered = catalog.register_tasks(synthetic_config=world)
  for name in registered:
    print(f"\n== tasks of {name} at level {args.level}")
    print_task_samples(name, args.level)
  if not args.samples_only:
    print("\n== coalition experiment (gin/sweeps/embedded_demo.gin)")
    run_experiment(args.out, workers=args.workers, bindings=bindings)


if __name__ == "__main__":
  main()
