"""Joining gold questions with teacher rationales into community records.

Every importer reduces its published format to two lists: gold questions
(:class:`GoldQuestion`, one per question and split) and teacher rationales
(:class:`LevelTrace`, one per question, split and level). :func:`assemble`
joins them by normalised question text, never by position, and counts
everything it does not turn into a record in an :class:`ImportReport`:
questions absent from a level, traces without a gold question, duplicates
merged, rationales dropped by ``keep='correct'`` and questions skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import unicodedata
from typing import Any, Collection, Iterable, Mapping, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.data.importers.sources import SourceError, SourceItem
from cdc_jax.answers import strip_answer_sentence  # Re-exported for the importers.

KEEP_CHOICES = ("all", "correct")

# Cyrillic letters that published copies use in place of Latin look-alikes
# (a gsm8k question starts with a Cyrillic 'А' in one file, a Latin 'A' in another).
_HOMOGLYPHS = str.maketrans("АВЕКМНОРСТХаеорсухіІ", "ABEKMHOPCTXaeopcyxiI")
_WORD = re.compile(r"\w+")


def question_key(question: str, choices: Sequence[str] | None = None) -> str:
  """Normalised question text that joins files of one dataset.

  Case, spacing, punctuation and look-alike letters do not matter; for a
  multiple-choice question the choices are part of the key.

  >>> question_key('The Eat "N Go sells for$ 4.') == question_key("the Eat 'N Go sells for $4")
  True
  >>> question_key("Where?", ["a park", "b"])
  'where || a park | b'
  """
  def words(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS).casefold()
    return " ".join(_WORD.findall(text))

  key = words(question)
  if choices:
    key += " || " + " | ".join(words(c) for c in choices)
  return key


def stable_id(key: str, split: str) -> str:
  """A record id that depends only on the split and the normalised question.

  The split is part of it so that a question repeated in train and test
  (reported as a note) still gets two ids.

  >>> stable_id("are bats mammals", "train")
  'train-8bca251b696c48f2'
  """
  digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
  return f"{split}-{digest}"


@dataclasses.dataclass(frozen=True)
class GoldQuestion:
  """A question with its gold answer, read from one source item.

  Attributes:
    key: :func:`question_key` of the question (and choices).
    id: the record id (upstream id, or :func:`stable_id` of the key).
    split: 'train', 'validation' or 'test'.
    question: the question text (without choices).
    answer: the canonical gold answer (a choice text for 'choice').
    choices: the options of a multiple-choice question, else None.
    item: where it was read.
  """
  key: str
  id: str
  split: str
  question: str
  answer: str
  choices: tuple[str, ...] | None
  item: SourceItem


@dataclasses.dataclass(frozen=True)
class LevelTrace:
  """One teacher rationale for one question at one level.

  Attributes:
    key: :func:`question_key` of its question.
    split: the split of its question.
    level: granularity level 1..6.
    rationale: the rationale without the final answer sentence (may be empty).
    teacher_answer: the answer parsed from the teacher's text, None if none.
    item: where it was read.
  """
  key: str
  split: str
  level: int
  rationale: str
  teacher_answer: str | None
  item: SourceItem


def _counters() -> collections.defaultdict:
  return collections.defaultdict(collections.Counter)


@dataclasses.dataclass
class ImportReport:
  """Counts of an import; printed as the import summary.

  Attributes:
    community, title: what was imported.
    items: split -> gold items read (duplicates included).
    questions: split -> distinct gold questions (duplicates merged).
    records: split -> records made.
    rationales: split -> level -> rationales in the records.
    traces: split -> level -> teacher traces matched to a gold question.
    correct: split -> level -> matched traces whose parsed answer is the gold one.
    unparsed: split -> level -> matched traces with no parsable answer.
    absent: split -> level -> questions without a trace at that level.
    unmatched: split -> level -> traces whose question has no gold answer.
    empty: split -> level -> traces with an answer but no rationale text.
    dropped: split -> level -> wrong rationales dropped by keep='correct'.
    skipped: (split, reason) -> questions that became no record.
    duplicates: file name -> items repeating an earlier item's question (merged).
    notes: other facts worth a line (no test split, leaked questions, ...).
  """
  community: str
  title: str
  items: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  questions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  rationales: collections.defaultdict = dataclasses.field(default_factory=_counters)
  traces: collections.defaultdict = dataclasses.field(default_factory=_counters)
  correct: collections.defaultdict = dataclasses.field(default_factory=_counters)
  unparsed: collections.defaultdict = dataclasses.field(default_factory=_counters)
  absent: collections.defaultdict = dataclasses.field(default_factory=_counters)
  unmatched: collections.defaultdict = dataclasses.field(default_factory=_counters)
  empty: collections.defaultdict = dataclasses.field(default_factory=_counters)
  dropped: collections.defaultdict = dataclasses.field(default_factory=_counters)
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  duplicates: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  notes: list[str] = dataclasses.field(default_factory=list)

  def teacher_accuracy(self, split: str, level: int) -> float | None:
    """Fraction of the level's matched traces whose parsed answer is the gold one."""
    total = self.traces[split][level]
    return self.correct[split][level] / total if total else None

  def __str__(self) -> str:
    total = sum(self.records.values())
    lines = [f"community {self.community} ({self.title}): {total} records"]
    for split in records_lib.SPLITS:
      if not self.questions[split]:
        continue
      have = " ".join(f"L{k}={v}" for k, v in sorted(self.rationales[split].items()))
      lines.append(f"  {split}: {self.records[split]} records of {self.questions[split]} "
                   f"questions ({self.items[split]} items); rationales {have or 'none'}")
      accuracy = [f"L{level} {self.correct[split][level] / n:.1%} "
                  f"({self.correct[split][level]}/{n}, {self.unparsed[split][level]} unparsed)"
                  for level, n in sorted(self.traces[split].items()) if n]
      if accuracy:
        lines.append("    teacher accuracy: " + "; ".join(accuracy))
      for label, table in (("questions absent", self.absent), ("traces without a gold "
                           "question", self.unmatched), ("empty rationales", self.empty),
                           ("wrong rationales dropped (keep=correct)", self.dropped)):
        counts = [f"L{level}: {n} {label}" for level, n in sorted(table[split].items()) if n]
        if counts:
          lines.append("    " + "; ".join(counts))
    for (split, reason), n in sorted(self.skipped.items()):
      lines.append(f"  skipped: {n} {split} questions: {reason}")
    for source, n in sorted(self.duplicates.items()):
      lines.append(f"  merged duplicates: {source}: {n} items repeat an earlier question")
    lines.extend(f"  note: {note}" for note in self.notes)
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ImportedCommunity:
  """An imported community, ready for :func:`records.write_community`."""
  manifest: records_lib.CommunityManifest
  records: Mapping[str, tuple[records_lib.TraceRecord, ...]]
  report: ImportReport


