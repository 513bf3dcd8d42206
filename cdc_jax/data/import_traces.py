r"""Imports a published CoT dataset as a community directory.

  python -m cdc_jax.data.import_traces --format=leveled_cot \
      --source=../shared/data/eit_cot --dataset=strategyqa --teacher=llama \
      --out=/tmp/communities/stqa_llama --community=stqa_llama [--keep=correct] [--levels=1,6]

Formats: leveled_cot (EIT-NLP, levels 1..6, teachers llama|gemini), dss
(distilling-step-by-step cqa|svamp, PaLM), gsm8k and strategyqa (official
releases, human rationales). Prints the import report: records per split,
teacher accuracy per level, questions absent from a level, skipped questions
and merged duplicates.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cdc_jax import names
from cdc_jax.data import importers


def _levels(text: str) -> tuple[int, ...]:
  try:
    return tuple(names.validate_level(int(part)) for part in text.split(",") if part.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--levels={text!r}: {e}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(
      prog="python -m cdc_jax.data.import_traces",
      description="Import a published CoT dataset as a cdc_jax community directory.")
  parser.add_argument("--format", required=True, choices=importers.FORMATS)
  parser.add_argument("--source", required=True, help="folder of the published files")
  parser.add_argument("--out", required=True, help="community directory to write")
  parser.add_argument("--community", required=True, help="community name [a-z][a-z0-9_]*")
  parser.add_argument("--dataset", default=None,
                      help="leveled_cot: strategyqa|csqa|gsm8k|svamp; dss: cqa|svamp "
                           "(default: the source folder's name)")
  parser.add_argument("--teacher", default=None, choices=sorted(importers.leveled_cot.TEACHERS),
                      help="leveled_cot only (default llama)")
  parser.add_argument("--keep", default="all", choices=importers.KEEP_CHOICES,
                      help="correct: drop each rationale whose teacher answer is wrong")
  parser.add_argument("--levels", type=_levels, default=None,
                      help="leveled_cot: levels to import (default all); other formats: the "
                           "one level to store the rationale at (default 6)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs an import; returns the exit status (1 with a message on bad input)."""
  args = parse_args(argv)
  try:
    names.validate_name(args.community)
    imported = importers.import_source(
        args.format, args.source, community=args.community, dataset=args.dataset,
        teacher=args.teacher, keep=args.keep, levels=args.levels)
    manifest = importers.write_imported(args.out, imported)
  except (ValueError, OSError) as e:  # SourceError is a ValueError.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(imported.report)
  print(f"wrote {manifest}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
