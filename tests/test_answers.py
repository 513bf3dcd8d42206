"""Answer parsing: every answer type, every format's output, malformed text."""

import pytest

from cdc_jax import answers
from cdc_jax.tasks import metrics

CHOICES = ["sea", "lake", "river", "Kamar", "Melvel"]


@pytest.mark.parametrize("text, answer_type, expected", [
    ("yes", "boolean", "yes"),
    ("No.", "boolean", "no"),
    ("Bats are mammals. So the answer is yes.", "boolean", "yes"),
    ("The answer is no. Explanation: 3 is less than 4.", "boolean", "no"),
    ("The answer is true", "boolean", "yes"),
    ("maybe", "boolean", None),
    ("12 + 7 = 19. So the answer is 19 bridges.", "number", "19"),
    ("#### 1,234", "number", "1234"),
    ("The answer is $3.50.", "number", "3.5"),
    ("The answer is -4. Explanation: 3 - 7 = -4", "number", "-4"),
    ("5 + 6 = 11", "number", "11"),
    ("The answer is many", "number", None),
    ("So the answer is (c) river.", "choice", "river"),
    ("(b)", "choice", "lake"),
    ("The answer is Kamar. Explanation: twin of Zor is Kamar.", "choice", "Kamar"),
    ("So the answer is (z).", "choice", None),
    ("The answer is Ashen. Explanation: Tar lies on the Ashen river.", "text", "ashen"),
    ("the Ashen River", "text", "ashen river"),
    ("Marbrabra", "text", "marbrabra"),
])
def test_extract_answer(text, answer_type, expected):
  assert answers.extract_answer(text, answer_type, CHOICES) == expected


@pytest.mark.parametrize("garbage", ["", " ", "<unk><unk>", "The answer is", "answer: ",
                                     "\x00\xff", "So the answer is so the answer is"])
@pytest.mark.parametrize("answer_type", answers.ANSWER_TYPES)
def test_malformed_output_never_crashes_and_counts_wrong(garbage, answer_type):
  example = {"answer": "river" if answer_type == "choice" else {"boolean": "yes", "number": "3",
                                                              "text": "ashen"}.get(answer_type),
             "answer_type": answer_type, "choices": '["sea", "lake", "river"]'
             if answer_type == "choice" else "null"}
  prediction = metrics.postprocess_answer(garbage, example, is_target=False)
  target = metrics.postprocess_answer("ignored", example, is_target=True)
  assert metrics.answer_accuracy([target], [prediction])["accuracy"] == 0.0


def test_accuracy_compares_numbers_numerically_and_counts_answered():
  scores = metrics.answer_accuracy(["19", "3.5", "yes", "7"], ["19.0", "3.5", "no", ""])
  assert scores == {"accuracy": 50.0, "answered": 75.0}
  assert answers.answers_match("19.000", "19", "number")
  assert not answers.answers_match(None, "19", "number")


def test_targets_postprocess_to_gold_answer_whatever_the_format():
  example = {"answer": b"Kamar", "answer_type": b"choice", "choices": b'["Kamar", "Zor"]'}
  assert metrics.postprocess_answer(b"First, ... So the answer is Zor.", example,
                                    is_target=True) == "Kamar"
  assert metrics.postprocess_answer(b"First, ... So the answer is Zor.", example) == "Zor"
