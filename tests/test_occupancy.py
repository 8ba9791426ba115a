"""Tests of allocator.model.occupancy: shares, MIG slices (legal starts, overlap, counts, +me),
whole GPUs, CPU and memory per node, all-or-nothing takes, releases restoring the state."""

from __future__ import annotations

import random

import pytest

from allocator.model import (
    CATALOG,
    Gpu,
    GpuModel,
    GpuOccupancy,
    Incumbent,
    MigInstance,
    MigProfile,
    Node,
    NodeOccupancy,
    OccupancyError,
    Placement,
    Problem,
    ProblemError,
)
from allocator.model.occupancy import FULL_MILLI, legal_starts, slice_mask, starts_mask

A100 = CATALOG["A100-SXM4-80GB"]
A30 = CATALOG["A30-24GB"]
T4 = CATALOG["T4"]
#: A 4-slice toy model whose only profile may appear twice although four fit.
TOY = GpuModel("TOY-4", 16, 4, 4, (MigProfile("1g.4gb", 1, 1, (0, 1, 2, 3), 2),))


def _error(occ: GpuOccupancy, kind: str, **kw: object) -> OccupancyError:
    """The error of taking ``kind`` on ``occ``, checking ``why_not`` says the same, and that the
    failed take changed nothing."""
    before = occ.copy()
    err = occ.why_not(kind, **kw)  # type: ignore[arg-type]
    assert err is not None and not occ.fits(kind, **kw)  # type: ignore[arg-type]
    with pytest.raises(OccupancyError) as info:
        occ.take(kind, **kw)  # type: ignore[arg-type]
    assert info.value.field == err.field and info.value.message == err.message
    assert occ == before
    return info.value


# ---------------------------------------------------------------------- masks and starts
def test_slice_and_starts_masks_follow_the_catalog() -> None:
    """3g.40gb at 4 occupies slices 4-7; it may start at 0 or 4; 7g only at 0."""
    p3 = A100.profile("3g.40gb")
    assert p3 is not None
    assert slice_mask(p3, 4) == 0b1111_0000
    assert starts_mask(p3) == 0b1_0001
    assert legal_starts(A100, "7g.80gb") == (0,)
    assert legal_starts(A100, "1g.10gb") == (0, 1, 2, 3, 4, 5, 6)
    assert legal_starts(A100, "9g.1gb") == () and legal_starts(T4, "1g.10gb") == ()


# ---------------------------------------------------------------------- shares
def test_shares_add_up_to_1000_with_the_outside_use() -> None:
    """400 milli held outside leave 600: 250 + 350 fit, one more milli does not."""
    g = GpuOccupancy(A100, "shared", "n", 3, used_milli=400)
    assert g.free_milli == 600
    g.take("share", milli=250)
    g.take("share", milli=350)
    assert g.milli == FULL_MILLI and g.free_milli == 0
    err = _error(g, "share", milli=1)
    assert (err.field, err.message) == ("milli", "GPU 3 of 'n' is over 1000 milli")
    assert err.at("incumbents[0].placements[1]") == "incumbents[0].placements[1].milli"


def test_whole_gpu_needs_a_gpu_without_shares() -> None:
    """A shared GPU takes a whole replica only while nothing is on it; then nothing else."""
    g = GpuOccupancy(A100, "shared", "n", 0)
    g.take("whole", owner="w")
    assert g.free_milli == 0
    err = _error(g, "share", milli=100)
    assert (err.field, err.message) == ("gpus", "GPU 0 of 'n' is already held by 'w'")
    assert _error(g, "whole").message == "GPU 0 of 'n' is already held by 'w'"
    h = GpuOccupancy(A100, "shared", "n", 1, used_milli=1)
    assert _error(h, "whole").message == "GPU 1 of 'n' is shared"


def test_modes_take_only_their_kinds() -> None:
    """whole GPUs take whole replicas, mig GPUs MIG instances, shared GPUs shares and wholes."""
    cases = {
        "whole": ("whole",),
        "shared": ("whole", "share"),
        "mig": ("mig",),
    }
    args = {"whole": {}, "share": {"milli": 500}, "mig": {"profile": "1g.10gb", "start": 0}}
    for mode, allowed in cases.items():
        for kind, kw in args.items():
            g = GpuOccupancy(A100, mode)
            if kind in allowed:
                assert g.fits(kind, **kw)  # type: ignore[arg-type]
            else:
                err = _error(g, kind, **kw)
                assert err.message == f"a {kind} placement cannot use a {mode} GPU"
                assert err.field == "gpus"


def test_misuse_is_a_value_error() -> None:
    """An unknown kind or a share of no milli is a programming error, not a rule broken."""
    g = GpuOccupancy(A100, "shared")
    with pytest.raises(ValueError, match="kind"):
        g.fits("slice")
    with pytest.raises(ValueError, match="milli"):
        g.take("share", milli=0)


