"""Synthetic math corpus: determinism, disjoint splits, fixed sizes, thoughts that verify."""

import dataclasses
import pickle
import re
from collections import Counter
from fractions import Fraction

import grain
import pytest
from hypothesis import given, settings, strategies as st

from ponder_jax.config import ConfigError
from ponder_jax.data.math_corpus import (
    EQUATION_FORMS, KINDS, UNBOUNDED_LENGTH, MathCorpus, MathCorpusConfig, ThoughtError,
    evaluate_thought, split_of, verify)

# Splits are built only when asked for; small eval sizes keep the fixed-size search cheap.
SMALL = MathCorpusConfig(validation_size=200, test_size=200)


def _questions(corpus, n):
  return {corpus[i]["question"] for i in range(n)}


def test_records_are_deterministic_by_seed_and_index():
  first, second = MathCorpus(SMALL, "train"), MathCorpus(SMALL, "train")
  indices = [0, 7, 123456, UNBOUNDED_LENGTH - 1]
  forward = [first[i] for i in indices]
  assert [second[i] for i in reversed(indices)] == forward[::-1]  # order of access is irrelevant
  other_seed = MathCorpus(dataclasses.replace(SMALL, seed=1), "train")
  assert sum(other_seed[i] == first[i] for i in range(50)) < 5
  assert len(first) == UNBOUNDED_LENGTH


def test_record_format():
  corpus = MathCorpus(SMALL, "train")
  for i in range(200):
    record = corpus[i]
    assert set(record) >= {"kind", "question", "answer", "answer_text", "thought", "text",
                           "chunks"}
    assert record["text"] == record["question"] + record["answer_text"]
    assert record["chunks"] == [(record["question"], None),
                                (record["answer_text"], record["thought"])]
    assert record["answer_text"].endswith(record["answer"]) and record["answer"].isdigit()
    assert "," not in record["text"] and record["thought"]


def test_multiplication_thought_is_long_multiplication():
  # CALIBRATIONS.md: 123*45=5535 has thought 123*5=615,123*40=4920,615+4920=5535.
  corpus = MathCorpus(MathCorpusConfig(kinds=("multiplication",)), "train")
  for i in range(100):
    record = corpus[i]
    a, b = map(int, re.fullmatch(r"(\d{3})\*(\d{2})=", record["question"]).groups())
    parts = [int(d) * 10**p for p, d in enumerate(reversed(str(b))) if d != "0"]
    steps = [f"{a}*{part}={a * part}" for part in parts]
    if len(parts) == 2:
      steps.append(f"{a * parts[0]}+{a * parts[1]}={a * b}")
    assert record["thought"] == ",".join(steps)
    assert record["text"] == f"{a}*{b}={a * b}"


def test_splits_are_disjoint_and_seed_independent():
  train = MathCorpus(SMALL, "train")
  validation, test = MathCorpus(SMALL, "validation"), MathCorpus(SMALL, "test")
  train_q = _questions(train, 3000)
  validation_q, test_q = _questions(validation, 200), _questions(test, 200)
  assert len(validation_q) == 200 and len(test_q) == 200
  assert not train_q & validation_q and not train_q & test_q and not validation_q & test_q
  assert {split_of(q, SMALL) for q in train_q} == {"train"}
  assert {split_of(q, SMALL) for q in test_q} == {"test"}
  # A problem's split ignores the seed: another seed's train split never holds this test split.
  other_train = MathCorpus(dataclasses.replace(SMALL, seed=9), "train")
  assert not _questions(other_train, 3000) & test_q


def test_small_problem_space_splits_stay_disjoint():
  # 2-digit x 1-digit: 810 problems, so train items repeat and would collide without the hash.
  config = MathCorpusConfig(kinds=("multiplication",), mul_digits=(2, 1), validation_size=30,
                            test_size=30, validation_fraction=0.1, test_fraction=0.1)
  train_q = _questions(MathCorpus(config, "train"), 2000)
  eval_q = _questions(MathCorpus(config, "validation"), 30) | _questions(
      MathCorpus(config, "test"), 30)
  assert len(train_q) > 500 and len(eval_q) == 60 and not train_q & eval_q


@pytest.mark.parametrize("overrides", [
    {},
    {"mul_digits": (1, 1), "add_digits": 1},
    {"mul_digits": (4, 3), "add_digits": 9},
    {"word_steps": 1, "word_max": 2},
    {"word_steps": 6, "word_max": 500},
    {"equation_max": 1},
    {"equation_max": 300},
])
def test_every_thought_verifies_to_its_answer(overrides):
  for kind in KINDS:
    config = MathCorpusConfig(kinds=(kind,), seed=5, **overrides)
    corpus = MathCorpus(config, "train")
    for i in range(60):
      record = corpus[i]
      assert record["kind"] == kind
      assert verify(record), record
      assert evaluate_thought(record["thought"]) == int(record["answer"])


EQUATION_PATTERNS = {"ax+b=c": r"\d+x\+\d+=\d+", "ax-b=c": r"\d+x-\d+=\d+",
                     "a(x+b)=c": r"\d+\(x\+\d+\)=\d+", "ax+b=cx+d": r"\d+x\+\d+=\d*x\+\d+"}


@pytest.mark.parametrize("form", EQUATION_FORMS)
def test_each_equation_form(form):
  corpus = MathCorpus(MathCorpusConfig(kinds=("linear_equation",), equation_forms=(form,)),
                      "train")
  pattern = EQUATION_PATTERNS[form]
  for i in range(40):
    record = corpus[i]
    assert re.fullmatch(rf"Solve {pattern}\.", record["question"]), record["question"]
    assert record["answer_text"] == f" x={record['answer']}" and verify(record)


