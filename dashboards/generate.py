"""Write infprof-run.json and infprof-fleet.json (Grafana dashboard JSON) from one description.

    python dashboards/generate.py          # rewrite both files next to this script
    python dashboards/generate.py --check  # exit 1 if the files differ from the generator

Conventions (checked by tests/unit/test_dashboards.py): one ``datasource`` variable that every
panel and variable uses, ``$__rate_interval`` in every rate/irate/increase, a unit on every
panel, unique panel ids, only metrics that infprof (or vLLM) exports. GPU panels take
``max by (hostname, gpu)`` first, so a GPU scraped twice (from ``infprof exporter`` and from
``infprof run``'s own endpoint) is not counted twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39

RUN = 'run_id=~"$run_id"'
VLLM = 'model_name=~"$model"'
GPU = 'hostname=~"$hostname", gpu=~"$gpu"'
FLEET = 'hostname=~"$hostname", gpu=~"$gpu", gpu_model=~"$model"'
HOST = 'hostname=~"$hostname"'
RI = "[$__rate_interval]"


def t(expr: str, legend: str = "", **extra: Any) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, **extra}


def quantiles(metric: str, sel: str, by: str = "") -> list[dict[str, Any]]:
    """p50/p90/p99 from a histogram (summed over series by ``le``) and the mean."""
    grp = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    out = [
        t(
            f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{{{sel}}}{RI})))",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]
    mean_by = f" by ({by})" if by else ""
    out.append(
        t(
            f"sum{mean_by} (rate({metric}_sum{{{sel}}}{RI})) / sum{mean_by} (rate({metric}_count{{{sel}}}{RI}))",
            f"{legend}mean",
        )
    )
    return out


class Layout:
    """Panels left to right, rows of ``24`` grid units; ids in order of appearance."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.h = 0
        self.next_id = 1

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.h
            self.x, self.h = 0, 0

    def panel(
        self,
        title: str,
        unit: str,
        targets: list[dict[str, Any]],
        *,
        kind: str = "timeseries",
        w: int = 8,
        h: int = 8,
        description: str = "",
        min_: float | None = None,
        max_: float | None = None,
    ) -> None:
        if self.x + w > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if min_ is not None:
            defaults["min"] = min_
        if max_ is not None:
            defaults["max"] = max_
        refs = "ABCDEFGHIJ"
        panel: dict[str, Any] = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [{"datasource": DS, "refId": refs[i], **tg} for i, tg in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
        }
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 0,
                "showPoints": "never",
                "spanNulls": False,
            }
            panel["options"] = {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "none"},
            }
        elif kind == "stat":
            panel["options"] = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
            }
        elif kind == "table":
            panel["options"] = {"showHeader": True}
            panel["transformations"] = [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True},
                        "renameByName": {"Value": "up"},
                    },
                }
            ]
        self.panels.append(panel)
        self.x += w
        self.h = max(self.h, h)


def ds_var() -> dict[str, Any]:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
        "multi": False,
        "includeAll": False,
    }


def query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "StandardVariableQuery"},
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[dict[str, Any]],
    panels: list[dict[str, Any]],
    *,
    time_from: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["infprof", "gpu", "llm"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: every panel on one time axis
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": "5s",
        "timezone": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [],
        "templating": {"list": variables},
        "panels": panels,
    }


