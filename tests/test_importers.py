"""Importers of published CoT data: real files in ../shared/data and broken copies."""

import doctest
import json
import re
from pathlib import Path

import pytest

from cdc_jax.data import import_traces
from cdc_jax.data import importers
from cdc_jax.data import records
from cdc_jax.data.importers import assembly, dss, gsm8k, leveled_cot, sources, strategyqa

# A rationale must not keep the closing answer sentence the formats append.
_ANSWER_SENTENCE = re.compile(r"\bthe answer is\b[^.]{0,40}\W*$", re.IGNORECASE)


@pytest.mark.parametrize("module", [assembly, dss, gsm8k, leveled_cot, strategyqa, importers])
def test_doctests(module):
  result = doctest.testmod(module)
  assert result.failed == 0 and result.attempted >= 1


# ---------------------------------------------------------------------------
# Real data (counts from SOURCES.md). Imports are shared per module: seconds each.


@pytest.fixture(scope="module")
def stqa_llama(shared_data):
  return importers.import_leveled_cot(shared_data / "eit_cot", dataset="strategyqa",
                                      community="stqa_llama", teacher="llama")


def test_leveled_strategyqa_llama_counts(shared_data, stqa_llama):
  for level in range(1, 7):
    path = shared_data / "eit_cot" / f"stqa_llama_level{level}_ranked.json"
    assert len(sources.read_json_array(path)) == 1996
  report = stqa_llama.report
  # 2,000 gold items hold one question twice; each level file repeats it too.
  assert report.items["train"] == 2000 and report.questions["train"] == 1999
  assert report.duplicates["strategyQA_onlyans.json"] == 1
  assert report.duplicates["stqa_llama_level6_ranked.json"] == 1
  assert {level: report.traces["train"][level] for level in range(1, 7)} == {
      level: 1995 for level in range(1, 7)}
  assert dict(report.absent["train"]) == {level: 4 for level in range(1, 7)}
  assert report.skipped == {("train", "no rationale at any level"): 4}
  assert report.records == {"train": 1995, "test": 290}
  assert "L3: 4 questions absent" in str(report)
  for level in range(1, 7):
    assert 0.9 < report.teacher_accuracy("train", level) < 1.0


def test_leveled_strategyqa_records(stqa_llama):
  train, test = stqa_llama.records["train"], stqa_llama.records["test"]
  assert stqa_llama.manifest.levels == (1, 2, 3, 4, 5, 6)
  assert stqa_llama.manifest.splits == {"train": "train.jsonl", "test": "test.jsonl"}
  assert {r.answer for r in train + test} == {"yes", "no"}
  assert all(r.answer_type == "boolean" and r.choices is None for r in train)
  assert all(r.rationales == {} and r.teacher_answer is None for r in test)
  first = train[0]
  assert first.question == "Are more people today related to Genghis Khan than Julius Caesar?"
  assert first.answer == "yes" and first.teacher_answer == "yes"
  assert first.rationales[1] == ("Genghis Khan had many wives and children, and his empire was "
                                 "huge, so he had many descendants. Julius Caesar, on the other "
                                 "hand, had no known children.")
  assert first.provenance["items"]["L6"] == "stqa_llama_level6_ranked.json#0"
  assert first.provenance["license"] == "Apache-2.0"
  assert first.teacher == "llama-3-70b"
  assert not any(_ANSWER_SENTENCE.search(text) for r in train for text in r.rationales.values())
  assert len({r.id for r in train + test}) == len(train) + len(test)


def test_leveled_keep_correct_drops_wrong_levels(shared_data, stqa_llama):
  kept = importers.import_leveled_cot(shared_data / "eit_cot", dataset="stqa",
                                      community="stqa_llama", teacher="llama", keep="correct",
                                      levels=[1, 6])
  report, full = kept.report, stqa_llama.report
  for level in (1, 6):
    assert (report.rationales["train"][level] + report.dropped["train"][level]
            + report.empty["train"][level]) == full.traces["train"][level]
  assert kept.manifest.levels == (1, 6)
  for r in kept.records["train"]:
    assert set(r.rationales) <= {1, 6}
    assert all(answer == r.answer for answer in r.provenance["teacher_answers"].values())
    assert r.teacher_correct
  # A question whose every rationale is wrong is skipped, and says so.
  assert report.skipped[("train", "no correct rationale at any level")] >= 1


