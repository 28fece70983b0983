"""Evaluation (ponder_jax/eval): multiple choice against hand-computed acc / acc_norm, exact match
of an oracle and a shifted oracle with a per-length breakdown that adds up, perplexity equal to
exp of the trainer's eval loss, pause variants that differ only by the pauses, train.eval_tasks
in training, the ponder-eval CLI (outputs, a sweep table, bad input) and the shipped sets."""

import json
import math
import os
import shutil
import types

import jax
import numpy as np
import pytest

from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.data import pipeline
from ponder_jax.data.sources import source_config
from ponder_jax.data.vocab import ByteVocabulary
from ponder_jax.eval import cli, runner, sets, tasks
from ponder_jax.experiment import Experiment
from ponder_jax.infer import Engine, Generation, Score
from ponder_jax.sweep import load_config
from ponder_jax.train.metrics import read_metrics
from ponder_jax.train.trainer import Trainer
from tests.helpers import init_params, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = ByteVocabulary()


# Stub engines: known outputs, no model ------------------------------------------------------


class _FixedScores:
  """`score` with a fixed log-likelihood per continuation text."""

  def __init__(self, logprobs: dict[str, float]):
    self.logprobs, self.contexts = logprobs, []
    self.model = types.SimpleNamespace(cfg=types.SimpleNamespace(max_len=512))

  def score(self, contexts, continuations, *, num_pauses=0, batch_size=16):
    del batch_size
    self.contexts += [list(c) for c in contexts]
    return [Score(self.logprobs[VOCAB.decode(x).strip()], [], False, len(c) + num_pauses)
            for c, x in zip(contexts, continuations)]


class _Oracle:
  """`generate` that answers every prompt with the generator's answer (+ `shift` per token);
  `score` calls an answer greedy iff it is that one."""

  def __init__(self, answers: dict[tuple, list[int]], shift: int = 0, max_len: int = 512):
    self.answers, self.shift = answers, shift
    self.model = types.SimpleNamespace(cfg=types.SimpleNamespace(max_len=max_len))

  def score(self, contexts, continuations, *, num_pauses=0, batch_size=16):
    del batch_size
    return [Score(0.0, [], list(x) == [t + self.shift for t in self.answers[tuple(c)]],
                  len(c) + num_pauses) for c, x in zip(contexts, continuations)]

  def generate(self, prompts, *, max_new_tokens, stop_tokens=(), num_pauses=0):
    del stop_tokens
    rows = [([t + self.shift for t in self.answers[tuple(p)]] + [0] * max_new_tokens)
            [:max_new_tokens] for p in prompts]
    tokens = np.asarray(rows, np.int32)
    return Generation(prompts=[list(p) + [VOCAB.pause_id] * num_pauses for p in prompts],
                      tokens=tokens, lengths=np.full(len(rows), max_new_tokens),
                      logprobs=np.zeros(tokens.shape), model_logprobs=np.zeros(tokens.shape))


def test_multiple_choice_acc_and_acc_norm_equal_hand_computed_values(tmp_path):
  path = tmp_path / "choices.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in [
      # log p: a -1, bbbb -2, cc -3; per character -1, -0.5, -1.5: acc picks 0, acc_norm 1
      {"q": "one", "options": ["a", "bbbb", "cc"], "answer": 1},
      # d -0.5, eeeeee -4 (per char -0.67): both pick 0, the gold
      {"q": "two", "options": ["d", "eeeeee"], "answer": 0},
      # f -6, gg -5, hhhhhhhh -7 (-6, -2.5, -0.875): acc picks 1 (gold), acc_norm 2
      {"q": "three", "options": ["f", "gg", "hhhhhhhh"], "answer": "gg"},
  ]) + "\n")
  engine = _FixedScores({"a": -1.0, "bbbb": -2.0, "cc": -3.0, "d": -0.5, "eeeeee": -4.0,
                         "f": -6.0, "gg": -5.0, "hhhhhhhh": -7.0})
  spec = tasks.choice_spec("hand", str(path), context_field="q", choices_field="options",
                           gold_field="answer")
  result = runner._Runner(runner.EvalModel(engine, VOCAB), items=0, batch_size=16,
                          progress=False).task(spec)
  assert result.metrics["acc"] == pytest.approx(2 / 3)
  assert result.metrics["acc_norm"] == pytest.approx(2 / 3)
  assert [s["pred"] for s in result.samples] == [0, 0, 1]
  assert [s["pred_norm"] for s in result.samples] == [1, 0, 2]
  # Every context is bos + the text; the choice follows the default delimiter ' '.
  assert sorted(map(tuple, engine.contexts)) == sorted(
      [tuple([VOCAB.bos_id] + VOCAB.encode(q)) for q, n in (("one", 3), ("two", 2),
                                                              ("three", 3)) for _ in range(n)])