def test_kinds_are_drawn_uniformly():
  counts = Counter(MathCorpus(SMALL, "train")[i]["kind"] for i in range(2500))
  assert set(counts) == set(KINDS) and all(380 < c < 620 for c in counts.values())


def test_verify_rejects_wrong_thoughts_and_answers():
  record = MathCorpus(MathCorpusConfig(kinds=("multiplication",)), "train")[0]
  assert verify(record)
  wrong_answer = dict(record, answer=str(int(record["answer"]) + 1))
  assert not verify(wrong_answer)
  steps = record["thought"].split(",")
  lhs, value = steps[0].split("=")
  false_step = dict(record, thought=",".join([f"{lhs}={int(value) + 10}"] + steps[1:]))
  assert not verify(false_step)
  # True steps that do not end at the answer.
  assert not verify(dict(record, thought="2*3=6"))
  # A thought that ends at the answer but for another question.
  other = dict(record, question="1*1=")
  assert not verify(other)
  assert not verify(dict(record, thought="the answer is clear"))


def test_evaluate_thought_checks_each_step():
  assert evaluate_thought("123*5=615,123*40=4920,615+4920=5535") == 5535
  assert evaluate_thought("3x=22-7,3x=15,x=15/3,x=5") == 5
  assert evaluate_thought("7x-3x=4x,4x=24,x=6") == 6  # a symbolic identity is a valid step
  assert evaluate_thought("2(x+3)=16,x+3=8,x=5") == 5
  assert evaluate_thought("7/2=7/2") == Fraction(7, 2)
  with pytest.raises(ThoughtError, match="step 2 '3x=14' gives x=14/3, earlier steps x=5"):
    evaluate_thought("3x=22-7,3x=14")
  with pytest.raises(ThoughtError, match="step 3 '615\\+4920=5536' is false"):
    evaluate_thought("123*5=615,123*40=4920,615+4920=5536")
  for bad, why in [("12", "not an equation"), ("x*x=4", "not linear"), ("1/0=1", "division"),
                   ("1+=2", "ends early"), ("2^3=8", "cannot read"), ("\u00b2=2", "cannot read"),
                   ("x=x", "no value"), ("(1+2=3", "ends early"), ("(1+2 3)=9", "missing"),
                   ("1 2=12", "unexpected .2."), ("(" * 5000 + "1=1", "nested")]:
    with pytest.raises(ThoughtError, match=why):
      evaluate_thought(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789x+-*/()=, .a")), max_size=40))
def test_evaluate_thought_on_any_text_returns_or_raises_thought_error(text):
  # Evaluations feed it model output: anything else than a value or a ThoughtError is a bug.
  try:
    assert isinstance(evaluate_thought(text), Fraction)
  except ThoughtError:
    pass


def test_fixed_sizes_hold_distinct_problems():
  config = MathCorpusConfig(train_size=300, validation_size=40, test_size=0, seed=2)
  train = MathCorpus(config, "train")
  assert len(train) == 300 and len(_questions(train, 300)) == 300
  assert [train[i] for i in (0, 299)] == [MathCorpus(config, "train")[i] for i in (0, 299)]
  with pytest.raises(IndexError):
    train[300]
  assert len(MathCorpus(config, "validation")) == 40
  assert len(MathCorpus(config, "test")) == UNBOUNDED_LENGTH


def test_a_vanishing_split_fraction_is_a_config_error():
  config = MathCorpusConfig(test_fraction=1e-9, test_size=0)
  with pytest.raises(ConfigError, match="data.math.test_fraction"):
    MathCorpus(config, "test")[0]


def test_size_larger_than_the_problem_space_is_a_config_error():
  # 1-digit x 1-digit has 81 problems; about 90% of them are in the train split.
  config = MathCorpusConfig(kinds=("multiplication",), mul_digits=(1, 1), train_size=100)
  with pytest.raises(ConfigError, match="data.math.train_size") as error:
    MathCorpus(config, "train")
  assert error.value.value == 100


@pytest.mark.parametrize("key,value", [
    ("kinds", ("division",)), ("kinds", ()), ("kinds", ("addition", "addition")),
    ("kinds", "addition"), ("mul_digits", (0, 2)), ("mul_digits", (3,)), ("add_digits", 0),
    ("equation_forms", ("x^2=4",)), ("equation_max", 0), ("word_steps", 0), ("word_max", 1),
    ("train_size", -1), ("validation_size", 2.5), ("seed", 2**64), ("seed", True),
    ("validation_fraction", 0.0), ("test_fraction", 1.0),
])
def test_bad_parameters_name_their_key(key, value):
  with pytest.raises(ConfigError, match=f"data.math.{key}"):
    MathCorpusConfig.from_config({key: value})


def test_from_config():
  config = MathCorpusConfig.from_config({"kinds": ["addition"], "mul_digits": [2, 2],
                                         "train_size": 10})
  assert config.kinds == ("addition",) and config.mul_digits == (2, 2)
  with pytest.raises(ConfigError, match="data.math.colour"):
    MathCorpusConfig.from_config({"colour": 1})
  with pytest.raises(ConfigError, match="data.math.test_fraction"):
    MathCorpusConfig.from_config({"validation_fraction": 0.6, "test_fraction": 0.5})
  with pytest.raises(ValueError, match="unknown split"):
    MathCorpus(config, "dev")


def test_works_as_a_grain_source():
  corpus = MathCorpus(MathCorpusConfig(train_size=50), "train")
  clone = pickle.loads(pickle.dumps(corpus))  # grain workers receive a pickled source
  assert clone[17] == corpus[17]
  dataset = grain.MapDataset.source(corpus).shuffle(seed=0)
  assert len(dataset) == 50
  assert sorted(r["question"] for r in dataset) == sorted(_questions(corpus, 50))
