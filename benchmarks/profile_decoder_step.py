"""Where a decoder-only training step spends its time, per XLA op (CPU).

Run from the repo root:
  PYTHONPATH=. python benchmarks/profile_decoder_step.py [--mode lora|full] [--layers 8]
      [--batch 8] [--length 128] [--top 20] [--by-matmul-shape] [--dtype float32|bfloat16]

Builds the step of ``decoder_train_throughput.py`` (SmolLM2-135M's shape, random
weights, fp32, AdamW; ``--layers`` decoder layers), times a few steps, then
records two steps with ``jax.profiler`` and reads the trace's XPlane protobuf
(TensorFlow's ``xplane_pb2``; TensorBoard's profile plugin would do the same in
a browser). Prints milliseconds per step summed per op kind (``ynn_fusion``:
matmuls on YNNPACK; ``*_fusion``: XLA's loop fusions; ``iota_reduce_fusion``:
argmax) and the slowest single ops. Op times from the two runtime threads are
added, so the total can exceed the step's wall time where ops overlap. The
figures in docs/benchmarks.md's profile come from this script.

``--by-matmul-shape`` also dumps the optimised HLO (``--xla_dump_to``) and groups
the YNNPACK matmul fusions by their dot's operand shapes and contracting
dimensions: count, ms per step and GFLOP/s of each group, to compare with the
same shapes alone (docs/benchmarks.md's single-matmul table).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import decoder_train_throughput as bench  # pylint: disable=g-import-not-at-top

from cdc_jax import provenance  # pylint: disable=g-import-not-at-top

# HLO instruction names ("ynn_fusion.12", "copy_bitcast_fusion"); the runtime's own events
# ("ThunkExecutor::Execute", "SlinkyThreadPool::Await") wrap them and are left out.
_HLO_OP = re.compile(r"[a-z][a-z0-9_\-]*(\.\d+)?")


def op_times(trace_dir: str, steps: int) -> collections.Counter:
  """Milliseconds per step of every XLA op in the newest trace under ``trace_dir``."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top

  paths = sorted(Path(trace_dir).glob("plugins/profile/*/*.xplane.pb"), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}/plugins/profile")
  space = xplane_pb2.XSpace()
  space.ParseFromString(paths[-1].read_bytes())
  times: collections.Counter = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):  # The XLA runtime's worker threads.
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if _HLO_OP.fullmatch(name):
          times[name] += event.duration_ps / 1e9 / steps
  return times


# One fusion instruction of an optimised HLO module, and the dot inside a fused computation.
_FUSION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ fusion\(.*?calls=%?([\w.\-]+)", re.M)
_COMPUTATION = re.compile(r"^%?([\w.\-]+) .*?\{\n(.*?)\n\}", re.M | re.S)
_SHAPE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]", re.M)
_DOT = re.compile(r"dot\(%?([\w.\-]+), %?([\w.\-]+)\), (.*?)(?:, metadata|$)", re.M)


def matmul_groups(hlo_text: str, times: collections.Counter) -> list[tuple[str, int, float, float]]:
  """``(dot, count, ms per step, GFLOP/s)`` per matmul shape, slowest group first.

  ``dot`` reads ``out = lhs x rhs (dims)``; GFLOP/s is 2 x |out| x |contracted| / time.
  """
  calls = dict(_FUSION.findall(hlo_text))
  bodies = dict(_COMPUTATION.findall(hlo_text))
  groups: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
  for name, ms in times.items():
    body = bodies.get(calls.get(name, ""), "")
    dot = _DOT.search(body)
    if dot is None:
      continue
    shapes = dict(_SHAPE.findall(body))
    lhs, rhs, dims = shapes[dot.group(1)], shapes[dot.group(2)], dot.group(3)
    out = _SHAPE.search(body[body.rfind("\n", 0, dot.start()) + 1:]).group(2)
    lhs_dims = [int(d) for d in lhs.split(",")]
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", dims).group(1)
    contracted = math.prod(lhs_dims[int(d)] for d in contracting.split(",") if d)
    flops = 2 * math.prod(int(d) for d in out.split(",")) * contracted
    key = f"[{out}] = [{lhs}] x [{rhs}] ({dims})"
    group = groups[key]
    group[0] += 1
    group[1] += ms
    group[2] += flops
  return sorted(((key, int(n), ms, flops / (ms / 1e3) / 1e9) for key, (n, ms, flops)
                 in groups.items()), key=lambda row: -row[2])


def _train_step_hlo(dump_dir: str) -> str:
  """The optimised HLO text of the benchmark's train step in ``dump_dir``."""
  paths = sorted(Path(dump_dir).glob("*train_step*after_optimizations.txt"))
  if not paths:
    raise FileNotFoundError(f"no *train_step*after_optimizations.txt under {dump_dir}")
  return paths[-1].read_text()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--mode", choices=("lora", "full"), default="lora")
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--timed-steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--by-matmul-shape", action="store_true",
                      help="dump the optimised HLO and print the matmuls grouped by shape")
  args = parser.parse_args()
  dump_dir = None
  if args.by_matmul_shape:  # Before JAX starts: XLA reads its flags once.
    dump_dir = tempfile.mkdtemp(prefix="cdc_hlo_")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump_dir}"
                               " --xla_dump_hlo_as_text --xla_dump_hlo_pass_re=^$").strip()

  import jax  # pylint: disable=g-import-not-at-top

  trace_dir = tempfile.mkdtemp(prefix="cdc_profile_")
  recorded = 2

  def profile(step, warmup, steps):  # Replaces the benchmark's timing loop.
    del warmup, steps
    step()  # Compiles.
    times = []
    for _ in range(args.timed_steps):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
    print(f"{provenance.cpu_model()}, {len(os.sched_getaffinity(0))} threads, load average "
          f"{os.getloadavg()[0]:.1f}: {args.mode}, {args.layers} layers, batch {args.batch} x "
          f"{args.length}: step s "
          + ", ".join(f"{t:.3f}" for t in times), flush=True)
    jax.profiler.start_trace(trace_dir)
    for _ in range(recorded):
      step()
    jax.profiler.stop_trace()
    return {}

  bench.common._timed_steps = profile  # pylint: disable=protected-access
  worker_args = argparse.Namespace(batch=args.batch, length=args.length, layers=args.layers,
                                   mode=args.mode, dtype=args.dtype, warmup=1, steps=1)
  bench._jax_worker(worker_args)  # pylint: disable=protected-access
  times = op_times(trace_dir, recorded)
  kinds: collections.Counter = collections.Counter()
  for name, ms in times.items():
    kinds[name.split(".")[0]] += ms
  print(f"op time per step: {sum(times.values()):.1f} ms (trace in {trace_dir})")
  print("by op kind (ms per step):")
  for kind, ms in kinds.most_common(args.top):
    print(f"  {ms:8.1f}  {kind}")
  print("slowest ops (ms per step):")
  for name, ms in times.most_common(args.top):
    print(f"  {ms:8.1f}  {name}")
  if dump_dir is not None:
    print("matmuls by shape (count, ms per step, GFLOP/s):")
    for key, count, ms, gflops in matmul_groups(_train_step_hlo(dump_dir), times)[:args.top]:
      print(f"  {count:4d} {ms:8.1f} {gflops:7.1f}  {key}")


if __name__ == "__main__":
  main()