@pytest.mark.parametrize("task, lengths", [("reverse", (4, 8, 16)), ("addition", (2, 3)),
                                           ("needle", (1, 5, 20)), ("dyck", (16, 32)),
                                           ("shuffled_dyck", (16, 32)), ("eca", (1, 2))])
def test_exact_match_of_an_oracle_is_one_and_of_a_shifted_oracle_zero(task, lengths):
  params = tasks.REGISTRY[task].options["params"]
  items = sets.procedural_items(task, params=params, lengths=lengths, items=5)
  answers = {tuple(VOCAB.procedural_id(np.asarray(it.prompt)).tolist()):
             VOCAB.procedural_id(np.asarray(it.answer)).tolist() for it in items}
  spec = tasks.REGISTRY[task].with_options(lengths=lengths, items=5)
  for shift, expected in ((0, 1.0), (1, 0.0)):
    model = runner.EvalModel(_Oracle(answers, shift), VOCAB)
    result = runner._Runner(model, items=0, batch_size=4, progress=False).task(spec)
    assert result.metrics["exact_match"] == expected
    breakdown = result.breakdown
    assert sorted(map(int, breakdown)) == sorted(lengths)
    assert sum(row["items"] for row in breakdown.values()) == result.metrics["items"] == 5 * len(
        lengths)
    assert all(row["exact_match"] == expected for row in breakdown.values())
    assert len(result.samples) == result.metrics["items"]
  if task == "shuffled_dyck":  # any order of the closes counts
    flipped = {p: a[::-1] for p, a in answers.items()}
    result = runner._Runner(runner.EvalModel(_Oracle(flipped), VOCAB), items=0, batch_size=4,
                            progress=False).task(spec)
    assert result.metrics["exact_match"] == 1.0


def test_items_that_fill_the_context_are_checked_teacher_forced(tmp_path):
  """A dyck word as long as the model's context: a long prompt leaves no room for the longest
  answer in one generate call, so such items are checked teacher-forced (`is_greedy`); an item
  matched as a multiset (any order) cannot be, and is skipped."""
  params = {"k": 4}
  items = sets.procedural_items("dyck", params=params, lengths=(32,), items=8)
  answers = {tuple(VOCAB.procedural_id(np.asarray(it.prompt)).tolist()):
             VOCAB.procedural_id(np.asarray(it.answer)).tolist() for it in items}
  spec = tasks.REGISTRY["dyck"].with_options(params=params, lengths=(32,), items=8)
  # At 32 tokens most items need forcing, so all are forced; at 37 two of eight do.
  for max_len, methods in ((32, {"teacher-forced"}), (37, {"generated", "teacher-forced"})):
    for shift, expected in ((0, 1.0), (1, 0.0)):
      model = runner.EvalModel(_Oracle(answers, shift, max_len=max_len), VOCAB)
      result = runner._Runner(model, items=0, batch_size=4, progress=False).task(spec)
      assert result.metrics["exact_match"] == expected
      assert result.metrics["items"] == 8 and result.metrics["teacher_forced"] > 0
      assert {s["method"] for s in result.samples} == methods
  # Two multiset items that each fit 16 tokens but not one call (12 + 10 > 16).
  path = tmp_path / "closes.jsonl"
  sets.write_procedural_set(str(path), "shuffled_dyck", {"k": 4}, [
      sets.ProceduralItem((0, 1, 2, 3), (4, 5, 6, 7, 4, 5, 6, 7, 4, 5), 4, "multiset"),
      sets.ProceduralItem((0,) * 12, (4, 4), 12, "multiset")])
  answers = {tuple(VOCAB.procedural_id(np.asarray(p)).tolist()):
             VOCAB.procedural_id(np.asarray(a)[::-1]).tolist()
             for p, a in (((0, 1, 2, 3), (4, 5, 6, 7, 4, 5, 6, 7, 4, 5)), ((0,) * 12, (4, 4)))}
  model = runner.EvalModel(_Oracle(answers, max_len=16), VOCAB)
  result = runner._Runner(model, items=0, batch_size=4, progress=False).task(
      tasks.TaskSpec("closes", "procedural", {"path": str(path), "items": 0}))
  assert result.metrics == {"exact_match": 1.0, "items": 1, "skipped": 1, "teacher_forced": 0}
  assert result.breakdown == {"4": {"exact_match": 1.0, "items": 1, "skipped": 0},
                              "12": {"exact_match": None, "items": 0, "skipped": 1}}


