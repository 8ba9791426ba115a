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
    assert "error: --time-limit: " in capsys.readouterr().err
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


def _params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_solve_reads_a_params_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`solve --params FILE` solves with the file's fields; the result says so."""
    problem = _write(tmp_path / "p.json", problem_to_dict(demo_problem()))
    params = _params_file(
        tmp_path, 'solver = "local"\npayments = "first-price"\nlocal_iterations = 5\n'
    )
    assert main(["solve", str(problem), "--params", str(params), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["solver"] == "local" and result["payment_rule"] == "first-price"
    assert result["stats"]["local_iterations"] <= 5


def test_flags_override_the_params_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults < file < flags: a flag given wins over the file, a flag left out does not
    reset the file's value to its default."""
    problem = _write(tmp_path / "p.json", problem_to_dict(demo_problem()))
    params = _params_file(tmp_path, 'solver = "local"\npayments = "first-price"\n')
    argv = ["solve", str(problem), "--params", str(params), "--json"]
    assert main([*argv, "--solver", "greedy"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["solver"] == "greedy" and result["payment_rule"] == "first-price"
    assert main(["demo", "--params", str(params), "--payments", "critical", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["solver"] == "local" and result["payment_rule"] == "critical"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('solver = "fastest"\n', "error: solver: {file}: must be one of"),
        ("time_limit = -2\n", "error: time_limit: {file}: "),
        ("cpsat_work = 0\n", "error: cpsat_work: {file}: must be a positive number"),
        ("colour = 1\n", "error: colour: {file}: not a solve parameter"),
        ("solver = \n", "error: --params: {file}: not valid TOML"),
    ],
    ids=["solver", "time-limit", "cpsat-work", "unknown", "not-toml"],
)
@pytest.mark.parametrize("command", ["solve", "demo", "run", "simulate"])
def test_a_bad_params_file_exits_2_naming_the_field_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str, command: str
) -> None:
    """Every command with --params rejects a bad file before doing anything (for `run`: before
    connecting to a cluster), with exit code 2 and an error naming the field and the file."""
    params = _params_file(tmp_path, text)
    argv = {
        "solve": ["solve", str(_write(tmp_path / "p.json", problem_to_dict(demo_problem())))],
        "demo": ["demo"],
        "run": ["run", "--once", "--kubeconfig", "/nonexistent/kubeconfig"],
        "simulate": ["simulate", "--no-progress"],
    }[command]
    assert main([*argv, "--params", str(params)]) == 2
    assert needle.format(file=params) in capsys.readouterr().err


def test_a_missing_params_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--params", str(tmp_path / "nope.toml")]) == 2
    assert "error: --params: cannot read" in capsys.readouterr().err


def test_a_flag_that_breaks_the_file_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag whose value is bad, or that does not fit the file, is named as the flag."""
    params = _params_file(tmp_path, 'solver = "local"\n')
    assert main(["demo", "--params", str(params), "--payments", "vcg"]) == 2
    assert "error: --payments: vcg needs the exact solver" in capsys.readouterr().err
    assert main(["demo", "--params", str(params), "--time-limit", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: --time-limit: " in err and str(params) not in err


def test_help_shows_the_effective_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--params FILE" in out
    for default in ("default: auto", "critical up to 1000 bids", "(default: 10)", "default: 0"):
        assert default in out


def test_the_example_params_file_is_valid_and_complete() -> None:
    """examples/params.toml loads, names every field of SolveParams, and keeps the defaults
    except where it says otherwise."""
    from allocator.solvers import SolveParams

    path = Path(__file__).resolve().parents[1] / "examples" / "params.toml"
    params = SolveParams.from_toml(path)
    text = path.read_text(encoding="utf-8")
    for name in SolveParams().to_dict():
        assert f"{name} =" in text, name
    assert params.solver in ("auto", "local", "greedy", "cpsat")


def test_run_gets_its_round_options_from_flags_and_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --once` hands run_once one RoundOptions: the --params file's solve with the flags
    on top, and the round's own flags."""
    pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
    import allocator.cluster.api as cluster_api
    import allocator.cluster.loop as loop
    from allocator.cluster.options import RoundOptions

    seen: list[RoundOptions] = []

    class Stop(Exception):
        pass

    def fake_run_once(api: object, config: object, options: RoundOptions) -> None:
        seen.append(options)
        raise Stop

    monkeypatch.setattr(cluster_api, "connect", lambda *a, **k: object())
    monkeypatch.setattr(loop, "run_once", fake_run_once)
    params = _params_file(tmp_path, 'solver = "local"\ntime_limit = 3.0\ncpsat_work = 5.0\n')
    argv = ["run", "--once", "--params", str(params), "--time-limit", "2", "--round-id", "r-x"]
    with pytest.raises(Stop):
        main([*argv, "--lease", "ns/lease", "--keep-rounds", "7", "--dry-run"])
    (options,) = seen
    assert options.solve.solver == "local" and options.solve.cpsat_work == 5.0
    assert options.solve.time_limit == 2.0
    assert options.round_id == "r-x" and options.dry_run and options.keep_rounds == 7
    assert options.lease is not None and options.lease[:2] == ("ns", "lease")
    assert options.record_namespace == "ns"


@pytest.mark.parametrize("scenario", ["openb", "mixed"])
def test_simulate_passes_the_params_file_to_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    """`simulate --params FILE` hands the simulator the file's SolveParams (None without it)."""
    import allocator.sim.experiment as experiment
    import allocator.sim.mixed_report as mixed_report
    from allocator.solvers import SolveParams

    seen: list[object] = []

    def fake(*args: object, **kwargs: object) -> dict[str, object]:
        seen.append(kwargs["params"])
        return {"seeds": [], "traces": {}, "policies": {}}

    monkeypatch.setattr(experiment, "simulate", fake)
    monkeypatch.setattr(mixed_report, "simulate_mixed", fake)
    params = _params_file(tmp_path, 'solver = "local"\ntime_limit = 0.5\n')
    base = ["simulate", "--scenario", scenario, "--no-progress", "--json"]
    assert main(base) == 0
    assert main([*base, "--params", str(params)]) == 0
    assert seen == [None, SolveParams(solver="local", time_limit=0.5)]


def test_metrics_need_the_long_running_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """A --once round keeps its figures on its AllocationRound: no metrics server for it."""
    assert main(["run", "--once", "--metrics-port", "9090"]) == 2
    assert "error: --metrics-port: only with --interval" in capsys.readouterr().err
