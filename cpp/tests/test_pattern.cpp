// The pattern packing rule (pattern.hpp): values and losses, the CPU/memory reserve, and the
// same choices in the simulator's `pattern` policy and in the engine's packer, where FGD's differ.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "fixtures.hpp"
#include "gpualloc/auction.hpp"
#include "gpualloc/pattern.hpp"
#include "gpualloc/sim.hpp"

using namespace gpualloc;
using namespace gpualloc::testing;

namespace {

// Net values of the openb default trace's pattern program (docs/simulator.md): a GPU is worth
// 810, a 470 pair fills it (405 each), so does 650 + 320 (540 + 270).
PatternValues openb_values() {
  return PatternValues({{220, 67.5},
                        {230, 202.5},
                        {320, 270.0},
                        {470, 405.0},
                        {650, 540.0},
                        {810, 810.0},
                        {1000, 810.0}});
}

// A target workload in which FGD pairs a 320 with a lone 470: whole GPUs, 650s and 320s.
Workload mix() {
  return Workload({{100, 1, 1000, 0, 0.5}, {100, 1, 650, 0, 0.1}, {100, 1, 320, 0, 0.4}});
}

}  // namespace

TEST(Pattern, HandCheckedLosses) {
  const PatternValues v = openb_values();
  EXPECT_DOUBLE_EQ(v.completion(1000), 810.0);
  EXPECT_DOUBLE_EQ(v.completion(530), 405.0);  // a 470
  EXPECT_DOUBLE_EQ(v.completion(680), 540.0);  // a 650, or two 320s
  EXPECT_DOUBLE_EQ(v.completion(210), 0.0);
  // A 320 beside a lone 470 spoils the 470 pair; beside a 650 or on a fresh GPU it does not.
  EXPECT_DOUBLE_EQ(v.loss(530, 320), 135.0);
  EXPECT_DOUBLE_EQ(v.loss(350, 320), 0.0);
  EXPECT_DOUBLE_EQ(v.loss(1000, 320), 0.0);
  EXPECT_DOUBLE_EQ(v.loss(1000, 810), 0.0);
  EXPECT_DOUBLE_EQ(v.loss(530, 470), 0.0);
  EXPECT_DOUBLE_EQ(v.value(320), 270.0);
  EXPECT_DOUBLE_EQ(v.value(333), 0.0);
  EXPECT_EQ(v.pairs().size(), 7u);
  const PatternValues none;
  EXPECT_TRUE(none.empty());
  EXPECT_DOUBLE_EQ(none.loss(530, 320), 0.0);
}

TEST(Pattern, BadValuesAreInputErrors) {
  EXPECT_THROW(PatternValues({{0, 0.0}}), InputError);
  EXPECT_THROW(PatternValues({{1001, 1.0}}), InputError);
  EXPECT_THROW(PatternValues({{320, 321.0}}), InputError);
  EXPECT_THROW(PatternValues({{320, -1.0}}), InputError);
  EXPECT_THROW(PatternValues({{320, std::nan("")}}), InputError);
}

TEST(Pattern, StrandedMilli) {
  const ResourceNeed need{10000, 40000};  // 10 cores and 40000 MiB per GPU
  EXPECT_DOUBLE_EQ(stranded_milli(2000, 20000, 80000, need), 0.0);
  EXPECT_DOUBLE_EQ(stranded_milli(2000, 10000, 80000, need), 1000.0);  // half the CPU
  EXPECT_DOUBLE_EQ(stranded_milli(2000, 20000, 20000, need), 1500.0);  // a quarter of the memory
  EXPECT_DOUBLE_EQ(stranded_milli(2000, -5, 80000, need), 2000.0);
  EXPECT_DOUBLE_EQ(stranded_milli(0, 0, 0, need), 0.0);
  const Workload w({{12000, 1, 1000, 0, 1.0, 48000}, {3000, 1, 500, 0, 1.0, 6000}});
  const ResourceNeed typical = typical_need(w);  // (12000 + 3000) / 1.5 GPUs
  EXPECT_DOUBLE_EQ(typical.cpu_per_gpu, 10000.0);
  EXPECT_DOUBLE_EQ(typical.memory_per_gpu, 36000.0);
}

TEST(Pattern, KeyOrdersByLossThenRest) {
  EXPECT_LT(pattern_key(0.0, 1e6), pattern_key(0.0625, -1e6));
  EXPECT_LT(pattern_key(135.0, -100.0), pattern_key(135.0, -99.0));
  EXPECT_LT(pattern_key(0.0, -100.0 + 0.25), pattern_key(0.0, -100.0 + 0.5));
}

