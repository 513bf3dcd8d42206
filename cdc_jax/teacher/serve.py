r"""An OpenAI-compatible HTTP server over the JAX teacher (FastAPI on uvicorn).

  python -m cdc_jax.teacher.serve --port=8000 [--gguf=PATH] [--host=127.0.0.1]
  python -m cdc_jax.teacher.launch --backend=openai --base_url=http://127.0.0.1:8000/v1 ...

Endpoints: ``POST /v1/chat/completions`` (messages rendered with the model's
chat template), ``POST /v1/completions`` (raw prompt), both with
``stream: true`` (server-sent events ending in ``data: [DONE]``),
``GET /v1/models`` and ``GET /health``. Each request is validated on its own
(:mod:`cdc_jax.teacher.openai_schema`; prompt tokens plus ``max_tokens``
within the model's limits) before it joins a batch, so a bad request gets its
own 400 and never fails another. Requests that wait together are generated as
one batch, each with its own ``max_tokens`` (:mod:`cdc_jax.teacher.batching`);
when ``--max_queue`` requests are waiting, more get 429 with ``Retry-After``.
Errors are OpenAI-style bodies ``{"error": {"message", "type", "param",
"code"}}``. ``temperature`` defaults to 0 (greedy). The first line on stdout
is ``serving MODEL on http://HOST:PORT`` once the port is bound (``--port=0``
picks a free one). ``--random_tiny`` serves a tiny random-weight model for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import fastapi
import h11
import pydantic
import uvicorn
from fastapi import responses
from starlette import exceptions as starlette_exceptions
from uvicorn.protocols.http import h11_impl

from cdc_jax.teacher import batching, jax_setup
from cdc_jax.teacher import openai_schema as schema

DEFAULT_MAX_TOKENS = 256
# Prompts past the model's context are refused anyway; this only bounds the read.
DEFAULT_MAX_BODY_BYTES = 8 << 20
BACKLOG = 2048  # Bursts of connections wait to be accepted instead of being reset.
# A streamed reply is cut into one piece per token where a token decodes on its
# own; a run of tokens longer than this that never does (broken UTF-8) ends it.
_MAX_PIECE_TOKENS = 8

log = logging.getLogger(__name__)


class TeacherService:
  """What the routes need: the backend, its limits, the batcher and the request counter."""

  def __init__(self, backend: Any, *, max_batch: int = 16, max_queue: int = 64,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    self.backend, self.generator = backend, backend.generator
    self.max_body_bytes = max_body_bytes
    self.model = backend.teacher
    self.max_seq_len = int(self.generator.config.max_seq_len)
    self.max_new_tokens = int(max(self.generator.new_token_buckets))
    self.batcher = batching.Batcher(self.generator.generate_ids, max_batch=max_batch,
                                    max_queue=max_queue)
    self._count, self._lock, self._started = 0, threading.Lock(), time.time()

  def count_request(self) -> None:
    """Counts a completion request."""
    with self._lock:
      self._count += 1

  def prompt_text(self, request: schema.ChatRequest | schema.CompletionRequest) -> str:
    """The raw prompt: chat messages rendered with the model's template, or the prompt."""
    if isinstance(request, schema.CompletionRequest):
      return request.prompt  # type: ignore[return-value]  # A str once validated.
    from cdc_jax.models import llama_chat
    return llama_chat.render_chat([m.to_chat() for m in request.messages],
                            fmt=self.generator.chat_format)

  def job(self, request: schema.ChatRequest | schema.CompletionRequest) -> batching.Job:
    """The batch job of a validated request; raises ApiError where the model cannot serve it."""
    if request.model is not None and request.model != self.model:
      raise schema.ApiError(404, f"model {request.model!r} is not served here (this server "
                                 f"serves {self.model!r})", param="model",
                            code="model_not_found")
    prompt_param = "prompt" if isinstance(request, schema.CompletionRequest) else "messages"
    ids = self.generator.tokenizer.encode(self.prompt_text(request))
    if not ids:
      raise schema.ApiError(400, "the prompt has no tokens", param=prompt_param)
    room = self.max_seq_len - len(ids)
    limit, param = request.token_limit, "max_tokens"
    if getattr(request, "max_completion_tokens", None) is not None:
      param = "max_completion_tokens"
    if limit is None:
      limit = min(DEFAULT_MAX_TOKENS, self.max_new_tokens, room)
      if limit < 1:
        raise schema.ApiError(400, f"the prompt has {len(ids)} tokens; the model's context is "
                                   f"{self.max_seq_len}", param=prompt_param,
                              code="context_length_exceeded")
    elif limit > self.max_new_tokens:
      raise schema.ApiError(400, f"{param}={limit} exceeds this server's limit of "
                                 f"{self.max_new_tokens} new tokens", param=param)
    elif limit > room:
      raise schema.ApiError(400, f"the prompt's {len(ids)} tokens + {param}={limit} exceed the "
                                 f"model's context of {self.max_seq_len} tokens", param=param,
                            code="context_length_exceeded")
    return batching.Job(prompt_ids=tuple(ids), max_new_tokens=limit,
                        temperature=float(request.temperature or 0.0), seed=request.seed or 0)

  def submit(self, job: batching.Job) -> asyncio.Future:
    """Queues ``job``; 429 with Retry-After when the queue is full."""
    try:
      return asyncio.wrap_future(self.batcher.submit(job))
    except batching.QueueFull as e:
      raise schema.ApiError(429, f"the server is busy: {e}; retry shortly",
                            kind="rate_limit_error", code="queue_full",
                            headers={"Retry-After": "1"}) from None

  def close(self) -> str:
    """Stops the batcher; returns what was served (for the log)."""
    self.batcher.close(timeout=5)
    return (f"served {self._count} completion request(s) in {self.batcher.batches_run} "
            f"batch(es) over {time.time() - self._started:.0f} s")

  def decode(self, ids: Sequence[int]) -> str:
    """Text of generated token ids (as ``Generator.generate`` decodes them)."""
    return self.generator.tokenizer.decode(ids)


