"""Prompt privacy: the exponential mechanism's guarantee, budgets, communities, eps sweeps."""

import collections
import json
import math
import os

import numpy as np
import pytest

from cdc_jax.coalitions import experiment, sweep
from cdc_jax.contribution import embeddings as E
from cdc_jax.contribution import privacy, variants
from cdc_jax.data import records as R

# Four words on the unit circle (mean 0, so centring keeps them): cat/dog opposite.
SMALL = E.from_vectors(["cat", "dog", "sun", "moon"],
                       np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32))


def _sample(word, eps, n=4000, seed=0, mechanism="exponential"):
  text, stats = privacy.perturb_question(" ".join([word] * n), eps=eps, mechanism=mechanism,
                                         rng=np.random.default_rng(seed), embeddings=SMALL)
  assert stats.words == stats.sampled == n
  return collections.Counter(text.split()), stats


def test_exact_probabilities_respect_e_to_the_eps():
  for eps in (0.5, 2.0, 8.0):
    probs = {w: privacy.exponential_probabilities(SMALL.similarities(w), eps) for w in SMALL.words}
    worst = max(np.max(np.log(probs[a] / probs[b])) for a in SMALL.words for b in SMALL.words)
    # cat vs dog: utilities differ by du = 2 and the normalisers are equal, so the
    # ratio is exactly e^(eps/2), within the e^eps bound.
    assert worst == pytest.approx(eps / 2) and worst <= eps


def test_empirical_ratios_of_neighbouring_inputs_stay_within_e_to_the_eps():
  eps, n = 2.0, 4000
  cat, _ = _sample("cat", eps, n, seed=1)
  dog, _ = _sample("dog", eps, n, seed=2)
  for word in SMALL.words:
    p, q = cat[word] / n, dog[word] / n
    # Delta method: sd of log(p/q) ~ sqrt((1-p)/(n p) + (1-q)/(n q)); allow 4 sd.
    tolerance = 4 * math.sqrt((1 - p) / (n * p) + (1 - q) / (n * q))
    assert abs(math.log(p / q)) <= eps + tolerance
  exact = privacy.exponential_probabilities(SMALL.similarities("cat"), eps)
  assert cat["cat"] / n == pytest.approx(exact[0], abs=4 * math.sqrt(exact[0] / n))
  assert math.log((cat["cat"] / n) / (dog["cat"] / n)) == pytest.approx(eps / 2, abs=0.15)


def test_fraction_kept_grows_with_eps():
  kept = [_sample("sun", eps)[1].kept_fraction for eps in (0.5, 2, 8, 32)]
  assert kept == sorted(kept) and kept[0] < 0.35 and kept[-1] > 0.99
  for eps, fraction in zip((0.5, 2, 8, 32), kept):
    exact = privacy.exponential_probabilities(SMALL.similarities("sun"), eps)[2]
    assert fraction == pytest.approx(exact, abs=0.03)


def test_non_words_pass_through_and_stats_count():
  text, stats = privacy.perturb_question("cat, 42 a dog! x-ray 3rd", eps=1e4,
                                         rng=np.random.default_rng(0), embeddings=SMALL)
  # 'x' and 'a' are one letter, '3rd' mixes digits: only cat, dog, ray are words; 'ray'
  # has no embedding in SMALL and passes through.
  assert text == "cat, 42 a dog! x-ray 3rd"
  assert (stats.words, stats.sampled, stats.kept, stats.passed) == (3, 2, 2, 1)
  with pytest.raises(ValueError, match="unknown privacy mechanism"):
    privacy.perturb_question("cat", eps=1, mechanism="laplace", rng=None, embeddings=SMALL)
  with pytest.raises(ValueError, match="positive finite"):
    privacy.perturb_question("cat", eps=0, rng=None, embeddings=SMALL)


