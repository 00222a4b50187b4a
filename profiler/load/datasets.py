"""Prompts from real datasets in local files (never downloaded): ShareGPT, OpenAI-style chat
JSONL, and any JSONL, CSV or Parquet file with a prompt column.

Every format becomes a list of ``Conversation``s (a generic row is a one-turn conversation);
``DatasetStream`` hands them out in a seeded order, cycling when a run needs more than the
file holds, and tokenizes them with the model's tokenizer in blocks as they are needed (a
block of ``TOKENIZE_BLOCK`` entries, encoded in one batched call). A missing file or column
is one ``SpecError`` naming the file and the column.

Formats (``DatasetSpec.format``):
- ``sharegpt``: a JSON list (or JSONL) of ``{"conversations": [{"from": "human"|"gpt"|
  "system", "value": TEXT}, ...]}`` (``user``/``assistant``/``chatgpt``/``bard``/``bing`` are
  accepted as roles too);
- ``openai-chat``: JSONL (or a JSON list) of ``{"messages": [{"role": ..., "content": TEXT}]}``;
- ``jsonl``, ``csv``, ``parquet``: one prompt per row in ``prompt_column`` and, optionally, its
  output length (tokens) in ``output_len_column`` (default: ``output_len`` when present).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from profiler.errors import SpecError
from profiler.spec import DatasetSpec

TOKENIZE_BLOCK = 128
USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
SYSTEM_ROLES = {"system"}
_FIX_FILE = "pass an existing local file (datasets are read locally, never downloaded)"


@dataclass(frozen=True, slots=True)
class Conversation:
    """User messages in order, the recorded reply after each (None: none recorded), an
    optional system prompt, and (generic rows) an output length from the file."""

    users: tuple[str, ...]
    replies: tuple[str | None, ...]
    system: str | None = None
    output_len: int | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One tokenized turn: the user's message and the recorded reply (text and ids), and the
    output length the dataset gives (None: the scenario decides)."""

    user_text: str
    user_ids: list[int]
    reply_text: str | None
    reply_ids: list[int] | None
    output_len: int | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A tokenized conversation: its system prompt and turns."""

    system_text: str | None
    system_ids: list[int] | None
    turns: tuple[Turn, ...]


# ------------------------------------------------------------------ reading
def detect_format(path: Path) -> str:
    """The format of ``path`` from its suffix and, for JSON and JSONL, its first record."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    first = _first_record(path)
    if isinstance(first, dict):
        if "conversations" in first:
            return "sharegpt"
        if "messages" in first:
            return "openai-chat"
    return "jsonl"


