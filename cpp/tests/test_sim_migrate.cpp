// Migration in the simulator: a pod that fits nowhere placed by moving running pods.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "gpualloc/pattern.hpp"
#include "gpualloc/sim.hpp"
#include "gpualloc/sim_migrate.hpp"

using namespace gpualloc;

namespace {

/// Free CPU and GPU milli of `c` recomputed from the pods' placements, compared with what
/// the cluster says (the moves are real: nothing held twice, nothing lost).
/// `cpu`: each node's CPU capacity.
void expect_consistent(const SimCluster& c, const std::vector<SimPod>& pods,
                       const std::vector<SimPlacement>& where, std::vector<std::int64_t> cpu) {
  ASSERT_EQ(cpu.size(), static_cast<std::size_t>(c.nodes()));
  std::vector<int> gpu(static_cast<std::size_t>(c.gpus()), 1000);
  std::int64_t used = 0;
  for (std::size_t i = 0; i < pods.size(); ++i) {
    if (where[i].node < 0) continue;
    cpu[static_cast<std::size_t>(where[i].node)] -= pods[i].cpu_milli;
    for (int g : where[i].gpus) {
      EXPECT_LE(c.first_gpu(where[i].node), g);
      EXPECT_LT(g, c.first_gpu(where[i].node) + c.gpu_count(where[i].node));
      gpu[static_cast<std::size_t>(g)] -= pods[i].milli;
      used += pods[i].milli;
    }
  }
  for (int n = 0; n < c.nodes(); ++n) {
    EXPECT_GE(cpu[static_cast<std::size_t>(n)], 0);
    EXPECT_EQ(cpu[static_cast<std::size_t>(n)], c.cpu_free(n));
  }
  for (int g = 0; g < c.gpus(); ++g) {
    EXPECT_GE(gpu[static_cast<std::size_t>(g)], 0);
    EXPECT_EQ(gpu[static_cast<std::size_t>(g)], c.free_milli(g));
  }
  EXPECT_EQ(used, c.used_milli());
}

void expect_consistent(const SimCluster& c, const std::vector<SimPod>& pods,
                       const std::vector<SimPlacement>& where, std::int64_t cpu_per_node) {
  expect_consistent(c, pods, where,
                    std::vector<std::int64_t>(static_cast<std::size_t>(c.nodes()), cpu_per_node));
}

}  // namespace

TEST(SimMigrate, ConsolidatingTwoSharesFreesAGpu) {
  // One node, two GPUs, each holding a 400 share: a whole-GPU pod fits nowhere until one share
  // moves next to the other.
  SimCluster c({16000}, {1 << 20}, {0}, {2}, {16.0});
  c.set_workload(Workload({{1000, 1, 400, 0, 1.0}, {1000, 1, 1000, 0, 1.0}}));
  std::vector<SimPod> pods = {{1000, 0, 1, 400, 0}, {1000, 0, 1, 400, 0}, {1000, 0, 1, 1000, 0}};
  std::vector<SimPlacement> where(3);
  where[0] = SimPlacement{0, 400, {0}};
  where[1] = SimPlacement{0, 400, {1}};
  c.apply(pods[0], where[0], +1);
  c.apply(pods[1], where[1], +1);
  std::mt19937_64 rng(1);
  SimPlacement direct;
  ASSERT_FALSE(c.choose(pods[2], SimPolicy::Fgd, rng, direct));
  EXPECT_FALSE(c.choose_on_node(pods[2], SimPolicy::Fgd, 0, direct));
  SimPlacement share;  // a 400 share still fits node 0, on a GPU with room
  ASSERT_TRUE(c.choose_on_node(pods[0], SimPolicy::Fgd, 0, share));
  EXPECT_TRUE(c.fits(pods[0], share));
  EXPECT_THROW(c.choose_on_node(pods[0], SimPolicy::Fgd, 1, share), InputError);
  std::vector<SimMove> moves;
  ASSERT_TRUE(place_with_moves(c, pods, where, 2, SimMigrateOptions{}, rng, moves));
  ASSERT_EQ(moves.size(), 1u);
  const SimMove& m = moves[0];
  EXPECT_EQ(where[static_cast<std::size_t>(m.pod)].gpus, m.to.gpus);
  EXPECT_NE(m.from.gpus, m.to.gpus);
  EXPECT_EQ(where[2].node, 0);
  EXPECT_EQ(c.used_milli(), 1800);
  // The two shares now sit on one GPU, the whole pod on the other.
  EXPECT_EQ(where[0].gpus, where[1].gpus);
  EXPECT_NE(where[2].gpus, where[0].gpus);
  expect_consistent(c, pods, where, 16000);
}

