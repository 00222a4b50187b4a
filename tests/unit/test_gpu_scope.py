"""Which GPUs are the server's: the resolution order and CUDA_VISIBLE_DEVICES' forms."""

from __future__ import annotations

from typing import Any

import pytest

from profiler.errors import SpecError
from profiler.telemetry.gpu_scope import (
    GpuInfo,
    GpuScope,
    choose,
    decide_from_processes,
    from_cuda_visible_devices,
    resolve_explicit,
)

H100 = "NVIDIA H100 80GB HBM3"
NODE = [GpuInfo(i, f"GPU-{i:08d}-aaaa-bbbb-cccc-{i:012d}", H100) for i in range(8)]


def test_order_explicit_then_cuda_visible_devices_then_processes_then_all() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "2,5"}
    s = choose(NODE, explicit=["3", "4"], server_env=env, server_tree=True)
    assert (s.gpus, s.method) == (("3", "4"), "explicit")
    assert s.uuids == (NODE[3].uuid, NODE[4].uuid)
    s = choose(NODE, server_env=env, server_tree=True)
    assert (s.gpus, s.method) == (("2", "5"), "cuda_visible_devices")
    s = choose(NODE, server_env={}, server_tree=True)
    assert (s.gpus, s.method, s.pending) == (None, "server_processes", True)
    assert "sets no CUDA_VISIBLE_DEVICES" in (s.reason or "")
    s = choose(NODE, server_env=None, server_tree=False)  # an attached endpoint
    assert s.method == "all" and s.gpus == tuple(str(i) for i in range(8))
    assert "endpoint" in (s.reason or "") and "--gpus" in (s.reason or "")


def test_an_attached_endpoint_ignores_this_process_environment_but_uses_a_known_tree() -> None:
    s = choose(NODE, server_env=None, server_tree=True)  # a sweep's server: pids known
    assert s.method == "server_processes" and s.pending


def test_manifest_record_round_trips() -> None:
    s = choose(NODE, explicit=["GPU-00000002", "5"])
    d = s.as_dict()
    assert d == {
        "gpus": ["2", "5"],
        "uuids": [NODE[2].uuid, NODE[5].uuid],
        "method": "explicit",
        "reason": "--gpus",
    }
    assert GpuScope.from_dict(d) == s
    assert GpuScope.from_dict(None) is None and GpuScope.from_dict({"method": "?"}) is None


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("2,5", [2, 5]),
        ("5,2", [5, 2]),  # CUDA's order is the list's
        (" 2 , 5 ", [2, 5]),
        ("GPU-00000002-aaaa-bbbb-cccc-000000000002,GPU-00000005", [2, 5]),  # full and prefix
        ("00000005-aaaa", [5]),  # GPU- is optional
        ("2,9,5", [2]),  # CUDA stops at the first invalid entry
        ("2,GPU-0000000", [2]),  # an ambiguous prefix is invalid
        ("MIG-GPU-00000003-aaaa-bbbb-cccc-000000000003/1/0", [3]),  # old MIG form: the parent
        ("", []),
        ("-1", []),
    ],
)
def test_cuda_visible_devices_forms(value: str, want: list[int]) -> None:
    got, note = from_cuda_visible_devices(value, NODE)
    assert got == want, note
    if not want:
        assert "sees no GPU" in note


def test_mig_uuid_needs_nvml_to_find_its_parent() -> None:
    got, note = from_cuda_visible_devices(
        "MIG-4f2a1b", NODE, mig_parent=lambda u: 6 if u == "MIG-4f2a1b" else None
    )
    assert got == [6] and "MIG instance of GPU 6" in note and "whole GPU" in note
    got, note = from_cuda_visible_devices("MIG-4f2a1b", NODE, mig_parent=lambda u: None)
    assert got is None and "could not be mapped" in note
    s = choose(NODE, server_env={"CUDA_VISIBLE_DEVICES": "MIG-4f2a1b"}, server_tree=True)
    assert s.method == "server_processes" and "could not be mapped" in (s.reason or "")


def test_indices_on_a_mixed_node_need_pci_order() -> None:
    mixed = [GpuInfo(0, "GPU-a", "NVIDIA L4"), GpuInfo(1, "GPU-b", H100)]
    got, note = from_cuda_visible_devices("1", mixed)
    assert got is None and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in note
    assert from_cuda_visible_devices("1", mixed, device_order="PCI_BUS_ID")[0] == [1]
    assert from_cuda_visible_devices("GPU-b", mixed)[0] == [1]  # UUIDs are never ambiguous


def test_a_launched_server_uses_the_first_world_size_gpus() -> None:
    s = choose(NODE, server_env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, world_size=2)
    assert s.gpus == ("4", "5") and "first 2 of the 4" in (s.reason or "")
    s = choose(NODE, explicit=["1", "2", "3"], world_size=1)
    assert s.gpus == ("1",) and s.method == "explicit"


def test_explicit_unknown_gpu_is_one_line_naming_the_option_and_the_gpus() -> None:
    with pytest.raises(SpecError) as e:
        resolve_explicit(["2", "9"], NODE)
    line = e.value.one_line()
    assert "\n" not in line and "--gpus 2,9" in line and "no GPU 9" in line
    assert "0 (GPU-0000000" in line and "7 (GPU-0000000" in line
    with pytest.raises(SpecError, match="no GPU with UUID GPU-ffff"):
        resolve_explicit(["GPU-ffff"], NODE)


