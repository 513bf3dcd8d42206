"""The teacher launcher: sharding, kill-and-resume, verify, prompts (oracle, tiny jax backend)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cdc_jax import answers
from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic
from cdc_jax.teacher import (backends, jax_backend, launch, oracle_backend, prompts, shards,
                             verify)

REPO = Path(__file__).resolve().parents[1]
CONFIG = synthetic.SyntheticConfig(train_size=14, test_size=6, num_towns=30)


@pytest.fixture(scope="module")
def communities(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("communities")
  synthetic.build_embedded_communities(out, CONFIG, communities=("strategy", "commonsense"))
  return out


def _flags(inp: Path, out: Path, *extra: str) -> list[str]:
  return ["--input", str(inp), "--out", str(out), "--backend", "oracle", "--chunk_size", "3",
          "--progress_interval", "1000", *extra]


def _subprocess(args: list[str]) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "cdc_jax.teacher.launch", *args], env=env,
                        capture_output=True, text=True, timeout=120, check=False)


# The launcher's command line with a fault injected by patching, then SIGKILL:
# "after_chunks N" once this run committed N chunks; "in_write_of_chunk I" while
# chunk I's records are written (its temp file full, the committing rename not done).
_KILLED = """
import os, signal, sys
from pathlib import Path
from cdc_jax.teacher import launch, shards
fault, n = sys.argv[1], int(sys.argv[2])
if fault == "after_chunks":
  commit, committed = shards.ShardWriter.commit_chunk, []
  def commit_then_die(self, chunk):
    commit(self, chunk)
    committed.append(chunk.index)
    if len(committed) == n:
      os.kill(os.getpid(), signal.SIGKILL)
  shards.ShardWriter.commit_chunk = commit_then_die
else:
  replace = os.replace
  def die_before_commit(src, dst, *args, **kwargs):
    if Path(dst).name == f"chunk-{n:05d}.jsonl":
      os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst, *args, **kwargs)
  os.replace = die_before_commit
sys.exit(launch.main(sys.argv[3:]))
"""


def _killed_subprocess(fault: str, n: int, args: list[str]) -> subprocess.CompletedProcess:
  """``python -m cdc_jax.teacher.launch ARGS`` with ``fault`` at ``n`` (see _KILLED)."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-c", _KILLED, fault, str(n), *args], env=env,
                        capture_output=True, text=True, timeout=120, check=False)


def _ids(path: Path) -> list[str]:
  return [r.id for r in records_lib.read_records(path)]


@pytest.mark.parametrize("fault,at,committed", [("after_chunks", 2, 2),
                                                ("in_write_of_chunk", 1, 1)])
def test_killed_run_resumes_to_the_uninterrupted_output(communities, tmp_path, fault, at,
                                                        committed):
  inp = communities / "commonsense"
  shard = ["--num_shards", "2", "--shard_index", "1"]
  assert launch.main(_flags(inp, tmp_path / "ref", *shard)) == 0

  out = tmp_path / "out"
  killed = _killed_subprocess(fault, at, _flags(inp, out, *shard))
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  parts = out / "traces-00001-of-00002.parts"
  assert sorted(p.name for p in parts.glob("chunk-*.jsonl")) == [
      f"chunk-{i:05d}.jsonl" for i in range(committed)]
  assert not (out / "traces-00001-of-00002.jsonl").exists()
  assert len(list(parts.glob(".*.tmp"))) == (1 if "write" in fault else 0)

  resumed = _subprocess(_flags(inp, out, *shard))
  assert resumed.returncode == 0, resumed.stderr
  assert f"({4 - committed} chunks run, {committed} resumed)" in resumed.stderr
  final = out / "traces-00001-of-00002.jsonl"
  assert final.read_bytes() == (tmp_path / "ref" / final.name).read_bytes()
  ids = _ids(final)
  assert len(ids) == len(set(ids)) == 10  # 20 questions, 2 shards.
  assert not parts.exists()
  # A third run finds the shard complete and changes nothing.
  again = _subprocess(_flags(inp, out, *shard))
  assert again.returncode == 0 and "already complete (10 records)" in again.stderr
  assert final.read_bytes() == (tmp_path / "ref" / final.name).read_bytes()


