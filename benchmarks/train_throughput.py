"""Training-step throughput and peak memory: our JAX trainer vs transformers' PyTorch T5.

Run from the repo root:
  PYTHONPATH=. python benchmarks/train_throughput.py [--configs tiny,small] [--steps 5]
      [--warmup 1] [--threads N] [--torch-optimizer adafactor|adamw] [--torch-compile]

For each T5 1.1 config (gated-GELU, untied output layer, no dropout, fp32,
vocabulary 32128 unless ``--vocab-size``) and a batch of 16 rows of 128
encoder and 64 decoder tokens (no padding), measures one optimizer step:

* ours: ``cdc_jax.student.trainer.Trainer.train_step`` with ``optimizers.adafactor``
  on a single-device mesh;
* reference: ``transformers.T5ForConditionalGeneration`` built from the
  equivalent ``transformers.T5Config``: forward with labels, backward and
  ``transformers.optimization.Adafactor`` (the T5 settings: factored second
  moments, no momentum, update clipping 1.0, decay exponent 0.8, parameter
  scaling; fixed learning rate) or ``torch.optim.AdamW`` (``--torch-optimizer``);
* optionally the same PyTorch step under ``torch.compile`` (``--torch-compile``;
  Inductor compiles C++ on CPU, which takes minutes for ``small``).

Method. Every (framework, config) pair and the matmul peak run in their own
subprocess, so memory figures never mix and thread pools start fresh. A
worker runs ``--warmup`` steps (the first compiles; its time is reported as
"first step"), then times ``--steps`` steps one by one, waiting for each to
finish (``jax.block_until_ready`` on the new state; PyTorch is synchronous on
CPU), and reports the median step time (tokens/s, GFLOP/s and %peak use it)
and the fastest. Tokens/s counts encoder plus decoder tokens (16 x (128 + 64)
= 3072 per step). ``--threads N`` pins each worker to N CPUs
(sched_setaffinity before JAX or PyTorch start their thread pools) and sets
PyTorch's intra-op threads to N; the default is every CPU this process may
use. On a CPU shared with other jobs PyTorch's OpenMP threads slow down far
more than XLA's when cores are oversubscribed; ``--threads 1`` compares the
two more fairly there.

Peak memory: JAX's ``device.memory_stats()`` is None on CPU, so both
frameworks are measured the same way: the worker's resident-set high-water
mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end, and that
minus the RSS right after the framework was imported (before any model
exists), which is the memory the model, optimizer state and step take.

Machine peak: the best of a few 2048^3 float32 matmuls in numpy, JAX and
PyTorch, in a worker with the same threads; the largest rate is the peak.
Model FLOPs per step count each stack on its own tokens: 6 x (matmul
weights of the encoder) x encoder tokens, 6 x (matmul weights of the
decoder) x decoder tokens (cross-attention keys/values on encoder tokens),
6 x (output layer) x decoder tokens, plus 3 x the forward attention
score/value products (full score matrices, as computed; causal masking skips
nothing). Embedding lookups and norms are not counted. The usual
"6 x all parameters x all tokens" overcounts an encoder-decoder about 2x
(it sends every token through both stacks and the output layer) and is
printed only for comparison.

The CPU may be shared with other jobs: figures are indicative. The "loss"
column only shows that a real step ran: HF initialises its untied output
layer with unit variance, so its first losses are far above log(vocab).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = Path(__file__).resolve().parents[1]
BATCH, INPUTS, TARGETS = 16, 128, 64
MATMUL_SIZE = 2048
LEARNING_RATE = 1e-3


# --- Workers (each runs in its own subprocess) --------------------------------


def _pin_threads(threads: int | None) -> int:
  """Restricts this process to ``threads`` CPUs; returns the CPUs it may use."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads:
    if threads > len(cpus):
      raise ValueError(f"--threads {threads} but only {len(cpus)} CPUs are available")
    cpus = cpus[:threads]
    os.sched_setaffinity(0, cpus)
  return len(cpus)


