#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <tuple>

#include "gpualloc/auction.hpp"

namespace gpualloc {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Whether an alternative fits a state depends only on its shape, not on its bid: many losers
// share a shape, so the answers are memoised per (state, shape, model, profile).
using Shape =
    std::tuple<int, int, int, int, int, std::int64_t, std::int64_t, int, std::uint64_t, int, int>;

}  // namespace

// The loss reasons of one allocation: the states a loser is tried against, the memos and the
// lowest winning score per model.
class Engine::LossExplainer {
 public:
  LossExplainer(const Engine& e, const Solution& sol);
  // Loss reason of losing bid `b`.
  Explanation explain_bid(int b);

 private:
  enum Status { kOk = 0, kFit = 1, kBudget = 2, kReserve = 3 };
  // What the alternatives of one bid add up to.
  struct Tally {
    bool all_budget = true, all_reserve = true, all_nofit = true, any_ok = false;
    double best_value = -1, min_value = kInf;
    int best_alt = -1, best_alt_status = kOk;
    double reserve_needed = kInf;
    double requested = 0, largest_free = 0;
    int contest_model = -1;
    double contest_score = kInf;
  };

  bool fits_in(State& st, int which, const AlternativeData& a, int m, int prof);
  std::int64_t free_in_base(UnitKind kind, int m);
  void tally_alternative(int k, double balance, Tally& t);
  [[nodiscard]] static int reason_of(const Tally& t);
  double budget_blocked(int b, double remaining, double balance);
  [[nodiscard]] Explanation describe(int reason, const Tally& t, double budget_blocked_value,
                                     double balance, int w) const;

  const Engine& e_;
  const ProblemData& p_;
  const Solution& sol_;
  State base_;  // outside usage + non-preemptible incumbents
  State left_;  // what the winners and kept incumbents leave free
  std::vector<std::array<bool, 3>> has_;
  std::vector<double> lowest_;  // lowest winning score per model (for "outbid" details)
  std::vector<Replica> reps_;
  std::map<Shape, bool> fit_memo_;
  std::map<std::pair<int, int>, std::int64_t> free_memo_;  // (kind, model) -> free in `base_`
};

Engine::LossExplainer::LossExplainer(const Engine& e, const Solution& sol)
    : e_(e), p_(e.p_), sol_(sol), base_(e.initial().pot), left_(sol.real) {
  has_.assign(p_.models.size(), {false, false, false});
  for (const auto& g : p_.gpus) {
    for (int kd = 0; kd < 3; ++kd) {
      if (serves(g.mode, static_cast<UnitKind>(kd))) has_[g.model][kd] = true;
    }
  }
  lowest_.assign(p_.models.size(), kInf);
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    const int k = sol.alt_of_bid[b];
    if (k < 0 || sol.placements[b].empty()) continue;
    const int m = p_.gpus[sol.placements[b][0].gpus[0]].model;
    lowest_[m] = std::min(lowest_[m], e_.score_[k]);
  }
}

bool Engine::LossExplainer::fits_in(State& st, int which, const AlternativeData& a, int m,
                                    int prof) {
  const Shape key{which,
                  static_cast<int>(a.kind),
                  a.gpus,
                  a.milli,
                  a.replicas,
                  a.cpu_milli,
                  a.memory_mib,
                  static_cast<int>(a.locality),
                  std::bit_cast<std::uint64_t>(a.min_gpu_memory_gb),
                  m,
                  prof};
  const auto it = fit_memo_.find(key);
  if (it != fit_memo_.end()) return it->second;
  const bool ok = e_.packer_.find(st, a, m, prof, nullptr, true, reps_);
  fit_memo_.emplace(key, ok);
  return ok;
}

std::int64_t Engine::LossExplainer::free_in_base(UnitKind kind, int m) {
  const std::pair<int, int> key{static_cast<int>(kind), m};
  const auto it = free_memo_.find(key);
  if (it != free_memo_.end()) return it->second;
  const std::int64_t cap = e_.packer_.free_capacity(base_, kind, m);
  free_memo_.emplace(key, cap);
  return cap;
}

