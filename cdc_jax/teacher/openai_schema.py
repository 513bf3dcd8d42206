"""The OpenAI wire format the teacher server speaks: requests, replies, stream chunks, errors.

Requests are pydantic models, so each one is checked on its own (types,
ranges, options we cannot honour) before it may join a batch. Unknown fields
are ignored, as OpenAI-compatible servers do; known options that would change
the output and that we do not implement (``n > 1``, ``top_p < 1``, ``stop``,
penalties, logprobs) are refused rather than silently dropped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import pydantic

# JAX's PRNGKey keeps the low 32 bits of a seed (x64 off): larger seeds would
# silently collide with small ones, so they are refused.
MAX_SEED = 2**32 - 1
Float = Annotated[float, pydantic.Strict()]  # Ints pass; strings and bools do not.


class ApiError(Exception):
  """A request refused with an OpenAI-style error body."""

  def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
               param: str | None = None, code: str | None = None,
               headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status, self.message, self.kind = status, message, kind
    self.param, self.code, self.headers = param, code, headers or {}

  def body(self) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(message: str, *, kind: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
  """The OpenAI error object."""
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _refuse_unless(value: Any, allowed: tuple[Any, ...], what: str) -> Any:
  if value is not None and value not in allowed:
    raise ValueError(f"{what} is not supported by this server")
  return value


class TextPart(pydantic.BaseModel):
  """One part of a message's content list (text only)."""
  type: Literal["text"]
  text: pydantic.StrictStr


class Message(pydantic.BaseModel):
  """A chat message; ``developer`` is the newer name of ``system``."""
  role: Literal["system", "developer", "user", "assistant"]
  content: pydantic.StrictStr | list[TextPart]

  def to_chat(self) -> dict[str, str]:
    """The ``{"role", "content"}`` dict that :func:`chat.render_chat` takes."""
    content = (self.content if isinstance(self.content, str)
               else "".join(p.text for p in self.content))
    return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(pydantic.BaseModel):
  """``stream_options``: whether a last chunk carries the usage."""
  include_usage: pydantic.StrictBool = False


