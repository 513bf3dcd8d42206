r"""Verifies the launcher's output against its input and writes it as a community.

  python -m cdc_jax.teacher.verify --out=/tmp/traces/strategy \
      --input=/tmp/cdc_communities/strategy [--splits=train,test] \
      [--write_community=/tmp/traced/strategy]

Checks every shard ``traces-SSSSS-of-NNNNN``: it is finalised, its records
load (schema), ids are unique across shards and each sits in the shard its id
is dealt to, records plus reported failures are exactly the shard's input
questions (same split, question and gold answer), and every record has the
levels the run asked for. Prints counts, teacher accuracy against the gold
answers and the mean rationale length (words) per level. Exit status 1 if
anything is wrong or a shard is missing. With ``--write_community`` a
verified output becomes a community directory for ``register_community``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.teacher import prompts, shards
from cdc_jax.teacher import questions as questions_lib

_MAX_ERRORS_PER_SHARD = 20


@dataclasses.dataclass
class VerifyReport:
  """What :func:`verify_output` found."""
  out_dir: Path
  num_shards: int
  expected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  failures: list[shards.Failure] = dataclasses.field(default_factory=list)
  missing: list[int] = dataclasses.field(default_factory=list)
  errors: list[str] = dataclasses.field(default_factory=list)
  levels: tuple[int, ...] = ()
  community: str = ""
  teacher: str = ""
  correct: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  no_answer: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  words: dict[int, list[int]] = dataclasses.field(default_factory=dict)
  stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def ok(self) -> bool:
    """Every shard is there and nothing is wrong."""
    return not self.errors and not self.missing

  def mean_words(self) -> dict[int, float]:
    """Mean rationale length in words, per level."""
    return {level: sum(w) / len(w) for level, w in sorted(self.words.items()) if w}

  def accuracy(self, split: str) -> float | None:
    """Teacher accuracy against gold on ``split`` (None without records)."""
    n = self.records[split]
    return self.correct[split] / n if n else None

  def __str__(self) -> str:
    total, got = sum(self.expected.values()), sum(self.records.values())
    lines = [f"traces in {self.out_dir}: {self.num_shards} shard(s), community "
             f"{self.community or '?'}, teacher {self.teacher or '?'}, levels "
             f"{list(self.levels)}: {got} records + {len(self.failures)} failures of "
             f"{total} questions"]
    failed = collections.Counter(f.split for f in self.failures)
    for split in sorted(self.expected, key=records_lib.SPLITS.index):
      acc = self.accuracy(split)
      acc_text = ("n/a" if acc is None
                  else f"{100 * acc:.1f}% ({self.correct[split]}/{self.records[split]})")
      lines.append(f"  {split}: {self.records[split]} records of {self.expected[split]} questions, "
                   f"{failed[split]} failures; teacher accuracy {acc_text}, no answer parsed "
                   f"{self.no_answer[split]}")
    if self.words:
      lines.append("  mean rationale words: " + "  ".join(
          f"L{level} {mean:.1f}" for level, mean in self.mean_words().items()))
    if self.stats:
      s = self.stats
      lines.append(f"  generation: {int(s['requests'])} requests, {int(s['completion_tokens'])} "
                   f"tokens generated, {int(s['truncated'])} cut at max_new_tokens, "
                   f"{s['seconds']:.1f} s")
    reasons = collections.Counter(f.reason for f in self.failures)
    if reasons:
      lines.append("  failures: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    if self.missing:
      lines.append(f"  MISSING shards (not finalised): {self.missing}")
    lines += [f"  ERROR {e}" for e in self.errors]
    lines.append("OK" if self.ok else "FAILED")
    return "\n".join(lines)


def _num_shards(out_dir: Path, num_shards: int | None) -> int:
  found = shards.find_shards(out_dir)
  if num_shards is None:
    if len(found) != 1:
      raise ValueError(f"{out_dir}: expected shard files of one run (traces-SSSSS-of-NNNNN.*), "
                       f"found shard counts {sorted(found) or 'none'}; pass num_shards")
    return next(iter(found))
  others = sorted(set(found) - {num_shards})
  if others:
    raise ValueError(f"{out_dir}: holds shards of runs with {others} shards besides "
                     f"{num_shards}; one output directory per run")
  return num_shards


def _check_shard(report: VerifyReport, out_dir: Path, index: int, questions: questions_lib.Questions,
                 by_id: dict[str, records_lib.TraceRecord], assignment: dict[str, int],
                 seen: set[str], levels: Sequence[int] | None) -> list[records_lib.TraceRecord]:
  stem = shards.shard_stem(index, report.num_shards)
  errors: list[str] = []
  meta = shards.read_meta(out_dir, index, report.num_shards)
  config = meta["config"]
  wanted = tuple(sorted(levels if levels is not None else config["levels"]))
  if report.levels and wanted != report.levels:
    errors.append(f"{stem}: levels {list(wanted)} differ from other shards' {list(report.levels)}")
  report.levels = report.levels or wanted
  report.community, report.teacher = config["community"], config["teacher"]
  path = out_dir / f"{stem}.jsonl"
  try:
    recs = records_lib.read_records(path, community=config["community"],
                                     answer_type=questions.answer_type, seen_ids=seen)
  except records_lib.RecordError as e:
    report.errors.append(str(e))
    return []
  expected = {i for i, shard in assignment.items() if shard == index}
  failures = [shards.Failure.from_json(f) for f in meta["failures"]]
  for line, r in enumerate(recs, start=1):
    where = f"{path}:{line}: record {r.id!r}"
    source = by_id.get(r.id)
    if source is None:
      errors.append(f"{where}: not in the input")
      continue
    if r.id not in expected:
      errors.append(f"{where}: belongs in shard {assignment[r.id]}")
    for field in ("split", "question", "answer", "choices"):
      if getattr(r, field) != getattr(source, field):
        errors.append(f"{where}: {field} {getattr(r, field)!r} differs from the input's "
                      f"{getattr(source, field)!r}")
    if tuple(sorted(r.rationales)) != wanted:
      errors.append(f"{where}: levels {sorted(r.rationales)}, expected {list(wanted)}")
    report.records[r.split] += 1
    report.correct[r.split] += int(bool(r.teacher_correct))
    report.no_answer[r.split] += int(r.teacher_answer is None)
    for level, text in r.rationales.items():
      report.words.setdefault(level, []).append(prompts.word_count(text))
  record_ids = {r.id for r in recs}
  failed_ids = [f.id for f in failures]
  for f in failures:
    if f.id not in expected:
      errors.append(f"{stem}.meta.json: failure of {f.id!r}, not a question of this shard")
  if len(set(failed_ids)) != len(failed_ids) or record_ids & set(failed_ids):
    errors.append(f"{stem}: ids both traced and failed, or failed twice")
  absent = expected - record_ids - set(failed_ids)
  if absent:
    errors.append(f"{stem}: {len(absent)} input questions neither traced nor failed, e.g. "
                  f"{sorted(absent)[:3]}")
  if meta["records"] != len(recs):
    errors.append(f"{stem}: meta says {meta['records']} records, the file holds {len(recs)}")
  report.failures += failures
  report.stats.update({k: v for k, v in meta.get("stats", {}).items()})
  report.errors += errors[:_MAX_ERRORS_PER_SHARD]
  if len(errors) > _MAX_ERRORS_PER_SHARD:
    report.errors.append(f"{stem}: ... and {len(errors) - _MAX_ERRORS_PER_SHARD} more errors")
  return recs


def verify_output(out_dir: str | Path, questions: questions_lib.Questions, *,
                  num_shards: int | None = None,
                  levels: Sequence[int] | None = None) -> VerifyReport:
  """Checks the launcher's output in ``out_dir`` against ``questions`` (see module docstring).

  ``levels`` overrides the levels each shard's run asked for.
  """
  report, _ = _verify(Path(out_dir), questions, num_shards=num_shards, levels=levels)
  return report


def _verify(out_dir: Path, questions: questions_lib.Questions, *, num_shards: int | None,
            levels: Sequence[int] | None) -> tuple[VerifyReport, list[records_lib.TraceRecord]]:
  if levels is not None:
    for level in levels:
      names.validate_level(level)
  report = VerifyReport(out_dir=out_dir, num_shards=_num_shards(out_dir, num_shards))
  report.expected.update(r.split for r in questions.records)
  by_id = {r.id: r for r in questions.records}
  assignment = shards.shard_assignment(by_id, report.num_shards)
  seen: set[str] = set()
  recs = []
  for index in range(report.num_shards):
    if not (out_dir / f"{shards.shard_stem(index, report.num_shards)}.jsonl").is_file():
      report.missing.append(index)
      continue
    recs += _check_shard(report, out_dir, index, questions, by_id, assignment, seen,
                         levels)
  return report, recs


def write_output_community(out_dir: str | Path, questions: questions_lib.Questions,
                           dest: str | Path, *, report: VerifyReport | None = None) -> Path:
  """Writes the verified traces as a community directory at ``dest``; returns its manifest path.

  Records keep the input's order; every input split gets a file (possibly
  empty if all its questions failed).
  """
  full, recs = _verify(Path(out_dir), questions, num_shards=report.num_shards if report else None,
                       levels=report.levels if report else None)
  if not full.ok:
    raise ValueError(f"not writing a community from output that does not verify:\n{full}")
  order = {r.id: i for i, r in enumerate(questions.records)}
  splits = [s for s in records_lib.SPLITS if full.expected[s]]
  by_split: dict[str, list[records_lib.TraceRecord]] = {s: [] for s in splits}
  for r in sorted(recs, key=lambda r: order[r.id]):
    by_split[r.split].append(r)
  manifest = records_lib.CommunityManifest(
      name=full.community, answer_type=questions.answer_type, license=questions.license,
      description=f"{questions.description} Rationales by teacher {full.teacher} "
                  "(cdc_jax.teacher.launch).",
      splits={s: f"{s}.jsonl" for s in splits}, levels=full.levels, teacher=full.teacher)
  return records_lib.write_community(dest, manifest, by_split)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.teacher.verify",
                                   description=__doc__.split("\n")[0])
  questions_lib.add_input_flags(parser)
  parser.add_argument("--out", required=True, help="the launcher's output directory")
  parser.add_argument("--num_shards", type=int, default=None, help="default: from the file names")
  parser.add_argument("--levels", type=questions_lib.parse_levels, default=None,
                      help="levels every record must have (default: what the run asked for)")
  parser.add_argument("--write_community", default=None,
                      help="if verified, write the traces as a community directory here")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Verifies; returns 0 if the output is complete and sound, else 1."""
  args = parse_args(argv)
  try:
    questions = questions_lib.load_questions(args.input, splits=args.splits)
    report = verify_output(args.out, questions, num_shards=args.num_shards, levels=args.levels)
    print(report)
    if report.ok and args.write_community:
      path = write_output_community(args.out, questions, args.write_community, report=report)
      print(f"wrote {path}")
  except (records_lib.RecordError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
