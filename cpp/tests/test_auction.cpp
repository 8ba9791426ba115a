// Greedy, local search, wallets, incumbents, reserves, loss reasons, payments, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

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

ProblemData whole_cluster(int nodes, int gpus_per_node) {
  ProblemData p;
  p.models.push_back(whole_model());
  for (int i = 0; i < nodes; ++i) add_node(p, gpus_per_node, 0, GpuMode::Whole);
  return p;
}

Replica whole(int node, std::vector<int> gpus) {
  Replica r;
  r.node = node;
  r.kind = UnitKind::Whole;
  r.gpus = std::move(gpus);
  return r;
}

/// Random whole-GPU market without incumbents (single-minded bidders).
ProblemData random_market(std::uint64_t seed, int bids) {
  std::mt19937_64 rng(seed);
  ProblemData p = whole_cluster(3, 4);
  for (int i = 0; i < bids; ++i) {
    const int gpus = 1 + static_cast<int>(rng() % 3);
    const int reps = 1 + static_cast<int>(rng() % 2);
    const double value = 1.0 + static_cast<double>(rng() % 1000) / 10.0;
    add_bid(p, value, UnitKind::Whole, reps, gpus, 0, -1,
            rng() % 2 ? Locality::Node : Locality::Any);
  }
  return p;
}

}  // namespace

TEST(Auction, WalletBudgetIsHard) {
  ProblemData p = whole_cluster(1, 4);
  add_bid(p, 7, UnitKind::Whole);
  add_bid(p, 6, UnitKind::Whole);
  p.wallets.resize(1);
  p.wallets[0] = 10;
  p.bids = {0, 0};
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(winners(g), 1);
  EXPECT_GE(g.alt_of_bid[0], 0);
  const auto l = e.local(g, 1.0, 3);
  EXPECT_EQ(winners(l), 1);
  EXPECT_LE(l.wallet_spent[0], 10.0);
}

TEST(Auction, EvictsAnIncumbentOnlyWhenItPays) {
  for (const double value : {5.0, 2.5}) {
    ProblemData p = whole_cluster(1, 1);
    IncumbentData inc;
    inc.value = 2;
    inc.preemption_cost = 1;
    inc.placements = {whole(0, {0})};
    p.incumbents.push_back(inc);
    add_bid(p, value, UnitKind::Whole);
    Engine e(p);
    const auto& g = e.greedy();
    if (value > 3) {
      EXPECT_EQ(winners(g), 1);
      EXPECT_TRUE(g.evicted[0]);
      EXPECT_DOUBLE_EQ(g.welfare, value - 3);
    } else {
      EXPECT_EQ(winners(g), 0);
      EXPECT_FALSE(g.evicted[0]);
    }
  }
}

TEST(Auction, NonPreemptibleIncumbentsStay) {
  ProblemData p = whole_cluster(1, 1);
  IncumbentData inc;
  inc.value = 1;
  inc.preemptible = false;
  inc.placements = {whole(0, {0})};
  p.incumbents.push_back(inc);
  add_bid(p, 100, UnitKind::Whole);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(winners(g), 0);
  const auto l = e.local(g, 1.0, 1);
  EXPECT_EQ(winners(l), 0);
  EXPECT_FALSE(l.evicted[0]);
  EXPECT_EQ(e.explain(g)[0].reason, LossReason::DoesNotFit);
}

TEST(Auction, PlacementPrefersFreeGpusOverEvictions) {
  ProblemData p = whole_cluster(1, 2);
  IncumbentData inc;
  inc.value = 1;
  inc.placements = {whole(0, {0})};
  p.incumbents.push_back(inc);
  add_bid(p, 100, UnitKind::Whole);
  Engine e(p);
  const auto& g = e.greedy();
  ASSERT_EQ(winners(g), 1);
  EXPECT_FALSE(g.evicted[0]);
  EXPECT_EQ(g.placements[0][0].gpus[0], 1);
}

TEST(Auction, ReserveBlocksCheapBids) {
  ProblemData p;
  p.models.push_back(whole_model(80, 10.0));
  add_node(p, 2, 0, GpuMode::Whole);
  add_bid(p, 15, UnitKind::Whole, 1, 2);  // needs 20
  add_bid(p, 12, UnitKind::Whole, 1, 1);  // needs 10
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_EQ(g.alt_of_bid[0], -1);
  EXPECT_GE(g.alt_of_bid[1], 0);
  EXPECT_EQ(e.explain(g)[0].reason, LossReason::BelowReserve);
  const auto pay = e.critical_payments(g);
  EXPECT_GE(pay[1], 10.0);
  EXPECT_LE(pay[1], 12.0);
}

