"""One `Vocabulary` interface for every tokenizer the project uses: the project's own two and
Hugging Face tokenizers (`HFVocabulary`).

Special tokens every implementation provides (METHODS.md §2.1, §4.1):
  pad, bos, eos       padding (segment id 0 in packed rows), document start and end
  pause               `<pause>` (pause tokens)
  sol, eol            `<|START_OF_LATENT|>`, `<|END_OF_LATENT|>` (BoLT latent thoughts)
  prior, posterior    `<|PRIOR_PREFIX|>`, `<|POSTERIOR_PREFIX|>`
and a block of procedural symbols: `procedural_id(i)` maps a task-local symbol i (Dyck brackets,
sequence-task tokens, separators) to a global id.

The project's vocabularies share one fixed layout of their first 521 ids:
  0 <pad>   1 <bos>   2 <eos>   3 <unk> (reserved; byte fallback means encode never needs it)
  4 <pause>   5 <|START_OF_LATENT|>   6 <|END_OF_LATENT|>
  7 <|PRIOR_PREFIX|>   8 <|POSTERIOR_PREFIX|>
  9 .. 264    procedural symbols 0 .. 255, named <proc_0> .. <proc_255>
  265 .. 520  the bytes 0x00 .. 0xFF
`SentencePieceVocabulary` (data/tokenizer.model, trained by data/train_tokenizer.py) puts 7671
learned pieces after them, 8192 ids in all; `ByteVocabulary` stops there and rounds up to 576.
The specials and procedural symbols are SentencePiece control symbols: `encode` never produces
them, whatever the text (`"<pause>"` typed in text is ordinary characters), only their ids do.
`decode` renders them by name. `load_vocabulary` builds a vocabulary from a `data.vocab` spec.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ponder_jax.data import data_dir
from ponder_jax.validation import ConfigError

# Name of each special id, in id order from 0.
SPECIAL_PIECES = {
    "pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pause": "<pause>",
    "sol": "<|START_OF_LATENT|>", "eol": "<|END_OF_LATENT|>",
    "prior": "<|PRIOR_PREFIX|>", "posterior": "<|POSTERIOR_PREFIX|>",
}
# The specials a tokenizer from elsewhere lacks and gets added (it has its own pad, bos, eos).
_ADDED_SPECIALS = ("pause", "sol", "eol", "prior", "posterior")
_SPECIAL_NAMES = tuple(SPECIAL_PIECES.values())
NUM_PROCEDURAL = 256  # 64-type Dyck needs 129 local symbols, the vocab-100 tasks 102, needle 256
PROCEDURAL_OFFSET = len(SPECIAL_PIECES)
BYTE_OFFSET = PROCEDURAL_OFFSET + NUM_PROCEDURAL  # ids of the bytes 0x00 .. 0xFF
TEXT_OFFSET = BYTE_OFFSET + 256  # first learned SentencePiece piece
SENTENCEPIECE_VOCAB_SIZE = 8192
BYTE_VOCAB_SIZE = 64 * -(-TEXT_OFFSET // 64)  # 576: embedding rows in multiples of 64


def procedural_piece(symbol: int) -> str:
  """The name of procedural symbol `symbol`, as stored in the SentencePiece model."""
  return f"<proc_{symbol}>"


def control_pieces() -> list[str]:
  """The control symbols after pad/bos/eos/unk, in id order (4 .. 264): the trainer's list."""
  specials = [SPECIAL_PIECES[name] for name in _ADDED_SPECIALS]
  return specials + [procedural_piece(i) for i in range(NUM_PROCEDURAL)]