def _rss_mib() -> float:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def _batch(vocab_size: int) -> dict[str, Any]:
  """A dense batch (no padding): ids in [2, vocab), decoder inputs = targets shifted right."""
  import numpy as np

  rng = np.random.default_rng(0)
  encoder = rng.integers(2, vocab_size, (BATCH, INPUTS), dtype=np.int32)
  targets = rng.integers(2, vocab_size, (BATCH, TARGETS), dtype=np.int32)
  decoder = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  return {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder,
          "decoder_target_tokens": targets}


def _our_config(name: str, vocab_size: int):
  from cdc_jax.models.t5_config import t5_config

  return t5_config(name, version="1.1", vocab_size=vocab_size, dropout_rate=0.0, dtype="float32")


def _timed_steps(step, *, warmup: int, steps: int) -> dict[str, float]:
  """Runs ``step()`` (which must wait for its result) ``warmup + steps`` times."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return {"first_step_s": first, "step_s": statistics.median(times),
          "step_min_s": min(times), "step_max_s": max(times)}


def _jax_worker(args: argparse.Namespace) -> dict[str, Any]:
  import jax

  from cdc_jax.models import partitioning
  from cdc_jax.student import optimizers
  from cdc_jax.student import trainer as trainer_lib
  from cdc_jax.models.encoder_decoder import build_model

  baseline = _rss_mib()
  config = _our_config(args.config, args.vocab_size)
  model = build_model(config)
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  host = _batch(args.vocab_size)
  trainer = trainer_lib.Trainer(model, optimizers.adafactor(learning_rate=LEARNING_RATE), mesh,
                                {k: v.shape for k, v in host.items()})
  state = trainer.init_state(0)
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  batch = trainer.place_batch(host)
  holder = {"state": state}

  def step():
    holder["state"], metrics = trainer.train_step(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    holder["loss"] = metrics["loss"]

  timing = _timed_steps(step, warmup=args.warmup, steps=args.steps)
  compiles = trainer._step_fn._cache_size()  # pylint: disable=protected-access
  return {**timing, "params": int(params), "loss": float(holder["loss"]),
          "compiles": int(compiles), "rss_baseline_mib": baseline,
          "peak_rss_mib": _peak_rss_mib(), "device": str(jax.devices()[0]),
          "memory_stats": jax.devices()[0].memory_stats()}


def _hf_config(config, vocab_size: int):
  import transformers

  if config.mlp_activations != ("gelu", "linear"):
    raise ValueError(f"only gated-GELU (T5 1.1) configs are compared, got {config.mlp_activations}")
  return transformers.T5Config(
      vocab_size=vocab_size, d_model=config.emb_dim, d_kv=config.head_dim, d_ff=config.mlp_dim,
      num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
      num_heads=config.num_heads,
      relative_attention_num_buckets=config.relative_attention_num_buckets,
      relative_attention_max_distance=config.relative_attention_max_distance,
      dropout_rate=0.0, layer_norm_epsilon=config.layer_norm_epsilon,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _torch_worker(args: argparse.Namespace) -> dict[str, Any]:
  import torch
  import transformers
  from transformers.optimization import Adafactor

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  baseline = _rss_mib()
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(
      _hf_config(_our_config(args.config, args.vocab_size), args.vocab_size))
  if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
    # Untie as in T5 1.1 checkpoints, in case this transformers ties regardless.
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  model.train()
  params = sum(p.numel() for p in model.parameters())
  if args.torch_optimizer == "adafactor":
    optimizer = Adafactor(model.parameters(), lr=LEARNING_RATE, scale_parameter=True,
                          relative_step=False, warmup_init=False, clip_threshold=1.0,
                          decay_rate=-0.8, beta1=None, weight_decay=0.0)
  else:
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
  host = {k: torch.from_numpy(v).long() for k, v in _batch(args.vocab_size).items()}
  mask = torch.ones_like(host["encoder_input_tokens"])
  forward = torch.compile(model) if args.worker == "torch-compile" else model
  holder = {}

  def step():
    out = forward(input_ids=host["encoder_input_tokens"], attention_mask=mask,
                  decoder_input_ids=host["decoder_input_tokens"],
                  labels=host["decoder_target_tokens"])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    holder["loss"] = float(out.loss.detach())

  timing = _timed_steps(step, warmup=args.warmup, steps=args.steps)
  return {**timing, "params": int(params), "loss": holder["loss"],
          "rss_baseline_mib": baseline, "peak_rss_mib": _peak_rss_mib(),
          "torch_threads": torch.get_num_threads()}


def _peak_worker(args: argparse.Namespace) -> dict[str, Any]:
  """GFLOP/s of the best of several 2048^3 matmuls per library, in ``args.dtype`` if given
  (float32 by default; bfloat16 inputs accumulate in float32, and numpy has no bfloat16)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  n = MATMUL_SIZE
  flops = 2.0 * n ** 3
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, n, n), dtype=np.float32)
  dtype = getattr(args, "dtype", "float32")
  ja, jb = (jax.device_put(x).astype(dtype) for x in (a, b))
  jdot = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  ta, tb = (torch.from_numpy(x).to(getattr(torch, dtype)) for x in (a, b))
  runs = {"jax": lambda: jdot(ja, jb).block_until_ready(), "torch": lambda: torch.matmul(ta, tb)}
  if dtype == "float32":
    runs["numpy"] = lambda: a @ b
  rates = {}
  for name, fn in runs.items():
    fn()
    best = float("inf")
    for _ in range(args.matmul_repeats):
      start = time.perf_counter()
      fn()
      best = min(best, time.perf_counter() - start)
    rates[name] = flops / best / 1e9
  return {"gflops": rates}