def stream_pieces(decode: Callable[[Sequence[int]], str], ids: Sequence[int],
                  text: str) -> Iterator[str]:
  """Pieces of ``text`` (the decode of ``ids``) for streaming; they join to exactly ``text``.

  A piece per token where the token (or a short run of tokens, for characters
  split over several) decodes to the next characters of ``text``; whatever
  does not line up comes as one last piece.
  """
  pos, group = 0, []
  for token in ids:
    group.append(token)
    piece = decode(group)
    if piece and text.startswith(piece, pos):
      yield piece
      pos, group = pos + len(piece), []
    elif len(group) >= _MAX_PIECE_TOKENS:
      break
  if pos < len(text):
    yield text[pos:]


def _finish(stopped: bool) -> str:
  return "stop" if stopped else "length"


_GENERATION_FAILED = "the teacher failed to generate this reply (see the server log)"


async def _events(service: TeacherService, pending: asyncio.Future, *, chat: bool,
                  prompt_tokens: int, include_usage: bool) -> AsyncIterator[bytes]:
  """The server-sent events of a streamed reply, as the official clients read them."""
  rid, model = schema.new_id(chat), service.model
  if chat:  # Headers and the role go out at once; the text follows once generated.
    yield schema.sse(schema.chunk(chat=True, reply_id=rid, model=model, text="", role=True))
  try:
    ids, count, stopped = await pending
  except Exception:  # pylint: disable=broad-except  # Logged by the batcher.
    yield schema.sse(schema.error_body(_GENERATION_FAILED, kind="server_error"))
    return
  text = service.decode(ids)
  for piece in stream_pieces(service.decode, ids, text):
    yield schema.sse(schema.chunk(chat=chat, reply_id=rid, model=model, text=piece))
  yield schema.sse(schema.chunk(chat=chat, reply_id=rid, model=model, text="",
                                finish_reason=_finish(stopped)))
  if include_usage:
    yield schema.sse(schema.chunk(chat=chat, reply_id=rid, model=model, text=None,
                                  usage_obj=schema.usage(prompt_tokens, count)))
  yield schema.sse("[DONE]")