def test_leveled_strategyqa_gemini(shared_data):
  for level in range(1, 7):
    path = shared_data / "eit_cot" / f"stqa_gemini_level{level}_ranked.json"
    assert len(sources.read_json_array(path)) == 2000
  imported = importers.import_leveled_cot(shared_data / "eit_cot", dataset="strategyqa",
                                          community="stqa_gemini", teacher="gemini", levels=[2])
  assert imported.report.records == {"train": 1999, "test": 290}
  assert imported.records["train"][0].teacher == "gemini-1.5-flash"
  assert 0.9 < imported.report.teacher_accuracy("train", 2) < 1.0


def test_leveled_csqa_parses_both_choice_styles(shared_data):
  imported = importers.import_leveled_cot(shared_data / "eit_cot", dataset="csqa",
                                          community="csqa_llama", levels=[1])
  train, test = imported.records["train"], imported.records["test"]
  assert imported.report.traces["train"][1] == 9732
  assert len(train) == 9732 and len(test) == 1221
  assert imported.report.absent["train"][1] == 8  # 9,740 gold questions.
  assert train[0].question == "Sammy wanted to go to where the people were.  Where might he go?"
  assert train[0].choices == ("race track", "populated areas", "the desert", "apartment",
                              "roadblock")
  assert train[0].answer == "populated areas" and train[0].teacher_answer == "populated areas"
  assert test[0].question == ("A revolving door is convenient for two direction travel, but it "
                              "also serves as a security measure at a what?")
  assert test[0].choices == ("bank", "library", "department store", "mall", "new york")
  assert test[0].answer == "bank"
  assert all(len(r.choices) == 5 and r.answer in r.choices for r in train + test)
  assert 0.9 < imported.report.teacher_accuracy("train", 1) <= 1.0
  # Both instruction styles give the choices distilling-step-by-step lists as JSON.
  for split, recs, expected_same in (("test", test, 1221), ("train", train, 9731)):
    listed = {}
    for item in sources.read_json_lines(shared_data / "dss" / "cqa" / f"cqa_{split}.json"):
      listed[importers.question_key(item.data["question"])] = (
          tuple(c.strip() for c in item.data["choices"]), item.data["answer"])
    same = sum(listed.get(importers.question_key(r.question)) == (r.choices, r.answer)
               for r in recs)
    assert same == expected_same  # Train: one question has other choices upstream.


def test_leveled_gsm8k_and_svamp_have_train_only(shared_data):
  gsm = importers.import_leveled_cot(shared_data / "eit_cot", dataset="gsm8k", community="gsm")
  assert gsm.report.traces["train"] == {1: 7442, 2: 7442}
  assert gsm.report.items["train"] == 7473
  assert gsm.report.absent["train"] == {1: 31, 2: 31}
  assert gsm.report.records == {"train": 7442}
  assert list(gsm.manifest.splits) == ["train"]
  assert any("no gsm8k test file" in note for note in gsm.report.notes)
  # 'The answer is 70 - 15 = 55' states 55, and '$1,200' style numbers parse.
  assert 0.99 < gsm.report.teacher_accuracy("train", 2) < 1.0
  svamp = importers.import_leveled_cot(shared_data / "eit_cot", dataset="svamp", community="sv")
  assert svamp.report.traces["train"] == {level: 700 for level in (1, 2, 3, 4)}
  assert svamp.report.records == {"train": 700}
  assert all(r.answer_type == "number" for r in svamp.records["train"])


def test_dss_cqa_and_svamp(shared_data):
  cqa = importers.import_dss(shared_data / "dss" / "cqa", community="dss_cqa")
  assert cqa.report.records == {"train": 9741, "test": 1221}
  assert cqa.report.traces["train"][6] == 9741
  first = cqa.records["train"][0]
  assert first.id == "6b819727eb8a670df26a7ffad036c119"
  assert first.rationales[6] == ("The answer must be something that has to do with the above "
                                 "problem. Of the above choices, only math problem has to do "
                                 "with the above problem.")
  assert first.teacher_answer == "math problem" == first.answer
  assert first.provenance["items"] == {"gold": "cqa_train.json#0", "L6": "train_CoT_0.json#0"}
  assert 0.6 < cqa.report.teacher_accuracy("train", 6) < 0.95
  assert not any("Q:" in r.rationales[6] for r in cqa.records["train"])
  svamp = importers.import_dss(shared_data / "dss", dataset="svamp", community="dss_svamp")
  assert svamp.report.records == {"train": 800, "test": 200}
  first = svamp.records["train"][0]
  assert first.answer == "42" and first.teacher_answer == "42"  # '( 84.0 / 2.0 )', '(84 / 2)'
  assert first.rationales[6].endswith("84 / 2 = 42.")
  assert 0.6 < svamp.report.teacher_accuracy("test", 6) < 0.95
  for r in cqa.records["train"][:2000] + svamp.records["train"]:
    assert not _ANSWER_SENTENCE.search(r.rationales[6])