def run_dashboard() -> dict[str, Any]:
    lay = Layout()
    lay.row("Load")
    lay.panel(
        "Request rate: target vs achieved",
        "reqps",
        [
            t(f"sum by (run_id) (infprof_target_request_rate{{{RUN}}})", "target {{run_id}}"),
            t(
                f"sum by (run_id) (rate(infprof_requests_sent_total{{{RUN}}}{RI}))",
                "sent {{run_id}}",
            ),
            t(
                f'sum by (run_id) (rate(infprof_requests_total{{{RUN}, outcome="ok"}}{RI}))',
                "achieved (ok) {{run_id}}",
            ),
        ],
        description="Target rate of the arrival schedule, requests sent, and requests completed successfully.",
    )
    lay.panel(
        "Requests meeting every SLO",
        "reqps",
        [
            t(
                f"sum by (run_id) (rate(infprof_slo_met_requests_total{{{RUN}}}{RI}))",
                "SLO met {{run_id}}",
            )
        ],
        description="Successful requests per second that met every SLO objective, measured from the send. Zero without --slo.",
    )
    lay.panel(
        "SLO attainment",
        "percentunit",
        [
            t(
                f"sum by (run_id) (rate(infprof_slo_met_requests_total{{{RUN}}}{RI})) / sum by (run_id) (rate(infprof_requests_total{{{RUN}}}{RI}))",
                "{{run_id}}",
            )
        ],
        description="Share of finished requests that met every SLO objective, measured from the send.",
        min_=0,
        max_=1,
    )
    lay.panel(
        "Token throughput",
        "suffix: tok/s",
        [
            t(
                f"sum by (run_id) (rate(infprof_output_tokens_total{{{RUN}}}{RI}))",
                "output {{run_id}}",
            ),
            t(
                f"sum by (run_id) (rate(infprof_prompt_tokens_total{{{RUN}}}{RI}))",
                "prompt {{run_id}}",
            ),
        ],
    )
    lay.panel(
        "Errors by outcome",
        "reqps",
        [
            t(
                f'sum by (outcome) (rate(infprof_requests_total{{{RUN}, outcome!="ok"}}{RI}))',
                "{{outcome}}",
            )
        ],
        description="Failed requests per second: error, timeout, cancelled.",
    )
    lay.panel(
        "Requests in flight",
        "short",
        [
            t(
                f"sum by (run_id) (infprof_inflight_requests{{{RUN}}})",
                "client in flight {{run_id}}",
            ),
            t(f"sum (vllm:num_requests_running{{{VLLM}}})", "server running"),
            t(f"sum (vllm:num_requests_waiting{{{VLLM}}})", "server waiting"),
        ],
    )
    lay.row("Latency (client side)")
    lay.panel(
        "TTFT",
        "s",
        quantiles("infprof_request_ttft_seconds", RUN),
        w=12,
        description="Time to first token: first content token minus send.",
    )
    lay.panel(
        "TPOT",
        "s",
        quantiles("infprof_request_tpot_seconds", RUN),
        w=12,
        description="Time per output token after the first, per request.",
    )
    lay.panel(
        "ITL",
        "s",
        quantiles("infprof_request_itl_seconds", RUN),
        w=12,
        description="Every inter-token gap, shared among the tokens its chunk carried.",
    )
    lay.panel(
        "E2E latency",
        "s",
        quantiles("infprof_request_e2e_seconds", RUN),
        w=12,
        description="Last byte minus send.",
    )
    lay.row("Load generator health")
    lay.panel(
        "Dispatch lag",
        "s",
        quantiles("infprof_dispatch_lag_seconds", RUN),
        description="Actual send minus intended start; seconds here mean the client fell behind its schedule.",
    )
    lay.panel(
        "Client event-loop lag",
        "s",
        [
            t(
                f"max by (run_id, hostname) (infprof_client_event_loop_lag_seconds{{{RUN}}})",
                "{{hostname}}",
            )
        ],
    )
    lay.panel(
        "Client CPU and saturation",
        "percentunit",
        [
            t(f"max by (run_id, hostname) (infprof_client_cpu_ratio{{{RUN}}})", "CPU {{hostname}}"),
            t(
                f"max by (run_id, hostname) (infprof_client_saturated{{{RUN}}})",
                "saturated {{hostname}}",
            ),
        ],
        description="CPU of the load generator (fraction of one core); 'saturated' is 1 while the client is the bottleneck.",
        min_=0,
    )
    lay.row("vLLM server")
    lay.panel(
        "Scheduler: running and waiting",
        "short",
        [
            t(f"sum by (instance) (vllm:num_requests_running{{{VLLM}}})", "running {{instance}}"),
            t(f"sum by (instance) (vllm:num_requests_waiting{{{VLLM}}})", "waiting {{instance}}"),
        ],
    )
    lay.panel(
        "KV-cache usage",
        "percentunit",
        [t(f"max by (instance) (vllm:kv_cache_usage_perc{{{VLLM}}})", "{{instance}}")],
        min_=0,
        max_=1,
    )
    lay.panel(
        "Preemptions",
        "cps",
        [t(f"sum by (instance) (rate(vllm:num_preemptions_total{{{VLLM}}}{RI}))", "{{instance}}")],
    )
    lay.panel(
        "Server token throughput",
        "suffix: tok/s",
        [
            t(
                f"sum by (instance) (rate(vllm:generation_tokens_total{{{VLLM}}}{RI}))",
                "generation {{instance}}",
            ),
            t(
                f"sum by (instance) (rate(vllm:prompt_tokens_total{{{VLLM}}}{RI}))",
                "prompt {{instance}}",
            ),
        ],
        w=12,
    )
    lay.panel(
        "Server-side TTFT",
        "s",
        quantiles("vllm:time_to_first_token_seconds", VLLM),
        w=12,
        description="vLLM's own TTFT histogram; compare with the client-side TTFT.",
    )
    lay.row("GPUs")
    lay.panel(
        "GPU utilization",
        "percentunit",
        [
            t(
                f"max by (hostname, gpu) (infprof_gpu_utilization_ratio{{{GPU}}})",
                "{{hostname}}/{{gpu}}",
            )
        ],
        min_=0,
        max_=1,
    )
    lay.panel(
        "GPU memory used",
        "bytes",
        [
            t(
                f"max by (hostname, gpu) (infprof_gpu_memory_used_bytes{{{GPU}}})",
                "{{hostname}}/{{gpu}}",
            )
        ],
    )
    lay.panel(
        "GPU power",
        "watt",
        [t(f"max by (hostname, gpu) (infprof_gpu_power_watts{{{GPU}}})", "{{hostname}}/{{gpu}}")],
    )
    lay.panel(
        "Energy per output token",
        "joule",
        [
            t(
                f"sum (max by (hostname, gpu) (rate(infprof_gpu_energy_joules_total{{{GPU}}}{RI}))) / sum (rate(infprof_output_tokens_total{{{RUN}}}{RI}))",
                "J/token",
            )
        ],
        description="GPU energy (NVML total-energy counter of the selected GPUs) per output token of the selected runs.",
    )
    lay.panel(
        "NVLink traffic",
        "Bps",
        [
            t(
                f"max by (hostname, gpu) (rate(infprof_gpu_nvlink_tx_bytes_total{{{GPU}}}{RI}))",
                "tx {{hostname}}/{{gpu}}",
            ),
            t(
                f"max by (hostname, gpu) (rate(infprof_gpu_nvlink_rx_bytes_total{{{GPU}}}{RI}))",
                "rx {{hostname}}/{{gpu}}",
            ),
        ],
    )
    lay.panel(
        "PCIe throughput",
        "Bps",
        [
            t(
                f"max by (hostname, gpu) (infprof_gpu_pcie_tx_bytes_per_second{{{GPU}}})",
                "tx {{hostname}}/{{gpu}}",
            ),
            t(
                f"max by (hostname, gpu) (infprof_gpu_pcie_rx_bytes_per_second{{{GPU}}})",
                "rx {{hostname}}/{{gpu}}",
            ),
        ],
    )
    lay.panel(
        "SM and tensor activity (GPM, Hopper+)",
        "percentunit",
        [
            t(
                f"max by (hostname, gpu) (infprof_gpu_gpm_sm_activity_ratio{{{GPU}}})",
                "SM {{hostname}}/{{gpu}}",
            ),
            t(
                f"max by (hostname, gpu) (infprof_gpu_gpm_tensor_activity_ratio{{{GPU}}})",
                "tensor {{hostname}}/{{gpu}}",
            ),
        ],
        w=12,
        min_=0,
        max_=1,
    )
    lay.panel(
        "GPU temperature",
        "celsius",
        [
            t(
                f"max by (hostname, gpu) (infprof_gpu_temperature_celsius{{{GPU}}})",
                "{{hostname}}/{{gpu}}",
            )
        ],
        w=12,
    )
    variables = [
        ds_var(),
        query_var("run_id", "Run", "label_values(infprof_requests_sent_total, run_id)"),
        query_var(
            "model", "Model", 'label_values(infprof_requests_sent_total{run_id=~"$run_id"}, model)'
        ),
        query_var("hostname", "GPU host", "label_values(infprof_gpu_up, hostname)"),
        query_var("gpu", "GPU", 'label_values(infprof_gpu_up{hostname=~"$hostname"}, gpu)'),
    ]
    return dashboard(
        "infprof-run",
        "infprof: run",
        "One infprof run on one time axis: load, latency, client health, vLLM scheduler and GPUs.",
        variables,
        lay.panels,
        time_from="now-30m",
    )


