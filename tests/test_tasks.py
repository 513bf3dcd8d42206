"""SeqIO tasks and mixtures: exact formatted strings, registration, mixture rates."""

import itertools
import uuid

import numpy as np
import pytest
import seqio

from cdc_jax import names
from cdc_jax.data import records as R
from cdc_jax.tasks import catalog, formats, registry, vocabulary

QUESTION = "Does Zor have more bridges than Kam?"
RATIONALE = "Zor has 12 bridges. Kam has 7 bridges. 12 is more than 7."


def toy_community(tmp_path, name: str):
  recs = {
      "train": [
          R.TraceRecord(id="t0", community=name, split="train", question=QUESTION, answer="yes",
                        answer_type="boolean", rationales={6: RATIONALE, 1: "12 more than 7."},
                        teacher="oracle", provenance={"source": "test", "license": "CC0-1.0"}),
          R.TraceRecord(id="t1", community=name, split="train", question="Is Kam old?",
                        answer="no", answer_type="boolean", rationales={1: "Kam is young."},
                        teacher="oracle", provenance={"source": "test", "license": "CC0-1.0"}),
      ],
      "test": [R.TraceRecord(id="e0", community=name, split="test", question="Is Zor old?",
                             answer="yes", answer_type="boolean", rationales={},
                             teacher="oracle", provenance={"source": "test", "license": "x"})],
  }
  manifest = R.CommunityManifest(name=name, description="toy", answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0-1.0")
  return R.write_community(tmp_path / name, manifest, recs)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = [QUESTION, RATIONALE, "Is Kam old? Kam is young. Is Zor old?"] + list(vocabulary.FORMAT_TEXT)
  path = vocabulary.train_vocabulary(texts * 20, vocab_size=300,
                                     cache_dir=tmp_path_factory.mktemp("vocab"))
  return vocabulary.load_vocabulary(path)


@pytest.fixture
def community(tmp_path, vocab):
  name = f"toy_{uuid.uuid4().hex[:8]}"
  path = toy_community(tmp_path, name)
  tasks = registry.register_community(path, vocabulary=vocab)
  return name, path, tasks


def first(task_name, split="train", index=0):
  ds = seqio.get_mixture_or_task(task_name).get_dataset(None, split=split, shuffle=False)
  return list(ds.as_numpy_iterator())[index]


EXPECTED = {
    ("label_only", None): ("Does Zor have more bridges than Kam?", "yes"),
    ("cot_label", None): (QUESTION, f"{RATIONALE} So the answer is yes."),
    ("label_cot", None): (QUESTION, f"The answer is yes. Explanation: {RATIONALE}"),
    ("step_by_step", "predict"): (f"predict: {QUESTION}", "yes"),
    ("step_by_step", "explain"): (f"explain: {QUESTION}", RATIONALE),
    # Salience: digits (3) beat words of the question (2); ties go to later words.
    ("key_tokens", None): (QUESTION, "The answer is yes. Explanation: 12 bridges. Kam 7 bridges. 12 more 7."),
}


@pytest.mark.parametrize("fmt, part", list(EXPECTED))
def test_every_format_renders_exact_strings_with_eos(community, vocab, fmt, part):
  name, _, _ = community
  ex = first(names.task_name(name, 6, fmt, part))
  inputs, targets = EXPECTED[fmt, part]
  assert ex["inputs_pretokenized"].decode() == inputs
  assert ex["targets_pretokenized"].decode() == targets
  assert ex["targets"][-1] == 1 and ex["inputs"][-1] == 1  # EOS appended.
  assert vocab.decode(ex["targets"][:-1].tolist()) == targets


def test_permuted_cot_is_a_seeded_permutation(community):
  name, _, _ = community
  targets = first(names.task_name(name, 6, "permuted_cot"))["targets_pretokenized"].decode()
  prefix = "The answer is yes. Explanation: "
  assert targets.startswith(prefix)
  words = targets[len(prefix):].split()
  assert sorted(words) == sorted(RATIONALE.split()) and words != RATIONALE.split()
  assert targets[len(prefix):] == formats.permute_words(RATIONALE, seed="0:t0")


def test_levels_pick_their_rationale_and_training_skips_missing_ones(community):
  name, _, _ = community
  train = seqio.get_mixture_or_task(names.task_name(name, 6, "cot_label")).get_dataset(
      None, split="train", shuffle=False)
  assert [ex["id"] for ex in train.as_numpy_iterator()] == [b"t0"]  # t1 has no level 6.
  assert first(names.task_name(name, 1, "cot_label"), index=1)["targets_pretokenized"] == (
      b"Kam is young. So the answer is no.")
  label_only = seqio.get_mixture_or_task(names.task_name(name, 6, "label_only")).get_dataset(
      None, split="train", shuffle=False)
  assert len(list(label_only)) == 2
  # Eval splits keep every question, rationale or not; their targets score as answers.
  test = first(names.task_name(name, 6, "cot_label"), split="test")
  assert test["targets_pretokenized"] == b"yes" and test["answer"] == b"yes"


def test_key_token_selector_is_pluggable():
  def first_words(tokens, *, question, answer, k):
    return list(range(k))
  formats.register_key_token_selector("first_words", first_words)
  out = formats.render_example(fmt="key_tokens", question=QUESTION, answer="yes",
                               rationale=RATIONALE, k=3, selector="first_words")
  assert out["targets"] == "The answer is yes. Explanation: Zor has 12"
  with pytest.raises(ValueError, match="unknown key-token selector"):
    formats.render_example(fmt="key_tokens", question=QUESTION, answer="yes",
                           rationale=RATIONALE, selector="nope")


def test_registration_is_idempotent_and_clashes_raise(tmp_path, community, vocab):
  name, path, tasks = community
  assert len(tasks) == 6 * (len(names.FORMATS) + 2)
  assert registry.register_community(path, vocabulary=vocab) == tasks
  records = R.load_community(path).records
  changed = dict(records, test=[])
  R.write_community(tmp_path / "changed", R.read_manifest(path), changed)
  with pytest.raises(ValueError, match="already registered with different content"):
    registry.register_community(tmp_path / "changed", vocabulary=vocab)


def test_register_tasks_from_environment_manifest(tmp_path, monkeypatch):
  name = f"env_{uuid.uuid4().hex[:8]}"
  path = toy_community(tmp_path, name)
  monkeypatch.setenv("CDC_COMMUNITIES", str(path))
  assert catalog.register_tasks(embedded=False) == [name]
  assert names.task_name(name, 3, "label_cot") in seqio.TaskRegistry.names()


def test_step_by_step_mixture_rate_weights_explain(community):
  name, _, _ = community
  mixture = seqio.get_mixture_or_task(names.task_name(name, 6, "step_by_step"))
  rates = {t.name.rsplit(":", 1)[1]: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {"predict": 1.0, "explain": 1.0}


def _register_members(tmp_path, vocab, sizes):
  members = []
  for j, size in enumerate(sizes):
    name = f"m_{uuid.uuid4().hex[:8]}"
    recs = [R.TraceRecord(id=f"{name}{i}", community=name, split="train",
                          question=f"Member {j}: is {i} odd?", answer="yes" if i % 2 else "no",
                          answer_type="boolean", rationales={6: f"{i} is {'odd' if i % 2 else 'even'}."},
                          teacher="t", provenance={"source": "s", "license": "l"})
            for i in range(size)]
    manifest = R.CommunityManifest(name=name, description="", answer_type="boolean",
                                   splits={"train": "train.jsonl"}, license="l")
    path = R.write_community(tmp_path / name, manifest, {"train": recs})
    registry.register_community(path, vocabulary=vocab, options=registry.TaskOptions(
        levels=(6,), formats=("cot_label",)))
    members.append(name)
  return members


def test_coalition_mixture_samples_members_at_their_rates(tmp_path, vocab):
  members = _register_members(tmp_path, vocab, [30, 10, 20])
  assert registry.coalition_rates(members, "equal", level=6, fmt="cot_label") == pytest.approx(
      dict(zip(members, [1 / 3] * 3)))
  assert registry.coalition_rates(members, "examples", level=6, fmt="cot_label") == pytest.approx(
      dict(zip(members, [0.5, 1 / 6, 1 / 3])))
  name = f"coal_{uuid.uuid4().hex[:6]}"
  mixture = registry.register_coalition(name, members, level=6, fmt="cot_label",
                                        rates=dict(zip(members, [6, 3, 1])), normalize=True)
  assert mixture == f"cdc.{name}.L6.cot_label"
  ds = seqio.get_mixture_or_task(mixture).get_dataset(
      {"inputs": 32, "targets": 32}, split="train", shuffle=True, seed=0, num_epochs=None)
  counts = np.zeros(3)
  for ex in itertools.islice(ds.as_numpy_iterator(), 3000):
    counts[int(vocab.decode(ex["inputs"].tolist()).split(":")[0].split()[-1])] += 1
  np.testing.assert_allclose(counts / 3000, [0.6, 0.3, 0.1], atol=0.03)
  with pytest.raises(ValueError, match="rates name"):
    registry.register_coalition(name + "x", members, level=6, fmt="cot_label",
                                rates={members[0]: 1.0})
  with pytest.raises(ValueError, match="community's name"):
    registry.register_coalition(members[0], members, level=6, fmt="cot_label")


# ---------------------------------------------------------------------------
# Hardening (issue 16): mixture proportions, coalition names, empty splits.


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), True, False, 0, -0.5, "0.5", None])
def test_mixture_proportions_must_be_finite_positive_real_numbers(tmp_path, vocab, bad):
  members = _register_members(tmp_path, vocab, [3, 3])
  with pytest.raises(ValueError, match=f"proportion of '{members[0]}' must be a finite positive"):
    registry.register_coalition(f"c_{uuid.uuid4().hex[:6]}", members, level=6, fmt="cot_label",
                                rates={members[0]: bad, members[1]: 0.5})


