"""Command-line configuration of the entry points: gin files and bindings.

``--gin_file=F`` (repeatable) parses a gin file, found as given, under the
repository root or under ``--gin_search_path`` s; ``--gin.NAME=VALUE``
(repeatable) binds a macro or parameter, e.g. ``--gin.TRAIN_STEPS=100`` or
``--gin.train.batch_size=8``. Unknown macros and parameters, unparseable
values, unset required macros and non-positive step, batch or length macros
are refused before any work starts (:mod:`cdc_jax.gin_checks`). Only entry
points import this module: library code stays gin-free.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import gin

from cdc_jax import gin_checks

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_search_paths() -> list[str]:
  """cwd, then the project's gin configs (packaged with an installed wheel, like t5x's).

  Both ``gin/experiments/embedded_tiny.gin`` and ``experiments/embedded_tiny.gin``
  resolve, from a checkout or an installed package, and so do the configs'
  ``include 'gin/models/...'`` lines.
  """
  import cdc_jax

  return [os.getcwd(), str(cdc_jax.GIN_DIR.parent), str(cdc_jax.GIN_DIR)]


def _quiet_gin_misses(record: logging.LogRecord) -> bool:
  return record.msg != "Path not found: %s"


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_search_path", action="append", default=[],
                      help="directory to find gin files and includes in")


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates ``--gin.NAME=VALUE`` arguments into gin bindings ``NAME = VALUE``."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep or not name:
        raise ValueError(f"expected --gin.NAME=VALUE, got {arg!r}")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  return bindings, rest


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files and bindings (bindings after files, so they override)."""
  searched = [*search_paths, *default_search_paths()]
  # gin logs an ERROR ('Path not found') for each search path an include is not under,
  # even when a later one has it; a file that is nowhere still raises.
  logging.getLogger().addFilter(_quiet_gin_misses)
  for path in searched:
    gin.add_config_file_search_path(path)
  found = []
  for f in gin_files:
    hits = [Path(p) / f for p in ["", *searched] if (Path(p) / f).exists()]
    if not hits:
      raise FileNotFoundError(f"gin file {f!r} not found (searched {searched})")
    found.append(str(hits[0]))  # As found: gin's own lookup logs an error per miss.
  gin.parse_config_files_and_bindings(found, [], finalize_config=False)
  # One binding at a time, so an error names its flag; then refuse bad values early.
  gin_checks.apply_bindings(list(bindings))
  gin_checks.check_macro_values()


def configured(module: str, name: str):
  """The gin-configured version of ``module.name``.

  Entry points run as ``__main__``, a different module object from the one
  the gin files import, so the function is looked up by its import path.
  """
  import importlib

  return gin.get_configurable(getattr(importlib.import_module(module), name))


def require_macros(module: str, name: str) -> None:
  """Raises naming each macro that ``module.name``'s bindings need and nothing sets."""
  gin_checks.check_required_macros(f"{module}.{name}")


def parse_sweep_flags(
    argv: Sequence[str] | None, *, description: str,
    add_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
) -> tuple[argparse.Namespace, dict[str, object]]:
  """Parses a sweep CLI (gin flags, ``--workers``, ``--dry_run``) and its gin config.

  Returns the arguments and the keyword overrides (``dry_run``, ``workers`` if
  given) of the configured sweep function. ``add_arguments(parser)`` adds more.
  """
  import sys

  bindings, rest = split_gin_bindings(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=description)
  add_gin_flags(parser)
  parser.add_argument("--workers", type=int, default=None, help="local worker processes")
  parser.add_argument("--dry_run", action="store_true", help="print one command per run")
  if add_arguments is not None:
    add_arguments(parser)
  args = parser.parse_args(rest)
  parse_gin(args.gin_file, bindings, args.gin_search_path)
  overrides: dict[str, object] = {"dry_run": args.dry_run}
  if args.workers is not None:
    overrides["workers"] = args.workers
  return args, overrides


def run_configured(module: str, name: str, argv: Sequence[str] | None, *, description: str):
  """The whole CLI of a gin-configured entry point: parse flags and gin, call ``module.name``."""
  import logging
  import sys

  bindings, rest = split_gin_bindings(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=description)
  add_gin_flags(parser)
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  parse_gin(args.gin_file, bindings, args.gin_search_path)
  require_macros(module, name)
  return configured(module, name)()

