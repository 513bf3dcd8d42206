"""The process-wide catalog: which communities are registered, with which vocabulary.

``register_tasks`` is what ``cdc_jax.tasks.register_all`` (and the in-repo
alias ``tasks/``) calls at import and what gin binds for
a run: it registers the embedded communities (built once into a cache
directory), the manifests in ``$CDC_COMMUNITIES`` (``os.pathsep``-separated)
and any ``communities`` given. All tasks of a process share one vocabulary: a
user's ``spm_model`` (e.g. a T5 checkpoint's ``spiece.model``) or one trained
on the communities registered first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from cdc_jax import io as io_lib
from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic
from cdc_jax.tasks import registry, vocabulary as vocab_lib

_STATE: dict[str, object] = {}


def embedded_communities(config: synthetic.SyntheticConfig = synthetic.SyntheticConfig(), *,
                         cache_dir: str | os.PathLike | None = None) -> list[Path]:
  """Manifest paths of the embedded communities, built once per config."""
  key = hashlib.sha256(f"{synthetic.GENERATOR_VERSION}:{config!r}".encode()).hexdigest()[:12]
  root = Path(cache_dir) if cache_dir else io_lib.default_cache_dir() / "communities"
  out = root / f"embedded-{key}"
  manifests = [out / name / records_lib.MANIFEST_FILENAME for name in synthetic.COMMUNITY_NAMES]
  if all(m.exists() for m in manifests):
    return manifests
  return synthetic.build_embedded_communities(out, config)


def env_communities() -> list[Path]:
  """Manifests named in ``$CDC_COMMUNITIES`` (``os.pathsep``-separated)."""
  value = os.environ.get("CDC_COMMUNITIES", "")
  return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def process_vocabulary():
  """The vocabulary shared by every task of this process (None before registration)."""
  return _STATE.get("vocabulary")


def process_options() -> registry.TaskOptions | None:
  """The task options of the last registration in this process (None before any)."""
  return _STATE.get("options")


def register_tasks(*, communities: Sequence[str | os.PathLike] = (), embedded: bool = True,
                   synthetic_config: synthetic.SyntheticConfig = synthetic.SyntheticConfig(),
                   spm_model: str | None = None, extra_ids: int = 0, vocab_size: int = 1000,
                   options: registry.TaskOptions = registry.TaskOptions(),
                   vocabulary: Any = None) -> list[str]:
  """Registers communities' tasks; returns the names of the communities registered.

  ``vocabulary``: a ready seqio Vocabulary (e.g. a Llama checkpoint's,
  ``llama_vocabulary.llama_vocabulary(path)``) instead of ``spm_model``.
  """
  manifests = (embedded_communities(synthetic_config) if embedded else []) + env_communities() + [
      Path(c) for c in communities]
  loaded = []
  for path in manifests:
    community = records_lib.load_community(path)
    logging.info("%s", community.report)
    loaded.append((path, community))
  vocab = _STATE.get("vocabulary")
  if vocabulary is not None:
    if spm_model is not None:
      raise ValueError("register_tasks: pass vocabulary= or spm_model=, not both")
    if vocab is not None and vocab != vocabulary:
      raise ValueError(f"this process already registered tasks with vocabulary "
                       f"{_STATE.get('spm_model')}; cannot switch to {vocabulary}")
    vocab, spm_model = vocabulary, getattr(vocabulary, "source", repr(vocabulary))
  elif spm_model is not None:
    spm_model = str(Path(spm_model).resolve())
    if vocab is not None and _STATE.get("spm_model") != spm_model:
      raise ValueError(f"this process already registered tasks with vocabulary "
                       f"{_STATE.get('spm_model')}; cannot switch to {spm_model}")
    if vocab is None:
      vocab = vocab_lib.load_vocabulary(spm_model, extra_ids=extra_ids)
  elif vocab is None:
    spm_model = str(vocab_lib.train_vocabulary(
        vocab_lib.community_texts(c for _, c in loaded), vocab_size=vocab_size))
    vocab = vocab_lib.load_vocabulary(spm_model, extra_ids=extra_ids)
  _STATE.setdefault("vocabulary", vocab)
  _STATE.setdefault("spm_model", spm_model)
  _STATE["options"] = options
  for path, community in loaded:
    registry.register_community(path, vocabulary=vocab, options=options, community=community)
  return [c.name for _, c in loaded]


def default_options(**overrides) -> registry.TaskOptions:
  """TaskOptions with overrides (for gin: ``@catalog.default_options()``)."""
  return dataclasses.replace(registry.TaskOptions(), **overrides)
