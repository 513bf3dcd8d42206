r"""An OpenAI-compatible HTTP server over the JAX teacher (standard library only).

  python -m cdc_jax.teacher.serve --port=8000 [--gguf=PATH] [--host=127.0.0.1]
  python -m cdc_jax.teacher.launch --backend=openai --base_url=http://127.0.0.1:8000/v1 ...

Endpoints: ``POST /v1/chat/completions`` (messages rendered with the model's
chat template), ``POST /v1/completions`` (raw prompt), ``GET /v1/models`` and
``GET /health``. Requests that arrive together are generated as one batch
(same ``max_tokens``, ``temperature`` and ``seed``). ``temperature`` defaults
to 0 (greedy); streaming and ``n > 1`` are refused with 400. The first line on
stdout is ``serving MODEL on http://HOST:PORT`` once the port is bound
(``--port=0`` picks a free one). ``--random_tiny`` serves a tiny random-weight
model for tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.server
import json
import os
import queue
import signal
import threading
import time
import uuid
from typing import Any, Sequence

from cdc_jax.teacher import backends as backends_lib
from cdc_jax.teacher import jax_setup

DEFAULT_MAX_TOKENS = 256


class BadRequest(ValueError):
  """A request the server refuses with HTTP 400."""


class Batcher:
  """Generates for requests queued by handler threads, batching those that arrive together."""

  def __init__(self, backend: backends_lib.JaxBackend, *, max_batch: int = 16):
    self.backend, self.max_batch = backend, max_batch
    self._queue: queue.Queue[tuple[str, int, float, int, concurrent.futures.Future]] = queue.Queue()
    threading.Thread(target=self._loop, name="batcher", daemon=True).start()

  def generate(self, prompt: str, *, max_new_tokens: int, temperature: float, seed: int) -> Any:
    """The Generation for one raw prompt (blocks until done; raises what generate raised)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((prompt, max_new_tokens, temperature, seed, future))
    return future.result()

  def _loop(self) -> None:
    while True:
      batch = [self._queue.get()]
      while len(batch) < self.max_batch:
        try:
          batch.append(self._queue.get_nowait())
        except queue.Empty:
          break
      # One generate call per sampling setting; each prompt keeps its own max_tokens.
      groups: dict[tuple[float, int], list[Any]] = {}
      for item in batch:
        groups.setdefault(item[2:4], []).append(item)
      for (temperature, seed), items in groups.items():
        try:
          out = self.backend.generator.generate([i[0] for i in items],
                                                max_new_tokens=[i[1] for i in items],
                                                temperature=temperature, seed=seed)
        except Exception as e:  # pylint: disable=broad-except  # Handed to the waiting thread.
          for item in items:
            item[4].set_exception(e)
          continue
        for item, generation in zip(items, out):
          item[4].set_result(generation)


def _number(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      kind is int and not float(value).is_integer()):
    raise BadRequest(f"'{key}' must be a {kind.__name__}, got {value!r}")
  return kind(value)


def _options(body: dict[str, Any]) -> tuple[int, float, int]:
  if body.get("stream"):
    raise BadRequest("streaming is not supported")
  if _number(body, "n", int, 1) != 1:
    raise BadRequest("only n=1 is supported")
  max_tokens = _number(body, "max_tokens", int, None)
  if max_tokens is None:
    max_tokens = _number(body, "max_completion_tokens", int, DEFAULT_MAX_TOKENS)
  if max_tokens < 1:
    raise BadRequest(f"max_tokens must be >= 1, got {max_tokens}")
  temperature = _number(body, "temperature", float, 0.0)
  if temperature < 0:
    raise BadRequest(f"temperature must be >= 0, got {temperature}")
  return max_tokens, temperature, _number(body, "seed", int, 0)


