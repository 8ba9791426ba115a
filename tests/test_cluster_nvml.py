"""``gpu-allocator inventory``: NVML read into the node's inventory, printed or refused clearly.

No GPU is on the machines these tests run on, so they fake NVML: ``tests/harness/fake_nvml.py``
is a ``pynvml`` module object implementing the NVML functions the inventory calls, with the
semantics of the NVML API reference (https://docs.nvidia.com/deploy/nvml-api/: device queries,
MIG management, NvLink methods; see its docstring), built from the H200 recorded read-only in
``docs/hardware/h200-nvml-mig.json``. One test uses the real ``pynvml`` against this machine's
missing NVML library.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "harness"))
import fake_nvml  # the harness folder is on sys.path only from here
from fake_nvml import FakeGpu, FakeNvml, h200, nvlink_groups, nvswitch_links

from allocator.cli import main
from allocator.cluster.inventory import (
    InventoryInstance,
    NodeInventory,
    inventory_to_dict,
    parse_inventory,
)
from allocator.cluster.nvml import NvmlError, load_nvml, read_inventory
from allocator.model.problem import MigInstance

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _read(gpus: list[FakeGpu]) -> tuple[FakeNvml, NodeInventory]:
    nvml = FakeNvml(gpus)
    return nvml, read_inventory(nvml, now=lambda: NOW)


def test_recorded_h200_with_mig_off_and_no_nvlink() -> None:
    """The recorded H200 (MIG off, NVLink Not Supported): identity, the catalog's model, its
    memory, MIG off now and pending, no instances, alone in its NVLink domain; NVML is shut
    down after the read."""
    nvml, inv = _read([h200(0)])
    (gpu,) = inv.gpus
    assert gpu.product == "NVIDIA H200" and gpu.model == "H200-141GB"
    assert gpu.memory_mib == 143771
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert gpu.pci_bus_id == "00000000:18:00.0"
    assert (gpu.mig_current, gpu.mig_pending) == (False, False)
    assert gpu.mig_instances == () and gpu.nvlink_peers == () and gpu.nvlink_switches == ()
    assert inv.nvlink_domains() == ((0,),)
    assert inv.mig_layouts() == {}
    assert inv.driver == "580.159.04" and inv.read_at == NOW
    assert nvml.initialised == 0
    # Read-only: only queries were made (the fake has no call that changes a GPU).
    assert all("Get" in c or c in ("nvmlInit", "nvmlShutdown") for c in nvml.calls)


def test_mig_instances_with_their_profiles_and_placements() -> None:
    """An H200 in MIG mode holding 3g@0, 2g@4, 1g@6 (NVML profile indices 2, 1, 0): the
    instances come back by start with the catalog's names and NVML's placement sizes, and
    mig_layouts gives them as the model's MigInstances; a pending change of mode shows."""
    gpu = h200(0, mig=(1, 0), instances=[(0, 6), (2, 0), (1, 4)])
    _, inv = _read([gpu, h200(1)])
    first = inv.gpus[0]
    assert (first.mig_current, first.mig_pending) == (True, False)
    assert first.mig_instances == (
        InventoryInstance("3g.71gb", 0, 4),
        InventoryInstance("2g.35gb", 4, 2),
        InventoryInstance("1g.18gb", 6, 1),
    )
    assert inv.mig_layouts() == {
        0: (MigInstance("3g.71gb", 0), MigInstance("2g.35gb", 4), MigInstance("1g.18gb", 6))
    }
    assert [g.index for g in inv.whole_gpus()] == [1]


def test_profile_names_from_nvml_itself_and_media_extensions() -> None:
    """Where NVML names its profiles (``MIG 1g.18gb+me``, the v2 info's name), that name is
    used without the ``MIG`` prefix; the +me and double-memory 1g profiles stay apart."""
    gpu = h200(0, mig=(1, 1), instances=[(7, 0), (9, 2), (9, 4)], names=True)
    _, inv = _read([gpu])
    assert [(i.profile, i.start, i.size) for i in inv.gpus[0].mig_instances] == [
        ("1g.18gb+me", 0, 1),
        ("1g.35gb", 2, 2),
        ("1g.35gb", 4, 2),
    ]