def test_proportions_not_summing_to_one_need_normalize(tmp_path, vocab):
  members = _register_members(tmp_path, vocab, [3, 3])
  rates = {members[0]: 2.0, members[1]: 1.0}
  with pytest.raises(ValueError, match=r"sum to 3, not 1; pass normalize=True"):
    registry.coalition_rates(members, rates, level=6, fmt="cot_label")
  assert registry.coalition_rates(members, rates, level=6, fmt="cot_label",
                                  normalize=True) == pytest.approx({members[0]: 2 / 3,
                                                                    members[1]: 1 / 3})
  assert registry.coalition_rates(members, {members[0]: 0.7, members[1]: 0.3}, level=6,
                                  fmt="cot_label") == pytest.approx({members[0]: 0.7,
                                                                     members[1]: 0.3})


def test_coalition_name_means_one_set_of_members_and_levels_are_checked(tmp_path, vocab):
  a, b, c = _register_members(tmp_path, vocab, [3, 3, 3])
  name = f"c_{uuid.uuid4().hex[:6]}"
  assert registry.register_coalition(name, [a, b], level=6, fmt="cot_label") == \
      f"cdc.{name}.L6.cot_label"
  assert registry.register_coalition(name, [b, a], level=6, fmt="cot_label") == \
      f"cdc.{name}.L6.cot_label"  # Same members: idempotent.
  with pytest.raises(ValueError, match=f"'{name}' is already registered with members"):
    registry.register_coalition(name, [a, c], level=6, fmt="cot_label")
  with pytest.raises(ValueError, match="invalid rationale level 7"):
    registry.register_coalition(name + "x", [a, b], level=7, fmt="cot_label", rates="examples")
  with pytest.raises(ValueError, match="invalid rationale level 7"):
    registry.coalition_rates([a, b], "examples", level=7, fmt="cot_label")
  with pytest.raises(ValueError, match="unknown target format"):
    registry.coalition_rates([a, b], "examples", level=6, fmt="cot")


