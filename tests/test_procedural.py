"""Procedural generators: each task's output recomputed independently from its input span."""

import pickle

import grain
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder_jax.config import ConfigError
from ponder_jax.data.procedural import (PROCEDURAL_TASKS, DyckParams, DyckSource, SequenceParams,
                                        StackSource, make_procedural_source)

EXAMPLES = settings(max_examples=50, deadline=None)
seeds = st.integers(0, 2**64 - 1)
indices = st.integers(0, 2**31 - 2)


def item(task, seed, index, **params):
  source = make_procedural_source(task, seed, **params)
  out = source[index]
  return source, out["tokens"].tolist(), out["loss_mask"].tolist()


def targets(mask):
  return [t for t, m in enumerate(mask) if m]


# Every task ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(PROCEDURAL_TASKS))
@EXAMPLES
@given(seed=seeds, index=indices)
def test_items_are_int32_within_symbols_and_deterministic(task, seed, index):
  source = make_procedural_source(task, seed)
  a, b = source[index], source[index]
  assert set(a) == {"tokens", "loss_mask"}
  assert a["tokens"].dtype == np.int32 and a["loss_mask"].dtype == np.int32
  assert a["tokens"].shape == a["loss_mask"].shape and a["tokens"].ndim == 1
  assert 0 <= a["tokens"].min() and a["tokens"].max() < source.num_symbols <= 256
  assert set(np.unique(a["loss_mask"])) <= {0, 1} and a["loss_mask"].sum() >= 1
  assert all(0 <= v < source.num_symbols for v in source.special_symbols.values())
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])
  # A fresh source object regenerates the same item: it is a function of (seed, index) only.
  np.testing.assert_array_equal(make_procedural_source(task, seed)[index]["tokens"], a["tokens"])


@pytest.mark.parametrize("task", sorted(PROCEDURAL_TASKS))
def test_different_indices_seeds_and_tasks_differ(task):
  source = make_procedural_source(task, seed=7)
  rows = [tuple(source[i]["tokens"]) for i in range(12)]
  assert len(set(rows)) == len(rows)
  other = make_procedural_source(task, seed=8)
  assert all(tuple(other[i]["tokens"]) != rows[i] for i in range(12))


def test_tasks_with_one_seed_draw_different_inputs():
  identity = make_procedural_source("identity", seed=3)[0]["tokens"][:64]
  reverse = make_procedural_source("reverse", seed=3)[0]["tokens"][:64]
  assert not np.array_equal(identity, reverse)


def test_source_works_in_grain_and_pickles():
  source = make_procedural_source("sort", seed=5, num_items=40, length=8)
  assert len(source) == 40
  ds = grain.MapDataset.source(source).shuffle(seed=1)
  seen = [tuple(ds[i]["tokens"]) for i in range(40)]
  assert sorted(seen) == sorted(tuple(source[i]["tokens"]) for i in range(40))
  assert seen != [tuple(source[i]["tokens"]) for i in range(40)]  # shuffled
  batch = next(iter(ds.batch(4).to_iter_dataset()))
  assert batch["tokens"].shape == (4, 17)
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[13]["tokens"], source[13]["tokens"])
  with pytest.raises(IndexError):
    source[40]
  with pytest.raises(IndexError):
    source[-1]


# Sequence tasks ----------------------------------------------------------------------------------

seq_params = dict(length=st.integers(1, 80), vocab=st.integers(3, 254))


def check_simple_layout(tokens, mask, n, vocab, output, padded_len):
  """x SEP output PAD...: targets are exactly the unpadded output."""
  sep, pad = vocab, vocab + 1
  assert len(tokens) == n + 1 + padded_len
  assert tokens[n] == sep and all(1 <= t < vocab for t in tokens[:n])
  assert tokens[n + 1:n + 1 + len(output)] == output
  assert tokens[n + 1 + len(output):] == [pad] * (padded_len - len(output))
  assert targets(mask) == list(range(n + 1, n + 1 + len(output)))