# ---------------------------------------------------------------------- MIG
def test_mig_legal_starts_only() -> None:
    """3g.40gb starts at 0 or 4, never at 2, even on an empty GPU; unknown profiles are named."""
    g = GpuOccupancy(A100, "mig")
    err = _error(g, "mig", profile="3g.40gb", start=2)
    assert err.field == ""
    assert err.message == "3g.40gb cannot start at slot 2 on A100-SXM4-80GB (legal: [0, 4])"
    assert err.at("p") == "p"
    err = _error(g, "mig", profile="1g.5gb", start=0)
    assert err.message == "A100-SXM4-80GB has no MIG profile '1g.5gb'"
    assert g.free_starts("3g.40gb") == [0, 4]


def test_mig_overlap() -> None:
    """4g at 0 takes slices 0-3: 3g at 0 overlaps, 3g at 4 fits, then 1g anywhere overlaps."""
    g = GpuOccupancy(A100, "mig")
    g.take("mig", profile="4g.40gb", start=0)
    assert g.slices == 0b1111
    assert _error(g, "mig", profile="3g.40gb", start=0).message == (
        "3g.40gb@0 overlaps another instance"
    )
    assert g.free_starts("3g.40gb") == [4]
    g.take("mig", profile="3g.40gb", start=4)
    assert g.slices == 0xFF and g.free_starts("1g.10gb") == []
    assert g.instances == (("4g.40gb", 0), ("3g.40gb", 4))


def test_mig_seven_small_instances_fill_slices_0_to_6() -> None:
    """Seven 1g.10gb take slots 0-6; slot 7 is no legal start (the eighth slice stays free)."""
    g = GpuOccupancy(A100, "mig")
    for s in range(7):
        g.take("mig", profile="1g.10gb", start=s)
    assert g.count("1g.10gb") == 7 and g.count("2g.20gb") == 0
    assert "legal" in _error(g, "mig", profile="1g.10gb", start=7).message


def test_mig_max_count() -> None:
    """A profile's max_count binds even with free slices."""
    g = GpuOccupancy(TOY, "mig")
    g.take("mig", profile="1g.4gb", start=0)
    g.take("mig", profile="1g.4gb", start=1)
    assert g.free_starts("1g.4gb") == []
    err = _error(g, "mig", profile="1g.4gb", start=2)
    assert err.message == "more than 2 instances of 1g.4gb"


def test_one_media_instance_per_gpu_whatever_its_profile() -> None:
    """On an A30, 1g.6gb+me and 2g.12gb+me (each within its own count) cannot coexist."""
    g = GpuOccupancy(A30, "mig")
    g.take("mig", profile="1g.6gb+me", start=0)
    assert g.media == 1
    err = _error(g, "mig", profile="2g.12gb+me", start=2)
    assert err.message == "at most one +me instance per GPU"
    assert g.fits("mig", profile="2g.12gb", start=2)


def test_outside_instances_are_taken_and_checked() -> None:
    """Instances a GPU is offered with occupy their slices; an illegal layout raises."""
    g = GpuOccupancy.of(
        Gpu(2, "A100-80GB", "mig", mig_instances=(MigInstance("3g.40gb", 4),)), A100
    )
    assert g.index == 2 and g.slices == 0xF0 and g.free_starts("4g.40gb") == [0]
    with pytest.raises(OccupancyError, match="overlaps"):
        GpuOccupancy(A100, "mig", mig_instances=[("4g.40gb", 0), ("3g.40gb", 0)])


# ---------------------------------------------------------------------- release
def test_release_restores_the_state() -> None:
    """Take a random mix of replicas, release them in a random order: back to the start."""
    rng = random.Random(7)
    for mode, model in (("mig", A100), ("mig", A30), ("shared", A100), ("whole", T4)):
        g = GpuOccupancy(model, mode, "n", 0, used_milli=100 if mode == "shared" else 0)
        start = g.copy()
        taken: list[tuple[str, dict[str, object]]] = []
        for _ in range(200):
            if mode == "mig":
                p = rng.choice(model.profiles)
                kind, kw = "mig", {"profile": p.name, "start": rng.choice(p.starts)}
            elif mode == "shared" and rng.random() < 0.9:
                kind, kw = "share", {"milli": rng.choice((50, 200, 300))}
            else:
                kind, kw = "whole", {"owner": "w"}
            if g.fits(kind, **{k: v for k, v in kw.items() if k != "owner"}):  # type: ignore[arg-type]
                g.take(kind, **kw)  # type: ignore[arg-type]
                taken.append((kind, kw))
        assert taken and g != start
        rng.shuffle(taken)
        for kind, kw in taken:
            g.release(kind, **kw)  # type: ignore[arg-type]
        assert g == start


def test_release_of_what_is_not_held_raises() -> None:
    """Releasing more milli than was taken, a missing instance or a free GPU is a ValueError."""
    g = GpuOccupancy(A100, "shared", used_milli=300)
    g.take("share", milli=200)
    with pytest.raises(ValueError, match="no share"):
        g.release("share", milli=300)  # 300 is held, but 100 of it from outside
    with pytest.raises(ValueError, match="not held whole"):
        g.release("whole")
    m = GpuOccupancy(A100, "mig")
    m.take("mig", profile="2g.20gb", start=2)
    with pytest.raises(ValueError, match=r"no MIG instance 2g\.20gb@0"):
        m.release("mig", profile="2g.20gb", start=0)
    w = GpuOccupancy(T4, "whole")
    w.take("whole", owner="a")
    with pytest.raises(ValueError, match="not held whole by 'b'"):
        w.release("whole", owner="b")
    w.release("whole", owner="a")
    assert w.owner is None and w.fits("whole")