def test_resume_refuses_a_run_with_other_settings(communities, tmp_path):
  inp = communities / "strategy"
  killed = _killed_subprocess("after_chunks", 1, _flags(inp, tmp_path))
  assert killed.returncode == -signal.SIGKILL
  other = _subprocess(_flags(inp, tmp_path, "--levels", "1,6"))
  assert other.returncode == 1
  assert "different settings" in other.stderr and "levels" in other.stderr


def test_three_shards_partition_verify_and_become_a_community(communities, tmp_path):
  inp = communities / "strategy"
  questions = launch.load_questions(inp)
  out, dest = tmp_path / "out", tmp_path / "community"
  for i in range(3):
    assert launch.main(_flags(inp, out, "--num_shards", "3", "--shard_index", str(i),
                              "--levels", "1,3,6", "--write_community", str(dest))) == 0
    # Only the last shard to finish writes the community.
    assert (dest / "community.json").exists() == (i == 2)
  per_shard = [_ids(out / f"traces-{i:05d}-of-00003.jsonl") for i in range(3)]
  assert sorted(len(ids) for ids in per_shard) == [6, 7, 7]
  all_ids = [i for ids in per_shard for i in ids]
  assert sorted(all_ids) == sorted(r.id for r in questions.records)

  report = verify.verify_output(out, questions)
  assert report.ok, str(report)
  assert report.levels == (1, 3, 6) and report.teacher == "oracle"
  assert dict(report.records) == {"train": 14, "test": 6} and not report.failures
  # The oracle replays the embedded teacher: same answers, same rationale lengths.
  for split in ("train", "test"):
    assert report.correct[split] == sum(r.teacher_correct for r in questions.records
                                        if r.split == split)
  for level in (1, 3, 6):
    words = [prompts.word_count(r.rationales[level]) for r in questions.records]
    assert report.mean_words()[level] == pytest.approx(sum(words) / len(words))
  assert "teacher accuracy" in str(report) and "L6 " in str(report)

  community = records_lib.load_community(dest)
  assert community.manifest.levels == (1, 3, 6) and community.manifest.teacher == "oracle"
  by_id = {r.id: r for r in questions.records}
  traced = [r for split in ("train", "test") for r in community.records[split]]
  assert [r.id for r in traced] == [r.id for r in questions.records]  # Input order.
  for r in traced:
    src = by_id[r.id]
    assert r.rationales == {k: src.rationales[k] for k in (1, 3, 6)}
    assert r.teacher_answer == answers.extract_answer(
        f"{src.rationales[6]} So the answer is {src.teacher_answer}.", "boolean")
    assert r.provenance["prompts"]["hash"] == prompts.prompts_hash()
    assert r.provenance["prompts"]["summary"] == prompts.SUMMARY_TEMPLATE
    assert r.provenance["question_provenance"] == dict(src.provenance)
  assert verify.main(["--input", str(inp), "--out", str(out)]) == 0


def _tamper(src: Path, dst: Path, edit) -> Path:
  shutil.copytree(src, dst)
  path = dst / "traces-00000-of-00002.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(edit(lines)))
  return dst


