"""One base exception for every domain error; the CLI turns each into a one-line message.

Exit codes (documented in docs/failures.md):
  0  success
  1  unexpected internal error (a bug: please report it)
  2  bad input: flags, workload or spec files (click's own usage errors also exit 2)
  3  the server could not be started or never became ready
  4  the endpoint is unreachable or answered wrongly
  5  the run directory cannot be written (permissions, disk full)
  6  the run ended early: interrupted (SIGINT/SIGTERM), the server died, or the endpoint was
     lost mid-run (requests in a row could not connect); completed records kept
  7  a regression beyond the threshold (``infprof compare``)
  8  requests failed: the first 20 (or those of the first 10 s) all failed, or the error rate
     passed ``--max-error-rate``; the records are kept (``profiler.load.guard``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # no pydantic at import time: profiler/telemetry/ imports this module
    from pydantic import ValidationError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_SERVER = 3
EXIT_ENDPOINT = 4
EXIT_STORAGE = 5
EXIT_INTERRUPTED = 6
EXIT_REGRESSION = 7
EXIT_FAILING = 8


class InfprofError(Exception):
    """Base of every error the profiler raises on purpose. A subclass names its exit code in
    its header (``class StorageError(InfprofError, exit_code=EXIT_STORAGE)``); one that does
    not keeps its base's."""

    exit_code = EXIT_INTERNAL

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message

    @classmethod
    def from_validation(
        cls, e: ValidationError, message: str, fix: str, *, within: str = "", **names: Any
    ) -> Self:
        """The first error of pydantic's ``e`` as one line. ``message`` and ``fix`` are format
        strings over ``names`` and: ``{loc}`` the dotted field path ('' at the top level; after
        ``within`` when the validated data sits there), ``{place}`` that path or '(top level)',
        ``{field}`` the path and ': ' (or nothing), ``{msg}`` pydantic's message, ``{reason}``
        the same without pydantic's 'Value error, ', ``{more}`` ' (+N more)' when N more errors."""
        errs = e.errors()
        err = errs[0]
        loc = ".".join(p for p in (within, *map(str, err["loc"])) if p)
        parts = {
            "loc": loc,
            "place": loc or "(top level)",
            "field": f"{loc}: " if loc else "",
            "msg": err["msg"],
            "reason": err["msg"].removeprefix("Value error, "),
            "more": f" (+{len(errs) - 1} more)" if len(errs) > 1 else "",
            **names,
        }
        return cls(message.format(**parts), fix.format(**parts))


class SpecError(InfprofError, exit_code=EXIT_BAD_INPUT):
    """Bad flags, workload YAML or spec values."""


class ServerError(InfprofError, exit_code=EXIT_SERVER):
    """The model server could not be started or died."""


class EndpointError(InfprofError, exit_code=EXIT_ENDPOINT):
    """The endpoint is unreachable or not OpenAI-compatible."""


class StorageError(InfprofError, exit_code=EXIT_STORAGE):
    """The run directory cannot be written."""


class RunInterrupted(InfprofError, exit_code=EXIT_INTERRUPTED):
    """The run stopped early; completed records were kept."""


class RegressionDetected(InfprofError, exit_code=EXIT_REGRESSION):
    """A compared metric regressed beyond its threshold."""


class RequestsFailing(InfprofError, exit_code=EXIT_FAILING):
    """The run stopped because its requests failed (early stop, ``--max-error-rate``)."""
