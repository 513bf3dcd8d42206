"""Importer for the official GSM8K release (openai/grade-school-math).

``train.jsonl`` and ``test.jsonl`` hold ``{"question", "answer"}``, where
``answer`` is the human solution with calculator notes (``<<48/2=24>>``) and a
last line ``#### N``. The solution without the notes and without the
``#### N`` line is the human rationale; N is the gold answer, and also the
answer the human solution states (``teacher_answer``).
"""

from __future__ import annotations

import re
from pathlib import Path

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data.importers import assembly
from cdc_jax.data.importers import sources

UPSTREAM = "openai/grade-school-math"
UPSTREAM_URL = "https://github.com/openai/grade-school-math"
LICENSE = "MIT"
TEACHER = "human"
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_FINAL = "####"


def human_rationale(solution: str) -> str:
  """The solution without calculator notes and the final ``#### N`` line.

  >>> human_rationale("Sold 48/2 = <<48/2=24>>24.\\nSo 48+24 = <<48+24=72>>72.\\n#### 72")
  'Sold 48/2 = 24. So 48+24 = 72.'
  """
  body = solution.rsplit(_FINAL, 1)[0]
  body = _CALCULATOR_NOTE.sub("", body)
  return " ".join(line.strip() for line in body.splitlines() if line.strip())


def _read(path: Path, split: str, level: int) -> tuple[list[assembly.GoldQuestion],
                                                        list[assembly.LevelTrace]]:
  questions, traces = [], []
  for item in sources.read_json_lines(path):
    question = item.get("question").strip()
    solution = item.get("answer")
    if _FINAL not in solution:
      raise item.error(f"no '{_FINAL} N' line in the solution", field="answer")
    answer = answers_lib.normalize_answer(solution.rsplit(_FINAL, 1)[1], "number")
    if answer is None:
      raise item.error(f"no number after '{_FINAL}'", field="answer")
    key = assembly.question_key(question)
    questions.append(assembly.GoldQuestion(
        key=key, id=assembly.stable_id(key, split), split=split, question=question,
        answer=answer, choices=None, item=item))
    traces.append(assembly.LevelTrace(
        key=key, split=split, level=level, rationale=human_rationale(solution),
        teacher_answer=answers_lib.extract_answer(solution, "number"), item=item))
  return questions, traces


def import_gsm8k(source: str | Path, *, community: str, keep: str = "all",
                 level: int = names.FULL_COT_LEVEL) -> assembly.ImportedCommunity:
  """Imports official GSM8K (train 7,473 / test 1,319) with human rationales.

  Args:
    source: the folder with ``train.jsonl`` and ``test.jsonl``.
    community: the community's name.
    keep: 'all' or 'correct' (the same here: the human answer is the gold one).
    level: the level the human rationale is stored at (default: full CoT).
  """
  names.validate_level(level)
  assembly.check_keep(keep)
  source = Path(source)
  questions, traces, traced = [], [], {}
  for split in ("train", "test"):
    path = source / f"{split}.jsonl"
    if split == "train" or path.exists():
      q, t = _read(path, split, level)
      questions += q
      traces += t
      traced[split] = (level,)
  return assembly.assemble(
      questions, traces, community=community, answer_type="number", teacher=TEACHER, keep=keep,
      provenance={"source": UPSTREAM, "upstream": UPSTREAM_URL, "license": LICENSE,
                  "teacher": TEACHER, "dataset": "gsm8k", "importer": "gsm8k"},
      description=f"GSM8K with its human solutions (level {level}) from {UPSTREAM}",
      community_license=LICENSE, title=f"gsm8k (official), teacher {TEACHER}, keep={keep}",
      traced_levels=traced)