def test_verify_reports_what_is_wrong(communities, tmp_path):
  inp = communities / "strategy"
  questions = launch.load_questions(inp)
  good = tmp_path / "good"
  for i in range(2):
    assert launch.main(_flags(inp, good, "--num_shards", "2", "--shard_index", str(i))) == 0
  assert verify.verify_output(good, questions).ok

  def drop_level(lines):
    obj = json.loads(lines[0])
    del obj["rationales"]["4"]
    return [json.dumps(obj) + "\n"] + lines[1:]

  cases = {
      "duplicate": (lambda lines: lines + lines[:1], "duplicate id"),
      "level": (drop_level, "levels [1, 2, 3, 5, 6], expected [1, 2, 3, 4, 5, 6]"),
      "missing": (lambda lines: lines[1:], "neither traced nor failed"),
  }
  for name, (edit, message) in cases.items():
    report = verify.verify_output(_tamper(good, tmp_path / name, edit), questions)
    assert not report.ok and any(message in e for e in report.errors), (name, report.errors)
  report = verify.verify_output(_tamper(good, tmp_path / "count", lambda l: l[1:]), questions)
  assert any("meta says 10 records, the file holds 9" in e for e in report.errors)
  (tmp_path / "count" / "traces-00001-of-00002.jsonl").unlink()
  report = verify.verify_output(tmp_path / "count", questions)
  assert report.missing == [1] and not report.ok
  assert verify.main(["--input", str(inp), "--out", str(tmp_path / "count")]) == 1
  with pytest.raises(ValueError, match="not writing a community"):
    verify.write_output_community(tmp_path / "level", questions, tmp_path / "nowhere")


class _Flaky(oracle_backend.OracleBackend):
  """The oracle, but with nothing to say about one question's CoT or its level-1 summary."""

  def __init__(self, records, *, empty_cot: str, empty_summary: str):
    super().__init__(records)
    self.empty = {(empty_cot, 6), (empty_summary, 1)}

  def complete(self, requests, *, temperature, seed):
    out = super().complete(requests, temperature=temperature, seed=seed)
    return [backends.Completion("  " if (r.record_id, r.level) in self.empty
                                else "The answer is yes." if r.level == 2 else c.text,
                                c.prompt_tokens, c.completion_tokens, c.finished)
            for r, c in zip(requests, out)]


def test_failures_are_counted_not_dropped(communities, tmp_path):
  questions = launch.load_questions(communities / "strategy", splits=("test",))
  assert {r.split for r in questions.records} == {"test"} and len(questions.records) == 6
  a, b = questions.records[1].id, questions.records[4].id
  backend = _Flaky(questions.records, empty_cot=a, empty_summary=b)
  result = launch.run_shard(questions, backend, out_dir=tmp_path, chunk_size=4,
                            settings=launch.TraceSettings(levels=(1, 6)), progress_interval=1e3)
  assert (result.records, result.failures) == (4, 2)
  report = verify.verify_output(tmp_path, questions)
  assert report.ok, str(report)
  assert sorted((f.id, f.level, f.reason) for f in report.failures) == sorted(
      [(a, 6, "empty CoT"), (b, 1, "empty summary")])
  # A level whose summary is only an answer sentence has no rationale left.
  backend = _Flaky(questions.records, empty_cot="-", empty_summary="-")
  result = launch.run_shard(questions, backend, out_dir=tmp_path / "l2", chunk_size=6,
                            settings=launch.TraceSettings(levels=(2, 6)), progress_interval=1e3)
  assert (result.records, result.failures) == (0, 6)


def test_jsonl_input_and_split_selection(communities, tmp_path):
  community = records_lib.load_community(communities / "commonsense")
  path = tmp_path / "questions.jsonl"
  records_lib.write_records(path, [*community.records["train"], *community.records["test"]])
  questions = launch.load_questions(path, splits=("test",))
  assert (questions.community, questions.answer_type, questions.license) == (
      "commonsense", "choice", "CC0-1.0")
  assert [r.id for r in questions.records] == [r.id for r in community.records["test"]]
  out = tmp_path / "out"
  assert launch.main(_flags(path, out, "--splits", "test", "--community", "cqa_traced")) == 0
  recs = records_lib.read_records(out / "traces-00000-of-00001.jsonl")
  assert {r.community for r in recs} == {"cqa_traced"} and len(recs) == 6
  assert all(r.teacher_answer in r.choices for r in recs)
  assert launch.main(_flags(path, tmp_path / "x", "--splits", "validation")) == 1