def test_pending_scope_decided_from_the_processes() -> None:
    pending = choose(NODE, server_env={}, server_tree=True)
    uuid = {str(g.index): g.uuid for g in NODE}
    s = decide_from_processes(pending, ["2", "5"], [str(i) for i in range(8)], None, uuid)
    assert (s.gpus, s.method, s.uuids) == (
        ("2", "5"),
        "server_processes",
        (NODE[2].uuid, NODE[5].uuid),
    )
    assert "sets no CUDA_VISIBLE_DEVICES" in (s.reason or "")
    s = decide_from_processes(
        pending, [], ["0", "1"], "NVML lists processes but none is the server's", uuid
    )
    assert s.method == "all" and s.gpus == ("0", "1") and "none is the server's" in (s.reason or "")


def test_nvml_lookups_through_the_chokepoint() -> None:
    from profiler.telemetry import nvml
    from tests.fakes.nvml import h100, install_fake_nvml

    gpus = [h100(i) for i in range(4)]
    gpus[3].mig_uuids = ["MIG-4f2a1b00-0000-0000-0000-000000000000"]
    with install_fake_nvml(gpus) as fake:
        ids, state = nvml.gpu_ids()
        assert state is None and [g["index"] for g in ids] == [0, 1, 2, 3]
        assert ids[2]["uuid"] == gpus[2].uuid and ids[2]["name"] == gpus[2].name
        assert nvml.mig_parent_index("MIG-4f2a1b00-0000-0000-0000-000000000000") == 3
        assert nvml.mig_parent_index("MIG-ffff") is None
        assert fake.init_count == 0  # every look-up shut NVML down again


def _node_of(n: int) -> list:  # type: ignore[type-arg]
    from tests.fakes.nvml import h100

    return [h100(i) for i in range(n)]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--endpoint", "http://127.0.0.1:9", "--gpus", "2,9"],
        ["sweep", "--endpoint", "http://127.0.0.1:9", "--concurrency", "1", "--gpus", "2,9"],
        ["exporter", "--once", "--interval", "0.1", "--gpus", "2,9"],
    ],
)
def test_cli_gpus_naming_a_missing_gpu_is_one_line_exit_2(argv: list[str], tmp_path: Any) -> None:
    from click.testing import CliRunner

    from profiler.cli.main import cli
    from tests.fakes.nvml import install_fake_nvml

    with install_fake_nvml(_node_of(8)):
        res = CliRunner().invoke(cli, [*argv[:1], *argv[1:]], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("infprof: error:")]
    assert len(lines) == 1 and "--gpus 2,9: no GPU 9" in lines[0], res.output
    assert "0 (GPU-0000000" in lines[0] and "7 (GPU-0000000" in lines[0]
    assert "Traceback" not in res.output


def test_cli_gpus_without_nvml_says_so() -> None:
    import pynvml
    from click.testing import CliRunner

    from profiler.cli.main import cli
    from tests.fakes.nvml import install_fake_nvml

    with install_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND):
        res = CliRunner().invoke(cli, ["run", "--endpoint", "http://127.0.0.1:9", "--gpus", "0"])
    assert res.exit_code == 2 and "--gpus 0: NVML is not available on this host" in res.output


def test_run_gpus_places_a_launched_server_on_them() -> None:
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import probe_host
    from tests.fakes.nvml import install_fake_nvml

    gpus = _node_of(8)
    with install_fake_nvml(gpus):
        spec = build_run_spec(
            probe_host(), RunOptions(model="org/some-model", gpus=f"2,{gpus[5].uuid}")
        )
        on_endpoint = build_run_spec(
            probe_host(), RunOptions(endpoint="http://127.0.0.1:9", gpus="3")
        )
    assert spec.gpus == ["2", gpus[5].uuid]
    assert spec.serve is not None
    assert spec.serve.env["CUDA_VISIBLE_DEVICES"] == "2,5"  # NVML indices, in PCI order:
    assert spec.serve.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert on_endpoint.gpus == ["3"] and on_endpoint.serve is None


def test_exporter_gpus_exports_only_those() -> None:
    from click.testing import CliRunner

    from profiler.cli.main import cli
    from tests.fakes.nvml import install_fake_nvml

    with install_fake_nvml(_node_of(8)):
        res = CliRunner().invoke(cli, ["exporter", "--once", "--interval", "0.1", "--gpus", "2,5"])
    assert res.exit_code == 0, res.output
    seen = {ln.split('gpu="')[1].split('"')[0] for ln in res.output.splitlines() if 'gpu="' in ln}
    assert seen == {"2", "5"}


def test_live_export_names_the_servers_gpus() -> None:
    from prometheus_client import generate_latest

    from profiler.metrics.live import LiveExport
    from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, Scenario, WorkloadSpec

    spec = RunSpec(
        workload=WorkloadSpec(name="w", scenarios=[Scenario()]),
        arrival=ArrivalSpec(concurrency=1),
        num_requests=1,
        endpoint=EndpointSpec(url="http://127.0.0.1:9"),
    )
    manifest: dict[str, Any] = {"gpu_scope": {"gpus": None, "method": "server_processes"}}
    live = LiveExport(spec, "r1", "m", [], [], scope=lambda: manifest.get("gpu_scope"))
    assert b"infprof_run_gpu_info{" not in generate_latest(live.registry)  # still pending
    manifest["gpu_scope"] = choose(NODE, explicit=["2", "5"]).as_dict()  # decided at the end
    text = generate_latest(live.registry).decode()
    rows = [ln for ln in text.splitlines() if ln.startswith("infprof_run_gpu_info{")]
    assert len(rows) == 2 and all('run_id="r1"' in r and 'method="explicit"' in r for r in rows)
    assert 'gpu="2"' in rows[0] and f'uuid="{NODE[5].uuid}"' in rows[1]
