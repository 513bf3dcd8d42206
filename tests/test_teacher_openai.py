"""The OpenAI-compatible client (official SDK: retries, errors, concurrency) and our server.

Client tests run against a scripted local stub. Server tests use the official
``openai`` client (and raw HTTP for malformed requests) against
``python -m cdc_jax.teacher.serve --random_tiny`` on 127.0.0.1, or, where a
test must hold the generator still (a full queue, a failing batch), against
the same app in process over a fake generator.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic
from cdc_jax.models import llama_chat
from cdc_jax.teacher import (backends, batching, launch, openai_backend, prompts, serve, tiny_model,
                             verify)
from tests import ports

REPO = Path(__file__).resolve().parents[1]
FAST = openai_backend.RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01,
                                  timeout_s=30)
USER = [{"role": "user", "content": "Is the sky blue?"}]
LONG = [{"role": "user", "content": "x" * 2100}]  # ~2,130 of the tiny model's 2,304 tokens.


def _reply(text: str, finish: str = "stop") -> dict[str, Any]:
  return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "text": text, "finish_reason": finish}],
          "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


class Stub:
  """A local HTTP server answering from a script of (status, body, headers); records requests."""

  def __init__(self, script=None, *, handler=None):
    self.script, self.requests, self.lock = list(script or []), [], threading.Lock()
    stub = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):
        pass

      def _answer(self, body):
        with stub.lock:
          stub.requests.append((self.command, self.path, body))
        if handler is not None:
          status, payload, headers = handler(self.path, body)
        else:
          with stub.lock:
            status, payload, headers = stub.script.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
          self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):
        self._answer(None)

      def do_POST(self):
        self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.server.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
    threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture
def stub_factory():
  made = []

  def make(*args, **kwargs):
    made.append(Stub(*args, **kwargs))
    return made[-1]

  yield make
  for s in made:
    s.close()


@pytest.fixture
def make_client():
  """``openai_backend.OpenAIClient(url, retry=FAST)``, closed after the test."""
  made = []

  def make(url: str, retry: openai_backend.RetryPolicy = FAST) -> Any:
    made.append(openai_backend.OpenAIClient(url, retry=retry))
    return made[-1]

  yield make
  for c in made:
    c.close()


def _request(text="hi", level=6, max_new=16):
  return backends.Request("q1", level, (prompts.Message("user", text),), max_new)


# ------------------------------------------------------------- client ----


def test_retries_429_and_5xx_with_our_backoff_then_succeeds(stub_factory, make_client):
  waits = []

  @dataclasses.dataclass(frozen=True)
  class Recorded(openai_backend.RetryPolicy):
    def delay(self, attempt, retry_after, rng=None):
      waits.append((attempt, retry_after))
      return 0.0

  stub = stub_factory([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.5"}),
                       (503, {"error": {"message": "busy"}}, {}),
                       (200, _reply("ok. The answer is yes."), {})])
  client = make_client(stub.url, Recorded(max_retries=3))
  backend = openai_backend.OpenAIBackend(client, model="m")
  (out,) = backend.complete([_request()], temperature=0.0, seed=3)
  assert out == backends.Completion("ok. The answer is yes.", 7, 3, True)
  assert waits == [(0, 0.5), (1, None)]  # The SDK's retry loop asked our policy.
  assert len(stub.requests) == 3
  method, path, body = stub.requests[-1]
  assert (method, path) == ("POST", "/v1/chat/completions")
  assert body == {"model": "m", "max_tokens": 16, "temperature": 0.0, "seed": 3,
                  "messages": [{"role": "user", "content": "hi"}]}


def test_other_4xx_raises_at_once_with_status_and_body(stub_factory, make_client):
  stub = stub_factory([(400, {"error": {"message": "max_tokens too large"}}, {})])
  backend = openai_backend.OpenAIBackend(make_client(stub.url), model="m")
  with pytest.raises(backends.TeacherHTTPError, match="HTTP 400.*max_tokens too large") as e:
    backend.complete([_request()], temperature=0.0, seed=0)
  assert e.value.status == 400 and len(stub.requests) == 1


def test_gives_up_after_the_last_retry(stub_factory, make_client):
  stub = stub_factory([(500, {"error": {"message": "down"}}, {})] * 4)
  backend = openai_backend.OpenAIBackend(make_client(stub.url), model="m")
  with pytest.raises(backends.TeacherHTTPError, match="gave up after 4 attempts.*down") as e:
    backend.complete([_request()], temperature=0.0, seed=0)
  assert e.value.status == 500 and len(stub.requests) == 4
  port = ports.free_port()  # A port nobody listens on: connection refused, retried.
  client = make_client(f"http://127.0.0.1:{port}")
  assert client.base_url == f"http://127.0.0.1:{port}/v1"
  with pytest.raises(backends.TeacherHTTPError,
                     match="no HTTP response: gave up after 4 attempts.*[Rr]efused"):
    client.models()


def test_backoff_doubles_up_to_the_cap():
  policy = openai_backend.RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0)

  class Top:
    def uniform(self, a, b):
      return b

  assert [policy.delay(k, None, Top()) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
  assert policy.delay(0, 2.5, Top()) == 2.5 and policy.delay(0, 60.0, Top()) == 5.0
  with pytest.raises(ValueError, match="retries and backoffs"):
    openai_backend.RetryPolicy(max_retries=-1)


def test_concurrency_is_bounded_and_order_kept(stub_factory, make_client):
  concurrency, in_flight, peak = 3, [0], [0]
  lock = threading.Lock()
  # The first `concurrency` requests wait until all of them are in flight at once.
  barrier = threading.Barrier(concurrency, timeout=20)

  def handler(path, body):
    with lock:
      in_flight[0] += 1
      peak[0] = max(peak[0], in_flight[0])
      first = len(seen) < concurrency
      seen.append(body["messages"][0]["content"])
    if first:
      barrier.wait()
    with lock:
      in_flight[0] -= 1
    return 200, _reply(body["messages"][0]["content"].upper()), {}

  seen: list[str] = []
  stub = stub_factory(handler=handler)
  backend = openai_backend.OpenAIBackend(make_client(stub.url), model="m",
                                   concurrency=concurrency)
  texts = [f"q{i}" for i in range(10)]
  out = backend.complete([_request(t) for t in texts], temperature=0.0, seed=0)
  assert [c.text for c in out] == [t.upper() for t in texts]
  assert peak[0] == concurrency and sorted(seen) == sorted(texts)


def test_completions_api_and_model_from_the_server(stub_factory, make_client):
  def handler(path, body):
    if path == "/v1/models":
      return 200, {"object": "list", "data": [{"id": "served-model", "object": "model",
                                               "created": 0, "owned_by": "x"}]}, {}
    assert path == "/v1/completions"
    return 200, {**_reply(body["prompt"][::-1], finish="length"),
                 "object": "text_completion"}, {}

  stub = stub_factory(handler=handler)
  backend = openai_backend.OpenAIBackend(make_client(stub.url), api="completions")
  assert backend.teacher == "served-model"
  messages = (prompts.Message("system", "ab"), prompts.Message("user", "cd"))
  req = backends.Request("q", 6, messages, 8)
  (out,) = backend.complete([req], temperature=0.5, seed=1)
  assert out.text == "dc\n\nba" and not out.finished
  assert stub.requests[-1][2]["prompt"] == "ab\n\ncd"


# ------------------------------------------------------ server pieces ----


def test_stream_pieces_join_to_the_text_even_across_split_characters():
  tok = tiny_model.tiny_tokenizer()  # Byte-level: "é" and "🙂" span several tokens.
  for text in ["plain words", "héllo wörld 🙂!", "🙂", ""]:
    ids = tok.encode(text)
    pieces = list(serve.stream_pieces(tok.decode, ids, tok.decode(ids)))
    assert "".join(pieces) == tok.decode(ids) == text
    assert all(pieces) and "\ufffd" not in "".join(pieces)
  assert list(serve.stream_pieces(tok.decode, tok.encode("ab"), "ab")) == ["a", "b"]


class FakeTokenizer:
  """One token per character."""

  def encode(self, text):
    return [ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


class FakeGenerator:
  """Echoes prompts reversed; ``hold`` blocks a batch until set; 'POISON' fails a batch."""

  def __init__(self):
    self.config = type("Config", (), {"max_seq_len": 4096})()
    self.new_token_buckets = (64, 256)
    self.tokenizer = FakeTokenizer()
    self.chat_format = llama_chat.ChatFormat()
    self.hold, self.started, self.batches = threading.Event(), threading.Event(), []
    self.hold.set()

  def generate_ids(self, prompts_ids, *, max_new_tokens, temperature, seed):
    self.started.set()
    assert self.hold.wait(30)
    texts = ["".join(map(chr, p)) for p in prompts_ids]
    self.batches.append(texts)
    if any("POISON" in t for t in texts):
      raise RuntimeError("a bad row")
    return [(p[::-1][:n], min(len(p), n), len(p) <= n) for p, n in zip(prompts_ids, max_new_tokens)]


@pytest.fixture
def in_process():
  """The app over a FakeGenerator on a free 127.0.0.1 port, in a thread."""
  started = []

  def start(**kwargs):
    generator = FakeGenerator()
    service = serve.TeacherService(type("Backend", (), {"teacher": "fake",
                                                        "generator": generator})(), **kwargs)
    server = serve.make_server(serve.create_app(service))
    sock = serve.bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started.append((server, thread, service))
    return f"http://127.0.0.1:{sock.getsockname()[1]}", service, generator

  yield start
  for server, thread, service in started:
    server.should_exit = True
    thread.join(10)
    service.batcher.close(timeout=10)


def _post(url: str, path: str, body: Any, *, headers=None) -> tuple[int, dict[str, Any], Any]:
  """POST on a fresh connection; (status, JSON body, headers)."""
  host, port = url.removeprefix("http://").split(":")
  conn = http.client.HTTPConnection(host, int(port), timeout=60)
  try:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    response = conn.getresponse()
    return response.status, json.loads(response.read()), response.headers
  finally:
    conn.close()


def _wait_until(condition, timeout: float = 30.0) -> None:
  """Polls ``condition`` (state of another thread that has no event to wait on)."""
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.005)


def _assert_error(body: dict[str, Any], *, param: str | None = None) -> str:
  assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
  message = body["error"]["message"]
  assert "Traceback" not in message and "Error:" not in message, message
  if param is not None:
    assert body["error"]["param"] == param, body
  return message


def test_a_full_queue_answers_429_and_the_queued_are_served(in_process):
  url, service, generator = in_process(max_batch=1, max_queue=2)
  generator.hold.clear()
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    first = pool.submit(_post, url, "/v1/completions", {"prompt": "a1", "max_tokens": 4})
    assert generator.started.wait(30)  # The first is generating, held.
    queued = [pool.submit(_post, url, "/v1/completions", {"prompt": f"q{i}", "max_tokens": 4})
              for i in range(2)]
    _wait_until(lambda: service.batcher.waiting == 2)  # Both queued behind it.
    assert not any(f.done() for f in queued)
    status, body, headers = _post(url, "/v1/completions", {"prompt": "late"})
    assert status == 429 and headers["Retry-After"] == "1"
    assert _assert_error(body).startswith("the server is busy: 2 requests are already waiting")
    assert body["error"]["type"] == "rate_limit_error"
    generator.hold.set()
    replies = [f.result(timeout=30) for f in [first, *queued]]
  assert [r[0] for r in replies] == [200, 200, 200]
  assert sorted(r[1]["choices"][0]["text"] for r in replies) == ["0q", "1a", "1q"]
  assert sorted(map(tuple, generator.batches)) == [("a1",), ("q0",), ("q1",)]


def test_a_batch_that_fails_fails_only_its_culprit(in_process):
  url, service, generator = in_process(max_batch=8, max_queue=8)
  generator.hold.clear()
  prompts_ = ["first", "ok one", "POISON", "ok two"]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(_post, url, "/v1/completions", {"prompt": "first", "max_tokens": 8})]
    assert generator.started.wait(30)  # Held, so the other three wait and batch together.
    futures += [pool.submit(_post, url, "/v1/completions", {"prompt": p, "max_tokens": 8})
                for p in prompts_[1:]]
    _wait_until(lambda: service.batcher.waiting == 3)
    generator.hold.set()
    replies = [f.result(timeout=30) for f in futures]
  assert [r[0] for r in replies] == [200, 200, 500, 200]
  assert replies[1][1]["choices"][0]["text"] == "eno ko"
  assert _assert_error(replies[2][1]).startswith("the teacher failed to generate")
  batches = sorted(map(sorted, generator.batches))
  # The failed batch, then each of its rows alone.
  assert batches == [["POISON"], ["POISON", "ok one", "ok two"], ["first"], ["ok one"],
                     ["ok two"]]


def test_a_body_over_the_limit_is_refused_while_read(in_process):
  url, _, generator = in_process(max_body_bytes=64)
  status, reply, _ = _post(url, "/v1/completions", {"prompt": "x" * 100})
  assert status == 413 and "the body exceeds 64 bytes" in _assert_error(reply)
  status, reply, _ = _post(url, "/v1/completions", {"prompt": "short"})
  assert status == 200 and reply["choices"][0]["text"] == "trohs"
  assert generator.batches == [["short"]]


# ------------------------------------------------ the real server (jax) ----


# The server's command line, SIGKILLed on the completion request after argv[1] of them.
_DIES_AFTER_REQUESTS = """
import itertools, os, signal, sys
from cdc_jax.teacher import serve
limit, seen = int(sys.argv[1]), itertools.count(1)
count = serve.TeacherService.count_request
def count_or_die(self):
  count(self)
  if next(seen) > limit:
    os.kill(os.getpid(), signal.SIGKILL)
