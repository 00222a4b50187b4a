"""Which GPUs are the server's: the scope every GPU figure of a run covers.

Chosen in this order (the first that applies wins):

1. ``explicit``: ``--gpus`` (NVML indices or UUIDs); an unknown one is a ``SpecError``.
2. ``cuda_visible_devices``: the ``CUDA_VISIBLE_DEVICES`` of a server infprof launched (its
   environment is known; an attached endpoint's is not). Entries may be indices, UUIDs
   (``GPU-`` optional, a unique prefix is enough, as CUDA allows) or MIG ids (the figures are
   then the parent GPU's: NVML's power, energy and utilization are per physical GPU). CUDA
   stops at the first entry it cannot use, and so does this. Indices are NVML's only when CUDA
   enumerates in PCI order too: with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, or on a node of one GPU
   model (CUDA's default fastest-first order is then the PCI order, the assumption vLLM makes
   too); on a mixed node without it they are ambiguous and this method is skipped.
3. ``server_processes``: the GPUs on which NVML lists a process of the server's tree. Known only
   once the run has sampled: recorded as pending (``gpus`` None) at the start, decided from the
   samples at the end (``decide_from_processes``).
4. ``all``: every GPU, with the reason nothing narrower was known.

For a launched server, methods 1 and 2 keep the first ``tp x pp x dp`` GPUs of the list: vLLM's
workers take the visible GPUs in order, and the rest stay idle.

Imports neither pynvml nor pydantic: the NVML look-ups it needs are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from profiler.errors import SpecError

METHODS = ("explicit", "cuda_visible_devices", "server_processes", "all")
PENDING_NOTE = "decided at the end of the run: the GPUs NVML lists the server's processes on"
MigParent = Callable[[str], int | None]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of this host as NVML numbers it."""

    index: int
    uuid: str | None = None
    name: str | None = None

    @classmethod
    def from_inventory(cls, gpus: Iterable[Mapping[str, Any]]) -> list[GpuInfo]:
        """From ``inventory()['gpus']`` (or manifest.json ``gpus``)."""
        out = []
        for g in gpus:
            if isinstance(g, Mapping) and isinstance(g.get("index"), int):
                out.append(cls(int(g["index"]), g.get("uuid"), g.get("name")))
        return out


@dataclass(frozen=True)
class GpuScope:
    """The server's GPUs (NVML indices as strings, as the samples' ``device``) and how they
    were chosen. ``gpus`` is None while method 3 waits for the samples."""

    gpus: tuple[str, ...] | None
    uuids: tuple[str | None, ...] | None
    method: str
    reason: str | None = None

    @property
    def pending(self) -> bool:
        return self.gpus is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": None if self.gpus is None else list(self.gpus),
            "uuids": None if self.uuids is None else list(self.uuids),
            "method": self.method,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Any) -> GpuScope | None:
        """From manifest.json ``gpu_scope``; None when absent or not understood."""
        if not isinstance(d, Mapping) or d.get("method") not in METHODS:
            return None
        gpus, uuids = d.get("gpus"), d.get("uuids")
        return cls(
            None if gpus is None else tuple(str(g) for g in gpus),
            None if uuids is None else tuple(uuids),
            str(d["method"]),
            d.get("reason"),
        )


def of(
    indices: Sequence[int | str], gpus: Sequence[GpuInfo], method: str, reason: str | None
) -> GpuScope:
    uuid = {str(g.index): g.uuid for g in gpus}
    names = tuple(str(i) for i in indices)
    return GpuScope(names, tuple(uuid.get(n) for n in names), method, reason)


def parse_ids(text: str | Sequence[str] | None) -> list[str] | None:
    """``"0, 3"`` or ``["0", "3"]`` -> ``["0", "3"]`` (None stays None)."""
    if text is None:
        return None
    parts = (
        text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    )
    return [p.strip() for p in parts if p.strip()]


def _by_uuid(token: str, gpus: Sequence[GpuInfo]) -> GpuInfo | None:
    """A full UUID or a unique prefix, ``GPU-`` optional (CUDA's rules); None if not exactly one."""
    want = token.lower() if token.lower().startswith("gpu-") else f"gpu-{token.lower()}"
    hits = [g for g in gpus if g.uuid and g.uuid.lower().startswith(want)]
    return hits[0] if len(hits) == 1 else None