def _first_record(path: Path) -> Any:
    """The first JSON record of a JSON list or a JSONL file (None when neither)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith(b"["):
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            return None
        return data[0] if isinstance(data, list) and data else None
    line = head.split(b"\n", 1)[0]
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_dataset(spec: DatasetSpec) -> list[Conversation]:
    """The conversations of ``spec``'s file (cached per file and options: a run reads it once
    for the check before the server starts and once for the load)."""
    path = Path(spec.path).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise SpecError(f"dataset {path} does not exist", _FIX_FILE) from None
    if not path.is_file():
        raise SpecError(f"dataset {path} is not a file", _FIX_FILE)
    return _read_cached(
        str(path.resolve()),
        st.st_mtime_ns,
        st.st_size,
        spec.format,
        spec.prompt_column,
        spec.output_len_column,
    )


@functools.lru_cache(maxsize=2)
def _read_cached(
    file: str, _mtime: int, _size: int, fmt: str, prompt_col: str, out_col: str | None
) -> list[Conversation]:
    path = Path(file)
    if fmt == "auto":
        fmt = detect_format(path)
    try:
        if fmt in ("sharegpt", "openai-chat"):
            convs = _read_chats(path, fmt)
        else:
            convs = _read_rows(path, fmt, prompt_col, out_col)
    except OSError as e:
        raise SpecError(f"dataset {path}: cannot read ({e.strerror})", "check the file") from None
    if not convs:
        raise SpecError(
            f"dataset {path} ({fmt}) has no usable prompt",
            "check the format (--dataset-format) and that the file holds user messages",
        )
    return convs


def _json_records(path: Path) -> list[tuple[int, Any]]:
    """(line or item number, record) of a JSON list or a JSONL file."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith(b"["):
        try:
            data = json.loads(path.read_bytes())
        except ValueError as e:
            raise SpecError(f"dataset {path}: not valid JSON ({e})", "fix the file") from None
        return list(enumerate(data, start=1))
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append((line_no, json.loads(line)))
            except ValueError:
                raise SpecError(
                    f"dataset {path}:{line_no}: not a JSON object", "one JSON object per line"
                ) from None
    return out


def _read_chats(path: Path, fmt: str) -> list[Conversation]:
    key, role_key, text_key = (
        ("conversations", "from", "value") if fmt == "sharegpt" else ("messages", "role", "content")
    )
    out: list[Conversation] = []
    seen_key = False
    for where, rec in _json_records(path):
        if not isinstance(rec, dict):
            raise SpecError(
                f"dataset {path}:{where}: not a JSON object", f"each record needs '{key}'"
            )
        msgs = rec.get(key)
        if msgs is None:
            continue
        seen_key = True
        if not isinstance(msgs, list):
            raise SpecError(f"dataset {path}:{where}: '{key}' is not a list", f"fix '{key}'")
        conv = _conversation(msgs, role_key, text_key)
        if conv is not None:
            out.append(conv)
    if not seen_key:
        raise SpecError(
            f"dataset {path}: no record has a '{key}' field ({fmt})",
            "check --dataset-format (sharegpt: conversations; openai-chat: messages)",
        )
    return out


def _conversation(msgs: list[Any], role_key: str, text_key: str) -> Conversation | None:
    system: str | None = None
    users: list[str] = []
    replies: list[str | None] = []
    for m in msgs:
        if not isinstance(m, dict):
            continue
        role = str(m.get(role_key, "")).lower()
        text = m.get(text_key)
        if not isinstance(text, str) or not text.strip():
            continue
        if role in SYSTEM_ROLES and not users:
            system = text if system is None else f"{system}\n{text}"
        elif role in USER_ROLES:
            if users and replies[-1] is None:  # two user messages in a row: one turn
                users[-1] = f"{users[-1]}\n{text}"
            else:
                users.append(text)
                replies.append(None)
        elif role in ASSISTANT_ROLES and users:  # a reply before any user message is dropped
            prev = replies[-1]
            replies[-1] = text if prev is None else f"{prev}\n{text}"
    if not users:
        return None
    return Conversation(tuple(users), tuple(replies), system)


def _read_rows(path: Path, fmt: str, prompt_col: str, out_col: str | None) -> list[Conversation]:
    columns, rows = _table(path, fmt)
    if prompt_col not in columns:
        raise SpecError(
            f"dataset {path}: no column '{prompt_col}' (found: {', '.join(columns) or 'nothing'})",
            "set the prompt column (--prompt-column or dataset.prompt_column) to one of them",
        )
    if out_col is not None and out_col not in columns:
        raise SpecError(
            f"dataset {path}: no column '{out_col}' (found: {', '.join(columns)})",
            "set the output-length column (--output-len-column) to one of them, or drop it",
        )
    out_key = (
        out_col if out_col is not None else ("output_len" if "output_len" in columns else None)
    )
    out: list[Conversation] = []
    for where, row in rows:
        text = row.get(prompt_col)
        if not isinstance(text, str) or not text.strip():
            continue
        n: int | None = None
        if out_key is not None and row.get(out_key) not in (None, ""):
            try:
                n = int(float(row[out_key]))
            except (TypeError, ValueError):
                raise SpecError(
                    f"dataset {path}:{where}: column '{out_key}' = {row[out_key]!r} is not a "
                    "number of tokens",
                    f"fix '{out_key}'",
                ) from None
            n = n if n >= 1 else None
        out.append(Conversation((text,), (None,), None, n))
    return out


def _table(path: Path, fmt: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Column names and (row number, row) of a JSONL, CSV or Parquet file."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises ArrowInvalid and friends
            raise SpecError(f"dataset {path}: not a Parquet file ({e})", "fix the file") from None
        return table.column_names, list(enumerate(table.to_pylist(), start=1))
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return list(reader.fieldnames or []), list(enumerate(reader, start=2))
    records = _json_records(path)
    cols: list[str] = []
    for _, rec in records[:1]:
        if isinstance(rec, dict):
            cols = list(rec)
    rows = []
    for where, rec in records:
        if not isinstance(rec, dict):
            raise SpecError(f"dataset {path}:{where}: not a JSON object", "one object per line")
        rows.append((where, rec))
    return cols, rows


# ------------------------------------------------------------------ stream
class DatasetStream:
    """Tokenized conversations of a dataset in a seeded order (the file's order when
    ``shuffle`` is off), cycling when more are needed than the file holds."""

    def __init__(self, spec: DatasetSpec, seed: int, index: int) -> None:
        if spec.tokenizer is None:
            raise SpecError(
                f"dataset {spec.path}: prompts are tokenized with the model's tokenizer, and "
                "none is known",
                "pass --tokenizer (a tokenizer.json or a model directory holding one)",
            )
        from profiler.load.tokens import load_encoder

        self.spec = spec
        self.convs = read_dataset(spec)
        self.encode: Callable[[list[str]], list[list[int]]] = load_encoder(
            spec.tokenizer, option="--tokenizer"
        )
        self._rng = np.random.default_rng([seed, index, 11])
        self._order: list[int] = []
        self._ready: list[Entry] = []
        self._pos = 0

    def _next_indices(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if not self._order:
                count = len(self.convs)
                order = self._rng.permutation(count) if self.spec.shuffle else np.arange(count)
                self._order = order.tolist()[::-1]  # pop() from the end keeps the order
            out.append(self._order.pop())
        return out

    def _tokenize(self) -> None:
        convs = [self.convs[i] for i in self._next_indices(TOKENIZE_BLOCK)]
        texts: list[str] = []
        for c in convs:
            texts.append(c.system or "")
            for u, r in zip(c.users, c.replies, strict=True):
                texts.append(u)
                texts.append(r or "")
        ids = self.encode(texts)
        pos = 0
        entries: list[Entry] = []
        use_dataset_len = self.spec.output_len == "dataset"
        for c in convs:
            system_ids = ids[pos] if c.system else None
            pos += 1
            turns = []
            for u, r in zip(c.users, c.replies, strict=True):
                user_ids, reply_ids = ids[pos], ids[pos + 1]
                pos += 2
                out_len: int | None = None
                if use_dataset_len:
                    out_len = (
                        c.output_len
                        if c.output_len is not None
                        else (max(len(reply_ids), 1) if r is not None else None)
                    )
                turns.append(Turn(u, user_ids, r, reply_ids if r is not None else None, out_len))
            entries.append(Entry(c.system, system_ids, tuple(turns)))
        self._ready = entries
        self._pos = 0

    def next(self) -> Entry:
        if self._pos >= len(self._ready):
            self._tokenize()
        e = self._ready[self._pos]
        self._pos += 1
        return e


def check_datasets(specs: list[DatasetSpec]) -> None:
    """Read every dataset once (a missing file, column or tokenizer fails here, before the run
    directory and the server)."""
    for spec in specs:
        DatasetStream(spec, 0, 0)