class _Request(pydantic.BaseModel):
  """Options shared by both completion endpoints."""
  model_config = pydantic.ConfigDict(extra="ignore", allow_inf_nan=False)

  model: pydantic.StrictStr | None = None
  max_tokens: pydantic.StrictInt | None = pydantic.Field(None, ge=1)
  temperature: Float | None = pydantic.Field(None, ge=0, le=2)
  seed: pydantic.StrictInt | None = pydantic.Field(None, ge=0, le=MAX_SEED)
  stream: pydantic.StrictBool = False
  stream_options: StreamOptions | None = None
  n: pydantic.StrictInt | None = None
  top_p: Float | None = None
  stop: pydantic.StrictStr | list[pydantic.StrictStr] | None = None
  presence_penalty: Float | None = None
  frequency_penalty: Float | None = None
  logit_bias: dict[str, Any] | None = None

  @pydantic.field_validator("n")
  @classmethod
  def _n(cls, v: int | None) -> int | None:
    return _refuse_unless(v, (1,), f"n={v} (only n=1)")

  @pydantic.field_validator("top_p")
  @classmethod
  def _top_p(cls, v: float | None) -> float | None:
    return _refuse_unless(v, (1.0,), f"top_p={v} (only 1)")

  @pydantic.field_validator("stop")
  @classmethod
  def _stop(cls, v: Any) -> Any:
    return _refuse_unless(v, ("", []), "stop sequences")

  @pydantic.field_validator("presence_penalty", "frequency_penalty")
  @classmethod
  def _penalty(cls, v: float | None) -> float | None:
    return _refuse_unless(v, (0.0,), "a penalty other than 0")

  @pydantic.field_validator("logit_bias")
  @classmethod
  def _bias(cls, v: Any) -> Any:
    return _refuse_unless(v, ({},), "logit_bias")

  @property
  def include_usage(self) -> bool:
    """Whether a streamed reply ends with a usage chunk."""
    return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(_Request):
  """``POST /v1/chat/completions``."""
  messages: list[Message] = pydantic.Field(min_length=1)
  max_completion_tokens: pydantic.StrictInt | None = pydantic.Field(None, ge=1)
  logprobs: pydantic.StrictBool | None = None

  @pydantic.field_validator("logprobs")
  @classmethod
  def _logprobs(cls, v: bool | None) -> bool | None:
    return _refuse_unless(v, (False,), "logprobs")

  @property
  def token_limit(self) -> int | None:
    """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
    return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Request):
  """``POST /v1/completions`` (a raw prompt, or a list holding one)."""
  prompt: pydantic.StrictStr | list[pydantic.StrictStr]
  logprobs: pydantic.StrictInt | None = None
  echo: pydantic.StrictBool | None = None
  suffix: pydantic.StrictStr | None = None
  best_of: pydantic.StrictInt | None = None

  @pydantic.field_validator("prompt")
  @classmethod
  def _prompt(cls, v: str | list[str]) -> str:
    if isinstance(v, list):
      if len(v) != 1:
        raise ValueError(f"a list of {len(v)} prompts (this server takes one per request)")
      v = v[0]
    if not v:
      raise ValueError("the prompt is empty")
    return v

  @pydantic.field_validator("logprobs")
  @classmethod
  def _logprobs(cls, v: int | None) -> int | None:
    return _refuse_unless(v, (0,), "logprobs")

  @pydantic.field_validator("echo")
  @classmethod
  def _echo(cls, v: bool | None) -> bool | None:
    return _refuse_unless(v, (False,), "echo")

  @pydantic.field_validator("suffix")
  @classmethod
  def _suffix(cls, v: str | None) -> str | None:
    return _refuse_unless(v, ("",), "suffix")

  @pydantic.field_validator("best_of")
  @classmethod
  def _best_of(cls, v: int | None) -> int | None:
    return _refuse_unless(v, (1,), f"best_of={v} (only 1)")

  @property
  def token_limit(self) -> int | None:
    """``max_tokens``."""
    return self.max_tokens


RequestT = TypeVar("RequestT", ChatRequest, CompletionRequest)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
  """A 400 naming each bad field (up to three) of a pydantic ``ValidationError.errors()``."""
  described, params = [], []
  for error in errors:
    param = ".".join(str(p) for p in error.get("loc", ())) or None
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    described.append(f"{param}: {message}" if param else message)
    params.append(param)
  if not described:
    return ApiError(400, "invalid request")
  message = "; ".join(described[:3])
  if len(described) > 3:
    message += f" (and {len(described) - 3} more)"
  return ApiError(400, message, param=params[0], code=errors[0].get("type"))


# ------------------------------------------------------------- replies ----


def new_id(chat: bool) -> str:
  """A fresh reply id, ``chatcmpl-...`` or ``cmpl-...``."""
  return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
  """The usage object."""
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens}


def reply(*, chat: bool, model: str, text: str, finish_reason: str, prompt_tokens: int,
          completion_tokens: int) -> dict[str, Any]:
  """A whole (non-streamed) ``chat.completion`` or ``text_completion``."""
  if chat:
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "finish_reason": finish_reason, "logprobs": None}
  else:
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
  return {"id": new_id(chat), "object": "chat.completion" if chat else "text_completion",
          "created": int(time.time()), "model": model, "choices": [choice],
          "usage": usage(prompt_tokens, completion_tokens)}


def chunk(*, chat: bool, reply_id: str, model: str, text: str | None,
          finish_reason: str | None = None, role: bool = False,
          usage_obj: dict[str, int] | None = None) -> dict[str, Any]:
  """One streamed chunk; ``text=None`` with ``usage_obj`` is the usage-only last chunk."""
  if text is None and usage_obj is not None:
    choices: list[dict[str, Any]] = []
  elif chat:
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if text:
      delta["content"] = text
    elif role:
      delta["content"] = ""
    choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
  else:
    choices = [{"index": 0, "text": text or "", "finish_reason": finish_reason,
                "logprobs": None}]
  out = {"id": reply_id, "object": "chat.completion.chunk" if chat else "text_completion",
         "created": int(time.time()), "model": model, "choices": choices}
  if usage_obj is not None:
    out["usage"] = usage_obj
  return out


def sse(obj: Any) -> bytes:
  """One server-sent event carrying ``obj`` as JSON (or ``[DONE]``)."""
  data = obj if isinstance(obj, str) else json.dumps(obj)
  return f"data: {data}\n\n".encode("utf-8")