class Vocabulary(abc.ABC):
  """Text <-> ids, plus the reserved special and procedural ids."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids; the model's embedding table needs at least this many rows."""

  # Special ids.
  @property
  @abc.abstractmethod
  def pad_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def bos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def pause_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def sol_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def eol_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def prior_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def posterior_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def num_procedural(self) -> int:
    """How many procedural symbols `procedural_id` accepts."""

  @abc.abstractmethod
  def procedural_id(self, symbol: int | np.ndarray) -> int | np.ndarray:
    """Global id(s) of task-local procedural symbol(s) 0 .. num_procedural - 1."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without bos/eos."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; special tokens are rendered by name."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of each text; implementations override it where a batch call is faster."""
    return [self.encode(text) for text in texts]

  @property
  def special_ids(self) -> dict[str, int]:
    return {name: getattr(self, f"{name}_id") for name in
            ("pad", "bos", "eos", "pause", "sol", "eol", "prior", "posterior")}

  def _offset_procedural(self, symbol: int | np.ndarray, offset: int) -> int | np.ndarray:
    """procedural_id for a contiguous block starting at `offset`, scalar or vectorised."""
    if isinstance(symbol, (bool, np.bool_)):
      raise ValueError(f"procedural symbol must be an integer, got {symbol!r}")
    if isinstance(symbol, (int, np.integer)):
      if not 0 <= symbol < self.num_procedural:
        raise ValueError(f"procedural symbol {symbol} outside 0 .. {self.num_procedural - 1}")
      return offset + int(symbol)
    symbols = np.asarray(symbol)
    if not np.issubdtype(symbols.dtype, np.integer):
      raise ValueError(f"procedural symbols must be integers, got dtype {symbols.dtype}")
    bad = (symbols < 0) | (symbols >= self.num_procedural)
    if bad.any():
      raise ValueError(f"procedural symbol {symbols[bad].flat[0]} outside "
                       f"0 .. {self.num_procedural - 1}")
    return symbols.astype(np.int32) + np.int32(offset)


class _ReservedLayoutVocabulary(Vocabulary):
  """The shared layout of the module docstring; subclasses encode and decode text ids."""

  pad_id = 0
  bos_id = 1
  eos_id = 2
  unk_id = 3
  pause_id = 4
  sol_id = 5
  eol_id = 6
  prior_id = 7
  posterior_id = 8
  num_procedural = NUM_PROCEDURAL

  # Ids [_text_begin, _text_end) are text; the rest decode to names.
  _text_begin = BYTE_OFFSET

  @property
  def _text_end(self) -> int:
    return self.vocab_size

  def procedural_id(self, symbol: int | np.ndarray) -> int | np.ndarray:
    return self._offset_procedural(symbol, PROCEDURAL_OFFSET)

  def _name(self, token_id: int) -> str:
    if token_id < PROCEDURAL_OFFSET:
      return _SPECIAL_NAMES[token_id]
    if token_id < BYTE_OFFSET:
      return procedural_piece(token_id - PROCEDURAL_OFFSET)
    return f"<unused_{token_id}>"

  @abc.abstractmethod
  def _decode_text(self, ids: list[int]) -> str:
    """Text of ids that all lie in [_text_begin, _text_end)."""

  def decode(self, ids: Sequence[int]) -> str:
    ids_N = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids_N.size and (ids_N.min() < 0 or ids_N.max() >= self.vocab_size):
      bad = ids_N[(ids_N < 0) | (ids_N >= self.vocab_size)][0]
      raise ValueError(f"id {bad} outside the vocabulary 0 .. {self.vocab_size - 1}")
    named_N = (ids_N < self._text_begin) | (ids_N >= self._text_end)
    if not named_N.any():
      return self._decode_text(ids_N.tolist())
    # Decode each run of text ids in one call (multi-byte characters span ids) between names.
    parts, start = [], 0
    for position in np.flatnonzero(named_N).tolist():
      if position > start:
        parts.append(self._decode_text(ids_N[start:position].tolist()))
      parts.append(self._name(int(ids_N[position])))
      start = position + 1
    if start < ids_N.size:
      parts.append(self._decode_text(ids_N[start:].tolist()))
    return "".join(parts)


