"""The ``openai`` teacher backend: any OpenAI-compatible server, through the official SDK.

The SDK (``openai``) owns the HTTP side: connection pooling, timeouts and
retries of 408/409/429/5xx and connection errors, honouring ``Retry-After``.
We set how many retries, the timeout and the backoff (:class:`RetryPolicy`,
the launcher's ``--max_retries``, ``--timeout_s``, ``--backoff_base_s`` and
``--backoff_max_s``), run ``concurrency`` requests at a time and turn the SDK's
errors into :class:`backends.TeacherHTTPError`, which names the URL, the
status and the server's error body.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import random
from typing import Any, Iterator, Mapping, Sequence

import openai

from cdc_jax.teacher import backends

# The SDK insists on a key; servers without authentication ignore this one.
NO_API_KEY = "no-key"
# Statuses the SDK retries (besides connection errors and timeouts).
_RETRIED = (408, 409, 429)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """How the SDK retries: exponential backoff with jitter, capped.

  Attempt ``k`` (0-based) waits ``min(backoff_max_s, backoff_base_s * 2**k)``
  times a factor in [0.5, 1], or the server's ``Retry-After`` if it sends one
  (capped at ``backoff_max_s``). ``timeout_s`` bounds each attempt.
  """
  max_retries: int = 6
  backoff_base_s: float = 0.5
  backoff_max_s: float = 30.0
  timeout_s: float = 120.0

  def __post_init__(self):
    if self.max_retries < 0 or min(self.backoff_base_s, self.backoff_max_s) < 0 \
        or self.timeout_s <= 0:
      raise ValueError(f"{self}: retries and backoffs must be >= 0 and the timeout > 0")

  def delay(self, attempt: int, retry_after: float | None,
            rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``."""
    if retry_after is not None and retry_after >= 0:
      return min(self.backoff_max_s, retry_after)
    jitter = (rng or random).uniform(0.5, 1.0)
    return min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt, 60)) * jitter


class _SDK(openai.OpenAI):
  """``openai.OpenAI`` with the backoff of a :class:`RetryPolicy`.

  The SDK's own backoff (0.5 s doubling to 8 s) is a module constant; its retry
  loop asks this one method for each wait, so that is where ours goes.
  """

  def __init__(self, *, retry: RetryPolicy, **kwargs: Any):
    super().__init__(max_retries=retry.max_retries, timeout=retry.timeout_s, **kwargs)
    self.cdc_retry = retry

  def _calculate_retry_timeout(self, remaining_retries: int, options: Any,
                               response_headers: Any = None) -> float:
    attempt = options.get_max_retries(self.max_retries) - remaining_retries
    return self.cdc_retry.delay(attempt, self._parse_retry_after_header(response_headers))