async def _complete(service: TeacherService,
                    request: schema.ChatRequest | schema.CompletionRequest) -> Any:
  chat = isinstance(request, schema.ChatRequest)
  service.count_request()
  # Raises before anything is queued; off the event loop: a long prompt takes a while to tokenize.
  job = await asyncio.to_thread(service.job, request)
  pending = service.submit(job)
  if request.stream:
    return responses.StreamingResponse(
        _events(service, pending, chat=chat, prompt_tokens=len(job.prompt_ids),
                include_usage=request.include_usage),
        media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
  try:
    ids, count, stopped = await pending
  except Exception:  # pylint: disable=broad-except  # Logged by the batcher.
    raise schema.ApiError(500, _GENERATION_FAILED, kind="server_error") from None
  return schema.reply(chat=chat, model=service.model, text=service.decode(ids),
                      finish_reason=_finish(stopped), prompt_tokens=len(job.prompt_ids),
                      completion_tokens=count)


async def _parse(request: fastapi.Request, model: type[schema.RequestT], *,
                 max_bytes: int) -> schema.RequestT:
  """The validated body; read as JSON whatever the Content-Type says, as OpenAI servers do."""
  parts, size = [], 0
  async for part in request.stream():  # Counted as it arrives: no Content-Length is trusted.
    size += len(part)
    if size > max_bytes:
      raise schema.ApiError(413, f"the body exceeds {max_bytes} bytes", code="body_too_large")
    parts.append(part)
  try:  # JSON is UTF-8 (RFC 8259); json.loads would also guess UTF-16 and -32.
    body = json.loads(b"".join(parts).decode("utf-8"))
  except UnicodeDecodeError:
    raise schema.ApiError(400, "the body is not UTF-8 text", code="invalid_json") from None
  except json.JSONDecodeError as e:
    raise schema.ApiError(400, f"the body is not valid JSON: {e.msg} at line {e.lineno} column "
                               f"{e.colno}", code="invalid_json") from None
  if not isinstance(body, dict):
    raise schema.ApiError(400, f"the body must be a JSON object, got {type(body).__name__}",
                          code="invalid_type")
  try:
    return model.model_validate(body)
  except pydantic.ValidationError as e:
    raise schema.validation_error(e.errors()) from None


def _error_response(error: schema.ApiError) -> responses.JSONResponse:
  return responses.JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_app(service: TeacherService) -> fastapi.FastAPI:
  """The FastAPI app of the OpenAI endpoints over ``service``."""
  @contextlib.asynccontextmanager
  async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    yield
    # uvicorn ends a SIGTERM/SIGINT by re-raising it, so code after server.run() never runs.
    print(service.close(), file=sys.stderr, flush=True)

  app = fastapi.FastAPI(title="cdc_jax teacher", docs_url=None, redoc_url=None,
                        lifespan=lifespan)

  @app.exception_handler(schema.ApiError)
  async def _api_error(_: fastapi.Request, e: schema.ApiError) -> responses.JSONResponse:
    return _error_response(e)

  @app.exception_handler(starlette_exceptions.HTTPException)
  async def _http(request: fastapi.Request,
                  e: starlette_exceptions.HTTPException) -> responses.JSONResponse:
    if e.status_code in (404, 405):
      message, code = f"no route {request.method} {request.url.path}", "unknown_route"
    else:
      message, code = str(e.detail), None
    return _error_response(schema.ApiError(e.status_code, message, code=code))

  @app.exception_handler(Exception)
  async def _unexpected(_: fastapi.Request, e: Exception) -> responses.JSONResponse:
    log.error("unexpected error", exc_info=e)  # The trace stays in the server log.
    return _error_response(schema.ApiError(500, "internal server error (see the server log)",
                                           kind="server_error"))

  @app.get("/health")
  async def health() -> dict[str, Any]:
    return {"status": "ok", "model": service.model}

  @app.get("/v1/models")
  async def models() -> dict[str, Any]:
    return {"object": "list", "data": [
        {"id": service.model, "object": "model", "created": 0, "owned_by": "cdc_jax"}]}

  @app.post("/v1/chat/completions")
  async def chat_completions(request: fastapi.Request) -> Any:
    return await _complete(service, await _parse(
        request, schema.ChatRequest, max_bytes=service.max_body_bytes))

  @app.post("/v1/completions")
  async def completions(request: fastapi.Request) -> Any:
    return await _complete(service, await _parse(
        request, schema.CompletionRequest, max_bytes=service.max_body_bytes))

  return app


class H11Protocol(h11_impl.H11Protocol):
  """uvicorn's HTTP/1.1 protocol; a request that does not parse (e.g. ``Content-Length: abc``)
  gets an OpenAI-style JSON 400 instead of uvicorn's plain-text one."""

  def send_400_response(self, msg: str) -> None:
    data = json.dumps(schema.error_body(f"malformed HTTP request: {msg}",
                                        kind="invalid_request_error",
                                        code="malformed_request")).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"connection", b"close")]
    for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                  h11.Data(data=data), h11.EndOfMessage()):
      self.transport.write(self.conn.send(event))
    self.transport.close()


def bind(host: str, port: int) -> socket.socket:
  """A listening TCP socket on ``host:port`` (0: a free port)."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  sock.listen(BACKLOG)
  return sock


def make_server(app: fastapi.FastAPI, *, verbose: bool = False) -> uvicorn.Server:
  """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind(...)])``)."""
  config = uvicorn.Config(app, http=H11Protocol, lifespan="on", backlog=BACKLOG,
                          log_level="info" if verbose else "warning", access_log=verbose,
                          timeout_graceful_shutdown=5)
  return uvicorn.Server(config)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.teacher.serve",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--port", type=int, required=True, help="0: any free port")
  parser.add_argument("--host", default="127.0.0.1")
  jax_setup.add_jax_flags(parser)
  # Unset (None): TeacherService's defaults apply.
  parser.add_argument("--max_batch", type=int, default=None,
                      help="most requests in one batch (default: TeacherService's)")
  parser.add_argument("--max_queue", type=int, default=None,
                      help="most requests waiting for a batch; more get 429")
  parser.add_argument("--verbose", action="store_true", help="log every request")
  args = parser.parse_args(argv)
  for name in ("max_batch", "max_queue"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  """Loads the model, binds the port, prints where it serves and serves until killed."""
  args = parse_args(argv)
  try:  # Requests reach one process; a multi-host teacher needs all to run each batch.
    backend = jax_setup.backend_from_flags(args, multihost=False)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  limits = {name: getattr(args, name) for name in ("max_batch", "max_queue")
            if getattr(args, name) is not None}
  service = TeacherService(backend, **limits)
  try:
    sock = bind(args.host, args.port)
  except OSError as e:
    raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {e}") from None
  host, port = sock.getsockname()[:2]
  host = f"[{host}]" if ":" in host else host
  print(f"serving {backend.teacher} on http://{host}:{port}", flush=True)
  make_server(create_app(service), verbose=args.verbose).run(sockets=[sock])


if __name__ == "__main__":
  main()
