r"""Teacher launcher: chain-of-thought traces for a community's questions, sharded and resumable.

  python -m cdc_jax.teacher.launch --input=/tmp/cdc_communities/strategy \
      --out=/tmp/traces/strategy --backend=oracle --shard_index=0 --num_shards=1 \
      [--splits=train,test] [--levels=1,2,3,4,5,6] [--write_community=/tmp/traced/strategy]

For every question of the shard the teacher writes the full CoT (level 6;
its parsed answer becomes ``teacher_answer``), then summarises it at each
lower level asked for (prompts and word budgets: :mod:`cdc_jax.teacher.prompts`).
Output: ``<out>/traces-SSSSS-of-NNNNN.jsonl`` of TraceRecords, committed
chunk by chunk (:mod:`cdc_jax.teacher.shards`); re-running the same command
after a crash resumes. ``launch/teacher_traces.sh`` runs N shards;
``python -m cdc_jax.teacher.verify`` checks the output and writes it as a
community directory. Backends: ``jax`` (default SmolLM2-135M-Instruct GGUF),
``openai`` (any OpenAI-compatible server, e.g. ``python -m cdc_jax.teacher.serve``)
and ``oracle`` (the embedded benchmark's rationales, for fast runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax import progress as progress_lib
from cdc_jax.data import records as records_lib
from cdc_jax.teacher import backends as backends_lib
from cdc_jax.teacher import jax_setup, oracle_backend, prompts, shards, verify
from cdc_jax.teacher.questions import (Questions, add_input_flags, input_fingerprint,
                                      load_questions, parse_levels)

# ------------------------------------------------------------- tracing ----


# Defaults of run_shard and its flags.
CHUNK_SIZE = 16
PROGRESS_INTERVAL_S = 5.0


@dataclasses.dataclass(frozen=True)
class TraceSettings:
  """What to ask the teacher and how (everything that shapes the output).

  These are the defaults of the launcher's flags of the same names too.
  """
  levels: tuple[int, ...] = names.LEVELS
  max_new_tokens: int = 256
  summary_max_new_tokens: int = 128
  temperature: float = 0.0
  seed: int = 0

  def __post_init__(self):
    if not self.levels:
      raise ValueError("levels is empty: ask for at least one level")
    for level in self.levels:
      names.validate_level(level)
    if self.max_new_tokens < 1 or self.summary_max_new_tokens < 1:
      raise ValueError("max_new_tokens and summary_max_new_tokens must be >= 1")


_SETTINGS = TraceSettings()  # The flags' defaults.


# An answer stated first ("The answer is no. Dogs cannot ..."): up to the end of its sentence.
_LEADING_ANSWER = re.compile(
    r"\A\s*(?:so,?\s+)?the\s+(?:final\s+)?answer\s+is\b.*?(?:[.!?](?=\s|\Z)|\n|\Z)",
    re.IGNORECASE | re.DOTALL)


def rationale_text(reply: str) -> str:
  """The rationale in a teacher's reply: without its answer sentence, on one line.

  Small teachers often state the answer first and reason after it; then the
  reasoning that follows is the rationale.

  >>> rationale_text("Bats are mammals. So the answer is yes.")
  'Bats are mammals.'
  >>> rationale_text("The answer is no. Dogs cannot swim 3.5 km.")
  'Dogs cannot swim 3.5 km.'
  >>> rationale_text("The answer is no.")
  ''
  """
  kept = answers_lib.strip_answer_sentence(reply)
  if not kept:
    rest = _LEADING_ANSWER.sub("", reply, count=1)
    if rest != reply:
      kept = answers_lib.strip_answer_sentence(rest)
  return " ".join(kept.split())


def _ask_cots(items: Sequence[records_lib.TraceRecord], backend: backends_lib.Backend, *,
              settings: TraceSettings, seed: int
              ) -> tuple[dict[str, tuple[str, backends_lib.Completion]], list[shards.Failure],
                         list[backends_lib.Completion]]:
  """Full CoTs: id -> (rationale without the answer sentence, completion); failures."""
  requests = [backends_lib.Request(r.id, names.FULL_COT_LEVEL, prompts.cot_messages(r),
                                   settings.max_new_tokens) for r in items]
  cots = backend.complete(requests, temperature=settings.temperature, seed=seed)
  full, failures = {}, []
  for r, c in zip(items, cots):
    rationale = rationale_text(c.text)
    if rationale:
      full[r.id] = (rationale, c)
    else:
      reason = "CoT states only the answer" if c.text.strip() else "empty CoT"
      failures.append(shards.Failure(r.id, r.split, names.FULL_COT_LEVEL, reason))
  return full, failures, cots


def _ask_summaries(items: Sequence[records_lib.TraceRecord], full: dict[str, tuple[str, Any]],
                   backend: backends_lib.Backend, *, levels: Sequence[int],
                   settings: TraceSettings, seed: int
                   ) -> tuple[dict[tuple[str, int], tuple[str, int]],
                              list[backends_lib.Completion]]:
  """(id, level) -> (summary without any answer sentence, its word budget), for every CoT."""
  requests, budgets = [], []
  for r in items:
    if r.id not in full:
      continue
    for level in levels:
      messages, words = prompts.summary_messages(r, full[r.id][0], level)
      budgets.append(words)
      requests.append(backends_lib.Request(
          r.id, level, messages,
          prompts.summary_max_new_tokens(words, cap=settings.summary_max_new_tokens)))
  out = backend.complete(requests, temperature=settings.temperature, seed=seed)
  texts = {(q.record_id, q.level): (rationale_text(c.text), words)
           for q, c, words in zip(requests, out, budgets)}
  return texts, out


def trace_chunk(items: Sequence[records_lib.TraceRecord], backend: backends_lib.Backend, *,
                settings: TraceSettings, community: str, chunk_index: int,
                shard_stem: str) -> shards.Chunk:
  """Asks the teacher for one chunk: the full CoTs, then their summaries (one batch each)."""
  start = time.perf_counter()
  seed = settings.seed + chunk_index
  full, failures, cots = _ask_cots(items, backend, settings=settings, seed=seed)
  summary_levels = sorted((l for l in settings.levels if l != names.FULL_COT_LEVEL), reverse=True)
  summaries, summary_out = _ask_summaries(items, full, backend, levels=summary_levels,
                                          settings=settings, seed=seed)
  records = []
  for r in items:
    if r.id not in full:
      continue
    rationale, cot = full[r.id]
    levels = {l: summaries[r.id, l][0] for l in summary_levels}
    empty = [l for l, t in levels.items() if not t]
    if empty:  # Nothing left once the answer sentence is cut: no rationale at that level.
      failures.append(shards.Failure(r.id, r.split, max(empty), "empty summary"))
      continue
    if names.FULL_COT_LEVEL in settings.levels:
      levels[names.FULL_COT_LEVEL] = rationale
    provenance = {
        "source": r.provenance["source"], "license": r.provenance["license"],
        "question_provenance": dict(r.provenance), "teacher_backend": backend.describe(),
        "prompts": prompts.prompts_provenance(),
        "generation": {"shard": shard_stem, "chunk": chunk_index, "seed": seed,
                       "temperature": settings.temperature, "cot_tokens": cot.completion_tokens,
                       "cot_finished": cot.finished,
                       "summary_word_budgets": {str(l): summaries[r.id, l][1]
                                                for l in summary_levels}},
    }
    records.append(records_lib.TraceRecord(
        id=r.id, community=community, split=r.split, question=r.question, answer=r.answer,
        answer_type=r.answer_type, rationales=levels, choices=r.choices, teacher=backend.teacher,
        teacher_answer=answers_lib.extract_answer(cot.text, r.answer_type, r.choices),
        provenance=provenance))
  everything = list(cots) + list(summary_out)
  stats = {"seconds": time.perf_counter() - start, "requests": len(everything),
           "prompt_tokens": sum(c.prompt_tokens for c in everything),
           "completion_tokens": sum(c.completion_tokens for c in everything),
           "truncated": sum(not c.finished for c in everything)}
  return shards.Chunk(index=chunk_index, records=tuple(records), failures=tuple(failures),
                      stats=stats)


@dataclasses.dataclass(frozen=True)
class ShardResult:
  """What one launcher run did for its shard."""
  path: Path
  records: int
  failures: int
  chunks_run: int
  chunks_resumed: int


def run_shard(questions: Questions, backend: backends_lib.Backend, *, out_dir: str | os.PathLike,
              shard_index: int = 0, num_shards: int = 1, chunk_size: int = CHUNK_SIZE,
              settings: TraceSettings = TraceSettings(), community: str | None = None,
              progress_interval: float = PROGRESS_INTERVAL_S, group: Any = None) -> ShardResult:
  """Traces one shard, resuming whatever a previous run committed.

  A run killed at any moment (tests SIGKILL it between and inside chunk
  commits) resumes to the output of an uninterrupted one. ``group`` (a
  ``distributed.ProcessGroup``): the processes of a multi-host teacher run this
  together; the lead reads and writes the shard files and tells the others
  which chunks are left.
  """
  community = names.validate_name(community or questions.community)
  items = shards.select_shard(questions.records, shard_index, num_shards)
  pieces = shards.chunks(items, chunk_size)
  stem = shards.shard_stem(shard_index, num_shards)
  shared = group is not None and group.count > 1
  if shared and not group.is_lead:
    return _follow_shard(pieces, backend, settings=settings, community=community, stem=stem,
                         group=group)
  run_config = {
      "community": community, "input": input_fingerprint(questions),
      "shard_index": shard_index, "num_shards": num_shards, "chunk_size": chunk_size,
      "items": len(items), "backend": backend.describe(), "teacher": backend.teacher,
      "prompts_hash": prompts.prompts_hash(), **dataclasses.asdict(settings),
      "levels": sorted(settings.levels),
  }
  writer = shards.ShardWriter(out_dir, shard_index=shard_index, num_shards=num_shards,
                              run_config=run_config)
  if writer.is_complete():
    writer.check_complete()
    writer.cleanup_after_complete()
    meta = shards.read_meta(out_dir, shard_index, num_shards)
    print(f"{stem}: already complete ({meta['records']} records)", file=sys.stderr)
    if shared:
      group.share([1] * len(pieces), length=len(pieces))
    return ShardResult(writer.final_path, meta["records"], len(meta["failures"]), 0, 0)
  writer.open()
  done = writer.done_chunks()
  for index, chunk in done.items():
    expected = [r.id for r in pieces[index]] if index < len(pieces) else []
    got = sorted([r.id for r in chunk.records] + [f.id for f in chunk.failures])
    if got != sorted(expected):
      raise ValueError(f"{writer.parts_dir}: chunk {index} holds other questions than the "
                       "input's; the input changed since it was written")
  if shared:
    group.share([int(i in done) for i in range(len(pieces))], length=len(pieces))
  resumed = len(done)
  bar = progress_lib.Progress(len(items), label=stem, unit="q", interval=progress_interval,
                              start=sum(len(pieces[i]) for i in done))
  tokens, seconds, run = 0, 0.0, 0
  for index, piece in enumerate(pieces):
    if index in done:
      continue
    chunk = trace_chunk(piece, backend, settings=settings, community=community,
                        chunk_index=index, shard_stem=stem)
    writer.commit_chunk(chunk)
    done[index] = chunk
    run += 1
    tokens += int(chunk.stats["completion_tokens"])
    seconds += chunk.stats["seconds"]
    bar.update(len(piece), extra=f"{tokens / max(seconds, 1e-9):.1f} tok/s, "
                                 f"{len(chunk.failures)} failed")
  meta = writer.finalize(done, num_chunks=len(pieces))
  print(f"{stem}: {meta['records']} records, {len(meta['failures'])} failures "
        f"({run} chunks run, {resumed} resumed) -> {writer.final_path}", file=sys.stderr)
  return ShardResult(writer.final_path, meta["records"], len(meta["failures"]), run, resumed)


def _follow_shard(pieces: Sequence[Sequence[records_lib.TraceRecord]],
                  backend: backends_lib.Backend, *, settings: TraceSettings, community: str,
                  stem: str, group: Any) -> ShardResult:
  """A non-lead process of a multi-host teacher: the lead's chunks, nothing written."""
  done = group.share([], length=len(pieces))
  records = failures = run = 0
  for index, piece in enumerate(pieces):
    if done[index]:
      continue
    chunk = trace_chunk(piece, backend, settings=settings, community=community,
                        chunk_index=index, shard_stem=stem)
    records, failures, run = records + len(chunk.records), failures + len(chunk.failures), run + 1
  print(f"{stem}: process {group.index} of {group.count} ran {run} chunks with the lead "
        "(process 0 writes them)", file=sys.stderr)
  return ShardResult(Path(), records, failures, run, sum(done))


