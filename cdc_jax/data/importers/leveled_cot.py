"""Importer of leveled teacher CoT in the EIT-NLP/Distilling-CoT-Reasoning layout, any dataset.

The upstream ``data/`` folder holds, per dataset and teacher, one JSON array
per granularity level (``stqa_llama_level3_ranked.json``: level 1 = shortest,
6 = most detailed) of ``{"instruction", "output"}`` items, where ``output``
is the rationale ending in 'The answer is X'. Gold answers come from the
answer-only file (``strategyQA_onlyans.json``: ``output`` is the bare answer);
``csqa_test.json`` and ``strategyQA_test.json`` (``instruction``, ``label``)
are the test splits. Levels are joined to the gold file by normalised
question text; the files are not in the same order or of the same length.

CommonsenseQA instructions carry the choices in two styles:
``Q: ... Answer choices: A: x, B: y, ...`` in the training files and
``... Answer Choices:\\nA. x\\nB. y\\n...`` in ``csqa_test.json``.

The four upstream datasets are presets (their file names, answer types and
upstream provenance). Any other dataset in the same layout comes in by name:
``<name>_<teacher>_level<N>[_ranked].json`` level files, a ``<name>_onlyans.json``
gold file and an optional ``<name>_test.json`` are detected (or given), the
answer type and choice style are detected from the gold file (or given), and
its provenance, license and description come from the caller.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Mapping, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data.importers import assembly
from cdc_jax.data.importers import detect
from cdc_jax.data.importers import sources

UPSTREAM = "EIT-NLP/Distilling-CoT-Reasoning"
UPSTREAM_URL = "https://github.com/EIT-NLP/Distilling-CoT-Reasoning"
LICENSE = "Apache-2.0"
TEACHERS = {"llama": "llama-3-70b", "gemini": "gemini-1.5-flash"}


@dataclasses.dataclass(frozen=True)
class LeveledDataset:
  """The files of one dataset in the upstream folder.

  Attributes:
    prefix: level files are ``{prefix}_{teacher}_level{N}[_ranked].json``.
    gold: the answer-only training file (None: detect ``{prefix}_onlyans.json``).
    test: the test file (``instruction``, ``label``), if there is one.
    answer_type: the dataset's answer type (None: detect from the gold answers).
  """
  prefix: str
  gold: str | None
  test: str | None
  answer_type: str | None


DATASETS = {
    "strategyqa": LeveledDataset("stqa", "strategyQA_onlyans.json", "strategyQA_test.json",
                                 "boolean"),
    "csqa": LeveledDataset("csqa", "commonsenseQA_onlyans.json", "csqa_test.json", "choice"),
    "gsm8k": LeveledDataset("gsm8k", "gsm_train_onlyans.json", None, "number"),
    "svamp": LeveledDataset("SVAMP", "SVAMP_only_ans.json", None, "number"),
}
_ALIASES = {"stqa": "strategyqa", "cqa": "csqa", "commonsenseqa": "csqa"}

_CHOICES_HEADER = re.compile(r"\s*answer\s+choices\s*:", re.IGNORECASE)
_COMMA_CHOICE = re.compile(r"([A-Z]):\s*(.*)", re.DOTALL)
_LINE_CHOICE = re.compile(r"([A-Z])\.\s*(.*)")
_QUESTION_PREFIX = re.compile(r"^\s*Q:\s*")


def parse_choice_instruction(text: str) -> tuple[str, tuple[str, ...]]:
  """Splits a CommonsenseQA instruction into question and choices.

  >>> parse_choice_instruction("Q: Where? Answer choices: A: park, B: river bank, C: sea")
  ('Where?', ('park', 'river bank', 'sea'))
  >>> parse_choice_instruction("Where? Answer Choices:\\nA. park\\nB. river bank\\n")
  ('Where?', ('park', 'river bank'))

  Raises:
    ValueError: without an 'Answer choices:' part, or with labels that are
      not A, B, C, ... in order.
  """
  header = _CHOICES_HEADER.search(text)
  if header is None:
    raise ValueError("no 'Answer choices:' in the instruction")
  question = _QUESTION_PREFIX.sub("", text[:header.start()]).strip()
  body = text[header.end():]
  if body.lstrip(" \t").startswith("\n"):  # 'Answer Choices:\nA. x\nB. y'
    parts = [line.strip() for line in body.splitlines() if line.strip()]
    pattern = _LINE_CHOICE
  else:  # 'Answer choices: A: x, B: y'
    parts = [p.strip() for p in re.split(r",\s*(?=[A-Z]:\s)", body.strip())]
    pattern = _COMMA_CHOICE
  choices = []
  for expected, part in zip(map(chr, range(ord("A"), ord("Z") + 1)), parts):
    match = pattern.fullmatch(part)
    if match is None or match.group(1) != expected:
      raise ValueError(f"choice {len(choices) + 1} should be labelled {expected!r}: {part!r}")
    if not match.group(2).strip():
      raise ValueError(f"choice {expected} is empty")
    choices.append(match.group(2).strip())
  if len(choices) < 2:
    raise ValueError(f"expected at least two labelled choices, got {len(choices)}")
  if not question:
    raise ValueError("empty question before 'Answer choices:'")
  return question, tuple(choices)


CHOICE_STYLES = ("auto", "comma", "lines")


def _question(item: sources.SourceItem, answer_type: str,
              style: str = "auto") -> tuple[str, tuple[str, ...] | None]:
  text = item.get("instruction")
  if answer_type != "choice":
    return _QUESTION_PREFIX.sub("", text).strip(), None
  try:
    if style != "auto" and detect.choice_style(text) != style:
      raise ValueError(f"choices are not in the {style!r} style (detected "
                       f"{detect.choice_style(text)!r}; pass choice_style='auto')")
    return parse_choice_instruction(text)
  except ValueError as e:
    raise item.error(str(e), field="instruction") from None


def _gold(item: sources.SourceItem, field: str, split: str, answer_type: str,
          style: str) -> assembly.GoldQuestion:
  question, choices = _question(item, answer_type, style)
  raw = item.get(field)
  answer = answers_lib.normalize_answer(raw, answer_type, choices)
  if answer is None:
    raise item.error(f"{raw!r} is not a {answer_type} answer", field=field)
  key = assembly.question_key(question, choices)
  return assembly.GoldQuestion(key=key, id=assembly.stable_id(key, split), split=split,
                               question=question, answer=answer, choices=choices, item=item)


def _trace(item: sources.SourceItem, level: int, answer_type: str,
           style: str) -> assembly.LevelTrace:
  question, choices = _question(item, answer_type, style)
  output = item.get("output", allow_empty=True)
  return assembly.LevelTrace(
      key=assembly.question_key(question, choices), split="train", level=level,
      rationale=assembly.strip_answer_sentence(output),
      teacher_answer=answers_lib.extract_answer(output, answer_type, choices), item=item)


def resolve_dataset(dataset: str) -> str:
  """The canonical name of a preset ('stqa' -> 'strategyqa'), else ``dataset`` as given."""
  if not dataset or not dataset.strip():
    raise ValueError("leveled_cot needs a dataset name (the file-name prefix)")
  name = _ALIASES.get(dataset.lower(), dataset.lower())
  return name if name in DATASETS else dataset


def dataset_spec(dataset: str) -> LeveledDataset:
  """A preset's files, or the layout's defaults for any other dataset name."""
  name = resolve_dataset(dataset)
  return DATASETS.get(name) or LeveledDataset(prefix=name, gold=None, test=None, answer_type=None)


def _level_pattern(prefix: str, teacher: str) -> re.Pattern:
  return re.compile(rf"{re.escape(prefix)}_{re.escape(teacher)}_level(\d+)(?:_ranked)?\.json")


def detect_teachers(source_dir: str | Path, *, dataset: str) -> list[str]:
  """The teacher keys of ``<prefix>_<teacher>_level<N>[_ranked].json`` files in ``source_dir``."""
  prefix = dataset_spec(dataset).prefix
  pattern = re.compile(rf"{re.escape(prefix)}_(.+?)_level\d+(?:_ranked)?\.json")
  return sorted({m.group(1) for path in Path(source_dir).glob(f"{prefix}_*_level*.json")
                 if (m := pattern.fullmatch(path.name))})


def level_files(source_dir: str | Path, *, dataset: str, teacher: str) -> dict[int, Path]:
  """Level -> file of one dataset and teacher found in ``source_dir``.

  A level with both a ``_ranked`` and a plain file takes the ranked one
  (upstream's final version).
  """
  prefix = dataset_spec(dataset).prefix
  pattern = _level_pattern(prefix, teacher)
  found: dict[int, Path] = {}
  for path in sorted(Path(source_dir).glob(f"{prefix}_{teacher}_level*.json")):
    match = pattern.fullmatch(path.name)
    if match:
      level = names.validate_level(int(match.group(1)))
      if level not in found or path.stem.endswith("_ranked"):
        found[level] = path
  return dict(sorted(found.items()))


def _detect_gold(source_dir: Path, prefix: str) -> Path:
  candidates = sorted(p for p in source_dir.glob(f"{prefix}*.json")
                      if re.fullmatch(rf"{re.escape(prefix)}(?:_train)?_only_?ans\.json", p.name))
  if len(candidates) != 1:
    raise sources.SourceError(source_dir, f"expected one gold-answers file {prefix}_onlyans.json, "
                              f"found {[p.name for p in candidates]}: name it with gold_file "
                              "(--gold_file)")
  return candidates[0]


def _detect_answer_type(items: Sequence[sources.SourceItem]) -> str:
  has_choices = any(detect.has_choice_header(i.get("instruction")) for i in items)
  return detect.detect_answer_type((i.get("output") for i in items), has_choices=has_choices)


def import_leveled_cot(source_dir: str | Path, *, dataset: str, community: str,
                       teacher: str | None = None, keep: str = "all",
                       levels: Sequence[int] | None = None,
                       level_paths: Mapping[int, str | Path] | None = None,
                       gold_file: str | Path | None = None,
                       test_file: str | Path | None = None,
                       answer_type: str | None = None, choice_style: str = "auto",
                       teacher_name: str | None = None, source: str | None = None,
                       license: str | None = None,  # pylint: disable=redefined-builtin
                       description: str | None = None) -> assembly.ImportedCommunity:
  """Imports one dataset and teacher in the leveled CoT layout.

  Args:
    source_dir: the folder with the JSON files (relative file arguments are
      taken inside it).
    dataset: the file-name prefix: a preset ('strategyqa' ('stqa'), 'csqa',
      'gsm8k', 'svamp') or any other dataset's name.
    community: the community's name.
    teacher: the teacher key in the file names ('llama', 'gemini', ...;
      default: a preset's 'llama', else the one teacher the files show).
    keep: 'all', or 'correct' to drop each rationale whose answer is wrong.
    levels: the levels to import (default: every level the teacher has).
    level_paths: level -> file, instead of detecting the level files.
    gold_file: the answer-only training file (default: the preset's, or
      the detected ``<name>_onlyans.json``).
    test_file: the test file (``instruction``, ``label``) (default: the
      preset's, or ``<name>_test.json`` if present).
    answer_type: boolean|choice|number|text (default: the preset's, or
      detected from the gold file).
    choice_style: 'auto', or 'comma'/'lines' to insist on one style.
    teacher_name: who wrote the rationales (default: the preset teacher's
      full name, or the teacher key).
    source, license, description: provenance and manifest fields (default
      for presets: the upstream repository and its license; required
      license for any other dataset).

  Returns:
    The community; its train split comes from the gold file joined with the
    level files by normalised question, its test split from the test file,
    without rationales.
  """
  name = resolve_dataset(dataset)
  spec = dataset_spec(name)
  preset = name in DATASETS
  source_dir = Path(source_dir)
  if choice_style not in CHOICE_STYLES:
    raise ValueError(f"unknown choice_style {choice_style!r}: expected one of {CHOICE_STYLES}")
  if not preset and not license:
    raise ValueError(f"dataset {name!r} is not one of the presets {sorted(DATASETS)}: give the "
                     "license of its traces (--license)")
  if level_paths:
    available = {names.validate_level(int(level)): source_dir / path
                 for level, path in sorted(level_paths.items())}
    teacher = teacher or "custom"
  else:
    if teacher is None:
      found = detect_teachers(source_dir, dataset=name)
      teacher = "llama" if preset and "llama" in found else (found[0] if len(found) == 1 else None)
      if teacher is None:
        raise sources.SourceError(source_dir, f"no single teacher in the {spec.prefix}_<teacher>_"
                                  f"level<N>.json files (found {found}): pass teacher (--teacher)")
    available = level_files(source_dir, dataset=name, teacher=teacher)
  if not available:
    raise sources.SourceError(source_dir, f"no {spec.prefix}_{teacher}_level<N>[_ranked].json "
                              f"files (dataset {name}, teacher {teacher})")
  wanted = sorted(set(levels)) if levels else list(available)
  missing = [level for level in wanted if level not in available]
  if missing:
    raise sources.SourceError(source_dir, f"no file for level(s) {missing} of {spec.prefix}_"
                              f"{teacher}: levels found {list(available)}")
  gold_path = (source_dir / gold_file if gold_file else
               source_dir / spec.gold if spec.gold else _detect_gold(source_dir, spec.prefix))
  if test_file:
    test_path = source_dir / test_file
  elif spec.test:
    test_path = source_dir / spec.test
  elif not preset and (source_dir / f"{spec.prefix}_test.json").is_file():
    test_path = source_dir / f"{spec.prefix}_test.json"
  else:
    test_path = None
  gold_items = sources.read_json_array(gold_path)
  detected = answer_type is None and spec.answer_type is None
  answer_type = answer_type or spec.answer_type or _detect_answer_type(gold_items)
  answers_lib.check_answer_type(answer_type)
  questions = [_gold(item, "output", "train", answer_type, choice_style) for item in gold_items]
  if test_path is not None:
    questions += [_gold(item, "label", "test", answer_type, choice_style)
                  for item in sources.read_json_array(test_path)]
  traces = [_trace(item, level, answer_type, choice_style) for level in wanted
            for item in sources.read_json_array(available[level])]
  teacher_full = teacher_name or TEACHERS.get(teacher, teacher)
  provenance = {"source": source or (UPSTREAM if preset else str(source_dir.resolve())),
                "license": license or LICENSE, "teacher": teacher_full, "dataset": name,
                "importer": "leveled_cot"}
  if preset and not source:
    provenance["upstream"] = UPSTREAM_URL
  imported = assembly.assemble(
      questions, traces, community=community, answer_type=answer_type,
      teacher=teacher_full, keep=keep, provenance=provenance,
      description=description or (
          f"{name} with {teacher_full} CoT at levels {wanted} from {provenance['source']}"
          + (" (teacher-correct rationales only)" if keep == "correct" else "")),
      community_license=provenance["license"],
      title=f"leveled_cot/{name}, teacher {teacher_full}, keep={keep}",
      traced_levels={"train": wanted})
  if detected:
    styles = sorted({detect.choice_style(q.item.get("instruction")) for q in questions}
                    ) if answer_type == "choice" else []
    imported.report.notes.append(f"answer type {answer_type!r} detected from {gold_path.name}"
                                 + (f", choice style {styles}" if styles else ""))
  if test_path is None:
    imported.report.notes.append(f"no {name} test file: train split only")
  return imported