TEST(Auction, LossReasons) {
  ProblemData p = whole_cluster(1, 2);
  add_bid(p, 10, UnitKind::Whole, 1, 2);                            // wins
  add_bid(p, 5, UnitKind::Whole, 1, 1, 0, -1, Locality::Any, 1.0);  // over budget
  add_bid(p, 5, UnitKind::Whole, 1, 3);                             // does not fit
  add_bid(p, 1, UnitKind::Whole, 1, 1);                             // outbid
  Engine e(p);
  const auto& g = e.greedy();
  const auto ex = e.explain(g);
  EXPECT_EQ(ex[1].reason, LossReason::OverBudget);
  EXPECT_EQ(ex[2].reason, LossReason::DoesNotFit);
  EXPECT_EQ(ex[3].reason, LossReason::Outbid);
}

TEST(Auction, LocalSearchFixesAGreedyMistake) {
  ProblemData p = whole_cluster(1, 2);
  add_bid(p, 6, UnitKind::Whole, 1, 1);  // density 6
  add_bid(p, 8, UnitKind::Whole, 1, 2);  // density 8/sqrt(2) = 5.66
  add_bid(p, 1, UnitKind::Whole, 1, 1);
  Engine e(p);
  const auto& g = e.greedy();
  EXPECT_DOUBLE_EQ(g.welfare, 7.0);
  const auto l = e.local(g, 2.0, 7);
  EXPECT_DOUBLE_EQ(l.welfare, 8.0);
}

TEST(Auction, LocalSearchIsDeterministicForASeed) {
  const auto p = random_market(11, 30);
  Engine e1(p), e2(p);
  const auto a = e1.local(e1.greedy(), 10.0, 5, 300);
  const auto b = e2.local(e2.greedy(), 10.0, 5, 300);
  EXPECT_EQ(a.alt_of_bid, b.alt_of_bid);
  EXPECT_DOUBLE_EQ(a.welfare, b.welfare);
}

TEST(Auction, LocalRestoresAnUnneededEviction) {
  ProblemData p = whole_cluster(1, 2);
  IncumbentData inc;
  inc.value = 3;
  inc.placements = {whole(0, {0})};
  p.incumbents.push_back(inc);
  add_bid(p, 5, UnitKind::Whole);
  Engine e(p);
  // An allocation that evicts needlessly: the bid on GPU 0, GPU 1 free.
  const auto s = e.load({0}, {0}, {{whole(0, {0})}}, {1});
  EXPECT_DOUBLE_EQ(s.welfare, 2.0);
  const auto l = e.local(s, 2.0, 1);
  EXPECT_DOUBLE_EQ(l.welfare, 5.0);
  EXPECT_FALSE(l.evicted[0]);
}

TEST(Payments, NeverAboveValueAndCritical) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    const auto p = random_market(seed, 25);
    Engine e(p);
    const Solution g = e.greedy();
    const auto pay = e.critical_payments(g);
    for (int b = 0; b < static_cast<int>(p.bids.size()); ++b) {
      if (g.alt_of_bid[b] < 0) continue;
      const double v = p.alternatives[g.alt_of_bid[b]].value;
      EXPECT_GE(pay[b], 0.0);
      EXPECT_LE(pay[b], v + 1e-9);
      // Raising the bid keeps it winning; bidding just above the payment still wins.
      for (const double nv : {2 * v, pay[b] + 1e-6 * std::max(1.0, pay[b])}) {
        ProblemData q = p;
        q.alternatives[g.alt_of_bid[b]].value = nv;
        Engine f(q);
        EXPECT_GE(f.greedy().alt_of_bid[b], 0)
            << "seed " << seed << " bid " << b << " value " << nv;
      }
      // Bidding clearly below a positive payment loses.
      if (pay[b] > 1e-6) {
        ProblemData q = p;
        q.alternatives[g.alt_of_bid[b]].value = pay[b] * (1 - 1e-6);
        Engine f(q);
        EXPECT_LT(f.greedy().alt_of_bid[b], 0) << "seed " << seed << " bid " << b;
      }
    }
  }
}