# ----------------------------------------------------------------- CLI ----


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.teacher.launch",
                                   description=__doc__.split("\n")[0])
  add_input_flags(parser)
  parser.add_argument("--out", required=True, help="output directory of the shard files")
  parser.add_argument("--backend", choices=backends_lib.BACKENDS, default="jax")
  parser.add_argument("--levels", type=parse_levels, default=_SETTINGS.levels,
                      help="e.g. 1,6 (default all)")
  parser.add_argument("--shard_index", type=int, default=0)
  parser.add_argument("--num_shards", type=int, default=1)
  parser.add_argument("--chunk_size", type=int, default=CHUNK_SIZE,
                      help="questions per committed chunk")
  parser.add_argument("--community", default=None, help="output community name (default: input's)")
  parser.add_argument("--max_new_tokens", type=int, default=_SETTINGS.max_new_tokens,
                      help="for the full CoT")
  parser.add_argument("--summary_max_new_tokens", type=int,
                      default=_SETTINGS.summary_max_new_tokens)
  parser.add_argument("--temperature", type=float, default=_SETTINGS.temperature)
  parser.add_argument("--seed", type=int, default=_SETTINGS.seed)
  parser.add_argument("--write_community", default=None,
                      help="after this shard: if every shard is done and verifies, write the "
                           "traces as a community directory here")
  parser.add_argument("--progress_interval", type=float, default=PROGRESS_INTERVAL_S,
                      help="seconds")
  jax_setup.add_jax_flags(parser.add_argument_group("jax backend"))
  api = parser.add_argument_group("openai backend")
  api.add_argument("--base_url", default="http://127.0.0.1:8000/v1")
  api.add_argument("--model", default=None, help="default: the first model the server lists")
  api.add_argument("--api", choices=backends_lib.OPENAI_APIS, default="chat")
  api.add_argument("--api_key_env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (unset: no key)")
  # Unset: the defaults of OpenAIBackend and RetryPolicy (imported only for this backend).
  api.add_argument("--concurrency", type=int, default=None, help="default: OpenAIBackend's")
  for flag, kind in (("timeout_s", float), ("max_retries", int), ("backoff_base_s", float),
                     ("backoff_max_s", float)):
    api.add_argument(f"--{flag}", type=kind, default=None, help="default: RetryPolicy's")
  args = parser.parse_args(argv)
  # Refused here, before any input is read or any model loads (minutes for a large teacher).
  try:
    shards.check_shard_flags(args.shard_index, args.num_shards, chunk_size=args.chunk_size)
  except ValueError as e:
    parser.error(str(e))
  return args


