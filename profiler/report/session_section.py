"""The report's sessions section: per-turn latency table, TTFT against the turn index and the
server's prefix-cache hit ratio over the run (from summary.json's ``sessions`` and
``prefix_cache``, ``profiler.analysis.turns``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from profiler.report.data import RunData
from profiler.report.doc import Figure, Note, Section, Table
from profiler.report.fmt import ms, num, pct
from profiler.report.plotting import color, empty, legend, new_figure, title, to_png
from profiler.store.schema import Distribution, PrefixCache, TurnBucket


def session_section(run: RunData, prefix: str = "") -> Section | None:
    """None for a run without sessions and without prefix-cache counters."""
    sessions = run.summary.sessions
    cache = run.summary.prefix_cache or PrefixCache()
    if not sessions and not cache.available:
        return None
    sec = Section(f"{prefix}sessions", "Sessions and prefix cache")
    if sessions:
        turns = sessions.turns_per_session or Distribution()
        duration = sessions.duration_s or Distribution()
        sec.add(
            Table(
                ["", ""],
                [
                    [
                        "sessions",
                        f"{sessions.sessions} ({sessions.complete_sessions} with every turn ok)",
                    ],
                    [
                        "turns per session mean / max",
                        f"{num(turns.mean)} / {num(turns.max)}",
                    ],
                    [
                        "session duration p50 / p90",
                        f"{num(duration.p50)} s / {num(duration.p90)} s",
                    ],
                ],
            )  # fmt: skip
        )
        rows = []
        for b in sessions.turn_buckets or []:
            d = (sessions.by_turn or {}).get(b) or TurnBucket()
            none = Distribution()
            ttft, tpot, e2e = d.ttft_s or none, d.tpot_s or none, d.e2e_s or none
            prompt, cached = d.prompt_tokens or none, d.cached_tokens or none
            rows.append(
                [
                    b,
                    str(d.ok),
                    ms(ttft.p50),
                    ms(ttft.p90),
                    ms(tpot.p50),
                    ms(e2e.p50),
                    num(prompt.mean, "{:.0f}"),
                    num(cached.mean, "{:.0f}"),
                ]
            )
        sec.add(
            Table(
                [
                    "turn",
                    "ok",
                    "TTFT p50",
                    "TTFT p90",
                    "TPOT p50",
                    "E2E p50",
                    "prompt tokens",
                    "cached tokens",
                ],
                rows,
                caption="by turn index; milliseconds; token means (cached: the server's "
                "usage.prompt_tokens_details, '-' when it reports none)",
            )  # fmt: skip
        )
    if cache.available:
        sec.add(
            Note(
                f"Server prefix cache over the measured window: {cache.hits} of "
                f"{cache.queries} queried prompt tokens hit ({pct(cache.hit_ratio)})."
            )
        )
    sec.add(_figure(run, prefix, sessions.to_dict() if sessions else None, cache.to_dict()))
    return sec


def _figure(
    run: RunData, prefix: str, sessions: dict[str, Any] | None, cache: dict[str, Any]
) -> Figure:
    fig, axes = new_figure(1, 2, row_height=3.0)
    ax = axes[0, 0]
    rows = (sessions or {}).get("per_turn") or []
    title(ax, "TTFT by turn (ms)")
    if rows:
        k = np.array([r["turn"] for r in rows])
        for i, (key, label) in enumerate((("ttft_p50_s", "p50"), ("ttft_p90_s", "p90"))):
            v = np.array([np.nan if r.get(key) is None else r[key] * 1000 for r in rows])
            ax.plot(k, v, marker="o", markersize=3, color=color(i), label=label)
        ax.set_xlabel("turn", fontsize=8)
        tokens = np.array([r.get("prompt_tokens_mean") or np.nan for r in rows])
        if np.any(~np.isnan(tokens)):
            ax2 = ax.twinx()
            ax2.plot(k, tokens, color=color(2), linestyle=":", label="prompt tokens (mean)")
            ax2.tick_params(labelsize=8)
            ax2.set_ylabel("prompt tokens", fontsize=8)
            legend(ax2, loc="lower right")
        legend(ax, loc="upper left")
    else:
        empty(ax, "no session turns in this run")
    ax = axes[0, 1]
    title(ax, "server prefix-cache hit ratio (%)")
    tl = cache.get("timeline") or {}
    t, r = tl.get("t_s") or [], tl.get("hit_ratio") or []
    if cache.get("available") and t:
        send = run.req.get("send_s")
        t0 = float(np.nanmin(send)) if send is not None and np.any(~np.isnan(send)) else t[0]
        y = np.array([np.nan if v is None else v * 100 for v in r])
        ax.plot(np.asarray(t) - t0, y, marker=".", color=color(0))
        ax.set_ylim(0, 105)
        ax.set_xlabel("seconds since the first request was sent", fontsize=8)
    else:
        empty(ax, cache.get("reason") or "no prefix-cache counters")
    return Figure(
        f"{prefix}sessions",
        to_png(fig),
        "TTFT by turn and the prefix-cache hit ratio over the run",
        "Left: TTFT percentiles of successful requests at each turn index (dotted: mean prompt "
        "tokens). Right: prefix-cache hits over queried tokens between /metrics scrapes.",
    )


def plan_sessions_table(plan: dict[str, Any]) -> Table | None:
    """The plan section's sessions table: context growth, the cache-hit ratio and how many
    GPUs the prefix cache saves (``PlanResult.sessions``, profiler/capacity/sessions.py)."""
    s = plan.get("sessions")
    if not s:
        return None
    w, wo = s.get("with_cache") or {}, s.get("without_cache") or {}

    def gpus(h: dict[str, Any]) -> str:
        if h.get("gpus_total") is not None:
            return f"{h['gpus_total']} GPUs ({h.get('parallelism')})"
        return f"{num(h.get('max_rps_per_gpu'))} req/s per GPU ({h.get('parallelism')})"

    rows = [
        ["turns per session (mean)", num(s.get("turns_mean"))],
        ["context growth per turn", f"{num(s.get('context_growth_per_turn'), '{:.0f}')} tokens"],
        ["mean prompt (context)", f"{num(s.get('prompt_tokens_mean'), '{:.0f}')} tokens"],
        [
            "prefix-cache hit ratio",
            f"{pct(s.get('cache_hit_ratio'))} ({s.get('cache_hit_source')}; all earlier turns "
            f"cached: {pct(s.get('ideal_cache_hit_ratio'))})",
        ],
        [
            "KV held by thinking sessions",
            f"{num(s.get('held_tokens_per_stream'), '{:.0f}')} tokens per decoding stream",
        ],
        ["with the prefix cache", gpus(w)],
    ]
    if wo:
        rows.append(["without the prefix cache", gpus(wo)])
    if s.get("gpus_saved_by_cache") is not None:
        rows.append(["GPUs the cache saves", str(s["gpus_saved_by_cache"])])
    return Table(["", ""], rows, caption="session workload: what the prefix cache changes")