def test_official_gsm8k(shared_data):
  imported = importers.import_gsm8k(shared_data / "gsm8k", community="gsm8k_human")
  assert imported.report.records == {"train": 7473, "test": 1319}
  first = imported.records["train"][0]
  assert first.answer == "72" and first.teacher == "human"
  assert first.rationales == {6: "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 "
                                 "clips altogether in April and May."}
  assert not any("<<" in r.rationales[6] or "####" in r.rationales[6]
                 for recs in imported.records.values() for r in recs)
  assert imported.report.teacher_accuracy("test", 6) == 1.0
  assert any(r.answer == "2125" for r in imported.records["test"])  # '#### 2,125'


def test_official_strategyqa(shared_data):
  imported = importers.import_strategyqa(shared_data / "strategyqa", community="stqa_human")
  report = imported.report
  assert report.items == {"train": 2061, "test": 229}
  assert report.records == {"train": 2060, "test": 229}  # One question asked twice.
  assert report.duplicates == {"train.json": 1}
  first = imported.records["train"][0]
  assert first.id == "2bc9c4f9c19c167187f2" and first.answer == "yes"
  assert first.rationales[6].startswith("Julius Caesar had three children. Genghis Khan had "
                                        "sixteen children.")
  assert first.teacher_answer is None and report.traces["train"] == {}
  with pytest.raises(ValueError, match="keep='correct' needs teacher answers"):
    importers.import_strategyqa(shared_data / "strategyqa", community="x", keep="correct")


def test_cli_writes_a_community_that_loads(shared_data, tmp_path, capsys):
  out = tmp_path / "svamp_llama"
  status = import_traces.main([
      "--format=leveled_cot", f"--source={shared_data / 'eit_cot'}", "--dataset=svamp",
      f"--out={out}", "--community=svamp_llama", "--keep=correct", "--levels=1,4"])
  assert status == 0
  printed = capsys.readouterr().out
  assert "teacher accuracy: L1 99.6% (697/700, 0 unparsed)" in printed
  assert "L1: 3 wrong rationales dropped (keep=correct)" in printed
  assert "skipped: 1 train questions: no correct rationale at any level" in printed
  community = records.load_community(out)
  assert community.manifest.levels == (1, 4)
  assert community.report.records == {"train": 699}
  # L1: 697 correct, one of them an answer without a rationale ('L1: 1 empty').
  assert community.report.levels["train"] == {1: 696, 4: 699}
  assert all(r.teacher_correct for r in community.records["train"])


def test_cli_reports_bad_input(tmp_path, capsys):
  status = import_traces.main(["--format=gsm8k", f"--source={tmp_path}", f"--out={tmp_path}/o",
                               "--community=g"])
  assert status == 1
  assert f"{tmp_path}/train.jsonl: file not found" in capsys.readouterr().err
  status = import_traces.main(["--format=strategyqa", f"--source={tmp_path}", "--levels=1,2",
                               f"--out={tmp_path}/o", "--community=s"])
  assert status == 1
  assert "give one level" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Small hand-written copies: joining, reporting and located errors.


def _write_json(path: Path, value) -> Path:
  path.write_text(json.dumps(value, indent=2))
  return path


_STQA = [("Are bats mammals?", "True", "Bats nurse their young. The answer is True"),
         ("Is the sun cold?", "False", "The sun is hot.\n The answer is False"),
         ("Can fish fly?", "False", "Some fish glide. The answer is True"),
         ("Is ice solid?", "True", "Ice is frozen water. So the answer is True.")]


