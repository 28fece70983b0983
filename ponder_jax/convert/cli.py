"""`ponder-convert`: Hugging Face directory <-> this project's checkpoint.

  ponder-convert --from-hf HF_DIR --out CKPT_DIR [--weights-only] [--num-procedural N]
                 [--new-row-init mean|normal] [--new-row-std S] [--vocab-multiple M]
  ponder-convert --to-hf CKPT_DIR --out HF_DIR [--model-config JSON]
                 [--tokenizer DIR | --no-tokenizer] [--plain-backbone]

--from-hf writes the converter layout of checkpoint.py. With a tokenizer.json in HF_DIR (and no
--weights-only) it goes through `load_pretrained`: the project's reserved tokens are added and
the embedding tables grown; --weights-only keeps the weights exactly as they are. The ponder
settings of a pondering export come along.
--to-hf reads a converter checkpoint or a trainer checkpoint (workdir, checkpoints/ or step dir)
and writes config.json + model.safetensors, plus the tokenizer: the run's own (its data.vocab,
SentencePiece and byte vocabularies included), the one stored with a converter checkpoint, or
the one in --tokenizer (a directory with tokenizer.json). A model that ponders is written with
its pondering loop (modeling_ponder.py, loaded with trust_remote_code=True); --plain-backbone
writes its backbone alone and prints what that drops.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ponder_jax.config import ConfigError
from ponder_jax.convert import checkpoint, hf
from ponder_jax.data.vocab import TOKENIZER_FILE, load_hf_vocabulary


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ponder-convert", description=__doc__.split("\n\n")[0])
  direction = parser.add_mutually_exclusive_group(required=True)
  direction.add_argument("--from-hf", metavar="HF_DIR", help="Hugging Face model directory")
  direction.add_argument("--to-hf", metavar="CKPT_DIR",
                         help="converter or trainer checkpoint directory")
  parser.add_argument("--out", required=True, help="directory to write")
  parser.add_argument("--weights-only", action="store_true",
                      help="--from-hf: import the weights exactly; no tokenizer, no new tokens")
  parser.add_argument("--num-procedural", type=int, default=0,
                      help="--from-hf: procedural symbols to add to the tokenizer")
  parser.add_argument("--new-row-init", choices=("mean", "normal"), default="mean",
                      help="--from-hf: how rows of new tokens start")
  parser.add_argument("--new-row-std", type=float, default=0.02,
                      help="--from-hf: std of new rows with --new-row-init=normal")
  parser.add_argument("--vocab-multiple", type=int, default=128,
                      help="--from-hf: grown vocabulary tables round up to this many rows")
  parser.add_argument("--model-config", metavar="JSON",
                      help="--to-hf: model config to use instead of the checkpoint's")
  tokenizer = parser.add_mutually_exclusive_group()
  tokenizer.add_argument("--tokenizer", metavar="DIR",
                         help="--to-hf: tokenizer directory to export instead of the run's own")
  tokenizer.add_argument("--no-tokenizer", action="store_true",
                         help="--to-hf: write no tokenizer")
  parser.add_argument("--plain-backbone", action="store_true",
                      help="--to-hf: write a pondering model as its plain backbone, which "
                           "computes a different function (what is dropped is printed)")
  return parser


def _from_hf(args: argparse.Namespace) -> None:
  has_tokenizer = os.path.isfile(os.path.join(args.from_hf, TOKENIZER_FILE))
  if args.weights_only or not has_tokenizer:
    cfg, params = hf.import_hf(args.from_hf)
    vocabulary = None
  else:
    cfg, params, vocabulary = hf.load_pretrained(
        args.from_hf, num_procedural=args.num_procedural, new_row_init=args.new_row_init,
        new_row_std=args.new_row_std, vocab_multiple=args.vocab_multiple)
  ponder = hf.read_ponder_config(args.from_hf)
  checkpoint.save(args.out, cfg, params, vocabulary, ponder=ponder)
  added = f", tokenizer with {vocabulary.vocab_size} ids" if vocabulary else ""
  print(f"ponder-convert: {_describe(cfg, ponder)} ({cfg.n_layers} layers, d_model "
        f"{cfg.d_model}, vocab {cfg.vocab_size}{added}) -> {os.path.abspath(args.out)}")


def _describe(cfg, ponder) -> str:
  if not hf.ponders(ponder):
    return f"{cfg.family} model"
  switches = [name for name in ("scale_embeds", "multiply_initial") if getattr(ponder, name)]
  switches += [f"top_k={ponder.top_k}"] if ponder.top_k else []
  return (f"pondering {cfg.family} model (s = {ponder.steps}"
          f"{', ' + ', '.join(switches) if switches else ''})")


def _to_hf(args: argparse.Namespace) -> None:
  cfg, params, vocabulary, ponder = checkpoint.load(
      args.to_hf, model_config=args.model_config,
      vocabulary=not (args.tokenizer or args.no_tokenizer))
  if args.tokenizer:
    vocabulary = load_hf_vocabulary(args.tokenizer, add_tokens=False)
  lost = hf.export_hf(cfg, params, args.out, ponder=ponder, vocabulary=vocabulary,
                      plain_backbone=args.plain_backbone)
  out = os.path.abspath(args.out)
  if lost:
    print(f"ponder-convert: --plain-backbone: {out} holds the plain {cfg.family} backbone of a "
          "pondering model and computes a different function; dropped:\n  "
          + "\n  ".join(lost), file=sys.stderr)
    what = f"{cfg.family} backbone"
  else:
    what = _describe(cfg, ponder)
  added = f" + tokenizer ({vocabulary.vocab_size} ids)" if vocabulary else ", no tokenizer"
  print(f"ponder-convert: {what}{added} -> {out}")


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    if args.from_hf:
      _from_hf(args)
    else:
      _to_hf(args)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    print(f"ponder-convert: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
