"""Importer for EIT-NLP/Distilling-CoT-Reasoning: teacher CoT at six levels.

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
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data.importers import assembly
from cdc_jax.data.importers import sources

UPSTREAM = "EIT-NLP/Distilling-CoT-Reasoning"
UPSTREAM_URL = "https://github.com/EIT-NLP/Distilling-CoT-Reasoning"
LICENSE = "Apache-2.0"
TEACHERS = {"llama": "llama-3-70b", "gemini": "gemini-1.5-flash"}


@dataclasses.dataclass(frozen=True)
class LeveledDataset:
  """The files of one dataset in the upstream folder.

  Attributes:
    prefix: level files are ``{prefix}_{teacher}_level{N}_ranked.json``.
    gold: the answer-only training file.
    test: the test file (``instruction``, ``label``), if upstream has one.
    answer_type: the dataset's answer type.
  """
  prefix: str
  gold: str
  test: str | None
  answer_type: str


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


def _question(item: sources.SourceItem, answer_type: str) -> tuple[str, tuple[str, ...] | None]:
  text = item.get("instruction")
  if answer_type != "choice":
    return _QUESTION_PREFIX.sub("", text).strip(), None
  try:
    return parse_choice_instruction(text)
  except ValueError as e:
    raise item.error(str(e), field="instruction") from None


def _gold(item: sources.SourceItem, field: str, split: str,
          spec: LeveledDataset) -> assembly.GoldQuestion:
  question, choices = _question(item, spec.answer_type)
  raw = item.get(field)
  answer = answers_lib.normalize_answer(raw, spec.answer_type, choices)
  if answer is None:
    raise item.error(f"{raw!r} is not a {spec.answer_type} answer", field=field)
  key = assembly.question_key(question, choices)
  return assembly.GoldQuestion(key=key, id=assembly.stable_id(key, split), split=split,
                                   question=question, answer=answer, choices=choices, item=item)


def _trace(item: sources.SourceItem, level: int, spec: LeveledDataset) -> assembly.LevelTrace:
  question, choices = _question(item, spec.answer_type)
  output = item.get("output", allow_empty=True)
  return assembly.LevelTrace(
      key=assembly.question_key(question, choices), split="train", level=level,
      rationale=assembly.strip_answer_sentence(output),
      teacher_answer=answers_lib.extract_answer(output, spec.answer_type, choices), item=item)


def resolve_dataset(dataset: str) -> str:
  """The canonical dataset name ('stqa' -> 'strategyqa'); raises if unknown."""
  name = _ALIASES.get(dataset.lower(), dataset.lower())
  if name not in DATASETS:
    raise ValueError(f"unknown leveled_cot dataset {dataset!r}: expected one of {sorted(DATASETS)}")
  return name


def level_files(source_dir: str | Path, *, dataset: str, teacher: str) -> dict[int, Path]:
  """Level -> file of one dataset and teacher found in ``source_dir``."""
  spec = DATASETS[resolve_dataset(dataset)]
  found = {}
  for path in Path(source_dir).glob(f"{spec.prefix}_{teacher}_level*_ranked.json"):
    match = re.fullmatch(rf"{re.escape(spec.prefix)}_{re.escape(teacher)}_level(\d+)_ranked\.json",
                         path.name)
    if match:
      found[names.validate_level(int(match.group(1)))] = path
  return dict(sorted(found.items()))


def import_leveled_cot(source_dir: str | Path, *, dataset: str, community: str,
                       teacher: str = "llama", keep: str = "all",
                       levels: Sequence[int] | None = None) -> assembly.ImportedCommunity:
  """Imports one dataset and teacher of the EIT-NLP leveled CoT data.

  Args:
    source_dir: the folder with the upstream JSON files.
    dataset: 'strategyqa' ('stqa'), 'csqa', 'gsm8k' or 'svamp'.
    community: the community's name.
    teacher: 'llama' (LLaMA-3-70B) or 'gemini' (Gemini-1.5-Flash; StrategyQA only).
    keep: 'all', or 'correct' to drop each rationale whose answer is wrong.
    levels: the levels to import (default: every level the teacher has).

  Returns:
    The community; its train split comes from the answer-only file joined
    with the level files, its test split (StrategyQA and CSQA) from the test
    file, without rationales.
  """
  name = resolve_dataset(dataset)
  spec = DATASETS[name]
  source_dir = Path(source_dir)
  if teacher not in TEACHERS:
    raise ValueError(f"unknown teacher {teacher!r}: expected one of {sorted(TEACHERS)}")
  available = level_files(source_dir, dataset=name, teacher=teacher)
  if not available:
    raise sources.SourceError(source_dir, f"no {spec.prefix}_{teacher}_level*_ranked.json files "
                              f"(dataset {name}, teacher {teacher})")
  wanted = sorted(set(levels)) if levels else list(available)
  missing = [level for level in wanted if level not in available]
  if missing:
    raise sources.SourceError(source_dir, f"no file for level(s) {missing} of {spec.prefix}_"
                              f"{teacher}: levels found {list(available)}")
  questions = [_gold(item, "output", "train", spec)
               for item in sources.read_json_array(source_dir / spec.gold)]
  if spec.test:
    questions += [_gold(item, "label", "test", spec)
                  for item in sources.read_json_array(source_dir / spec.test)]
  traces = [_trace(item, level, spec) for level in wanted
            for item in sources.read_json_array(available[level])]
  teacher_name = TEACHERS[teacher]
  imported = assembly.assemble(
      questions, traces, community=community, answer_type=spec.answer_type,
      teacher=teacher_name, keep=keep,
      provenance={"source": UPSTREAM, "upstream": UPSTREAM_URL, "license": LICENSE,
                  "teacher": teacher_name, "dataset": name, "importer": "leveled_cot"},
      description=(f"{name} with {teacher_name} CoT at levels {wanted} from {UPSTREAM}"
                   + (" (teacher-correct rationales only)" if keep == "correct" else "")),
      community_license=LICENSE,
      title=f"leveled_cot/{name}, teacher {teacher_name}, keep={keep}",
      traced_levels={"train": wanted})
  if not spec.test:
    imported.report.notes.append(f"{UPSTREAM} has no {name} test file: train split only")
  return imported
