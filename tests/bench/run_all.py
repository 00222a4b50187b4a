"""`make bench`: every benchmark, each writing bench-results/<name>.json and .md; a combined
bench-results/README.md is assembled at the end. A failing benchmark is reported, not hidden.

    python -m tests.bench.run_all [name ...]     # default: all
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

from tests.bench.common import RESULTS

BENCHES = [
    ("summary_scale", "tests.bench.bench_summary"),
    ("summary_billion", "tests.bench.bench_sketch"),
    ("compaction", "tests.bench.bench_compaction"),
    ("client", "tests.bench.bench_client"),
    ("workers", "tests.bench.bench_workers"),
    ("telemetry", "tests.bench.bench_telemetry"),
    ("scrape", "tests.bench.bench_scrape"),
    ("plan", "tests.bench.bench_plan"),
    ("vllm", "tests.bench.bench_vllm"),
    ("soak", "tests.bench.bench_soak"),
]


def main() -> int:
    wanted = set(sys.argv[1:])
    failed = []
    for name, module in BENCHES:
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        saved = sys.argv
        sys.argv = [module]
        try:
            importlib.import_module(module).main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        finally:
            sys.argv = saved
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    parts = [p.read_text() for p in sorted(RESULTS.glob("*.md")) if p.name != "README.md"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "README.md").write_text("# infprof benchmark results\n\n" + "\n\n".join(parts))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
