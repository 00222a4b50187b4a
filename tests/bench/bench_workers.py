"""`--workers 2` against one worker on this machine: achieved output tokens/s and client CPU
per token, fake server (TTFT 0, ITL 0, 100 output tokens, 256 streams)."""

from __future__ import annotations

import os
import tempfile

from tests.bench.common import fake_server, md_table, run_child, write_result


def main() -> None:
    res = {}
    with (
        tempfile.TemporaryDirectory() as out,
        fake_server("--ttft-ms", "0", "--itl-ms", "0", "--model", "fake") as url,
    ):
        for workers in (1, 2):
            r = run_child(
                [
                    "tests/bench/_child_infprof.py",
                    url,
                    "2048",
                    "256",
                    "32",
                    "100",
                    out,
                    str(workers),
                ]
            )
            r["tokens_per_s"] = r["tokens"] / r["wall_s"]
            r["cpu_us_per_token"] = r["cpu_s"] / r["tokens"] * 1e6
            res[workers] = r
    base = res[1]["tokens_per_s"]
    rows = [
        [w, r["tokens_per_s"], r["tokens_per_s"] / base, r["cpu_us_per_token"], r["wall_s"]]
        for w, r in res.items()
    ]
    md = (
        f"### --workers on this machine ({os.cpu_count()} cores; the fake server shares them)\n\n"
        + md_table(
            [
                "workers",
                "output tok/s (whole run)",
                "rate vs 1 worker",
                "client CPU µs per token",
                "wall s",
            ],
            rows,
        )
    )
    write_result("workers", {str(k): v for k, v in res.items()}, md)


if __name__ == "__main__":
    main()
