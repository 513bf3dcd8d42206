"""data.subsample: fixed seeded subsets of a community's splits, counted and traceable."""

import json

import pytest

from cdc_jax.data import records as R
from cdc_jax.data import subsample


def _community(root, name, *, train, test):
  def rec(i, split):
    return R.TraceRecord(id=f"{split}{i}", community=name, split=split,
                         question=f"Is {i} even?", answer="yes" if i % 2 == 0 else "no",
                         answer_type="boolean", rationales={1: f"{i} mod 2 is {i % 2}."},
                         teacher="oracle", provenance={"source": "test", "license": "CC0"})
  manifest = R.CommunityManifest(name=name, description=name, answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0", levels=(1,))
  R.write_community(root / name, manifest, {"train": [rec(i, "train") for i in range(train)],
                                            "test": [rec(i, "test") for i in range(test)]})
  return root / name


def _ids(directory, split):
  return [r.id for r in R.load_community(directory).records[split]]


def test_subset_is_seeded_ordered_and_counted(tmp_path, capsys):
  src = _community(tmp_path, "parity", train=50, test=7)
  report = subsample.subsample_community(src, tmp_path / "a", sizes={"train": 10, "test": 20},
                                         seed=3)
  assert report.read == {"train": 50, "test": 7} and report.kept == {"train": 10, "test": 7}
  assert "fewer than 20: kept whole" in capsys.readouterr().err
  kept = _ids(tmp_path / "a", "train")
  assert len(set(kept)) == 10 and set(kept) <= set(_ids(src, "train"))
  assert kept == sorted(kept, key=lambda i: int(i[5:]))  # The source's order.
  assert _ids(tmp_path / "a", "test") == _ids(src, "test")
  saved = json.loads((tmp_path / "a" / subsample.REPORT_FILENAME).read_text())
  assert saved["kept"] == {"train": 10, "test": 7} and saved["seed"] == 3
  assert "seed 3" in R.read_manifest(tmp_path / "a" / R.MANIFEST_FILENAME).description

  subsample.subsample_community(src, tmp_path / "b", sizes={"train": 10}, seed=3)
  subsample.subsample_community(src, tmp_path / "c", sizes={"train": 10}, seed=4)
  assert _ids(tmp_path / "b", "train") == kept  # Same seed, same subset.
  assert _ids(tmp_path / "c", "train") != kept


def test_one_communitys_subset_does_not_depend_on_another(tmp_path):
  a = _community(tmp_path / "src", "alpha", train=40, test=2)
  b = _community(tmp_path / "src", "beta", train=40, test=2)
  assert subsample.main([str(a), "--out", str(tmp_path / "one"), "--split_sizes=train=5"]) == 0
  assert subsample.main([str(b), str(a), "--out", str(tmp_path / "two"),
                         "--split_sizes=train=5"]) == 0
  assert _ids(tmp_path / "one" / "alpha", "train") == _ids(tmp_path / "two" / "alpha", "train")


@pytest.mark.parametrize("sizes, message", [("train", "not SPLIT=N"), ("train=0", "not SPLIT=N"),
                                            ("dev=3", "no split ['dev']")])
def test_bad_sizes_are_refused_by_name(tmp_path, capsys, sizes, message):
  src = _community(tmp_path, "parity", train=5, test=2)
  assert subsample.main([str(src), "--out", str(tmp_path / "o"), f"--split_sizes={sizes}"]) == 1
  assert message in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
