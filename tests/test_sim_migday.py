"""The mig-day scenario (allocator.sim.migday): fleet, workload, layouts and policies."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from allocator.model import Gpu, Node, Problem
from allocator.sim.migday import (
    CLASSES,
    INFERENCE,
    LAYOUTS,
    MIG_MODELS,
    TRAINING,
    generate_mig_day,
    layout_equivalents,
    mig_fleet,
)
from allocator.sim.policies.migday import SEARCH_LAYOUTS, fluid_scores, mix_layouts
from allocator.sim.traces import data_dir

SPOT = data_dir() / "spot-gpu" / "node_info_df.csv"
needs_fleet = pytest.mark.skipif(not SPOT.is_file(), reason="spot-gpu node list not present")


# ------------------------------------------------------------------------------ fleet, layouts


@needs_fleet
def test_fleet_sample_is_mig_capable_evenly_spaced_and_deterministic() -> None:
    full = mig_fleet(SPOT, None)
    assert len(full) == 432 + 22 + 219
    assert sum(len(n.gpus) for n in full) == 5384
    sample = mig_fleet(SPOT, 8)
    assert sample == mig_fleet(SPOT, 8)
    assert [n.name for n in sample] == [full[i * len(full) // 8].name for i in range(8)]
    for n in sample:
        assert len(n.gpus) == 8
        assert {g.model for g in n.gpus} <= set(MIG_MODELS)
        assert {g.mode for g in n.gpus} == {"mig"}
    assert {g.model for n in mig_fleet(SPOT, 40) for g in n.gpus} == set(MIG_MODELS)
    with pytest.raises(ValueError, match="nodes"):
        mig_fleet(SPOT, 0)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_named_layouts_are_legal_and_use_every_compute_slice(name: str) -> None:
    for model in MIG_MODELS:
        # The model's own MIG rules: the instances as outside work on a MIG GPU.
        Problem(nodes=(Node("n", gpus=(Gpu(0, model, "mig", mig_instances=LAYOUTS[name]),)),))
    assert layout_equivalents(LAYOUTS[name]) == pytest.approx(1.0)
    assert Counter(i.profile for i in LAYOUTS["balanced"]) == {
        "1g.10gb": 2,
        "2g.20gb": 1,
        "3g.40gb": 1,
    }


def test_mix_layouts_counts_by_largest_remainder_in_order() -> None:
    got = mix_layouts({"all-1g": 0.5, "balanced": 0.25, "all-7g": 0.25}, 10)
    assert got == [LAYOUTS["all-1g"]] * 5 + [LAYOUTS["balanced"]] * 3 + [LAYOUTS["all-7g"]] * 2
    assert len(mix_layouts({"all-7g": 1.0}, 7)) == 7
    with pytest.raises(ValueError, match="mix"):
        mix_layouts({"all-7g": 0.6}, 8)


# ------------------------------------------------------------------------------ workload


def test_workload_is_seeded_and_well_formed() -> None:
    day = generate_mig_day(32, 3, day_seconds=6 * 3600.0)
    again = generate_mig_day(32, 3, day_seconds=6 * 3600.0)
    other = generate_mig_day(32, 4, day_seconds=6 * 3600.0)
    assert [(p.arrival, p.profile, p.duration, p.value_rate) for p in day.pods] == [
        (p.arrival, p.profile, p.duration, p.value_rate) for p in again.pods
    ]
    assert [p.arrival for p in day.pods] != [p.arrival for p in other.pods]
    assert [p.arrival for p in day.pods] == sorted(p.arrival for p in day.pods)
    assert len({p.id for p in day.pods}) == len(day.pods)
    classes = {c.name: c for c in CLASSES}
    for p in day.pods:
        c = classes[p.klass]
        assert p.profile in dict(c.profiles)
        assert 0.0 <= p.arrival < day.day_seconds
        assert p.patience == c.patience
        assert p.value_rate > 0 and p.state == "future"
        low, high = c.seconds
        if p.arrival > 0:
            assert low <= p.duration <= high
        else:  # warm start: what is left of a running pod
            assert 1.0 <= p.duration <= high
    assert {p.klass for p in day.pods if p.arrival == 0} == {"inference", "training"}


def test_offered_load_follows_the_day() -> None:
    """The offered GPU-equivalents average ``load`` x GPUs, inference has most of them in the
    afternoon and training at night; the 1g/2g profiles are inference's, 7g/4g/3g training's."""
    gpus, load = 256, 1.2
    day = generate_mig_day(gpus, 1, load=load)
    hours = np.arange(0, 24, 0.25)
    offered = day.offered(hours * 3600.0)
    total = sum(offered.values())
    # Long training pods make the level lag and wobble; the mean holds within a few percent.
    assert total[8:].mean() / gpus == pytest.approx(load, rel=0.08)
    inference = offered["1g.10gb"] + offered["2g.20gb"]
    training = offered["7g.80gb"] + offered["4g.40gb"] + offered["3g.40gb"]
    assert np.allclose(inference + training, total)
    afternoon = (hours >= 12) & (hours <= 16)
    night = (hours >= 1) & (hours <= 4)
    assert (inference[afternoon] / total[afternoon]).mean() > 0.75
    assert (training[night] / total[night]).mean() > 0.75
    share = day.inference_share(np.array([14.0, 2.0]) * 3600.0)
    assert share == pytest.approx([0.9, 0.1])


def test_class_means() -> None:
    assert INFERENCE.mean_equivalents() == pytest.approx((0.6 * 1 + 0.4 * 2) / 7)
    assert TRAINING.mean_equivalents() == pytest.approx((0.6 * 7 + 0.2 * 4 + 0.2 * 3) / 7)
    low, high = INFERENCE.seconds
    assert INFERENCE.mean_seconds() == pytest.approx((high - low) / math.log(high / low))


def test_fluid_scores_rank_mixes() -> None:
    """Each mix's score is what its instances could serve of the offered demand."""
    offered = {
        "1g.10gb": np.array([8.0, 0.0]),  # 8 GPUs' worth of 1g at t0
        "2g.20gb": np.zeros(2),
        "3g.40gb": np.zeros(2),
        "4g.40gb": np.zeros(2),
        "7g.80gb": np.array([0.0, 8.0]),  # 8 whole GPUs at t1
    }
    scores = fluid_scores(offered, 16, SEARCH_LAYOUTS, 2)
    assert len(scores) == math.comb(2 + len(SEARCH_LAYOUTS) - 1, len(SEARCH_LAYOUTS) - 1)
    best, mix = scores[0]
    assert mix == {"all-1g": 0.5, "all-7g": 0.5}
    # Half the fleet in each: all of both demands, 8 of 16 GPUs at each of the two times.
    assert best == pytest.approx(50.0)
    for score, m in scores:
        assert sum(m.values()) == pytest.approx(1.0)
        assert score <= best + 1e-9