def check_keep(keep: str) -> str:
  """Returns ``keep`` if it is 'all' or 'correct', else raises."""
  if keep not in KEEP_CHOICES:
    raise ValueError(f"unknown keep={keep!r}: expected one of {KEEP_CHOICES}")
  return keep


def _index_gold(questions: Iterable[GoldQuestion], answer_type: str, report: ImportReport
                ) -> tuple[dict[str, dict[str, GoldQuestion]], set[tuple[str, int]]]:
  """split -> key -> first question; and the (file, index) of merged duplicates."""
  gold: dict[str, dict[str, GoldQuestion]] = collections.defaultdict(dict)
  merged: set[tuple[str, int]] = set()
  for q in questions:
    report.items[q.split] += 1
    earlier = gold[q.split].get(q.key)
    if earlier is None:
      gold[q.split][q.key] = q
    elif answers_lib.answers_match(q.answer, earlier.answer, answer_type, q.choices):
      report.duplicates[q.item.path.name] += 1
      merged.add((str(q.item.path), q.item.index))
    else:
      raise q.item.error(f"repeats the question of {earlier.item.origin} with a different "
                         f"gold answer ({q.answer!r} vs {earlier.answer!r})")
  for split, by_key in gold.items():
    report.questions[split] = len(by_key)
  for split in ("validation", "test"):
    leaked = len(gold.get(split, {}).keys() & gold.get("train", {}).keys())
    if leaked:
      report.notes.append(f"{leaked} {split} questions also appear in train")
  return gold, merged


_Joined = dict[tuple[str, str], dict[int, tuple[LevelTrace, bool]]]


def _index_traces(traces: Iterable[LevelTrace], gold: Mapping[str, Mapping[str, GoldQuestion]],
                  answer_type: str, report: ImportReport, score: bool | Collection[int],
                  merged: set[tuple[str, int]]) -> _Joined:
  """(split, key) -> level -> (trace, teacher correct); counts unmatched, duplicates, scores."""
  joined: _Joined = collections.defaultdict(dict)
  for t in traces:
    names.validate_level(t.level)
    question = gold.get(t.split, {}).get(t.key)
    if question is None:
      report.unmatched[t.split][t.level] += 1
      continue
    levels = joined[(t.split, t.key)]
    if t.level in levels:
      if (str(t.item.path), t.item.index) not in merged:  # Else counted with the gold item.
        report.duplicates[t.item.path.name] += 1
      continue
    correct = answers_lib.answers_match(t.teacher_answer, question.answer, answer_type,
                                        question.choices)
    levels[t.level] = (t, correct)
    if score is True or (score and t.level in score):
      report.traces[t.split][t.level] += 1
      report.unparsed[t.split][t.level] += int(t.teacher_answer is None)
      report.correct[t.split][t.level] += int(correct)
  return joined