def test_a_breakdown_with_mixed_outcomes_adds_up():
  items = sets.procedural_items("sort", params={}, lengths=(4, 8), items=6)
  answers = {}
  for i, it in enumerate(items):  # every third answer wrong
    answer = VOCAB.procedural_id(np.asarray(it.answer)).tolist()
    answers[tuple(VOCAB.procedural_id(np.asarray(it.prompt)).tolist())] = (
        [a + 1 for a in answer] if i % 3 == 0 else answer)
  spec = tasks.REGISTRY["sort"].with_options(lengths=(4, 8), items=6)
  result = runner._Runner(runner.EvalModel(_Oracle(answers), VOCAB), items=0, batch_size=5,
                          progress=False).task(spec)
  rows = result.breakdown.values()
  assert sum(r["items"] for r in rows) == 12
  weighted = sum(r["exact_match"] * r["items"] for r in rows) / 12
  assert weighted == pytest.approx(result.metrics["exact_match"]) == pytest.approx(8 / 12)


# A real tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
  model, params = init_params(tiny_config("neox", vocab_size=VOCAB.vocab_size, max_len=256),
                              ponder_passes=2)
  return Engine(model, params, PonderConfig(steps=1), pad_id=VOCAB.pad_id,
                pause_id=VOCAB.pause_id, vocab_size=VOCAB.vocab_size)


def test_pause_variants_differ_from_no_pauses_only_by_the_pauses(engine, tmp_path):
  path = tmp_path / "mc.jsonl"
  path.write_text('{"query": "2+2=", "choices": ["4", "5"], "gold": 0}\n')
  model = runner.EvalModel(engine, VOCAB)
  calls = []
  score = engine.score
  engine.score = lambda c, x, **kw: calls.append((c, x, kw)) or score(c, x, **kw)
  try:
    results = runner.evaluate(model, ["reverse", "reverse@3", "math_direct", "math_direct@3",
                                      f"choice:{path}", f"choice:{path}@3"],
                              items=2, batch_size=8, progress=False)
  finally:
    del engine.score
  assert not results.errors
  for name in ("reverse", "math_direct"):
    plain, paused = results.tasks[name].samples, results.tasks[f"{name}@3"].samples
    assert len(plain) == len(paused) > 0
    for a, b in zip(plain, paused):
      assert b["prompt"] == a["prompt"] + [VOCAB.pause_id] * 3
      assert VOCAB.pause_id not in a["prompt"]
  # Scoring gets the same pairs; the engine appends the pauses to each context.
  (c0, x0, kw0), (c3, x3, kw3) = calls
  assert (c0, x0) == (c3, x3) and kw0["num_pauses"] == 0 and kw3["num_pauses"] == 3


