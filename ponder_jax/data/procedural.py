"""Procedural warm-up data: random-access grain sources of algorithmic sequences.

Every source here is a grain random-access data source (`__len__`, `__getitem__`; use it with
`grain.MapDataset.source(...)`). Item i is a pure function of (task, params, seed, i): its
counter-based random generator is keyed on (seed, task) and starts at a counter set by i, so any
index regenerates on demand, nothing is stored, and a pipeline's iterator state is an index.
An item is

  {'tokens': int32[n], 'loss_mask': int32[n]}

in *task-local* symbols 0 .. num_symbols - 1 (num_symbols <= 256); the pipeline maps them to
global ids with `Vocabulary.procedural_id`. `loss_mask[t] = 1` iff token t is a training target
(the prediction of token t made at position t - 1 is trained): the project's convention, which
is the official code's mask shifted right by one.

Tasks (METHODS.md §3.2 and §3.4, following `zlshinnick/procedural-pretraining`):
  identity, reverse, sort, set, union, delete, stack     sequence tasks, loss on the output span
  dyck, shuffled_dyck                                     bracket languages, loss on every token
                                                          after the first
  eca                                                     elementary cellular automaton (rule 110
                                                          by default), loss on every row after
                                                          the first (which is random)
  addition, reversed_addition, multiplication             loss on the answer digits and stop
  needle                                                  key-value recall, loss on the answer

Padded output positions are never targets (as in the official code: a padded item never trains
the model to predict PAD). Build sources with `make_procedural_source(task, seed, num_items,
**params)`; bad parameters raise `ConfigError` naming `data.sources.<name>.<param>`.
This module only generates items: mixing, packing and id mapping live in the pipeline.
"""

from __future__ import annotations

import abc
import dataclasses
import operator
import zlib
from typing import Any, ClassVar

import numpy as np

from ponder_jax.config import ConfigError

# Items are generated on demand, so the nominal length costs nothing; 2**31 - 1 keeps indices
# within int32 for any consumer that stores them so.
DEFAULT_NUM_ITEMS = 2**31 - 1
MAX_SYMBOLS = 256
_U64 = 2**64


def _check_int(key: str, value: Any, low: int, high: int | None = None) -> None:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  ok = ok and value >= low and (high is None or value <= high)
  if not ok:
    bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
    raise ConfigError(key, value, f"must be an integer {bound}")


def _check_probability(key: str, value: Any) -> None:
  ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
  if not (ok and 0.0 <= value <= 1.0):
    raise ConfigError(key, value, "must be a probability in [0, 1]")