@pytest.mark.parametrize("task,expected", [
    ("identity", lambda x: list(x)),
    ("reverse", lambda x: x[::-1]),
    ("sort", sorted),
    ("set", lambda x: list(dict.fromkeys(x))),
])
@EXAMPLES
@given(seed=seeds, index=indices, **seq_params)
def test_map_tasks_compute_their_output(task, expected, seed, index, length, vocab):
  _, tokens, mask = item(task, seed, index, length=length, vocab=vocab)
  x = tokens[:length]
  check_simple_layout(tokens, mask, length, vocab, expected(x), length)


@EXAMPLES
@given(seed=seeds, index=indices, length=st.integers(2, 80), vocab=st.integers(3, 254))
def test_union_is_first_occurrence_dedup_of_both_halves(seed, index, length, vocab):
  _, tokens, mask = item("union", seed, index, length=length, vocab=vocab)
  half, sep, pad = length // 2, vocab, vocab + 1
  a, b = tokens[:half], tokens[half + 1:2 * half + 1]
  assert tokens[half] == sep and tokens[2 * half + 1] == sep
  assert all(1 <= t < vocab for t in a + b)
  union = []
  for t in a + b:
    if t not in union:
      union.append(t)
  start = 2 * half + 2
  assert len(tokens) == start + length
  assert tokens[start:start + len(union)] == union
  assert tokens[start + len(union):] == [pad] * (length - len(union))
  assert targets(mask) == list(range(start, start + len(union)))


@EXAMPLES
@given(seed=seeds, index=indices, **seq_params)
def test_delete_removes_the_first_occurrence(seed, index, length, vocab):
  _, tokens, mask = item("delete", seed, index, length=length, vocab=vocab)
  sep, pad = vocab, vocab + 1
  x, r = tokens[:length], tokens[length + 1]
  assert tokens[length] == sep and tokens[length + 2] == sep and 1 <= r < vocab
  output = list(x)
  if r in output:
    output.remove(r)  # list.remove drops the first occurrence only
  start = length + 3
  assert len(tokens) == start + length
  assert tokens[start:start + len(output)] == output
  assert tokens[start + len(output):] == [pad] * (length - len(output))
  assert targets(mask) == list(range(start, start + len(output)))


def test_delete_keeps_later_occurrences():
  source = make_procedural_source("delete", seed=0, length=64, vocab=5)
  for i in range(20):
    tokens = source[i]["tokens"].tolist()
    x, r, out = tokens[:64], tokens[65], tokens[67:]
    if x.count(r) >= 2:
      first = x.index(r)
      assert out[:63] == x[:first] + x[first + 1:]
      return
  pytest.fail("no item with a repeated deleted symbol")


@EXAMPLES
@given(seed=seeds, index=indices, length=st.integers(3, 80), vocab=st.integers(3, 254))
def test_stack_output_matches_a_reference_stack(seed, index, length, vocab):
  source, tokens, mask = item("stack", seed, index, length=length, vocab=vocab)
  pop, sep, pad = source.special_symbols["pop"], vocab, vocab + 1
  ops = tokens[:length]
  assert len(tokens) == 2 * length and tokens[length] == sep
  stack = []
  for step, op in enumerate(ops):
    if op == pop:
      assert len(stack) > 1  # pops never empty the stack
      stack.pop()
    else:
      assert 1 <= op < vocab and op not in stack  # pushed symbols are distinct on the stack
      assert step < length - 1 or len(stack) <= 1  # the last step pops a stack of size > 1
      stack.append(op)
  output = stack[::-1]
  assert output and tokens[length + 1:length + 1 + len(output)] == output
  assert tokens[length + 1 + len(output):] == [pad] * (length - 1 - len(output))
  assert targets(mask) == list(range(length + 1, length + 1 + len(output)))


