"""A Hugging Face `tokenizer.json` behind the project's `Vocabulary` interface.

`load_hf_vocabulary(dir)` reads `tokenizer.json` with the `tokenizers` library and adds the tokens
the project reserves, as special tokens the tokenizer never splits:
  `<pause>`, `<|START_OF_LATENT|>`, `<|END_OF_LATENT|>`, `<|PRIOR_PREFIX|>`,
  `<|POSTERIOR_PREFIX|>`, and optionally `num_procedural` symbols `<proc_0>`, `<proc_1>`, ...
(the names data/vocab.py gives them). Tokens the tokenizer already has (a directory this project
exported) keep their ids; new ones get the next free ids, in that order. `added_ids` lists the
new ids, so the model's embedding rows for them can be initialised (hf.py). As in the project's
own vocabularies, `encode` never produces a special id from text: `"<pause>"` typed in text is
ordinary characters; only ids make specials, and `decode` renders them by name.

pad / bos / eos come from the first of these that names them: `tokenizer_config.json`
(`pad_token`, `bos_token`, `eos_token`), `special_tokens_map.json`, then `config.json`
(`pad_token_id`, `bos_token_id`, `eos_token_id`; the first of a list). eos is required; bos
falls back to eos (GPT-2 style: one token separates documents) and pad falls back to eos
(padding is masked by segment id 0, so its id only fills slots).

`hf_vocabulary(vocab)` goes the other way for the project's own vocabularies (data/vocab.py), so
that an exported model carries the tokenizer it was trained with, every id the same:
  SentencePiece  a `tokenizers` BPE over the model's pieces, merges ranked by piece score (what
                 SentencePiece's BPE applies: the adjacent pair whose union scores highest),
                 spaces as U+2581, byte fallback to the `<0xXX>` pieces, nothing prepended
  byte           the same BPE with the 256 `<0xXX>` pieces and no merges: every character falls
                 back to its UTF-8 bytes
Ids 0 .. 264 (pad, bos, eos, unk, `<pause>`, the four thought tokens, the procedural symbols)
and the byte vocabulary's unused ids are special tokens named as `decode` renders them, never
produced from text (`split_special_tokens`, as the project's `encode`). `AutoTokenizer`'s
default `add_special_tokens=True` prepends `<bos>`, as every training document starts.
Decoding agrees with the project's on valid UTF-8 (anything `encode` produced); on byte ids that
are not (a generation cut mid-character) `tokenizers`' ByteFallback decoder renders the whole
run of byte ids as U+FFFD, where the project replaces only the invalid bytes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from ponder_jax.data.vocab import (BYTE_OFFSET, TEXT_OFFSET, ByteVocabulary,
                                   SentencePieceVocabulary, Vocabulary, procedural_piece)

PAUSE = "<pause>"
LATENT_TOKENS = {
    "sol": "<|START_OF_LATENT|>",
    "eol": "<|END_OF_LATENT|>",
    "prior": "<|PRIOR_PREFIX|>",
    "posterior": "<|POSTERIOR_PREFIX|>",
}
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
SPACE_MARK = "\u2581"  # SentencePiece's whitespace piece
# Text the project's vocabularies encode in a way a wrong conversion would not: compatibility
# characters (NFKC would change them), runs of spaces, tabs, SentencePiece's own space mark, a
# leading space (a dummy prefix would add one), digits, typed special tokens, byte fallback.
_PARITY_PROBE = (" ﬁ Ａ ① e\u0301  x\t\n\u2581y 0123456789 <pause><|END_OF_LATENT|><proc_7> "
                 "héllo ✓ 𝔘 \u3042 --")


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def _token_content(value: Any) -> str | None:
  """tokenizer_config values are a string or an AddedToken dict with 'content'."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