class ProceduralSource(abc.ABC):
  """A grain random-access source of one procedural task; see the module docstring.

  `params` is the task's `Params` dataclass (None: its defaults); everything is validated here,
  with errors naming `<config_key>.<param>` (default config_key: `data.sources.<task>`).
  """

  task: ClassVar[str]
  Params: ClassVar[type]

  def __init__(self, params: Any = None, seed: int = 0, num_items: int = DEFAULT_NUM_ITEMS,
               config_key: str | None = None):
    prefix = config_key or f"data.sources.{self.task}"
    _check_int(f"{prefix}.seed", seed, 0, _U64 - 1)
    _check_int(f"{prefix}.num_items", num_items, 1, _U64 - 1)
    self.params = self._validated(self.Params() if params is None else params, prefix)
    self.seed = int(seed)
    self.num_items = int(num_items)
    # Counter-based streams: the Philox key is (seed, task), so two tasks with one seed never
    # share inputs (identity and reverse would otherwise draw the same x); item i starts its
    # counter at i * 2**128, so items own disjoint blocks of one stream.
    self._key = np.array([self.seed, zlib.crc32(self.task.encode())], np.uint64)

  @property
  @abc.abstractmethod
  def num_symbols(self) -> int:
    """Size of the task-local alphabet; every token is below it."""

  @property
  @abc.abstractmethod
  def special_symbols(self) -> dict[str, int]:
    """Named non-data symbols of the layout (separators, padding, operators)."""

  @abc.abstractmethod
  def _generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, loss_mask) of one item drawn with `rng`."""

  def _validated(self, params: Any, prefix: str) -> Any:
    if not isinstance(params, self.Params):
      raise ConfigError(prefix, params, f"task '{self.task}' takes {self.Params.__name__}")
    return params.validated(prefix)

  def __len__(self) -> int:
    return self.num_items

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = operator.index(index)
    if not 0 <= index < self.num_items:
      raise IndexError(f"index {index} out of range for {self.num_items} {self.task} items")
    rng = np.random.Generator(np.random.Philox(counter=index << 128, key=self._key))
    tokens, loss_mask = self._generate(rng)
    return {"tokens": np.asarray(tokens, np.int32), "loss_mask": np.asarray(loss_mask, np.int32)}

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(seed={self.seed}, num_items={self.num_items}, "
            f"params={self.params})")


# Sequence tasks ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SequenceParams:
  """Sequence tasks: inputs of `length` data symbols drawn uniformly from 1 .. vocab - 1."""
  length: int = 64  # n, the input length (official seq tasks: 64)
  vocab: int = 100  # V; data symbols 1 .. V-1, SEP = V, PAD = V + 1

  def validated(self, prefix: str) -> "SequenceParams":
    _check_int(f"{prefix}.length", self.length, 1)
    _check_int(f"{prefix}.vocab", self.vocab, 3, MAX_SYMBOLS - 2)
    return self


class _SequenceSource(ProceduralSource):
  """Layout: 0 unused (stack: pop), 1 .. V-1 data, SEP = V, PAD = V + 1."""

  Params = SequenceParams
  min_length: ClassVar[int] = 1  # the shortest input the task can be built from

  def _validated(self, params, prefix):
    params = super()._validated(params, prefix)
    _check_int(f"{prefix}.length", params.length, self.min_length)
    return params

  @property
  def num_symbols(self) -> int:
    return self.params.vocab + 2

  @property
  def sep(self) -> int:
    return self.params.vocab

  @property
  def pad(self) -> int:
    return self.params.vocab + 1

  @property
  def special_symbols(self) -> dict[str, int]:
    return {"sep": self.sep, "pad": self.pad}

  def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(1, self.params.vocab, size)

  def _layout(self, prompt: list[np.ndarray], output: np.ndarray,
              padded_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt part followed by SEP, then `output` padded to `padded_len`; targets = output."""
    parts = []
    for part in prompt:
      parts += [part, [self.sep]]
    head = np.concatenate(parts)
    tokens = np.full(len(head) + padded_len, self.pad, np.int32)
    tokens[:len(head)] = head
    tokens[len(head):len(head) + len(output)] = output
    mask = np.zeros(len(tokens), np.int32)
    mask[len(head):len(head) + len(output)] = 1
    return tokens, mask


def _first_occurrences(x: np.ndarray) -> np.ndarray:
  """The distinct values of x in order of first occurrence."""
  _, first = np.unique(x, return_index=True)
  return x[np.sort(first)]


class IdentitySource(_SequenceSource):
  """x SEP x; length 2n + 1."""
  task = "identity"

  def _generate(self, rng):
    x = self._draw(rng, self.params.length)
    return self._layout([x], x, self.params.length)


class ReverseSource(_SequenceSource):
  """x SEP reversed(x); length 2n + 1."""
  task = "reverse"

  def _generate(self, rng):
    x = self._draw(rng, self.params.length)
    return self._layout([x], x[::-1], self.params.length)


class SortSource(_SequenceSource):
  """x SEP sorted(x) (ascending); length 2n + 1."""
  task = "sort"

  def _generate(self, rng):
    x = self._draw(rng, self.params.length)
    return self._layout([x], np.sort(x), self.params.length)


class SetSource(_SequenceSource):
  """x SEP distinct(x) in first-occurrence order, PAD to length 2n + 1."""
  task = "set"

  def _generate(self, rng):
    x = self._draw(rng, self.params.length)
    return self._layout([x], _first_occurrences(x), self.params.length)


class UnionSource(_SequenceSource):
  """a SEP b SEP distinct(a ++ b) in first-occurrence order, PAD to n; |a| = |b| = n // 2.

  Length 2 * (n // 2) + 2 + n.
  """
  task = "union"
  min_length = 2  # two halves of n // 2

  def _generate(self, rng):
    half = self.params.length // 2
    a, b = self._draw(rng, half), self._draw(rng, half)
    return self._layout([a, b], _first_occurrences(np.concatenate([a, b])), self.params.length)


