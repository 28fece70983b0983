"""`ponder-generate`: continue prompts with a trained model.

  ponder-generate --model runs/demo --prompt "ROMEO:" [--prompt ...]
  ponder-generate --model HF_DIR --prompts prompts.jsonl --out completions.jsonl
      [--max-new-tokens 64] [--temperature 0] [--top-k 0] [--top-p 1] [--seed 0]
      [--ponder-steps S] [--num-pauses M] [--no-stop] [--no-bos] [--field prompt]

--model is a trainer workdir (its newest checkpoint), a checkpoint directory or a Hugging Face
model directory (infer/load.py). Prompts come from --prompt (repeatable) or --prompts (JSONL
objects with a text field, default 'prompt', or plain text with one prompt per line). A prompt is
`bos text` (as documents are in training; --no-bos drops the bos) and decoding stops at eos
(--no-stop: runs to --max-new-tokens). Each completion is printed; with --out every row is also
written as JSON: prompt, completion, the token ids and their summed log-probs (under the model and
under the sampling distribution).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from ponder_jax.config import ConfigError


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ponder-generate", description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True,
                      help="trainer workdir, checkpoint directory or Hugging Face directory")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--prompt", action="append", help="a prompt text (repeatable)")
  source.add_argument("--prompts", metavar="FILE", help="JSONL (or .txt, one per line) prompts")
  parser.add_argument("--field", default="prompt", help="--prompts JSONL: the text field")
  parser.add_argument("--out", metavar="FILE", help="write one JSON object per prompt here")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--top-k", type=int, default=0, help="0: off")
  parser.add_argument("--top-p", type=float, default=1.0, help="1: off")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--ponder-steps", type=int, default=None,
                      help="s at inference (default: the trained ponder.steps)")
  parser.add_argument("--num-pauses", type=int, default=0,
                      help="M_inf <pause> tokens appended to every prompt")
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--no-stop", action="store_true", help="do not stop at eos")
  parser.add_argument("--no-bos", action="store_true", help="do not start prompts with bos")
  return parser


def read_prompts(path: str, field: str) -> list[str]:
  """Prompt texts of a JSONL file (objects with `field`; errors name file and line) or of a
  text file (one per non-empty line)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--prompts {path}: no such file")
  with open(path, encoding="utf-8") as f:
    lines = [(i, line.rstrip("\n")) for i, line in enumerate(f, 1) if line.strip()]
  if not path.endswith(".jsonl"):
    return [line for _, line in lines]
  texts = []
  for line_no, line in lines:
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
      raise ValueError(f"{path}:{line_no}: expected an object with a string field '{field}'")
    texts.append(record[field])
  return texts


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    texts = args.prompt or read_prompts(args.prompts, args.field)
    if not texts:
      raise ValueError(f"--prompts {args.prompts}: holds no prompt")
    from ponder_jax import xla_flags  # pylint: disable=import-outside-toplevel
    xla_flags.apply()
    # pylint: disable-next=import-outside-toplevel
    from ponder_jax.infer import SamplingConfig, load
    loaded = load.load(args.model, ponder_steps=args.ponder_steps)
    engine, vocab = loaded.engine, loaded.vocab
    bos = [] if args.no_bos else [vocab.bos_id]
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    rows = []
    for start in range(0, len(texts), args.batch_size):
      batch = texts[start:start + args.batch_size]
      out = engine.generate([bos + vocab.encode(t) for t in batch],
                            max_new_tokens=args.max_new_tokens, sampling=sampling,
                            seed=args.seed + start, num_pauses=args.num_pauses,
                            stop_tokens=[] if args.no_stop else [vocab.eos_id])
      for i, (text, ids) in enumerate(zip(batch, out.completions())):
        stopped = bool(ids) and ids[-1] == vocab.eos_id and not args.no_stop
        shown = ids[:-1] if stopped else ids
        rows.append({"prompt": text, "completion": vocab.decode(shown), "tokens": ids,
                     "stopped": stopped,
                     "model_logprob": float(out.model_logprobs[i].sum()),
                     "sampling_logprob": float(out.logprobs[i].sum())})
        print(f"{text}\033[1m{rows[-1]['completion']}\033[0m" if sys.stdout.isatty()
              else f"{text}{rows[-1]['completion']}")
        print("-" * 40)
  except (ConfigError, ValueError, FileNotFoundError) as e:
    print(f"ponder-generate: {e}", file=sys.stderr)
    sys.exit(2)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} completions to {args.out}")


if __name__ == "__main__":
  main()
