r"""Gives a community an evaluation split taken from another import of the same dataset.

  python -m cdc_jax.data.attach_split --target=STAGING/gsm8k \
      --source=DATA_ROOT/held_out/gsm8k_official --source_splits=test --out=DATA_ROOT/gsm8k

EIT-NLP's leveled CoT has no test file for GSM8K and SVAMP, so their
communities come with a train split only. Their questions are a subset of
the official releases, whose held-out questions become the test split here:
GSM8K's official ``test.jsonl`` (1,319), and for SVAMP every question of
distilling-step-by-step's train+test files (the 1,000 SVAMP questions) that
is not among EIT's 700 training questions (300). A candidate whose
normalised question is in one of the target's other splits is left out and
counted, so no test question is one the student trained on.

Attached records keep the question, choices and gold answer and get the
target's community name and a :func:`~cdc_jax.data.importers.stable_id` of
the new split; their rationales are dropped (evaluation scores answers, and
another teacher's text must not pass for the community's), and
``provenance['attached_from']`` names where each came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from cdc_jax.data import records as records_lib
from cdc_jax.data.importers import assembly

EVAL_SPLITS = ("validation", "test")


@dataclasses.dataclass(frozen=True)
class AttachReport:
  """Counts of an attach.

  Attributes:
    community: the target community.
    split: the split written.
    source: the source community's name.
    candidates: source split -> records read.
    attached: records written to ``split``.
    overlapping: candidates left out because the target has their question in another split.
    duplicates: candidates left out because an earlier candidate has their question.
  """
  community: str
  split: str
  source: str
  candidates: dict[str, int]
  attached: int
  overlapping: int
  duplicates: int

  def __str__(self) -> str:
    read = ", ".join(f"{n} {s}" for s, n in self.candidates.items())
    total = sum(self.candidates.values())
    return (f"{self.community}/{self.split}: attached {self.attached} of {total} "
            f"{self.source} records ({read}); left out {self.overlapping} whose question is in "
            f"another {self.community} split and {self.duplicates} repeated questions")


def _key(record: records_lib.TraceRecord) -> str:
  return assembly.question_key(record.question, record.choices)


def attach_split(target: str | Path, source: str | Path, *, source_splits: Sequence[str],
                 split: str = "test", out: str | Path | None = None) -> AttachReport:
  """Writes ``target`` plus a ``split`` made of ``source``'s held-out questions.

  Args:
    target: the community directory that lacks ``split``.
    source: a community directory of the same dataset (same answer type).
    source_splits: the source splits to take candidates from, in order.
    split: the evaluation split to create ('test' or 'validation').
    out: where to write the result (default: ``target``, in place).

  Returns:
    The counts; the written directory's manifest lists ``split``.

  Raises:
    ValueError: ``split`` exists in the target or is not an evaluation split,
      the answer types differ, a source split is missing, or nothing is left.
  """
  if split not in EVAL_SPLITS:
    raise ValueError(f"split {split!r}: expected one of {EVAL_SPLITS} (train data comes from "
                     "the importers)")
  tgt = records_lib.load_community(target)
  src = records_lib.load_community(source)
  if split in tgt.records:
    raise ValueError(f"{tgt.directory}: already has a {split!r} split "
                     f"({len(tgt.records[split])} records)")
  if src.manifest.answer_type != tgt.manifest.answer_type:
    raise ValueError(f"{src.directory} has {src.manifest.answer_type!r} answers but "
                     f"{tgt.directory} {tgt.manifest.answer_type!r}")
  missing = [s for s in source_splits if s not in src.records]
  if missing or not source_splits:
    raise ValueError(f"{src.directory}: no split(s) {missing or list(source_splits)}; it has "
                     f"{sorted(src.records)}")
  in_target = {_key(r) for recs in tgt.records.values() for r in recs}
  seen: set[str] = set()
  attached, overlapping, duplicates = [], 0, 0
  for source_split in source_splits:
    for r in src.records[source_split]:
      key = _key(r)
      if key in in_target:
        overlapping += 1
        continue
      if key in seen:
        duplicates += 1
        continue
      seen.add(key)
      attached.append(records_lib.TraceRecord(
          id=assembly.stable_id(key, split), community=tgt.name, split=split,
          question=r.question, answer=r.answer, answer_type=r.answer_type, rationales={},
          choices=r.choices, teacher=r.teacher,
          provenance=dict(r.provenance, attached_from={
              "community": src.name, "split": source_split, "id": r.id})))
  if not attached:
    raise ValueError(f"no {src.name} question is left for {tgt.name}/{split}: all "
                     f"{overlapping} are in other {tgt.name} splits")
  manifest = dataclasses.replace(
      tgt.manifest, splits=dict(tgt.manifest.splits, **{split: f"{split}.jsonl"}),
      description=f"{tgt.manifest.description}; {split}: {len(attached)} held-out questions of "
                  f"{src.name} ({', '.join(source_splits)})")
  records = dict(tgt.records, **{split: attached})
  records_lib.write_community(out if out is not None else tgt.directory, manifest, records)
  return AttachReport(community=tgt.name, split=split, source=src.name,
                      candidates={s: len(src.records[s]) for s in source_splits},
                      attached=len(attached), overlapping=overlapping, duplicates=duplicates)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI; returns the exit status (1 with a message on bad input)."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.data.attach_split",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--target", required=True, help="community directory lacking the split")
  parser.add_argument("--source", required=True, help="community directory of the same dataset")
  parser.add_argument("--source_splits", required=True,
                      help="comma-separated source splits to take questions from")
  parser.add_argument("--split", default="test", choices=EVAL_SPLITS)
  parser.add_argument("--out", default=None, help="output directory (default: --target)")
  args = parser.parse_args(argv)
  try:
    report = attach_split(args.target, args.source, split=args.split, out=args.out,
                          source_splits=[s.strip() for s in args.source_splits.split(",")
                                         if s.strip()])
  except (ValueError, OSError) as e:  # RecordError is a ValueError.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