def test_stack_pushes_early_and_pops_late():
  source = make_procedural_source("stack", seed=1, length=60)
  pushes_early = pushes_late = 0
  for i in range(200):
    ops = source[i]["tokens"][:60]
    pushes_early += np.sum(ops[:40] != 0)
    pushes_late += np.sum(ops[40:59] != 0)
  assert pushes_early / (200 * 40) > 0.7 and pushes_late / (200 * 19) < 0.4


# Bracket languages -------------------------------------------------------------------------------


@EXAMPLES
@given(seed=seeds, index=indices, half=st.integers(1, 300), k=st.integers(1, 128),
       p_open=st.floats(0.0, 1.0))
def test_dyck_words_are_balanced_well_nested_and_exact(seed, index, half, k, p_open):
  _, tokens, mask = item("dyck", seed, index, length=2 * half, k=k, p_open=p_open)
  assert len(tokens) == 2 * half
  stack = []
  for t in tokens:
    assert 0 <= t < 2 * k
    if t < k:
      stack.append(t)
    else:
      assert stack and stack.pop() == t - k
  assert not stack
  assert mask == [0] + [1] * (2 * half - 1)


def reference_dyck_depths(rng, n, p_open):
  """The official generator's open/close chain (METHODS.md §3.2), as depths after each symbol."""
  depth, remaining, depths = 0, n, []
  while remaining:
    if depth == 0:
      depth += 1
    elif remaining <= depth:
      depth -= 1
    elif rng.random() < p_open and depth < remaining - 1:
      depth += 1
    else:
      depth -= 1
    remaining -= 1
    depths.append(depth)
  return depths


@pytest.mark.parametrize("p_open", [0.3, 0.7])
def test_dyck_depth_profile_matches_the_official_chain(p_open):
  n, samples = 24, 2000
  source = make_procedural_source("dyck", seed=11, length=n, k=2, p_open=p_open)
  ours = np.array([np.cumsum(np.where(source[i]["tokens"] < 2, 1, -1)) for i in range(samples)])
  rng = np.random.default_rng(0)
  ref = np.array([reference_dyck_depths(rng, n, p_open) for _ in range(samples)])
  stderr = np.sqrt((ours.var(0) + ref.var(0)) / samples) + 1e-9
  assert np.all(np.abs(ours.mean(0) - ref.mean(0)) < 5 * stderr + 1e-6)


@EXAMPLES
@given(seed=seeds, index=indices, length=st.integers(1, 600), k=st.integers(1, 128),
       p_open=st.floats(0.0, 1.0), max_depth=st.integers(1, 20))
def test_shuffled_dyck_counters_stay_valid(seed, index, length, k, p_open, max_depth):
  _, tokens, mask = item("shuffled_dyck", seed, index, length=length, k=k, p_open=p_open,
                         max_depth=max_depth)
  assert len(tokens) == length
  counts = [0] * k
  for t in tokens:
    depth = sum(counts)
    assert 0 <= t < 2 * k
    if t < k:
      assert depth < max_depth  # a full stack must close
      counts[t] += 1
    else:
      assert depth > 0  # an empty stack must open
      counts[t - k] -= 1
      assert counts[t - k] >= 0
    assert sum(counts) <= max_depth
  assert mask == [0] + [1] * (length - 1)


def test_shuffled_dyck_closes_out_of_order():
  source = make_procedural_source("shuffled_dyck", seed=2, length=512, k=4)
  out_of_order = 0
  for i in range(5):
    stack = []
    for t in source[i]["tokens"].tolist():
      if t < 4:
        stack.append(t)
      else:
        out_of_order += stack[-1] != t - 4
        stack.remove(t - 4)
  assert out_of_order > 0


# Cellular automaton ------------------------------------------------------------------------------

RULE_110 = {(1, 1, 1): 0, (1, 1, 0): 1, (1, 0, 1): 1, (1, 0, 0): 0,
            (0, 1, 1): 1, (0, 1, 0): 1, (0, 0, 1): 1, (0, 0, 0): 0}


