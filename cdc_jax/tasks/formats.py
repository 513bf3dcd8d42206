"""Target formats: how a record becomes an (inputs, targets) text pair.

Pure Python, shared by the SeqIO preprocessors and the tests. Given a
question, its answer and the rationale at one granularity level:

================  ===========================================================
format            targets
================  ===========================================================
label_only        ``{answer}``
cot_label         ``{rationale} So the answer is {answer}.``
label_cot         ``The answer is {answer}. Explanation: {rationale}``
step_by_step      ``predict: q`` -> ``{answer}``; ``explain: q`` -> ``{rationale}``
permuted_cot      like label_cot, with the rationale's words shuffled (seeded)
key_tokens        like label_cot, keeping only k rationale words (a selector)
================  ===========================================================

Inputs are the question, with ``Answer choices: (a) ... (b) ...`` appended
for multiple choice, and the ``predict:``/``explain:`` prefix for the two
step_by_step tasks. Whatever the format, the answer can be parsed back with
:func:`cdc_jax.answers.extract_answer`.
"""

from __future__ import annotations

import random
import re
import string
from typing import Callable, Sequence

from cdc_jax import names

# ---------------------------------------------------------------------------
# Key-token selection (pluggable).

KeyTokenSelector = Callable[..., Sequence[int]]
"""``selector(tokens, *, question, answer, k) -> indices`` of the tokens to keep."""

_STOPWORDS = frozenset(
    "a an the is are was were be been of in on at to for with by and or so than then that this "
    "these those it its they their there which who what how many much do does did has have had "
    "first next also finally together into from as".split())
_KEY_TOKEN_SELECTORS: dict[str, KeyTokenSelector] = {}


def _strip(token: str) -> str:
  return token.strip(string.punctuation).lower()


def salience_selector(tokens: Sequence[str], *, question: str, answer: str, k: int) -> list[int]:
  """The default rule: keep the k most salient rationale words.

  Score 3: the word holds a digit (quantities and results); 2: it occurs in
  the question or the answer (the entities being reasoned about); 1: any
  other word that is not a stopword; 0: stopwords and bare punctuation. Ties
  go to the later word (conclusions come last). Kept words stay in order.
  """
  context = {_strip(t) for t in (question + " " + answer).split()}

  def score(token: str) -> int:
    word = _strip(token)
    if any(c.isdigit() for c in token):
      return 3
    if not word or word in _STOPWORDS:
      return 0
    return 2 if word in context else 1
  order = sorted(range(len(tokens)), key=lambda i: (-score(tokens[i]), -i))
  return sorted(order[:k])


def register_key_token_selector(name: str, selector: KeyTokenSelector) -> None:
  """Makes ``selector`` available to the key_tokens format by ``name``."""
  names.validate_name(name, what="key-token selector")
  existing = _KEY_TOKEN_SELECTORS.get(name)
  if existing is not None and existing is not selector:
    raise ValueError(f"key-token selector {name!r} is already registered")
  _KEY_TOKEN_SELECTORS[name] = selector


def get_key_token_selector(name: str) -> KeyTokenSelector:
  try:
    return _KEY_TOKEN_SELECTORS[name]
  except KeyError:
    raise ValueError(f"unknown key-token selector {name!r}: registered are "
                     f"{sorted(_KEY_TOKEN_SELECTORS)}") from None


register_key_token_selector("salience", salience_selector)

# ---------------------------------------------------------------------------
# Rendering.


def render_inputs(question: str, choices: Sequence[str] | None = None,
                  prefix: str | None = None) -> str:
  """The encoder input: optional task prefix, question, lettered choices."""
  text = " ".join(question.split())
  if choices:
    text += " Answer choices: " + " ".join(
        f"({string.ascii_lowercase[i]}) {c}" for i, c in enumerate(choices))
  return f"{prefix}: {text}" if prefix else text


def permute_words(text: str, *, seed: int | str) -> str:
  """The words of ``text`` in a seeded random order."""
  words = text.split()
  random.Random(str(seed)).shuffle(words)
  return " ".join(words)


def key_tokens(text: str, *, question: str, answer: str, k: int,
               selector: str | KeyTokenSelector = "salience") -> str:
  """Only ``k`` words of ``text``, chosen by ``selector``, in their order."""
  if k < 1:
    raise ValueError(f"key_tokens needs k >= 1, got {k}")
  select = get_key_token_selector(selector) if isinstance(selector, str) else selector
  words = text.split()
  keep = select(words, question=question, answer=answer, k=k)
  if len(keep) > k or any(not 0 <= i < len(words) for i in keep):
    raise ValueError(f"key-token selector returned invalid indices {list(keep)} for k={k}")
  return " ".join(words[i] for i in sorted(keep))


def _label_first(answer: str, explanation: str) -> str:
  return f"The answer is {answer}. Explanation: {explanation}"


def render_example(*, fmt: str, question: str, answer: str, rationale: str | None,
                   choices: Sequence[str] | None = None, part: str | None = None,
                   example_id: str = "", seed: int = 0, k: int = 8,
                   selector: str | KeyTokenSelector = "salience") -> dict[str, str]:
  """``{"inputs", "targets"}`` of one example in format ``fmt``.

  A missing rationale (``None``, e.g. an eval record without this level)
  renders the label only, so eval sets never lose questions.

  >>> render_example(fmt="cot_label", question="Is 3 > 2?", answer="yes",
  ...                rationale="3 is more than 2.")
  {'inputs': 'Is 3 > 2?', 'targets': '3 is more than 2. So the answer is yes.'}
  """
  names.validate_format(fmt)
  if (fmt == "step_by_step") != (part is not None):
    raise ValueError(f"format {fmt!r} with part {part!r}: only step_by_step has parts "
                     f"{names.STEP_BY_STEP_PARTS}, and it needs one")
  inputs = render_inputs(question, choices, prefix=part)
  rationale = " ".join(rationale.split()) if rationale else None
  if fmt == "label_only" or rationale is None and part != "explain":
    targets = answer
  elif fmt == "cot_label":
    targets = f"{rationale} So the answer is {answer}."
  elif fmt == "label_cot":
    targets = _label_first(answer, rationale)
  elif fmt == "step_by_step":
    if part == "explain" and rationale is None:
      raise ValueError(f"example {example_id!r}: the explain task needs a rationale")
    targets = answer if part == "predict" else rationale
  elif fmt == "permuted_cot":
    targets = _label_first(answer, permute_words(rationale, seed=f"{seed}:{example_id}"))
  else:
    targets = _label_first(answer, key_tokens(rationale, question=question, answer=answer, k=k,
                                              selector=selector))
  return {"inputs": inputs, "targets": targets}


def needs_rationale(fmt: str, part: str | None = None) -> bool:
  """Whether training examples of this format need a rationale."""
  return fmt != "label_only" and part != "predict"


_WORD = re.compile(r"\S+")


def rationale_length(text: str) -> int:
  """Length of a rationale in words (the unit of the level budgets)."""
  return len(_WORD.findall(text))
