"""Load a YAML file (a workload, a saved sweep.json: YAML is a superset of JSON) into a pydantic
spec model; every failure names the file, the line, the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from profiler.errors import SpecError

_M = TypeVar("_M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[_M]) -> _M:
    """Load a YAML file into ``model``; every failure names the file, the field and the fix."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror})", "check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} is not valid YAML", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top", "see workloads/chat.yaml")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        allowed = ""
        if err["type"] == "extra_forbidden":
            allowed = f"; allowed fields: {', '.join(_allowed_fields(model, err['loc']))}"
        raise SpecError.from_validation(
            e,
            "{path}:{line} field '{place}': {msg}{more}",
            "correct '{place}'{allowed}",
            path=path,
            line=_line_of(text, err["loc"]),
            allowed=allowed,
        ) from None


def _line_of(text: str, loc: tuple[int | str, ...]) -> str:
    """Best-effort line number of the last named key of ``loc`` in ``text``."""
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return ""
    key = names[-1]
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" -")
        if stripped.startswith(f"{key}:"):
            return f" line {i}"
    return ""


def _allowed_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            break
        ann = field.annotation
        inner = _model_in(ann)
        if inner is None:
            break
        current = inner
    return sorted(current.model_fields)


def _model_in(ann: object) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