class SentencePieceVocabulary(_ReservedLayoutVocabulary):
  """A SentencePiece model with the reserved layout (a model trained by data/train_tokenizer.py).

  Text round-trips exactly (identity normalisation, no dummy prefix, whitespace kept, byte
  fallback), except that U+2581 '▁', SentencePiece's own space marker, decodes as a space.
  Encoding pieces of a text separately and concatenating the ids decodes to the whole text.
  """

  def __init__(self, path: str | os.PathLike):
    import sentencepiece as spm  # noqa: PLC0415  (only this class needs it)

    self.path = Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"no SentencePiece model at {self.path}")
    self._model_bytes = self.path.read_bytes()
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
    except RuntimeError as error:
      raise ValueError(f"{self.path} is not a SentencePiece model: {error}") from error
    self._check_layout()

  def _check_layout(self) -> None:
    sp = self._sp
    expected = list(_SPECIAL_NAMES) + [procedural_piece(i) for i in range(NUM_PROCEDURAL)]
    expected += [f"<0x{byte:02X}>" for byte in range(256)]
    if sp.get_piece_size() < TEXT_OFFSET:
      raise ValueError(f"{self.path}: {sp.get_piece_size()} pieces, fewer than the {TEXT_OFFSET} "
                       "reserved ids; train it with data/train_tokenizer.py")
    for token_id, piece in enumerate(expected):
      if sp.id_to_piece(token_id) != piece:
        raise ValueError(f"{self.path}: id {token_id} is {sp.id_to_piece(token_id)!r}, the "
                         f"reserved layout needs {piece!r}; train it with data/train_tokenizer.py")
    # Only control symbols are safe from encode: a user-defined `<pause>` would match text.
    for token_id in range(BYTE_OFFSET):
      if token_id != self.unk_id and not sp.is_control(token_id):
        raise ValueError(f"{self.path}: {expected[token_id]!r} (id {token_id}) must be a control "
                         "symbol, which encode never produces; train it with "
                         "data/train_tokenizer.py")
    # The trainer flags that make text round-trip, checked by their effect.
    probe = " a  b\n1"
    if sp.decode(sp.encode(probe)) != probe:
      raise ValueError(f"{self.path}: does not round-trip {probe!r} (it needs identity "
                       "normalisation, no dummy prefix and kept whitespace)")

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def _decode_text(self, ids: list[int]) -> str:
    return self._sp.decode(ids)

  def piece(self, token_id: int) -> str:
    """The piece string of an id (for inspection; `decode` is the inverse of `encode`)."""
    return self._sp.id_to_piece(int(token_id))

  # SentencePieceProcessor does not pickle; grain workers receive the model bytes instead.
  def __getstate__(self):
    return {"path": self.path, "model_bytes": self._model_bytes}

  def __setstate__(self, state):
    import sentencepiece as spm  # noqa: PLC0415

    self.path, self._model_bytes = state["path"], state["model_bytes"]
    self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)

  def __repr__(self) -> str:
    return f"SentencePieceVocabulary({str(self.path)!r}, vocab_size={self.vocab_size})"


class ByteVocabulary(_ReservedLayoutVocabulary):
  """UTF-8 bytes with the reserved layout: zero setup, any text, 576 ids (521 used)."""

  _text_end = TEXT_OFFSET

  @property
  def vocab_size(self) -> int:
    return BYTE_VOCAB_SIZE

  def encode(self, text: str) -> list[int]:
    bytes_N = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return (bytes_N.astype(np.int32) + BYTE_OFFSET).tolist()

  def _decode_text(self, ids: list[int]) -> str:
    data = (np.asarray(ids, dtype=np.int32) - BYTE_OFFSET).astype(np.uint8).tobytes()
    # Model output may cut a character in half: show U+FFFD rather than fail.
    return data.decode("utf-8", errors="replace")

  def __repr__(self) -> str:
    return "ByteVocabulary()"


