"""Shared pieces of the trainer tests: toy communities, gin commands, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cdc_jax.data import records as R

REPO = Path(__file__).resolve().parents[1]
DETERMINISTIC_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


def always_yes_community(directory: Path, name: str = "yesland", *, train: int = 24,
                         test: int = 8) -> Path:
  """A trivial boolean community: every answer is 'yes'."""
  def rec(i, split):
    return R.TraceRecord(id=f"{split}{i}", community=name, split=split,
                         question=f"Is {i} a number?", answer="yes", answer_type="boolean",
                         rationales={6: f"{i} is a number."}, teacher="oracle",
                         provenance={"source": "test", "license": "CC0-1.0"})
  manifest = R.CommunityManifest(name=name, description="trivial", answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0-1.0")
  return R.write_community(directory / name, manifest,
                           {"train": [rec(i, "train") for i in range(train)],
                            "test": [rec(100 + i, "test") for i in range(test)]})


def tiny_train_args(model_dir: Path, task: str, *, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
  return ["--gin_file=gin/experiments/embedded_tiny.gin",
          f"--gin.MIXTURE_OR_TASK_NAME='{task}'", f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 48}", "--gin.LOG_EVERY=2",
          *extra]


def train_settings(*, learning_rate: float = 1e-2, adamw: bool = False,
                   **overrides: Any) -> dict[str, Any]:
  """The settings ``training.train`` requires beside model, task, lengths, batch, steps and dir.

  The signature has no defaults (gin/runs/train.gin holds the values): these
  are the tests' (Adafactor, or AdamW, which compiles faster, on a constant
  ``learning_rate``; no consent check; tasks registered by the test); ``overrides``
  replace some.
  """
  from cdc_jax.student import optimizers

  schedule = optimizers.constant_schedule(learning_rate=learning_rate)
  optimizer = (optimizers.adamw if adamw else optimizers.adafactor)(learning_rate=schedule)
  settings = dict(optimizer=optimizer, learning_rate_fn=schedule, pack=True, seed=0,
                  mesh_shape=(-1, 1), accumulation_steps=1, checkpoint_every=1000,
                  keep_checkpoints=3, log_every=50, init_from=None, check_training_data=None,
                  register_tasks=None)
  settings.update(overrides)
  return settings


def eval_settings(**overrides: Any) -> dict[str, Any]:
  """The decoding settings ``evaluation.evaluate`` requires (gin/runs/eval.gin holds the values)."""
  return {"batch_size": 4, "split": "test", "num_beams": 1, "mesh_shape": (-1, 1),
          "register_tasks": None, **overrides}


def infer_settings(**overrides: Any) -> dict[str, Any]:
  """The settings ``inference.infer`` requires (gin/runs/infer.gin holds the values)."""
  return {"batch_size": 2, "num_beams": 1, "input_format": "auto", "fmt": "cot_label",
          "part": None, "spm_model": None, "extra_ids": 0, "mesh_shape": (-1, 1),
          "register_tasks": None, **overrides}


# Runs ``cdc_jax.train``'s command line with ``Checkpointer.save`` patched to SIGKILL the
# process right after it saved step argv[1]: a preemption at the worst time but one.
_KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
from cdc_jax import train  # First: it sets the TF environment of the command line.
from cdc_jax.student import checkpoints
kill_at = int(sys.argv[1])
save = checkpoints.Checkpointer.save
def save_then_die(self, step, state, meta):
  save(self, step, state, meta)
  if step == kill_at:
    os.kill(os.getpid(), signal.SIGKILL)
checkpoints.Checkpointer.save = save_then_die
train.main(sys.argv[2:])
"""


def run_train_killed_after_checkpoint(step: int, args: list[str], *, env: dict | None = None,
                                      timeout: int = 300) -> subprocess.CompletedProcess:
  """``python -m cdc_jax.train ARGS``, SIGKILLed right after saving the checkpoint of ``step``."""
  full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
  return subprocess.run([sys.executable, "-c", _KILLED_AFTER_CHECKPOINT, str(step), *args],
                        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_module(module: str, args: list[str], *, env: dict | None = None,
               check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
  full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
  return proc


def run_two_processes(module: str, args: list[str], *, devices_each: int = 2,
                      env: dict | None = None, timeout: int = 600) -> list[str]:
  """Runs ``module`` as two local processes of one jax.distributed system; their stderr.

  Each process gets ``devices_each`` fake CPU devices; both must exit 0.
  """
  from tests import ports

  port = ports.free_port()
  procs = []
  for pid in range(2):
    full_env = dict(os.environ, PYTHONPATH=str(REPO),
                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}",
                    **(env or {}).get(pid, {}))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", module, *args, f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={pid}"],
        cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    if p.returncode != 0:
      raise AssertionError(f"{module} exited {p.returncode}:\n{err[-4000:]}")
  return [err for _, err in outputs]
