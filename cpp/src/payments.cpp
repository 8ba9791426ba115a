#include <algorithm>
#include <cmath>

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
    // The bid sits just after the last item processed so far; it wins iff it fits there. The
    // first position where it no longer fits makes the previous item's score critical.
    double threshold = 0.0;
    double last_score = score_[k];
    bool decided = false;
    for (std::size_t pos = c * every; pos < order_.size(); ++pos) {
      const int j = order_[pos];
      const int bj = p_.alternatives[j].bid;
      if (bj == b) continue;
      if (pos >= scan_from) {
        const double value_here = score_[j] * size_factor;
        if (last_score * size_factor <= floor) {  // below the reserve cost the floor decides
          decided = true;
          break;
        }
        if (value_here < a.value && !try_place(s, k, value_here, true, true, false, scratch)) {
          threshold = last_score * size_factor;
          decided = true;
          break;
        }
        last_score = std::min(last_score, score_[j]);
      }
      if (s.alt_of_bid[bj] >= 0) continue;
      try_place(s, j, p_.alternatives[j].value, true, false, true, scratch);
    }
    // After every other item: the bid still has to fit at (almost) zero value.
    if (!decided && !try_place(s, k, 0.0, true, true, false, scratch)) {
      threshold = last_score * size_factor;
    }
    pay[b] = std::min(a.value, std::max(floor, threshold));
  }
  return pay;
}

}  // namespace gpualloc