def fleet_dashboard() -> dict[str, Any]:
    lay = Layout()
    lay.row("Fleet")
    lay.panel(
        "GPUs up",
        "short",
        [t(f"sum (max by (hostname, gpu) (infprof_gpu_up{{{FLEET}}}))", "up")],
        kind="stat",
        w=6,
        h=5,
    )
    lay.panel(
        "GPUs down",
        "short",
        [
            t(
                f"count (max by (hostname, gpu) (infprof_gpu_up{{{FLEET}}}) == 0) or vector(0)",
                "down",
            )
        ],
        kind="stat",
        w=6,
        h=5,
    )
    lay.panel(
        "Fleet power",
        "watt",
        [t(f"sum (max by (hostname, gpu) (infprof_gpu_power_watts{{{FLEET}}}))", "power")],
        kind="stat",
        w=6,
        h=5,
    )
    lay.panel(
        "Mean GPU utilization",
        "percentunit",
        [t(f"avg (max by (hostname, gpu) (infprof_gpu_utilization_ratio{{{FLEET}}}))", "mean")],
        kind="stat",
        w=6,
        h=5,
        min_=0,
        max_=1,
    )
    lay.panel(
        "GPU inventory",
        "short",
        [t(f"infprof_gpu_up{{{FLEET}}}", "", instant=True, format="table")],
        kind="table",
        w=24,
        h=7,
    )
    lay.row("GPUs")
    lay.panel(
        "Utilization",
        "percentunit",
        [t(f"infprof_gpu_utilization_ratio{{{FLEET}}}", "{{hostname}}/{{gpu}}")],
        min_=0,
        max_=1,
    )
    lay.panel(
        "Memory used",
        "percentunit",
        [
            t(
                f"infprof_gpu_memory_used_bytes{{{FLEET}}} / infprof_gpu_memory_total_bytes{{{FLEET}}}",
                "{{hostname}}/{{gpu}}",
            )
        ],
        min_=0,
        max_=1,
    )
    lay.panel(
        "Memory used (bytes)",
        "bytes",
        [t(f"infprof_gpu_memory_used_bytes{{{FLEET}}}", "{{hostname}}/{{gpu}}")],
    )
    lay.panel(
        "Power and limit",
        "watt",
        [
            t(f"infprof_gpu_power_watts{{{FLEET}}}", "{{hostname}}/{{gpu}}"),
            t(f"infprof_gpu_power_limit_watts{{{FLEET}}}", "limit {{hostname}}/{{gpu}}"),
        ],
    )
    lay.panel(
        "Energy rate (from the counter)",
        "watt",
        [
            t(
                f"sum by (hostname) (max by (hostname, gpu) (rate(infprof_gpu_energy_joules_total{{{FLEET}}}{RI})))",
                "{{hostname}}",
            )
        ],
        description="Joules per second from NVML's total-energy counter, per host.",
    )
    lay.panel(
        "Temperature",
        "celsius",
        [
            t(f"infprof_gpu_temperature_celsius{{{FLEET}}}", "GPU {{hostname}}/{{gpu}}"),
            t(f"infprof_gpu_memory_temperature_celsius{{{FLEET}}}", "HBM {{hostname}}/{{gpu}}"),
        ],
    )
    lay.panel(
        "SM clock", "hertz", [t(f"infprof_gpu_sm_clock_hertz{{{FLEET}}}", "{{hostname}}/{{gpu}}")]
    )
    lay.panel(
        "Time throttled",
        "percentunit",
        [
            t(
                f"rate(infprof_gpu_throttle_power_seconds_total{{{FLEET}}}{RI})",
                "power {{hostname}}/{{gpu}}",
            ),
            t(
                f"rate(infprof_gpu_throttle_thermal_seconds_total{{{FLEET}}}{RI})",
                "thermal {{hostname}}/{{gpu}}",
            ),
        ],
        description="Fraction of time the clocks were held by the power cap or thermal slowdown.",
        min_=0,
    )
    lay.panel(
        "SM and tensor activity (GPM, Hopper+)",
        "percentunit",
        [
            t(f"infprof_gpu_gpm_sm_activity_ratio{{{FLEET}}}", "SM {{hostname}}/{{gpu}}"),
            t(f"infprof_gpu_gpm_tensor_activity_ratio{{{FLEET}}}", "tensor {{hostname}}/{{gpu}}"),
        ],
        min_=0,
        max_=1,
    )
    lay.panel(
        "PCIe throughput",
        "Bps",
        [
            t(f"infprof_gpu_pcie_tx_bytes_per_second{{{FLEET}}}", "tx {{hostname}}/{{gpu}}"),
            t(f"infprof_gpu_pcie_rx_bytes_per_second{{{FLEET}}}", "rx {{hostname}}/{{gpu}}"),
        ],
        w=12,
    )
    lay.panel(
        "NVLink traffic",
        "Bps",
        [
            t(f"rate(infprof_gpu_nvlink_tx_bytes_total{{{FLEET}}}{RI})", "tx {{hostname}}/{{gpu}}"),
            t(f"rate(infprof_gpu_nvlink_rx_bytes_total{{{FLEET}}}{RI})", "rx {{hostname}}/{{gpu}}"),
        ],
        w=12,
    )
    lay.row("Hosts")
    lay.panel(
        "Host CPU",
        "percentunit",
        [t(f'infprof_host_cpu_utilization_ratio{{{HOST}, device=""}}', "{{hostname}}")],
        min_=0,
        max_=1,
    )
    lay.panel(
        "Host memory used",
        "bytes",
        [t(f"infprof_host_memory_used_bytes{{{HOST}}}", "{{hostname}}")],
    )
    lay.panel(
        "Host network",
        "Bps",
        [
            t(
                f"sum by (hostname, device) (rate(infprof_host_network_rx_bytes_total{{{HOST}}}{RI}))",
                "rx {{hostname}} {{device}}",
            ),
            t(
                f"sum by (hostname, device) (rate(infprof_host_network_tx_bytes_total{{{HOST}}}{RI}))",
                "tx {{hostname}} {{device}}",
            ),
        ],
    )
    variables = [
        ds_var(),
        query_var("hostname", "Host", "label_values(infprof_gpu_up, hostname)"),
        query_var(
            "model", "GPU model", 'label_values(infprof_gpu_up{hostname=~"$hostname"}, gpu_model)'
        ),
        query_var(
            "gpu",
            "GPU",
            'label_values(infprof_gpu_up{hostname=~"$hostname", gpu_model=~"$model"}, gpu)',
        ),
    ]
    return dashboard(
        "infprof-fleet",
        "infprof: GPU fleet",
        "Every GPU of every host running `infprof exporter`.",
        variables,
        lay.panels,
        time_from="now-3h",
    )


DASHBOARDS = {"infprof-run.json": run_dashboard, "infprof-fleet.json": fleet_dashboard}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="fail if the files are not what the generator writes"
    )
    args = ap.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = HERE / name, render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date: {', '.join(stale)} (run python dashboards/generate.py)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
