// Shares, whole GPUs, gangs and locality domains.
#include <gtest/gtest.h>

#include "fixtures.hpp"
#include "gpualloc/auction.hpp"

using namespace gpualloc;
using namespace gpualloc::testing;

namespace {
int winners(const Solution& s) {
  int n = 0;
  for (int a : s.alt_of_bid) n += a >= 0;
  return n;
}
}  // namespace

TEST(Packing, ShareFillsThePartlyUsedGpuFirst) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 2, 0, GpuMode::Shared);
  p.gpus[1].used_milli = 600;
  add_bid(p, 1, UnitKind::Share, 1, 1, 400);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  EXPECT_EQ(g.placements[0][0].gpus[0], 1);
  EXPECT_EQ(g.real.gpus[1].milli, 1000);
}

TEST(Packing, SharesNeverExceedOneThousandMilli) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 1, 0, GpuMode::Shared);
  for (int i = 0; i < 5; ++i) add_bid(p, 1, UnitKind::Share, 1, 1, 300);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(winners(g), 3);
  EXPECT_EQ(g.real.gpus[0].milli, 900);
}

TEST(Packing, WholeGpuOnSharedGpuOnlyWhenCompletelyFree) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 1, 0, GpuMode::Shared);
  p.gpus[0].used_milli = 100;
  add_bid(p, 1, UnitKind::Whole);
  Engine e(p);
  EXPECT_EQ(winners(e.greedy()), 0);
}

TEST(Packing, WholeUnitsPreferWholeModeGpus) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 1, 0, GpuMode::Shared);
  add_node(p, 1, 0, GpuMode::Whole);
  add_bid(p, 1, UnitKind::Whole);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  EXPECT_EQ(g.placements[0][0].gpus[0], 1);
}

TEST(Packing, NodeLocalityKeepsTheGangOnOneNode) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 2, 0, GpuMode::Whole);
  add_node(p, 2, 0, GpuMode::Whole);
  add_bid(p, 5, UnitKind::Whole, 2, 2, 0, -1, Locality::Node);
  add_bid(p, 4, UnitKind::Whole, 2, 2, 0, -1, Locality::Any);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);
  ASSERT_GE(g.alt_of_bid[1], 0);
  EXPECT_NE(g.placements[1][0].node, g.placements[1][1].node);
}

TEST(Packing, NvlinkLocalityStaysInOneDomain) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 2, 0, GpuMode::Whole, 1000000, 1000000, -1, 0);
  add_node(p, 0, 0, GpuMode::Whole);
  // Same node, second NVLink domain.
  for (int i = 2; i < 4; ++i) {
    GpuData g;
    g.node = 0;
    g.device = i;
    g.model = 0;
    g.nvlink = 1;
    p.gpus.push_back(g);
  }
  add_bid(p, 5, UnitKind::Whole, 1, 3, 0, -1, Locality::Nvlink);
  add_bid(p, 4, UnitKind::Whole, 2, 1, 0, -1, Locality::Nvlink);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);
  ASSERT_GE(g.alt_of_bid[1], 0);
  EXPECT_EQ(p.gpus[g.placements[1][0].gpus[0]].nvlink, p.gpus[g.placements[1][1].gpus[0]].nvlink);
}

TEST(Packing, BestFitPicksTheTightestNode) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 8, 0, GpuMode::Whole);
  add_node(p, 2, 0, GpuMode::Whole);
  add_bid(p, 5, UnitKind::Whole, 1, 2);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  EXPECT_EQ(g.placements[0][0].node, 1);
}

TEST(Packing, RackLocalityKeepsReplicasInOneRack) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 1, 0, GpuMode::Whole, 1000000, 1000000, 0);
  add_node(p, 1, 0, GpuMode::Whole, 1000000, 1000000, 1);
  add_node(p, 1, 0, GpuMode::Whole, 1000000, 1000000, 1);
  add_bid(p, 5, UnitKind::Whole, 2, 1, 0, -1, Locality::Rack);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  for (const auto& r : g.placements[0]) EXPECT_EQ(p.nodes[r.node].rack, 1);
}

TEST(Packing, NodeCpuLimitsReplicas) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 4, 0, GpuMode::Whole, 3000, 1000000);
  add_bid(p, 5, UnitKind::Whole, 2, 1, 0, -1, Locality::Node);
  p.alternatives[0].cpu_milli = 2000;
  add_bid(p, 4, UnitKind::Whole, 1, 1);
  p.alternatives[1].cpu_milli = 1000;
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);  // 2 x 2000 > 3000
  EXPECT_GE(g.alt_of_bid[1], 0);
}

TEST(Packing, ModelFilterAndMemoryFilter) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  p.models.push_back(whole_model(80));
  add_node(p, 1, 0, GpuMode::Whole);
  add_node(p, 1, 1, GpuMode::Whole);
  add_bid(p, 5, UnitKind::Whole, 1, 1, 0, -1, Locality::Any, 1e9, {0, 1});
  p.alternatives[0].min_gpu_memory_gb = 40;
  add_bid(p, 4, UnitKind::Whole, 1, 1, 0, -1, Locality::Any, 1e9, {0});
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  EXPECT_EQ(p.gpus[g.placements[0][0].gpus[0]].model, 1);
  ASSERT_GE(g.alt_of_bid[1], 0);
  EXPECT_EQ(p.gpus[g.placements[1][0].gpus[0]].model, 0);
}

TEST(Packing, NodeWithoutRackIsItsOwnRack) {
  ProblemData p;
  p.models.push_back(whole_model());
  add_node(p, 1, 0, GpuMode::Whole, 1000000, 1000000, 0);
  add_node(p, 2, 0, GpuMode::Whole);  // no rack
  add_bid(p, 5, UnitKind::Whole, 2, 1, 0, -1, Locality::Rack);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  for (const auto& r : g.placements[0]) EXPECT_EQ(r.node, 1);
}

TEST(Packing, HostsAreTheNodesOfTheModelWhereOneReplicaFits) {
  // One replica of 2 GPUs and 1000 CPU milli: not on a 1-GPU node, not on a node short of CPU,
  // not on a node of another model; yes on the two that hold it, also the one with room for
  // one replica only (the search over several nodes can use it).
  ProblemData p;
  p.models.push_back(whole_model());
  p.models.push_back(whole_model());
  add_node(p, 1, 0, GpuMode::Whole);
  add_node(p, 2, 0, GpuMode::Whole, 500);
  add_node(p, 4, 0, GpuMode::Whole);
  add_node(p, 2, 0, GpuMode::Whole);
  add_node(p, 4, 1, GpuMode::Whole);
  add_bid(p, 5, UnitKind::Whole, 3, 2, 0, -1, Locality::Any);
  p.alternatives[0].cpu_milli = 1000;
  Engine e(p);
  const Solution s = e.initial();
  std::vector<int> hosts;
  e.packer().hosts(s.real, p.alternatives[0], 0, -1, hosts);
  EXPECT_EQ(hosts, (std::vector<int>{2, 3}));
  e.packer().hosts(s.real, p.alternatives[0], 1, -1, hosts);
  EXPECT_EQ(hosts, (std::vector<int>{4}));
}