def _one(
    token: str, gpus: Sequence[GpuInfo], mig_parent: MigParent | None
) -> tuple[int | None, str | None]:
    """(NVML index or None, a note: why not, or what it means)."""
    if token.lstrip("-").isdigit():
        n = int(token)
        if any(g.index == n for g in gpus):
            return n, None
        return None, f"no GPU {n}"
    if token.upper().startswith("MIG-"):
        rest = token[4:]
        if (
            rest.upper().startswith("GPU-") and "/" in rest
        ):  # MIG-GPU-<uuid>/<gi>/<ci> (old drivers)
            g = _by_uuid(rest.split("/", 1)[0], gpus)
            if g is not None:
                return g.index, f"{token} is a MIG instance of GPU {g.index}"
        elif mig_parent is not None:
            idx = mig_parent(token)
            if idx is not None:
                return idx, f"{token} is a MIG instance of GPU {idx}"
        return None, f"MIG instance {token} could not be mapped to its GPU"
    g = _by_uuid(token, gpus)
    if g is not None:
        return g.index, None
    return None, f"no GPU with UUID {token} (or the prefix is not unique)"


def _host_gpus(gpus: Sequence[GpuInfo]) -> str:
    if not gpus:
        return "none"
    return ", ".join(f"{g.index} ({(g.uuid or '?')[:12]})" for g in gpus)


def resolve_explicit(
    ids: Sequence[str],
    gpus: Sequence[GpuInfo],
    *,
    option: str = "--gpus",
    mig_parent: MigParent | None = None,
) -> list[int]:
    """NVML indices of ``--gpus``; ``SpecError`` naming the option and this host's GPUs."""
    if not ids:
        raise SpecError(f"{option}: no GPU given", f"e.g. {option} 0,1 (see `infprof gpus`)")
    out: list[int] = []
    for token in ids:
        idx, why = _one(token, gpus, mig_parent)
        if idx is None:
            raise SpecError(
                f"{option} {','.join(ids)}: {why}; this host's GPUs: {_host_gpus(gpus)}",
                f"pass NVML indices or UUIDs of this host's GPUs to {option} (`infprof gpus` lists them)",
            )
        if idx not in out:
            out.append(idx)
    return out


def check_here(gpus: str | Sequence[str], option: str = "--gpus") -> list[int]:
    """``--gpus`` as NVML indices of this host's GPUs (asks NVML); ``SpecError`` naming the
    option and the GPUs that exist, or saying NVML is not available here."""
    from profiler.telemetry import nvml

    ids = parse_ids(gpus) or []
    found, state = nvml.gpu_ids()
    if state is not None:
        raise SpecError(
            f"{option} {','.join(ids)}: NVML is not available on this host ({state.reason})",
            f"drop {option}: GPU figures come from this host's NVML",
        )
    return resolve_explicit(
        ids, GpuInfo.from_inventory(found), option=option, mig_parent=nvml.mig_parent_index
    )


def from_cuda_visible_devices(
    value: str,
    gpus: Sequence[GpuInfo],
    *,
    device_order: str | None = None,
    mig_parent: MigParent | None = None,
) -> tuple[list[int] | None, str]:
    """The NVML indices ``CUDA_VISIBLE_DEVICES`` makes visible, and a note. None when they
    cannot be known here (ambiguous index order, a MIG id NVML could not map)."""
    tokens = [t.strip() for t in value.split(",")]
    if not value.strip():
        return [], "CUDA_VISIBLE_DEVICES is empty: the server sees no GPU"
    names = {g.name for g in gpus}
    pci_order = (device_order or "").strip().upper() == "PCI_BUS_ID" or len(names) <= 1
    out: list[int] = []
    notes: list[str] = []
    for token in tokens:
        if token.lstrip("-").isdigit() and not pci_order:
            return None, (
                f"CUDA_VISIBLE_DEVICES={value} holds indices, and on this node of mixed GPUs "
                f"({', '.join(sorted(n or '?' for n in names))}) CUDA numbers them fastest first, "
                "not as NVML does (set CUDA_DEVICE_ORDER=PCI_BUS_ID, or use UUIDs)"
            )
        idx, note = _one(token, gpus, mig_parent)
        if idx is None:
            if token.upper().startswith("MIG-"):
                return None, f"CUDA_VISIBLE_DEVICES={value}: {note}"
            notes.append(f"CUDA stops at '{token}' ({note})")
            break
        if note:
            notes.append(note)
        if idx not in out:
            out.append(idx)
    if any("MIG instance" in n for n in notes):
        notes.append("NVML's power, energy and utilization cover the whole GPU")
    if not out:
        notes.append("the server sees no GPU")
    return out, "; ".join([f"CUDA_VISIBLE_DEVICES={value}", *notes])