# ---------------------------------------------------------------------- nodes
def _node() -> NodeOccupancy:
    gpus = (Gpu(0, "A100-80GB", "shared"), Gpu(1, "A100-80GB", "whole"), Gpu(5, "H100", "mig"))
    return NodeOccupancy(Node("n", cpu_milli=4000, memory_mib=8000, gpus=gpus), CATALOG)


def test_node_cpu_and_memory() -> None:
    """CPU and memory are taken and released; a strict take that does not fit changes nothing;
    a non-strict one records the overflow."""
    n = _node()
    assert n.fits_resources(4000, 8000) and not n.fits_resources(4001, 0)
    n.take_resources(3000, 1000)
    with pytest.raises(OccupancyError, match="1000 CPU milli and 7000 MiB free"):
        n.take_resources(1500, 0)
    assert (n.used_cpu_milli, n.used_memory_mib) == (3000, 1000)
    n.take_resources(1500, 7500, strict=False)
    assert n.cpu_over and n.memory_over
    n.release_resources(1500, 7500)
    assert not n.cpu_over and not n.memory_over
    with pytest.raises(ValueError, match="does not use"):
        n.release_resources(3001, 0)


def test_node_take_is_all_or_nothing() -> None:
    """A two-GPU replica whose second GPU refuses leaves the first free; a missing GPU is named."""
    n = _node()
    n.take((1,), "whole", owner="a")
    with pytest.raises(OccupancyError, match="GPU 1 of 'n' is already held by 'a'"):
        n.take((0, 1), "whole", owner="b")
    g0 = n.gpu(0)
    assert g0 is not None and g0.owner is None and g0.milli == 0
    err = n.why_not((0, 7), "whole")
    assert err is not None and (err.field, err.message) == ("gpus", "node 'n' has no GPU 7")
    assert n.gpu(7) is None
    n.take((0,), "share", milli=600)
    assert not n.fits((0,), "share", milli=500) and n.fits((5,), "mig", profile="7g.80gb", start=0)
    n.release((0,), "share", milli=600)
    n.release((1,), "whole", owner="a")
    assert n.fits((0, 1), "whole")
    with pytest.raises(ValueError, match="no GPU 9"):
        n.release((9,), "whole")


def test_gpus_listed_out_of_index_order() -> None:
    """GPU indices need not be positions in the node's list."""
    gpus = (Gpu(3, "T4"), Gpu(0, "T4"))
    n = NodeOccupancy(Node("m", gpus=gpus), CATALOG)
    n.take((0, 3), "whole", owner="x")
    assert [n.gpu(i).owner for i in (0, 3)] == ["x", "x"]  # type: ignore[union-attr]
    assert n.gpu(1) is None


# ---------------------------------------------------------------------- Problem
def _problem_error(*incumbents: Incumbent) -> tuple[str, str]:
    gpus = (Gpu(0, "A100-80GB", "whole"), Gpu(1, "A100-80GB", "mig"))
    nodes = (Node("n", cpu_milli=1000, memory_mib=1000, gpus=gpus), Node("m", cpu_milli=10))
    with pytest.raises(ProblemError) as info:
        Problem(nodes=nodes, incumbents=incumbents)
    return info.value.path, info.value.message


def test_problem_reports_the_rules_at_the_placement() -> None:
    """Problem validates incumbents with these rules, naming the placement's field."""
    a = Incumbent("a", "x", 1.0, (Placement("n", (0,)),))
    b = Incumbent("b", "x", 1.0, (Placement("n", (1,), "3g.40gb", 4), Placement("n", (0,))))
    assert _problem_error(a, b) == (
        "incumbents[1].placements[1].gpus",
        "GPU 0 of 'n' is already held by 'a'",
    )
    c = Incumbent("c", "x", 1.0, (Placement("n", (1,), "4g.40gb", 2),))
    assert _problem_error(c) == (
        "incumbents[0].placements[0]",
        "4g.40gb cannot start at slot 2 on A100-SXM4-80GB (legal: [0])",
    )


def test_problem_checks_cpu_of_all_nodes_before_memory() -> None:
    """CPU and memory are summed over all incumbents first; CPU is reported before memory."""
    big_mem = Incumbent("a", "x", 1.0, (Placement("n", (0,)),), memory_mib=2000)
    cpu1 = Incumbent("b", "x", 1.0, (Placement("n", (1,), "1g.10gb", 0),), cpu_milli=600)
    cpu2 = Incumbent("c", "x", 1.0, (Placement("n", (1,), "1g.10gb", 1),), cpu_milli=600)
    assert _problem_error(big_mem, cpu1, cpu2) == (
        "incumbents",
        "incumbents use 1200 CPU milli of 'n', which has 1000",
    )
    assert _problem_error(big_mem) == (
        "incumbents",
        "incumbents use 2000 MiB of 'n', which has 1000",
    )
