"""What a run takes from outside the repository, checked before anything starts.

Paper-scale runs read a HF T5 checkpoint, its SentencePiece model and the
community directories under a data root. Gin files bind these as macros
(``HF_CHECKPOINT``, ``SPM_MODEL``, ``DATA_ROOT``); the functions here turn
them into what the trainer takes and fail early, naming the macro, when one
is unset or points nowhere. An unset checkpoint must not silently become a
run from random weights, nor an unset ``spm_model`` a vocabulary trained on
the communities.

>>> community_manifests(data_root="/data", communities=["gsm8k", "csqa"])
['/data/gsm8k/community.json', '/data/csqa/community.json']
>>> macro_bindings(macros={"DATA_ROOT": "/data", "TRAIN_STEPS": 10})
["DATA_ROOT = '/data'", 'TRAIN_STEPS = 10']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib


def required_path(*, path: str | os.PathLike | None, name: str,
                  must_contain: str | None = None) -> str:
  """Returns ``path`` if it exists (and holds ``must_contain``), else raises.

  Args:
    path: the configured path (None when the macro was never set).
    name: the macro that sets it, for the error message.
    must_contain: a file the directory must hold (``config.json`` of a HF checkpoint).

  Raises:
    ValueError: ``path`` is None.
    FileNotFoundError: ``path`` (or ``path/must_contain``) does not exist.
  """
  if path is None:
    raise ValueError(f"{name} is required but not set (pass --gin.{name}=\"'/path'\" or bind "
                     f"it in a gin file)")
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{name} = {str(path)!r} does not exist")
  if must_contain is not None and not (path / must_contain).is_file():
    raise FileNotFoundError(f"{name} = {str(path)!r} has no {must_contain}")
  return str(path)


def community_manifests(*, data_root: str | os.PathLike | None,
                        communities: Sequence[str]) -> list[str]:
  """``data_root/<name>/community.json`` for each community, in order.

  Existence is checked where the manifests are read (one error per missing
  directory there); here only an unset ``DATA_ROOT`` and bad names fail.
  """
  if data_root is None:
    raise ValueError("DATA_ROOT is required but not set: the directory holding one community "
                     "directory per name (launch/prepare_real_communities.sh writes it)")
  if not communities:
    raise ValueError("no communities given")
  return [str(Path(data_root) / names.validate_name(c) / records_lib.MANIFEST_FILENAME)
          for c in communities]


def macro_bindings(*, macros: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
  """Gin bindings ``NAME = <Python literal>`` that carry macros into a sweep's runs.

  A sweep's runs are configured by files and binding strings (``run.json``);
  this renders the sweep's own macros as such strings, so one set of flags
  configures the sweep and all its runs. Every macro is required.

  Args:
    macros: macro name -> value (str, number, bool, or lists/dicts of them).
    extra: further bindings appended as given.
  """
  out = []
  for name, value in macros.items():
    if value is None:
      raise ValueError(f"{name} is required but not set (pass --gin.{name}=...)")
    text = repr(value)
    # A value gin cannot read back (an object's repr) would fail only on the run machine.
    if text.startswith("<"):
      raise ValueError(f"{name} = {text} is not a literal a gin binding can carry")
    out.append(f"{name} = {text}")
  return out + list(extra)
