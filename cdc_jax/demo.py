"""`make demo`: the embedded benchmark end to end.

Builds the embedded communities, prints their statistics and one example of
every target format.

    python -m cdc_jax.demo [--out runs/demo]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def print_communities(manifests) -> None:
  """Statistics of each community: counts, teacher accuracy, words per level."""
  from cdc_jax.data import records as records_lib
  from cdc_jax.tasks import formats

  print(f"{'community':<12} {'type':<8} {'train':>5} {'test':>5} {'teacher acc':>11}  "
        "mean words per rationale level 1..6")
  for path in manifests:
    c = records_lib.load_community(path)
    recs = [r for split in c.records.values() for r in split]
    acc = 100 * statistics.mean(bool(r.teacher_correct) for r in recs)
    words = " ".join(f"{statistics.mean(formats.rationale_length(r.rationales[lv]) for r in recs):5.1f}"
                     for lv in range(1, 7))
    print(f"{c.name:<12} {c.manifest.answer_type:<8} {len(c.records['train']):>5} "
          f"{len(c.records['test']):>5} {acc:>10.1f}%  {words}")


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


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--level", type=int, default=6, help="rationale level of the samples")
  args = parser.parse_args(argv)

  from cdc_jax.tasks import catalog

  manifests = catalog.embedded_communities()
  print(f"== embedded communities ({manifests[0].parent.parent})")
  print_communities(manifests)
  registered = catalog.register_tasks()
  for name in registered:
    print(f"\n== tasks of {name} at level {args.level}")
    print_task_samples(name, args.level)


if __name__ == "__main__":
  main()
