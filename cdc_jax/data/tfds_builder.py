"""A TFDS builder for community trace directories.

A community directory (manifest + JSON Lines of records) is prepared once
into a TFDS ``data_dir`` and then served like any TFDS dataset, e.g. through
``seqio.TfdsDataSource``::

  name = prepare_community("/data/communities/stqa_llama", data_dir="/data/tfds")
  # name == "cdc_traces/stqa_llama:1.0.0"
  source = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir="/data/tfds")

The builder is registered as ``cdc_traces``; each community is one builder
config named after it. Communities are not known when this module is
imported, so the config comes from the ``community_dir`` constructor
argument; once prepared, ``tfds.builder("cdc_traces/<community>", data_dir=...)``
(which is what SeqIO calls) reads the prepared files without needing the
community directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

# TensorFlow reads these when it is first imported; quiet it unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from cdc_jax import names  # noqa: E402
from cdc_jax.data import records as records_lib  # noqa: E402

BUILDER_NAME = "cdc_traces"
LEVEL_FEATURES = tuple(f"level_{level}" for level in names.LEVELS)


@dataclasses.dataclass(eq=False)
class CommunityConfig(tfds.core.BuilderConfig):
  """A builder config for one community directory.

  Attributes:
    community_dir: the directory holding ``community.json``.
  """
  community_dir: str = ""


def community_config(community_dir: str | os.PathLike) -> CommunityConfig:
  """The builder config of a community directory (named after the community)."""
  manifest = records_lib.read_manifest(community_dir)
  return CommunityConfig(name=manifest.name, description=manifest.description,
                         community_dir=str(Path(community_dir).resolve()))


def record_to_example(record: records_lib.TraceRecord) -> dict[str, Any]:
  """The TFDS example of a record: one text feature per level plus a mask.

  Absent levels are empty strings with ``has_level`` False; a missing
  teacher answer is the empty string.
  """
  example = {
      "id": record.id,
      "community": record.community,
      "question": record.question,
      "choices": list(record.choices or ()),
      "answer": record.answer,
      "answer_type": record.answer_type,
      "has_level": np.array([level in record.rationales for level in names.LEVELS], np.bool_),
      "teacher": record.teacher,
      "teacher_answer": record.teacher_answer or "",
      "provenance": json.dumps(dict(record.provenance), sort_keys=True, ensure_ascii=False),
  }
  for level, feature in zip(names.LEVELS, LEVEL_FEATURES):
    example[feature] = record.rationales.get(level, "")
  return example


def features() -> tfds.features.FeaturesDict:
  """The features of every community dataset."""
  text = tfds.features.Text
  spec = {
      "id": text(), "community": text(), "question": text(),
      "choices": tfds.features.Sequence(text()),
      "answer": text(), "answer_type": text(),
      "has_level": tfds.features.Tensor(shape=(len(names.LEVELS),), dtype=np.bool_),
      "teacher": text(), "teacher_answer": text(),
      "provenance": text(doc="JSON object: source, license, items, teacher answers"),
  }
  spec.update({feature: text() for feature in LEVEL_FEATURES})
  return tfds.features.FeaturesDict(spec)


class CdcTraces(tfds.core.GeneratorBasedBuilder):
  """Community trace records as a TFDS dataset (one config per community)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Records with rationale levels 1..6 as text features and a mask."}
  BUILDER_CONFIGS: list[CommunityConfig] = []  # Communities come from `community_dir`.

  def __init__(self, *, community_dir: str | os.PathLike | None = None,
               config: str | tfds.core.BuilderConfig | None = None, **kwargs: Any):
    if community_dir is not None:
      if config is not None:
        raise ValueError("give either community_dir or config, not both")
      config = community_config(community_dir)
    if not isinstance(config, CommunityConfig):
      raise ValueError(
          f"{BUILDER_NAME} needs a community: CdcTraces(community_dir=...) to prepare one, "
          f"or tfds.builder('{BUILDER_NAME}/<community>', data_dir=...) to read a prepared one")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    manifest = records_lib.read_manifest(self.builder_config.community_dir)
    return self.dataset_info_from_configs(
        description=manifest.description, features=features(), license=manifest.license,
        metadata=tfds.core.MetadataDict(
            answer_type=manifest.answer_type, teacher=manifest.teacher,
            levels=list(manifest.levels)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
    del dl_manager  # Everything is local.
    community = records_lib.load_community(self.builder_config.community_dir)
    return {split: self._generate_examples(recs) for split, recs in community.records.items()}

  def _generate_examples(self, recs: Sequence[records_lib.TraceRecord]
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    for record in recs:
      yield record.id, record_to_example(record)


def tfds_name(community: str) -> str:
  """The TFDS name (with version) under which a community is prepared."""
  names.validate_name(community)
  return f"{BUILDER_NAME}/{community}:{CdcTraces.VERSION}"


def prepare_community(community_dir: str | os.PathLike, *, data_dir: str | os.PathLike,
                      overwrite: bool = False) -> str:
  """Prepares a community directory into ``data_dir``; returns its TFDS name.

  An already prepared community is reused unless ``overwrite`` (re-import a
  community under the same name with ``overwrite=True``).
  """
  builder = CdcTraces(community_dir=community_dir, data_dir=str(data_dir))
  mode = (tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS if not overwrite
          else tfds.download.GenerateMode.FORCE_REDOWNLOAD)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=mode, try_download_gcs=False))
  return tfds_name(builder.builder_config.name)