def test_adaptive_budgets_keep_the_mean():
  words = ["the", "river", "Arno", "flows"]
  budgets = privacy.word_budgets(words, eps=10, mechanism="adaptive", context="12 km, Arno")
  weights = [0.5, 1.0, 2.0, 1.0]
  assert budgets == pytest.approx([10 * 4 * w / sum(weights) for w in weights])
  assert np.mean(budgets) == pytest.approx(10)
  assert privacy.word_budgets(words, eps=10, mechanism="exponential") == [10.0] * 4
  _, stats = privacy.perturb_question("the cat and the sun", eps=4, mechanism="adaptive",
                                      rng=np.random.default_rng(0), embeddings=SMALL,
                                      context="sun")
  # 'the', 'and', 'the' have no embedding in SMALL: they pass through and take no budget;
  # cat (weight 1) and sun (in the context, weight 2) share 2 * eps.
  assert stats.passed == 3 and stats.budgets == pytest.approx([8 / 3, 16 / 3])


def _community(directory, name="pets"):
  def rec(i, split):
    return R.TraceRecord(id=f"{split}{i}", community=name, split=split,
                         question=f"Does the cat chase the dog {i} times?", answer="yes",
                         answer_type="boolean", rationales={6: "The cat chases the dog."},
                         teacher="oracle", provenance={"source": "test", "license": "CC0"})
  manifest = R.CommunityManifest(name=name, description="pets", answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0")
  return R.write_community(directory / name, manifest,
                           {"train": [rec(i, "train") for i in range(6)],
                            "test": [rec(i, "test") for i in range(2)]})


def test_perturb_community_writes_private_records(tmp_path):
  source = _community(tmp_path / "src")
  summary = privacy.perturb_community(source, tmp_path / "out", eps=0.5, seed=3, embeddings=SMALL)
  out = R.load_community(tmp_path / "out")
  assert out.name == "pets" and "exponential eps=0.5" in out.manifest.description
  original = R.load_community(source)
  for before, after in zip(original.records["train"], out.records["train"]):
    assert after.provenance["privacy"] == {"eps": 0.5, "mechanism": "exponential",
                                           "embeddings": "vectors", "field": "question"}
    assert after.rationales == before.rationales and after.answer == before.answer
  assert out.records["test"] == original.records["test"]  # Test questions stay real.
  assert summary["counts"]["train"]["records"] == 6
  assert summary["counts"]["train"]["sampled"] == 12  # cat and dog in each question
  assert sum(a.question != b.question for a, b in zip(original.records["train"],
                                                      out.records["train"])) == \
      summary["counts"]["train"]["changed"] > 0
  assert json.loads((tmp_path / "out" / "privacy.json").read_text()) == summary
  # Same seed, same noise; perturbing twice is refused.
  privacy.perturb_community(source, tmp_path / "again", eps=0.5, seed=3, embeddings=SMALL)
  assert (tmp_path / "again" / "train.jsonl").read_text() == \
      (tmp_path / "out" / "train.jsonl").read_text()
  with pytest.raises(ValueError, match="already perturbed"):
    privacy.perturb_community(tmp_path / "out", tmp_path / "twice", eps=1, embeddings=SMALL)


def test_privacy_sweep_materialises_communities_and_records_eps(tmp_path, monkeypatch):
  source = _community(tmp_path / "src")
  spec = sweep.SweepSpec(communities=("pets",), levels=(6,), formats=("cot_label",))
  calls = []

  def fake_run_sweep(**kwargs):
    calls.append(kwargs)
    return []

  monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
  run = lambda: variants.run_privacy_sweep(
      spec=spec, eps_values=[None, 1.0, 4.0], sweep_dir=str(tmp_path / "sweep"),
      gin_files=["x.gin"], gin_bindings=["TRAIN_STEPS = 2"], source_communities=[str(source)],
      embeddings=SMALL)
  run()
  assert [c["spec"].eps_values for c in calls] == [(None,), (1.0,), (4.0,)]
  private = tmp_path / "sweep" / ".communities" / "exponential_eps4" / "pets" / "community.json"
  assert calls[2]["gin_bindings"] == ["TRAIN_STEPS = 2", "catalog.register_tasks.embedded = False",
                                      f"COMMUNITIES = {[str(private)]!r}"]
  assert calls[0]["gin_bindings"][-1] == f"COMMUNITIES = {[str(source)]!r}"
  assert R.load_community(private).records["train"][0].provenance["privacy"]["eps"] == 4.0
  stamp = os.stat(private.parent / "train.jsonl").st_mtime_ns
  run()  # Re-running reuses the perturbed copies.
  assert os.stat(private.parent / "train.jsonl").st_mtime_ns == stamp
  monkeypatch.undo()
  # With the real run_sweep (dry run): one run directory per eps, eps in the run id and spec.
  variants.run_privacy_sweep(spec=spec, eps_values=[None, 4.0], sweep_dir=str(tmp_path / "dry"),
                             gin_files=["x.gin"], source_communities=[str(source)],
                             embeddings=SMALL, dry_run=True)
  config = json.loads((tmp_path / "dry" / "pets.L6.cot_label.s0.eps4" / "run.json").read_text())
  assert config["spec"]["eps"] == 4.0
  assert (tmp_path / "dry" / "pets.L6.cot_label.s0" / "run.json").exists()
  assert len((tmp_path / "dry" / "commands.txt").read_text().splitlines()) == 2
  assert experiment.CoalitionSpec(members=("a",), level=1, fmt="key_tokens",
                                  selection="key_tokens:k=4").run_id == \
      "a.L1.key_tokens.s0.key_tokens-k=4"
  assert variants.key_tokens_selection(4, "attribution") == "key_tokens:attribution:k=4"


# ---------------------------------------------------------------------------
# The real teacher embeddings.


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory, smollm2_gguf):
  """SmolLM2's word embeddings (1024 candidates, cached in a temp dir), loaded once."""
  path = smollm2_gguf
  cache = tmp_path_factory.mktemp("privacy_cache")
  return E.teacher_word_embeddings(path, num_candidates=1024, cache_dir=cache), path, cache