void Engine::LossExplainer::tally_alternative(int k, double balance, Tally& t) {
  const auto& a = p_.alternatives[k];
  t.min_value = std::min(t.min_value, a.value);
  const bool over = a.value > balance + 1e-9 * std::max(1.0, balance);
  if (!over) t.all_budget = false;
  // Models it could use, ignoring the reserve.
  bool below_all = true, any_usable = false, fits = false;
  for (std::size_t i = 0; i < a.models.size(); ++i) {
    const int m = a.models[i];
    const int prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
    if (a.kind == UnitKind::Mig && prof < 0) continue;
    if (!has_[m][static_cast<int>(a.kind)]) continue;
    if (p_.models[m].memory_gb + 1e-9 < a.min_gpu_memory_gb) continue;
    any_usable = true;
    const double cost = e_.reserve_cost(k, m);
    if (a.value + 1e-9 * std::max(1.0, a.value) >= cost) below_all = false;
    t.reserve_needed = std::min(t.reserve_needed, cost);
    if (!fits) fits = fits_in(base_, 0, a, m, prof);
    double per_unit = 1.0;
    if (a.kind == UnitKind::Share) per_unit = 1000.0;
    if (a.kind == UnitKind::Mig) {
      per_unit = static_cast<double>(p_.models[m].mig_units) / p_.models[m].compute_units;
    }
    t.largest_free =
        std::max(t.largest_free, static_cast<double>(free_in_base(a.kind, m)) / per_unit);
    if (lowest_[m] < t.contest_score || t.contest_model < 0) {
      if (std::isfinite(lowest_[m])) {
        t.contest_score = lowest_[m];
        t.contest_model = m;
      } else if (t.contest_model < 0) {
        t.contest_model = m;
      }
    }
  }
  const bool below = any_usable && below_all;
  if (!below) t.all_reserve = false;
  if (fits) t.all_nofit = false;
  t.requested = std::max(t.requested, e_.size_[k]);
  int status = kOk;
  if (over)
    status = kBudget;
  else if (below)
    status = kReserve;
  else if (!fits)
    status = kFit;
  if (status == kOk) t.any_ok = true;
  if (a.value > t.best_value) {
    t.best_value = a.value;
    t.best_alt = k;
    t.best_alt_status = status;
  }
}

int Engine::LossExplainer::reason_of(const Tally& t) {
  if (t.all_budget) return kBudget;
  if (t.all_reserve) return kReserve;
  if (t.all_nofit) return kFit;
  if (!t.any_ok) return t.best_alt_status;
  return kOk;
}

// A bid that fits what the winners left free, but whose wallet the other winners of the same
// wallet have already drawn down below its value, lost to its own budget, not to a rival.
// Returns the largest such value of an alternative (-1: none).
double Engine::LossExplainer::budget_blocked(int b, double remaining, double balance) {
  double budget_blocked_value = -1.0;
  for (int k = e_.bid_first_[b]; k < e_.bid_first_[b + 1]; ++k) {
    const auto& a = p_.alternatives[k];
    if (a.value <= remaining + 1e-9 * std::max(1.0, balance)) continue;
    for (std::size_t i = 0; i < a.models.size() && budget_blocked_value < a.value; ++i) {
      const int m = a.models[i];
      const int prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
      if (a.kind == UnitKind::Mig && prof < 0) continue;
      if (a.value + 1e-9 * std::max(1.0, a.value) < e_.reserve_cost(k, m)) continue;
      if (fits_in(left_, 1, a, m, prof)) {
        budget_blocked_value = a.value;
      }
    }
  }
  return budget_blocked_value;
}

Explanation Engine::LossExplainer::describe(int reason, const Tally& t, double budget_blocked_value,
                                            double balance, int w) const {
  Explanation e;
  switch (reason) {
    case kBudget:
      e.reason = LossReason::OverBudget;
      if (budget_blocked_value >= 0) {
        e.detail = {{"value", budget_blocked_value},
                    {"balance", balance},
                    {"spent_by_other_winners", sol_.wallet_spent[w]}};
      } else {
        e.detail = {{"value", t.all_budget ? t.min_value : t.best_value}, {"balance", balance}};
      }
      break;
    case kReserve:
      e.reason = LossReason::BelowReserve;
      e.detail = {{"value", t.best_value}, {"reserve_cost", t.reserve_needed}};
      break;
    case kFit:
      e.reason = LossReason::DoesNotFit;
      e.detail = {{"requested_gpus", t.requested}, {"largest_free_gpus", t.largest_free}};
      break;
    default:
      e.reason = LossReason::Outbid;
      e.detail = {{"value", t.best_value}, {"density", e_.score_[t.best_alt]}};
      if (std::isfinite(t.contest_score))
        e.detail.emplace_back("lowest_winning_density", t.contest_score);
      e.model = t.contest_model;
      break;
  }
  return e;
}

Explanation Engine::LossExplainer::explain_bid(int b) {
  const double balance = p_.wallets[p_.bids[b]];
  Tally t;
  for (int k = e_.bid_first_[b]; k < e_.bid_first_[b + 1]; ++k) tally_alternative(k, balance, t);
  int reason = reason_of(t);
  const int w = p_.bids[b];
  double budget_blocked_value = -1.0;
  if (reason == kOk) {
    budget_blocked_value = budget_blocked(b, balance - sol_.wallet_spent[w], balance);
    if (budget_blocked_value >= 0) reason = kBudget;
  }
  return describe(reason, t, budget_blocked_value, balance, w);
}

std::vector<Explanation> Engine::explain(const Solution& sol) const {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  std::vector<Explanation> out(p_.bids.size());
  LossExplainer explainer(*this, sol);
  for (int b = 0; b < static_cast<int>(p_.bids.size()); ++b) {
    if (sol.alt_of_bid[b] < 0) out[b] = explainer.explain_bid(b);
  }
  return out;
}

}  // namespace gpualloc