def _given(args: argparse.Namespace, *flags: str) -> dict[str, Any]:
  """The ``flags`` set on the command line (unset ones keep the callee's defaults)."""
  return {f: getattr(args, f) for f in flags if getattr(args, f) is not None}


def make_backend(args: argparse.Namespace, questions: Questions) -> backends_lib.Backend:
  """The backend the flags ask for."""
  if args.backend == "oracle":
    return oracle_backend.OracleBackend(questions.records)
  if args.backend == "jax":
    return jax_setup.backend_from_flags(args, seed=args.seed)
  from cdc_jax.teacher import openai_backend  # Deferred: imports the openai SDK.
  retry = openai_backend.RetryPolicy(**_given(args, "max_retries", "backoff_base_s",
                                              "backoff_max_s", "timeout_s"))
  client = openai_backend.OpenAIClient(args.base_url, api_key=os.environ.get(args.api_key_env),
                                       retry=retry)
  return openai_backend.OpenAIBackend(client, model=args.model, api=args.api,
                                      **_given(args, "concurrency"))


def main(argv: Sequence[str] | None = None) -> int:
  """Runs one shard; returns the exit status (1 with a message on bad input or a refusal)."""
  args = parse_args(argv)
  try:
    questions = load_questions(args.input, splits=args.splits)
    backend = make_backend(args, questions)
    settings = TraceSettings(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(TraceSettings)})
    group = None
    if args.backend == "jax":
      from cdc_jax import distributed  # Deferred: imports jax.
      group = distributed.ProcessGroup()
    run_shard(questions, backend, out_dir=args.out, shard_index=args.shard_index,
              num_shards=args.num_shards, chunk_size=args.chunk_size, settings=settings,
              community=args.community, progress_interval=args.progress_interval, group=group)
    if args.write_community and (group is None or group.is_lead):
      report = verify.verify_output(args.out, questions, num_shards=args.num_shards)
      if report.missing:
        print(f"not writing {args.write_community} yet: shards {report.missing} are not done",
              file=sys.stderr)
      else:
        print(report)
        if not report.ok:
          return 1
        path = verify.write_output_community(args.out, questions, args.write_community,
                                             report=report)
        print(f"wrote {path}")
  except (records_lib.RecordError, ValueError, backends_lib.TeacherHTTPError,
          FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
