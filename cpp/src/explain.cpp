#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <tuple>

#include "gpualloc/auction.hpp"

namespace gpualloc {

std::vector<Explanation> Engine::explain(const Solution& sol) const {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  std::vector<Explanation> out(p_.bids.size());
  State base = initial().pot;  // outside usage + non-preemptible incumbents
  State left = sol.real;       // what the winners and kept incumbents leave free
  std::vector<std::array<bool, 3>> has(p_.models.size(), {false, false, false});
  for (const auto& g : p_.gpus) {
    for (int kd = 0; kd < 3; ++kd) {
      if (serves(g.mode, static_cast<UnitKind>(kd))) has[g.model][kd] = true;
    }
  }
  // Lowest winning score per model (for "outbid" details).
  std::vector<double> lowest(p_.models.size(), std::numeric_limits<double>::infinity());
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    const int k = sol.alt_of_bid[b];
    if (k < 0 || sol.placements[b].empty()) continue;
    const int m = p_.gpus[sol.placements[b][0].gpus[0]].model;
    lowest[m] = std::min(lowest[m], score_[k]);
  }
  std::vector<Replica> reps;
  // Whether an alternative fits a state depends only on its shape, not on its bid: many losers
  // share a shape, so the answers are memoised per (state, shape, model, profile).
  using Shape =
      std::tuple<int, int, int, int, int, std::int64_t, std::int64_t, int, std::uint64_t, int, int>;
  std::map<Shape, bool> fit_memo;
  const auto fits_in = [&](State& st, int which, const AlternativeData& a, int m, int prof) {
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
    const auto it = fit_memo.find(key);
    if (it != fit_memo.end()) return it->second;
    const bool ok = packer_.find(st, a, m, prof, nullptr, true, reps);
    fit_memo.emplace(key, ok);
    return ok;
  };
  std::map<std::pair<int, int>, std::int64_t> free_memo;  // (kind, model) -> free in `base`
  const auto free_in_base = [&](UnitKind kind, int m) {
    const std::pair<int, int> key{static_cast<int>(kind), m};
    const auto it = free_memo.find(key);
    if (it != free_memo.end()) return it->second;
    const std::int64_t cap = packer_.free_capacity(base, kind, m);
    free_memo.emplace(key, cap);
    return cap;
  };
  for (int b = 0; b < static_cast<int>(p_.bids.size()); ++b) {
    if (sol.alt_of_bid[b] >= 0) continue;
    const double balance = p_.wallets[p_.bids[b]];
    enum { kOk = 0, kFit = 1, kBudget = 2, kReserve = 3 };
    bool all_budget = true, all_reserve = true, all_nofit = true, any_ok = false;
    double best_value = -1, min_value = std::numeric_limits<double>::infinity();
    int best_alt = -1, best_alt_status = kOk;
    double reserve_needed = std::numeric_limits<double>::infinity();
    double requested = 0, largest_free = 0;
    int contest_model = -1;
    double contest_score = std::numeric_limits<double>::infinity();
    for (int k = bid_first_[b]; k < bid_first_[b + 1]; ++k) {
      const auto& a = p_.alternatives[k];
      min_value = std::min(min_value, a.value);
      const bool over = a.value > balance + 1e-9 * std::max(1.0, balance);
      if (!over) all_budget = false;
      // Models it could use, ignoring the reserve.
      bool below_all = true, any_usable = false, fits = false;
      for (std::size_t i = 0; i < a.models.size(); ++i) {
        const int m = a.models[i];
        const int prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
        if (a.kind == UnitKind::Mig && prof < 0) continue;
        if (!has[m][static_cast<int>(a.kind)]) continue;
        if (p_.models[m].memory_gb + 1e-9 < a.min_gpu_memory_gb) continue;
        any_usable = true;
        const double cost = reserve_cost(k, m);
        if (a.value + 1e-9 * std::max(1.0, a.value) >= cost) below_all = false;
        reserve_needed = std::min(reserve_needed, cost);
        if (!fits) fits = fits_in(base, 0, a, m, prof);
        double per_unit = 1.0;
        if (a.kind == UnitKind::Share) per_unit = 1000.0;
        if (a.kind == UnitKind::Mig) {
          per_unit = static_cast<double>(p_.models[m].mig_units) / p_.models[m].compute_units;
        }
        largest_free =
            std::max(largest_free, static_cast<double>(free_in_base(a.kind, m)) / per_unit);
        if (lowest[m] < contest_score || contest_model < 0) {
          if (std::isfinite(lowest[m])) {
            contest_score = lowest[m];
            contest_model = m;
          } else if (contest_model < 0) {
            contest_model = m;
          }
        }
      }
      const bool below = any_usable && below_all;
      if (!below) all_reserve = false;
      if (fits) all_nofit = false;
      requested = std::max(requested, size_[k]);
      int status = kOk;
      if (over)
        status = kBudget;
      else if (below)
        status = kReserve;
      else if (!fits)
        status = kFit;
      if (status == kOk) any_ok = true;
      if (a.value > best_value) {
        best_value = a.value;
        best_alt = k;
        best_alt_status = status;
      }
    }
    auto& e = out[b];
    int reason = kOk;
    if (all_budget)
      reason = kBudget;
    else if (all_reserve)
      reason = kReserve;
    else if (all_nofit)
      reason = kFit;
    else if (!any_ok)
      reason = best_alt_status;
    // A bid that fits what the winners left free, but whose wallet the other winners of the same
    // wallet have already drawn down below its value, lost to its own budget, not to a rival.
    const int w = p_.bids[b];
    const double remaining = balance - sol.wallet_spent[w];
    double budget_blocked_value = -1.0;
    if (reason == kOk) {
      for (int k = bid_first_[b]; k < bid_first_[b + 1]; ++k) {
        const auto& a = p_.alternatives[k];
        if (a.value <= remaining + 1e-9 * std::max(1.0, balance)) continue;
        for (std::size_t i = 0; i < a.models.size() && budget_blocked_value < a.value; ++i) {
          const int m = a.models[i];
          const int prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
          if (a.kind == UnitKind::Mig && prof < 0) continue;
          if (a.value + 1e-9 * std::max(1.0, a.value) < reserve_cost(k, m)) continue;
          if (fits_in(left, 1, a, m, prof)) {
            budget_blocked_value = a.value;
          }
        }
      }
      if (budget_blocked_value >= 0) reason = kBudget;
    }
    switch (reason) {
      case kBudget:
        e.reason = LossReason::OverBudget;
        if (budget_blocked_value >= 0) {
          e.detail = {{"value", budget_blocked_value},
                      {"balance", balance},
                      {"spent_by_other_winners", sol.wallet_spent[w]}};
        } else {
          e.detail = {{"value", all_budget ? min_value : best_value}, {"balance", balance}};
        }
        break;
      case kReserve:
        e.reason = LossReason::BelowReserve;
        e.detail = {{"value", best_value}, {"reserve_cost", reserve_needed}};
        break;
      case kFit:
        e.reason = LossReason::DoesNotFit;
        e.detail = {{"requested_gpus", requested}, {"largest_free_gpus", largest_free}};
        break;
      default:
        e.reason = LossReason::Outbid;
        e.detail = {{"value", best_value}, {"density", score_[best_alt]}};
        if (std::isfinite(contest_score))
          e.detail.emplace_back("lowest_winning_density", contest_score);
        e.model = contest_model;
        break;
    }
  }
  return out;
}

}  // namespace gpualloc
