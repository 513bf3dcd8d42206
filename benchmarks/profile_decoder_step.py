"""Where a decoder-only training step spends its time, per XLA op (CPU).

Run from the repo root:
  PYTHONPATH=. python benchmarks/profile_decoder_step.py [--mode lora|full] [--layers 8]
      [--batch 8] [--length 128] [--top 20]

Builds the step of ``decoder_train_throughput.py`` (SmolLM2-135M's shape, random
weights, fp32, AdamW; ``--layers`` decoder layers), times a few steps, then
records two steps with ``jax.profiler`` and reads the trace's XPlane protobuf
(TensorFlow's ``xplane_pb2``; TensorBoard's profile plugin would do the same in
a browser). Prints milliseconds per step summed per op kind (``ynn_fusion``:
matmuls on YNNPACK; ``*_fusion``: XLA's loop fusions; ``iota_reduce_fusion``:
argmax) and the slowest single ops. Op times from the two runtime threads are
added, so the total can exceed the step's wall time where ops overlap. The
figures in docs/benchmarks.md's profile come from this script.
"""

from __future__ import annotations

import argparse
import collections
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--mode", choices=("lora", "full"), default="lora")
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--timed-steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  args = parser.parse_args()

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
                                   mode=args.mode, warmup=1, steps=1)
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


if __name__ == "__main__":
  main()