@pytest.fixture
def small_eit(tmp_path):
  gold = [{"instruction": q, "output": a} for q, a, _ in _STQA]
  _write_json(tmp_path / "strategyQA_onlyans.json", gold)
  _write_json(tmp_path / "strategyQA_test.json", [{"instruction": "Is water wet?",
                                                    "label": "True"}])
  level1 = [{"instruction": q, "output": o} for q, _, o in _STQA]
  _write_json(tmp_path / "stqa_llama_level1_ranked.json", level1)
  # Level 2: other order, other spacing and case, one question missing.
  level2 = [{"instruction": "is ICE solid ?", "output": "Water freezes. The answer is True"},
            {"instruction": " Are bats  mammals?", "output": "Bats nurse. The answer is True"},
            {"instruction": "Is the sun cold?", "output": "It is a star. The answer is False"}]
  _write_json(tmp_path / "stqa_llama_level2_ranked.json", level2)
  return tmp_path


def test_small_join_by_question_text_and_report(small_eit):
  imported = importers.import_leveled_cot(small_eit, dataset="stqa", community="small")
  report = imported.report
  by_question = {r.question: r for r in imported.records["train"]}
  assert by_question["Are bats mammals?"].rationales == {1: "Bats nurse their young.",
                                                         2: "Bats nurse."}
  assert by_question["Is ice solid?"].rationales == {1: "Ice is frozen water.",
                                                     2: "Water freezes."}
  assert by_question["Can fish fly?"].rationales == {1: "Some fish glide."}
  assert by_question["Can fish fly?"].teacher_answer == "yes"
  assert report.absent["train"] == {2: 1}
  assert report.traces["train"] == {1: 4, 2: 3}
  assert report.correct["train"] == {1: 3, 2: 3}
  assert "L2: 1 questions absent" in str(report)
  assert imported.records["test"][0].answer == "yes"
  kept = importers.import_leveled_cot(small_eit, dataset="stqa", community="small",
                                      keep="correct")
  fish = {r.question: r for r in kept.records["train"]}
  assert "Can fish fly?" not in fish  # Its only rationale was wrong.
  assert kept.report.dropped["train"] == {1: 1}
  assert kept.report.skipped == {("train", "no correct rationale at any level"): 1}


def test_small_truncated_json_names_file_and_item(small_eit):
  path = small_eit / "stqa_llama_level1_ranked.json"
  text = path.read_text()
  path.write_text(text[:text.index("Can fish fly?")])
  with pytest.raises(sources.SourceError, match=r"stqa_llama_level1_ranked\.json:\d+: item 2: "
                     r"invalid JSON") as info:
    importers.import_leveled_cot(small_eit, dataset="stqa", community="small")
  assert info.value.item == 2 and info.value.line == 10


def test_small_missing_field_names_item_and_field(small_eit):
  items = json.loads((small_eit / "stqa_llama_level2_ranked.json").read_text())
  del items[1]["output"]
  _write_json(small_eit / "stqa_llama_level2_ranked.json", items)
  with pytest.raises(sources.SourceError) as info:
    importers.import_leveled_cot(small_eit, dataset="stqa", community="small")
  message = str(info.value)
  assert "stqa_llama_level2_ranked.json:6: item 1: field 'output': missing" in message


def test_small_bad_gold_answer_and_missing_level(small_eit):
  gold = json.loads((small_eit / "strategyQA_onlyans.json").read_text())
  gold[3]["output"] = "Maybe"
  _write_json(small_eit / "strategyQA_onlyans.json", gold)
  with pytest.raises(sources.SourceError, match=r"item 3: field 'output': 'Maybe' is not a "
                     r"boolean answer"):
    importers.import_leveled_cot(small_eit, dataset="stqa", community="small")
  with pytest.raises(sources.SourceError, match=r"no file for level\(s\) \[3\].*found \[1, 2\]"):
    importers.import_leveled_cot(small_eit, dataset="stqa", community="small", levels=[1, 3])


def test_small_conflicting_duplicate_gold_is_an_error(small_eit):
  gold = json.loads((small_eit / "strategyQA_onlyans.json").read_text())
  gold.append({"instruction": "are bats mammals", "output": "False"})
  _write_json(small_eit / "strategyQA_onlyans.json", gold)
  with pytest.raises(sources.SourceError, match=r"item 4: repeats the question of "
                     r"strategyQA_onlyans.json#0 with a different gold answer"):
    importers.import_leveled_cot(small_eit, dataset="stqa", community="small")