WORKERS = {"jax": _jax_worker, "torch": _torch_worker, "torch-compile": _torch_worker,
           "peak": _peak_worker}


# --- FLOPs ---------------------------------------------------------------------


def model_flops_per_step(config, *, batch: int = BATCH, inputs: int = INPUTS,
                         targets: int = TARGETS) -> dict[str, float]:
  """Training FLOPs (forward + backward = 3 x forward) of one step, by part.

  Each stack counts on its own tokens; see the module docstring.
  """
  d, inner, f = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  mlp = (len(config.mlp_activations) + 1) * d * f
  enc_tokens, dec_tokens = batch * inputs, batch * targets
  le, ld = config.num_encoder_layers, config.num_decoder_layers
  # Forward attention per layer: scores q.k and weights.v, 2 x 2 x q x k x inner per row.
  attention = lambda q, k: 3 * 4 * batch * q * k * inner
  return {
      "encoder": 6.0 * le * (4 * d * inner + mlp) * enc_tokens,
      # Self-attention q/k/v/o and cross-attention q/o on decoder tokens, MLP.
      "decoder": 6.0 * ld * (6 * d * inner + mlp) * dec_tokens,
      "cross_attention_kv": 6.0 * ld * 2 * d * inner * enc_tokens,
      "output_layer": 6.0 * d * config.vocab_size * dec_tokens,
      "attention_scores": float(le * attention(inputs, inputs) + ld * (
          attention(targets, targets) + attention(targets, inputs))),
  }


# --- Driver ----------------------------------------------------------------------