serve.TeacherService.count_request = count_or_die
serve.main(sys.argv[2:])
"""


class Served:
  """``python -m cdc_jax.teacher.serve --random_tiny`` on a free 127.0.0.1 port.

  With ``die_after_requests`` the server SIGKILLs itself on the completion
  request after that many (a fault injected by patching, see _DIES_AFTER_REQUESTS).
  """

  def __init__(self, *flags: str, cache: Path, die_after_requests: int | None = None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    self.log = (cache.parent / f"serve-{os.getpid()}-{id(self)}.log").open("w")
    command = (["-m", "cdc_jax.teacher.serve"] if die_after_requests is None
               else ["-c", _DIES_AFTER_REQUESTS, str(die_after_requests)])
    # Later servers reuse the first one's compiled programs.
    self.proc = subprocess.Popen(
        [sys.executable, *command, "--random_tiny", "--port", "0",
         "--jax_cache_dir", str(cache), *flags],
        stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
    line = self.proc.stdout.readline()  # Blocks until the port is bound.
    assert line.startswith("serving tiny_random on http://127.0.0.1:"), line
    self.root = line.split()[-1]
    self.url = self.root + "/v1"

  def client(self, **kwargs: Any) -> openai.OpenAI:
    """The official client, without retries unless asked."""
    return openai.OpenAI(base_url=self.url, api_key="unused",
                         **{"max_retries": 0, "timeout": 120, **kwargs})

  def stop(self) -> int:
    if self.proc.poll() is None:
      self.proc.kill()
    code = self.proc.wait(timeout=30)
    self.proc.stdout.close()
    self.log.close()
    return code


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("serve") / "jax_cache"


@pytest.fixture
def client(served):
  with served.client() as c:
    yield c


@pytest.fixture(scope="module")
def served(jax_cache):
  server = Served(cache=jax_cache)
  yield server
  assert server.proc.poll() is None, "the server died during the tests"
  server.stop()


def test_chat_completions_and_models_with_the_official_client(served, client):
  assert [m.id for m in client.models.list()] == ["tiny_random"]
  with urllib.request.urlopen(served.root + "/health", timeout=30) as response:
    assert json.load(response) == {"status": "ok", "model": "tiny_random"}
  reply = client.chat.completions.create(model="tiny_random", messages=USER, max_tokens=8)
  assert reply.model == "tiny_random" and reply.object == "chat.completion"
  choice = reply.choices[0]
  assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
  assert choice.finish_reason in ("stop", "length")
  # 'length' means the limit was reached; a stop token counts, so 'stop' may also reach 8.
  if choice.finish_reason == "length":
    assert reply.usage.completion_tokens == 8
  else:
    assert 1 <= reply.usage.completion_tokens <= 8
  assert reply.usage.prompt_tokens > 5
  assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
  again = client.chat.completions.create(model="tiny_random", messages=USER, max_tokens=8)
  assert again.choices[0].message.content == choice.message.content  # Greedy by default.
  text = client.completions.create(model="tiny_random", prompt="The sky is", max_tokens=6)
  assert text.object == "text_completion" and isinstance(text.choices[0].text, str)
  assert text.usage.prompt_tokens == len("The sky is")  # The tiny tokenizer is byte-level.


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_streaming_reassembles_to_the_unstreamed_reply(client, api):
  if api == "chat":
    create, kwargs = client.chat.completions.create, {"messages": USER}
  else:
    create, kwargs = client.completions.create, {"prompt": "Once upon a time"}
  whole = create(model="tiny_random", max_tokens=24, temperature=0, **kwargs)
  chunks = list(create(model="tiny_random", max_tokens=24, temperature=0, stream=True,
                       stream_options={"include_usage": True}, **kwargs))
  with_choices = [c for c in chunks if c.choices]
  if api == "chat":
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    expected = whole.choices[0].message.content
    assert with_choices[0].choices[0].delta.role == "assistant"
  else:
    text = "".join(c.choices[0].text for c in with_choices)
    expected = whole.choices[0].text
  assert text == expected and len(with_choices) >= 2
  assert len({c.id for c in chunks}) == 1
  assert [c.choices[0].finish_reason for c in with_choices][-1] == whole.choices[0].finish_reason
  assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_one_invalid_request_among_concurrent_valid_ones(client):
  limits = [8, 8, 10**9, 8, 8, 8]  # The third asks for a billion tokens.

  def ask(max_tokens: int) -> Any:
    try:
      return client.chat.completions.create(model="tiny_random", messages=USER,
                                            max_tokens=max_tokens)
    except openai.APIStatusError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(len(limits)) as pool:
    out = list(pool.map(ask, limits))
  bad = out.pop(2)
  assert isinstance(bad, openai.BadRequestError) and bad.param == "max_tokens"
  assert "max_tokens=1000000000 exceeds this server's limit of 256" in bad.message
  assert all(isinstance(r.choices[0].message.content, str) for r in out)


@pytest.mark.parametrize("body,param,needle", [
    ({"messages": USER, "seed": 2**70}, "seed", "less than or equal to 4294967295"),
    ({"messages": LONG, "max_tokens": 250}, "max_tokens", "exceed the model's context"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"messages": USER, "temperature": "hot"}, "temperature", "valid number"),
    ({"messages": USER, "n": 2}, "n", "n=2"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'system'"),
    ({"messages": []}, "messages", "at least 1 item"),
    ({"messages": USER, "model": "gpt-9"}, "model", "not served here"),
    (b'{"messages": [', None, "not valid JSON"),
    (b"\xff\xfe", None, "not UTF-8"),
    (b"[1, 2]", None, "must be a JSON object"),
])
def test_bad_requests_get_an_openai_error_body(served, body, param, needle):
  status, reply, _ = _post(served.root, "/v1/chat/completions", body)
  assert status == (404 if param == "model" else 400), reply
  assert needle in _assert_error(reply, param=param)


def test_malformed_http_and_unknown_routes_get_an_openai_error_body(served):
  port = int(served.root.rsplit(":", 1)[1])
  with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    raw = b""
    while chunk := s.recv(65536):
      raw += chunk
  head, _, data = raw.partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head.lower()
  assert "malformed HTTP request" in _assert_error(json.loads(data))
  status, reply, _ = _post(served.root, "/v1/nothing", {})
  assert status == 404 and "no route POST /v1/nothing" in _assert_error(reply)


def test_32_concurrent_clients_are_all_answered(served):
  def ask(i: int) -> int:
    status, reply, _ = _post(served.root, "/v1/completions",
                             {"prompt": f"question {i}", "max_tokens": 4})
    if status == 200:
      assert isinstance(reply["choices"][0]["text"], str)
    else:
      _assert_error(reply)
    return status

  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    statuses = list(pool.map(ask, range(32)))  # A reset would raise here.
  assert set(statuses) <= {200, 429} and statuses.count(200) >= 1


def test_a_client_leaving_mid_stream_does_not_break_the_server(served):
  port = int(served.root.rsplit(":", 1)[1])
  body = json.dumps({"messages": USER, "max_tokens": 64, "stream": True}).encode()
  for _ in range(2):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
      s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                b"\r\n\r\n" + body)
      first = s.recv(65536)  # Headers and the role chunk, sent before generation ends.
      assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
    # Gone: the rest of the stream has nowhere to go.
  with served.client() as client:
    reply = client.chat.completions.create(model="tiny_random", messages=USER, max_tokens=4)
  assert reply.choices[0].finish_reason in ("stop", "length")
  assert served.proc.poll() is None


def test_launcher_resumes_after_the_server_is_killed(tmp_path, served, jax_cache):
  synthetic.build_embedded_communities(
      tmp_path / "in", synthetic.SyntheticConfig(train_size=6, test_size=0, num_towns=20),
      communities=("strategy",))
  inp = tmp_path / "in" / "strategy"
  questions = launch.load_questions(inp)
  flags = ["--input", str(inp), "--out", str(tmp_path / "out"), "--backend", "openai",
           "--levels", "1,6", "--chunk_size", "2", "--max_new_tokens", "24",
           "--summary_max_new_tokens", "16", "--concurrency", "2", "--max_retries", "2",
           "--backoff_base_s", "0.001", "--progress_interval", "1000"]
  # 3 chunks of 2 questions, 4 requests each: the server dies on request 6, in chunk 1.
  first = Served(cache=jax_cache, die_after_requests=5)
  try:
    assert launch.main([*flags, "--base_url", first.url]) == 1
    assert first.stop() == -signal.SIGKILL
  finally:
    first.stop()
  parts = tmp_path / "out" / "traces-00000-of-00001.parts"
  assert [p.name for p in sorted(parts.glob("chunk-*.jsonl"))] == ["chunk-00000.jsonl"]

  client = openai_backend.OpenAIClient(served.url, retry=FAST)  # Resumed against another server.
  with pytest.raises(backends.TeacherHTTPError, match="HTTP 400.*exceed the model's context"):
    client.chat(model="tiny_random", messages=LONG, max_tokens=250, temperature=0.0, seed=0)
  client.close()
  assert launch.main([*flags, "--base_url", served.url]) == 0
  report = verify.verify_output(tmp_path / "out", questions)
  assert report.ok, str(report)
  assert report.teacher == "tiny_random" and report.levels == (1, 6)
  recs = records_lib.read_records(tmp_path / "out" / "traces-00000-of-00001.jsonl")
  ids = [r.id for r in recs] + [f.id for f in report.failures]
  assert sorted(ids) == sorted(r.id for r in questions.records)  # All, once each.
  assert all(r.provenance["teacher_backend"] == {"backend": "openai", "model": "tiny_random",
                                                 "api": "chat"} for r in recs)