TEST(Pattern, SimPolicyKeepsTheLone470ForA470) {
  // One node, GPU 0 holding a 470 share, GPU 1 free. FGD puts the 320 beside the 470 (its
  // fragment shrinks most there); the pattern rule takes the free GPU, whose 680 a 650 (or two
  // 320s) can still fill, and keeps the 530 gap for a 470.
  SimCluster c({64000}, {1 << 20}, {0}, {2}, {16.0});
  c.set_random_ties(false);
  c.set_workload(mix());
  c.set_pattern(openb_values());
  const SimPod s470{100, 0, 1, 470, 0};
  c.apply(s470, SimPlacement{0, 470, {0}}, +1);
  const SimPod s320{100, 0, 1, 320, 0};
  std::mt19937_64 rng(1);
  SimPlacement fgd, pattern;
  ASSERT_TRUE(c.choose(s320, SimPolicy::Fgd, rng, fgd));
  ASSERT_TRUE(c.choose(s320, SimPolicy::Pattern, rng, pattern));
  EXPECT_EQ(fgd.gpus, std::vector<int>{0});
  EXPECT_EQ(pattern.gpus, std::vector<int>{1});
  // Without values the rule has no loss to compare and behaves like FGD here.
  c.set_pattern(PatternValues{});
  ASSERT_TRUE(c.choose(s320, SimPolicy::Pattern, rng, pattern));
  EXPECT_EQ(pattern.gpus, std::vector<int>{0});
}

TEST(Pattern, SimPolicyKeepsCpuForIdleGpus) {
  // A CPU-only pod of 20 cores: FGD's measure sees no change on either node (both can still
  // host a 2-core task), so the first node takes it and leaves 2 cores for two idle GPUs that
  // typically need 4; the reserve sends it to the node with CPU to spare.
  SimCluster c({22000, 200000}, {1 << 20, 1 << 20}, {0, 0}, {2, 2}, {16.0});
  c.set_random_ties(false);
  c.set_workload(Workload({{2000, 1, 1000, 0, 1.0}, {20000, 0, 0, 0, 0.2}}));
  const SimPod cpu{20000, 0, 0, 0, 0};
  std::mt19937_64 rng(1);
  SimPlacement fgd, pattern;
  ASSERT_TRUE(c.choose(cpu, SimPolicy::Fgd, rng, fgd));
  ASSERT_TRUE(c.choose(cpu, SimPolicy::Pattern, rng, pattern));
  EXPECT_EQ(fgd.node, 0);
  EXPECT_EQ(pattern.node, 1);
}

TEST(Pattern, EnginePlacesAsTheSimPolicy) {
  // The engine's packer with packing Pattern makes the sim policy's choice, FGD's packer FGD's.
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 2, 0, GpuMode::Shared);
  p.gpus[0].used_milli = 470;
  add_bid(p, 1, UnitKind::Share, 1, 1, 320);
  p.alternatives[0].cpu_milli = 100;
  EngineOptions fgd;
  fgd.workload = mix();
  EngineOptions pattern = fgd;
  pattern.packing = Packing::Pattern;
  pattern.pattern_values = openb_values();
  Engine e_fgd(p, fgd), e_pattern(p, pattern);
  ASSERT_GE(e_fgd.greedy().alt_of_bid[0], 0);
  ASSERT_GE(e_pattern.greedy().alt_of_bid[0], 0);
  EXPECT_EQ(e_fgd.greedy().placements[0][0].gpus[0], 0);
  EXPECT_EQ(e_pattern.greedy().placements[0][0].gpus[0], 1);
}

TEST(Pattern, EngineReserveWithoutWorkload) {
  // No workload (the Kubernetes path): the reserve's need is the round's bids' (12 cores per
  // GPU). The 20-core pod would leave node 0's last GPU without CPU; best fit (FGD's packer
  // without a workload) takes node 0 anyway, the pattern rule node 1. The 4-core pod then fits
  // node 0 under the pattern rule, node 1 under best fit.
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 2, 0, GpuMode::Whole, 20000);
  add_node(p, 4, 0, GpuMode::Whole, 100000);
  add_bid(p, 10, UnitKind::Whole);
  add_bid(p, 1, UnitKind::Whole);
  p.alternatives[0].cpu_milli = 20000;
  p.alternatives[1].cpu_milli = 4000;
  EngineOptions pattern;
  pattern.packing = Packing::Pattern;
  Engine e_fgd(p), e_pattern(p, pattern);
  const auto& g = e_fgd.greedy();
  const auto& q = e_pattern.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  ASSERT_GE(q.alt_of_bid[0], 0);
  ASSERT_GE(q.alt_of_bid[1], 0);
  EXPECT_EQ(g.placements[0][0].node, 0);
  EXPECT_EQ(q.placements[0][0].node, 1);
  EXPECT_EQ(q.placements[1][0].node, 0);
}

TEST(Pattern, BadReserveWeightIsAnInputError) {
  ProblemData p;
  p.models.push_back(whole_model(16));
  add_node(p, 1, 0, GpuMode::Shared);
  add_bid(p, 1, UnitKind::Share, 1, 1, 320);
  EngineOptions o;
  o.reserve_weight = -1;
  EXPECT_THROW(Engine(p, o), InputError);
  o.reserve_weight = std::numeric_limits<double>::infinity();
  EXPECT_THROW(Engine(p, o), InputError);
  SimCluster c({1000}, {1000}, {0}, {1}, {16.0});
  EXPECT_THROW(c.set_pattern(PatternValues{}, 101.0), InputError);
}
