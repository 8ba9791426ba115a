// The simulator's cluster, FGD's fragmentation measure and engine packing with a workload.
#include <gtest/gtest.h>

#include <random>

#include "fixtures.hpp"
#include "gpualloc/auction.hpp"
#include "gpualloc/fragmentation.hpp"
#include "gpualloc/sim.hpp"

using namespace gpualloc;
using namespace gpualloc::testing;

namespace {
SimCluster two_nodes(std::int64_t cpu0, std::int64_t cpu1) {
  return SimCluster({cpu0, cpu1}, {1 << 20, 1 << 20}, {0, 0}, {2, 2}, {16.0});
}
}  // namespace

TEST(Fragmentation, HandCheckedNode) {
  // Half the workload wants 500-milli shares, half whole GPUs; CPU 1000 each.
  Workload w({{1000, 1, 500, 0, 1.0}, {1000, 1, 1000, 0, 1.0}});
  const int free[2] = {300, 1000};
  const int model[2] = {0, 0};
  // Shares: the 300 left is stranded; whole: 300 too (the idle GPU serves both).
  EXPECT_DOUBLE_EQ(w.node_fragment(free, model, 2, 4000), 300.0);
  // Without CPU every idle milli is fragment.
  EXPECT_DOUBLE_EQ(w.node_fragment(free, model, 2, 500), 1300.0);
  // A model the tasks do not allow strands its GPU.
  Workload only1({{0, 1, 1000, 1u << 1, 1.0}});
  EXPECT_DOUBLE_EQ(only1.node_fragment(free, model, 2, 4000), 1300.0);
}

TEST(Fragmentation, BadTasksAreInputErrors) {
  EXPECT_THROW(Workload({{0, 1, 0, 0, 1.0}}), InputError);
  EXPECT_THROW(Workload({{0, 1, 500, 0, -1.0}}), InputError);
  EXPECT_THROW(Workload({{0, 1, 500, 0, 0.0}}), InputError);
  EXPECT_THROW(Workload({{-1, 0, 0, 0, 1.0}}), InputError);
}

TEST(SimCluster, BadInputThrowsAndKeepsState) {
  EXPECT_THROW(SimCluster({1}, {1, 2}, {0}, {1}, {16.0}), InputError);
  EXPECT_THROW(SimCluster({1}, {1}, {3}, {1}, {16.0}), InputError);
  auto c = two_nodes(8000, 8000);
  SimPod pod{1000, 0, 1, 1000, 0};
  c.apply(pod, SimPlacement{0, 1000, {0}}, +1);
  EXPECT_THROW(c.apply(pod, SimPlacement{0, 1000, {0}}, +1), InputError);  // GPU taken
  EXPECT_THROW(c.apply(pod, SimPlacement{1, 1000, {0}}, +1), InputError);  // GPU of node 0
  EXPECT_THROW(c.apply(SimPod{0, 0, 2, 500, 0}, SimPlacement{}, +1), InputError);
  EXPECT_EQ(c.used_milli(), 1000);
  c.apply(pod, SimPlacement{0, 1000, {0}}, -1);
  EXPECT_EQ(c.used_milli(), 0);
  EXPECT_THROW(c.apply(pod, SimPlacement{0, 1000, {0}}, -1), InputError);  // not held
}

TEST(SimCluster, FgdKeepsIdleGpusWhole) {
  auto c = two_nodes(64000, 64000);
  c.set_random_ties(false);
  c.set_workload(Workload({{1000, 1, 500, 0, 1.0}, {1000, 1, 1000, 0, 1.0}}));
  std::mt19937_64 rng(1);
  SimPlacement pl;
  const SimPod share{1000, 0, 1, 500, 0};
  ASSERT_TRUE(c.choose(share, SimPolicy::Fgd, rng, pl));
  c.apply(share, pl, +1);
  // The second share goes on the same GPU: no GPU is left half used.
  ASSERT_TRUE(c.choose(share, SimPolicy::Fgd, rng, pl));
  EXPECT_EQ(pl.gpus, std::vector<int>{0});
  c.apply(share, pl, +1);
  EXPECT_DOUBLE_EQ(c.fragment_milli(), 0.0);
}

TEST(SimCluster, AuctionRoundPlacesByTheEngine) {
  auto c = two_nodes(8000, 64000);
  c.set_workload(Workload({{4000, 1, 1000, 0, 1.0}}));
  // Two whole-GPU pods needing 4 cores each and one needing 40, worth more: the engine takes
  // it first, onto node 1 (the only node with the CPU), and the small ones fill the rest.
  const std::vector<SimPod> pods{
      {4000, 0, 1, 1000, 0}, {4000, 0, 1, 1000, 0}, {40000, 0, 1, 1000, 0}};
  const auto got = c.auction_round(pods, {1.0, 1.0, 3.0}, SimAuctionOptions{});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].node, 1);
  for (const auto& g : got) EXPECT_GE(g.node, 0);
  EXPECT_EQ(c.used_milli(), 3000);
  EXPECT_THROW(c.auction_round(pods, {1.0}, SimAuctionOptions{}), InputError);
}

TEST(Packing, WorkloadSpreadsModelsByFragmentation) {
  // Two single-GPU nodes of different models; a share with a whole-GPU workload goes where the
  // GPU is already partly used (no new fragment), whichever model comes first.
  ProblemData p;
  p.models.push_back(whole_model(16));
  p.models.push_back(whole_model(16));
  add_node(p, 1, 0, GpuMode::Shared);
  add_node(p, 1, 1, GpuMode::Shared);
  p.gpus[1].used_milli = 500;
  add_bid(p, 1, UnitKind::Share, 1, 1, 500, -1, Locality::Any, 1e9, {0, 1});
  EngineOptions o;
  o.workload = Workload({{0, 1, 1000, 0, 1.0}});
  Engine e(p, o);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  EXPECT_EQ(g.placements[0][0].gpus[0], 1);
}