class OpenAIClient:
  """The official ``openai`` client for one base URL (``.../v1`` is added when missing)."""

  def __init__(self, base_url: str, *, api_key: str | None = None,
               retry: RetryPolicy = RetryPolicy()):
    base_url = base_url.rstrip("/")
    if not base_url.endswith("/v1"):
      base_url += "/v1"
    self.base_url, self.retry = base_url, retry
    self.sdk = _SDK(base_url=base_url, api_key=api_key or NO_API_KEY, retry=retry)

  @contextlib.contextmanager
  def errors(self, path: str) -> Iterator[None]:
    """Turns the SDK's errors (after its retries) into :class:`backends.TeacherHTTPError`."""
    url = self.base_url + path
    attempts = self.retry.max_retries + 1
    try:
      yield
    except openai.APIStatusError as e:
      status = e.status_code
      retried = status in _RETRIED or status >= 500
      message = f"gave up after {attempts} attempts" if retried else "request refused"
      raise backends.TeacherHTTPError(url, message, status=status, body=e.response.text) from None
    except openai.APIConnectionError as e:
      cause = e.__cause__
      detail = f"{type(cause).__name__}: {cause}" if cause is not None else e.message
      raise backends.TeacherHTTPError(url, f"gave up after {attempts} attempts; last error: "
                                      f"{e.message} ({detail})") from None
    except openai.APIError as e:  # A reply the SDK could not read.
      raise backends.TeacherHTTPError(url, f"unreadable reply: {e.message}") from None

  def close(self) -> None:
    """Closes the SDK's pooled connections."""
    self.sdk.close()

  def models(self) -> list[str]:
    """The model ids the server lists at ``/v1/models``."""
    with self.errors("/models"):
      return [m.id for m in self.sdk.models.list()]

  def chat(self, *, model: str, messages: Sequence[Mapping[str, str]], max_tokens: int,
           temperature: float, seed: int) -> backends.Completion:
    """One chat completion (``/v1/chat/completions``)."""
    with self.errors("/chat/completions"):
      reply = self.sdk.chat.completions.create(
          model=model, messages=list(messages), max_tokens=max_tokens,  # type: ignore[arg-type]
          temperature=temperature, seed=seed)
    choice = self._choice(reply, "/chat/completions")
    text = choice.message.content if choice.message is not None else None
    return self._completion(reply, text, choice.finish_reason)

  def completion(self, *, model: str, prompt: str, max_tokens: int, temperature: float,
                 seed: int) -> backends.Completion:
    """One raw-prompt completion (``/v1/completions``)."""
    with self.errors("/completions"):
      reply = self.sdk.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                          temperature=temperature, seed=seed)
    choice = self._choice(reply, "/completions")
    return self._completion(reply, choice.text, choice.finish_reason)

  def _choice(self, reply: Any, path: str) -> Any:
    choices = getattr(reply, "choices", None)
    if not choices:
      raise backends.TeacherHTTPError(self.base_url + path,
                                      f"reply has no choices: {str(reply)[:500]}")
    return choices[0]

  @staticmethod
  def _completion(reply: Any, text: str | None, finish_reason: str | None) -> backends.Completion:
    usage = getattr(reply, "usage", None)
    return backends.Completion(
        text=text if isinstance(text, str) else "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finished=finish_reason != "length")


class OpenAIBackend:
  """A teacher behind an OpenAI-compatible server, ``concurrency`` requests in flight.

  ``api='chat'`` posts the messages to ``/v1/chat/completions`` (the server
  applies its chat template); ``api='completions'`` posts the messages'
  contents joined by blank lines as a raw prompt to ``/v1/completions``.
  """

  def __init__(self, client: OpenAIClient, *, model: str | None = None, api: str = "chat",
               concurrency: int = 4):
    if api not in backends.OPENAI_APIS:
      raise ValueError(f"unknown api {api!r}: expected one of {backends.OPENAI_APIS}")
    if concurrency < 1:
      raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if model is None:
      listed = client.models()
      if not listed:
        raise backends.TeacherHTTPError(client.base_url + "/models", "lists no model; pass --model")
      model = listed[0]
    self.client, self.model, self.api, self.concurrency = client, model, api, concurrency
    self.teacher = model

  def describe(self) -> dict[str, Any]:
    """See :class:`backends.Backend` (not the server's address: it does not shape output)."""
    return {"backend": "openai", "model": self.model, "api": self.api}

  def _one(self, request: backends.Request, temperature: float, seed: int) -> backends.Completion:
    options = {"model": self.model, "max_tokens": request.max_new_tokens,
               "temperature": temperature, "seed": seed}
    if self.api == "chat":
      return self.client.chat(messages=[m.to_json() for m in request.messages], **options)
    return self.client.completion(prompt="\n\n".join(m.content for m in request.messages),
                                  **options)

  def complete(self, requests: Sequence[backends.Request], *, temperature: float,
               seed: int) -> list[backends.Completion]:
    """See :class:`backends.Backend`; the first failure cancels what has not started and raises."""
    if not requests:
      return []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)))
    try:
      futures = [pool.submit(self._one, r, temperature, seed) for r in requests]
      return [f.result() for f in futures]
    finally:
      pool.shutdown(wait=True, cancel_futures=True)