# A trained tiny run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Three steps of a tiny pondering model on text, math and a procedural task, with eval
  tasks in training (TensorBoard on)."""
  workdir = str(tmp_path_factory.mktemp("eval") / "run")
  config = load_config(os.path.join(ROOT, "tests", "configs", "tiny.py"))
  config.ponder.update(dict(steps=1, scale_embeds=True))
  config.model.max_len = 128
  config.data.sources.math = source_config("math", thoughts=True, train_size=64,
                                           validation_size=32, test_size=32)
  config.data.sources.rev = source_config("procedural", task="reverse", length=4, vocab=10,
                                          eval_items=16)
  config.data.phases = dict(main=pipeline.phase_config(0, shakespeare=1.0, math=1.0, rev=1.0))
  config.train.update(dict(eval_tasks="math_choice,reverse@2", eval_items=2, eval_every=3))
  config.metrics.tensorboard = True
  config.mesh.ici.data = 1
  Trainer(Experiment.from_config(config), workdir, devices=jax.devices()[:1]).run()
  return workdir


def test_perplexity_equals_exp_of_the_trainers_eval_loss(run):
  model = runner.load_model(run)
  results = runner.evaluate(model, ["ppl"], progress=False)
  assert not results.errors
  evals = [r for r in read_metrics(run) if "eval/math/loss" in r][-1]
  assert sorted(results.tasks) == ["ppl:math", "ppl:rev", "ppl:shakespeare"]
  for source in ("math", "rev", "shakespeare"):
    metrics = results.tasks[f"ppl:{source}"].metrics
    assert metrics["perplexity"] == pytest.approx(math.exp(evals[f"eval/{source}/loss"]),
                                                  rel=1e-5)
  # Byte vocabulary: one byte per text target, so bits per byte is the loss over the byte
  # targets in bits; the procedural source has no text.
  batches = pipeline.make_eval_iterators(model.data, VOCAB, global_batch_size=4,
                                         num_batches=model.eval_batches)["shakespeare"]
  byte_targets = sum(int(((b["tokens"][:, 1:] >= 265) & (b["segment_ids"][:, 1:] ==
                                                         b["segment_ids"][:, :-1])
                          & (b["segment_ids"][:, 1:] > 0)).sum()) for b in batches)
  shakespeare = results.tasks["ppl:shakespeare"].metrics
  assert shakespeare["bytes"] == byte_targets
  assert shakespeare["bits_per_byte"] == pytest.approx(
      shakespeare["loss"] * shakespeare["tokens"] / math.log(2) / byte_targets)
  assert results.tasks["ppl:rev"].metrics["bits_per_byte"] is None


def test_eval_tasks_run_in_training_into_jsonl_and_tensorboard(run):
  rows = [r for r in read_metrics(run) if "eval_tasks/math_choice/acc" in r]
  assert [r["step"] for r in rows] == [3]
  row = rows[0]
  assert row["eval_tasks/math_choice/items"] == 2
  assert row["eval_tasks/reverse@2/items"] == 4  # 2 per length: the run's 4 and 8
  assert 0.0 <= row["eval_tasks/reverse@2/exact_match"] <= 1.0
  assert any(name.startswith("events") for name in os.listdir(os.path.join(run, "tb")))


def test_train_eval_tasks_are_validated_at_start():
  config = load_config(os.path.join(ROOT, "tests", "configs", "tiny.py"))
  config.train.eval_tasks = "math_direct,no_such_task"
  with pytest.raises(ConfigError, match=r"train.eval_tasks.*no_such_task.*unknown task"):
    Experiment.from_config(config)
  config.train.eval_tasks = "ppl@3"
  with pytest.raises(ConfigError, match="no prompt to append pauses"):
    Experiment.from_config(config)


def test_cli_writes_results_table_and_plots_and_reports_bad_input(run, tmp_path, capsys):
  bad_json = tmp_path / "bad.jsonl"
  bad_json.write_text('{"query": "a", "choices": ["x", "y"], "gold": 0}\n{"query": \n')
  bad_gold = tmp_path / "gold.jsonl"
  bad_gold.write_text('{"query": "a", "choices": ["x", "y"], "gold": 0}\n'
                      '{"query": "b", "choices": ["x", "y"], "gold": 2}\n')
  out = tmp_path / "out"
  status = cli.main([f"--workdir={run}", f"--out={out}", "--items=2", "--no-progress",
                     f"--tasks=math_choice,reverse,no_such_task,choice:{bad_json},"
                     f"choice:{bad_gold}"])
  printed = capsys.readouterr()
  assert status == 1
  data = json.loads((out / "results.json").read_text())
  assert data["ponder_steps"] == 1
  assert sorted(data["tasks"]) == ["math_choice", "reverse"]
  assert data["tasks"]["reverse"]["breakdown_key"] == "length"
  errors = data["errors"]
  assert "unknown task" in errors["no_such_task"]
  assert f"{bad_json}:2: not valid JSON" in errors[f"choice:{bad_json}"]
  assert f"{bad_gold}:2: gold index 2 is out of range for 2 choices" in errors[
      f"choice:{bad_gold}"]
  for name in ("results.md", "tasks.png", "length.png", "samples/reverse.jsonl"):
    assert (out / name).is_file(), name
  assert "| math_choice | acc |" in printed.out and "| reverse | exact_match |" in printed.out
  assert "some tasks failed" in printed.err
  # The same task through the CLI and through the library: the same numbers.
  model = runner.load_model(run)
  direct = runner.evaluate(model, ["math_choice"], items=2, progress=False)
  assert direct.tasks["math_choice"].metrics == data["tasks"]["math_choice"]["metrics"]


def test_cli_sweep_writes_one_table_across_runs(run, tmp_path, capsys):
  sweep_dir = tmp_path / "sweep"
  for name in ("steps=1", "steps=1_copy"):
    shutil.copytree(run, sweep_dir / name, ignore=shutil.ignore_patterns("eval", "tb"))
  (sweep_dir / "not_a_run").mkdir()
  status = cli.main([f"--sweep={sweep_dir}", "--tasks=math_choice", "--items=2",
                     "--no-progress"])
  assert status == 0
  rows = json.loads((sweep_dir / "eval_summary.json").read_text())
  assert [r["run"] for r in rows] == ["steps=1", "steps=1_copy"]
  assert rows[0]["math_choice/acc"] == rows[1]["math_choice/acc"]
  table = (sweep_dir / "eval_summary.md").read_text()
  assert "| run | math_choice/acc | math_choice/acc_norm | failed |" in table
  assert (sweep_dir / "steps=1" / "eval" / "results.json").is_file()
  assert "eval_summary.md" in capsys.readouterr().out


def test_task_names_and_pause_lists():
  assert tasks.resolve("needle@10").num_pauses == 10
  assert tasks.resolve("choice:x.jsonl").options["path"] == "x.jsonl"
  with pytest.raises(ConfigError, match="number of pauses"):
    tasks.resolve("reverse@x")
  assert cli.with_pauses(["ppl", "reverse", "math_direct@2"], "0,5") == [
      "ppl", "reverse", "reverse@5", "math_direct@2"]
  with pytest.raises(ConfigError, match="pauses"):
    cli.with_pauses(["reverse"], "1,a")


def test_fixed_shape_chunks_share_one_width():
  lengths = [3, 9, 4, 1, 7, 2, 5]
  chunks = runner.fixed_shape_chunks(lengths, 3)
  assert all(len(chunk) == 3 and 1 in chunk for chunk in chunks)
  assert sorted({i for chunk in chunks for i in chunk}) == list(range(7))
  assert runner.fixed_shape_chunks(lengths, 10) == [list(range(7))]


def test_width_groups_split_only_where_padding_halves():
  assert runner.width_groups([70, 75, 10, 12, 9, 11, 14, 13]) == [[2, 3, 4, 5, 6, 7], [0, 1]]
  assert runner.width_groups([70, 75, 60, 66]) == [[0, 1, 2, 3]]
  assert runner.width_groups([5]) == [[0]]


def test_shipped_sets_are_what_the_script_writes(tmp_path):
  for path in sets.write_shipped_sets(str(tmp_path)):
    shipped = os.path.join(ROOT, "data", "eval", os.path.relpath(path, tmp_path))
    with open(path, "rb") as fresh, open(shipped, "rb") as committed:
      assert fresh.read() == committed.read(), shipped
  task, items = sets.read_procedural_set(os.path.join(ROOT, "data", "eval", "needle.jsonl"))
  assert task == "needle" and sorted({it.length for it in items}) == list(tasks.HAYSTACK_SIZES)
  for it in items:  # the answer is the value stored under the queried key
    pairs = dict(zip(it.prompt[0:-1:2], it.prompt[1:-1:2]))
    assert pairs[it.prompt[-1] - 30] == it.answer[0]
  records = sets.read_choices(os.path.join(ROOT, "data", "eval", "math_choice.jsonl"))
  assert len(records) == sets.MATH_CHOICE_ITEMS
  assert all(len(set(r.choices)) == 4 for r in records)
