"""NVML device names to hardware-catalog keys, without pydantic (tests/gpu/run.sh uses it on
machines that have none)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


def match_nvml_name(nvml_name: str, patterns: Mapping[str, Iterable[str]]) -> str | None:
    """The key whose pattern is the longest found in ``nvml_name`` ('NVIDIA H100 80GB HBM3'),
    case-insensitively, ending where a word ends: 'L4' is not in 'NVIDIA L40S', 'H20' not in
    'NVIDIA H200'. ``patterns``: key -> the catalog's ``nvml_names``."""
    low = nvml_name.lower()
    best: tuple[int, str] | None = None
    for key, pats in patterns.items():
        for pat in pats:
            found = re.search(re.escape(pat.lower()) + r"(?![0-9a-z])", low)
            if found and (best is None or len(pat) > best[0]):
                best = (len(pat), key)
    return best[1] if best else None
