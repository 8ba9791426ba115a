// The `los` payment rule (after Lehmann, O'Callaghan and Shoham, JACM 2002): a winner of the
// greedy run pays what the first bid it blocked was worth at its own size, read off one more
// pass of that run, with every placement frozen and nothing replayed per winner.
//
// The pass repeats the greedy run item by item from its record (each win with its placement and
// evictions, no search), so every state is the run's own. At an
// item the run searched and could not place (its bid had not won, its wallet covered it), each
// winner still unpriced whose pools meet the item's is freed for a moment and the item tried on
// that winner's nodes only (no evictions, the wallets as they stand): the first such item that
// fits there is the first bid the winner blocked, and the winner's threshold is that item's
// score times the winner's size^alpha (the least value that still outranks it). Winners never
// priced that way pay their reserve. Payment = min(bid, max(reserve of the model used,
// threshold)). A winner of another allocation (local search, CP-SAT) that the greedy run did not
// make with the same alternative and placement pays its bid.
//
// Exact (equal to the critical payment) for single-minded bids on one node of whole GPUs with no
// wallet binding: the run without the winner is the same run with its GPUs free, until the first
// item that fits in them, which then wins and leaves the winner no room below it. Elsewhere it
// is an approximation: an item that fits only by also using other nodes, or only by evicting, is
// not counted as blocked; a run without the winner may place others differently.
//
// Wallets. The run without a winner has its value back in its wallet. Walking that wallet's later
// items with their original outcomes: an item its wallet could not pay for, affordable with that
// value back and with room as the run stands, would win and take it; an item the run had win
// loses and takes nothing once its bid has won that way (with another alternative) or what is
// left no longer covers it; the winner still wins just
// above each next item while what is left covers that item's score at the winner's size. The
// first item after which it no longer does sets the wallet threshold (its score at the winner's
// size). The payment takes the larger of the two thresholds: the earlier blocking decides.
#include <algorithm>
#include <cmath>

#include "gpualloc/auction.hpp"