def _make_record(q: GoldQuestion, levels: Mapping[int, tuple[LevelTrace, bool]], *,
                 needs_rationale: bool, keep: str, common: Mapping[str, Any], report: ImportReport
                 ) -> records_lib.TraceRecord | None:
  """The record of one question, or None (counted in ``report.skipped``)."""
  split = q.split
  rationales, teacher_answers, origins, dropped = {}, {}, {"gold": q.item.origin}, []
  for level, (t, correct) in sorted(levels.items()):
    if not t.rationale.strip():
      report.empty[split][level] += 1
    elif keep == "correct" and not correct:
      report.dropped[split][level] += 1
      dropped.append(level)
    else:
      rationales[level] = t.rationale
      origins[f"L{level}"] = t.item.origin
      if t.teacher_answer is not None:
        teacher_answers[str(level)] = t.teacher_answer
  if needs_rationale and not rationales:
    reason = ("no correct rationale at any level" if dropped else
              "no rationale at any level" if not levels else "only empty rationales")
    report.skipped[(split, reason)] += 1
    return None
  provenance = dict(common["provenance"], items=origins)
  if teacher_answers:
    provenance["teacher_answers"] = teacher_answers
  if dropped:
    provenance["dropped_levels"] = dropped
  try:
    return records_lib.TraceRecord(
        id=q.id, community=common["community"], split=split, question=q.question,
        answer=q.answer, answer_type=common["answer_type"], rationales=rationales,
        choices=q.choices, teacher=common["teacher"],
        # The record's teacher answer is that of its most detailed rationale.
        teacher_answer=levels[max(rationales)][0].teacher_answer if rationales else None,
        provenance=provenance)
  except ValueError as e:  # A schema error: point at the source item.
    raise q.item.error(f"cannot make a record: {e}") from None


def assemble(questions: Iterable[GoldQuestion], traces: Iterable[LevelTrace], *,
             community: str, answer_type: str, teacher: str, keep: str,
             provenance: Mapping[str, Any], description: str, community_license: str,
             title: str, traced_levels: Mapping[str, Sequence[int]],
             score_teacher: bool | Collection[int] = True) -> ImportedCommunity:
  """Joins gold questions and traces into records, counting what is left out.

  Args:
    questions: gold questions of all splits.
    traces: teacher rationales of all splits and levels.
    community: the community's name.
    answer_type: 'boolean', 'choice', 'number' or 'text'.
    teacher: who wrote the rationales.
    keep: 'all', or 'correct' to drop each rationale whose teacher answer is
      not the gold one (unparsed counts as wrong).
    provenance: shared by every record (at least 'source' and 'license');
      each record adds the items it came from ('items'), its teacher answers
      per level and the levels ``keep`` dropped.
    description, community_license: for the manifest.
    title: what the report calls this import.
    traced_levels: split -> levels read for it (questions without a level
      are counted as absent). Train questions need at least one rationale;
      evaluation splits keep every question, with whatever rationales it
      has (none for test files without teacher text).
    score_teacher: False where rationales state no answer (StrategyQA facts):
      the report then gives no teacher accuracy; or the levels to score.

  Returns:
    The community: manifest, records per split (in input order; a record's
    ``teacher_answer`` is that of its most detailed level) and report.
  """
  check_keep(keep)
  report = ImportReport(community, title)
  gold, merged = _index_gold(questions, answer_type, report)
  joined = _index_traces(traces, gold, answer_type, report, score_teacher, merged)
  common = {"community": community, "answer_type": answer_type, "teacher": teacher,
            "provenance": provenance}
  out: dict[str, list[records_lib.TraceRecord]] = collections.defaultdict(list)
  ids: dict[str, GoldQuestion] = {}
  for split in records_lib.SPLITS:
    for key, q in gold.get(split, {}).items():
      levels = joined.get((split, key), {})
      for level in traced_levels.get(split, ()):
        if level not in levels:
          report.absent[split][level] += 1
      record = _make_record(q, levels, needs_rationale=split == "train", keep=keep,
                            common=common, report=report)
      if record is None:
        continue
      if q.id in ids:
        raise q.item.error(f"id {q.id!r} is also the id of {ids[q.id].item.origin}")
      ids[q.id] = q
      out[split].append(record)
      report.records[split] += 1
      report.rationales[split].update(record.rationales.keys())
  present = sorted({level for recs in out.values() for r in recs for level in r.rationales})
  manifest = records_lib.CommunityManifest(
      name=community, description=description, answer_type=answer_type,
      splits={split: f"{split}.jsonl" for split in records_lib.SPLITS if out.get(split)},
      license=community_license, levels=tuple(present), teacher=teacher)
  return ImportedCommunity(manifest, {s: tuple(r) for s, r in out.items() if r}, report)


def write_imported(directory: str, imported: ImportedCommunity) -> str:
  """Writes an imported community directory; returns the manifest's path."""
  path = records_lib.write_community(directory, imported.manifest, imported.records)
  return str(path)
