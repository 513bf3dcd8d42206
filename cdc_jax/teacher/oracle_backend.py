"""The ``oracle`` teacher backend: the embedded benchmark's programmatic teacher.

It answers from the rationales the records already hold, so a launch over the
embedded communities takes seconds yet goes through the same sharding, chunks
and verify as a real teacher.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.teacher import backends, prompts


class OracleBackend:
  """Answers from the rationales the records already carry (the embedded teacher).

  The full CoT is the level-6 rationale followed by "So the answer is X."
  (X the record's ``teacher_answer``, when known); a summary request gets the
  record's own rationale at that level. Token counts are word counts.
  """

  teacher = "oracle"

  def __init__(self, records: Iterable[records_lib.TraceRecord]):
    self._records = {r.id: r for r in records}

  def describe(self) -> dict[str, Any]:
    """See :class:`backends.Backend`."""
    return {"backend": "oracle"}

  def _text(self, request: backends.Request) -> str:
    record = self._records.get(request.record_id)
    if record is None:
      raise KeyError(f"oracle backend: no record {request.record_id!r} among its inputs")
    text = record.rationales.get(request.level)
    if text is None:
      raise ValueError(f"oracle backend: record {record.id!r} has no level-{request.level} "
                       f"rationale (it has {sorted(record.rationales)}); the oracle only "
                       "replays existing rationales")
    if request.level == names.FULL_COT_LEVEL and record.teacher_answer is not None:
      text = f"{text} So the answer is {record.teacher_answer}."
    return text

  def complete(self, requests: Sequence[backends.Request], *, temperature: float,
               seed: int) -> list[backends.Completion]:
    """See :class:`backends.Backend`; ``temperature`` and ``seed`` do not matter here."""
    del temperature, seed
    out = []
    for request in requests:
      text = self._text(request)
      prompt_words = sum(prompts.word_count(m.content) for m in request.messages)
      out.append(backends.Completion(text=text, prompt_tokens=prompt_words,
                                     completion_tokens=prompts.word_count(text), finished=True))
    return out
