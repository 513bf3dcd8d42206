"""Matmul throughput in a chain of distinct layers: XLA:CPU (JAX) vs PyTorch vs numpy.

Run from the repo root:
  PYTHONPATH=. python benchmarks/matmul_chain.py [--layers 8] [--rows 1024] [--hidden 576]
      [--ffn 1536] [--repeats 7]

A forward pass through ``--layers`` MLP blocks with their own weights,
``x = tanh((x @ up^T) @ down^T)`` (``nn.Linear``'s layout; SmolLM2-135M's
hidden and MLP widths, batch 8 x 128 rows by default), float32, one jitted
function for JAX. Unlike a single matmul repeated on the same operands (the
single-matmul table of docs/benchmarks.md), every weight is read cold once per
pass, as in a training step. Each framework runs in its own subprocess with
the same threads; prints the median pass time and GFLOP/s (matmuls only) with
the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAMEWORKS = ("jax", "torch", "numpy")


def _weights(args):
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  layers = [(rng.standard_normal((args.ffn, args.hidden), dtype=np.float32) * 0.02,
             rng.standard_normal((args.hidden, args.ffn), dtype=np.float32) * 0.02)
            for _ in range(args.layers)]
  return rng.standard_normal((args.rows, args.hidden), dtype=np.float32), layers


def _worker(args) -> dict:
  """Median seconds of one forward pass in ``args.worker``."""
  x0, layers = _weights(args)
  if args.worker == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    weights = [(jnp.asarray(up), jnp.asarray(down)) for up, down in layers]

    @jax.jit
    def forward(x, weights):
      for up, down in weights:
        x = jnp.tanh((x @ up.T) @ down.T)
      return x

    x = jnp.asarray(x0)
    run = lambda: forward(x, weights).block_until_ready()
  elif args.worker == "torch":
    import torch  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    weights = [(torch.from_numpy(up), torch.from_numpy(down)) for up, down in layers]
    x = torch.from_numpy(x0)

    def run():
      with torch.no_grad():
        y = x
        for up, down in weights:
          y = torch.tanh((y @ up.T) @ down.T)
      return y
  else:
    import numpy as np  # pylint: disable=g-import-not-at-top

    def run():
      y = x0
      for up, down in layers:
        y = np.tanh((y @ up.T) @ down.T)
      return y
  run()  # Compiles / warms up.
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return {"seconds": sorted(times)[len(times) // 2]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--rows", type=int, default=1024)
  parser.add_argument("--hidden", type=int, default=576)
  parser.add_argument("--ffn", type=int, default=1536)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
  parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(_worker(args)))
    return

  from cdc_jax import provenance  # pylint: disable=g-import-not-at-top

  flops = args.layers * 2 * (2 * args.rows * args.hidden * args.ffn)
  print(f"{provenance.cpu_model()}, {len(os.sched_getaffinity(0))} threads, load average "
        f"{os.getloadavg()[0]:.1f}; {args.layers} layers of [{args.rows}, {args.hidden}] x "
        f"{args.ffn}, float32, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  for framework in args.frameworks.split(","):
    if framework not in FRAMEWORKS:
      parser.error(f"--frameworks: {framework!r} is not one of {', '.join(FRAMEWORKS)}")
    command = [sys.executable, __file__, f"--worker={framework}"] + [
        f"--{name}={getattr(args, name)}" for name in ("layers", "rows", "hidden", "ffn", "repeats")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
      print(f"{framework}: failed ({done.returncode}): {done.stderr.strip()[-400:]}")
      continue
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    print(f"{framework:6s} {seconds * 1e3:8.1f} ms a pass  {flops / seconds / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
  main()
