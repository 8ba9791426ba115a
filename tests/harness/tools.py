"""Where the Go tools the end-to-end tests start are: the binaries scripts/build-agent-tools builds
(vcluster's syncer, kwok) and the Go module cache's copy of the releases tests/<tool>/go.mod pins
(vcluster's default values, kwok's stages are read from there, so Go must be on PATH).

Shared by tests/k8s/conftest.py, tests/harness/agentlab.py and the benchmarks. Import it after
putting tests/harness on ``sys.path``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT_TOOLS_SCRIPT = REPO / "scripts" / "build-agent-tools"
#: The binaries scripts/build-agent-tools builds, in the order --print-bin-dirs lists their folders.
AGENT_TOOLS = ("vcluster", "kwok")


def agent_tool(name: str) -> Path:
    """Where scripts/build-agent-tools puts the binary ``name`` (one of :data:`AGENT_TOOLS`);
    it may be missing (the script builds it; it needs Go)."""
    dirs = subprocess.run(
        [str(AGENT_TOOLS_SCRIPT), "--print-bin-dirs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return Path(dirs[AGENT_TOOLS.index(name)]) / name


def module_dir(pinning: str, module: str) -> Path:
    """Where the Go module cache holds ``module`` at the release tests/<pinning>/go.mod pins
    (scripts/build-agent-tools downloads it)."""
    try:
        found = subprocess.run(
            ["go", "list", "-m", "-f", "{{.Dir}}", module],
            cwd=REPO / "tests" / pinning,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as e:
        raise RuntimeError(f"{module}: 'go' is not on PATH to find it in the module cache") from e
    if found.returncode != 0 or not found.stdout.strip():
        raise RuntimeError(
            f"{module} is not in the Go module cache (run scripts/build-agent-tools): "
            + found.stderr.strip()
        )
    return Path(found.stdout.strip())
