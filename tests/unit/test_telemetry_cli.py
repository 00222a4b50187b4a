"""``infprof gpus``: inventory and topology, and a clear line without NVML."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pynvml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # until pytest has pythonpath=["."]

from profiler.cli.main import cli  # noqa: E402
from tests.fakes.nvml import h100, install_fake_nvml, pcie_gpu  # noqa: E402


def test_gpus_without_nvml_is_one_line_and_exit_0() -> None:
    with install_fake_nvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
        human = CliRunner().invoke(cli, ["gpus"])
        as_json = CliRunner().invoke(cli, ["gpus", "--json"])
    assert human.exit_code == 0
    assert human.output == "No NVIDIA GPU available: the NVIDIA kernel driver is not loaded\n"
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == {
        "available": False,
        "reason": "the NVIDIA kernel driver is not loaded",
    }


def test_gpus_table_and_json() -> None:
    with install_fake_nvml([h100(0, peers=[1]), h100(1, peers=[0]), pcie_gpu(2)]):
        human = CliRunner().invoke(cli, ["gpus"])
        as_json = CliRunner().invoke(cli, ["gpus", "--json"])
    assert human.exit_code == 0, human.output
    assert "driver 550.54.15, CUDA driver 12.4, 3 GPU(s)" in human.output
    assert "NV6" in human.output and "topology (from nvml)" in human.output
    inv = json.loads(as_json.output)
    assert inv["available"] is True and [g["index"] for g in inv["gpus"]] == [0, 1, 2]
    assert inv["topology"]["matrix"][0] == ["X", "NV6", "NODE"]