def test_rates_by_examples_name_a_member_without_usable_records(tmp_path, vocab):
  a, b = _register_members(tmp_path, vocab, [3, 3])
  with pytest.raises(ValueError, match=f"community '{a}' has no training records with a "
                     "level-1 rationale"):
    registry.coalition_rates([a, b], "examples", level=1, fmt="cot_label")


def _with_empty_split(tmp_path, vocab, split):
  name = f"e_{uuid.uuid4().hex[:8]}"
  path = toy_community(tmp_path, name)
  records = dict(R.load_community(path).records)
  records[split] = []
  R.write_community(tmp_path / name, R.read_manifest(path), records)
  registry.register_community(path, vocabulary=vocab, options=registry.TaskOptions(
      levels=(6,), formats=("cot_label",)))
  return name, path.parent / f"{split}.jsonl"


def test_empty_train_split_is_refused_where_training_reads_it(tmp_path, vocab):
  from cdc_jax.student import input_pipeline

  name, file = _with_empty_split(tmp_path, vocab, "train")
  data = input_pipeline.DataConfig(mixture_or_task_name=names.task_name(name, 6, "cot_label"),
                                   task_feature_lengths={"inputs": 16, "targets": 16},
                                   batch_size=2)
  with pytest.raises(ValueError, match=f"{file}: split 'train' of community '{name}' has no "
                     "records: nothing to train on"):
    next(input_pipeline.train_batches(data))


def test_empty_test_split_is_refused_where_evaluation_reads_it(tmp_path, vocab):
  name, file = _with_empty_split(tmp_path, vocab, "test")
  with pytest.raises(ValueError, match=f"{file}: split 'test' of community '{name}' has no "
                     "records: nothing to evaluate"):
    seqio.Evaluator(names.task_name(name, 6, "cot_label"),
                    feature_converter=seqio.EncDecFeatureConverter(pack=False),
                    eval_split="test", sequence_length={"inputs": 16, "targets": 16},
                    use_memory_cache=False)
  # The train split is still usable.
  assert first(names.task_name(name, 6, "cot_label"))["id"] == b"t0"
