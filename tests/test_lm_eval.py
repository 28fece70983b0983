"""The lm-evaluation-harness adapter (ponder_jax/eval/lm_eval_adapter.py), run through lm-eval's
own evaluator on local JSONL tasks, offline: the same numbers as ponder-eval on the same task;
rolling log-likelihoods and generate_until against the engine; model_args loading."""

import json
import os
import tempfile
import textwrap

import numpy as np
import pytest

# The datasets library reads these when it is imported: offline, and a cache of our own.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="ponder_hf_datasets_"))

lm_eval = pytest.importorskip("lm_eval", reason="the optional extra 'eval' is not installed")

# pylint: disable=wrong-import-position
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from ponder_jax.config import PonderConfig  # noqa: E402
from ponder_jax.data.vocab import ByteVocabulary  # noqa: E402
from ponder_jax.eval import lm_eval_adapter, runner, tasks  # noqa: E402
from ponder_jax.infer import Engine  # noqa: E402
from tests.helpers import init_params, tiny_config  # noqa: E402

VOCAB = ByteVocabulary()
TASK_YAML = textwrap.dedent("""\
    task: local_choice
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: {path}
    test_split: test
    output_type: multiple_choice
    doc_to_text: question
    doc_to_choice: options
    doc_to_target: label
    metric_list:
      - metric: acc
        aggregation: mean
        higher_is_better: true
      - metric: acc_norm
        aggregation: mean
        higher_is_better: true
    metadata:
      version: 1.0
    """)


@pytest.fixture(scope="module")
def model():
  net, params = init_params(tiny_config("neox", vocab_size=VOCAB.vocab_size, max_len=256),
                            ponder_passes=2)
  engine = Engine(net, params, PonderConfig(steps=1), pad_id=VOCAB.pad_id,
                  pause_id=VOCAB.pause_id, vocab_size=VOCAB.vocab_size)
  return runner.EvalModel(engine, VOCAB, source="tiny")


def _evaluate(lm, task, include_path, **kwargs):
  manager = TaskManager(include_path=include_path, include_defaults=False)
  return lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager,
                                 bootstrap_iters=0, log_samples=True, **kwargs)


def _lm_eval_logprobs(results, task):
  docs = sorted(results["samples"][task], key=lambda s: s["doc_id"])
  return [[float(resp[0][0]) for resp in doc["resps"]] for doc in docs]


def test_adapter_in_lm_evals_evaluator_equals_ponder_eval_on_a_local_jsonl_task(model,
                                                                                  tmp_path):
  rng = np.random.default_rng(0)
  records = []
  for i in range(12):
    options = ["".join(rng.choice(list("abcdefgh "), size=rng.integers(1, 9)).tolist()).strip()
               or "z" for _ in range(3)]
    records.append({"question": f"Question {i}: which one?", "options": options,
                    "label": int(rng.integers(3))})
  data = tmp_path / "local.jsonl"
  data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
  tasks_dir = tmp_path / "tasks"
  tasks_dir.mkdir()
  (tasks_dir / "local_choice.yaml").write_text(TASK_YAML.format(path=data))
  lm = lm_eval_adapter.PonderJaxLM(model=model, batch_size=8)
  theirs = _evaluate(lm, "local_choice", str(tasks_dir))
  spec = tasks.choice_spec("local", str(data), context_field="question",
                           choices_field="options", gold_field="label")
  ours = runner.evaluate(model, [spec], batch_size=8, progress=False)
  assert not ours.errors
  result = ours.tasks["local"]
  assert [s["logprobs"] for s in result.samples] == _lm_eval_logprobs(theirs, "local_choice")
  metrics = theirs["results"]["local_choice"]
  assert metrics["acc,none"] == result.metrics["acc"]
  assert metrics["acc_norm,none"] == result.metrics["acc_norm"]


def test_shipped_task_with_pauses_equals_ponder_eval(model):
  lm = lm_eval_adapter.PonderJaxLM(model=model, num_pauses=2, batch_size=8)
  theirs = _evaluate(lm, "ponder_math_choice", lm_eval_adapter.TASKS_DIR, limit=6)
  ours = runner.evaluate(model, ["math_choice@2"], items=6, batch_size=8, progress=False)
  result = ours.tasks["math_choice@2"]
  assert [s["logprobs"] for s in result.samples] == _lm_eval_logprobs(theirs,
                                                                      "ponder_math_choice")
  assert theirs["results"]["ponder_math_choice"]["acc,none"] == result.metrics["acc"]
  assert theirs["results"]["ponder_math_choice"]["acc_norm,none"] == result.metrics["acc_norm"]


def _instance(kind, *args):
  return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_rolling_loglikelihood_scores_every_token_once(model):
  lm = lm_eval_adapter.PonderJaxLM(model=model, batch_size=4)
  engine = model.engine
  short = "To be, or not to be, that is the question."
  (got,) = lm.loglikelihood_rolling([_instance("loglikelihood_rolling", short)])
  (want,) = engine.score([[VOCAB.bos_id]], [VOCAB.encode(short)])
  assert got == pytest.approx(want.logprob, abs=1e-4)
  # Longer than max_len: windows whose continuations tile the text, each scored after the
  # text that precedes it in the document.
  rng = np.random.default_rng(1)
  long_text = "".join(rng.choice(list("abcdefghij klmnop"), size=600).tolist())
  ids = [VOCAB.bos_id] + VOCAB.encode(long_text)
  calls = []
  score = engine.score
  engine.score = lambda c, x, **kw: calls.append((c, x)) or score(c, x, **kw)
  try:
    lm.loglikelihood_rolling([_instance("loglikelihood_rolling", long_text)])
  finally:
    del engine.score
  windows = {(tuple(c), tuple(x)) for cs, xs in calls for c, x in zip(cs, xs)}
  assert len(windows) > 1
  spans = []
  for context, continuation in windows:
    assert len(context) + len(continuation) <= model.max_len
    row = list(context + continuation)
    (start,) = [s for s in range(len(ids)) if ids[s:s + len(row)] == row]
    spans.append((start + len(context), start + len(row)))
  spans.sort()
  assert spans[0][0] == 1 and spans[-1][1] == len(ids)
  assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_generate_until_is_the_engines_greedy_text_cut_at_the_stop_string(model):
  lm = lm_eval_adapter.PonderJaxLM(model=model)
  requests = [_instance("generate_until", "To be", {"until": ["e"], "max_gen_toks": 12}),
              _instance("generate_until", "Hamlet", {"until": [], "max_gen_toks": 12})]
  got = lm.generate_until(requests)
  generation = model.engine.generate([[VOCAB.bos_id] + VOCAB.encode(r.args[0]) for r in requests],
                                     max_new_tokens=12, stop_tokens=[VOCAB.eos_id])
  for text, request, completion in zip(got, requests, generation.completions()):
    full = VOCAB.decode([t for t in completion if t != VOCAB.eos_id])
    until = request.args[1]["until"]
    assert text == (full[:full.index(until[0])] if until and until[0] in full else full)


def test_model_args_need_a_model():
  with pytest.raises(ValueError, match="workdir=RUN or hf=DIR"):
    lm_eval_adapter.PonderJaxLM.create_from_arg_string("ponder_steps=1")
