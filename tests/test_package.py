"""cdc_jax as a real package: a wheel, installed elsewhere, trains and evaluates outside the repo.

The wheel is built from a copy of the sources (the working tree stays clean)
and installed ``--no-deps`` into a fresh venv whose dependencies come from the
running interpreter's site-packages (a path line, so nothing downloads and the
editable install of the checkout stays out of sight).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests import train_helpers

REPO = train_helpers.REPO


def _run(cmd, *, cwd, env=None, timeout=240):
  proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
  return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(python of a venv with only the wheel installed, the wheel's path)."""
  root = tmp_path_factory.mktemp("package")
  src = root / "src"
  src.mkdir()
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in ("cdc_jax", "gin", "tasks"):
    shutil.copytree(REPO / name, src / name, ignore=ignore)
  for name in ("setup.py", "README.md"):
    shutil.copy(REPO / name, src / name)
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", root / "dist", "."], cwd=src)
  wheel, = (root / "dist").glob("cdc_jax-*.whl")
  _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root / "venv"],
       cwd=root)
  python = root / "venv" / "bin" / "python"
  site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=root).stdout.strip())
  (site / "cdc_jax_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
       cwd=root)
  return python, wheel, site


def test_wheel_holds_the_package_and_gin_configs_but_no_tasks_module(installed):
  _, wheel, site = installed
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert tops == {"cdc_jax", f"{wheel.name.split('-py3')[0]}.dist-info"}
  for path in ("cdc_jax/__init__.py", "cdc_jax/data/__init__.py", "cdc_jax/tasks/stats.py",
               "cdc_jax/data/importers/fields.py", "cdc_jax/tasks/register_all.py",
               "cdc_jax/gin/experiments/embedded_tiny.gin", "cdc_jax/gin/runs/eval.gin",
               "cdc_jax/gin/sweeps/embedded_demo.gin"):
    assert path in names, path
  # Every module of the checkout is in the wheel (no sub-package without __init__.py).
  modules = {p.relative_to(REPO).as_posix() for p in (REPO / "cdc_jax").rglob("*.py")}
  assert modules <= set(names), sorted(modules - set(names))
  assert not (site / "tasks").exists()


def test_installed_package_trains_outside_the_repo(installed, tmp_path):
  python, _, site = installed
  work = tmp_path / "elsewhere"
  work.mkdir()
  manifest = train_helpers.always_yes_community(tmp_path / "data")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  # Where the package is, that no `tasks` module is importable, and that the sweep's packaged
  # config parses from here (its runs are trains and evaluations like the one below).
  out = _run([python, "-c", "import cdc_jax, importlib.util; print(cdc_jax.__file__, "
              "cdc_jax.GIN_DIR, importlib.util.find_spec('tasks')); "
              "from cdc_jax import config_cli; import gin; "
              "config_cli.parse_gin(['sweeps/embedded_demo.gin'], ['SWEEP_DIR = \"x\"']); "
              "print(gin.query_parameter('%SWEEP_DIR'))"], cwd=work, env=env)
  package = site / "cdc_jax"
  assert out.stdout.split() == [str(package / "__init__.py"), str(package / "gin"), "None", "x"]
  # 'experiments/...' resolves in the packaged configs, and its include 'gin/models/...' too.
  _run([python, "-m", "cdc_jax.train", "--gin_file=experiments/embedded_tiny.gin",
        f"--gin.COMMUNITIES=['{manifest}']", "--gin.catalog.register_tasks.embedded=False",
        "--gin.MIXTURE_OR_TASK_NAME='cdc.yesland.L6.label_only'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
        f"--gin.MODEL_DIR='{work / 'model'}'", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
        "--gin.CHECKPOINT_EVERY=2"], cwd=work, env=env)
  assert json.loads((work / "model" / "lengths.json").read_text())["examples"] == 24
  assert (work / "model" / "metrics.jsonl").exists()
