"""The OpenAI-compatible client (retries, errors, concurrency) and server (tiny random model)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic
from cdc_jax.teacher import backends, launch, prompts, verify
from tests import ports

REPO = Path(__file__).resolve().parents[1]
FAST = backends.RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01, timeout_s=30)


def _reply(text: str, finish: str = "stop") -> dict[str, Any]:
  return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "text": text, "finish_reason": finish}],
          "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


class Stub:
  """A local HTTP server answering from a script of (status, body, headers); records requests."""

  def __init__(self, script=None, *, handler=None):
    self.script, self.requests, self.lock = list(script or []), [], threading.Lock()
    stub = self

    class Handler(http.server.BaseHTTPRequestHandler):
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


def _request(text="hi", level=6, max_new=16):
  return backends.Request("q1", level, (prompts.Message("user", text),), max_new)


def test_retries_429_and_5xx_then_succeeds(stub_factory):
  stub = stub_factory([(429, {"error": "slow down"}, {"Retry-After": "0"}),
                       (503, {"error": "busy"}, {}), (200, _reply("ok. The answer is yes."), {})])
  backend = backends.OpenAIBackend(backends.OpenAIClient(stub.url, retry=FAST), model="m")
  (out,) = backend.complete([_request()], temperature=0.0, seed=3)
  assert out == backends.Completion("ok. The answer is yes.", 7, 3, True)
  assert len(stub.requests) == 3
  method, path, body = stub.requests[-1]
  assert (method, path) == ("POST", "/v1/chat/completions")
  assert body == {"model": "m", "max_tokens": 16, "temperature": 0.0, "seed": 3,
                  "messages": [{"role": "user", "content": "hi"}]}


def test_other_4xx_raises_at_once_with_status_and_body(stub_factory):
  stub = stub_factory([(400, {"error": {"message": "max_tokens too large"}}, {})])
  backend = backends.OpenAIBackend(backends.OpenAIClient(stub.url, retry=FAST), model="m")
  with pytest.raises(backends.TeacherHTTPError, match="HTTP 400.*max_tokens too large") as e:
    backend.complete([_request()], temperature=0.0, seed=0)
  assert e.value.status == 400 and len(stub.requests) == 1


def test_gives_up_after_the_last_retry(stub_factory):
  stub = stub_factory([(500, {"error": "down"}, {})] * 4)
  client = backends.OpenAIClient(stub.url, retry=FAST)
  with pytest.raises(backends.TeacherHTTPError, match="gave up after 4 attempts.*HTTP 500"):
    client.request("/chat/completions", {"model": "m"})
  assert len(stub.requests) == 4
  port = ports.free_port()  # A port nobody listens on: connection refused, retried.
  client = backends.OpenAIClient(f"http://127.0.0.1:{port}", retry=FAST)
  assert client.base_url == f"http://127.0.0.1:{port}/v1"
  with pytest.raises(backends.TeacherHTTPError, match="gave up after 4 attempts.*refused"):
    client.models()


def test_backoff_doubles_up_to_the_cap():
  policy = backends.RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0)

  class Top:
    def uniform(self, a, b):
      return b

  assert [policy.delay(k, None, Top()) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
  assert policy.delay(0, 2.5, Top()) == 2.5 and policy.delay(0, 60.0, Top()) == 5.0


def test_concurrency_is_bounded_and_order_kept(stub_factory):
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
  backend = backends.OpenAIBackend(backends.OpenAIClient(stub.url, retry=FAST), model="m",
                                   concurrency=concurrency)
  texts = [f"q{i}" for i in range(10)]
  out = backend.complete([_request(t) for t in texts], temperature=0.0, seed=0)
  assert [c.text for c in out] == [t.upper() for t in texts]
  assert peak[0] == concurrency and sorted(seen) == sorted(texts)


def test_completions_api_and_model_from_the_server(stub_factory):
  def handler(path, body):
    if path == "/v1/models":
      return 200, {"object": "list", "data": [{"id": "served-model"}]}, {}
    assert path == "/v1/completions"
    return 200, _reply(body["prompt"][::-1], finish="length"), {}

  stub = stub_factory(handler=handler)
  backend = backends.OpenAIBackend(backends.OpenAIClient(stub.url, retry=FAST), api="completions")
  assert backend.teacher == "served-model"
  messages = (prompts.Message("system", "ab"), prompts.Message("user", "cd"))
  req = backends.Request("q", 6, messages, 8)
  (out,) = backend.complete([req], temperature=0.5, seed=1)
  assert out.text == "dc\n\nba" and not out.finished
  assert stub.requests[-1][2]["prompt"] == "ab\n\ncd"


# ------------------------------------------------ the real server (jax) ----


class Served:
  """``python -m cdc_jax.teacher.serve --random_tiny`` on a free 127.0.0.1 port."""

  def __init__(self, *flags: str, cache: Path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # The restarted server reuses the first one's compiled programs.
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "cdc_jax.teacher.serve", "--random_tiny", "--port", "0",
         "--jax_cache_dir", str(cache), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = self.proc.stdout.readline()  # Blocks until the port is bound.
    assert line.startswith("serving tiny_random on http://127.0.0.1:"), line
    self.url = line.split()[-1] + "/v1"

  def stop(self) -> int:
    if self.proc.poll() is None:
      self.proc.kill()
    return self.proc.wait(timeout=30)


def test_launcher_resumes_after_the_server_is_killed(tmp_path):
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
  first = Served("--die_after_requests", "5", cache=tmp_path / "jax_cache")
  try:
    assert launch.main([*flags, "--base_url", first.url]) == 1
    assert first.stop() == -signal.SIGKILL
  finally:
    first.stop()
  parts = tmp_path / "out" / "traces-00000-of-00001.parts"
  assert [p.name for p in sorted(parts.glob("chunk-*.jsonl"))] == ["chunk-00000.jsonl"]

  second = Served(cache=tmp_path / "jax_cache")
  try:
    client = backends.OpenAIClient(second.url, retry=FAST)
    health = second.url[:-len("/v1")] + "/health"
    with urllib.request.urlopen(health, timeout=30) as response:
      assert json.load(response) == {"status": "ok", "model": "tiny_random"}
    assert client.models() == ["tiny_random"]
    with pytest.raises(backends.TeacherHTTPError, match="HTTP 400.*exceed max_seq_len"):
      client.request("/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                           "max_tokens": 5000})
    with pytest.raises(backends.TeacherHTTPError, match="HTTP 400.*streaming"):
      client.request("/chat/completions", {"messages": [], "stream": True})
    assert launch.main([*flags, "--base_url", second.url]) == 0
  finally:
    second.stop()
  report = verify.verify_output(tmp_path / "out", questions)
  assert report.ok, str(report)
  assert report.teacher == "tiny_random" and report.levels == (1, 6)
  recs = records_lib.read_records(tmp_path / "out" / "traces-00000-of-00001.jsonl")
  ids = [r.id for r in recs] + [f.id for f in report.failures]
  assert sorted(ids) == sorted(r.id for r in questions.records)  # All, once each.
  assert all(r.provenance["teacher_backend"] == {"backend": "openai", "model": "tiny_random",
                                                 "api": "chat"} for r in recs)