namespace gpualloc {

namespace {

constexpr double kEps = 1e-9;

}  // namespace

std::vector<double> Engine::los_payments(const Solution& sol) {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  const Solution& g = greedy();
  std::vector<double> pay(p_.bids.size(), 0.0);
  std::vector<double> floor(p_.bids.size(), 0.0);
  std::vector<std::uint8_t> priced(p_.bids.size(), 0);  // priced by this rule (a greedy winner)
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    const int k = sol.alt_of_bid[b];
    if (k < 0) continue;
    pay[b] = p_.alternatives[k].value;  // first price unless the pass prices it
    if (g.alt_of_bid[b] == k && g.placements[b] == sol.placements[b]) {
      priced[b] = 1;
      const auto& reps = sol.placements[b];
      const int model =
          !reps.empty() && !reps[0].gpus.empty() ? p_.gpus[reps[0].gpus[0]].model : -1;
      floor[b] = model >= 0 ? reserve_cost(k, model) : 0.0;
    }
  }
  // Winners of the pass so far that no blocked item has priced yet, with their nodes and pools.
  struct Open {
    int bid;
    int alt;
    std::vector<int> nodes;     // sorted, distinct
    std::vector<int> gpus;      // per entry of nodes: the GPUs it uses there
    std::vector<int> replicas;  // per entry of nodes: its replicas there
    std::uint64_t pools;
  };
  std::vector<Open> open;
  // Per wallet: its winners of the pass not yet priced by a bid their spending blocked.
  std::vector<std::vector<int>> wallet_open(p_.wallets.size());
  std::vector<double> threshold(p_.bids.size(), 0.0);
  std::vector<double> extra(p_.bids.size(), 0.0);  // per open winner: see the wallet's side below
  // Per open winner: the bids of its wallet that win without it where the run had them lose.
  std::vector<std::vector<int>> extra_bids(p_.bids.size());
  Solution s = initial();
  // Whether freeing `o` may let one replica of `a` fit on one of its nodes: the node's free
  // units plus every GPU `o` uses there taken as freed whole, and its CPU and memory less what
  // `o`'s replicas there use (a necessary condition only; the search decides).
  const auto may_fit = [&](const Open& o, const AlternativeData& a) {
    const auto& ao = p_.alternatives[o.alt];
    for (std::size_t k = 0; k < o.nodes.size(); ++k) {
      const int n = o.nodes[k];
      const auto& nd = p_.nodes[n];
      if (s.real.cpu_used[n] - ao.cpu_milli * o.replicas[k] + a.cpu_milli > nd.cpu_milli ||
          s.real.mem_used[n] - ao.memory_mib * o.replicas[k] + a.memory_mib > nd.memory_mib) {
        continue;
      }
      if (a.kind == UnitKind::Whole && s.real.node_free_whole[n] + o.gpus[k] < a.gpus) continue;
      if (a.kind == UnitKind::Share &&
          s.real.node_free_milli[n] + std::int64_t{1000} * o.gpus[k] < a.milli) {
        continue;
      }
      return true;
    }
    return false;
  };
  std::vector<Replica> trial;
  const auto close = [&](const Open& o, double t) {
    threshold[o.bid] = std::max(threshold[o.bid], t);
  };
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    const int alt = order_[pos];
    const int bid = p_.alternatives[alt].bid;
    if (s.alt_of_bid[bid] >= 0) continue;
    const bool searched = greedy_searched_[pos] != 0;
    const bool blocked = searched && greedy_rank_of_bid_[bid] != static_cast<int>(pos);
    const int w = p_.bids[bid];
    const double value = p_.alternatives[alt].value;
    const double slack = p_.wallets[w] - s.wallet_spent[w];  // before this item's outcome
    if (blocked) {
      for (std::size_t i = 0; i < open.size();) {
        const Open& o = open[i];
        if ((o.pools & alt_pools_[alt]) == 0 || !may_fit(o, p_.alternatives[alt])) {
          ++i;
          continue;
        }
        std::vector<Replica> saved = s.placements[o.bid];
        remove_win(s, o.bid);
        const bool fits =
            try_place(s, alt, value, false, true, false, trial, nullptr, true, &o.nodes);
        commit_win(s, o.alt, std::move(saved));
        if (fits) {
          close(o, score_[alt] * std::pow(size_[o.alt], opt_.alpha));
          open[i] = std::move(open.back());
          open.pop_back();
        } else {
          ++i;
        }
      }
    }
    // The run's own outcome at this position, repeated from its record (no search).
    const bool won = greedy_rank_of_bid_[bid] == static_cast<int>(pos);
    if (won) {
      for (int i : greedy_evictions_[pos]) evict(s, i);
      commit_win(s, alt, g.placements[bid]);
    }
    if (!wallet_open[w].empty()) {
      // The wallet's side of each open winner wb: the run without wb has wb's value back in the
      // wallet, less what the wallet's blocked items take with it, plus what its won items no
      // longer take (extra: the difference from the run's spending). wb still wins just
      // above the next item while the wallet covers that item's score at wb's size; the first
      // time it no longer does, wb's threshold is the score of this item (the last interval
      // where it won).
      const double next = pos + 1 < order_.size() ? score_[order_[pos + 1]] : 0.0;
      int room = -1;  // whether this item had room, computed when needed
      auto& list = wallet_open[w];
      for (std::size_t i = 0; i < list.size();) {
        const int wb = list[i];
        const int walt = sol.alt_of_bid[wb];
        double avail = slack + p_.alternatives[walt].value - extra[wb];
        auto& xb = extra_bids[wb];
        const bool won_before = std::find(xb.begin(), xb.end(), bid) != xb.end();
        if (won) {
          if (!won_before && value <= avail + kEps * std::max(1.0, avail)) {
            avail -= value;
          } else {
            extra[wb] -= value;  // without wb it has won already or its wallet no longer covers it
          }
        } else if (!searched && !won_before && value <= avail + kEps * std::max(1.0, avail)) {
          if (room < 0) room = try_place(s, alt, value, false, true, false, trial, nullptr, false);
          if (room == 1) {
            extra[wb] += value;
            avail -= value;
            xb.push_back(bid);
          }
        }
        const double size = std::pow(size_[walt], opt_.alpha);
        if (std::max(floor[wb], next * size) > avail + kEps * std::max(1.0, avail)) {
          threshold[wb] = std::max(threshold[wb], score_[alt] * size);
          list[i] = list.back();
          list.pop_back();
        } else {
          ++i;
        }
      }
    }
    if (won && priced[bid] && sol.alt_of_bid[bid] == alt) {
      wallet_open[w].push_back(bid);
      Open o{bid, alt, {}, {}, {}, alt_pools_[alt]};
      for (const auto& r : s.placements[bid]) o.nodes.push_back(r.node);
      std::sort(o.nodes.begin(), o.nodes.end());
      o.nodes.erase(std::unique(o.nodes.begin(), o.nodes.end()), o.nodes.end());
      o.gpus.assign(o.nodes.size(), 0);
      o.replicas.assign(o.nodes.size(), 0);
      for (const auto& r : s.placements[bid]) {
        const auto k = std::lower_bound(o.nodes.begin(), o.nodes.end(), r.node) - o.nodes.begin();
        o.gpus[static_cast<std::size_t>(k)] += static_cast<int>(r.gpus.size());
        o.replicas[static_cast<std::size_t>(k)] += 1;
      }
      open.push_back(std::move(o));
    }
  }
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    if (priced[b]) pay[b] = std::min(pay[b], std::max(floor[b], threshold[b]));
  }
  return pay;
}

}  // namespace gpualloc