class DeleteSource(_SequenceSource):
  """x SEP r SEP (x without the FIRST occurrence of r), PAD to n; r ~ U{1..V-1}.

  Length 2n + 3. r often does not occur (then the output is x itself), as in the official code.
  """
  task = "delete"

  def _generate(self, rng):
    x = self._draw(rng, self.params.length)
    r = self._draw(rng, 1)
    hits = np.flatnonzero(x == r[0])
    output = np.delete(x, hits[0]) if len(hits) else x
    return self._layout([x, r], output, self.params.length)


class StackSource(_SequenceSource):
  """ops SEP stack top-to-bottom, PAD to length 2n; an op is a pushed symbol or 0 (pop).

  Official rules: pushed symbols are distinct among those on the stack (uniform over the free
  ones); a stack of size <= 1 is always pushed to; in the first 2/3 of the n steps push with
  probability 0.75, later pop with probability 0.75; the last step pops when the stack holds
  more than one symbol. With V >= 3 the stack is never empty, so the official "push one more
  if empty" fix-up never fires; with n >= 3 the item always fits in 2n.
  """
  task = "stack"
  min_length = 3  # n + 1 + |stack| fits the official 2n only from n = 3
  POP = 0

  @property
  def special_symbols(self) -> dict[str, int]:
    return {"pop": self.POP, "sep": self.sep, "pad": self.pad}

  def _generate(self, rng):
    n = self.params.length
    coins, picks = rng.random(n).tolist(), rng.random(n).tolist()
    free = list(range(1, self.params.vocab))  # symbols not on the stack, in any order
    stack, ops = [], []
    push_phase = int(n * 2 / 3)
    for step in range(n):
      if step == n - 1 and len(stack) > 1:
        push = False
      elif len(stack) <= 1:
        push = True
      elif step < push_phase:
        push = coins[step] < 0.75
      else:
        push = coins[step] >= 0.75
      if push and free:
        # Swap-remove keeps drawing uniform over the free symbols at O(1) per push.
        j = int(picks[step] * len(free))
        free[j], free[-1] = free[-1], free[j]
        symbol = free.pop()
        stack.append(symbol)
        ops.append(symbol)
      elif stack:
        free.append(stack.pop())
        ops.append(self.POP)
    return self._layout([np.asarray(ops)], np.asarray(stack[::-1]), n - 1)


