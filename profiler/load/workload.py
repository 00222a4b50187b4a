"""Workloads -> a deterministic, lazy stream of requests.

Exact lengths use token-id prompts (``/v1/completions``) with ``ignore_eos`` and
``min_tokens`` = ``max_tokens``: the server must produce exactly the requested output. The
chat mode (``/v1/chat/completions``) sends words; each word is about one token for common
tokenizers, so its lengths are approximate (the record keeps the server's own counts).

A scenario's ``input`` is the prompt after its shared prefix (``input_len`` of a request
counts both); a trace row's ``input_len`` is the whole prompt. A trace row with ``hash_ids``
(Mooncake) builds its prompt from blocks of ``block_tokens`` ids, one block per hash id and
the same ids for the same hash id, so requests sharing leading hash ids share a prompt prefix
(the trace's cache reuse). A scenario with a ``dataset`` sends the dataset's prompts
(``profiler.load.datasets``). Every random choice comes from
generators seeded by ``(seed, scenario index, purpose)``, drawn in blocks, so a million
requests cost seconds and the same seed gives the same requests in every process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from profiler.distributions import LengthDist
from profiler.errors import SpecError
from profiler.load.prompts import VOCAB_HIGH, VOCAB_LOW, IdSource, WordSource, ids_to_words
from profiler.load.prompts import prefix_ids as make_prefix_ids
from profiler.load.traces import TraceRow
from profiler.spec import Scenario, WorkloadSpec
from profiler.yaml_spec import load_yaml_model

if TYPE_CHECKING:
    from profiler.load.datasets import DatasetStream

BLOCK = 4096
MAX_CACHED_PREFIXES = 1024
MAX_CACHED_BLOCKS = 8192  # Mooncake hash-id blocks kept (512 ids each: about 40 MB at most)
PACKAGED = Path(__file__).resolve().parents[1] / "data" / "workloads"


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send. ``prompt_token_ids`` for the completions API, ``messages`` for
    chat. ``output_len`` is ``max_tokens`` per sample; with ``ignore_eos`` the server is also
    asked for ``min_tokens`` = ``output_len``. With ``n`` > 1 the temperature is at least 1.0
    (samples of a greedy request would be identical, and older vLLM rejects them)."""

    id: int
    scenario: str
    api: str
    input_len: int
    output_len: int
    n: int = 1
    ignore_eos: bool = True
    min_tokens: int | None = None
    temperature: float = 0.0
    prompt_token_ids: list[int] | None = None
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    prefix_id: str | None = None


