"""The roofline table shipped as profiler/data/roofline.json: the bounds of
``profiler.analysis.roofline`` for the catalog's common GPUs and the embedded model shapes at a
few batch sizes, with the GPU default workload's lengths; and its rows for the GPUs NVML finds.

``python -m profiler.analysis.roofline_table`` prints the table (Markdown), ``--write PATH``
writes the JSON, and ``--nvml`` prints the shipped rows of the GPUs NVML finds: that path needs
neither pydantic nor the catalog (``tests/gpu/run.sh`` runs it on a bare GPU machine), so this
module imports the roofline and the catalog only where the table is computed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TABLE_FILE = "roofline.json"
TABLE_GPUS = ("h100", "h200", "l4", "a100", "l40s", "h100-pcie", "b200")
TABLE_SHAPES = ("llama-8b-shape", "llama-1b-shape")
TABLE_BATCHES = (1, 64, 256)
TABLE_LENGTHS = (1024, 256)  # the GPU default workload


def table_rows(
    gpus: tuple[str, ...] = TABLE_GPUS,
    shapes: tuple[str, ...] = TABLE_SHAPES,
    batches: tuple[int, ...] = TABLE_BATCHES,
    lengths: tuple[int, int] = TABLE_LENGTHS,
) -> list[dict[str, Any]]:
    """One row per GPU x embedded shape x batch: the bounds, flat and rounded for reading."""
    from profiler.analysis.roofline import bounds, ideal_deployment
    from profiler.capacity.catalog import shape_spec
    from profiler.capacity.hardware import load_hardware
    from profiler.serving.shapes import get_shape

    hw = load_hardware()
    rows = []
    for key in gpus:
        g = hw.gpu(key)
        for name in shapes:
            dep = ideal_deployment(shape_spec(get_shape(name)), g)
            for b in batches:
                f = bounds(dep, batch=b, input_len=lengths[0], output_len=lengths[1])
                rows.append(
                    {
                        "gpu": g.key,
                        "shape": name,
                        "batch": b,
                        "input_tokens": lengths[0],
                        "output_tokens": lengths[1],
                        "hbm_tb_per_s": g.hbm_tb_per_s,
                        "peak_tflops": round(f["hardware"]["peak_flops_per_s"] / 1e12, 1),
                        "gb_per_decode_step": round(f["decode"]["bytes_per_step"] / 1e9, 2),
                        "decode_tokens_per_s_bound": round(f["decode"]["tokens_per_s_bound"]),
                        "decode_bound_by": f["decode"]["bound_by"],
                        "prefill_tokens_per_s_bound": round(f["prefill"]["tokens_per_s_bound"]),
                        "run_output_tokens_per_s_bound": round(
                            f["run"]["output_tokens_per_s_bound"]
                        ),
                        "run_bound_by": f["run"]["bound_by"],
                    }
                )
    return rows


def table_data() -> dict[str, Any]:
    """What ``profiler/data/roofline.json`` holds: the table rows plus the catalog's NVML names,
    so a machine without pydantic (tests/gpu/run.sh) can print the rows of the GPU it finds."""
    from profiler.capacity.hardware import load_hardware

    hw = load_hardware()
    return {
        "generated_by": "python -m profiler.analysis.roofline_table --write profiler/data/roofline.json",
        "note": "bounds at 100% of the catalog's peaks (profiler/data/hardware.yaml), per GPU, "
        "for the embedded shapes in bf16 with the GPU default workload's lengths",
        "nvml_names": {k: list(hw.gpu(k).nvml_names) for k in TABLE_GPUS},
        "rows": table_rows(),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| GPU | shape | batch | GB read per decode step | decode bound (tok/s) | "
        "prefill bound (tok/s) | run bound (output tok/s) | run bound by |"
    )
    lines = [head, "|---|---|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        lines.append(
            f"| {r['gpu']} | {r['shape']} | {r['batch']} | {r['gb_per_decode_step']:.2f} | "
            f"{r['decode_tokens_per_s_bound']:,} | {r['prefill_tokens_per_s_bound']:,} | "
            f"{r['run_output_tokens_per_s_bound']:,} | {r['run_bound_by']} |"
        )
    return "\n".join(lines) + "\n"


def shipped_table() -> dict[str, Any]:
    """profiler/data/roofline.json (what ``table_data`` computed when it was written)."""
    from importlib import resources

    text = resources.files("profiler").joinpath("data", TABLE_FILE).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def nvml_table(gpus: list[dict[str, Any]], data: dict[str, Any]) -> str:
    """The shipped table's rows for each distinct GPU model in ``gpus`` (NVML
    ``device_memory`` records), as Markdown. Needs neither pydantic nor a catalog load."""
    from profiler.capacity.names import match_nvml_name

    if not gpus:
        keys = ["h100", "h200", "l4"]
        head = "roofline: NVML sees no GPU; the shipped table for h100, h200 and l4:\n\n"
        return head + markdown_table([r for r in data["rows"] if r["gpu"] in keys])
    out = []
    for name in dict.fromkeys(str(g.get("name")) for g in gpus):
        key = match_nvml_name(name, data["nvml_names"])
        rows = [r for r in data["rows"] if r["gpu"] == key]
        free = [
            f"GPU {g['index']}: {g['memory_free_bytes'] / 2**30:.1f} of "
            f"{g['memory_total_bytes'] / 2**30:.1f} GiB free"
            for g in gpus
            if g.get("name") == name and g.get("memory_free_bytes") is not None
        ]
        if not rows:
            out.append(f"roofline: GPU '{name}' is not in the shipped table ({TABLE_FILE})\n")
            continue
        out.append(
            f"roofline for {name} (catalog '{key}'; {'; '.join(free)}): per GPU, "
            f"{rows[0]['input_tokens']} prompt + {rows[0]['output_tokens']} output tokens, "
            f"bounds at 100% of {rows[0]['hbm_tb_per_s']} TB/s and "
            f"{rows[0]['peak_tflops']} TFLOP/s\n\n" + markdown_table(rows)
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m profiler.analysis.roofline_table [--write PATH] [--gpu KEY ...] [--nvml]``: print
    the roofline table (Markdown), write the shipped JSON, or (``--nvml``, no pydantic needed)
    print the shipped rows of the GPUs NVML finds."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m profiler.analysis.roofline_table")
    ap.add_argument("--write", type=Path, help="write the table JSON here")
    ap.add_argument("--gpu", action="append", help="catalog GPU keys (default: the table's)")
    ap.add_argument("--nvml", action="store_true", help="the rows of the GPUs NVML finds")
    args = ap.parse_args(argv)
    if args.nvml:
        from profiler.telemetry.nvml import device_memory

        sys.stdout.write(nvml_table(device_memory(), shipped_table()))
        return 0
    if args.write:
        args.write.write_text(json.dumps(table_data(), indent=1) + "\n")
        return 0
    rows = table_rows(gpus=tuple(args.gpu) if args.gpu else TABLE_GPUS)
    sys.stdout.write(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
