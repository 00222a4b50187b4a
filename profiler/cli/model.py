"""``infprof model``: the embedded default model."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("model")
def command() -> None:
    """Make an embedded default model offline: tiny (CPU), llama-8b-shape or llama-1b-shape
    (GPU)."""


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


def _shape_command(name: str, architecture: str) -> click.Command:
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Directory to write (default: $INFPROF_HOME/models/{name}).",
    )
    @click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON object instead of the path."
    )
    def make(out: Path | None, as_json: bool) -> None:
        from profiler.capacity.catalog import shape_spec
        from profiler.serving import shapes

        shape = shapes.get_shape(name)
        path = shapes.make_shape_model(name, out)
        if as_json:
            m = shape_spec(shape)
            info = {
                "path": str(path),
                "shape": name,
                "architecture": shape.architecture,
                "load_format": shapes.SHAPE_LOAD_FORMAT,
                "dtype": shapes.SHAPE_DTYPE,
                "params": m.params_total,
                "vocab_size": shape.vocab_size,
                "max_position_embeddings": shape.max_position_embeddings,
            }
            click.echo(json.dumps(info, indent=2))
        else:
            click.echo(str(path))

    make.__doc__ = (
        f"Write the {architecture} shape (config + 128,256-token tokenizer, no weights) and "
        "print its path.\n\nServe it with vLLM's --load-format dummy --dtype bfloat16; "
        "`infprof run` serves it by default on a GPU host."
    )
    return click.command(name)(make)


command.add_command(_shape_command("llama-8b-shape", "Llama-3.1-8B"))
command.add_command(_shape_command("llama-1b-shape", "Llama-3.2-1B"))
