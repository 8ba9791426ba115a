// The auction engine: greedy allocation, local search, critical payments and loss reasons.
//
// Ranking. Every (bid, alternative) pair is an item scored by value / size^alpha, size = the
// alternative's GPU-equivalents (replicas x per-replica equivalent on its smallest usable model).
// alpha = 0.75 by default, measured: greedy welfare / CP-SAT optimum on the 50 rounds of
// benchmarks/solver_quality.py averages 0.887 (alpha 0), 0.954 (0.5), 0.976 (0.75), 0.962 (1).
// 0.5 has the best worst-case bound for single-minded greedy auctions (Lehmann, O'Callaghan and
// Shoham, JACM 2002); 0.75 still lets a big gang outrank many small bids only when it is worth
// more per GPU, and packs better on these mixes. Items are processed best first (ties: lower bid
// index); a bid wins with its first item that fits; its wallet must still cover the value.
//
// Incumbents. They all start in place. An item first tries resources free in the current state;
// only if that fails does it search the state with every preemptible incumbent removed, while
// minimising the value those evictions destroy; it then evicts the fewest/cheapest incumbents that
// make room and is accepted only if its value exceeds their value + preemption cost (evict only
// when it pays). Non-preemptible incumbents and outside usage are never touched.
//
// Local search (ruin and recreate, seeded): (1) insert a loser at the placement of the
// market-free cluster that destroys the least (noisy), removing the winners/incumbents it
// touches; (2) restore an evicted incumbent the same way; (3) drop a random winner and its node
// neighbours; (4) clear one to three random nodes of winners (and, half the time, of preemptible
// incumbents). After each ruin the removed winners and all losers are re-inserted greedily, in a
// score order perturbed by noise half of the time (evictions allowed in move 4). A move is kept if
// welfare does not drop (ties are kept as plateau moves), so welfare never goes below the start. It
// stops at the time limit, the iteration limit, or after `patience` moves without a strict gain.
//
// Payments (critical). For a winner (b, a): remove b and replay the greedy order from a's rank
// (a winner greedy did not pick with that alternative is scanned from there too, so it usually
// pays its bid). At each position j the bid would sit between the previous item and j; it wins
// there with the least value that fits (resources, the reserve of the model used, evictions that
// pay, wallet; a minimum over the models it may use, see least_value). The first position where
// that least value exceeds j's score sets the critical value; the payment is at least the reserve
// cost and at most the bid. Replays start from checkpoints of the greedy run and track "dirty"
// nodes (where the replay differs from the original run). An item the original run searched (its
// bid had not won, its wallet covered it) and whose pools (model, unit kind) meet no dirty node
// decides as it did there, without a search (only its wallet is checked again); an item searching
// one node at a time (see Packer::node_scoped) only searches the dirty nodes plus its original
// choice, or, when that node is dirty, plus the first clean runner-up of its original search
// (recorded by one extra greedy pass, which also takes the checkpoints); dirty nodes that cannot
// hold one replica (node CPU/memory, free units of its kind) are left out of those searches. A gang
// with locality any whose original nodes are clean searches the dirty nodes plus its original nodes
// and keeps the original placement when that search returns it (earlier models must lack the free
// capacity; otherwise a full search). A gang with locality rack or zone searches only the racks
// (zones) holding a dirty node plus its original one when that one is clean (whole groups, so
// capacities and ties are as in the full search). The priced bid's last free placement is reused
// while nothing touches its nodes; a node-scoped priced bid with nothing preemptible and every
// model's reserve cost within the interval instead keeps a witness node that holds it, found by a
// scan in node order that never goes back (a node that cannot hold it never can again, the replay
// only adds load), and checked again only after the replay touches it. Exact, but still roughly
// quadratic on large rounds.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gpualloc/fragmentation.hpp"
#include "gpualloc/packing.hpp"
#include "gpualloc/pattern.hpp"
#include "gpualloc/problem.hpp"
#include "gpualloc/state.hpp"

