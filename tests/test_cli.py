"""The gpu-allocator command: demo, solve, verify, schema and its exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from allocator.cli import main
from allocator.examples import demo_problem
from allocator.model import problem_to_dict


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_demo_prints_winners_prices_and_the_preemption(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo solves the example, preempts the research sweep and prints a readable table."""
    assert main(["demo", "--solver", "greedy"]) == 0
    out = capsys.readouterr().out
    assert "Winners" in out and "chat-h100-gang" in out
    assert "Preempted: research-old-sweep" in out
    assert "over_budget" in out  # notebook-big bids more than its wallet holds
    assert "clearing price" in out


def test_solve_then_verify_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """solve --out writes a result the schema accepts and verify accepts (exit 0)."""
    problem = _write(tmp_path / "p.json", problem_to_dict(demo_problem()))
    result = tmp_path / "r.json"
    assert main(["solve", str(problem), "--solver", "local", "--out", str(result), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads(result.read_text(encoding="utf-8"))
    assert printed == stored
    main(["schema", "result"])
    schema = json.loads(capsys.readouterr().out)
    jsonschema.validate(stored, schema)
    assert main(["verify", str(problem), str(result)]) == 0
    assert "every rule holds" in capsys.readouterr().out


def test_verify_reports_a_tampered_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A result edited to charge more than the bid fails verify with exit code 1."""
    problem = _write(tmp_path / "p.json", problem_to_dict(demo_problem()))
    result = tmp_path / "r.json"
    assert main(["solve", str(problem), "--solver", "greedy", "--out", str(result)]) == 0
    data = json.loads(result.read_text(encoding="utf-8"))
    data["winners"][0]["payment"] = data["winners"][0]["value"] * 2 + 1
    _write(result, data)
    capsys.readouterr()
    assert main(["verify", str(problem), str(result)]) == 1
    assert "payment.above_bid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps({"nodes": [{"name": "n", "gpus": [{"index": 0, "model": "Z9"}]}]}),
            "nodes[0].gpus[0].model",
        ),
        (
            json.dumps({"nodes": [], "wallets": [{"name": "w", "balance": -3}]}),
            "wallets[0].balance",
        ),
    ],
    ids=["malformed-json", "unknown-model", "negative-balance"],
)
def test_bad_problem_file_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    """Bad input gives exit code 2 and an error that names the field; nothing is written."""
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(["solve", str(path), "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-positive time limit, vcg with a heuristic solver, or a missing file exit with 2."""
    problem = _write(tmp_path / "p.json", problem_to_dict(demo_problem()))
    assert main(["solve", str(problem), "--time-limit", "-1"]) == 2
    assert "time_limit" in capsys.readouterr().err
    assert main(["solve", str(problem), "--solver", "greedy", "--payments", "vcg"]) == 2
    assert "vcg" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_installed_command_runs_the_demo() -> None:
    """The console script `gpu-allocator` is installed and its demo exits 0."""
    exe = shutil.which("gpu-allocator")
    assert exe is not None, "gpu-allocator is not on PATH: install the package first"
    done = subprocess.run(
        [exe, "demo", "--solver", "greedy"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "chat-h100-gang" in done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "one of the arguments --once --interval is required"),
        (["--once", "--interval", "5"], "not allowed with argument"),
        (["--interval", "0"], "argument --interval: must be > 0 seconds"),
        (["--interval", "-3"], "argument --interval: must be > 0 seconds"),
        (["--interval", "nan"], "argument --interval: must be > 0 seconds"),
        (["--interval", "soon"], "argument --interval: not a number of seconds"),
        (["--interval", "5", "--max-rounds", "0"], "argument --max-rounds: must be >= 1"),
        (["--interval", "5", "--max-rounds", "two"], "argument --max-rounds: not an integer"),
        (["--once", "--max-rounds", "2"], "--max-rounds: only with --interval"),
        (["--interval", "5", "--round-id", "r-1"], "--round-id: only with --once"),
        (["--once", "--apply-workers", "0"], "argument --apply-workers: must be >= 1"),
    ],
)
def test_run_mode_arguments_exit_2_naming_the_option(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` needs exactly one of --once and --interval SECONDS (> 0); --max-rounds N (>= 1)
    and --round-id each belong to one mode: anything else is a usage error (exit 2) naming the
    option, before any connection to a cluster is tried."""
    try:
        code = main(["run", "--kubeconfig", "/nonexistent/kubeconfig", *args])
    except SystemExit as e:  # argparse's own usage errors
        code = int(str(e.code))
    assert code == 2
    assert needle in capsys.readouterr().err