def test_prompts_state_budgets_and_hash_tracks_templates(communities, monkeypatch):
  record = launch.load_questions(communities / "commonsense").records[0]
  (cot,) = prompts.cot_messages(record)
  assert cot.role == "user" and record.question in cot.content
  assert "\nA. " + record.choices[0] in cot.content and "\nE. " + record.choices[4] in cot.content
  full = " ".join(["word"] * 50)
  assert [prompts.word_budget(k, full) for k in (5, 4, 3, 2, 1)] == [30, 40, 25, 15, 8]
  assert prompts.word_budget(5, "a b c") == prompts.MIN_WORDS
  (summary,), words = prompts.summary_messages(record, full, 1)
  assert words == 8 and "to its one key step, in about 8 words" in summary.content
  assert full in summary.content
  assert prompts.summary_max_new_tokens(8, cap=128) == 32
  assert prompts.summary_max_new_tokens(15, cap=128) == 64  # 46 rounded up to a power of 2.
  assert prompts.summary_max_new_tokens(100, cap=128) == 128
  with pytest.raises(ValueError, match="full CoT"):
    prompts.word_budget(6, full)
  before = prompts.prompts_hash()
  monkeypatch.setattr(prompts, "SUMMARY_TEMPLATE", prompts.SUMMARY_TEMPLATE + " Be brief.")
  assert prompts.prompts_hash() != before


def test_shard_assignment_is_balanced_and_order_free():
  ids = [f"q{i}" for i in range(101)]
  a = shards.shard_assignment(ids, 4)
  assert a == shards.shard_assignment(list(reversed(ids)), 4)
  sizes = sorted(list(a.values()).count(s) for s in range(4))
  assert sizes == [25, 25, 25, 26]
  with pytest.raises(ValueError, match="shard_index=4"):
    shards.shard_stem(4, 4)


def test_jax_backend_with_a_tiny_random_model(communities, tmp_path):
  questions = launch.load_questions(communities / "strategy", splits=("test",))
  backend = jax_backend.JaxBackend.random_tiny()
  settings = launch.TraceSettings(levels=(1, 6), max_new_tokens=24, summary_max_new_tokens=16)
  result = launch.run_shard(questions, backend, out_dir=tmp_path, chunk_size=3,
                            settings=settings, progress_interval=1e3)
  assert result.records + result.failures == 6
  report = verify.verify_output(tmp_path, questions)
  assert report.ok, str(report)
  meta = shards.read_meta(tmp_path, 0, 1)
  # 6 CoTs of at most 24 tokens, then 6 summaries of at most 16 (noise rarely stops early).
  assert meta["stats"]["requests"] == 6 + (6 - sum(f["level"] == 6 for f in meta["failures"]))
  assert meta["stats"]["completion_tokens"] <= 6 * 24 + 6 * 16
  assert meta["config"]["backend"] == {"backend": "jax", "model": "tiny_random",
                                       "weights": "random(seed=0)", "dtype": "float32",
                                       "kernels": "xla"}


def test_rationale_is_the_reply_without_its_answer_sentence():
  assert launch.rationale_text("Bats are mammals.\n So the answer is yes.") == "Bats are mammals."
  # Answer first, reasoning after it (small teachers do this).
  assert launch.rationale_text("The answer is no. Dogs swim 3.5 km.\nThey tire.") == (
      "Dogs swim 3.5 km. They tire.")
  assert launch.rationale_text("  The answer is no.  ") == ""
  assert launch.rationale_text("") == ""


def test_batch_sizes_avoid_padding_but_not_tiny_batches():
  buckets = (1, 2, 4, 8, 16, 32, 64)
  assert jax_backend.batch_sizes(40, buckets) == [32, 8]  # Not one batch of 64 with 24 pads.
  assert jax_backend.batch_sizes(80, buckets) == [64, 16]
  assert jax_backend.batch_sizes(17, buckets) == [17]  # 16 + 1 would add a decode loop for 1 row.
  assert jax_backend.batch_sizes(0, buckets) == []
  assert jax_backend.batch_sizes(6, (4,)) == [4, 2]
