"""The two shapes every file model is made of: ``Part`` (a typed part of a file, unknown
keys kept) and ``Artifact`` (a whole file: load, save, migration, key order kept)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from profiler.errors import StorageError
from profiler.store.files import write_json_atomic
from profiler.store.schema.migrations import migrate


class Part(BaseModel):
    """A typed part of a file: known keys checked, unknown keys kept (see the module doc)."""

    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written (the keys the document has, unknown ones included)."""
        return self.model_dump(exclude_unset=True)


class Artifact(Part):
    """A whole file: ``load``, ``save``, and the migration of older versions."""

    FILE: ClassVar[str]
    KIND: ClassVar[str]
    CURRENT: ClassVar[int] = 1

    schema_version: int = 1
    _shape: Any = PrivateAttr(default=None)  # the file as read: its key order is kept on save

    def to_dict(self) -> dict[str, Any]:
        return _in_order(super().to_dict(), self._shape)  # type: ignore[no-any-return]

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return migrate(cls.KIND, data)

    @classmethod
    def load(cls, path: Path) -> Self:
        """The file at ``path`` (a directory: its ``FILE``), migrated and checked;
        StorageError naming the file (and the field) when it is missing or malformed."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StorageError(f"{path} does not exist", cls._fix()) from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}", "fix permissions") from None
        except json.JSONDecodeError as e:
            raise StorageError(
                f"{path} is not valid JSON ({e.msg}, line {e.lineno})", "restore it or rerun"
            ) from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: Any, where: Path | str) -> Self:
        """``data`` (a file's JSON) as this document; StorageError naming ``where``."""
        if not isinstance(data, dict):
            raise StorageError(f"{where} is not a JSON object", cls._fix())
        try:
            doc = cls.model_validate(data)
        except ValidationError as e:
            raise StorageError.from_validation(
                e, "{where}: field {place}: {msg}{more}", "{remedy}", where=where, remedy=cls._fix()
            ) from None
        doc._shape = migrate(cls.KIND, data)
        return doc

    @classmethod
    def _fix(cls) -> str:
        return f"pass a directory written by infprof, or restore its {cls.FILE}"

    def save(self, path: Path) -> None:
        """Replace the file atomically (``path`` a directory: its ``FILE``)."""
        path = Path(path)
        if path.is_dir():
            path = path / self.FILE
        self.schema_version = type(self).CURRENT
        write_json_atomic(path, self.to_dict())


def _in_order(value: Any, shape: Any) -> Any:
    """``value`` with its keys in ``shape``'s order (new keys after them), at every level."""
    if isinstance(value, dict):
        ref = shape if isinstance(shape, dict) else {}
        rank = {k: i for i, k in enumerate(ref)}
        keys = sorted(value, key=lambda k: rank.get(k, len(rank)))
        return {k: _in_order(value[k], ref.get(k)) for k in keys}
    if isinstance(value, list) and isinstance(shape, list) and len(shape) == len(value):
        return [_in_order(v, r) for v, r in zip(value, shape, strict=True)]
    return value