TEST(SimMigrate, MovesFreeCpuOnAnotherNode) {
  // Node 0 has an idle GPU but its CPU is taken by a CPU-only pod that node 1 could host.
  SimCluster c({8000, 8000}, {1 << 20, 1 << 20}, {0, 0}, {1, 1}, {16.0});
  c.set_workload(Workload({{1000, 1, 1000, 0, 1.0}}));
  std::vector<SimPod> pods = {
      {5000, 0, 0, 0, 0},     // CPU-only on node 0
      {2000, 0, 1, 1000, 0},  // holds node 1's GPU
      {4000, 0, 1, 1000, 0},  // needs node 0's GPU and 4 cores
  };
  std::vector<SimPlacement> where(3);
  where[0] = SimPlacement{0, 0, {}};
  where[1] = SimPlacement{1, 1000, {1}};
  c.apply(pods[0], where[0], +1);
  c.apply(pods[1], where[1], +1);
  std::mt19937_64 rng(1);
  std::vector<SimMove> moves;
  ASSERT_TRUE(place_with_moves(c, pods, where, 2, SimMigrateOptions{}, rng, moves));
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].pod, 0);
  EXPECT_EQ(where[0].node, 1);
  EXPECT_EQ(where[2].node, 0);
  expect_consistent(c, pods, where, 8000);
}

TEST(SimMigrate, NoRoomAnywhereChangesNothing) {
  // Both GPUs hold 700 shares: no set of moves makes room for a whole GPU.
  SimCluster c({16000}, {1 << 20}, {0}, {2}, {16.0});
  c.set_workload(Workload({{1000, 1, 700, 0, 1.0}}));
  std::vector<SimPod> pods = {{1000, 0, 1, 700, 0}, {1000, 0, 1, 700, 0}, {1000, 0, 1, 1000, 0}};
  std::vector<SimPlacement> where(3);
  where[0] = SimPlacement{0, 700, {0}};
  where[1] = SimPlacement{0, 700, {1}};
  c.apply(pods[0], where[0], +1);
  c.apply(pods[1], where[1], +1);
  std::mt19937_64 rng(1);
  std::vector<SimMove> moves;
  SimMigrateOptions opt;
  opt.max_moves = 2;
  EXPECT_FALSE(place_with_moves(c, pods, where, 2, opt, rng, moves));
  EXPECT_TRUE(moves.empty());
  EXPECT_EQ(where[0].gpus, std::vector<int>{0});
  EXPECT_EQ(where[1].gpus, std::vector<int>{1});
  EXPECT_EQ(where[2].node, -1);
  expect_consistent(c, pods, where, 16000);
  // No moves allowed: nothing is tried, even where a move would help.
  opt.max_moves = 0;
  EXPECT_FALSE(place_with_moves(c, pods, where, 2, opt, rng, moves));
}

TEST(SimMigrate, MovedPodsArePlacedByTheRule) {
  // A whole-GPU pod displaces a 320 share on node 0 (node 1 lacks its CPU). The pattern rule
  // puts the share on node 1's free GPU; FGD beside node 0's lone 470, spoiling a 470 pair.
  for (const SimPolicy rule : {SimPolicy::Pattern, SimPolicy::Fgd}) {
    SimCluster c({16000, 2000}, {1 << 20, 1 << 20}, {0, 0}, {2, 2}, {16.0});
    c.set_workload(
        Workload({{1000, 1, 1000, 0, 0.5}, {1000, 1, 650, 0, 0.1}, {1000, 1, 320, 0, 0.4}}));
    c.set_pattern(
        PatternValues({{320, 270.0}, {470, 405.0}, {650, 540.0}, {810, 810.0}, {1000, 810.0}}));
    std::vector<SimPod> pods = {
        {1000, 0, 1, 320, 0}, {1000, 0, 1, 470, 0}, {1000, 0, 1, 470, 0}, {8000, 0, 1, 1000, 0}};
    std::vector<SimPlacement> where(4);
    where[0] = SimPlacement{0, 320, {0}};
    where[1] = SimPlacement{0, 470, {1}};
    where[2] = SimPlacement{1, 470, {2}};
    for (int i = 0; i < 3; ++i) c.apply(pods[i], where[i], +1);
    std::mt19937_64 rng(1);
    SimPlacement direct;
    ASSERT_FALSE(c.choose(pods[3], rule, rng, direct));
    SimMigrateOptions opt;
    opt.max_moves = 1;
    opt.policy = rule;
    std::vector<SimMove> moves;
    ASSERT_TRUE(place_with_moves(c, pods, where, 3, opt, rng, moves));
    ASSERT_EQ(moves.size(), 1u);
    EXPECT_EQ(moves[0].pod, 0);
    EXPECT_EQ(where[3].gpus, std::vector<int>{0});
    const std::vector<int> expected =
        rule == SimPolicy::Pattern ? std::vector<int>{3} : std::vector<int>{1};
    EXPECT_EQ(where[0].gpus, expected);
    EXPECT_EQ(moves[0].to.gpus, expected);
    expect_consistent(c, pods, where, std::vector<std::int64_t>{16000, 2000});
  }
}

TEST(SimMigrate, BadInputThrows) {
  SimCluster c({16000}, {1 << 20}, {0}, {1}, {16.0});
  std::vector<SimPod> pods = {{1000, 0, 1, 500, 0}};
  std::vector<SimPlacement> where(1);
  std::mt19937_64 rng(1);
  std::vector<SimMove> moves;
  EXPECT_THROW(place_with_moves(c, pods, where, 1, SimMigrateOptions{}, rng, moves), InputError);
  SimMigrateOptions bad;
  bad.candidates = 0;
  EXPECT_THROW(place_with_moves(c, pods, where, 0, bad, rng, moves), InputError);
  std::vector<SimPlacement> short_where;
  EXPECT_THROW(place_with_moves(c, pods, short_where, 0, SimMigrateOptions{}, rng, moves),
               InputError);
}