namespace gpualloc {

/// A complete allocation together with the occupancy it implies.
struct Solution {
  std::vector<int> alt_of_bid;                   ///< winning alternative index (global), -1: lost
  std::vector<std::vector<Replica>> placements;  ///< per bid, one per replica
  std::vector<std::uint8_t> evicted;             ///< per incumbent
  State real;                                    ///< outside + kept incumbents + winners
  State pot;                                     ///< outside + non-preemptible incumbents + winners
  std::vector<double> penalty;       ///< per GPU: value+cost of kept preemptible incumbents on it
  std::vector<double> wallet_spent;  ///< per wallet
  double welfare = 0.0;
  std::vector<int> evict_log;  ///< every eviction in order (restores do not remove)
};

/// Why a bid lost.
enum class LossReason : std::uint8_t {
  Outbid = 0,
  DoesNotFit = 1,
  OverBudget = 2,
  BelowReserve = 3
};

/// A loss reason with its numbers (name, value) pairs; `model` is a model index or -1.
struct Explanation {
  LossReason reason = LossReason::Outbid;
  std::vector<std::pair<std::string, double>> detail;
  int model = -1;
};

/// Parameters of the engine (validated by the constructor).
struct EngineOptions {
  double alpha = 0.75;  ///< exponent of size in the ranking score value / size^alpha
  /// Expected workload for the packing of whole and shared GPUs (FGD's target workload, see
  /// fragmentation.hpp); empty: the round's own bids. The simulator passes the trace's.
  Workload workload;
  /// Scale (milli-GPU) of the steps in which fragmentation growths are compared (see Packer);
  /// 0: exactly.
  double fragment_scale = 1000.0;
  /// Order in which nodes are preferred between placements within one step (a permutation of
  /// the nodes; empty: a fixed hash order). Only used with a workload.
  std::vector<int> node_order;
  /// How whole and shared GPUs are scored: FGD's growth (default) or the pattern rule
  /// (pattern.hpp) with `pattern_values` (none: every loss 0) and `reserve_weight`.
  Packing packing = Packing::Fgd;
  PatternValues pattern_values;
  double reserve_weight = kDefaultReserveWeight;
};

/// Figures of the last local search.
struct LocalStats {
  std::int64_t iterations = 0;
  std::int64_t improvements = 0;
  double seconds = 0.0;
};

class Engine {
 public:
  /// Validates `problem` (InputError on bad data) and builds indexes and the item order.
  explicit Engine(ProblemData problem, EngineOptions options = {});

  /// All incumbents kept, nothing won.
  [[nodiscard]] Solution initial() const;
  /// The greedy allocation (cached after the first call).
  const Solution& greedy();
  /// Whether bid `other` is a bid of `b`'s agent (ProblemData::bidders) that lost in the greedy
  /// run for its wallet (never searched: at each of its positions the wallet could not pay).
  /// The payment rules leave such bids out of `b`'s price: the bids an agent cannot afford never
  /// raise what its winners pay (docs/concepts.md). Call after greedy().
  [[nodiscard]] bool own_loser(int b, int other) const;
  /// Local search from `start` (never worse). Deterministic for a seed and `max_iterations`
  /// when the time limit does not bind. `patience` <= 0 picks a default from the instance size.
  Solution local(const Solution& start, double time_limit_s, std::uint64_t seed,
                 std::int64_t max_iterations = -1, std::int64_t patience = 0,
                 LocalStats* stats = nullptr);
  /// Build the Solution of an allocation given as winners (bid, alternative index within the
  /// bid, replicas) and evicted incumbent flags. Throws InputError if it is not feasible.
  [[nodiscard]] Solution load(const std::vector<int>& bids, const std::vector<int>& alts,
                              const std::vector<std::vector<Replica>>& replicas,
                              const std::vector<std::uint8_t>& evicted) const;
  /// Critical payment of every winner of `sol` (indexed by bid; 0 for losers). Winners' replays
  /// are independent: `threads` > 1 runs them on that many threads (0: one per hardware
  /// thread); the payments are the same for every thread count.
  std::vector<double> critical_payments(const Solution& sol, int threads = 1);
  /// Critical payments of the winners `bids` of `sol` only, in that order, replayed one after
  /// the other until `time_budget_s` seconds have passed (checked between winners; the first is
  /// always replayed): the payment of each bid replayed, NaN for those the budget left out.
  /// For auditing a cheaper rule on a sample of a large round's winners.
  std::vector<double> critical_payments_of(const Solution& sol, const std::vector<int>& bids,
                                           double time_budget_s);
  /// For tests: with `on` false, critical_payments replays every item with a full search and
  /// prices the bid with a full search at every position (none of the replay's shortcuts), so
  /// that the shortcuts can be checked against a plain per-winner replay.
  void set_payment_shortcuts(bool on) { payment_shortcuts_ = on; }
  /// The `los` payment of every winner of `sol` (indexed by bid; 0 for losers): read off one
  /// more pass of the greedy run (los.cpp); a winner the greedy run did not make the same way
  /// pays its bid.
  std::vector<double> los_payments(const Solution& sol);
  /// Loss reason of every losing bid of `sol` (indexed by bid; winners get Outbid, unused).
  [[nodiscard]] std::vector<Explanation> explain(const Solution& sol) const;