def sample_lengths(dist: LengthDist, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` lengths from ``dist``, clipped to [min, max] (a fixed value is kept as is)."""
    if dist.kind == "fixed":
        assert dist.value is not None
        return np.full(size, dist.value, dtype=np.int64)
    if dist.kind == "uniform":
        out = rng.integers(dist.min, dist.max + 1, size).astype(np.float64)
    elif dist.kind == "normal":
        assert dist.mean is not None and dist.std is not None
        out = rng.normal(dist.mean, dist.std, size)
    elif dist.kind == "lognormal":
        assert dist.mean is not None and dist.sigma is not None
        mu = np.log(dist.mean) - dist.sigma**2 / 2  # so the lengths' mean is ``mean``
        out = rng.lognormal(mu, dist.sigma, size)
    else:
        assert dist.values is not None
        p = None
        if dist.weights is not None:
            w = np.asarray(dist.weights, dtype=np.float64)
            if w.min() < 0 or w.sum() <= 0:
                raise SpecError(
                    "empirical weights must be non-negative with a positive sum",
                    "fix the weights of the length distribution",
                )
            p = w / w.sum()
        out = rng.choice(np.asarray(dist.values, dtype=np.float64), size=size, p=p)
    return np.clip(np.rint(out), dist.min, dist.max).astype(np.int64)


class ScenarioSource:
    """What one scenario's requests (``_ScenarioStream``) or sessions
    (``profiler.load.sessions``) are drawn from, the same for a seed: four generators seeded by
    ``(seed, scenario index, first + k)`` (k: 0 lengths, 1 prefix choices, 2 prompt ids,
    3 prompt words), the dataset's stream, and the shared prefixes' ids."""

    def __init__(
        self, sc: Scenario, index: int, seed: int, vocab: tuple[int, int], first: int
    ) -> None:
        self.sc, self.seed, self.vocab = sc, seed, vocab
        self.rng = np.random.default_rng([seed, index, first])
        self.pre_rng = np.random.default_rng([seed, index, first + 1])
        self.ids = IdSource(np.random.default_rng([seed, index, first + 2]), *vocab)
        self.words = WordSource(np.random.default_rng([seed, index, first + 3]))
        self.temperature = sc.temperature if sc.n == 1 else max(sc.temperature, 1.0)
        self.dataset: DatasetStream | None = None
        if sc.dataset is not None:
            from profiler.load.datasets import DatasetStream

            self.dataset = DatasetStream(sc.dataset, seed, index)
        self._prefixes: dict[str, list[int]] = {}

    def prefix_ids(self, prefix_id: str) -> list[int]:
        """The ids of shared prefix ``prefix_id`` (the same for a seed; the last ones cached)."""
        ids = self._prefixes.get(prefix_id)
        if ids is None:
            if len(self._prefixes) >= MAX_CACHED_PREFIXES:
                self._prefixes.clear()
            ids = make_prefix_ids(self.seed, prefix_id, self.sc.shared_prefix_len, *self.vocab)
            self._prefixes[prefix_id] = ids
        return ids


class _ScenarioStream(ScenarioSource):
    """Requests of one scenario; lengths and prefix choices sampled in blocks."""

    def __init__(self, sc: Scenario, index: int, seed: int, vocab: tuple[int, int]) -> None:
        super().__init__(sc, index, seed, vocab, first=0)
        self._in: list[int] = []
        self._out: list[int] = []
        self._pre: list[int] = []
        self._i = 0
        self._blocks: dict[int, list[int]] = {}

    def _refill(self) -> None:
        sc = self.sc
        self._in = sample_lengths(sc.input, self.rng, BLOCK).tolist()
        self._out = sample_lengths(sc.output, self.rng, BLOCK).tolist()
        if sc.shared_prefix_len:
            self._pre = self.pre_rng.integers(0, sc.num_prefixes, BLOCK).tolist()
        self._i = 0

    def _hashed(self, hash_ids: tuple[int, ...], length: int, block: int) -> list[int]:
        """A prompt of ``length`` ids made of one block per hash id (cut or padded)."""
        out: list[int] = []
        for h in hash_ids:
            if len(out) >= length:
                break
            ids = self._blocks.get(h)
            if ids is None:
                if len(self._blocks) >= MAX_CACHED_BLOCKS:
                    self._blocks.clear()
                ids = make_prefix_ids(self.seed, f"block-{h}", block, *self.vocab)
                self._blocks[h] = ids
            out.extend(ids)
        if len(out) < length:
            out.extend(self.ids.take(length - len(out)))
        return out[:length]

    def _from_dataset(self, rid: int, out_len: int, row: TraceRow | None) -> RequestSpec:
        sc = self.sc
        assert self.dataset is not None
        entry = self.dataset.next()
        turn = entry.turns[0]
        if turn.output_len is not None:
            out_len = turn.output_len
        if row is not None and row.output_len:
            out_len = row.output_len
        min_tokens = out_len if sc.ignore_eos else None
        system = entry.system_ids or []
        if sc.api == "chat":
            messages = [{"role": "user", "content": turn.user_text}]
            if entry.system_text:
                messages.insert(0, {"role": "system", "content": entry.system_text})
            return RequestSpec(
                rid, sc.name, "chat", len(system) + len(turn.user_ids), out_len, sc.n,
                sc.ignore_eos, min_tokens, self.temperature, None, None, messages, None,
            )  # fmt: skip
        ids = system + turn.user_ids
        return RequestSpec(
            rid, sc.name, "completions", len(ids), out_len, sc.n, sc.ignore_eos,
            min_tokens, self.temperature, ids, None, None, None,
        )  # fmt: skip

    def build(self, rid: int, row: TraceRow | None) -> RequestSpec:
        if self._i >= len(self._in):
            self._refill()
        sc, i = self.sc, self._i
        self._i += 1
        in_len, out_len = self._in[i], self._out[i]
        if self.dataset is not None:
            return self._from_dataset(rid, out_len, row)
        if row is not None and row.hash_ids is not None and row.input_len:
            out_len = row.output_len or out_len
            ids = self._hashed(row.hash_ids, row.input_len, row.block_tokens)
            min_tokens = out_len if sc.ignore_eos else None
            if sc.api == "chat":
                messages = [{"role": "user", "content": ids_to_words(ids)}]
                return RequestSpec(
                    rid, sc.name, "chat", len(ids), out_len, sc.n, sc.ignore_eos, min_tokens,
                    self.temperature, None, None, messages, None,
                )  # fmt: skip
            return RequestSpec(
                rid, sc.name, "completions", len(ids), out_len, sc.n, sc.ignore_eos,
                min_tokens, self.temperature, ids, None, None, None,
            )  # fmt: skip
        prefix_id = f"{sc.name}-{self._pre[i]}" if sc.shared_prefix_len else None
        whole_len: int | None = None
        if row is not None:
            out_len = row.output_len or out_len
            whole_len = row.input_len
            if row.prefix_id is not None:
                prefix_id = row.prefix_id
        prefix = self.prefix_ids(prefix_id) if sc.shared_prefix_len and prefix_id else []
        if whole_len is not None:
            in_len = max(whole_len - len(prefix), 1)
        min_tokens = out_len if sc.ignore_eos else None
        if sc.api == "chat":
            messages = [{"role": "user", "content": self.words.take(in_len)}]
            if prefix:
                messages.insert(0, {"role": "system", "content": ids_to_words(prefix)})
            return RequestSpec(
                rid, sc.name, "chat", in_len + len(prefix), out_len, sc.n, sc.ignore_eos,
                min_tokens, self.temperature, None, None, messages, prefix_id,
            )  # fmt: skip
        ids = prefix + self.ids.take(in_len) if prefix else self.ids.take(in_len)
        return RequestSpec(
            rid, sc.name, "completions", len(ids), out_len, sc.n, sc.ignore_eos,
            min_tokens, self.temperature, ids, None, None, prefix_id,
        )  # fmt: skip


def iter_requests(
    wl: WorkloadSpec,
    *,
    seed: int = 0,
    trace_rows: Sequence[TraceRow] | None = None,
    vocab: tuple[int, int] = (VOCAB_LOW, VOCAB_HIGH),
) -> Iterator[RequestSpec]:
    """Requests of ``wl`` in order (endless unless ``trace_rows`` is given), reproducible from
    ``seed``. A mix picks each request's scenario by weight. Trace rows, when given, set each
    request's lengths and prefix id, and end the stream when they run out. ``vocab`` is the
    ``[low, high)`` range of prompt token ids."""
    rng = np.random.default_rng([seed, 1 << 20])
    streams = [_ScenarioStream(sc, i, seed, vocab) for i, sc in enumerate(wl.scenarios)]
    weights = np.array([sc.weight for sc in wl.scenarios], dtype=np.float64)
    weights /= weights.sum()
    limit = len(trace_rows) if trace_rows is not None else None
    rid = 0
    while True:
        if len(streams) > 1:
            picks = rng.choice(len(streams), size=BLOCK, p=weights).tolist()
        else:
            picks = [0] * BLOCK
        for k in picks:
            if limit is not None and rid >= limit:
                return
            row = trace_rows[rid] if trace_rows is not None else None
            yield streams[k].build(rid, row)
            rid += 1


# ------------------------------------------------------------------ shipped workloads
def workload_dirs() -> list[Path]:
    """Where names resolve: the repository's ``workloads/`` (the source of truth, in a source
    checkout) and the copy packaged in ``profiler/data/workloads`` (an installed wheel); a name
    found in both resolves to the first. A test keeps the two copies identical."""
    root = Path(__file__).resolve().parents[2]
    repo = root / "workloads"
    dirs = [repo] if (root / "pyproject.toml").is_file() and repo.is_dir() else []
    return dirs + ([PACKAGED] if PACKAGED.is_dir() else [])


def available_workloads() -> dict[str, Path]:
    """Shipped workload names -> their files, sorted by name."""
    found: dict[str, Path] = {}
    for d in workload_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def workload_from_name_or_path(s: str) -> WorkloadSpec:
    """A workload from a YAML path, or by name from the shipped workloads."""
    path = Path(s).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in s:
        if not path.exists():
            raise SpecError(
                f"workload file {path} does not exist",
                "pass an existing YAML file or a name from `infprof workloads`",
            )
        return load_yaml_model(path, WorkloadSpec)
    shipped = available_workloads()
    if s not in shipped:
        raise SpecError(
            f"unknown workload '{s}'",
            f"use one of: {', '.join(shipped) or '(none found)'}, or a YAML file",
        )
    return load_yaml_model(shipped[s], WorkloadSpec)
