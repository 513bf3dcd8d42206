"""The teacher prompts: a full chain of thought, then shorter summaries of it.

The launcher asks the teacher in two rounds (each one batch per chunk of
questions). First for the full CoT (level 6), ending in an answer sentence
that :func:`cdc_jax.answers.extract_answer` parses into ``teacher_answer``.
Then, for every lower level it makes, to shorten that CoT (without its answer
sentence, see :func:`cdc_jax.teacher.launch.rationale_text`) to the level's
word budget:

=====  ===========================================================
level  budget
=====  ===========================================================
6      the full CoT (not a summary)
5      about 60% of the full CoT's words (at least 8)
4      about 40 words
3      about 25 words
2      about 15 words
1      the one key step, about 8 words
=====  ===========================================================

Budgets are instructions, not cuts: a summary is kept as the teacher wrote
it, minus any answer sentence it adds. Both prompts go to the model as one
user message (the model's chat template adds its default system prompt).
Every record stores the templates, budgets and their hash in
``provenance["prompts"]`` so traces made with different prompts never mix
unnoticed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping, Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib

PROMPTS_VERSION = 2

COT_TEMPLATE = (
    "Answer the following question. Think step by step: write the reasoning as short "
    "sentences, then end with one sentence of the form \"The answer is X.\" where X is "
    "{answer_format}.\n\n"
    "Question: {question}{choices_block}")

SUMMARY_TEMPLATE = (
    "Question: {question}{choices_block}\n"
    "Explanation: {rationale}\n\n"
    "Shorten the explanation {budget}, keeping the steps that decide the answer. Reply with "
    "the shortened explanation only.")

# What X in "The answer is X." should look like, per answer type.
ANSWER_FORMATS = {
    "boolean": "yes or no",
    "choice": "the letter and text of one option",
    "number": "a number",
    "text": "a short phrase",
}

# Level -> words the summary should have; level 5 is a fraction of the full CoT.
WORD_BUDGETS: Mapping[int, int] = {4: 40, 3: 25, 2: 15, 1: 8}
LEVEL5_FRACTION = 0.6
MIN_WORDS = 8
# Tokens a summary may use per budgeted word (words are ~1.3 tokens), plus slack.
TOKENS_PER_WORD = 2
TOKEN_SLACK = 16
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True)
class Message:
  """One chat message (role 'system' or 'user')."""
  role: str
  content: str

  def to_json(self) -> dict[str, str]:
    """The OpenAI-style message object."""
    return {"role": self.role, "content": self.content}


def word_count(text: str) -> int:
  """Whitespace-separated words in ``text``."""
  return len(text.split())


def word_budget(level: int, full_cot: str) -> int:
  """The number of words a level-``level`` summary of ``full_cot`` should have (levels 1..5)."""
  names.validate_level(level)
  if level == names.FULL_COT_LEVEL:
    raise ValueError("level 6 is the full CoT: it has no summary budget")
  if level == 5:
    return max(MIN_WORDS, round(LEVEL5_FRACTION * word_count(full_cot)))
  return WORD_BUDGETS[level]


def budget_instruction(level: int, words: int) -> str:
  """The phrase of the summary prompt that states the budget."""
  if level == 1:
    return f"to its one key step, in about {words} words"
  return f"to about {words} words"


def summary_max_new_tokens(words: int, *, cap: int) -> int:
  """Tokens to allow a summary of ``words`` words: enough, never above ``cap``.

  Rounded up to a power of two so that requests of different budgets share a
  few values (a batched backend runs one batch per value).
  """
  need = math.ceil(words * TOKENS_PER_WORD) + TOKEN_SLACK
  return max(1, min(cap, 1 << (need - 1).bit_length()))


def _choices_block(choices: Sequence[str] | None) -> str:
  if not choices:
    return ""
  if len(choices) > len(_LETTERS):
    raise ValueError(f"{len(choices)} choices: at most {len(_LETTERS)} can be lettered")
  return "\nOptions:\n" + "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices))


def cot_messages(record: records_lib.TraceRecord) -> tuple[Message, ...]:
  """The messages asking for the full CoT of ``record``'s question."""
  text = COT_TEMPLATE.format(answer_format=ANSWER_FORMATS[record.answer_type],
                             question=record.question.strip(),
                             choices_block=_choices_block(record.choices))
  return (Message("user", text),)


def summary_messages(record: records_lib.TraceRecord, full_cot: str,
                     level: int) -> tuple[tuple[Message, ...], int]:
  """The messages asking for a level-``level`` summary of ``full_cot``, and its word budget."""
  words = word_budget(level, full_cot)
  text = SUMMARY_TEMPLATE.format(question=record.question.strip(),
                                 choices_block=_choices_block(record.choices),
                                 rationale=" ".join(full_cot.split()),
                                 budget=budget_instruction(level, words))
  return (Message("user", text),), words


def _spec() -> dict[str, Any]:
  return {
      "version": PROMPTS_VERSION, "cot": COT_TEMPLATE, "summary": SUMMARY_TEMPLATE,
      "answer_formats": dict(ANSWER_FORMATS),
      "budgets": {"6": "full", "5": f"{LEVEL5_FRACTION:g} x full words (>= {MIN_WORDS})",
                  **{str(k): f"{v} words" for k, v in sorted(WORD_BUDGETS.items(), reverse=True)}},
  }


def prompts_hash() -> str:
  """A short hash of every template and budget (changes whenever a prompt does)."""
  blob = json.dumps(_spec(), sort_keys=True).encode("utf-8")
  return hashlib.sha256(blob).hexdigest()[:16]


def prompts_provenance() -> dict[str, Any]:
  """What records store in ``provenance['prompts']``: the templates, budgets and hash."""
  return {"hash": prompts_hash(), **_spec()}