class Server(http.server.ThreadingHTTPServer):
  """The HTTP server; holds the backend, batcher and request counter."""
  daemon_threads = True

  def __init__(self, address: tuple[str, int], *, backend: backends_lib.JaxBackend,
               max_batch: int = 16, die_after_requests: int | None = None,
               verbose: bool = False):
    super().__init__(address, Handler)
    self.backend, self.verbose = backend, verbose
    self.batcher = Batcher(backend, max_batch=max_batch)
    self.die_after_requests = die_after_requests
    self._count, self._lock = 0, threading.Lock()

  def count_request(self) -> None:
    """Counts a completion request; fault injection: SIGKILL on the one after the limit."""
    with self._lock:
      self._count += 1
      if self.die_after_requests is not None and self._count > self.die_after_requests:
        os.kill(os.getpid(), signal.SIGKILL)


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes the OpenAI endpoints."""
  server: Server
  protocol_version = "HTTP/1.1"

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)

  def _send(self, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _error(self, status: int, message: str, kind: str) -> None:
    self._send(status, {"error": {"message": message, "type": kind, "code": status}})

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    """/health and /v1/models."""
    name = self.server.backend.teacher
    if self.path == "/health":
      self._send(200, {"status": "ok", "model": name})
    elif self.path in ("/v1/models", "/models"):
      self._send(200, {"object": "list", "data": [
          {"id": name, "object": "model", "created": 0, "owned_by": "cdc_jax"}]})
    else:
      self._error(404, f"no route GET {self.path}", "not_found")

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    """/v1/chat/completions and /v1/completions."""
    if self.path not in ("/v1/chat/completions", "/v1/completions"):
      self._error(404, f"no route POST {self.path}", "not_found")
      return
    self.server.count_request()
    try:
      length = int(self.headers.get("Content-Length") or 0)
      try:
        body = json.loads(self.rfile.read(length) or b"null")
      except json.JSONDecodeError as e:
        raise BadRequest(f"invalid JSON body: {e.msg}") from None
      if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
      self._send(200, self._complete(body, chat=self.path.endswith("/chat/completions")))
    except BadRequest as e:
      self._error(400, str(e), "invalid_request_error")
    except Exception as e:  # pylint: disable=broad-except  # A 500 with the reason, not a hang.
      self._error(500, f"{type(e).__name__}: {e}", "server_error")

  def _complete(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    max_tokens, temperature, seed = _options(body)
    backend = self.server.backend
    if chat:
      messages = body.get("messages")
      if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
      from cdc_jax.teacher import chat as chat_lib
      try:
        prompt = chat_lib.render_chat(messages, fmt=backend.generator.chat_format)
      except (ValueError, AttributeError, TypeError) as e:
        raise BadRequest(f"bad messages: {e}") from None
    else:
      prompt = body.get("prompt")
      if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
      if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be a non-empty string")
    try:
      g = self.server.batcher.generate(prompt, max_new_tokens=max_tokens,
                                       temperature=temperature, seed=seed)
    except ValueError as e:  # Too long for the model, bad sampling options.
      raise BadRequest(str(e)) from None
    finish = "stop" if g.finished else "length"
    usage = {"prompt_tokens": g.num_prompt_tokens, "completion_tokens": g.num_generated_tokens,
             "total_tokens": g.num_prompt_tokens + g.num_generated_tokens}
    common = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
              "model": backend.teacher, "usage": usage}
    if chat:
      return {**common, "object": "chat.completion", "choices": [
          {"index": 0, "message": {"role": "assistant", "content": g.text},
           "finish_reason": finish}]}
    return {**common, "object": "text_completion", "choices": [
        {"index": 0, "text": g.text, "finish_reason": finish, "logprobs": None}]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.teacher.serve",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--port", type=int, required=True, help="0: any free port")
  parser.add_argument("--host", default="127.0.0.1")
  jax_setup.add_jax_flags(parser)
  parser.add_argument("--max_batch", type=int, default=16)
  parser.add_argument("--verbose", action="store_true", help="log every request")
  parser.add_argument("--die_after_requests", type=int, default=None,
                      help="fault injection: SIGKILL on the completion request after this many")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  """Loads the model, binds the port, prints where it serves and serves until killed."""
  args = parse_args(argv)
  try:  # Requests reach one process; a multi-host teacher needs all to run each batch.
    backend = jax_setup.backend_from_flags(args, multihost=False)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  server = Server((args.host, args.port), backend=backend, max_batch=args.max_batch,
                  die_after_requests=args.die_after_requests, verbose=args.verbose)
  host, port = server.server_address[:2]
  print(f"serving {backend.teacher} on http://{host}:{port}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == "__main__":
  main()