  [[nodiscard]] const ProblemData& problem() const { return p_; }
  [[nodiscard]] const Packer& packer() const { return packer_; }
  /// Ranking score of a global alternative index.
  [[nodiscard]] double score(int alt) const { return score_[alt]; }
  /// Least value alternative `alt` may have on `model` (reserve x GPU-equivalents).
  [[nodiscard]] double reserve_cost(int alt, int model) const;
  /// First global alternative index of bid b (alternatives are contiguous).
  [[nodiscard]] int first_alt(int bid) const { return bid_first_[bid]; }

 private:
  struct Candidate {
    int model;
    int profile;
    double reserve_cost;
  };
  struct Undo {
    std::vector<int> evicted;
  };

  /// Try to place alternative `alt` at value `value` into `sol`; on success fill `out` (and the
  /// incumbents to evict, already evicted in `sol` when `commit`); without `commit`, `sol` is
  /// left as it was.
  /// Only models whose reserve cost `value` covers are used. `least_value` (optional) receives
  /// the least value the found placement needs: its model's reserve cost and what its evictions
  /// destroy (it must exceed the latter);
  /// `check_wallet` false skips the wallet test (the payment scan does it itself).
  /// `only_nodes` restricts the search (see Packer::find).
  bool try_place(Solution& sol, int alt, double value, bool allow_evict, bool first_fit,
                 bool commit, std::vector<Replica>& out, double* least_value = nullptr,
                 bool check_wallet = true, const std::vector<int>* only_nodes = nullptr,
                 std::vector<int>* runners = nullptr);
  /// try_place's search with a workload (node-level packing, several models): every usable
  /// model competes, the least reserve cost first, then the best packing score.
  bool place_by_score(Solution& sol, int alt, double value, bool commit, std::vector<Replica>& out,
                      double* least_value, const std::vector<int>* only_nodes);
  /// try_place's search with evictions: the placement (over `sol.pot`, minimising the penalty)
  /// whose evictions destroy the least, if less than `value`.
  bool place_evicting(Solution& sol, int alt, double value, bool first_fit, bool commit,
                      std::vector<Replica>& out, double* least_value,
                      const std::vector<int>* only_nodes);
  /// place_evicting's step on one candidate model: the placement over `sol.pot` minimising the
  /// penalty and the value its evictions destroy (`sol` is left as it was); false when none
  /// makes room.
  bool eviction_on(Solution& sol, const AlternativeData& a, const Candidate& c, bool first_fit,
                   std::vector<Replica>& out, const std::vector<int>* only_nodes,
                   double& cost) const;
  /// The least value v <= `value` at which try_place(sol, alt, v) (evictions allowed, the
  /// wallet left out) places `alt`, +inf when none: the least reserve cost of a model where it
  /// fits in free resources, or of a model whose eviction search makes room for less than v
  /// (then max(reserve cost, what the evictions destroy)). Each model is a separate way to win
  /// at v, so this is a minimum over models, not the first model that fits (which is what
  /// try_place places). `out` receives a placement at that value and `evicting` whether it
  /// evicts. The search stops once it finds a value <= `enough`. `free_only`: free resources
  /// in `only_nodes` (null: everywhere) only; otherwise `only_nodes` must be null.
  double least_value(Solution& sol, int alt, double value, double enough, bool free_only,
                     const std::vector<int>* only_nodes, std::vector<Replica>& out, bool& evicting);
  /// The constructor's steps: first alternative per bid, usable candidates and the item
  /// order (find_candidates: those of alternative k), pool masks, incumbent indexes and
  /// legality.
  void index_bids();
  void rank_alternatives();
  void find_candidates(int k, const std::vector<std::array<bool, 3>>& has);
  void index_pools();
  void index_incumbents();
  /// load()'s checks and occupancy of one winner's replicas (errors name `path`).
  void load_replicas(Solution& sol, const std::string& path, const AlternativeData& a,
                     const std::vector<Replica>& reps) const;
  /// Critical payment of winner `b` of `sol` (after greedy() and record_runners(); reads the
  /// engine's tables only, so calls for different winners may run in parallel).
  double critical_payment_of(const Solution& sol, int b, std::vector<Replica>& scratch);
  /// Checks that critical payments can be computed for `sol` (InputError otherwise) and runs
  /// the greedy run and its runners-up record they replay.
  void prepare_critical(const Solution& sol);
  /// One winner's payment replay and its state (dirty nodes, cached placement, witness);
  /// defined in payments.cpp. Each call of critical_payment_of builds its own.
  class PaymentReplay;
  /// Replays the greedy run once more (for payments) to record, per position, the runners-up
  /// of the item's free-resource search (Packer::find) when it won there that way, and the
  /// checkpoints (so that greedy() itself copies no state).
  void record_runners();
  /// A necessary condition for node `n` to hold one replica of `a` in `s` (node CPU and memory,
  /// the node's free units of `a`'s kind); O(1), used to skip nodes before a search.
  [[nodiscard]] bool may_host(const State& s, int n, const AlternativeData& a) const;
  /// Whether `value` covers a candidate model's reserve cost (the test try_place does).
  [[nodiscard]] static bool covers(double value, double reserve_cost);
  /// Whether the wallet of `alt`'s bid still covers `value` in `sol` (the test try_place does).
  [[nodiscard]] bool wallet_covers(const Solution& sol, int alt, double value) const;
  void commit_win(Solution& sol, int alt, std::vector<Replica> reps) const;
  /// Undo bid's win in `sol`; `taken` (optional) receives its placement (moved, not copied).
  void remove_win(Solution& sol, int bid, std::vector<Replica>* taken = nullptr) const;
  void evict(Solution& sol, int inc) const;
  /// Penalty of GPU g in `sol` (value + cost of its kept preemptible incumbents), recomputed.
  [[nodiscard]] double gpu_penalty(const Solution& sol, int g) const;
  void restore(Solution& sol, int inc) const;
  /// The incumbent make_room evicts first for GPU-level room for `r` (-1: none left):
  /// overlapping claims first, then the cheapest co-tenant.
  [[nodiscard]] int gpu_victim(const Solution& sol, const Replica& r) const;
  bool make_room(Solution& sol, const std::vector<Replica>& reps, const AlternativeData& a,
                 std::vector<int>& evicted) const;
  /// Re-insert `items` greedily, in score order perturbed by `noise` (each score times a factor
  /// drawn from [1 - noise, 1 + noise]; 0: plain greedy order). With a `deadline`, stops early
  /// once it has passed and returns false (the caller discards the half-refilled solution).
  bool refill(Solution& sol, std::vector<int> items, std::mt19937_64* rng = nullptr,
              double noise = 0.0, bool allow_evict = false,
              const std::chrono::steady_clock::time_point* deadline = nullptr);
  [[nodiscard]] bool touches(const std::vector<Replica>& a, const std::vector<Replica>& b,
                             bool node_level) const;
  /// One run of local(): its state and its moves (ruin, recreate, accept); auction.cpp.
  class LocalSearch;
  /// The loss reasons of one allocation (explain()): its states and memos; explain.cpp.
  class LossExplainer;

