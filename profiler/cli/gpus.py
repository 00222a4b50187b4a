"""``infprof gpus [--json]``: GPU inventory and GPU-to-GPU topology from NVML.

Without NVML (no driver, no GPU) this is not an error: one line says why, and ``--json``
prints ``{"available": false, "reason": ...}``; the exit code is 0 either way.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from profiler.report.fmt import gib, text


def render(inv: dict[str, Any], console: Console) -> None:
    if not inv.get("available"):
        click.echo(f"No NVIDIA GPU available: {inv.get('reason') or 'NVML unavailable'}")
        return
    click.echo(
        f"driver {text(inv.get('driver_version'))}, CUDA driver {text(inv.get('cuda_driver_version'))}, "
        f"{inv.get('gpu_count', 0)} GPU(s)"
    )
    t = Table(title="GPUs")
    for col in (
        "GPU",
        "name",
        "memory",
        "CC",
        "power limit",
        "PCI bus id",
        "MIG",
        "NVLink",
        "UUID",
    ):
        t.add_column(col, justify="right" if col in ("GPU", "memory", "power limit") else "left")
    for g in inv.get("gpus", []):
        if "error" in g:
            t.add_row(str(g["index"]), f"[red]error: {g['error']}[/red]", *([""] * 7))
            continue
        nv = g.get("nvlink") or {}
        links = f"{nv.get('active', 0)}/{nv.get('links', 0)} active" if nv.get("links") else "-"
        mig = {True: "on", False: "off", None: "-"}[g.get("mig_mode")]
        limit = g.get("power_limit_watts")
        t.add_row(
            str(g["index"]),
            text(g.get("name")),
            gib(g.get("memory_total_bytes"), 1),
            text(g.get("compute_capability")),
            "-" if limit is None else f"{limit:.0f} W",
            text(g.get("pci_bus_id")),
            mig,
            links,
            text(g.get("uuid")),
        )
    console.print(t)
    topo = inv.get("topology")
    if not topo:
        console.print(
            "topology: unavailable (NVML topology calls failed and nvidia-smi was not usable)"
        )
        return
    m = Table(title=f"topology (from {topo.get('source')})")
    m.add_column("")
    for name in topo["gpus"]:
        m.add_column(name, justify="center")
    for name, row in zip(topo["gpus"], topo["matrix"], strict=False):
        m.add_row(name, *[text(c) for c in row])
    console.print(m)
    console.print(
        "X = self, NV# = # NVLink links, PIX = one PCIe switch, PXB = several PCIe switches, "
        "PHB = PCIe host bridge, NODE = within a NUMA node, SYS = across NUMA nodes",
        style="dim",
    )


@click.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
def command(as_json: bool) -> None:
    """Show GPU inventory and topology (NVML)."""
    from profiler.telemetry.inventory import collect

    inv = collect()
    if as_json:
        click.echo(json.dumps(inv, indent=2, sort_keys=False))
        return
    render(inv, Console())
