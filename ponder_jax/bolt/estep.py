"""BoLT's E-step (METHODS.md §4.2): infer the latent thought behind every chunk of a corpus by
importance resampling, and write the thought-augmented corpus as thought-record shards.

For chunk X of a document, with prefix P = the previous <= `prefix_chunks` raw chunks:

    Z_1..Z_K ~ q(Z | X)     sampled at temperature 1 from  bos P <SoL><EoL> X <SoL><POSTERIOR>
                            up to <EoL> (the posterior form the model is trained on)
    log q_k                 the sampler's log-prob of Z_k and its <EoL>
    log p_k                 log p(<SoL><PRIOR> Z_k <EoL> X | bos P), one teacher-forced pass
    log w_k = log p_k - log q_k
    keep one Z ~ Categorical(softmax(log w))        (uniform when importance sampling is off)
    ELBO_K  = logsumexp(log w) - log K              (IWAE bound on log p(X | P))

A sample that reaches `max_thought_tokens` without <EoL> never closed: its weight is zero
(log w = -inf); a chunk none of whose samples closed is left raw. Both are counted. Chunks whose
prompt cannot fit the model's max_len even without a prefix are left raw and counted too.

Output: `<out_dir>/shard-SSSSS-of-NNNNN.jsonl`, thought records (data/thoughts.py) that the
pipeline's `thoughts` source reads (the sampled ids as `thought_ids`, so training sees exactly
the weighted tokens), with `log_w` and `elbo` per inferred chunk as extra keys,
and a `.stats.json` beside each. A shard is written to a temporary name and renamed when
complete, so an interrupted E-step restarts at the first unfinished shard; every random draw is
seeded by (seed, shard, batch) or (seed, doc_id, chunk), so it writes the same bytes again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ponder_jax.data.vocab import Vocabulary
from ponder_jax.infer import Engine, SamplingConfig
from ponder_jax.validation import ConfigError, check


@dataclasses.dataclass(frozen=True)
class EStepConfig:
  """The `bolt.estep` section."""
  num_samples: int = 4  # K Monte Carlo samples per chunk
  importance: bool = True  # resample by softmax(log w); False: uniformly among closed samples
  max_thought_tokens: int = 64  # a sample without <EoL> by then never closed
  prefix_chunks: int = 3  # raw chunks before X that condition q and p (BoLT bootstrapping: 3)
  temperature: float = 1.0
  batch_size: int = 32  # rows per generation batch (K rows per chunk)
  docs_per_shard: int = 256
  seed: int = 0

  def validated(self, prefix: str = "bolt.estep") -> "EStepConfig":
    for key in ("num_samples", "max_thought_tokens", "batch_size", "docs_per_shard"):
      value = getattr(self, key)
      check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{prefix}.{key}", value, "must be an integer >= 1")
    check(isinstance(self.prefix_chunks, int) and self.prefix_chunks >= 0,
          f"{prefix}.prefix_chunks", self.prefix_chunks, "must be an integer >= 0")
    check(isinstance(self.importance, bool), f"{prefix}.importance", self.importance,
          "must be true or false")
    check(isinstance(self.temperature, (int, float)) and self.temperature > 0,
          f"{prefix}.temperature", self.temperature, "must be > 0")
    check(isinstance(self.seed, int) and self.seed >= 0, f"{prefix}.seed", self.seed,
          "must be an integer >= 0")
    return self


@dataclasses.dataclass(frozen=True)
class LatentDocument:
  """A raw document: its chunk texts, and which chunks get a thought inferred."""
  doc_id: str | int
  chunks: tuple[str, ...]
  infer: tuple[bool, ...]


@dataclasses.dataclass
class ChunkResult:
  """The E-step's outcome for one inferred chunk."""
  thought: str | None  # the kept sample as text (for reading), or None: the chunk stays raw
  thought_ids: list[int] | None  # the kept sample's token ids, <EoL> excluded: what trains
  log_w: list[float]  # per sample; -inf where the sample never closed
  elbo: float  # logsumexp(log_w) - log K; -inf when no sample closed
  closed: int
  x_tokens: int
  samples: list[list[int]]  # the K sampled token ids, <EoL> included where it closed


def check_teacher(engine: Engine, vocab: Vocabulary) -> None:
  """The teacher must embed the four thought tokens (an HF model's table may end before them)."""
  ids = {"<SoL>": vocab.sol_id, "<EoL>": vocab.eol_id, "<PRIOR>": vocab.prior_id,
         "<POSTERIOR>": vocab.posterior_id}
  rows = engine.model.cfg.vocab_size
  missing = {name: i for name, i in ids.items() if i is None or i >= rows}
  if missing:
    raise ConfigError("bolt.teacher", missing,
                      f"the teacher's embedding table has {rows} rows and lacks the thought "
                      "tokens (train or resize it with them, e.g. ponder-convert --from-hf adds "
                      "them)")