def test_parse_choice_instruction_styles_and_errors():
  assert leveled_cot.parse_choice_instruction(
      "Q: Where is Washington, D.C.? Answer choices: A: usa, B: d.c., washington, C: moon") == (
          "Where is Washington, D.C.?", ("usa", "d.c., washington", "moon"))
  assert leveled_cot.parse_choice_instruction(
      "Pick one Answer Choices:\nA. red\nB. blue, green\n") == ("Pick one", ("red", "blue, green"))
  with pytest.raises(ValueError, match="choice 2 should be labelled 'B'"):
    leveled_cot.parse_choice_instruction("Q: x? Answer choices: A: a, C: c")
  with pytest.raises(ValueError, match="no 'Answer choices:'"):
    leveled_cot.parse_choice_instruction("Q: x? A: a, B: b")


def test_small_csqa_bad_choices_names_item(tmp_path):
  _write_json(tmp_path / "commonsenseQA_onlyans.json", [
      {"instruction": "Q: Where? Answer choices: A: park, B: sea", "output": "B"},
      {"instruction": "Q: Why? Answer choices: A: so, A: because", "output": "A"}])
  _write_json(tmp_path / "csqa_llama_level1_ranked.json", [])
  with pytest.raises(sources.SourceError, match=r"commonsenseQA_onlyans.json:\d+: item 1: field "
                     r"'instruction': choice 2 should be labelled 'B'"):
    importers.import_leveled_cot(tmp_path, dataset="csqa", community="c")


def _small_dss(tmp_path, continuations):
  folder = tmp_path / "svamp"
  (folder / "llm").mkdir(parents=True)
  items = [{"input": "Ann has 3 apples and gets 4.\nHow many now?", "label": "( 3.0 + 4.0 )"},
           {"input": "Bo has 9 pens and loses 2.\nHow many now?", "label": "( 9.0 - 2.0 )"}]
  (folder / "svamp_train.json").write_text("".join(json.dumps(i) + "\n" for i in items))
  _write_json(folder / "llm" / "train_CoT_0.json", continuations)
  return folder


def test_small_dss_cut_split_and_count_check(tmp_path):
  folder = _small_dss(tmp_path, [
      "3 + 4 = 7. The answer is (3 + 4).\n\nQ: Next question?\nA: The answer is (1 + 1).",
      "9 - 2 = 6. The answer is (9 - 3)."])
  imported = importers.import_dss(folder, community="small_svamp")
  first, second = imported.records["train"]
  assert first.rationales == {6: "3 + 4 = 7."} and first.teacher_answer == "7"
  assert second.answer == "7" and second.teacher_answer == "6" and not second.teacher_correct
  assert imported.report.correct["train"] == {6: 1}
  (folder / "llm" / "train_CoT_0.json").write_text(json.dumps(["only one"]))
  with pytest.raises(sources.SourceError, match=r"hold 1 continuations but svamp_train.json has "
                     r"2 items"):
    importers.import_dss(folder, community="small_svamp")


def test_small_gsm8k_missing_final_line_names_line(tmp_path):
  lines = [{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"},
           {"question": "2+2?", "answer": "2+2=4"}]
  (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
  with pytest.raises(sources.SourceError, match=r"train.jsonl:2: item 1: field 'answer': no "
                     r"'#### N' line"):
    importers.import_gsm8k(tmp_path, community="g")
  (tmp_path / "train.jsonl").write_text(json.dumps(lines[0]) + "\n")
  imported = importers.import_source("gsm8k", tmp_path, community="g", levels=[2])
  assert imported.records["train"][0].rationales == {2: "1+1=2"}
  assert list(imported.manifest.splits) == ["train"]


def test_keep_correct_keeps_every_test_question(shared_data):
  imported = importers.import_dss(shared_data / "dss" / "svamp", community="s", keep="correct")
  report = imported.report
  assert report.records == {"train": 595, "test": 200}
  assert report.dropped == {"train": {6: 205}, "test": {6: 45}}
  assert report.skipped == {("train", "no correct rationale at any level"): 205}
  assert sum(not r.rationales for r in imported.records["test"]) == 45
  assert all(r.teacher_correct for r in imported.records["train"])
