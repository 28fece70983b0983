"""The project's vocabularies as Hugging Face tokenizers, for exported models.

`hf_vocabulary(vocab)` turns the project's own vocabularies (data/vocab.py) into a Hugging Face
`tokenizers` tokenizer, so that an exported model carries the tokenizer it was trained with,
every id the same:
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

Not here: reading a Hugging Face tokenizer as a project `Vocabulary` (`HFVocabulary`,
`load_hf_vocabulary` in data/vocab.py, which the result of `hf_vocabulary` also is).
"""

from __future__ import annotations

from ponder_jax.data.vocab import (BYTE_OFFSET, TEXT_OFFSET, ByteVocabulary, HFVocabulary,
                                   SentencePieceVocabulary, Vocabulary)

SPACE_MARK = "\u2581"  # SentencePiece's whitespace piece
# Text the project's vocabularies encode in a way a wrong conversion would not: compatibility
# characters (NFKC would change them), runs of spaces, tabs, SentencePiece's own space mark, a
# leading space (a dummy prefix would add one), digits, typed special tokens, byte fallback.
_PARITY_PROBE = (" ﬁ Ａ ① e\u0301  x\t\n\u2581y 0123456789 <pause><|END_OF_LATENT|><proc_7> "
                 "héllo ✓ 𝔘 \u3042 --")


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
  # Lazy: `tokenizers` comes with the optional `hf` extra.
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
