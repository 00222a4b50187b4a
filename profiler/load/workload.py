"""Workloads -> a deterministic, lazy stream of requests.

Exact lengths use token-id prompts (``/v1/completions``) with ``ignore_eos`` and
``min_tokens`` = ``max_tokens``: the server must produce exactly the requested output. The
chat mode (``/v1/chat/completions``) sends words; each word is about one token for common
tokenizers, so its lengths are approximate (the record keeps the server's own counts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiler.errors import SpecError
from profiler.load.arrivals import TraceRow
from profiler.spec import LengthDist, Scenario, WorkloadSpec, load_yaml_model

BLOCK = 1024
# Token ids drawn for prompts: above the special tokens, inside every vocabulary we serve
# (the embedded tiny model has 2,048).
VOCAB_LOW, VOCAB_HIGH = 16, 2000
WORDS = (
    "the of and to in is that for it as with was on be by at this are from or an have not "
    "they which one you were all we can her has there been if more when will would who so no "
    "time about many then them these some other into than its only could new also two first "
    "any like after over such make where through most well even way because each good system "
    "data model server token request latency memory network cluster power energy"
).split()
PACKAGED = Path(__file__).resolve().parents[1] / "data" / "workloads"


@dataclass(frozen=True, slots=True)
class RequestSpec:
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
    """``size`` lengths from ``dist``, clipped to [min, max]."""
    if dist.kind == "fixed":
        assert dist.value is not None
        out = np.full(size, dist.value, dtype=np.float64)
    elif dist.kind == "uniform":
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
            p = w / w.sum()
        out = rng.choice(np.asarray(dist.values, dtype=np.float64), size=size, p=p)
    if dist.kind == "fixed":
        return out.astype(np.int64)
    return np.clip(np.rint(out), dist.min, dist.max).astype(np.int64)


class _ScenarioStream:
    """Lengths of one scenario, sampled in blocks (fast for millions of requests)."""

    def __init__(self, sc: Scenario, rng: np.random.Generator) -> None:
        self.sc, self.rng = sc, rng
        self._in = self._out = np.empty(0, dtype=np.int64)
        self._i = 0
        self._prefixes: dict[int, list[int]] = {}

    def next_lengths(self) -> tuple[int, int]:
        if self._i >= len(self._in):
            self._in = sample_lengths(self.sc.input, self.rng, BLOCK)
            self._out = sample_lengths(self.sc.output, self.rng, BLOCK)
            self._i = 0
        i = self._i
        self._i += 1
        return int(self._in[i]), int(self._out[i])

    def prefix(self, index: int, seed: int) -> list[int]:
        if index not in self._prefixes:
            r = np.random.default_rng([seed, 7919, index])
            self._prefixes[index] = r.integers(
                VOCAB_LOW, VOCAB_HIGH, self.sc.shared_prefix_len
            ).tolist()
        return self._prefixes[index]


def iter_requests(
    wl: WorkloadSpec,
    *,
    seed: int = 0,
    trace_rows: Sequence[TraceRow] | None = None,
    vocab: tuple[int, int] = (VOCAB_LOW, VOCAB_HIGH),
) -> Iterator[RequestSpec]:
    """Requests of ``wl`` in order, reproducible from ``seed``. Trace rows, when given, set each
    request's lengths and prefix (and end the stream when they run out)."""
    rng = np.random.default_rng(seed)
    streams = [
        _ScenarioStream(sc, np.random.default_rng([seed, i])) for i, sc in enumerate(wl.scenarios)
    ]
    weights = np.array([sc.weight for sc in wl.scenarios], dtype=np.float64)
    weights /= weights.sum()
    lo, hi = vocab
    i = 0
    while True:
        if trace_rows is not None and i >= len(trace_rows):
            return
        choices = (
            rng.choice(len(streams), size=BLOCK, p=weights)
            if len(streams) > 1
            else np.zeros(BLOCK, np.int64)
        )
        for k in choices:
            if trace_rows is not None and i >= len(trace_rows):
                return
            st = streams[int(k)]
            sc = st.sc
            in_len, out_len = st.next_lengths()
            prefix_id: str | None = None
            prefix_index = 0
            if sc.shared_prefix_len:
                prefix_index = int(rng.integers(sc.num_prefixes))
                prefix_id = f"{sc.name}-{prefix_index}"
            if trace_rows is not None:
                row = trace_rows[i]
                in_len = row.input_len or in_len
                out_len = row.output_len or out_len
                if row.prefix_id is not None:
                    prefix_id = row.prefix_id
                    prefix_index = abs(hash(row.prefix_id)) % (1 << 31)
            yield _build(i, sc, st, in_len, out_len, prefix_id, prefix_index, rng, lo, hi, seed)
            i += 1


def _build(
    i: int,
    sc: Scenario,
    st: _ScenarioStream,
    in_len: int,
    out_len: int,
    prefix_id: str | None,
    prefix_index: int,
    rng: np.random.Generator,
    lo: int,
    hi: int,
    seed: int,
) -> RequestSpec:
    prefix = st.prefix(prefix_index, seed) if sc.shared_prefix_len else []
    common = {
        "id": i,
        "scenario": sc.name,
        "api": sc.api,
        "input_len": in_len + len(prefix),
        "output_len": out_len,
        "n": sc.n,
        "ignore_eos": sc.ignore_eos,
        "min_tokens": out_len if sc.ignore_eos else None,
        "temperature": sc.temperature if sc.n == 1 else max(sc.temperature, 1.0),
        "prefix_id": prefix_id,
    }
    if sc.api == "chat":
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), in_len)]
        system = " ".join(WORDS[t % len(WORDS)] for t in prefix)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": " ".join(words)}
        ]
        return RequestSpec(messages=messages, **common)  # type: ignore[arg-type]
    ids = prefix + rng.integers(lo, hi, in_len).tolist()
    return RequestSpec(prompt_token_ids=ids, **common)  # type: ignore[arg-type]


# ------------------------------------------------------------------ shipped workloads
def workload_dirs() -> list[Path]:
    """Where names resolve: the repository's ``workloads/`` (a source checkout) and the copy
    packaged with the profiler (an installed wheel); the first that exists wins."""
    repo = Path(__file__).resolve().parents[2] / "workloads"
    return [d for d in (repo, PACKAGED) if d.is_dir()]


def available_workloads() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in workload_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def workload_from_name_or_path(s: str) -> WorkloadSpec:
    path = Path(s).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in s:
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