def _run_worker(worker: str, config: str, args: argparse.Namespace) -> dict[str, Any]:
  command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker,
             "--config", config, "--steps", str(args.steps), "--warmup", str(args.warmup),
             "--vocab-size", str(args.vocab_size), "--torch-optimizer", args.torch_optimizer,
             "--matmul-repeats", str(args.matmul_repeats)]
  if args.threads:
    command += ["--threads", str(args.threads)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
  if args.threads:
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
  start = time.perf_counter()
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=args.worker_timeout)
  if proc.returncode != 0:
    raise RuntimeError(f"worker {worker} {config} exited {proc.returncode}:\n"
                       f"{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["wall_s"] = time.perf_counter() - start
  return result


def _row(label: str, r: dict[str, Any], flops: float, peak: float) -> str:
  tokens = BATCH * (INPUTS + TARGETS)
  rate = flops / r["step_s"] / 1e9
  return (f"  {label:<16} {r['step_s'] * 1e3:9.1f} {r['step_min_s'] * 1e3:9.1f} "
          f"{tokens / r['step_s']:10.0f} {rate:8.1f} "
          f"{100 * rate / peak:6.1f}% {r['peak_rss_mib']:8.0f} "
          f"{r['peak_rss_mib'] - r['rss_baseline_mib']:8.0f} {r['first_step_s']:7.1f} "
          f"{r['loss']:7.3f}")


def main() -> None:
  """Prints step time, tokens/s, share of the matmul peak and peak memory per framework."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="tiny,small")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per worker")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps (the first compiles)")
  parser.add_argument("--threads", type=int, default=None, help="CPUs per worker (default all)")
  parser.add_argument("--vocab-size", type=int, default=32128)
  parser.add_argument("--torch-optimizer", choices=("adafactor", "adamw"), default="adafactor")
  parser.add_argument("--torch-compile", action="store_true",
                      help="also time the PyTorch step under torch.compile (slow to compile)")
  parser.add_argument("--matmul-repeats", type=int, default=3)
  parser.add_argument("--worker-timeout", type=int, default=1800)
  parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
  parser.add_argument("--config", default="tiny", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.steps < 1 or args.warmup < 1:
    parser.error("--steps and --warmup must be >= 1")

  if args.worker:
    _pin_threads(args.threads)
    print(json.dumps(WORKERS[args.worker](args)), flush=True)
    return

  cpus = len(os.sched_getaffinity(0))
  threads = args.threads or cpus
  peak = _run_worker("peak", "tiny", args)["gflops"]
  peak_rate = max(peak.values())
  print(f"CPU threads per worker: {threads} of {cpus} | load average {os.getloadavg()[0]:.1f} "
        "(shared CPU: indicative figures)")
  print(f"fp32 {MATMUL_SIZE}^3 matmul: " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
        + f" GFLOP/s -> peak {peak_rate:.1f} GFLOP/s")
  print(f"batch {BATCH}, inputs {INPUTS}, targets {TARGETS}, fp32, vocab {args.vocab_size}; "
        f"tokens/s = {BATCH * (INPUTS + TARGETS)} (encoder + decoder) tokens per step / median "
        f"of {args.steps} steps after {args.warmup} warm-up; PyTorch optimizer: "
        f"{'transformers Adafactor' if args.torch_optimizer == 'adafactor' else 'torch AdamW'}")
  torch_workers = ["torch"] + (["torch-compile"] if args.torch_compile else [])
  for name in args.configs.split(","):
    config = _our_config(name, args.vocab_size)
    parts = model_flops_per_step(config)
    flops = sum(parts.values())
    results = {"jax": _run_worker("jax", name, args)}
    for worker in torch_workers:
      results[worker] = _run_worker(worker, name, args)
    params = results["jax"]["params"]
    naive = 6.0 * params * BATCH * (INPUTS + TARGETS)
    print(f"\n{name}: {params / 1e6:.2f}M parameters (PyTorch {results['torch']['params'] / 1e6:.2f}M);"
          f" model {flops / 1e9:.1f} GFLOP/step ("
          + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in parts.items())
          + f"; 6 x params x all tokens would say {naive / 1e9:.1f})")
    print(f"  {'framework':<16} {'step ms':>9} {'min ms':>9} {'tokens/s':>10} {'GFLOP/s':>8} {'%peak':>7} "
          f"{'RSS MiB':>8} {'+model':>8} {'1st s':>7} {'loss':>7}")
    labels = {"jax": "jax (ours)", "torch": "torch eager", "torch-compile": "torch.compile"}
    for worker, result in results.items():
      print(_row(labels[worker], result, flops, peak_rate))
    for worker in torch_workers:
      print(f"  jax / {labels[worker]} tokens/s: "
            f"{results[worker]['step_s'] / results['jax']['step_s']:.2f}x")
    if results["jax"]["compiles"] != 1:
      print(f"  warning: the JAX step compiled {results['jax']['compiles']} times")


if __name__ == "__main__":
  main()
