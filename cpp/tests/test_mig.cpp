// MIG placement legality: what the NVIDIA tables allow together on one GPU, and where the
// packer puts instances.
#include <gtest/gtest.h>

#include "fixtures.hpp"
#include "gpualloc/auction.hpp"

using namespace gpualloc;
using namespace gpualloc::testing;

namespace {

ProblemData one_mig_gpu(int gpus = 1) {
  ProblemData p;
  p.models.push_back(mig_model());
  add_node(p, gpus, 0, GpuMode::Mig);
  return p;
}

Replica mig(int gpu, int profile, int start) {
  Replica r;
  r.node = 0;
  r.kind = UnitKind::Mig;
  r.profile = profile;
  r.start = start;
  r.gpus = {gpu};
  return r;
}

int winners(const Solution& s) {
  int n = 0;
  for (int a : s.alt_of_bid) n += a >= 0;
  return n;
}

}  // namespace

TEST(Mig, ThreeGAndFourGAtZeroNeverTogether) {
  const auto p = one_mig_gpu();
  State s = State::outside_only(p);
  ASSERT_TRUE(replica_fits(p, s, mig(0, P3g, 0), 0, 0));
  apply_replica(p, s, mig(0, P3g, 0), 0, 0, +1);
  EXPECT_FALSE(replica_fits(p, s, mig(0, P4g, 0), 0, 0));
  apply_replica(p, s, mig(0, P3g, 0), 0, 0, -1);
  apply_replica(p, s, mig(0, P4g, 0), 0, 0, +1);
  EXPECT_FALSE(replica_fits(p, s, mig(0, P3g, 0), 0, 0));
}

TEST(Mig, FourGAtZeroPlusThreeGAtFourIsLegal) {
  auto p = one_mig_gpu();
  State s = State::outside_only(p);
  apply_replica(p, s, mig(0, P4g, 0), 0, 0, +1);
  EXPECT_TRUE(replica_fits(p, s, mig(0, P3g, 4), 0, 0));
  // And the greedy finds that layout for a 4g and a 3g bid on one GPU.
  add_bid(p, 5, UnitKind::Mig, 1, 1, 0, P4g);
  add_bid(p, 5, UnitKind::Mig, 1, 1, 0, P3g);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(winners(g), 2);
  EXPECT_EQ(g.placements[1][0].start, 4);
}

TEST(Mig, IllegalStartsAreRejected) {
  const auto p = one_mig_gpu();
  State s = State::outside_only(p);
  EXPECT_FALSE(replica_fits(p, s, mig(0, P3g, 2), 0, 0));  // 3g starts 0 or 4
  EXPECT_FALSE(replica_fits(p, s, mig(0, P1g, 7), 0, 0));  // 1g never at slot 7
  EXPECT_FALSE(replica_fits(p, s, mig(0, P2g, 6), 0, 0));  // 2g starts 0, 2, 4
  EXPECT_TRUE(replica_fits(p, s, mig(0, P1gDouble, 6), 0, 0));
}

TEST(Mig, SevenOneGLeaveSliceSevenFree) {
  auto p = one_mig_gpu();
  for (int i = 0; i < 8; ++i) add_bid(p, 1.0 + 0.01 * i, UnitKind::Mig, 1, 1, 0, P1g);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(winners(g), 7);
  EXPECT_EQ(g.real.gpus[0].mig_mask, 0x7F);
  EXPECT_FALSE(g.real.gpus[0].mig_mask & 0x80);
}

TEST(Mig, AtMostOneMediaInstancePerGpu) {
  auto p = one_mig_gpu();
  add_bid(p, 3, UnitKind::Mig, 1, 1, 0, P1gMe);
  add_bid(p, 2, UnitKind::Mig, 1, 1, 0, P1gMe);
  {
    Engine e(p);
    EXPECT_EQ(winners(e.greedy()), 1);
  }
  auto p2 = one_mig_gpu(2);
  p2.bids = p.bids;
  p2.wallets = p.wallets;
  p2.alternatives = p.alternatives;
  Engine e2(p2);
  const auto& g = e2.greedy();
  EXPECT_EQ(winners(g), 2);
  EXPECT_NE(g.placements[0][0].gpus[0], g.placements[1][0].gpus[0]);
}