# Bracket languages ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DyckParams:
  """k-Dyck words of exactly `length` symbols (official Dyck warm-up: k = 64, length 2048)."""
  length: int = 2048  # must be even: an odd-length word cannot be balanced
  k: int = 64  # bracket types
  p_open: float = 0.5  # official CLI default (the generator function's default is 0.49)

  def validated(self, prefix: str) -> "DyckParams":
    _check_int(f"{prefix}.length", self.length, 2)
    if self.length % 2:
      raise ConfigError(f"{prefix}.length", self.length,
                        "must be even: a balanced Dyck word has even length")
    _check_int(f"{prefix}.k", self.k, 1, MAX_SYMBOLS // 2)
    _check_probability(f"{prefix}.p_open", self.p_open)
    return self


def _every_token_but_first(n: int) -> np.ndarray:
  """Next-token targets everywhere; the first token has no context to be predicted from."""
  mask = np.ones(n, np.int32)
  mask[0] = 0
  return mask


class DyckSource(ProceduralSource):
  """Balanced, well-nested k-Dyck words of exactly N symbols.

  Layout: 0 .. k-1 open brackets, k .. 2k-1 the matching closes (close of type b = b + k).
  No PAD is needed: every item is exactly N long (the official PAD = 2k only fills the targets'
  tail). Official rules: an empty stack opens a random type; when the remaining length equals
  the depth, close everything; otherwise open with p_open, else close the top.

  Generated vectorised (>= 1M tokens/s at N = 2048): the depth path is a walk of p_open coins
  reflected at depth 1 (Lindley recursion, a cumsum and a running minimum), where a down-coin at
  depth 1 becomes "close to 0, forced reopen" (two symbols for one coin, exactly the official
  chain, which draws no coin at depth 0); the path is cut where the remaining length meets the
  depth and closed out. Closes are matched to opens by a stable sort on nesting level: at each
  level opens and closes alternate, so consecutive pairs match.
  """

  task = "dyck"
  Params = DyckParams

  @property
  def num_symbols(self) -> int:
    return 2 * self.params.k

  @property
  def special_symbols(self) -> dict[str, int]:
    return {}

  def _opens(self, rng: np.random.Generator) -> np.ndarray:
    """bool[N]: True where the word opens a bracket."""
    n = self.params.length
    coins = np.where(rng.random(n) < self.params.p_open, 1, -1)
    walk = np.cumsum(coins)
    depth = 1 + walk - np.minimum(np.minimum.accumulate(walk), 0)  # after each coin, >= 1
    bounced = depth == np.concatenate(([1], depth[:-1]))
    repeats = 1 + bounced
    steps = np.repeat(coins, repeats)
    steps[np.cumsum(repeats)[bounced] - 1] = 1  # the forced reopen after touching 0
    steps = np.concatenate(([1], steps))  # the first symbol always opens
    # Stop where depth + emitted == N: from there on, closing everything is forced. That sum
    # grows by 0 or 2 per symbol from 0, so with N even it hits N exactly, within N symbols.
    emitted = np.arange(1, len(steps) + 1)
    cut = int(np.argmax(np.cumsum(steps) + emitted >= n)) + 1
    opens = np.zeros(n, bool)
    opens[:cut] = steps[:cut] > 0
    return opens

  def _generate(self, rng):
    n, k = self.params.length, self.params.k
    opens = self._opens(rng)
    depth_after = np.cumsum(np.where(opens, 1, -1))
    level = depth_after + ~opens  # an open's level is its depth after, a close's before
    pairs = np.argsort(level, kind="stable").reshape(-1, 2)
    types = rng.integers(0, k, n // 2)
    tokens = np.empty(n, np.int32)
    tokens[pairs[:, 0]] = types
    tokens[pairs[:, 1]] = types + k
    return tokens, _every_token_but_first(n)


@dataclasses.dataclass(frozen=True)
class ShuffledDyckParams:
  """Shuffled k-Dyck: per-type counters, no nesting order, depth capped at max_depth."""
  length: int = 2048
  k: int = 64
  p_open: float = 0.5
  max_depth: int = 16

  def validated(self, prefix: str) -> "ShuffledDyckParams":
    _check_int(f"{prefix}.length", self.length, 1)
    _check_int(f"{prefix}.k", self.k, 1, MAX_SYMBOLS // 2)
    _check_probability(f"{prefix}.p_open", self.p_open)
    _check_int(f"{prefix}.max_depth", self.max_depth, 1)
    return self


class ShuffledDyckSource(ProceduralSource):
  """Shuffled k-Dyck sequences of exactly N symbols (not forced to end balanced).

  Layout as `DyckSource`: 0 .. k-1 open, k .. 2k-1 close. Official rules: depth = total open
  count; depth 0 opens a random type; depth >= max_depth closes; otherwise open with p_open,
  else close. A close picks uniformly among the *types* that are open (not weighted by count).
  """

  task = "shuffled_dyck"
  Params = ShuffledDyckParams

  @property
  def num_symbols(self) -> int:
    return 2 * self.params.k

  @property
  def special_symbols(self) -> dict[str, int]:
    return {}

  def _generate(self, rng):
    n, k, max_depth = self.params.length, self.params.k, self.params.max_depth
    coins = (rng.random(n) < self.params.p_open).tolist()
    new_types = rng.integers(0, k, n).tolist()
    picks = rng.random(n).tolist()
    counts = [0] * k
    open_types: list[int] = []  # types with count > 0, in any order
    slot = [0] * k  # position of each open type in open_types, for O(1) removal
    depth = 0
    tokens = [0] * n
    for t in range(n):
      if depth == 0 or (depth < max_depth and coins[t]):
        b = new_types[t]
        if not counts[b]:
          slot[b] = len(open_types)
          open_types.append(b)
        counts[b] += 1
        depth += 1
        tokens[t] = b
      else:
        b = open_types[int(picks[t] * len(open_types))]
        counts[b] -= 1
        depth -= 1
        if not counts[b]:
          last = open_types.pop()
          if last != b:
            open_types[slot[b]] = last
            slot[last] = slot[b]
        tokens[t] = b + k
    return np.asarray(tokens, np.int32), _every_token_but_first(n)


# Elementary cellular automaton ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EcaParams:
  """Elementary cellular automaton on a ring (not in the official code; METHODS.md §3.2).

  Defaults: width 63 and 31 steps make 32 rows of 63 cells + separator = 2048 tokens, the Dyck
  warm-up length; 31 steps let each cell's light cone (radius 1 per step) reach 63 cells, so the
  last row depends on the whole first row.
  """
  width: int = 63  # W cells per row, periodic boundary
  steps: int = 31  # T updates after the random first row: T + 1 rows
  rule: int = 110  # Wolfram rule number

  def validated(self, prefix: str) -> "EcaParams":
    _check_int(f"{prefix}.width", self.width, 3)
    _check_int(f"{prefix}.steps", self.steps, 1)
    _check_int(f"{prefix}.rule", self.rule, 0, 255)
    return self


class EcaSource(ProceduralSource):
  """Rows of an elementary CA: row_0 SEP row_1 SEP ... row_T SEP; length (T + 1)(W + 1).

  Layout: 0 and 1 cell states, SEP = 2 ends every row. row_0 is uniform random bits; row_{t+1}
  cell i = bit (4 l + 2 c + r) of `rule`, with l, c, r = cells i - 1, i, i + 1 (mod W) of row_t.
  Targets: everything after the first row and its separator (row_0 is random, so unlearnable).
  """

  task = "eca"
  Params = EcaParams
  SEP = 2

  @property
  def num_symbols(self) -> int:
    return 3

  @property
  def special_symbols(self) -> dict[str, int]:
    return {"sep": self.SEP}

  def _generate(self, rng):
    width, steps = self.params.width, self.params.steps
    table = (self.params.rule >> np.arange(8)) & 1
    grid = np.full((steps + 1, width + 1), self.SEP, np.int32)
    cells = np.arange(width)
    left, right = (cells - 1) % width, (cells + 1) % width  # the ring's neighbours
    row = rng.integers(0, 2, width)
    grid[0, :width] = row
    for t in range(1, steps + 1):
      row = table[4 * row[left] + 2 * row + row[right]]
      grid[t, :width] = row
    mask = np.ones(grid.size, np.int32)
    mask[:width + 1] = 0
    return grid.reshape(-1), mask


# Arithmetic ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArithmeticParams:
  """Operands with d digits, d ~ U{min_digits .. digits} (official: exactly `digits`)."""
  digits: int = 5
  min_digits: int = 0  # 0: same as digits

  def validated(self, prefix: str) -> "ArithmeticParams":
    # 18 digits keep the operand draws inside int64.
    _check_int(f"{prefix}.digits", self.digits, 1, 18)
    _check_int(f"{prefix}.min_digits", self.min_digits, 0, self.digits)
    return self


@dataclasses.dataclass(frozen=True)
class ReversedAdditionParams(ArithmeticParams):
  digits: int = 10  # the official `additionstream_10`


class _ArithmeticSource(ProceduralSource):
  """`a OP b = answer STOP`, PAD to a fixed length (official `task_*addition*.py` layout).

  Layout: 0 .. 9 operand digits, OP = 10 ('+' or '*'), '=' = 11, PAD = 12, 20 .. 29 answer
  digits (digit + 20), STOP = 30; 13 .. 19 unused. Targets: every answer digit and STOP. (The
  official loss keys on the *input* symbol being >= 20, which skips the first answer digit and
  trains the PAD after STOP; this follows its stated intent instead.)
  """

  Params = ArithmeticParams
  OP, EQUALS, PAD, ANSWER, STOP = 10, 11, 12, 20, 30
  reverse_digits: ClassVar[bool] = False

  @property
  def num_symbols(self) -> int:
    return 31

  @property
  def special_symbols(self) -> dict[str, int]:
    return {"op": self.OP, "equals": self.EQUALS, "pad": self.PAD, "answer_zero": self.ANSWER,
            "stop": self.STOP}

  @property
  def length(self) -> int:
    return 3 * self.params.digits + 4  # a, b, answer <= digits + 1, '+', '=', STOP

  @abc.abstractmethod
  def _apply(self, a: int, b: int) -> int: ...

  def _operand(self, rng: np.random.Generator) -> int:
    d = int(rng.integers(self.params.min_digits or self.params.digits, self.params.digits + 1))
    return int(rng.integers(10**(d - 1), 10**d))

  def _digits(self, value: int) -> list[int]:
    digits = [int(c) for c in str(value)]
    return digits[::-1] if self.reverse_digits else digits

  def _generate(self, rng):
    a, b = self._operand(rng), self._operand(rng)
    head = self._digits(a) + [self.OP] + self._digits(b) + [self.EQUALS]
    answer = [d + self.ANSWER for d in self._digits(self._apply(a, b))] + [self.STOP]
    tokens = np.full(self.length, self.PAD, np.int32)
    tokens[:len(head) + len(answer)] = head + answer
    mask = np.zeros(self.length, np.int32)
    mask[len(head):len(head) + len(answer)] = 1
    return tokens, mask


class AdditionSource(_ArithmeticSource):
  """Forward addition (`forwardaddition_5`): most significant digit first; length 3d + 4."""
  task = "addition"

  def _apply(self, a, b):
    return a + b


class ReversedAdditionSource(AdditionSource):
  """Addition with a, b and the sum written least significant digit first
  (`additionstream_10`); length 3d + 4."""
  task = "reversed_addition"
  Params = ReversedAdditionParams
  reverse_digits = True


class MultiplicationSource(_ArithmeticSource):
  """`a * b = product` (`multiplication_5`), OP = 10 is '*'; length 5d + 4 as officially."""
  task = "multiplication"

  @property
  def length(self) -> int:
    return 5 * self.params.digits + 4

  def _apply(self, a, b):
    return a * b


# Needle in a haystack ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NeedleParams:
  """Key-value recall (`condattendstream_30`): m ~ U{1 .. max_pairs} pairs, then a query."""
  max_pairs: int = 30

  def validated(self, prefix: str) -> "NeedleParams":
    # Keys and queries take 2 * max_pairs symbols above the 128 value/pad symbols.
    _check_int(f"{prefix}.max_pairs", self.max_pairs, 1, (MAX_SYMBOLS - 128) // 2)
    return self


class NeedleSource(ProceduralSource):
  """key_1 value_1 ... key_m value_m QUERY(key_q) value_q, PAD to 2 * max_pairs + 3.

  The official 256-symbol layout, with M = max_pairs: PAD = 0, values 1 .. 127, key j (0 .. M-1)
  = 128 + j, the query for key j = 128 + M + j. Keys are distinct; the queried key is one of the
  m. The only target is the answer value (the official loss and accuracy position).
  """

  task = "needle"
  Params = NeedleParams
  PAD, KEY = 0, 128

  @property
  def num_symbols(self) -> int:
    return self.KEY + 2 * self.params.max_pairs

  @property
  def special_symbols(self) -> dict[str, int]:
    return {"pad": self.PAD, "key_zero": self.KEY, "query_zero": self.KEY + self.params.max_pairs}

  def _generate(self, rng):
    max_pairs = self.params.max_pairs
    m = int(rng.integers(1, max_pairs + 1))
    keys = rng.permutation(max_pairs)[:m]
    values = rng.integers(1, self.KEY, m)
    q = int(rng.integers(m))
    tokens = np.full(2 * max_pairs + 3, self.PAD, np.int32)
    tokens[0:2 * m:2] = keys + self.KEY
    tokens[1:2 * m:2] = values
    tokens[2 * m] = keys[q] + self.KEY + max_pairs
    tokens[2 * m + 1] = values[q]
    mask = np.zeros(len(tokens), np.int32)
    mask[2 * m + 1] = 1
    return tokens, mask


# Registry ------------------------------------------------------------------------------------

PROCEDURAL_TASKS: dict[str, type[ProceduralSource]] = {
    cls.task: cls for cls in (
        IdentitySource, ReverseSource, SortSource, SetSource, UnionSource, DeleteSource,
        StackSource, DyckSource, ShuffledDyckSource, EcaSource, AdditionSource,
        ReversedAdditionSource, MultiplicationSource, NeedleSource)
}


def make_procedural_source(task: str, seed: int = 0, num_items: int = DEFAULT_NUM_ITEMS, *,
                           config_key: str | None = None, **params: Any) -> ProceduralSource:
  """The validated source of `task`; `params` override the task's Params defaults.

  `config_key` names the source's config section in errors (default `data.sources.<task>`).
  """
  prefix = config_key or f"data.sources.{task}"
  if task not in PROCEDURAL_TASKS:
    raise ConfigError(f"{prefix}.task", task, f"unknown task; known tasks are "
                      f"{sorted(PROCEDURAL_TASKS)}")
  cls = PROCEDURAL_TASKS[task]
  names = {f.name for f in dataclasses.fields(cls.Params)}
  for name, value in params.items():
    if name not in names:
      raise ConfigError(f"{prefix}.{name}", value,
                        f"unknown parameter of task '{task}'; known ones are {sorted(names)}")
  return cls(cls.Params(**params), seed=seed, num_items=num_items, config_key=prefix)