def test_eight_gpus_in_two_nvlink_groups() -> None:
    """Eight H200s, NVLinked in two groups of four (two links per pair, two links down): each
    GPU's peers are the other three of its group, and the domains are the two groups."""
    links = nvlink_groups(8, [[0, 1, 2, 3], [4, 5, 6, 7]])
    _, inv = _read([h200(i, links=links[i]) for i in range(8)])
    assert inv.gpus[0].nvlink_peers == (1, 2, 3)
    assert inv.gpus[5].nvlink_peers == (4, 6, 7)
    assert inv.nvlink_domains() == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert inv.nvlink_domain_of() == {i: i // 4 for i in range(8)}


def test_nvswitch_board_is_one_domain() -> None:
    """Eight GPUs whose 18 links each end at four NVSwitches (no GPU at a far end): no direct
    peers, the switches' bus ids recorded, and all eight in one domain through them."""
    links = nvswitch_links(8)
    _, inv = _read([h200(i, links=links[i]) for i in range(8)])
    assert all(g.nvlink_peers == () for g in inv.gpus)
    assert inv.gpus[3].nvlink_switches == tuple(fake_nvml.SWITCHES)
    assert inv.nvlink_domains() == (tuple(range(8)),)


def test_gpu_without_mig_support() -> None:
    """A GPU that cannot do MIG (nvmlDeviceGetMigMode: Not Supported) has no MIG mode, and a
    product the catalog does not know has no model."""
    other = FakeGpu("NVIDIA Imaginary GPU", "GPU-x", "00000000:42:00.0", 24576, mig=None)
    _, inv = _read([other])
    gpu = inv.gpus[0]
    assert gpu.mig_current is None and gpu.mig_pending is None and gpu.model is None
    assert inv.whole_gpus() == (gpu,)


def test_json_document_round_trips_through_the_parser() -> None:
    """The document written for the annotation parses back to the same inventory."""
    links = nvlink_groups(8, [[0, 1, 2, 3], [4, 5, 6, 7]])
    gpus = [h200(i, links=links[i]) for i in range(8)]
    gpus[7] = h200(7, mig=(1, 1), instances=[(2, 4)], links=links[7])
    _, inv = _read(gpus)
    text = json.dumps(inventory_to_dict(inv))
    assert parse_inventory(text) == inv
    assert json.loads(text)["nvlink_domains"] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_no_nvml_library_is_a_clear_error() -> None:
    """nvmlInit failing with NVML_ERROR_LIBRARY_NOT_FOUND says there is no NVML library and why
    that may be (no driver, or not the NVIDIA runtime)."""
    with pytest.raises(NvmlError, match=r"no NVML library \(libnvidia-ml.so.1\)"):
        read_inventory(FakeNvml([h200(0)], library=False))


def test_real_pynvml_on_this_gpu_less_machine() -> None:
    """The real pynvml (nvidia-ml-py) here, where no NVIDIA driver is installed, gives the same
    clear error (not pynvml's exception)."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a machine with a GPU
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(NvmlError, match="no NVML library"):
        read_inventory(load_nvml())


def test_permission_error_names_the_gpu_and_the_fix() -> None:
    """Listing MIG instances refused (Insufficient Permissions) names the GPU and what a
    container needs."""
    gpu = h200(0, mig=(1, 1), instances=[(2, 0)])
    gpu.instance_permission = False
    with pytest.raises(NvmlError, match=r"GPU 0 \(00000000:18:00.0\): Insufficient Permissions"):
        read_inventory(FakeNvml([gpu]))


def test_cli_prints_the_json_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inventory --json` prints the annotation's document (version 1, every GPU, the domains);
    the table names each GPU, its model, MIG instances and NVLink domain."""
    links = nvlink_groups(4, [[0, 1], [2, 3]])
    gpus = [h200(i, links=links[i]) for i in range(4)]
    gpus[3] = h200(3, mig=(1, 1), instances=[(2, 0), (2, 4)], links=links[3])
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus))
    assert main(["inventory", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and len(doc["gpus"]) == 4
    assert doc["nvlink_domains"] == [[0, 1], [2, 3]]
    assert doc["gpus"][3]["mig_instances"] == [
        {"profile": "3g.71gb", "start": 0, "size": 4},
        {"profile": "3g.71gb", "start": 4, "size": 4},
    ]
    parse_inventory(json.dumps(doc))
    assert main(["inventory"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["gpu", "pci", "product", "model"]
    assert "H200-141GB" in table[2] and "3g.71gb@0 3g.71gb@4" in table[5]
    assert table[-1].startswith("driver 580.159.04, read at ")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (None, "the NVML Python bindings are not installed"),
        (FakeNvml([], library=False), "no NVML library"),
    ],
)
def test_cli_without_nvml_exits_1_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: object,
    message: str,
) -> None:
    """No pynvml, or no NVML library: exit 1, one `error:` line on stderr, no traceback."""
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert main(["inventory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["inventory", "--publish"], "--node"),
        (["inventory", "--node", "n1"], "--node"),
        (["inventory", "--interval", "5"], "--interval"),
        (["inventory", "--publish", "--node", "n1", "--max-runs", "2"], "--max-runs"),
    ],
)
def test_cli_option_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    """--publish needs a node (flag or NODE_NAME); --node, --interval only with --publish;
    --max-runs only with --interval: exit 2 naming the flag, before NVML is touched."""
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], library=False))
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {flag}")
