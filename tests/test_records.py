"""Community trace records: round trips and every validation error."""

import json
from pathlib import Path

import pytest

from cdc_jax import names
from cdc_jax.data import records as R


def make_record(**overrides) -> R.TraceRecord:
  fields = dict(id="q1", community="toy", split="train", question="Which is wet?",
                choices=("sand", "water"), answer="water", answer_type="choice",
                rationales={6: "Water is a liquid.", 1: "liquid"}, teacher="oracle",
                teacher_answer="water", provenance={"source": "test", "license": "CC0-1.0"})
  fields.update(overrides)
  return R.TraceRecord(**fields)


def write_lines(path: Path, objs) -> Path:
  path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
  return path


def test_record_json_round_trip_is_exact(tmp_path):
  recs = [make_record(), make_record(id="q2", answer="sand", teacher_answer=None,
                                     rationales={3: "Sand is dry."})]
  assert R.write_records(tmp_path / "train.jsonl", recs) == 2
  back = R.read_records(tmp_path / "train.jsonl")
  assert back == recs
  assert back[0].rationales == {1: "liquid", 6: "Water is a liquid."}
  assert back[0].teacher_correct is True and back[1].teacher_correct is None
  # Bytes are stable: writing what was read gives the same file.
  before = (tmp_path / "train.jsonl").read_bytes()
  R.write_records(tmp_path / "train.jsonl", back)
  assert (tmp_path / "train.jsonl").read_bytes() == before
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("mutate, field, message", [
    (lambda o: o.pop("answer"), "answer", "missing"),
    (lambda o: o.update(question="   "), "question", "empty"),
    (lambda o: o.update(rationales={"7": "x"}), "rationales", "unknown level"),
    (lambda o: o.update(rationales={"two": "x"}), "rationales", "unknown level"),
    (lambda o: o.update(answer="fire"), "answer", "not among choices"),
    (lambda o: o.update(answer_type="essay"), "answer_type", "not one of"),
    (lambda o: o.update(community="../etc"), "community", "invalid community name"),
    (lambda o: o.update(split="dev"), "split", "not one of"),
    (lambda o: o.update(provenance={"source": "x"}), "provenance", "missing 'license'"),
    (lambda o: o.update(colour="red"), "colour", "unknown field"),
    (lambda o: o.update(choices=None), "choices", "needs a non-empty list"),
])
def test_bad_line_names_file_line_and_field(tmp_path, mutate, field, message):
  good = make_record().to_json()
  bad = make_record(id="q2").to_json()
  mutate(bad)
  path = write_lines(tmp_path / "train.jsonl", [good, bad])
  with pytest.raises(R.RecordError) as info:
    R.read_records(path)
  err = info.value
  assert (err.path, err.line, err.field) == (str(path), 2, field)
  assert message in str(err) and f"{path}:2" in str(err)


def test_invalid_json_and_blank_line_and_duplicate_id(tmp_path):
  good = make_record().to_json()
  path = write_lines(tmp_path / "a.jsonl", [good, '{"id": "q2", "commun'])
  with pytest.raises(R.RecordError, match=r"a\.jsonl:2: invalid JSON"):
    R.read_records(path)
  path = write_lines(tmp_path / "b.jsonl", [good, ""])
  with pytest.raises(R.RecordError, match=r"b\.jsonl:2: empty line"):
    R.read_records(path)
  path = write_lines(tmp_path / "c.jsonl", [good, good])
  with pytest.raises(R.RecordError, match=r"c\.jsonl:2: field 'id': duplicate id 'q1'"):
    R.read_records(path)


@pytest.mark.parametrize("name", ["../x", "a/b", "Toy", "1abc", "a-b", "", "a.b", None])
def test_community_names_must_be_identifiers(name):
  with pytest.raises(ValueError, match="invalid community name"):
    names.validate_name(name)


def test_manifest_refuses_escaping_split_files(tmp_path):
  with pytest.raises(ValueError, match="relative path inside"):
    R.CommunityManifest(name="toy", description="", answer_type="text",
                        splits={"train": "../../etc/passwd"}, license="x")
  (tmp_path / "community.json").write_text(json.dumps(
      {"name": "toy", "description": "", "answer_type": "text", "splits": {"train": "/abs.jsonl"},
       "license": "x"}))
  with pytest.raises(R.RecordError, match="community.json: invalid manifest"):
    R.read_manifest(tmp_path)


def test_community_directory_round_trip_and_counts(tmp_path):
  manifest = R.CommunityManifest(name="toy", description="d", answer_type="choice",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0-1.0")
  recs = {"train": [make_record(), make_record(id="q2", rationales={6: "x"})],
          "test": [make_record(id="q3", split="test", rationales={2: "y", 6: "z"})]}
  path = R.write_community(tmp_path / "toy", manifest, recs)
  community = R.load_community(path)
  assert community.manifest == manifest
  assert {k: list(v) for k, v in community.records.items()} == recs
  assert dict(community.report.records) == {"train": 2, "test": 1}
  assert dict(community.report.levels["train"]) == {1: 1, 6: 2}
  assert "train: 2 records; rationales L1=1 L6=2" in str(community.report)


def test_loading_checks_records_against_manifest_and_ids_across_splits(tmp_path):
  manifest = R.CommunityManifest(name="toy", description="d", answer_type="choice",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"}, license="x")
  R.write_community(tmp_path, manifest, {"train": [make_record()],
                                         "test": [make_record(id="q9", split="test")]})
  write_lines(tmp_path / "test.jsonl", [make_record(split="test").to_json()])
  with pytest.raises(R.RecordError, match=r"test\.jsonl:1: field 'id': duplicate id 'q1'"):
    R.load_community(tmp_path)
  write_lines(tmp_path / "test.jsonl", [make_record(id="q9").to_json()])
  with pytest.raises(R.RecordError, match=r"test\.jsonl:1: field 'split': 'train' but the manifest"):
    R.load_community(tmp_path)


def test_write_community_rejects_foreign_records(tmp_path):
  manifest = R.CommunityManifest(name="other", description="", answer_type="choice",
                                 splits={"train": "train.jsonl"}, license="x")
  with pytest.raises(ValueError, match="does not belong"):
    R.write_community(tmp_path, manifest, {"train": [make_record()]})
  assert not (tmp_path / "community.json").exists()
