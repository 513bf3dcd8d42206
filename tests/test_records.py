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


# ---------------------------------------------------------------------------
# Hardening (issue 16): level keys, manifest shapes, symlinks, size limits.


@pytest.mark.parametrize("rationales", [
    {"06": "x"}, {" 6 ": "x"}, {"+6": "x"}, {"\u0666": "x"}, {"6": "x", "06": "y"}, {"6.0": "x"}])
def test_level_keys_are_exactly_the_strings_1_to_6(tmp_path, rationales):
  bad = dict(make_record(id="q2").to_json(), rationales=rationales)
  path = write_lines(tmp_path / "train.jsonl", [make_record().to_json(), bad])
  with pytest.raises(R.RecordError, match=r"train\.jsonl:2: field 'rationales': unknown level"):
    R.read_records(path)


@pytest.mark.parametrize("choices", [["sand", "water", "Water"], ["sand", "water", " water "],
                                     ["Sand", "water", "sand", "sand"]])
def test_choices_differing_only_in_case_or_spaces_are_refused(tmp_path, choices):
  bad = dict(make_record(id="q2").to_json(), choices=choices)
  path = write_lines(tmp_path / "train.jsonl", [make_record().to_json(), bad])
  with pytest.raises(R.RecordError, match=r"train\.jsonl:2: field 'choices': duplicate choice"):
    R.read_records(path)


def test_exactly_repeated_choices_are_counted(tmp_path):
  # Published CommonsenseQA repeats a choice verbatim in 146 questions: one answer, so kept, counted.
  repeated = dict(make_record(id="q2").to_json(), choices=["sand", "water", "sand"])
  path = write_lines(tmp_path / "train.jsonl", [make_record().to_json(), repeated])
  report = R.ReadReport("toy")
  assert len(R.read_records(path, report=report)) == 2
  assert report.repeated_choices == {"train": 1}
  assert str(report).endswith("train: 2 records; rationales L1=2 L6=2; 1 repeat a choice")


def _toy_manifest(**overrides):
  return dict({"name": "toy", "description": "", "answer_type": "choice",
               "splits": {"train": "train.jsonl"}, "license": "x"}, **overrides)


def test_manifest_levels_must_cover_the_records_levels(tmp_path):
  write_lines(tmp_path / "train.jsonl", [make_record().to_json()])  # Levels 1 and 6.
  (tmp_path / "community.json").write_text(json.dumps(_toy_manifest(levels=[1])))
  with pytest.raises(R.RecordError, match=r"train\.jsonl:1: field 'rationales': level 6 is not "
                     r"among the manifest's levels \[1\]"):
    R.load_community(tmp_path)
  (tmp_path / "community.json").write_text(json.dumps(_toy_manifest(levels=[1, 6])))
  assert R.load_community(tmp_path).report.records["train"] == 1
  manifest = R.CommunityManifest(**_toy_manifest(levels=(6,)))
  with pytest.raises(ValueError, match="lists only \\[6\\]"):
    R.write_community(tmp_path / "w", manifest, {"train": [make_record()]})


@pytest.mark.parametrize("content, message", [
    (json.dumps([_toy_manifest()]), "expected a JSON object, got a list"),
    (json.dumps(_toy_manifest(splits=["train.jsonl"])), "field 'splits': expected an object"),
    (json.dumps(_toy_manifest(splits=None)), "field 'splits': expected an object"),
    (json.dumps(_toy_manifest(splits={"train": "."})), "relative path inside"),
    (json.dumps(_toy_manifest(splits={"train": 3})), "field 'splits.train'"),
    (json.dumps(_toy_manifest(levels=6)), "field 'levels': expected a list"),
    (b'{"name": "toy", "description": "caf\xe9"}', "not UTF-8: byte 0xe9 at column 36"),
])
def test_malformed_manifests_name_the_file(tmp_path, content, message):
  path = tmp_path / "community.json"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(R.RecordError) as info:
    R.load_community(tmp_path)
  assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_split_that_is_a_directory_or_not_utf8_names_the_file(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "community.json").write_text(json.dumps(_toy_manifest(splits={"train": "sub/"})))
  with pytest.raises(R.RecordError, match="relative path inside"):
    R.load_community(tmp_path)
  (tmp_path / "community.json").write_text(json.dumps(_toy_manifest(splits={"train": "sub"})))
  with pytest.raises(R.RecordError, match=r"sub: is a directory"):
    R.load_community(tmp_path)
  good = json.dumps(make_record().to_json()).encode()
  (tmp_path / "train.jsonl").write_bytes(good + b"\n" + good.replace(b"Which", b"Wh\xffich") + b"\n")
  with pytest.raises(R.RecordError, match=r"train\.jsonl:2: not UTF-8: byte 0xff"):
    R.read_records(tmp_path / "train.jsonl")


def test_symlinks_leaving_the_community_directory_are_refused(tmp_path):
  outside = write_lines(tmp_path / "secret.jsonl", [make_record().to_json()])
  community = tmp_path / "toy"
  community.mkdir()
  (community / "community.json").write_text(json.dumps(_toy_manifest()))
  (community / "train.jsonl").symlink_to(outside)
  with pytest.raises(R.RecordError, match=r"toy/train\.jsonl: resolves to .*secret\.jsonl, "
                     r"outside the community directory"):
    R.load_community(community)
  # A symlink that stays inside is fine.
  (community / "train.jsonl").unlink()
  write_lines(community / "real.jsonl", [make_record().to_json()])
  (community / "train.jsonl").symlink_to("real.jsonl")
  assert len(R.load_community(community).records["train"]) == 1


def test_lines_and_fields_over_the_size_limits_are_refused_while_reading(tmp_path, monkeypatch):
  good = make_record().to_json()
  # A 5 MB question: over the default 4 MB line limit, refused before the line is parsed.
  huge = dict(make_record(id="q2").to_json(), question="x" * (5 << 20))
  path = write_lines(tmp_path / "train.jsonl", [good, huge])
  with pytest.raises(R.RecordError, match=r"train\.jsonl:2: line longer than 4194304 bytes"):
    R.read_records(path)
  # A 2 MB rationale fits the line limit but not the 1 MB field limit.
  big = dict(make_record(id="q2").to_json(), rationales={"6": "y" * (2 << 20)})
  path = write_lines(tmp_path / "train.jsonl", [good, big])
  with pytest.raises(R.RecordError, match=r"train\.jsonl:2: field 'rationales\.6': 2097152 bytes, "
                     r"over the limit of 1048576"):
    R.read_records(path)
  # Configurable: by argument and by environment; bytes, not characters, count.
  small = R.ReadLimits(max_line_bytes=10_000, max_field_bytes=20)
  path = write_lines(tmp_path / "train.jsonl", [dict(good, question="é" * 11)])
  with pytest.raises(R.RecordError, match=r"train\.jsonl:1: field 'question': 22 bytes"):
    R.read_records(path, limits=small)
  assert len(R.read_records(path)) == 1
  monkeypatch.setenv(R.LINE_LIMIT_ENV, "100")
  with pytest.raises(R.RecordError, match=r"train\.jsonl:1: line longer than 100 bytes"):
    R.read_records(path)
  monkeypatch.setenv(R.LINE_LIMIT_ENV, "lots")
  with pytest.raises(ValueError, match="CDC_MAX_LINE_BYTES='lots'"):
    R.read_records(path)
  with pytest.raises(ValueError, match="max_field_bytes must be a positive integer"):
    R.ReadLimits(max_field_bytes=0)