def narrow(indices: list[int], world_size: int | None) -> tuple[list[int], str | None]:
    """The first ``world_size`` GPUs (vLLM's workers take the visible GPUs in order)."""
    if world_size is None or world_size >= len(indices):
        return indices, None
    return indices[:world_size], (
        f"the server uses the first {world_size} of the {len(indices)} GPUs it is given "
        "(tensor x pipeline x data parallel size)"
    )


def choose(
    gpus: Sequence[GpuInfo],
    *,
    explicit: Sequence[str] | None = None,
    server_env: Mapping[str, str] | None = None,
    world_size: int | None = None,
    server_tree: bool = False,
    mig_parent: MigParent | None = None,
) -> GpuScope:
    """The scope at the start of a run. ``server_env``: the environment of a server infprof
    launched (None when attached to an endpoint); ``world_size``: the GPUs that server uses
    (None: unknown, keep all it is given); ``server_tree``: infprof knows the server's
    processes (method 3 can decide at the end)."""
    if explicit is not None:
        idx, note = narrow(resolve_explicit(explicit, gpus, mig_parent=mig_parent), world_size)
        return of(idx, gpus, "explicit", "; ".join(["--gpus", *([note] if note else [])]))
    notes: list[str] = []
    if server_env is not None:
        cvd = server_env.get("CUDA_VISIBLE_DEVICES")
        if cvd is not None:
            idx_or_none, why = from_cuda_visible_devices(
                cvd, gpus, device_order=server_env.get("CUDA_DEVICE_ORDER"), mig_parent=mig_parent
            )
            if idx_or_none is not None:
                idx, note = narrow(idx_or_none, world_size)
                return of(
                    idx, gpus, "cuda_visible_devices", "; ".join([why, *([note] if note else [])])
                )
            notes.append(why)
        else:
            notes.append("the server's environment sets no CUDA_VISIBLE_DEVICES")
    else:
        notes.append("attached to an endpoint: its CUDA_VISIBLE_DEVICES is not known")
    if server_tree:
        return GpuScope(None, None, "server_processes", "; ".join([*notes, PENDING_NOTE]))
    notes.append("no server process tree to match: every GPU is counted (choose with --gpus)")
    return of([g.index for g in gpus], gpus, "all", "; ".join(notes))


def decide_from_processes(
    pending: GpuScope,
    server_gpus: Sequence[str],
    all_gpus: Sequence[str],
    why_none: str | None,
    uuid_of: Mapping[str, str | None],
) -> GpuScope:
    """Method 3 at the end of a run: the GPUs NVML listed a server process on, else every GPU
    with the reason (``why_none``)."""
    earlier = [p for p in (pending.reason or "").split("; ") if p and p != PENDING_NOTE]
    if server_gpus:
        names = tuple(server_gpus)
        reason = "; ".join([*earlier, "the GPUs NVML lists the server's processes on"])
        return GpuScope(names, tuple(uuid_of.get(n) for n in names), "server_processes", reason)
    names = tuple(all_gpus)
    reason = "; ".join(
        [*earlier, why_none or "no server process on any GPU", "every GPU is counted"]
    )
    return GpuScope(names, tuple(uuid_of.get(n) for n in names), "all", reason)
