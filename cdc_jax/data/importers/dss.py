"""Importer for google-research/distilling-step-by-step datasets.

Per dataset folder (``cqa/``, ``svamp/``): ``{name}_{train,test}.json`` are
JSON Lines split files, and ``llm/{split}_CoT_{N}.json`` JSON arrays of raw
PaLM-540B few-shot continuations aligned by index with the split file, in
chunks of the upstream loader's batch size (1,000 for cqa, 500 for svamp).
A continuation runs on into the next few-shot question, so it is cut at the
next ``Q:``; the rationale is what precedes 'So the answer is'
(CommonsenseQA) or 'The answer is' (SVAMP).

CommonsenseQA items: ``id``, ``question``, ``choices``, ``answer`` (a choice
text). SVAMP items: ``input``, ``label`` (an arithmetic expression such as
``( 84.0 / 2.0 )``), and the teacher answers with an expression too
('The answer is (84 / 2).'), so both are evaluated.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from pathlib import Path

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data.importers import assembly
from cdc_jax.data.importers import sources

UPSTREAM = "google-research/distilling-step-by-step"
UPSTREAM_URL = "https://github.com/google-research/distilling-step-by-step"
LICENSE = "Apache-2.0"
TEACHER = "palm-540b"


@dataclasses.dataclass(frozen=True)
class DssDataset:
  """One dataset folder.

  Attributes:
    answer_type: the answer type of its questions.
    data_license: the license of its questions (the repository is Apache-2.0).
    chunk: continuations per ``llm/{split}_CoT_N.json`` file (upstream batch size).
  """
  answer_type: str
  data_license: str
  chunk: int


DATASETS = {
    "cqa": DssDataset("choice", "MIT (CommonsenseQA), BSD-3-Clause (CoS-E)", chunk=1000),
    "svamp": DssDataset("number", "MIT (SVAMP)", chunk=500),
}
_ALIASES = {"csqa": "cqa", "commonsenseqa": "cqa"}
_NEXT_QUESTION = re.compile(r"(?:^|\n)\s*Q:")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv}


def evaluate_expression(text: str) -> float | None:
  """The value of an arithmetic expression of numbers, + - * / and brackets.

  Returns None for anything else (names, calls, division by zero).

  >>> evaluate_expression("( ( 17.0 + 15.0 ) + 2.0 )")
  34.0
  >>> evaluate_expression("(84 / 2).")
  42.0
  >>> evaluate_expression("42 apples") is None
  True
  """
  text = text.strip().rstrip(".").replace("−", "-").replace("×", "*").replace("÷", "/")
  try:
    tree = ast.parse(text, mode="eval")
  except (SyntaxError, ValueError):
    return None

  def value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
      return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
      return _OPERATORS[type(node.op)](value(node.left), value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
    raise ValueError("not arithmetic")

  try:
    result = value(tree.body)
  except (ValueError, ZeroDivisionError, OverflowError):
    return None
  return result if math.isfinite(result) else None


def cut_continuation(text: str) -> str:
  """The teacher's answer to its own question: the continuation up to the next 'Q:'.

  >>> cut_continuation("It flies. So the answer is (a) bird.\\n\\nQ: Next? A: ...")
  'It flies. So the answer is (a) bird.'
  """
  match = _NEXT_QUESTION.search(text)
  return (text[:match.start()] if match else text).strip()


def _teacher_answer(text: str, answer_type: str, choices: tuple[str, ...] | None) -> str | None:
  if answer_type == "number":
    # SVAMP's few-shot prompt answers with an expression: 'The answer is (84 / 2).'
    result = evaluate_expression(answers_lib.answer_segment(text))
    if result is not None:
      return answers_lib.format_number(result)
  return answers_lib.extract_answer(text, answer_type, choices)


def resolve_source(source: str | Path, dataset: str | None = None) -> tuple[str, Path]:
  """(dataset, folder) from a dataset folder (``dss/cqa``) or the root plus a name."""
  source = Path(source)
  if dataset is None:
    dataset = source.name
  name = _ALIASES.get(dataset.lower(), dataset.lower())
  if name not in DATASETS:
    raise ValueError(f"unknown dss dataset {dataset!r}: expected one of {sorted(DATASETS)} "
                     "(pass --dataset or a source folder named after it)")
  folder = source if (source / f"{name}_train.json").exists() else source / name
  if not (folder / f"{name}_train.json").exists():
    raise sources.SourceError(source, f"no {name}_train.json here or in {name}/")
  return name, folder


def _gold(item: sources.SourceItem, name: str, split: str) -> assembly.GoldQuestion:
  if name == "cqa":
    question = item.get("question")
    choices = item.get("choices", list)
    if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
      raise item.error("expected a non-empty list of non-empty strings", field="choices")
    choices = tuple(choices)
    answer = item.get("answer")
    if answer not in choices:
      raise item.error(f"{answer!r} is not among the choices {list(choices)}", field="answer")
    key = assembly.question_key(question, choices)
    record_id = item.get("id")
  else:
    question, choices = item.get("input"), None
    label = item.get("label")
    value = evaluate_expression(label)
    if value is None:
      raise item.error(f"{label!r} is not an arithmetic expression", field="label")
    answer = answers_lib.format_number(value)
    key = assembly.question_key(question)
    record_id = assembly.stable_id(key, split)
  return assembly.GoldQuestion(key=key, id=record_id, split=split, question=question.strip(),
                                   answer=answer, choices=choices, item=item)


def _continuations(folder: Path, split: str, expected: int,
                   chunk_size: int) -> list[sources.SourceItem]:
  """The llm/{split}_CoT_N.json items in order, checked to be ``chunk_size`` per file."""
  numbered = {}
  for path in folder.glob(f"llm/{split}_CoT_*.json"):
    match = re.fullmatch(rf"{split}_CoT_(\d+)\.json", path.name)
    if match is None:
      raise sources.SourceError(path, f"unexpected file name: expected {split}_CoT_<N>.json")
    numbered[int(match.group(1))] = path
  if sorted(numbered) != list(range(len(numbered))):
    raise sources.SourceError(folder / "llm", f"{split}_CoT_N.json files should be numbered "
                              f"0..{len(numbered) - 1}, found {sorted(numbered)}")
  files = [numbered[n] for n in range(len(numbered))]
  items: list[sources.SourceItem] = []
  for number, path in enumerate(files):
    chunk = sources.read_json_array(path)
    last = number == len(files) - 1
    if (len(chunk) != chunk_size and not last) or len(chunk) > chunk_size:
      raise sources.SourceError(path, f"holds {len(chunk)} continuations, expected {chunk_size} "
                                "(files are aligned with the split file by index)")
    for item in chunk:
      if not isinstance(item.data, str):
        raise item.error(f"expected a string (a raw continuation), got {type(item.data).__name__}")
    items.extend(chunk)
  if len(items) != expected:
    raise sources.SourceError(folder / "llm", f"{split}_CoT_*.json hold {len(items)} "
                              f"continuations but {folder.name}_{split}.json has {expected} items")
  return items


def import_dss(source: str | Path, *, community: str, dataset: str | None = None,
               keep: str = "all",
               level: int = names.FULL_COT_LEVEL) -> assembly.ImportedCommunity:
  """Imports one distilling-step-by-step dataset with its PaLM rationales.

  Args:
    source: the dataset folder (``dss/cqa``) or the root (``dss``) with ``dataset``.
    community: the community's name.
    dataset: 'cqa' or 'svamp' (default: the folder's name).
    keep: 'all', or 'correct' to keep only rationales with the gold answer.
    level: the level the (single) rationale is stored at (default: full CoT).

  Returns:
    The community with train and test splits, both with rationales.
  """
  name, folder = resolve_source(source, dataset)
  names.validate_level(level)
  spec = DATASETS[name]
  questions, traces, traced = [], [], {}
  for split in ("train", "test"):
    path = folder / f"{name}_{split}.json"
    if not path.exists():
      continue
    items = sources.read_json_lines(path)
    gold = [_gold(item, name, split) for item in items]
    questions += gold
    if not (folder / "llm").is_dir() or not list(folder.glob(f"llm/{split}_CoT_*.json")):
      continue
    traced[split] = (level,)
    for question, item in zip(gold, _continuations(folder, split, len(items), spec.chunk)):
      text = cut_continuation(item.data)
      traces.append(assembly.LevelTrace(
          key=question.key, split=split, level=level,
          rationale=assembly.strip_answer_sentence(text),
          teacher_answer=_teacher_answer(text, spec.answer_type, question.choices), item=item))
  return assembly.assemble(
      questions, traces, community=community, answer_type=spec.answer_type, teacher=TEACHER,
      keep=keep,
      provenance={"source": UPSTREAM, "upstream": UPSTREAM_URL, "license": LICENSE,
                  "data_license": spec.data_license, "teacher": TEACHER, "dataset": name,
                  "importer": "dss"},
      description=f"{name} with {TEACHER} few-shot CoT (level {level}) from {UPSTREAM}"
                  + (" (teacher-correct rationales only)" if keep == "correct" else ""),
      community_license=LICENSE, title=f"dss/{name}, teacher {TEACHER}, keep={keep}",
      traced_levels=traced)