def test_smollm2_candidates_are_unit_word_embeddings(smollm2):
  emb, path, cache = smollm2
  assert emb.matrix.shape == (1024, 576) and emb.matrix.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb.matrix, axis=1), 1.0, atol=1e-5)
  assert all(w.isalpha() and len(w) >= 2 for w in emb.words)
  assert emb.words[:3] == ("the", "in", "of")  # BPE order: the most frequent words first
  sims = emb.similarities("water")
  nearest = [emb.words[i] for i in np.argsort(-sims)[:4]]
  assert nearest[0] == "water" and len(set(nearest) & {"Water", "air", "ice", "oil"}) >= 1
  assert emb.index("Thames") is None and emb.embed("Thames").shape == (576,)  # via its pieces
  # The cached matrix reloads identically.
  files = list(cache.glob("candidates-*.npz"))
  assert len(files) == 1
  with np.load(files[0]) as data:
    np.testing.assert_array_equal(data["matrix"], emb.matrix)


def test_smollm2_mechanism_keeps_more_words_as_eps_grows(smollm2):
  emb, _, _ = smollm2
  question = " ".join(emb.words[:20]) + " ?"  # Candidates, so they can be kept.
  kept = [privacy.perturb_question(question, eps=eps, rng=np.random.default_rng(0),
                                   embeddings=emb)[1].kept_fraction for eps in (10, 40, 80, 400)]
  assert kept == sorted(kept) and kept[0] < 0.1 and kept[-1] == 1.0
  # A huge budget outputs each word's most similar candidate: itself if it is one;
  # 'Thames' is not, so even then it is replaced.
  words = ["Is", "the", "Thames", "wet"]
  text, stats = privacy.perturb_question(" ".join(words) + "?", eps=1e5,
                                         rng=np.random.default_rng(0), embeddings=emb)
  nearest = [emb.words[int(np.argmax(emb.similarities(w)))] for w in words]
  assert text == " ".join(nearest) + "?" and nearest[:2] == ["Is", "the"]
  assert "Thames" not in text and stats.kept == sum(emb.index(w) is not None for w in words)
