"""``infprof model``: the embedded default model."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("model")
def command() -> None:
    """Make the embedded default model (tiny Llama) offline."""


@command.command("tiny")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write (default: $INFPROF_HOME/models/tiny-llama).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the path.")
def tiny(out: Path | None, as_json: bool) -> None:
    """Write the tiny Llama model directory (config + tokenizer, no weights) and print its path.

    Serve it with vLLM's --load-format dummy; it is rebuilt only when the generator changes.
    """
    from profiler.serving.tinymodel import (
        TINY_DTYPE,
        TINY_LOAD_FORMAT,
        TINY_MAX_MODEL_LEN,
        make_tiny_model,
    )

    path = make_tiny_model(out)
    if as_json:
        info = {
            "path": str(path),
            "load_format": TINY_LOAD_FORMAT,
            "dtype": TINY_DTYPE,
            "max_model_len": TINY_MAX_MODEL_LEN,
        }
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(str(path))