TEST(Mig, MaxCountPerProfile) {
  auto p = one_mig_gpu();
  for (int i = 0; i < 3; ++i) add_bid(p, 4, UnitKind::Mig, 1, 1, 0, P2g);
  add_bid(p, 1, UnitKind::Mig, 1, 1, 0, P2g);
  Engine e(p);
  EXPECT_EQ(winners(e.greedy()), 3);  // 2g max 3 per GPU
}

TEST(Mig, SingleSmallInstanceKeepsLargeRunsFreeAndStrandsNothing) {
  auto p = one_mig_gpu();
  add_bid(p, 1, UnitKind::Mig, 1, 1, 0, P1g);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_EQ(winners(g), 1);
  const int start = g.placements[0][0].start;
  EXPECT_GE(start, 4);  // keeps 4g@0 / 3g@0 possible
  State s = g.real;
  EXPECT_TRUE(mig_fits(p, 0, s.gpus[0], P4g, 0));
  // Slot 7 stays usable: some legal instance still covers it.
  EXPECT_TRUE(mig_fits(p, 0, s.gpus[0], P1gDouble, 6) || mig_fits(p, 0, s.gpus[0], P3g, 4));
}

TEST(Mig, OutsideInstancesBlockTheirSlices) {
  auto p = one_mig_gpu();
  p.gpus[0].outside.push_back({P4g, 0});
  add_bid(p, 5, UnitKind::Mig, 1, 1, 0, P7g);
  add_bid(p, 5, UnitKind::Mig, 1, 1, 0, P3g);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);
  ASSERT_GE(g.alt_of_bid[1], 0);
  EXPECT_EQ(g.placements[1][0].start, 4);
}

TEST(Mig, PrefersGpusAlreadyCarved) {
  auto p = one_mig_gpu(2);
  add_bid(p, 3, UnitKind::Mig, 1, 1, 0, P3g);
  add_bid(p, 2, UnitKind::Mig, 1, 1, 0, P2g);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_EQ(winners(g), 2);
  EXPECT_EQ(g.placements[0][0].gpus[0], g.placements[1][0].gpus[0]);
}

TEST(Mig, GpuLocalityPutsAllReplicasOnOneGpu) {
  auto p = one_mig_gpu(2);
  p.gpus[0].outside.push_back({P4g, 0});
  add_bid(p, 5, UnitKind::Mig, 3, 1, 0, P2g, Locality::Gpu);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_GE(g.alt_of_bid[0], 0);
  for (const auto& r : g.placements[0]) EXPECT_EQ(r.gpus[0], 1);
}

TEST(Mig, AFixedLayoutOffersOnlyItsInstances) {
  // The GPU keeps a layout of one 3g at slot 4 (and nothing else): a 1g fits nowhere, the 3g
  // only at 4, though slots 0-3 are free.
  auto p = one_mig_gpu();
  p.gpus[0].fixed_layout = true;
  p.gpus[0].layout = {{P3g, 4}};
  p.validate();
  State s = State::outside_only(p);
  EXPECT_FALSE(replica_fits(p, s, mig(0, P1g, 0), 0, 0));
  EXPECT_FALSE(replica_fits(p, s, mig(0, P3g, 0), 0, 0));
  EXPECT_TRUE(replica_fits(p, s, mig(0, P3g, 4), 0, 0));
  add_bid(p, 9, UnitKind::Mig, 1, 1, 0, P1g);
  add_bid(p, 5, UnitKind::Mig, 1, 1, 0, P3g);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);
  ASSERT_GE(g.alt_of_bid[1], 0);
  EXPECT_EQ(g.placements[1][0].start, 4);
}

TEST(Mig, ALayoutMustObeyTheTables) {
  auto p = one_mig_gpu();
  p.gpus[0].fixed_layout = true;
  p.gpus[0].layout = {{P3g, 0}, {P4g, 0}};
  EXPECT_THROW(p.validate(), InputError);
}