# Hugging Face tokenizers ------------------------------------------------------------------------
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"


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
  """A Hugging Face `tokenizers.Tokenizer` with the project's special and procedural tokens
  (`hf:PATH` specs, imported models; the project's own vocabularies take this form on export,
  convert/tokenizer.py).

  `load_hf_vocabulary(dir)` adds the tokens the project reserves as special tokens that the
  tokenizer never splits: `<pause>`, the four latent-thought tokens and optionally
  `num_procedural` symbols `<proc_0>`, `<proc_1>`, ... Tokens the tokenizer already has (a
  directory this project exported) keep their ids; new ones get the next free ids, in that order,
  listed in `added_ids` so that the model's embedding rows for them can be initialised
  (convert/hf.py). As in the project's own vocabularies, `encode` never produces a special id
  from text, and `decode` renders specials by name.

  pad / bos / eos come from the first of these that names them: `tokenizer_config.json`
  (`pad_token`, `bos_token`, `eos_token`), `special_tokens_map.json`, then `config.json`
  (`pad_token_id`, `bos_token_id`, `eos_token_id`; the first of a list). eos is required; bos
  falls back to eos (GPT-2 style: one token separates documents) and pad falls back to eos
  (padding is masked by segment id 0, so its id only fills slots).
  """

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
    self._reserved = {name: self._require(SPECIAL_PIECES[name]) for name in _ADDED_SPECIALS}
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
  # Lazy: `tokenizers` comes with the optional `hf` extra, and only this spec kind needs it.
  from tokenizers import AddedToken, Tokenizer  # pylint: disable=import-outside-toplevel
  file = os.path.join(path, TOKENIZER_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file}: no such file (only fast tokenizers in tokenizer.json are "
                            "supported)")
  if not isinstance(num_procedural, int) or num_procedural < 0:
    raise ValueError(f"num_procedural = {num_procedural!r}: must be an integer >= 0")
  tokenizer = Tokenizer.from_file(file)
  base_size = tokenizer.get_vocab_size(with_added_tokens=True)
  wanted = [SPECIAL_PIECES[name] for name in _ADDED_SPECIALS]
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


def default_tokenizer_path() -> Path:
  """The committed SentencePiece model, data/tokenizer.model (see ponder_jax.data.data_dir)."""
  return data_dir() / "tokenizer.model"


def load_vocabulary(spec: str) -> Vocabulary:
  """The vocabulary named by a `data.vocab` spec.

  sentencepiece          the committed data/tokenizer.model (8192 ids)
  sentencepiece:PATH     another model trained by data/train_tokenizer.py
  byte                   ByteVocabulary (576 ids)
  hf:PATH                a Hugging Face tokenizer on local disk (load_hf_vocabulary)
  """
  kind, _, arg = str(spec).partition(":")
  if kind == "byte" and not arg:
    return ByteVocabulary()
  if kind == "sentencepiece":
    path = Path(arg) if arg else default_tokenizer_path()
    try:
      return SentencePieceVocabulary(path)
    except (FileNotFoundError, ValueError) as error:
      raise ConfigError("data.vocab", spec, str(error)) from error
  if kind == "hf" and arg:
    try:
      return load_hf_vocabulary(arg)
    except ImportError as error:
      raise ConfigError("data.vocab", spec, f"Hugging Face tokenizers need the `hf` extra "
                        f"(pip install 'ponder-jax[hf]'): {error}") from error
  raise ConfigError("data.vocab", spec,
                    "must be 'sentencepiece', 'sentencepiece:PATH', 'byte' or 'hf:PATH'")


def run_procedural_symbols(data: Mapping[str, Any]) -> int:
  """Procedural symbols a run reserves in a Hugging Face tokenizer (`init.from_hf`), from its
  `data` section: NUM_PROCEDURAL when a source is procedural, else none."""
  sources = data.get("sources", None) or {}
  procedural = any(source.get("kind") == "procedural" for source in sources.values())
  return NUM_PROCEDURAL if procedural else 0


def run_vocabulary(data: Mapping[str, Any], init: Mapping[str, Any] | None = None) -> Vocabulary:
  """The vocabulary a run trains with, from its `data` and `init` config sections (a ConfigDict
  or a stored config's dicts; nothing else in them is validated): with `init.from_hf`, that
  directory's tokenizer with the reserved tokens added and `run_procedural_symbols` symbols;
  else `data.vocab`. The trainer, partial init (train/init.py) and export (convert/) all ask
  this, so they agree on the ids of a run."""
  from_hf = (init or {}).get("from_hf", "")
  if from_hf:
    return load_hf_vocabulary(from_hf, num_procedural=run_procedural_symbols(data))
  return load_vocabulary(data["vocab"])