def _chunk_prompts(doc: LatentDocument, vocab: Vocabulary, cfg: EStepConfig,
                   max_len: int) -> list[tuple[int, list[int], list[int], list[int]] | None]:
  """Per inferred chunk: (chunk index, posterior prompt, joint context, joint continuation
  without Z) with the prefix cut from the left to fit; None where nothing fits."""
  v = vocab
  encoded = [v.encode(text) for text in doc.chunks]
  out = []
  for t, infer in enumerate(doc.infer):
    if not infer:
      continue
    x = encoded[t]
    prefix = [tok for chunk in encoded[max(0, t - cfg.prefix_chunks):t] for tok in chunk]
    tail = [v.sol_id, v.eol_id, *x, v.sol_id, v.posterior_id]
    # bos + prefix + tail + the thought must fit (the joint row is one token shorter).
    room = max_len - 1 - len(tail) - cfg.max_thought_tokens
    if room < 0:
      out.append(None)
      continue
    prefix = prefix[len(prefix) - min(len(prefix), room):]
    out.append((t, [v.bos_id, *prefix, *tail], [v.bos_id, *prefix], x))
  return out


def infer_thoughts(engine: Engine, vocab: Vocabulary, docs: Sequence[LatentDocument],
                   cfg: EStepConfig, *, batch_seed: Sequence[int] = (0,),
                   progress: tqdm | None = None) -> tuple[list[list[Any]], dict[str, float]]:
  """The E-step on `docs`: per document a list over its chunks of ChunkResult (inferred chunks)
  or None (raw chunks), and counts for the stats."""
  v, k = vocab, cfg.num_samples
  jobs = []  # (doc index, chunk index, prompt, context, x)
  results: list[list[Any]] = [[None] * len(doc.chunks) for doc in docs]
  stats = {"docs": len(docs), "chunks": 0, "samples": 0, "closed": 0, "unclosed_chunks": 0,
           "too_long": 0, "elbo_sum": 0.0, "elbo_chunks": 0, "x_tokens": 0}
  for d, doc in enumerate(docs):
    for prompt in _chunk_prompts(doc, v, cfg, engine.model.cfg.max_len):
      if prompt is None:
        stats["too_long"] += 1
      else:
        jobs.append((d, *prompt))
  sampling = SamplingConfig(temperature=cfg.temperature)
  per_batch = max(1, cfg.batch_size // k)
  for b, start in enumerate(range(0, len(jobs), per_batch)):
    batch = jobs[start:start + per_batch]
    gen = engine.generate([job[2] for job in batch for _ in range(k)],
                          max_new_tokens=cfg.max_thought_tokens, stop_tokens=[v.eol_id],
                          sampling=sampling, seed=_seed(*batch_seed, b))
    samples = gen.completions()
    closed = [bool(ids) and ids[-1] == v.eol_id for ids in samples]
    log_q = [float(np.sum(row[:len(ids)], dtype=np.float64))
             for row, ids in zip(gen.logprobs, samples)]
    rows = [i for i, ok in enumerate(closed) if ok]
    scores = engine.score([batch[i // k][3] for i in rows],
                          [[v.sol_id, v.prior_id, *samples[i], *batch[i // k][4]] for i in rows]
                          ) if rows else []
    log_p = dict(zip(rows, (s.logprob for s in scores)))
    for j, (d, t, _, _, x) in enumerate(batch):
      idx = range(j * k, (j + 1) * k)
      log_w = [log_p[i] - log_q[i] if closed[i] else -math.inf for i in idx]
      chosen = _choose(log_w, cfg, docs[d].doc_id, t)
      ids = None if chosen is None else samples[j * k + chosen][:-1]
      elbo = _logsumexp(log_w) - math.log(k)
      results[d][t] = ChunkResult(None if ids is None else v.decode(ids), ids, log_w, elbo,
                                  sum(closed[i] for i in idx), len(x), [samples[i] for i in idx])
      stats["chunks"] += 1
      stats["samples"] += k
      stats["closed"] += results[d][t].closed
      stats["unclosed_chunks"] += chosen is None
      if math.isfinite(elbo):
        stats["elbo_sum"] += elbo
        stats["elbo_chunks"] += 1
        stats["x_tokens"] += len(x)
    if progress is not None:
      progress.update(len(batch))
  return results, stats


def _seed(*parts: int) -> int:
  return zlib.crc32(json.dumps(list(parts)).encode()) & 0x7FFFFFFF


def _logsumexp(values: Sequence[float]) -> float:
  top = max(values)
  if not math.isfinite(top):
    return -math.inf
  return top + math.log(sum(math.exp(x - top) for x in values))


def _choose(log_w: Sequence[float], cfg: EStepConfig, doc_id: str | int,
            chunk: int) -> int | None:
  """The kept sample: drawn by softmax(log w) (or uniformly) among closed samples."""
  valid = [i for i, w in enumerate(log_w) if math.isfinite(w)]
  if not valid:
    return None
  if len(log_w) == 1:
    return 0
  rng = np.random.default_rng([cfg.seed, zlib.crc32(str(doc_id).encode()), chunk])
  if not cfg.importance:
    return int(valid[rng.integers(len(valid))])
  weights = np.exp(np.asarray(log_w, np.float64) - max(log_w))
  return int(rng.choice(len(log_w), p=weights / weights.sum()))


# Shards ----------------------------------------------------------------------------------------


def shard_path(out_dir: str, index: int, count: int) -> str:
  return os.path.join(out_dir, f"shard-{index:05d}-of-{count:05d}.jsonl")


def run_estep(engine: Engine, vocab: Vocabulary, docs: Sequence[LatentDocument], out_dir: str,
              cfg: EStepConfig, *, progress: bool = True) -> dict[str, float]:
  """Writes every unfinished shard of the E-step on `docs` to `out_dir` and returns the summary
  over all shards (see the module docstring)."""
  cfg = cfg.validated()
  if not docs:
    raise ConfigError("bolt.corpus", 0, "the E-step corpus holds no documents")
  check_teacher(engine, vocab)
  os.makedirs(out_dir, exist_ok=True)
  count = -(-len(docs) // cfg.docs_per_shard)
  todo = [i for i in range(count) if not os.path.exists(shard_path(out_dir, i, count))]
  total_chunks = sum(sum(docs[j].infer) for i in todo for j in range(
      i * cfg.docs_per_shard, min(len(docs), (i + 1) * cfg.docs_per_shard)))
  bar = tqdm(total=total_chunks, desc="E-step chunks", unit="chunk", disable=not progress,
             leave=False)
  for i in todo:
    shard_docs = docs[i * cfg.docs_per_shard:(i + 1) * cfg.docs_per_shard]
    results, stats = infer_thoughts(engine, vocab, shard_docs, cfg, batch_seed=(cfg.seed, i),
                                    progress=bar)
    _write_shard(out_dir, i, count, shard_docs, results, stats)
  bar.close()
  return summarize(out_dir)


def _write_shard(out_dir: str, index: int, count: int, docs: Sequence[LatentDocument],
                 results: list[list[Any]], stats: Mapping[str, float]) -> None:
  path = shard_path(out_dir, index, count)
  lines = []
  for doc, chunks in zip(docs, results):
    for t, (text, result) in enumerate(zip(doc.chunks, chunks)):
      record: dict[str, Any] = {"doc_id": doc.doc_id, "chunk_index": t, "text": text,
                                "thought": None if result is None else result.thought}
      if result is not None:
        if result.thought is not None:
          record["thought_ids"] = result.thought_ids
        record["log_w"] = [w if math.isfinite(w) else None for w in result.log_w]
        record["elbo"] = result.elbo if math.isfinite(result.elbo) else None
      lines.append(json.dumps(record, ensure_ascii=False))
  for target, text in ((path[:-len(".jsonl")] + ".stats.json", json.dumps(stats, indent=1)),
                       (path, "\n".join(lines) + "\n")):  # the records last: they mark done
    with open(target + ".tmp", "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(target + ".tmp", target)


def summarize(out_dir: str) -> dict[str, float]:
  """Totals over the finished shards of `out_dir`: counts, the mean ELBO per inferred chunk and
  per X token, the share of samples that closed."""
  total: dict[str, float] = {}
  for name in sorted(os.listdir(out_dir)):
    if name.endswith(".stats.json") and os.path.exists(
        os.path.join(out_dir, name[:-len(".stats.json")] + ".jsonl")):
      with open(os.path.join(out_dir, name), encoding="utf-8") as f:
        for key, value in json.load(f).items():
          total[key] = total.get(key, 0) + value
  if total:
    total["close_rate"] = total["closed"] / max(total["samples"], 1)
    closed = total["elbo_chunks"] > 0  # else no chunk has a finite bound
    total["elbo_per_chunk"] = total["elbo_sum"] / total["elbo_chunks"] if closed else None
    total["elbo_per_token"] = total["elbo_sum"] / total["x_tokens"] if closed else None
  return total
