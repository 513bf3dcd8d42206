"""Importer for the official StrategyQA release (eladsegal/strategyqa).

``train.json`` (2,061) and ``dev.json`` (229) are JSON arrays of items with
``qid``, ``question``, a boolean ``answer`` and the annotators' ``facts``.
The facts, joined, are the human rationale; they state no answer, so records
carry no ``teacher_answer``. The official test split has no answers, so
``dev.json`` serves as the ``test`` split.
"""

from __future__ import annotations

from pathlib import Path

from cdc_jax import names
from cdc_jax.data.importers import assembly
from cdc_jax.data.importers import sources

UPSTREAM = "eladsegal/strategyqa"
UPSTREAM_URL = "https://github.com/eladsegal/strategyqa"
LICENSE = "MIT"
TEACHER = "human"
SPLIT_FILES = {"train": "train.json", "test": "dev.json"}


def human_rationale(facts: list[str]) -> str:
  """The facts as one rationale.

  >>> human_rationale(["Bats are mammals. ", "Mammals nurse their young"])
  'Bats are mammals. Mammals nurse their young.'
  """
  sentences = [f.strip() for f in facts if f.strip()]
  return " ".join(s if s[-1] in ".!?" else s + "." for s in sentences)


def _read(path: Path, split: str, level: int) -> tuple[list[assembly.GoldQuestion],
                                                        list[assembly.LevelTrace]]:
  questions, traces = [], []
  for item in sources.read_json_array(path):
    question = item.get("question").strip()
    answer = "yes" if item.get("answer", bool) else "no"
    facts = item.get("facts", list)
    if not all(isinstance(f, str) for f in facts):
      raise item.error("expected a list of strings", field="facts")
    key = assembly.question_key(question)
    questions.append(assembly.GoldQuestion(
        key=key, id=item.get("qid"), split=split, question=question, answer=answer,
        choices=None, item=item))
    traces.append(assembly.LevelTrace(
        key=key, split=split, level=level, rationale=human_rationale(facts),
        teacher_answer=None, item=item))
  return questions, traces


def import_strategyqa(source: str | Path, *, community: str, keep: str = "all",
                      level: int = names.FULL_COT_LEVEL) -> assembly.ImportedCommunity:
  """Imports official StrategyQA with the annotators' facts as rationales.

  Args:
    source: the folder with ``train.json`` and ``dev.json``.
    community: the community's name.
    keep: only 'all': facts state no answer, so none can be checked.
    level: the level the facts are stored at (default: full CoT).
  """
  names.validate_level(level)
  if assembly.check_keep(keep) == "correct":
    raise ValueError("keep='correct' needs teacher answers; StrategyQA facts state none "
                     "(use keep='all')")
  source = Path(source)
  questions, traces = [], []
  for split, filename in SPLIT_FILES.items():
    q, t = _read(source / filename, split, level)
    questions += q
    traces += t
  imported = assembly.assemble(
      questions, traces, community=community, answer_type="boolean", teacher=TEACHER,
      keep=keep,
      provenance={"source": UPSTREAM, "upstream": UPSTREAM_URL, "license": LICENSE,
                  "teacher": TEACHER, "dataset": "strategyqa", "importer": "strategyqa"},
      description=f"StrategyQA with the annotators' facts as rationales (level {level}) "
                  f"from {UPSTREAM}",
      community_license=LICENSE,
      title=f"strategyqa (official), teacher {TEACHER}, keep={keep}",
      traced_levels={split: (level,) for split in SPLIT_FILES}, score_teacher=False)
  imported.report.notes.append("dev.json is the test split (the official test split has no "
                               "answers); facts state no answer: teacher accuracy does not apply")
  return imported