class HFVocabulary(Vocabulary):
  """A `tokenizers.Tokenizer` with the project's special and procedural tokens."""

  def __init__(self, tokenizer, *, pad_id: int, bos_id: int, eos_id: int,
               added_ids: Sequence[int], base_size: int,
               tokenizer_config: dict[str, Any] | None = None):
    self.tokenizer = tokenizer
    # Special tokens in text stay text (the project's rule); ids alone make them.
    self.tokenizer.encode_special_tokens = True
    self._pad, self._bos, self._eos = pad_id, bos_id, eos_id
    self.added_ids = tuple(added_ids)
    self.base_size = base_size  # the tokenizer's size before tokens were added here
    self._config = dict(tokenizer_config or {})
    self._reserved = {}
    for name, token in (("pause", PAUSE), *LATENT_TOKENS.items()):
      self._reserved[name] = self._require(token)
    procedural = []
    while (i := tokenizer.token_to_id(procedural_piece(len(procedural)))) is not None:
      procedural.append(i)
    self._procedural_offset = offset = procedural[0] if procedural else 0
    if procedural != list(range(offset, offset + len(procedural))):
      raise ValueError(f"the tokenizer's procedural symbols have ids {procedural}, not one "
                       "contiguous block")
    self._num_procedural = len(procedural)

  def __setstate__(self, state):
    # A tokenizers.Tokenizer pickles as its JSON, which does not keep encode_special_tokens.
    self.__dict__.update(state)
    self.tokenizer.encode_special_tokens = True

  def _require(self, token: str) -> int:
    i = self.tokenizer.token_to_id(token)
    if i is None:
      raise ValueError(f"the tokenizer has no '{token}' token; load it with add_tokens=True")
    return i

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def bos_id(self) -> int:
    return self._bos

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def pause_id(self) -> int:
    return self._reserved["pause"]

  @property
  def sol_id(self) -> int:
    return self._reserved["sol"]

  @property
  def eol_id(self) -> int:
    return self._reserved["eol"]

  @property
  def prior_id(self) -> int:
    return self._reserved["prior"]

  @property
  def posterior_id(self) -> int:
    return self._reserved["posterior"]

  @property
  def num_procedural(self) -> int:
    return self._num_procedural

  def procedural_id(self, symbol: int | np.ndarray) -> int | np.ndarray:
    return self._offset_procedural(symbol, self._procedural_offset)

  def encode(self, text: str) -> list[int]:
    # add_special_tokens=False: no template bos/eos (LLaMA's post-processor would add bos).
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def save(self, directory: str) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json that
    `transformers.AutoTokenizer` loads (offline: nothing else is needed)."""
    os.makedirs(directory, exist_ok=True)
    self.tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
    config = dict(self._config)
    # The tokenizer.json lists every added token; a stale copy here would disagree with it.
    config.pop("added_tokens_decoder", None)
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    token = self.tokenizer.id_to_token
    config.update(pad_token=token(self.pad_id), bos_token=token(self.bos_id),
                  eos_token=token(self.eos_id))
    with open(os.path.join(directory, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2)
    special_map = {key: config[key] for key in ("bos_token", "eos_token", "pad_token",
                                                  "unk_token") if config.get(key)}
    special_map["additional_special_tokens"] = [token(i) for i in (
        self.pause_id, self.sol_id, self.eol_id, self.prior_id, self.posterior_id)]
    with open(os.path.join(directory, SPECIAL_TOKENS_MAP), "w", encoding="utf-8") as f:
      json.dump(special_map, f, indent=2)


def _special_id(tokenizer, directory: str, name: str) -> int | None:
  """The id of special token `name` ('pad' | 'bos' | 'eos'), by the documented precedence."""
  for file in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
    path = os.path.join(directory, file)
    content = _token_content(_read_json(path).get(f"{name}_token"))
    if content is not None:
      i = tokenizer.token_to_id(content)
      if i is None:
        raise ValueError(f"{path}: {name}_token {content!r} is not in {TOKENIZER_FILE}")
      return i
  value = _read_json(os.path.join(directory, "config.json")).get(f"{name}_token_id")
  if isinstance(value, list):
    value = value[0] if value else None
  return value


def load_hf_vocabulary(path: str, *, add_tokens: bool = True,
                       num_procedural: int = 0) -> HFVocabulary:
  """The tokenizer of a Hugging Face model directory, with the project's reserved tokens.

  `add_tokens=False` requires them to be present already (a directory this project exported).
  """
  from tokenizers import AddedToken, Tokenizer  # pylint: disable=import-outside-toplevel
  file = os.path.join(path, TOKENIZER_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file}: no such file (only fast tokenizers in tokenizer.json are "
                            "supported)")
  if not isinstance(num_procedural, int) or num_procedural < 0:
    raise ValueError(f"num_procedural = {num_procedural!r}: must be an integer >= 0")
  tokenizer = Tokenizer.from_file(file)
  base_size = tokenizer.get_vocab_size(with_added_tokens=True)
  wanted = [PAUSE, *LATENT_TOKENS.values()]
  wanted += [procedural_piece(i) for i in range(num_procedural)]
  missing = [t for t in wanted if tokenizer.token_to_id(t) is None]
  if missing and not add_tokens:
    raise ValueError(f"{file}: lacks {missing}; load with add_tokens=True to add them")
  tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
  added_ids = [tokenizer.token_to_id(t) for t in missing]

  eos = _special_id(tokenizer, path, "eos")
  if eos is None:
    raise ValueError(f"{path}: no eos token in {TOKENIZER_CONFIG}, {SPECIAL_TOKENS_MAP} or "
                     "config.json (eos_token_id)")
  bos = _special_id(tokenizer, path, "bos")
  pad = _special_id(tokenizer, path, "pad")
  ids = {"eos": eos, "bos": eos if bos is None else bos, "pad": eos if pad is None else pad}
  for name, i in ids.items():
    if not 0 <= i < tokenizer.get_vocab_size(with_added_tokens=True):
      raise ValueError(f"{path}: {name} id {i} is outside the tokenizer's "
                       f"{tokenizer.get_vocab_size(with_added_tokens=True)} ids")
  return HFVocabulary(tokenizer, pad_id=ids["pad"], bos_id=ids["bos"], eos_id=ids["eos"],
                      added_ids=added_ids, base_size=base_size,
                      tokenizer_config=_read_json(os.path.join(path, TOKENIZER_CONFIG)))


# The project's vocabularies as Hugging Face tokenizers ------------------------------------------
def _named_ids(vocab: Vocabulary) -> list[int]:
  """Ids that are names, not text: the reserved block and ids past the text (byte vocabulary)."""
  text_end = TEXT_OFFSET if isinstance(vocab, ByteVocabulary) else vocab.vocab_size
  return list(range(BYTE_OFFSET)) + list(range(text_end, vocab.vocab_size))


def _sentencepiece_model(vocab: SentencePieceVocabulary):
  """(pieces by id, BPE merges) of a SentencePiece BPE model with the reserved layout."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_proto=vocab.path.read_bytes())
  pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  normal = {pieces[i]: i for i in range(len(pieces))
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
  # SentencePiece merges the adjacent pair whose union is the highest-scoring piece; a merge
  # list ranked by that score, with every split of each piece into two pieces, does the same.
  merges = []
  for piece in sorted(normal, key=lambda p: (-sp.get_score(normal[p]), normal[p])):
    merges += [(piece[:i], piece[i:]) for i in range(1, len(piece))
               if piece[:i] in normal and piece[i:] in normal]
  return pieces, merges


def _byte_model(vocab: ByteVocabulary):
  """(pieces by id, no merges): the `<0xXX>` pieces at the byte ids, every other id by name."""
  pieces = [vocab.decode([i]) for i in range(vocab.vocab_size)]
  pieces[BYTE_OFFSET:BYTE_OFFSET + 256] = [f"<0x{b:02X}>" for b in range(256)]
  return pieces, []


def hf_vocabulary(vocab: Vocabulary) -> HFVocabulary:
  """The Hugging Face form of a project vocabulary, every id the same (module docstring).

  An `HFVocabulary` is returned as it is. The conversion is checked by its effect: a probe text
  must encode to the project's ids and every named id decode to the project's name, else the
  vocabulary (e.g. a SentencePiece model with another normaliser) is refused by name.
  """
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
  if isinstance(vocab, HFVocabulary):
    return vocab
  if isinstance(vocab, SentencePieceVocabulary):
    pieces, merges = _sentencepiece_model(vocab)
  elif isinstance(vocab, ByteVocabulary):
    pieces, merges = _byte_model(vocab)
  else:
    raise TypeError(f"no Hugging Face form for {type(vocab).__name__} (the project's "
                    "SentencePiece and byte vocabularies and Hugging Face tokenizers have one)")
  names = {i: vocab.decode([i]) for i in _named_ids(vocab)}
  if isinstance(vocab, SentencePieceVocabulary):
    renamed = {i: (pieces[i], name) for i, name in names.items() if pieces[i] != name}
    if renamed:
      raise ValueError(f"{vocab.path}: reserved ids have pieces {renamed} (id: (piece, name)); "
                       "train it with data/train_tokenizer.py")
  tokenizer = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                   unk_token=vocab.decode([3]), byte_fallback=True))
  decode_steps = [decoders.ByteFallback(), decoders.Fuse()]
  if isinstance(vocab, SentencePieceVocabulary):
    tokenizer.normalizer = normalizers.Replace(" ", SPACE_MARK)
    decode_steps.insert(0, decoders.Replace(SPACE_MARK, " "))
  tokenizer.decoder = decoders.Sequence(decode_steps)
  tokenizer.add_special_tokens([AddedToken(names[i], special=True, normalized=False)
                                for i in sorted(names)])
  bos = names[vocab.bos_id]
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, vocab.bos_id)])
  token = lambda i: names[getattr(vocab, f"{i}_id")]
  converted = HFVocabulary(
      tokenizer, pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id, added_ids=(),
      base_size=vocab.vocab_size,
      tokenizer_config={"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": names[3],
                        "pad_token": token("pad"), "bos_token": token("bos"),
                        "eos_token": token("eos"), "split_special_tokens": True,
                        "clean_up_tokenization_spaces": False})
  _check_parity(vocab, converted, names)
  return converted


def _check_parity(vocab: Vocabulary, converted: HFVocabulary, names: dict[int, str]) -> None:
  where = getattr(vocab, "path", type(vocab).__name__)
  for name in ("vocab_size", "num_procedural"):
    if getattr(converted, name) != getattr(vocab, name):
      raise ValueError(f"{where}: the Hugging Face form has {name} {getattr(converted, name)}, "
                       f"the vocabulary {getattr(vocab, name)}")
  if converted.special_ids != vocab.special_ids:
    raise ValueError(f"{where}: special ids {converted.special_ids} in the Hugging Face form, "
                     f"{vocab.special_ids} in the vocabulary")
  want, got = vocab.encode(_PARITY_PROBE), converted.encode(_PARITY_PROBE)
  if got != want:
    raise ValueError(f"{where}: the Hugging Face form encodes {_PARITY_PROBE!r} as {got}, the "
                     f"vocabulary as {want} (a normaliser or option it does not reproduce)")
  named = sorted(names)
  if converted.decode(named) != vocab.decode(named):
    raise ValueError(f"{where}: the Hugging Face form decodes the named ids differently")
