"""The TFDS builder of community directories, read back through tfds and SeqIO."""

import json

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from cdc_jax.data import importers
from cdc_jax.data import records
from cdc_jax.data import tfds_builder

_PROVENANCE = {"source": "test", "license": "MIT"}


def _record(i: int, split: str, rationales: dict, teacher_answer) -> records.TraceRecord:
  return records.TraceRecord(
      id=f"{split}-{i}", community="tiny", split=split, question=f"Where is thing {i}?",
      answer="river", answer_type="choice", rationales=rationales,
      choices=("sea", "river", "lake"), teacher="t5-teacher", teacher_answer=teacher_answer,
      provenance=_PROVENANCE)


@pytest.fixture(scope="module")
def tiny_community(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tiny")
  recs = {
      "train": [_record(0, "train", {1: "Short.", 6: "A long rationale."}, "river"),
                _record(1, "train", {3: "Middle."}, "sea"),
                _record(2, "train", {6: "Only full."}, None)],
      "test": [_record(0, "test", {}, None)],
  }
  manifest = records.CommunityManifest(
      name="tiny", description="A tiny community.", answer_type="choice",
      splits={"train": "train.jsonl", "test": "test.jsonl"}, license="MIT", levels=(1, 3, 6),
      teacher="t5-teacher")
  records.write_community(directory, manifest, recs)
  return directory


@pytest.fixture(scope="module")
def prepared(tiny_community, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  name = tfds_builder.prepare_community(tiny_community, data_dir=data_dir)
  return name, data_dir


def test_prepare_and_read_with_tfds(prepared):
  name, data_dir = prepared
  assert name == "cdc_traces/tiny:1.0.0"
  builder = tfds.builder(name, data_dir=str(data_dir))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 3, "test": 1}
  assert builder.info.description == "A tiny community."
  train = {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  first = train["train-0"]
  assert first["question"] == b"Where is thing 0?"
  assert list(first["choices"]) == [b"sea", b"river", b"lake"]
  assert first["answer"] == b"river" and first["answer_type"] == b"choice"
  assert first["level_1"] == b"Short." and first["level_6"] == b"A long rationale."
  assert first["level_2"] == b"" and first["level_3"] == b""
  np.testing.assert_array_equal(first["has_level"], [True, False, False, False, False, True])
  assert first["teacher"] == b"t5-teacher" and first["teacher_answer"] == b"river"
  assert json.loads(first["provenance"]) == _PROVENANCE
  np.testing.assert_array_equal(train["train-1"]["has_level"], [0, 0, 1, 0, 0, 0])
  assert train["train-2"]["teacher_answer"] == b""
  (test,) = tfds.as_numpy(builder.as_dataset(split="test"))
  assert not test["has_level"].any() and test["level_6"] == b""


def test_read_through_seqio(prepared):
  name, data_dir = prepared
  source = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=str(data_dir))
  assert set(source.splits) == {"train", "test"}
  assert source.num_input_examples("train") == 3
  examples = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert sorted(ex["id"] for ex in examples) == [b"train-0", b"train-1", b"train-2"]
  assert {ex["id"]: ex["level_3"] for ex in examples}[b"train-1"] == b"Middle."


def test_prepare_reuses_unless_overwrite(prepared, tiny_community, tmp_path):
  name, data_dir = prepared
  info_file = data_dir / "cdc_traces" / "tiny" / "1.0.0" / "dataset_info.json"
  before = info_file.stat().st_mtime_ns
  assert tfds_builder.prepare_community(tiny_community, data_dir=data_dir) == name
  assert info_file.stat().st_mtime_ns == before
  # The same community re-imported with fewer records: kept until overwrite.
  smaller = tmp_path / "tiny"
  community = records.load_community(tiny_community)
  records.write_community(smaller, community.manifest,
                          {"train": community.records["train"][:2],
                           "test": community.records["test"]})
  fresh = tmp_path / "tfds"
  tfds_builder.prepare_community(tiny_community, data_dir=fresh)
  tfds_builder.prepare_community(smaller, data_dir=fresh)
  assert tfds.builder(name, data_dir=str(fresh)).info.splits["train"].num_examples == 3
  tfds_builder.prepare_community(smaller, data_dir=fresh, overwrite=True)
  assert tfds.builder(name, data_dir=str(fresh)).info.splits["train"].num_examples == 2


def test_builder_needs_a_community(tmp_path):
  with pytest.raises(ValueError, match="needs a community"):
    tfds_builder.CdcTraces(data_dir=str(tmp_path))
  with pytest.raises(records.RecordError, match="no community manifest"):
    tfds_builder.CdcTraces(community_dir=tmp_path, data_dir=str(tmp_path))


def test_imported_real_community_round_trips(shared_data, tmp_path):
  imported = importers.import_leveled_cot(shared_data / "eit_cot", dataset="svamp",
                                          community="svamp_llama", levels=[2, 4])
  subset = {"train": imported.records["train"][:5]}
  records.write_community(tmp_path / "svamp_llama", imported.manifest, subset)
  name = tfds_builder.prepare_community(tmp_path / "svamp_llama", data_dir=tmp_path / "tfds")
  source = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=str(tmp_path / "tfds"))
  got = {ex["id"].decode(): ex for ex in source.get_dataset("train", shuffle=False)
         .as_numpy_iterator()}
  for record in subset["train"]:
    ex = got[record.id]
    assert ex["level_2"].decode() == record.rationales[2]
    assert ex["level_4"].decode() == record.rationales[4]
    assert ex["answer"].decode() == record.answer
    assert ex["teacher_answer"].decode() == record.teacher_answer
    assert json.loads(ex["provenance"])["items"] == record.provenance["items"]
