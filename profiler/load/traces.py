"""Public request traces read natively: Mooncake, Azure LLM inference and BurstGPT.

Each becomes ``TraceRow``s (seconds from the first request, whole prompt tokens, output tokens)
that ``profiler.load.arrivals`` replays like infprof's own trace format. The formats, as their
publishers document them:

- Mooncake (kvcache-ai/Mooncake, ``FAST25-release/traces/*.jsonl`` and its README): JSONL,
  one request per line: ``timestamp`` (milliseconds since the first request), ``input_length``
  and ``output_length`` (tokens), ``hash_ids`` (the prompt's 512-token blocks, remapped:
  requests sharing leading hash ids share that prefix). A replay builds each prompt from one
  block of ids per hash id, so it reproduces the trace's prefix reuse.
- Azure LLM inference traces 2023 and 2024 (Azure/AzurePublicDataset,
  ``AzureLLMInferenceDataset2023.md``/``2024.md``, ``data/AzureLLMInferenceTrace_*.csv``): CSV
  with ``TIMESTAMP`` (invocation time, e.g. ``2023-11-16 18:15:46.6805900``), ``ContextTokens``
  and ``GeneratedTokens``.
- BurstGPT (HPMLL/BurstGPT, ``BurstGPT_*.csv``): CSV with ``Timestamp`` (seconds),
  ``Model``, ``Request tokens``, ``Response tokens``, ``Total tokens``, ``Log Type``. Rows whose
  ``Response tokens`` is 0 are the trace's failed requests (its README) and are skipped.

Token counts below 1 become 1 (a request needs a prompt and asks for at least one token).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiler.errors import SpecError

FORMATS = ("infprof", "mooncake", "azure", "burstgpt")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
_FIX_FORMAT = "pass --trace-format infprof, mooncake, azure or burstgpt"


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of a trace (infprof's own or a public one): when, and what sizes."""

    timestamp_s: float
    input_len: int | None = None
    output_len: int | None = None
    prefix_id: str | None = None
    # Mooncake: the prompt's blocks of ``block_tokens`` tokens, by hash id (shared ids are
    # shared prefixes)
    hash_ids: tuple[int, ...] | None = None
    block_tokens: int = 512


def detect(path: Path) -> str:
    """The trace format of ``path``: from a CSV header, or from the first JSONL object."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [c.strip() for c in f.readline().strip().split(",")]
        if all(c in header for c in AZURE_COLUMNS):
            return "azure"
        if all(c in header for c in BURSTGPT_COLUMNS):
            return "burstgpt"
        return "infprof"  # its reader names the missing timestamp column
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    raise SpecError(
                        f"{path}:1: not a JSON object", "one JSON object per line"
                    ) from None
                if isinstance(first, dict) and "input_length" in first:
                    return "mooncake"
                return "infprof"
    return "infprof"


def read_mooncake(path: Path, block_tokens: int) -> list[TraceRow]:
    rows: list[TraceRow] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                raise SpecError(
                    f"{path}:{line_no}: not a JSON object", "one JSON object per line"
                ) from None
            if not isinstance(d, dict):
                raise SpecError(f"{path}:{line_no}: not a JSON object", "one JSON object per line")
            missing = [k for k in MOONCAKE_FIELDS if d.get(k) is None]
            if missing:
                raise SpecError(
                    f"{path}:{line_no}: Mooncake field '{missing[0]}' is missing",
                    "every line needs timestamp (ms), input_length, output_length",
                )
            try:
                ts_ms = float(d["timestamp"])
                inp, out = int(d["input_length"]), int(d["output_length"])
                hashes = d.get("hash_ids")
                hash_ids = tuple(int(h) for h in hashes) if isinstance(hashes, list) else None
            except (TypeError, ValueError):
                raise SpecError(
                    f"{path}:{line_no}: a Mooncake field is not a number",
                    "timestamp, input_length, output_length are numbers; hash_ids a list of ints",
                ) from None
            rows.append(
                TraceRow(ts_ms / 1000.0, max(inp, 1), max(out, 1), None, hash_ids, block_tokens)
            )
    return rows


def _csv_columns(path: Path, names: tuple[str, ...], kind: str) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SpecError(f"trace {path}: cannot read it as CSV ({e})", "check the file") from None
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise SpecError(
            f"trace {path}: no column '{missing[0]}' ({kind} traces have {', '.join(names)})",
            _FIX_FORMAT,
        )
    out: dict[str, np.ndarray] = {}
    for n in names:
        col = table.column(n)
        if pa.types.is_timestamp(col.type):
            out[n] = col.cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e9
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                stamps = np.array(col.to_pylist(), dtype="datetime64[ns]")
            except ValueError:
                raise SpecError(
                    f"trace {path}: column '{n}' holds values that are neither numbers nor times",
                    f"fix '{n}'",
                ) from None
            out[n] = stamps.astype(np.int64) / 1e9
        else:
            try:
                out[n] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
            except (TypeError, ValueError):
                raise SpecError(
                    f"trace {path}: column '{n}' is not numeric", f"fix '{n}'"
                ) from None
    return out


def read_azure(path: Path) -> list[TraceRow]:
    c = _csv_columns(path, AZURE_COLUMNS, "Azure LLM inference")
    ts, ctx, gen = c["TIMESTAMP"], c["ContextTokens"], c["GeneratedTokens"]
    keep = ~(np.isnan(ts) | np.isnan(ctx) | np.isnan(gen))
    return [
        TraceRow(float(t), max(int(i), 1), max(int(o), 1))
        for t, i, o in zip(ts[keep].tolist(), ctx[keep].tolist(), gen[keep].tolist(), strict=True)
    ]


def read_burstgpt(path: Path) -> list[TraceRow]:
    c = _csv_columns(path, BURSTGPT_COLUMNS, "BurstGPT")
    ts, req, resp = c["Timestamp"], c["Request tokens"], c["Response tokens"]
    keep = ~(np.isnan(ts) | np.isnan(req) | np.isnan(resp)) & (np.nan_to_num(resp) > 0)
    return [
        TraceRow(float(t), max(int(i), 1), int(o))
        for t, i, o in zip(ts[keep].tolist(), req[keep].tolist(), resp[keep].tolist(), strict=True)
    ]


def read_foreign(path: Path, fmt: str, block_tokens: int = 512) -> list[TraceRow]:
    """Rows of a Mooncake, Azure or BurstGPT trace (unsorted, times as in the file)."""
    if fmt == "mooncake":
        return read_mooncake(path, block_tokens)
    if fmt == "azure":
        return read_azure(path)
    if fmt == "burstgpt":
        return read_burstgpt(path)
    raise SpecError(f"unknown trace format '{fmt}'", _FIX_FORMAT)
