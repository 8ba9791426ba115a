#include <algorithm>
#include <cmath>
#include <limits>

#include "gpualloc/auction.hpp"

namespace gpualloc {

std::vector<double> Engine::critical_payments(const Solution& sol) {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  greedy();
  std::vector<double> pay(p_.bids.size(), 0.0);
  std::vector<Replica> scratch;
  const auto every = static_cast<std::size_t>(checkpoint_every_);
  for (int b = 0; b < static_cast<int>(p_.bids.size()); ++b) {
    const int k = sol.alt_of_bid[b];
    if (k < 0) continue;
    const auto& a = p_.alternatives[k];
    int model = -1;
    if (b < static_cast<int>(sol.placements.size()) && !sol.placements[b].empty() &&
        !sol.placements[b][0].gpus.empty()) {
      model = p_.gpus[sol.placements[b][0].gpus[0]].model;
    }
    const double floor = model >= 0 ? reserve_cost(k, model) : 0.0;
    if (rank_[k] < 0) {  // never rankable (e.g. below every reserve): first price
      pay[b] = a.value;
      continue;
    }
    // Positions above the item's own rank would need a value above its bid, so the scan starts
    // at its rank; a winner greedy did not pick there gets a threshold of its own value.
    const std::size_t scan_from = static_cast<std::size_t>(rank_[k]);
    std::size_t start = scan_from;
    if (greedy_rank_of_bid_[b] >= 0) {
      start = std::min(start, static_cast<std::size_t>(greedy_rank_of_bid_[b]));
    }
    const std::size_t c = std::min(start / every, checkpoints_.size() - 1);
    Solution s = checkpoints_[c];
    const double size_factor = std::pow(size_[k], opt_.alpha);
    // Scan the positions the bid would take at lower values. Between the previous item and
    // item j (values in (score_j, last_score] x size^alpha) it is processed in the state before
    // j; it wins there with any value that fits, pays for its evictions and fits its wallet.
    // The first position where that fails sets the critical value.
    const int w = p_.bids[b];
    const double balance = p_.wallets[w] + 1e-9 * std::max(1.0, p_.wallets[w]);
    double threshold = 0.0;
    double last_score = score_[k];
    bool decided = false;
    // Least value (or +inf) with which the bid wins in the current state, given the interval.
    const auto least_winning = [&](double low, double high) {
      double cost = 0.0;
      if (!try_place(s, k, high, true, true, false, scratch, &cost, false)) {
        return std::numeric_limits<double>::infinity();
      }
      const double v = std::max(low, cost);
      if (s.wallet_spent[w] + v > balance) return std::numeric_limits<double>::infinity();
      return v;
    };
    for (std::size_t pos = c * every; pos < order_.size(); ++pos) {
      const int j = order_[pos];
      const int bj = p_.alternatives[j].bid;
      if (bj == b) continue;
      if (pos >= scan_from) {
        const double low = score_[j] * size_factor;
        const double high = std::min(a.value, last_score * size_factor);
        if (high <= floor) {  // below the reserve cost the floor decides
          decided = true;
          break;
        }
        if (low < a.value) {
          const double v = least_winning(low, high);
          if (v > low) {  // it does not win all the way down this interval
            threshold = std::isfinite(v) && v <= high ? v : high;
            decided = true;
            break;
          }
        }
        last_score = std::min(last_score, score_[j]);
      }
      if (s.alt_of_bid[bj] >= 0) continue;
      try_place(s, j, p_.alternatives[j].value, true, false, true, scratch);
    }
    // After every other item: the bid sits last, down to zero.
    if (!decided) {
      const double high = std::min(a.value, last_score * size_factor);
      const double v = least_winning(0.0, high);
      threshold = std::isfinite(v) && v <= high ? v : high;
    }
    pay[b] = std::min(a.value, std::max(floor, threshold));
  }
  return pay;
}

}  // namespace gpualloc