def eca_rows(tokens, mask, width, steps):
  assert len(tokens) == (steps + 1) * (width + 1)
  rows = [tokens[r * (width + 1):(r + 1) * (width + 1)] for r in range(steps + 1)]
  assert all(row[-1] == 2 and set(row[:-1]) <= {0, 1} for row in rows)
  assert targets(mask) == list(range(width + 1, len(tokens)))
  return [row[:-1] for row in rows]


@EXAMPLES
@given(seed=seeds, index=indices, width=st.integers(3, 70), steps=st.integers(1, 40))
def test_eca_rows_follow_rule_110(seed, index, width, steps):
  _, tokens, mask = item("eca", seed, index, width=width, steps=steps)
  rows = eca_rows(tokens, mask, width, steps)
  for prev, row in zip(rows, rows[1:]):
    assert row == [RULE_110[prev[i - 1], prev[i], prev[(i + 1) % width]] for i in range(width)]


@EXAMPLES
@given(seed=seeds, index=indices, rule=st.integers(0, 255))
def test_eca_any_rule(seed, index, rule):
  _, tokens, mask = item("eca", seed, index, width=9, steps=4, rule=rule)
  rows = eca_rows(tokens, mask, 9, 4)
  for prev, row in zip(rows, rows[1:]):
    for i in range(9):
      neighbourhood = 4 * prev[i - 1] + 2 * prev[i] + prev[(i + 1) % 9]
      assert row[i] == (rule // 2**neighbourhood) % 2


def test_eca_defaults_fill_2048_tokens():
  assert len(make_procedural_source("eca")[0]["tokens"]) == 2048


# Arithmetic and needle ---------------------------------------------------------------------------


def parse_number(digits, reverse):
  text = "".join(str(d) for d in digits)
  assert text[-1 if reverse else 0] != "0"  # no leading zeros
  return int(text[::-1] if reverse else text)


@pytest.mark.parametrize("task,op,reverse,length_of", [
    ("addition", lambda a, b: a + b, False, lambda d: 3 * d + 4),
    ("reversed_addition", lambda a, b: a + b, True, lambda d: 3 * d + 4),
    ("multiplication", lambda a, b: a * b, False, lambda d: 5 * d + 4),
])
@EXAMPLES
@given(seed=seeds, index=indices, digits=st.integers(1, 18), data=st.data())
def test_arithmetic_answers_are_correct(task, op, reverse, length_of, seed, index, digits, data):
  min_digits = data.draw(st.integers(0, digits))
  _, tokens, mask = item(task, seed, index, digits=digits, min_digits=min_digits)
  assert len(tokens) == length_of(digits)
  plus, equals = tokens.index(10), tokens.index(11)
  a_digits, b_digits = tokens[:plus], tokens[plus + 1:equals]
  for ds in (a_digits, b_digits):
    assert (min_digits or digits) <= len(ds) <= digits and all(0 <= d <= 9 for d in ds)
  stop = tokens.index(30)
  answer = [t - 20 for t in tokens[equals + 1:stop]]
  assert all(0 <= d <= 9 for d in answer)
  a, b = parse_number(a_digits, reverse), parse_number(b_digits, reverse)
  assert parse_number(answer, reverse) == op(a, b)
  assert tokens[stop + 1:] == [12] * (len(tokens) - stop - 1)
  assert targets(mask) == list(range(equals + 1, stop + 1))


def test_arithmetic_defaults_follow_the_official_tasks():
  for task, digits in (("addition", 5), ("reversed_addition", 10), ("multiplication", 5)):
    tokens = make_procedural_source(task)[0]["tokens"].tolist()
    assert tokens.index(10) == digits and tokens.index(11) == 2 * digits + 1


@EXAMPLES
@given(seed=seeds, index=indices, max_pairs=st.integers(1, 64))
def test_needle_answer_is_the_queried_value(seed, index, max_pairs):
  source, tokens, mask = item("needle", seed, index, max_pairs=max_pairs)
  assert len(tokens) == 2 * max_pairs + 3
  query_at = next(i for i, t in enumerate(tokens) if t >= 128 + max_pairs)
  m = query_at // 2
  assert query_at == 2 * m and 1 <= m <= max_pairs
  keys = [t - 128 for t in tokens[0:2 * m:2]]
  values = tokens[1:2 * m:2]
  assert len(set(keys)) == m and all(0 <= key < max_pairs for key in keys)
  assert all(1 <= v <= 127 for v in values)
  queried = tokens[query_at] - 128 - max_pairs
  assert tokens[query_at + 1] == dict(zip(keys, values))[queried]
  assert tokens[query_at + 2:] == [0] * (len(tokens) - query_at - 2)
  assert targets(mask) == [query_at + 1]


def test_needle_haystack_sizes_cover_the_range():
  source = make_procedural_source("needle", seed=4)
  sizes = {int(np.argmax(source[i]["loss_mask"])) // 2 for i in range(600)}
  assert sizes == set(range(1, 31))


# Config errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task,params,key", [
    ("sort", dict(length=0), "data.sources.sort.length"),
    ("sort", dict(vocab=255), "data.sources.sort.vocab"),
    ("set", dict(vocab=2), "data.sources.set.vocab"),
    ("union", dict(length=1), "data.sources.union.length"),
    ("stack", dict(length=2), "data.sources.stack.length"),
    ("identity", dict(length=4.0), "data.sources.identity.length"),
    ("dyck", dict(length=2047), "data.sources.dyck.length"),
    ("dyck", dict(k=129), "data.sources.dyck.k"),
    ("dyck", dict(p_open=1.5), "data.sources.dyck.p_open"),
    ("shuffled_dyck", dict(max_depth=0), "data.sources.shuffled_dyck.max_depth"),
    ("shuffled_dyck", dict(p_open=True), "data.sources.shuffled_dyck.p_open"),
    ("eca", dict(width=2), "data.sources.eca.width"),
    ("eca", dict(rule=256), "data.sources.eca.rule"),
    ("eca", dict(steps=0), "data.sources.eca.steps"),
    ("addition", dict(digits=19), "data.sources.addition.digits"),
    ("multiplication", dict(digits=3, min_digits=4), "data.sources.multiplication.min_digits"),
    ("needle", dict(max_pairs=65), "data.sources.needle.max_pairs"),
    ("needle", dict(k=3), "data.sources.needle.k"),
    ("dyck", dict(seed=-1), "data.sources.dyck.seed"),
    ("dyck", dict(num_items=0), "data.sources.dyck.num_items"),
])
def test_bad_params_name_their_key(task, params, key):
  kwargs = {name: params.pop(name) for name in ("seed", "num_items") if name in params}
  with pytest.raises(ConfigError) as info:
    make_procedural_source(task, **kwargs, **params)
  assert info.value.key == key and key in str(info.value)


def test_unknown_task_lists_the_known_ones():
  with pytest.raises(ConfigError) as info:
    make_procedural_source("dyk", seed=0)
  assert info.value.key == "data.sources.dyk.task"
  assert all(task in str(info.value) for task in PROCEDURAL_TASKS)


def test_config_key_names_the_source_section():
  with pytest.raises(ConfigError) as info:
    make_procedural_source("dyck", config_key="data.sources.warmup", k=0)
  assert info.value.key == "data.sources.warmup.k"


def test_direct_construction_is_validated_too():
  assert DyckSource().params == DyckParams()
  with pytest.raises(ConfigError) as info:
    DyckSource(DyckParams(k=0))
  assert info.value.key == "data.sources.dyck.k"
  with pytest.raises(ConfigError) as info:
    StackSource(SequenceParams(length=2), config_key="data.sources.s")
  assert info.value.key == "data.sources.s.length"
  with pytest.raises(ConfigError):
    DyckSource(SequenceParams())
