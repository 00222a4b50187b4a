"""Security: listeners bind to loopback by default, API keys never reach an artifact, no shell
strings, safe YAML, run ids cannot escape the output directory."""

from __future__ import annotations

import ast
import secrets
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from tests.fakes.vllm_openai_shim import make_python_wrapper
from tests.integration.faults_support import (
    ROOT,
    ProcessTree,
    cli_env,
    fake_server,
    infprof_cmd,
    journal_records,
    launched_cmd,
    one_error_line,
    parquet_rows,
    read_json,
    run_cli,
    spawn_cli,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROFILER = ROOT / "profiler"


def listeners(tree: ProcessTree) -> dict[int, list[str]]:
    """pid -> addresses it listens on (TCP), over the whole process tree."""
    found: dict[int, list[str]] = {}
    for p in tree.alive():
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        addrs = [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
        if addrs:
            found[p.pid] = addrs
    return found


# ---------------------------------------------------------------------- loopback by default
def test_exporter_and_launched_server_listen_on_loopback(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    cmd = launched_cmd(
        "run", "--model", "org/fake-model", "--metrics-port", "0", "--concurrency", "2",
        "--num-requests", "100000", "--output-len", "20", "--serve-arg=--fake-itl-ms=20",
        "--out", str(out), "--run-id", "lo", "-q",
    )  # fmt: skip
    with spawn_cli(cmd, env, tmp_path / "cli") as cli:
        tree = ProcessTree(cli.proc.pid)
        wait_until(lambda: len(journal_records(out / "lo")) >= 2, 30, "the load to start")
        tree.refresh()
        found = listeners(tree)
        manifest = read_json(out / "lo" / "manifest.json")
        cli.proc.send_signal(signal.SIGINT)
        assert cli.wait(30) == 6, cli.stderr
    assert cli.proc.pid in found, "the exporter is not listening"
    assert len(found) >= 2, f"expected the exporter and the server to listen: {found}"
    assert all(ip == "127.0.0.1" for ips in found.values() for ip in ips), found
    argv = manifest["server"]["argv"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert manifest["metrics_url"].startswith("http://127.0.0.1:")


def test_node_exporter_listens_on_loopback(tmp_path: Path) -> None:
    with spawn_cli(
        infprof_cmd("exporter", "--port", "0"), cli_env(tmp_path / "home"), tmp_path / "cli"
    ) as exp:
        tree = ProcessTree(exp.proc.pid)
        found = wait_until(lambda: listeners(tree), 30, "the exporter to listen")
        exp.proc.send_signal(signal.SIGTERM)
        exp.wait(15)
    assert [ip for ips in found.values() for ip in ips] == ["127.0.0.1"]


# ---------------------------------------------------------------------- API keys
def test_api_key_never_written_anywhere(tmp_path: Path) -> None:
    key = "sk-infprof-" + secrets.token_hex(16)
    home, out = tmp_path / "home", tmp_path / "runs"
    run_dir = out / "keyed"
    textfile = tmp_path / "textfile" / "infprof.prom"
    textfile.parent.mkdir()
    env = cli_env(home, MY_KEY=key, FAKE_KEY=key)
    with fake_server("--api-key-env", "FAKE_KEY", "--itl-ms", "5", env=env) as fake:
        cmd = infprof_cmd(
            "-vv", "run", "--endpoint", fake.url, "--api-key-env", "MY_KEY", "--metrics-port",
            "0", "--textfile", str(textfile), "--sample-interval", "0.2", "--concurrency", "2",
            "--num-requests", "40", "--output-len", "20", "--out", str(out), "--run-id", "keyed",
        )  # fmt: skip
        with spawn_cli(cmd, env, tmp_path / "cli") as cli:
            url = wait_until(
                lambda: (
                    (run_dir / "manifest.json").exists()
                    and read_json(run_dir / "manifest.json").get("metrics_url")
                ),
                30,
                "the live exporter",
            )
            wait_until(lambda: journal_records(run_dir), 30, "the first record")
            with urllib.request.urlopen(url, timeout=10) as r:
                live_metrics = r.read()
            rc = cli.wait(60)
    assert rc == 0, cli.stderr
    records = journal_records(run_dir)
    assert len(records) == 40 and all(r["outcome"] == "ok" for r in records)  # the key worked
    assert b"infprof_requests_total" in live_metrics
    assert read_json(run_dir / "manifest.json")["spec"]["endpoint"]["api_key_env"] == "MY_KEY"
    assert run_cli(infprof_cmd("report", str(run_dir)), env).returncode == 0

    secret = key.encode()
    assert secret not in live_metrics
    assert key not in cli.stdout and key not in cli.stderr  # -vv: every log on
    files = [p for p in [*out.rglob("*"), *home.rglob("*"), textfile] if p.is_file()]
    names = {p.name for p in files}
    assert {
        "manifest.json",
        "summary.json",
        "requests.parquet",
        "report.html",
        "report.md",
    } <= names
    assert {"samples.parquet", "requests.jsonl", "samples.jsonl"} <= names
    leaked = [str(p) for p in files if secret in p.read_bytes()]
    # Parquet pages are compressed: a leaked string would not show in the bytes
    leaked += [str(p) for p in files if p.suffix == ".parquet" and key in str(parquet_rows(p))]
    assert not leaked, f"the API key was written to {leaked}"


def test_api_key_errors_do_not_echo_the_key(tmp_path: Path) -> None:
    from profiler.cli.main import cli

    key, wrong = "sk-right-" + secrets.token_hex(8), "sk-wrong-" + secrets.token_hex(8)
    env = cli_env(tmp_path / "home", FAKE_KEY=key)
    with fake_server("--api-key-env", "FAKE_KEY", env=env) as fake:
        args = ["run", "--endpoint", fake.url, "--api-key-env", "MY_KEY", "--out"]
        res = CliRunner(env={"MY_KEY": wrong}).invoke(cli, [*args, str(tmp_path / "a")])
        assert res.exit_code == 4
        line = one_error_line(res.stderr)
        assert "refused the API key (HTTP 401)" in line and wrong not in res.output + res.stderr
        res = CliRunner(env={"MY_KEY": ""}).invoke(cli, [*args, str(tmp_path / "b")])
        assert res.exit_code == 2
        assert "--api-key-env MY_KEY: the variable is not set or empty" in one_error_line(
            res.stderr
        )
        assert not (tmp_path / "b").exists()  # refused before a run directory is made
    assert not any(wrong.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- code properties
def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def sources() -> list[tuple[Path, ast.AST]]:
    paths = sorted(PROFILER.rglob("*.py"))
    assert len(paths) > 50
    return [(p, ast.parse(p.read_text(), str(p))) for p in paths]


def test_subprocesses_get_argument_lists() -> None:
    bad: list[str] = []
    spawns = 0
    for path, tree in sources():
        for call in _calls(tree):
            name = _name(call.func)
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            if name in (
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ):
                bad.append(where)
            for kw in call.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    bad.append(f"{where} shell=...")
            if name.startswith("subprocess.") and name.split(".")[-1] in (
                "Popen", "run", "call", "check_call", "check_output",
            ):  # fmt: skip
                spawns += 1
                first = call.args[0] if call.args else None
                if isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    bad.append(f"{where}: a command string")
    assert spawns >= 2, "expected to see the server launch and the version probe"
    assert not bad, bad


def test_yaml_is_loaded_safely() -> None:
    unsafe = ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all")
    bad: list[str] = []
    safe_loads = 0
    for path, tree in sources():
        text = path.read_text()
        for token in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader", "yaml.CLoader"):
            if token in text:
                bad.append(f"{path.name}: {token}")
        for call in _calls(tree):
            name = _name(call.func)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in unsafe:
                bad.append(f"{where} {name}")
            elif name == "yaml.safe_load":
                safe_loads += 1
            elif name == "yaml.load":
                loader = next((k.value for k in call.keywords if k.arg == "Loader"), None)
                if not (isinstance(loader, ast.Name) and loader.id == "_LOADER"):
                    bad.append(f"{where} yaml.load without the safe loader")
                elif '_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)' not in text:
                    bad.append(f"{where} _LOADER is not a safe loader")
    assert safe_loads >= 1
    assert not bad, bad


# ---------------------------------------------------------------------- paths
@pytest.mark.parametrize("run_id", ["../x", "a/../../x", "/tmp/x", "..", ".hidden", "x\ny"])
def test_run_id_cannot_escape_the_output_directory(tmp_path: Path, run_id: str) -> None:
    from profiler.cli.main import cli

    out = tmp_path / "sandbox" / "runs"
    args = ["run", "--endpoint", "http://127.0.0.1:1", "--out", str(out), "--run-id", run_id]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert f"run id '{run_id}' is not allowed" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_id_escape_through_the_real_process(tmp_path: Path) -> None:
    out = tmp_path / "sandbox" / "runs"
    res = run_cli(
        infprof_cmd("run", "--endpoint", "http://127.0.0.1:1", "--out", str(out), "--run-id", "../x"),
        cli_env(tmp_path / "home"),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "run id '../x' is not allowed" in one_error_line(res.stderr)
    assert not (tmp_path / "sandbox").exists() and not (tmp_path / "x").exists()