  ProblemData p_;
  EngineOptions opt_;
  Packer packer_;
  std::vector<int> bid_first_;                 // first alt of bid, size bids+1
  std::vector<std::vector<Candidate>> cands_;  // per alt: usable (model, profile)
  std::vector<double> size_;                   // per alt: GPU-equivalents for ranking
  std::vector<double> score_;                  // per alt
  std::vector<double> max_reserve_;            // per alt: largest reserve cost of its models
  std::vector<int> order_;                     // alts, best first
  std::vector<int> rank_;                      // per alt: position in order_
  std::vector<std::vector<int>> gpu_incs_, node_incs_;
  // Pools (model, unit kind) as bits (bit model*3+kind; every bit set when there are more than
  // 64 pools): the pools each node's GPUs serve and the pools each alternative may use. An
  // alternative can only be affected by a node whose mask meets its own.
  std::vector<std::uint64_t> node_pools_, alt_pools_;
  bool any_preemptible_ = false;

  // Greedy cache and checkpoints.
  bool greedy_done_ = false;
  Solution greedy_;
  int checkpoint_every_ = 64;
  std::vector<Solution> checkpoints_;    // checkpoints_[c]: state before position c*every
  std::vector<int> greedy_rank_of_bid_;  // position of the winning item, or -1
  std::vector<std::vector<int>> greedy_evictions_;  // per position: incumbents it evicted
  // Per position: the greedy run searched a placement for the item there (its bid had not won
  // yet and its wallet covered it), so its outcome is what the search found.
  std::vector<std::uint8_t> greedy_searched_;
  // Per bid: whether the greedy run searched a placement for it at some position (its wallet
  // covered that alternative then); a loser never searched lost for its wallet.
  std::vector<std::uint8_t> greedy_bid_searched_;
  bool runners_done_ = false;
  bool payment_shortcuts_ = true;  // false: plain replays (tests)
  // Per position: runners-up nodes of the winning search (runner_count_ < 0: none recorded).
  std::vector<int> runners_;
  std::vector<std::int8_t> runner_count_;
};

/// Short name of a loss reason: outbid, does_not_fit, over_budget, below_reserve.
const char* loss_reason_name(LossReason r);

}  // namespace gpualloc
