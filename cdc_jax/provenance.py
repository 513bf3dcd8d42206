"""Where a result came from: the code's git commit, the CPU, the library versions.

A coalition run appends one entry per attempt (a resumed run has several) to
``provenance.json`` in its directory, so a committed result says which commit
and which machine produced it; the sweep report lists them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from cdc_jax import io as io_lib

FILENAME = "provenance.json"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: Sequence[str], cwd: Path) -> str | None:
  try:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20,
                          check=False)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return done.stdout.strip() if done.returncode == 0 else None


def code_version(path: str | os.PathLike = _PACKAGE_DIR) -> dict[str, Any]:
  """``{"commit": HEAD or None, "dirty": tracked files modified (None outside git)}``.

  None where ``path`` is not in a git checkout (an installed wheel) or git is missing.
  """
  path = Path(path)
  commit = _git(["rev-parse", "HEAD"], path)
  if commit is None:
    return {"commit": None, "dirty": None}
  status = _git(["status", "--porcelain", "--untracked-files=no"], path)
  return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def describe() -> dict[str, Any]:
  """This process's code version, machine and library versions, with the time."""
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top

  return {
      **code_version(),
      "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)),
      "devices": sorted({d.device_kind for d in jax.devices()}),
      "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def read(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
  """The attempts recorded in ``run_dir`` (oldest first); [] where none are."""
  path = Path(run_dir) / FILENAME
  if not path.exists():
    return []
  try:
    attempts = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise io_lib.SchemaError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
  if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
    raise io_lib.SchemaError(path, None, None, "expected a JSON list of attempt objects")
  return attempts


def record_attempt(run_dir: str | os.PathLike, entry: Mapping[str, Any] | None = None) -> Path:
  """Appends ``entry`` (default: :func:`describe`) to ``run_dir``'s ``provenance.json``."""
  path = Path(run_dir) / FILENAME
  attempts = read(run_dir) + [dict(entry if entry is not None else describe())]
  io_lib.atomic_write_text(path, json.dumps(attempts, indent=2, sort_keys=True) + "\n")
  return path


def summary(run_dirs: Sequence[str | os.PathLike]) -> str | None:
  """One line: how many runs ran at which commit and on which CPU; None without records."""
  commits: dict[str, int] = {}
  cpus: dict[str, int] = {}
  recorded = 0
  for run_dir in run_dirs:
    attempts = read(run_dir)
    if not attempts:
      continue
    recorded += 1
    for key, counts in (("commit", commits), ("cpu", cpus)):
      values = {_short(a, key) for a in attempts}
      for value in values:
        counts[value] = counts.get(value, 0) + 1
  if not recorded:
    return None
  def listing(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(counts.items()))
  missing = len(run_dirs) - recorded
  return (f"Provenance ({recorded} of {len(run_dirs)} runs record it"
          + (f"; {missing} ran before runs recorded it" if missing else "")
          + f"; a resumed run counts under each attempt's value): commits {listing(commits)}; "
          f"CPUs {listing(cpus)}.")


def _short(attempt: Mapping[str, Any], key: str) -> str:
  value = attempt.get(key)
  if key != "commit":
    return str(value)
  if value is None:
    return "unknown (not a git checkout)"
  return str(value)[:7] + (" with local changes" if attempt.get("dirty") else "")
