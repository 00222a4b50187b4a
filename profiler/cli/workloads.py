"""``infprof workloads``: the shipped workloads, one line each; ``--show NAME`` prints one."""

from __future__ import annotations

import json

import click
import yaml
from rich.console import Console
from rich.table import Table

from profiler.load.workload import available_workloads, workload_from_name_or_path


@click.command("workloads")
@click.argument("name", required=False)
@click.option("--json", "json_", is_flag=True, help="Machine-readable output.")
def command(name: str | None, json_: bool) -> None:
    """List the shipped workloads, or show NAME (a name or a YAML file) fully resolved.

    \b
    Examples:
      infprof workloads
      infprof workloads reasoning --json
    """
    if name is not None:
        wl = workload_from_name_or_path(name)
        data = wl.model_dump(mode="json", exclude_none=True)
        click.echo(json.dumps(data, indent=2) if json_ else yaml.safe_dump(data, sort_keys=False))
        return
    rows = []
    for wl_name, path in available_workloads().items():
        wl = workload_from_name_or_path(str(path))
        rows.append({"name": wl_name, "description": wl.description, "path": str(path)})
    if json_:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="workloads")
    table.add_column("name")
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["description"])
    Console().print(table)
