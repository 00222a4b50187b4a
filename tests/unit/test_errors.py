"""``SpecError.from_validation``: the one place a pydantic error becomes a one-line SpecError."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from profiler.errors import SpecError


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = 1.0
    burst: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> _M:
        if self.rate > 100:
            raise ValueError("rate is above 100")
        return self


def _error(**data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _M.model_validate(data)
    return info.value


def test_field_error_names_the_field_and_counts_the_rest() -> None:
    e = _error(rate="x", burst="y")
    err = SpecError.from_validation(
        e, "opts: {field}{msg}{more}", "correct '{loc}' in {where}", where="f.yaml"
    )
    assert err.message.startswith("opts: rate: Input should be a valid number")
    assert err.message.endswith(" (+1 more)")
    assert err.fix == "correct 'rate' in f.yaml"


def test_top_level_error_has_no_empty_field_and_reason_drops_value_error() -> None:
    e = _error(rate=500)
    err = SpecError.from_validation(e, "opts: {field}{reason}", "fix")
    assert err.message == "opts: rate is above 100"
    raw = SpecError.from_validation(e, "{msg}{more}", "fix")
    assert raw.message == "Value error, rate is above 100"


def test_braces_in_names_are_not_format_fields() -> None:
    err = SpecError.from_validation(_error(rate="x"), "{where}: {loc}", "fix", where="dir{x}")
    assert err.message == "dir{x}: rate"


def test_each_domain_error_exits_with_its_documented_code() -> None:
    """docs/failures.md's table: the code each error class ends the CLI with; a subclass that
    names none keeps its base's (RayClusterError is a ServerError)."""
    from profiler import errors
    from profiler.cluster import RayClusterError

    expected = {
        errors.InfprofError: 1,
        errors.SpecError: 2,
        errors.ServerError: 3,
        errors.EndpointError: 4,
        errors.StorageError: 5,
        errors.RunInterrupted: 6,
        errors.RegressionDetected: 7,
        errors.RequestsFailing: 8,
        RayClusterError: 3,
    }
    assert {cls: cls("m", "f").exit_code for cls in expected} == expected
    assert errors.StorageError("cannot write x", "free disk space").one_line() == (
        "cannot write x (fix: free disk space)"
    )
