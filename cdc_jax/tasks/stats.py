r"""Length audit: token-length percentiles of a community's tasks.

  python -m cdc_jax.tasks.stats /data/my_community/community.json [MORE.json ...] \
      [--levels=1,6] [--formats=label_only,cot_label] [--spm_model=spiece.model --extra_ids=100] \
      [--lengths=64,96]

For every split, level and format of each community, prints the percentiles
of the inputs' and targets' token lengths (EOS included, untrimmed) under the
tasks' vocabulary: the one given, or (as in a run) one trained on the
communities registered, with ``--embedded`` adding the embedded communities
(pass the same set a run registers to see its vocabulary). With
``--lengths=INPUTS,TARGETS``, also how many examples those feature lengths
would cut. A run's lengths may be set from these numbers, or as percentiles
(``TASK_FEATURE_LENGTHS = {'inputs': 'p95', 'targets': 'p99'}``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # pylint: disable=g-import-not-at-top

from cdc_jax import arguments
from cdc_jax import names
from cdc_jax.data import records as records_lib

PERCENTILES = (50, 90, 95, 99, 100)


def _ints(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(p) for p in text.split(",") if p.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _formats(text: str) -> tuple[str, ...]:
  try:
    return tuple(names.validate_format(p.strip()) for p in text.split(",") if p.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def task_variants(community: str, level: int, fmt: str) -> list[str]:
  """The scored and unscored task names of one level and format (step_by_step has two)."""
  parts = names.STEP_BY_STEP_PARTS if fmt == "step_by_step" else (None,)
  return [names.task_name(community, level, fmt, part) for part in parts]


def length_rows(community: records_lib.Community, *, levels: Sequence[int],
                formats: Sequence[str], cut_at: Sequence[int] | None = None) -> list[dict]:
  """One row per split, level and task: example count and length percentiles.

  The community's tasks must be registered (``catalog.register_tasks``).
  """
  from cdc_jax.tasks import lengths as lengths_lib  # Deferred: imports seqio.

  rows = []
  for split in community.manifest.splits:
    for level in levels:
      for fmt in formats:
        for task in task_variants(community.name, level, fmt):
          try:
            measured = lengths_lib.token_lengths(task, split)
          except ValueError:  # No example at this level (a train split without its rationales).
            measured = lengths_lib.TokenLengths(task, split, np.zeros(0, int), np.zeros(0, int))
          row = {"split": split, "level": level, "task": task, "examples": len(measured.inputs)}
          for feature in lengths_lib.FEATURES:
            values = measured.of(feature)
            row[feature] = [lengths_lib.percentile_length(values, f"p{q}") if len(values) else 0
                            for q in PERCENTILES]
            if cut_at:
              limit = cut_at[lengths_lib.FEATURES.index(feature)]
              row[f"{feature}_cut"] = int(np.sum(values > limit))
          rows.append(row)
  return rows


def format_rows(rows: Sequence[dict], *, cut_at: Sequence[int] | None = None) -> str:
  """The rows as a fixed-width table."""
  heads = " ".join(f"p{q}" if q < 100 else "max" for q in PERCENTILES)
  cut = f" | cut at {cut_at[0]}/{cut_at[1]}: inputs targets" if cut_at else ""
  lines = [f"{'split':<10} {'task':<44} {'n':>6} | inputs {heads} | targets {heads}{cut}"]
  for r in rows:
    line = (f"{r['split']:<10} {r['task']:<44} {r['examples']:>6} | "
            f"{' '.join(f'{v:>4}' for v in r['inputs']):>{7 + len(heads)}} | "
            f"{' '.join(f'{v:>4}' for v in r['targets']):>{8 + len(heads)}}")
    if cut_at:
      line += f" | {r['inputs_cut']:>6} {r['targets_cut']:>7}"
    lines.append(line)
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.tasks.stats",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("manifests", nargs="+", help="community.json files (or their directories)")
  parser.add_argument("--levels", type=_ints, default=None,
                      help="levels to measure (default: the levels each community has)")
  parser.add_argument("--formats", type=_formats, default=names.FORMATS,
                      help="target formats (default all)")
  parser.add_argument("--lengths", type=_ints, default=None,
                      help="INPUTS,TARGETS: also count the examples these lengths would cut")
  parser.add_argument("--spm_model", default=None, help="a SentencePiece model (e.g. T5's)")
  parser.add_argument("--extra_ids", type=int, default=0)
  parser.add_argument("--vocab_size", type=int, default=1000,
                      help="size of the vocabulary trained when no --spm_model is given")
  parser.add_argument("--embedded", action="store_true",
                      help="also register the embedded communities (their text shapes the "
                           "trained vocabulary, as in a run that registers them)")
  args = parser.parse_args(argv)
  if args.lengths is not None and (len(args.lengths) != 2 or min(args.lengths) < 1):
    parser.error(f"--lengths: expected INPUTS,TARGETS (two positive numbers), got {args.lengths}")
  for level in args.levels or ():
    try:
      names.validate_level(level)
    except ValueError as e:
      parser.error(f"--levels: {e}")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Prints the length table of each community; returns the exit status."""
  args = parse_args(argv)
  from cdc_jax.tasks import catalog  # Deferred: imports seqio and TensorFlow.

  def run():
    communities = [records_lib.load_community(path) for path in args.manifests]
    catalog.register_tasks(communities=args.manifests, embedded=args.embedded,
                           spm_model=args.spm_model, extra_ids=args.extra_ids,
                           vocab_size=args.vocab_size)
    vocab = catalog.process_vocabulary()
    print(f"vocabulary: {getattr(vocab, 'sentencepiece_model_file', vocab)} "
          f"({vocab.vocab_size} ids); lengths in tokens, EOS included")
    for community in communities:
      levels = args.levels or community.manifest.levels or names.LEVELS
      rows = length_rows(community, levels=levels, formats=args.formats, cut_at=args.lengths)
      print(f"\n== {community.name}: {sum(len(r) for r in community.records.values())} records, "
            f"levels {list(levels)}, {len(rows)} task splits measured ==")
      print(format_rows(rows, cut_at=args.lengths))
  return arguments.exit_status(run)


if __name__ == "__main__":
  sys.exit(main())
