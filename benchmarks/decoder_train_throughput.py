"""Training-step throughput of the decoder-only student: ours (JAX) vs transformers' PyTorch.

Run from the repo root:
  PYTHONPATH=. python benchmarks/decoder_train_throughput.py [--modes full,lora] [--steps 3]
      [--batch 8] [--length 128] [--layers 30] [--threads N] [--dtype float32|bfloat16]

The model is SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3 KV heads,
SwiGLU 1536, tied 49,152-token embedding), random weights, float32, AdamW, a
dense batch of ``--batch`` rows of ``--length`` tokens with the loss on every
token (``--dtype bfloat16``: bf16 matmul inputs with float32 master weights and accumulation;
ours ``LlamaConfig(dtype="bfloat16", param_dtype="float32")``, PyTorch ``torch.autocast``).
For each mode, in one run:

* full: every parameter trains. Ours: ``trainer.Trainer`` over
  ``decoder_only.DecoderOnlyModel``; PyTorch: ``LlamaForCausalLM`` forward with
  labels, backward, ``torch.optim.AdamW``.
* lora: rank-16 adapters on every projection (alpha 32), the base frozen.
  Ours: ``llama.LoraConfig`` (adapters only in the train state); PyTorch: the
  same low-rank update ``W x + s B A x`` as a wrapper around each
  ``nn.Linear`` (what peft's LoRA computes), base ``requires_grad=False``.

Each (framework, mode) runs in its own subprocess (thread pools and memory
never mix), with ``train_throughput.py``'s timing and memory method: a
warm-up step (compiles), then the median of ``--steps`` timed steps; peak RSS
from ``getrusage``. %peak divides model FLOPs by the best 2048^3 matmul (of the
``--dtype``) of numpy (float32 only), JAX or PyTorch in a worker with the same
threads. Model FLOPs: full
= 6 x (matmul weights, the tied output layer included) x tokens + attention;
LoRA = 4 x the frozen matmul weights x tokens (no weight gradients) + 6 x the
adapters + attention. The CPU may be shared: figures are indicative; the CPU
model is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import train_throughput as common  # pylint: disable=g-import-not-at-top

from cdc_jax import provenance  # pylint: disable=g-import-not-at-top

VOCAB, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 49152, 576, 1536, 9, 3, 64
RANK, ALPHA = 16, 32.0
LEARNING_RATE = 1e-4


def _tokens(args: argparse.Namespace):
  import numpy as np

  rng = np.random.default_rng(0)
  return rng.integers(3, VOCAB, (args.batch, args.length + 1), dtype=np.int32)


def _jax_worker(args: argparse.Namespace) -> dict[str, Any]:
  import jax
  import numpy as np

  from cdc_jax.models import partitioning
  from cdc_jax.student import optimizers
  from cdc_jax.student import trainer as trainer_lib
  from cdc_jax.models import decoder_only, llama

  baseline = common._rss_mib()  # pylint: disable=protected-access
  config = llama.LlamaConfig(vocab_size=VOCAB, hidden=HIDDEN, intermediate=INTERMEDIATE,
                             num_layers=args.layers, num_heads=HEADS, num_kv_heads=KV_HEADS,
                             head_dim=HEAD_DIM, rope_theta=100000.0, max_seq_len=2048,
                             dtype=args.dtype, param_dtype="float32")
  lora = llama.LoraConfig(rank=RANK, alpha=ALPHA, targets=llama.PROJECTIONS) \
      if args.mode == "lora" else None
  pretrained = decoder_only.Pretrained()
  if lora is not None:
    base = jax.device_get(llama.init_params(config, jax.random.key(0)))
    pretrained = decoder_only.Pretrained(frozen=base)
  model = decoder_only.DecoderOnlyModel(llama.Llama(config, lora=lora), config,
                                        pretrained=pretrained)
  tokens = _tokens(args)
  host = {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
          "decoder_loss_weights": np.ones_like(tokens[:, 1:])}
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  trainer = trainer_lib.Trainer(model, optimizers.adamw(learning_rate=LEARNING_RATE), mesh,
                                {k: v.shape for k, v in host.items()})
  state = trainer.init_state(0)
  trained = sum(x.size for x in jax.tree.leaves(state["params"]))
  batch = trainer.place_batch(host)
  holder = {"state": state}

  def step():
    holder["state"], metrics = trainer.train_step(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    holder["loss"] = metrics["loss"]

  timing = common._timed_steps(step, warmup=args.warmup, steps=args.steps)  # pylint: disable=protected-access
  return {**timing, "trained_params": int(trained), "loss": float(holder["loss"]),
          "rss_baseline_mib": baseline, "peak_rss_mib": common._peak_rss_mib()}  # pylint: disable=protected-access


def _torch_worker(args: argparse.Namespace) -> dict[str, Any]:
  import torch
  import transformers

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  baseline = common._rss_mib()  # pylint: disable=protected-access
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
      num_hidden_layers=args.layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
      head_dim=HEAD_DIM, max_position_embeddings=2048, tie_word_embeddings=True,
      rope_theta=100000.0, attn_implementation="sdpa")
  model = transformers.LlamaForCausalLM(config)
  if args.mode == "lora":
    model.requires_grad_(False)
    for layer in model.model.layers:
      for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                            (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
        for name in names:
          setattr(parent, name, _TorchLora(getattr(parent, name)))
  model.train()
  trained = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trained, lr=LEARNING_RATE, weight_decay=0.0)
  tokens = torch.from_numpy(_tokens(args)).long()
  inputs, labels = tokens[:, :-1], tokens[:, 1:]
  holder = {}

  def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
      logits = model(input_ids=inputs).logits
      loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB),
                                               labels.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    holder["loss"] = float(loss.detach())

  timing = common._timed_steps(step, warmup=args.warmup, steps=args.steps)  # pylint: disable=protected-access
  return {**timing, "trained_params": int(sum(p.numel() for p in trained)),
          "loss": holder["loss"], "rss_baseline_mib": baseline,
          "peak_rss_mib": common._peak_rss_mib()}  # pylint: disable=protected-access


class _TorchLora:  # Replaced by a torch.nn.Module subclass on first use (torch imported late).
  def __new__(cls, base):
    import torch

    class Lora(torch.nn.Module):
      def __init__(self, base):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.empty(RANK, base.in_features).uniform_(
            -base.in_features ** -0.5, base.in_features ** -0.5))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, RANK))

      def forward(self, x):
        return self.base(x) + (ALPHA / RANK) * ((x @ self.a.T) @ self.b.T)

    return Lora(base)


WORKERS = {"jax": _jax_worker, "torch": _torch_worker, "peak": common._peak_worker}  # pylint: disable=protected-access


def model_flops(args: argparse.Namespace, mode: str) -> float:
  """Training FLOPs of one step (see the module docstring)."""
  tokens = args.batch * args.length
  layer = 2 * HIDDEN * HEADS * HEAD_DIM + 2 * HIDDEN * KV_HEADS * HEAD_DIM + 3 * HIDDEN * INTERMEDIATE
  matmul = args.layers * layer + VOCAB * HIDDEN
  attention = 3 * 4 * args.batch * args.length ** 2 * HEADS * HEAD_DIM * args.layers
  if mode == "full":
    return 6.0 * matmul * tokens + attention
  adapters = args.layers * RANK * (2 * (HIDDEN + HEADS * HEAD_DIM) + 2 * (HIDDEN + KV_HEADS * HEAD_DIM)
                                   + 3 * (HIDDEN + INTERMEDIATE))
  return 4.0 * matmul * tokens + 6.0 * adapters * tokens + attention


def _run(worker: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
  command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--mode", mode,
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
             "--length", str(args.length), "--layers", str(args.layers),
             "--matmul-repeats", str(args.matmul_repeats), "--dtype", args.dtype]
  if args.threads:
    command += ["--threads", str(args.threads)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=args.worker_timeout)
  if proc.returncode != 0:
    raise RuntimeError(f"worker {worker} {mode} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  """Prints step time, tokens/s, %peak and peak RSS per framework and mode."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--modes", default="full,lora")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--layers", type=int, default=30)
  parser.add_argument("--threads", type=int, default=None)
  parser.add_argument("--matmul-repeats", type=int, default=3)
  parser.add_argument("--worker-timeout", type=int, default=1800)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="matmul input dtype (bfloat16: float32 master weights and accumulation)")
  parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
  parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    common._pin_threads(args.threads)  # pylint: disable=protected-access
    print(json.dumps(WORKERS[args.worker](args)), flush=True)
    return
  start = time.perf_counter()
  peak = _run("peak", "full", args)["gflops"]
  peak_rate = max(peak.values())
  tokens = args.batch * args.length
  print(f"{provenance.cpu_model()} | {args.threads or len(os.sched_getaffinity(0))} threads | load average "
        f"{os.getloadavg()[0]:.1f} (shared CPU: indicative figures)")
  short = {"float32": "fp32", "bfloat16": "bf16"}[args.dtype]
  print(f"{short} 2048^3 matmul: " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
        + f" GFLOP/s -> peak {peak_rate:.1f}")
  master = " (f32 master weights)" if args.dtype == "bfloat16" else ""
  print(f"SmolLM2-135M shape ({args.layers} layers), batch {args.batch} x {args.length} tokens, "
        f"{short}{master}, AdamW; median of {args.steps} steps after {args.warmup} warm-up")
  print(f"  {'mode':<6} {'framework':<12} {'step s':>8} {'tokens/s':>9} {'GFLOP/s':>8} "
        f"{'%peak':>6} {'RSS MiB':>8} {'+model':>8} {'trained':>10} {'1st s':>7} {'loss':>7}")
  for mode in args.modes.split(","):
    flops = model_flops(args, mode)
    results = {w: _run(w, mode, args) for w in ("jax", "torch")}
    for worker, r in results.items():
      rate = flops / r["step_s"] / 1e9
      print(f"  {mode:<6} {('jax (ours)' if worker == 'jax' else 'torch eager'):<12} "
            f"{r['step_s']:8.2f} {tokens / r['step_s']:9.0f} {rate:8.1f} "
            f"{100 * rate / peak_rate:5.1f}% {r['peak_rss_mib']:8.0f} "
            f"{r['peak_rss_mib'] - r['rss_baseline_mib']:8.0f} {r['trained_params'] / 1e6:9.2f}M "
            f"{r['first_step_s']:7.1f} {r['loss']:7.3f}")
    print(f"  {mode:<6} jax / torch tokens/s: "
          f"{results['torch']['step_s'] / results['jax']['step_s']:.2f}x")
  print(f"wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
