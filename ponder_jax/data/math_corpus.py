"""Synthetic math corpus with ground-truth latent thoughts (METHODS.md §4, CALIBRATIONS.md).

The embedded stand-in for FineMath and the testbed where thoughts provably carry information:
each record's observed text is a compressed problem and its answer (`123*45=5535`) and its latent
thought is the full derivation (`123*5=615,123*40=4920,615+4920=5535`). Kinds: multi-digit
multiplication, addition and subtraction, linear equations and several-step word problems.

A record is a dict:
  kind         one of KINDS
  question     the problem, ending where the answer starts (`123*45=`, `Solve 3x+7=22.`)
  answer       the answer as a decimal integer string (`5535`, `5`)
  answer_text  how the answer is written after the question (`5535`, ` x=5`, ` Answer: 33`)
  thought      the derivation: comma-separated equations (see `evaluate_thought`)
  text         question + answer_text, the observed text
  chunks       [(question, None), (answer_text, thought)], the thought formatter's input: the
               thought explains the answer, so it renders as `Q <SoL><PRIOR> Z <EoL> A`

Splits are disjoint by construction: a problem's split is a function of a hash of its question
text alone (never of the seed), and item i of a split is the first candidate drawn from a stream
seeded by (seed, split, i, attempt) that hashes into that split. Access is random and O(1) for an
unbounded split; a split with a fixed size (BoLT's data-constrained budget of N raw problems,
repeated over epochs) holds N distinct problems, found once when the source is built.

Not here: tokenisation and thought formatting (thoughts.py), mixing and packing (pipeline.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from fractions import Fraction
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from ponder_jax.validation import ConfigError, check, from_mapping

KINDS = ("multiplication", "addition", "subtraction", "linear_equation", "word_problem")
SPLITS = ("train", "validation", "test")
EQUATION_FORMS = ("ax+b=c", "ax-b=c", "a(x+b)=c", "ax+b=cx+d")
# len() of a split without a fixed size; any index below it is a valid problem.
UNBOUNDED_LENGTH = 2**31 - 1
# Candidates tried for one item before a fixed-size split is declared larger than its problem
# space: at a split fraction of 0.05 an item needs 20 on average.
_MAX_ATTEMPTS = 20_000


@dataclasses.dataclass(frozen=True)
class MathCorpusConfig:
  """Which problems the corpus draws, how hard they are, and how many each split holds."""
  kinds: tuple[str, ...] = KINDS  # drawn uniformly
  mul_digits: tuple[int, int] = (3, 2)  # digits of the two factors
  add_digits: int = 4  # digits of both operands of addition and subtraction
  equation_forms: tuple[str, ...] = EQUATION_FORMS
  equation_max: int = 20  # solutions x in 1 .. equation_max; constants up to 10 * equation_max
  word_steps: int = 3  # operations after the starting amount
  word_max: int = 50  # bound of the starting amount and of the amounts added or removed
  seed: int = 0
  train_size: int = 0  # distinct problems per split; 0: unbounded (UNBOUNDED_LENGTH, may repeat)
  validation_size: int = 1000
  test_size: int = 1000
  validation_fraction: float = 0.05  # share of the problem space (by question hash) per split
  test_fraction: float = 0.05

  @classmethod
  def from_config(cls, section: Mapping[str, Any] | None,
                  prefix: str = "data.math") -> "MathCorpusConfig":
    section = dict(section or {})
    for key in ("kinds", "mul_digits", "equation_forms"):
      if isinstance(section.get(key), list):  # ml_collections hands sequences over as lists
        section[key] = tuple(section[key])
    return from_mapping(cls, section, prefix).validated(prefix)

  def size(self, split: str) -> int:
    return getattr(self, f"{split}_size")

  def fraction(self, split: str) -> float:
    if split == "train":
      return 1.0 - self.validation_fraction - self.test_fraction
    return getattr(self, f"{split}_fraction")

  def validated(self, prefix: str = "data.math") -> "MathCorpusConfig":
    def is_int(value):
      return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    for key, known in (("kinds", KINDS), ("equation_forms", EQUATION_FORMS)):
      value = getattr(self, key)
      check(isinstance(value, tuple) and len(value) > 0, f"{prefix}.{key}", value,
            f"must be a non-empty sequence of {known}")
      for item in value:
        check(item in known, f"{prefix}.{key}", value, f"unknown entry {item!r}; known: {known}")
      check(len(set(value)) == len(value), f"{prefix}.{key}", value, "has duplicates")
    digits = self.mul_digits
    check(isinstance(digits, tuple) and len(digits) == 2
          and all(is_int(d) and 1 <= d <= 9 for d in digits), f"{prefix}.mul_digits", digits,
          "must be two digit counts in 1 .. 9")
    for key, low, high in (("add_digits", 1, 18), ("equation_max", 1, 10**6),
                           ("word_steps", 1, 12), ("word_max", 2, 10**6)):
      value = getattr(self, key)
      check(is_int(value) and low <= value <= high, f"{prefix}.{key}", value,
            f"must be an integer in {low} .. {high}")
    check(is_int(self.seed) and -2**63 <= self.seed < 2**63, f"{prefix}.seed", self.seed,
          "must be a 64-bit integer")
    for split in SPLITS:
      size = self.size(split)
      check(is_int(size) and size >= 0, f"{prefix}.{split}_size", size,
            "must be an integer >= 0 (0: unbounded)")
    for split in ("validation", "test"):
      value = self.fraction(split)
      check(isinstance(value, (int, float)) and 0.0 < value < 1.0,
            f"{prefix}.{split}_fraction", value, "must lie strictly between 0 and 1")
    check(self.fraction("train") > 0.0, f"{prefix}.test_fraction", self.test_fraction,
          f"with validation_fraction {self.validation_fraction} leaves no training problems")
    return self


# Random draws -----------------------------------------------------------------------------------

class _Stream:
  """Deterministic draws from blake2b in counter mode.

  numpy and `random` promise no stable streams across versions; this gives the same numbers on
  every platform and version, so (seed, split, index) names the same problem for good.
  """
  __slots__ = ("_key", "_counter")

  def __init__(self, *key: int):
    self._key = b"".join(int(k).to_bytes(8, "little", signed=True) for k in key)
    self._counter = 0

  def below(self, n: int) -> int:
    """Uniform in 0 .. n - 1 (128 random bits: the modulo bias is negligible)."""
    self._counter += 1
    digest = hashlib.blake2b(self._counter.to_bytes(8, "little"), key=self._key, digest_size=16)
    return int.from_bytes(digest.digest(), "little") % n

  def between(self, low: int, high: int) -> int:
    """Uniform in low .. high, both included."""
    return low + self.below(high - low + 1)

  def digits(self, n: int) -> int:
    """A uniform n-digit number (no leading zero)."""
    return self.between(10 ** (n - 1), 10**n - 1)

  def choice(self, options):
    return options[self.below(len(options))]


def _question_hash(question: str) -> int:
  digest = hashlib.blake2b(question.encode("utf-8"), digest_size=8, person=b"ponder-math")
  return int.from_bytes(digest.digest(), "little")


def split_of(question: str, config: MathCorpusConfig) -> str:
  """The split a problem belongs to: a function of its question text and the split fractions."""
  u = _question_hash(question) / 2**64
  if u < config.validation_fraction:
    return "validation"
  if u < config.validation_fraction + config.test_fraction:
    return "test"
  return "train"


# Problem generators -----------------------------------------------------------------------------

class Problem(NamedTuple):
  question: str
  answer: int
  answer_text: str
  thought: str


def _multiplication(rng: _Stream, cfg: MathCorpusConfig) -> Problem:
  # Long multiplication: one partial product per non-zero digit of b, then a running sum.
  a, b = rng.digits(cfg.mul_digits[0]), rng.digits(cfg.mul_digits[1])
  steps, partials = [], []
  for place, digit in enumerate(reversed(str(b))):
    if digit != "0":
      part = int(digit) * 10**place
      partials.append(a * part)
      steps.append(f"{a}*{part}={a * part}")
  total = partials[0]
  for partial in partials[1:]:
    steps.append(f"{total}+{partial}={total + partial}")
    total += partial
  return Problem(f"{a}*{b}=", a * b, str(a * b), ",".join(steps))


def _place_value_chain(a: int, b: int, sign: int) -> list[str]:
  """a +/- b one non-zero place of b at a time, highest place first."""
  op = "+" if sign > 0 else "-"
  steps, total = [], a
  text = str(b)
  for place, digit in zip(range(len(text) - 1, -1, -1), text):
    if digit != "0":
      part = int(digit) * 10**place
      steps.append(f"{total}{op}{part}={total + sign * part}")
      total += sign * part
  return steps


def _addition(rng: _Stream, cfg: MathCorpusConfig) -> Problem:
  a, b = rng.digits(cfg.add_digits), rng.digits(cfg.add_digits)
  return Problem(f"{a}+{b}=", a + b, str(a + b), ",".join(_place_value_chain(a, b, +1)))


def _subtraction(rng: _Stream, cfg: MathCorpusConfig) -> Problem:
  a, b = rng.digits(cfg.add_digits), rng.digits(cfg.add_digits)
  a, b = max(a, b), min(a, b)  # non-negative answers keep the notation free of signs
  return Problem(f"{a}-{b}=", a - b, str(a - b), ",".join(_place_value_chain(a, b, -1)))


def _times_x(coef: int) -> str:
  return "x" if coef == 1 else f"{coef}x"


def _linear_equation(rng: _Stream, cfg: MathCorpusConfig) -> Problem:
  # The thought is a chain of equivalent equations, each with the same solution.
  form = rng.choice(cfg.equation_forms)
  x, top = rng.between(1, cfg.equation_max), 10 * cfg.equation_max
  a = rng.between(2, 12)
  if form == "ax+b=c":
    b = rng.between(1, top)
    c = a * x + b
    equation, steps = f"{a}x+{b}={c}", [f"{a}x={c}-{b}", f"{a}x={c - b}", f"x={c - b}/{a}"]
  elif form == "ax-b=c":
    b = rng.between(1, a * x)
    c = a * x - b
    equation, steps = f"{a}x-{b}={c}", [f"{a}x={c}+{b}", f"{a}x={c + b}", f"x={c + b}/{a}"]
  elif form == "a(x+b)=c":
    b = rng.between(1, top)
    c = a * (x + b)
    equation, steps = f"{a}(x+{b})={c}", [f"x+{b}={c}/{a}", f"x+{b}={x + b}", f"x={x + b}-{b}"]
  else:  # ax+b=cx+d with a > c, so x stays on the left
    c = rng.between(1, a - 1)
    b = rng.between(1, top)
    d = (a - c) * x + b
    equation = f"{a}x+{b}={_times_x(c)}+{d}"
    steps = [f"{a}x-{_times_x(c)}={d}-{b}", f"{_times_x(a - c)}={d - b}"]
    if a - c > 1:
      steps.append(f"x={d - b}/{a - c}")
  steps.append(f"x={x}")
  return Problem(f"Solve {equation}.", x, f" x={x}", ",".join(steps))


_PEOPLE = (("Ava", "she"), ("Ben", "he"), ("Chloe", "she"), ("Dan", "he"), ("Emma", "she"),
           ("Finn", "he"), ("Grace", "she"), ("Hugo", "he"), ("Isla", "she"), ("Jack", "he"),
           ("Lena", "she"), ("Max", "he"), ("Nora", "she"), ("Omar", "he"), ("Priya", "she"),
           ("Sam", "he"))
_PRONOUNS = {"she": ("She", "her"), "he": ("He", "his")}  # subject, possessive
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "cookies", "pencils", "cards",
          "shells", "stamps")
_CONTAINERS = ("bags", "boxes", "packs", "jars")


def _word_problem(rng: _Stream, cfg: MathCorpusConfig) -> Problem:
  # A quantity changed by `word_steps` operations; every count written is >= 2 so plurals hold.
  name, pronoun = rng.choice(_PEOPLE)
  subject, poss = _PRONOUNS[pronoun]
  items = rng.choice(_ITEMS)
  x = rng.between(2, cfg.word_max)
  sentences, steps = [f"{name} has {x} {items}."], []
  for _ in range(cfg.word_steps):
    divisors = [k for k in range(2, 10) if x % k == 0 and x // k >= 2]
    ops = ["gain", "groups", "times"]
    ops += (["lose"] if x >= 4 else []) + (["share"] if divisors else [])
    op = rng.choice(ops)
    if op == "gain":
      k = rng.between(2, cfg.word_max)
      sentences.append(f"{subject} finds {k} more {items}.")
      steps.append(f"{x}+{k}={x + k}")
      x += k
    elif op == "groups":
      groups, each = rng.between(2, 9), rng.between(2, 12)
      sentences.append(
          f"{subject} buys {groups} {rng.choice(_CONTAINERS)} of {items} with {each} in each.")
      steps += [f"{groups}*{each}={groups * each}", f"{x}+{groups * each}={x + groups * each}"]
      x += groups * each
    elif op == "times":
      friend = rng.choice([p for p, _ in _PEOPLE if p != name])
      m = rng.between(2, 3)
      sentences.append(
          f"{friend} gives {name} {m} times as many {items} as {pronoun} already has.")
      steps += [f"{m}*{x}={m * x}", f"{x}+{m * x}={x + m * x}"]
      x += m * x
    elif op == "lose":
      friend = rng.choice([p for p, _ in _PEOPLE if p != name])
      k = rng.between(2, x - 2)
      sentences.append(f"{subject} gives {k} {items} to {friend}.")
      steps.append(f"{x}-{k}={x - k}")
      x -= k
    else:  # share
      k = rng.choice(divisors)
      sentences.append(f"{subject} splits {poss} {items} into {k} equal piles and keeps one pile.")
      steps.append(f"{x}/{k}={x // k}")
      x //= k
  sentences.append(f"How many {items} does {name} have now?")
  return Problem(" ".join(sentences), x, f" Answer: {x}", ",".join(steps))


_GENERATORS: dict[str, Callable[[_Stream, MathCorpusConfig], Problem]] = {
    "multiplication": _multiplication, "addition": _addition, "subtraction": _subtraction,
    "linear_equation": _linear_equation, "word_problem": _word_problem,
}


def make_record(kind: str, problem: Problem) -> dict[str, Any]:
  """The record of one problem (see the module docstring)."""
  return {
      "kind": kind,
      "question": problem.question,
      "answer": str(problem.answer),
      "answer_text": problem.answer_text,
      "thought": problem.thought,
      "text": problem.question + problem.answer_text,
      "chunks": [(problem.question, None), (problem.answer_text, problem.thought)],
  }


# The corpus as a random-access source -----------------------------------------------------------

class MathCorpus:
  """One split of the corpus as a random-access data source (`grain.MapDataset.source(...)`).

  `corpus[i]` is item i of the split (a record dict). With a fixed size the split holds that many
  distinct problems; without one its length is UNBOUNDED_LENGTH and problems may repeat.
  """

  def __init__(self, config: MathCorpusConfig, split: str, prefix: str = "data.math"):
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    self.config, self.split, self._prefix = config.validated(prefix), split, prefix
    self._split_index = SPLITS.index(split)
    size = config.size(split)
    # Fixed size: the winning attempt of every item, found once; records are rebuilt on access.
    self._attempts = self._distinct_attempts(size) if size else None
    self._length = size or UNBOUNDED_LENGTH

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < self._length:
      raise IndexError(f"index {index} out of range for the {self.split} split of {self._length}")
    if self._attempts is not None:
      kind, problem = self._candidate(index, int(self._attempts[index]))
    else:
      kind, problem = self._first_in_split(index)
    return make_record(kind, problem)

  def __repr__(self) -> str:
    return f"MathCorpus(split={self.split!r}, len={self._length}, kinds={self.config.kinds})"

  def _candidate(self, index: int, attempt: int) -> tuple[str, Problem]:
    rng = _Stream(self.config.seed, self._split_index, index, attempt)
    kind = rng.choice(self.config.kinds)
    return kind, _GENERATORS[kind](rng, self.config)

  def _first_in_split(self, index: int) -> tuple[str, Problem]:
    for attempt in range(_MAX_ATTEMPTS):
      kind, problem = self._candidate(index, attempt)
      if split_of(problem.question, self.config) == self.split:
        return kind, problem
    key = "validation_fraction" if self.split == "train" else f"{self.split}_fraction"
    raise ConfigError(f"{self._prefix}.{key}", getattr(self.config, key),
                      f"no {self.split} problem in {_MAX_ATTEMPTS} candidates for item {index}: "
                      "the split's share of the problem space is too small")

  def _distinct_attempts(self, size: int) -> np.ndarray:
    attempts_N = np.empty(size, np.int32)
    seen: set[int] = set()
    for index in range(size):
      for attempt in range(_MAX_ATTEMPTS):
        _, problem = self._candidate(index, attempt)
        question_hash = _question_hash(problem.question)
        if question_hash not in seen and split_of(problem.question, self.config) == self.split:
          seen.add(question_hash)
          attempts_N[index] = attempt
          break
      else:
        raise ConfigError(
            f"{self._prefix}.{self.split}_size", size,
            f"only {index} distinct {self.split} problems found: the problem space of kinds "
            f"{self.config.kinds} at this difficulty is too small for this size")
    return attempts_N


# Checking thoughts ------------------------------------------------------------------------------

class ThoughtError(ValueError):
  """A thought does not parse, states a false step, or steps disagree on the unknown."""


_TOKEN = re.compile(r"[0-9]+|x|[-+*/()]|\S")  # spaces separate tokens; \S catches strays
_DIGITS = "0123456789"
_Linear = tuple[Fraction, Fraction]  # coef * x + const


class _LinearParser:
  """Recursive descent over + - * / ( ), integers and x, with implicit products (`3x`, `2(x+1)`)."""

  def __init__(self, text: str):
    self.tokens = _TOKEN.findall(text)
    stray = [t for t in self.tokens if t[0] not in _DIGITS and t not in "x-+*/()"]
    if not self.tokens or stray:
      raise ThoughtError(f"cannot read expression {text!r}")
    self.pos, self.text = 0, text

  def parse(self) -> _Linear:
    try:
      value = self._sum()
    except RecursionError:  # model-written thoughts can nest parentheses without end
      raise ThoughtError(f"expression nested too deeply: {self.text[:50]!r}...") from None
    if self.pos != len(self.tokens):
      raise ThoughtError(f"unexpected {self.tokens[self.pos]!r} in {self.text!r}")
    return value

  def _peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _take(self) -> str:
    token = self._peek()
    if token is None:
      raise ThoughtError(f"expression {self.text!r} ends early")
    self.pos += 1
    return token

  def _sum(self) -> _Linear:
    coef, const = self._product()
    while self._peek() in ("+", "-"):
      sign = 1 if self._take() == "+" else -1
      rhs_coef, rhs_const = self._product()
      coef, const = coef + sign * rhs_coef, const + sign * rhs_const
    return coef, const

  def _product(self) -> _Linear:
    value = self._unary()
    while True:
      token = self._peek()
      if token in ("*", "/"):
        self._take()
        value = self._combine(value, self._unary(), token)
      elif token in ("x", "("):
        value = self._combine(value, self._unary(), "*")
      else:
        return value

  def _combine(self, lhs: _Linear, rhs: _Linear, op: str) -> _Linear:
    if op == "/":
      if rhs[0] != 0 or rhs[1] == 0:
        raise ThoughtError(f"division by {'x' if rhs[0] else 'zero'} in {self.text!r}")
      return lhs[0] / rhs[1], lhs[1] / rhs[1]
    if lhs[0] != 0 and rhs[0] != 0:
      raise ThoughtError(f"{self.text!r} is not linear in x")
    return lhs[0] * rhs[1] + rhs[0] * lhs[1], lhs[1] * rhs[1]

  def _unary(self) -> _Linear:
    if self._peek() == "-":
      self._take()
      coef, const = self._unary()
      return -coef, -const
    token = self._take()
    if token == "x":
      return Fraction(1), Fraction(0)
    if token == "(":
      value = self._sum()
      if self._take() != ")":
        raise ThoughtError(f"missing ')' in {self.text!r}")
      return value
    if token[0] in _DIGITS:
      if len(token) > 100:
        raise ThoughtError(f"number too long in {self.text!r}")
      return Fraction(0), Fraction(int(token))
    raise ThoughtError(f"unexpected {token!r} in {self.text!r}")


def evaluate_thought(thought: str) -> Fraction:
  """The value a thought derives, after checking every step.

  A thought is comma-separated steps; a step is `e1=e2[=e3...]` over integers, + - * / ( ) and at
  most one unknown x. Adjacent sides without x must be equal (`123*5=615`); adjacent sides with
  x form an equation whose unique solution must agree with every other step's. A step's value is
  its solution, or else its last side; the thought's value is its last step's. Raises ThoughtError
  naming the first bad step.
  """
  value, solution = None, None
  for number, step in enumerate(thought.split(","), start=1):
    sides = [_LinearParser(side).parse() for side in step.split("=")]
    if len(sides) < 2:
      raise ThoughtError(f"step {number} {step!r} is not an equation")
    step_value = sides[-1][1] if sides[-1][0] == 0 else None
    for (left_coef, left_const), (right_coef, right_const) in zip(sides, sides[1:]):
      coef, const = left_coef - right_coef, right_const - left_const
      if coef == 0:
        if const != 0:
          raise ThoughtError(f"step {number} {step!r} is false")
        continue
      root = const / coef
      if solution is not None and root != solution:
        raise ThoughtError(f"step {number} {step!r} gives x={root}, earlier steps x={solution}")
      solution = step_value = root
    if step_value is not None:
      value = step_value
  if value is None:
    raise ThoughtError(f"thought {thought!r} derives no value")
  return value


_SOLVE = re.compile(r"Solve (.+)=(.+)\.")


def _answer_from_question(kind: str, question: str) -> Fraction | None:
  """The answer recomputed from the question text; None where the question is English."""
  if kind in ("multiplication", "addition", "subtraction"):
    return _LinearParser(question.removesuffix("=")).parse()[1]
  if kind == "linear_equation":
    match = _SOLVE.fullmatch(question)
    if match is None:
      raise ThoughtError(f"cannot read equation {question!r}")
    return evaluate_thought(f"{match[1]}={match[2]}")
  return None


def verify(record: Mapping[str, Any]) -> bool:
  """Whether the record's thought is correct and derives its answer.

  Every step of the thought must hold (`evaluate_thought`) and the thought's value must equal the
  answer; for arithmetic and equations the answer is also recomputed from the question. Word
  problems are English, so there the thought's steps and its end value are what is checked.
  """
  try:
    answer = Fraction(int(record["answer"]))
    if evaluate_thought(record["thought"]) != answer:
      return False
    expected = _answer_from_question(record["kind"], record["question"])
  except (ThoughtError, ValueError):
    return False
  return expected is None or expected == answer