TEST(Payments, ForeignAllocationsArePricedAtMostTheirValue) {
  const auto p = random_market(3, 20);
  Engine e(p);
  const auto l = e.local(e.greedy(), 2.0, 9);
  const auto pay = e.critical_payments(l);
  for (int b = 0; b < static_cast<int>(p.bids.size()); ++b) {
    if (l.alt_of_bid[b] >= 0) {
      EXPECT_LE(pay[b], p.alternatives[l.alt_of_bid[b]].value + 1e-9);
      EXPECT_GE(pay[b], 0.0);
    }
  }
}

TEST(Payments, SameOnAnyNumberOfThreads) {
  for (std::uint64_t seed = 0; seed < 6; ++seed) {
    const auto p = random_market(seed, 60);
    Engine one(p), many(p);
    const auto g = one.greedy();
    const auto serial = one.critical_payments(g, 1);
    EXPECT_EQ(serial, many.critical_payments(g, 4)) << "seed " << seed;
    EXPECT_EQ(serial, many.critical_payments(g, 0)) << "seed " << seed;
  }
  const auto p = random_market(1, 10);
  Engine e(p);
  const auto g = e.greedy();
  try {
    (void)e.critical_payments(g, -2);
    ADD_FAILURE() << "no error for threads -2";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find("threads"), std::string::npos);
  }
}

TEST(Input, BadIndicesThrowInputError) {
  ProblemData p = whole_cluster(1, 1);
  add_bid(p, 1, UnitKind::Whole);
  p.alternatives[0].models = {3};
  EXPECT_THROW(Engine{p}, InputError);
  ProblemData q = whole_cluster(1, 1);
  q.gpus[0].node = 9;
  EXPECT_THROW(Engine{q}, InputError);
  ProblemData r = whole_cluster(1, 1);
  add_bid(r, -1, UnitKind::Whole);
  try {
    Engine e(r);
    FAIL() << "negative value accepted";
  } catch (const InputError& err) {
    EXPECT_EQ(err.field(), "alternatives[0].value");
  }
}

TEST(Input, WholeEquivalentMustBePositive) {
  for (const double bad : {0.0, -1.0, std::nan("")}) {
    ProblemData p = whole_cluster(1, 1);
    p.models[0].whole_equivalent = bad;
    try {
      Engine e(p);
      FAIL() << "whole_equivalent " << bad << " accepted";
    } catch (const InputError& err) {
      EXPECT_EQ(err.field(), "models[0].whole_equivalent");
    }
  }
}

TEST(Auction, ADeviceWorthAShareOfAGpuCostsThatShareOfTheReserve) {
  // A MIG instance offered as a device (1/7 of a GPU) at a reserve of 7 per GPU-equivalent:
  // it costs 1, so a bid of 0.5 stays below the reserve and a bid of 2 wins paying 1.
  ProblemData p = whole_cluster(1, 1);
  p.models[0].whole_equivalent = 1.0 / 7.0;
  p.models[0].reserve = 7.0;
  add_bid(p, 0.5, UnitKind::Whole);
  add_bid(p, 2.0, UnitKind::Whole);
  Engine e(p);
  EXPECT_NEAR(e.reserve_cost(0, 0), 1.0, 1e-12);
  const auto g = e.greedy();
  EXPECT_LT(g.alt_of_bid[0], 0);
  EXPECT_GE(g.alt_of_bid[1], 0);
  EXPECT_NEAR(e.critical_payments(g)[1], 1.0, 1e-9);
}

TEST(Input, OverlappingIncumbentsAndAllocationsAreRejected) {
  ProblemData p = whole_cluster(1, 1);
  IncumbentData inc;
  inc.value = 1;
  inc.placements = {whole(0, {0})};
  p.incumbents = {inc, inc};
  EXPECT_THROW(Engine{p}, InputError);
  ProblemData q = whole_cluster(1, 1);
  add_bid(q, 1, UnitKind::Whole);
  add_bid(q, 1, UnitKind::Whole);
  Engine e(q);
  EXPECT_THROW((void)e.load({0, 1}, {0, 0}, {{whole(0, {0})}, {whole(0, {0})}}, {}), InputError);
}
