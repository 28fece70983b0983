"""lm-evaluation-harness model `ponder_jax`: a trained ponder-jax model behind lm-eval's `LM`.

Needs the optional extra `eval` (`pip install -c constraints.txt -e '.[eval]'`). Importing this
module registers the model; `ponder-lm-eval` is lm-eval's own command line with it registered,
the shipped local task definitions (lm_eval_tasks/) on the include path, and the Hugging Face
datasets library offline:

  ponder-lm-eval --model ponder_jax --model_args workdir=runs/demo,ponder_steps=1 \
      --tasks ponder_math_choice,ponder_shakespeare [--include_path DIR] [--limit N]

model_args: `workdir` (a trainer workdir or checkpoint) or `hf` (a Hugging Face directory or a
converter checkpoint), `ponder_steps` (default: as the run's trainer evaluated), `num_pauses`
(M_inf, appended to every context and prompt), `batch_size` (rows per call, default 64),
`max_gen_toks` (default 256).

The three request types go through the inference engine (ponder_jax/infer):
  loglikelihood           `Engine.score` of (context, continuation), tokenized as lm-eval's HF
                          model does (runner.encode_pair: bos + context, the continuation's ids
                          the tail of the pair's joint encoding); also what `ponder-eval`'s
                          choice tasks use, so both give the same acc / acc_norm
  loglikelihood_rolling   the text after bos in lm-eval's rolling windows of max_len tokens,
                          each scored with `Engine.score`, summed
  generate_until          `Engine.generate` (greedy unless do_sample with a temperature) from
                          bos + context, stopped at eos, cut at the first `until` string
"""

from __future__ import annotations

import os
import sys
from typing import Any

from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ponder_jax.eval import runner

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm_eval_tasks")


@register_model("ponder_jax")
class PonderJaxLM(LM):
  """See the module docstring."""

  def __init__(self, workdir: str = "", hf: str = "", ponder_steps: int | None = None,
               num_pauses: int = 0, batch_size: int | str = 64, max_gen_toks: int = 256,
               model: runner.EvalModel | None = None, **unused: Any):
    super().__init__()
    del unused  # lm-eval passes device, max_batch_size, ... for every model
    if model is None:
      path = workdir or hf
      if not path:
        raise ValueError("ponder_jax: model_args needs workdir=RUN or hf=DIR")
      model = runner.load_model(path, ponder_steps=ponder_steps)
    self.model = model
    self.num_pauses = int(num_pauses)
    # lm-eval's --batch_size may be 'auto'; a fixed batch keeps one compiled shape.
    self.batch_size = int(batch_size) if str(batch_size).isdigit() else 64
    self.max_gen_toks = int(max_gen_toks)

  @property
  def max_length(self) -> int:
    return self.model.max_len

  @property
  def eot_token_id(self) -> int:
    return self.model.vocab.eos_id

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    pairs = [runner.encode_pair(self.model.vocab, *request.args[:2]) for request in requests]
    scores = runner.loglikelihoods(self.model.engine, pairs, num_pauses=self.num_pauses,
                                   batch_size=self.batch_size, progress=sys.stderr.isatty(),
                                   desc="loglikelihood")
    return [(score.logprob, score.is_greedy) for score in scores]

  def loglikelihood_rolling(self, requests) -> list[float]:
    vocab = self.model.vocab
    pairs, owner = [], []
    for i, request in enumerate(requests):
      windows = lm_utils.get_rolling_token_windows(
          token_list=vocab.encode(request.args[0]), prefix_token=vocab.bos_id,
          max_seq_len=self.max_length - 1, context_len=1)
      for window in map(lm_utils.make_disjoint_window, windows):
        pairs.append(window)
        owner.append(i)
    scores = runner.loglikelihoods(self.model.engine, pairs, batch_size=self.batch_size,
                                   progress=sys.stderr.isatty(), desc="loglikelihood_rolling")
    totals = [0.0] * len(requests)
    for i, score in zip(owner, scores):
      totals[i] += score.logprob
    return totals

  def generate_until(self, requests) -> list[str]:
    # pylint: disable-next=import-outside-toplevel
    from ponder_jax.infer.generate import SamplingConfig
    vocab = self.model.vocab
    groups: dict[tuple, list[int]] = {}  # requests with the same generation settings
    settings = []
    for i, request in enumerate(requests):
      gen_kwargs = dict(request.args[1] or {})
      until = gen_kwargs.get("until") or []
      until = (until,) if isinstance(until, str) else tuple(until)
      sampling = SamplingConfig(
          temperature=float(gen_kwargs.get("temperature") or 0.0)
          if gen_kwargs.get("do_sample") else 0.0,
          top_k=int(gen_kwargs.get("top_k") or 0), top_p=float(gen_kwargs.get("top_p") or 1.0))
      max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
      room = self.max_length - self.num_pauses
      max_new = max(1, min(max_new, room - 1))
      settings.append((until, max_new, sampling))
      groups.setdefault((max_new, sampling), []).append(i)
    out = [""] * len(requests)
    for (max_new, sampling), members in groups.items():
      room = self.max_length - self.num_pauses - max_new
      prompts = [([vocab.bos_id] + vocab.encode(requests[i].args[0]))[-room:] for i in members]
      completions, _ = runner.generate(
          self.model.engine, prompts, max_new_tokens=max_new, stop_tokens=[vocab.eos_id],
          num_pauses=self.num_pauses, batch_size=self.batch_size, sampling=sampling,
          progress=sys.stderr.isatty(), desc="generate_until")
      for i, completion in zip(members, completions):
        text = vocab.decode([t for t in completion if t != vocab.eos_id])
        for stop in settings[i][0]:
          if stop and stop in text:
            text = text[:text.index(stop)]
        out[i] = text
    return out


def main() -> None:
  """`ponder-lm-eval`: lm-eval's command line with `ponder_jax` registered, offline, and the
  shipped task definitions on the include path."""
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  from lm_eval.__main__ import cli_evaluate  # pylint: disable=import-outside-toplevel
  if "--include_path" not in " ".join(sys.argv):
    sys.argv += ["--include_path", TASKS_DIR]
  cli_evaluate()
