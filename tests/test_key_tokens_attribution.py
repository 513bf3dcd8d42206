"""Key-token minimisation: attribution scores of a tiny trained student, the selector, the k figure."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdc_jax.coalitions import figures as coalition_figures
from cdc_jax.coalitions.results import RunResult
from cdc_jax.contribution import attribution, training_manifest
from cdc_jax.data import records as R
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.student import training
from cdc_jax.tasks import catalog, formats
from tests import train_helpers

QUESTION = "Is the lamp on?"
WORDS = "The switch is up so the lamp is on".split()


def _community(directory, name="lampland"):
  """Boolean questions whose rationale holds the answer ('up' -> yes, 'down' -> no)."""
  def rec(i, split):
    on = i % 2 == 0
    return R.TraceRecord(
        id=f"{split}{i}", community=name, split=split, question=f"Is lamp {i} on?",
        answer="yes" if on else "no", answer_type="boolean",
        rationales={6: f"The switch is {'up' if on else 'down'} so the lamp is "
                       f"{'on' if on else 'off'}"},
        teacher="oracle", provenance={"source": "test", "license": "CC0-1.0"})
  manifest = R.CommunityManifest(name=name, description="lamps", answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0-1.0")
  return R.write_community(directory / name, manifest,
                           {"train": [rec(i, "train") for i in range(16)],
                            "test": [rec(100 + i, "test") for i in range(4)]})


@pytest.fixture(scope="module")
def student(tmp_path_factory):
  """A tiny student trained a few steps on lampland (label_only), and its checkpoint."""
  root = tmp_path_factory.mktemp("attribution")
  catalog.register_tasks(embedded=False, communities=[_community(root / "data")])
  model = build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))
  training.train(model=model, mixture_or_task_name="cdc.lampland.L6.label_only",
                 task_feature_lengths={"inputs": 16, "targets": 4}, batch_size=8, train_steps=8,
                 model_dir=str(root / "run"), tensorboard=False, **train_helpers.train_settings(
                     pack=False, log_every=8, checkpoint_every=8,
                     check_training_data=training_manifest.write_training_manifest))
  selector = attribution.register_attribution_selector(
      checkpoint=str(root / "run"), model=model, vocabulary=catalog.process_vocabulary(),
      input_length=64, target_length=4)
  return model, selector, root


def test_scores_have_word_shapes_and_are_deterministic(student):
  model, selector, _ = student
  scores = selector.scores(WORDS, question=QUESTION, answer="yes")
  assert scores.shape == (len(WORDS),) and np.all(np.isfinite(scores))
  np.testing.assert_array_equal(scores, selector.scores(WORDS, question=QUESTION, answer="yes"))
  assert len(set(scores.round(9))) > 1  # A trained model tells words apart.
  assert selector(WORDS, question=QUESTION, answer="yes", k=3) == \
      selector(WORDS, question=QUESTION, answer="yes", k=3)
  vocab = catalog.process_vocabulary()
  batch = {"encoder_input_tokens": np.zeros((2, 64), np.int32),
           "decoder_target_tokens": np.zeros((2, 4), np.int32)}
  batch["encoder_input_tokens"][:, :5] = vocab.encode("Is the lamp on?")[:4] + [1]
  batch["decoder_target_tokens"][:, :2] = [vocab.encode("yes")[0], 1]
  per_token = attribution.token_attributions(model, selector.params, batch)
  assert per_token.shape == (2, 64) and per_token.dtype == np.float32
  assert np.all(per_token[:, 5:] == 0)  # Padding has no attribution.


def test_scores_are_gradient_times_input(student):
  """score(word) ~ d/dh log P(answer | embeddings + h * x_word) at h = 0 (central difference)."""
  model, selector, _ = student
  vocab = catalog.process_vocabulary()
  scores = selector.scores(WORDS, question=QUESTION, answer="yes")
  question_ids = vocab.encode(QUESTION)
  start = len(question_ids) + sum(len(vocab.encode(w)) for w in WORDS[:4])  # the word 'up'
  end = start + len(vocab.encode(WORDS[4]))
  ids = question_ids + [i for w in WORDS for i in vocab.encode(w)] + [1]
  batch = {"encoder_input_tokens": jnp.asarray([ids + [0] * (64 - len(ids))], jnp.int32),
           "decoder_target_tokens": jnp.asarray([vocab.encode("yes")[:3] + [1] + [0] * (
               3 - len(vocab.encode("yes")[:3]))], jnp.int32)}
  embedded = jnp.take(selector.params["token_embedder"]["embedding"],
                      batch["encoder_input_tokens"], axis=0)
  mask = jnp.zeros((1, 64, 1)).at[0, start:end].set(1.0)
  h = 1e-2
  ll = jax.jit(lambda delta: attribution._answer_log_likelihood(  # pylint: disable=protected-access
      model, selector.params, batch, delta))
  difference = (float(ll(h * mask * embedded)) - float(ll(-h * mask * embedded))) / (2 * h)
  assert difference == pytest.approx(scores[4], rel=0.05, abs=1e-3)


def test_registered_selector_renders_key_tokens(student):
  _, selector, _ = student
  scores = selector.scores(WORDS, question=QUESTION, answer="yes")
  order = sorted(range(len(WORDS)), key=lambda i: (-scores[i], -i))
  expected = " ".join(WORDS[i] for i in sorted(order[:3]))
  out = formats.render_example(fmt="key_tokens", question=QUESTION, answer="yes",
                               rationale=" ".join(WORDS), k=3, selector="attribution")
  assert out == {"inputs": QUESTION, "targets": f"The answer is yes. Explanation: {expected}"}
  assert formats.get_key_token_selector("attribution") is selector
  # Words beyond the input length (64 pieces) score -inf and are chosen last.
  cut = selector.scores(WORDS * 10, question=QUESTION, answer="yes")
  assert np.isneginf(cut[-1]) and np.isfinite(cut[0])
  finite = np.flatnonzero(np.isfinite(cut)).tolist()
  assert len(finite) < len(cut)
  assert selector(WORDS * 10, question=QUESTION, answer="yes", k=len(finite)) == finite
  with pytest.raises(ValueError, match="exactly one of"):
    attribution.make_attribution_selector(model=selector.model, vocabulary=selector.vocabulary)


def test_training_wrote_a_manifest_of_the_records_used(student):
  _, _, root = student
  manifest = json.loads((root / "run" / "training_manifest.json").read_text())
  assert manifest["mixture_or_task_name"] == "cdc.lampland.L6.label_only"
  info = manifest["communities"]["lampland"]
  assert info["num_records"] == 16 and sorted(info["records"]) == sorted(
      f"train{i}" for i in range(16))
  assert info["levels"] == [6] and info["formats"] == ["label_only"] and info["eps"] == []


def _row(members, k, acc, *, selection=None, fmt="key_tokens", seed=0):
  members = tuple(members)
  return RunResult(run=f"{'_'.join(members)}.{fmt}.k{k}.s{seed}", members=members, level=6,
                   format=fmt, seed=seed, accuracy={m: acc for m in members},
                   num_examples={m: 10 for m in members}, train_examples={m: 5 for m in members},
                   steps=1, wall_s=1.0,
                   selection=selection if selection is not None or k is None
                   else f"key_tokens:k={k}")


def test_accuracy_vs_k_figure(tmp_path):
  assert coalition_figures.parse_k("key_tokens:attribution:k=16") == ("attribution", 16)
  assert coalition_figures.parse_k("random:budget=4") is None
  rows = [_row(["a"], 1, 0.2), _row(["a"], 4, 0.5), _row(["a"], 4, 0.7, seed=1),
          _row(["a", "b"], 2, 0.4), _row(["a"], None, 0.9, fmt="label_cot")]
  lines = coalition_figures.k_points(rows)
  assert lines[("a", ("a",), 6, "salience")] == {1: 0.2, 4: pytest.approx(0.6)}
  assert lines[("b", ("a", "b"), 6, "salience")] == {2: 0.4}
  path = coalition_figures.plot_accuracy_vs_k(rows, tmp_path / "k.png")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(coalition_figures.MissingRuns, match="key_tokens:k=4"):
    coalition_figures.plot_accuracy_vs_k(rows[-1:], tmp_path / "none.png")
