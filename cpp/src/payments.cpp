#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <thread>

#include "gpualloc/auction.hpp"

namespace gpualloc {

std::vector<double> Engine::critical_payments(const Solution& sol, int threads) {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  if (packer_.node_level()) {  // the replay's shortcuts assume the default model order
    throw InputError("workload", "critical payments are not supported with a workload hint");
  }
  if (threads < 0) throw InputError("threads", "must be >= 0 (0: one per hardware thread)");
  greedy();
  record_runners();
  std::vector<double> pay(p_.bids.size(), 0.0);
  std::vector<int> winners;
  for (int b = 0; b < static_cast<int>(p_.bids.size()); ++b) {
    if (sol.alt_of_bid[b] >= 0) winners.push_back(b);
  }
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, static_cast<int>(std::max<std::size_t>(1, winners.size())));
  if (threads <= 1) {
    std::vector<Replica> scratch;
    for (int b : winners) pay[b] = critical_payment_of(sol, b, scratch);
    return pay;
  }
  // Each winner's replay reads the engine's tables and writes only its own state, so winners are
  // handed out one at a time to a pool (replays differ widely in length); every payment lands
  // in its own slot, so the result does not depend on the thread count.
  std::atomic<std::size_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(threads));
  const auto work = [&](std::size_t t) {
    try {
      std::vector<Replica> scratch;
      for (std::size_t i = next++; i < winners.size(); i = next++) {
        pay[winners[i]] = critical_payment_of(sol, winners[i], scratch);
      }
    } catch (...) {
      errors[t] = std::current_exception();
      next = winners.size();  // the others stop after their current winner
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, static_cast<std::size_t>(t));
  work(0);
  for (auto& th : pool) th.join();
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return pay;
}

double Engine::critical_payment_of(const Solution& sol, int b, std::vector<Replica>& scratch) {
  const auto every = static_cast<std::size_t>(checkpoint_every_);
  const int k = sol.alt_of_bid[b];
  const auto& a = p_.alternatives[k];
  int model = -1;
  if (b < static_cast<int>(sol.placements.size()) && !sol.placements[b].empty() &&
      !sol.placements[b][0].gpus.empty()) {
    model = p_.gpus[sol.placements[b][0].gpus[0]].model;
  }
  const double floor = model >= 0 ? reserve_cost(k, model) : 0.0;
  if (rank_[k] < 0) return a.value;  // never rankable (e.g. below every reserve): first price
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
  // Replay bookkeeping. The replay state equals the original greedy state except on "dirty"
  // nodes (where some decision differed, starting with the bid's own placement), wallets and
  // bids. A node-scoped item whose bid and wallet are clean chooses the best of its original
  // choice and the dirty nodes, so only those are searched (exact, see Packer::node_scoped).
  std::vector<std::uint8_t> node_dirty(p_.nodes.size(), 0), wallet_dirty(p_.wallets.size(), 0),
      bid_dirty(p_.bids.size(), 0);
  std::vector<int> dirty_nodes;   // sorted
  std::uint64_t dirty_pools = 0;  // pools served by some dirty node
  const auto mark_node = [&](int n) {
    if (node_dirty[n]) return;
    node_dirty[n] = 1;
    dirty_pools |= node_pools_[n];
    dirty_nodes.insert(std::lower_bound(dirty_nodes.begin(), dirty_nodes.end(), n), n);
  };
  const auto mark_replicas = [&](const std::vector<Replica>& reps) {
    for (const auto& r : reps) mark_node(r.node);
  };
  const auto mark_incumbent = [&](int i) {
    for (const auto& r : p_.incumbents[i].placements) mark_node(r.node);
  };
  const auto same_placement = [](const std::vector<Replica>& x, const std::vector<Replica>& y) {
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (x[i].node != y[i].node || x[i].gpus != y[i].gpus || x[i].profile != y[i].profile ||
          x[i].start != y[i].start || x[i].milli != y[i].milli || x[i].kind != y[i].kind) {
        return false;
      }
    }
    return true;
  };
  std::vector<int> only;
  const bool b_scoped = Packer::node_scoped(a);
  // The last placement found for the bid stays valid while nothing touches its nodes or its
  // wallet; then "it still fits" needs no search.
  std::vector<int> cached_nodes;  // sorted; empty: no valid cache
  double cached_cost = 0.0;
  // Witness scan (node-scoped bid, nothing preemptible, every model's reserve cost within
  // the interval): then "it wins at `low`" only asks whether some node holds it, and a node
  // that cannot hold it never can again (the replay only adds load). The witness is the first
  // node, in index order, found to hold it; it is checked again only after the replay touches
  // it, and the scan moves on past nodes that no longer hold it. Each node is checked about
  // once per winner instead of a cluster-wide search per touched witness.
  const bool witness_ok = b_scoped && !any_preemptible_;
  const int n_nodes = static_cast<int>(p_.nodes.size());
  int witness = -1;            // node under the scan (n_nodes: none holds the bid)
  bool witness_valid = false;  // it holds the bid and the replay has not touched it since
  std::vector<int> one_node(1);
  const auto touch = [&](int n) {
    if (n == witness) witness_valid = false;
    if (!cached_nodes.empty() && std::binary_search(cached_nodes.begin(), cached_nodes.end(), n)) {
      cached_nodes.clear();
    }
  };
  // Whether some node holds the bid now (witness scan; see above).
  const auto holds_somewhere = [&](double high) {
    if (witness_valid) return true;
    if (witness < 0) witness = 0;
    for (; witness < n_nodes; ++witness) {
      if ((node_pools_[witness] & alt_pools_[k]) == 0 || !may_host(s.real, witness, a)) continue;
      one_node[0] = witness;
      if (try_place(s, k, high, false, true, false, scratch, nullptr, false, &one_node)) {
        witness_valid = true;
        return true;
      }
    }
    return false;
  };
  // Least value (or +inf) with which the bid wins in the current state, given the interval.
  const auto least_winning = [&](double low, double high, bool exact) {
    if (!exact && witness_ok && max_reserve_[k] <= low) {
      // Every model's reserve cost is covered, so any free placement wins at `low`.
      if (!holds_somewhere(high)) return std::numeric_limits<double>::infinity();
      return s.wallet_spent[w] + low <= balance ? low : std::numeric_limits<double>::infinity();
    }
    if (!exact && !cached_nodes.empty() && cached_cost <= low &&
        s.wallet_spent[w] + low <= balance) {
      return low;
    }
    const auto attempt = [&](const std::vector<int>* restrict_to) {
      double cost = 0.0;
      if (!try_place(s, k, high, true, true, false, scratch, &cost, false, restrict_to)) {
        return std::numeric_limits<double>::infinity();
      }
      cached_nodes.clear();
      for (const auto& r : scratch) cached_nodes.push_back(r.node);
      std::sort(cached_nodes.begin(), cached_nodes.end());
      cached_cost = cost;
      const double v = std::max(low, cost);
      if (s.wallet_spent[w] + v > balance) return std::numeric_limits<double>::infinity();
      return v;
    };
    if (!exact && b_scoped && !dirty_nodes.empty()) {
      const double v = attempt(&dirty_nodes);
      if (v <= low) return v;  // it wins here; that is all the scan needs to know
    }
    return attempt(nullptr);
  };
  for (std::size_t pos = c * every; pos < order_.size(); ++pos) {
    const int j = order_[pos];
    const int bj = p_.alternatives[j].bid;
    const bool orig_won_here = greedy_rank_of_bid_[bj] == static_cast<int>(pos);
    if (bj == b) {
      if (orig_won_here) {  // the original run placed the bid here; the replay does not
        mark_replicas(greedy_.placements[b]);
        for (int i : greedy_evictions_[pos]) mark_incumbent(i);
        wallet_dirty[w] = 1;
      }
      continue;
    }
    if (pos >= scan_from) {
      const double low = score_[j] * size_factor;
      const double high = std::min(a.value, last_score * size_factor);
      if (high <= floor) {  // below the reserve cost the floor decides
        decided = true;
        break;
      }
      if (low < a.value) {
        const double v = least_winning(low, high, false);
        if (v > low) {  // it does not win all the way down this interval
          threshold = std::isfinite(v) && v <= high ? v : high;
          decided = true;
          break;
        }
      }
      last_score = std::min(last_score, score_[j]);
    }
    const int wj = p_.bids[bj];
    if (s.alt_of_bid[bj] >= 0) {
      if (orig_won_here) {  // won earlier in the replay, here in the original: they differ
        mark_replicas(greedy_.placements[bj]);
        for (int i : greedy_evictions_[pos]) mark_incumbent(i);
        wallet_dirty[wj] = 1;
        bid_dirty[bj] = 1;
      }
      continue;
    }
    const auto& aj = p_.alternatives[j];
    // The original run searched here (its bid had not won, its wallet covered it): that
    // search's outcome is known, and the replay reaches the same point with the same bid state.
    const bool searched = greedy_searched_[pos] != 0;
    if (searched && !orig_won_here && (alt_pools_[j] & dirty_pools) == 0) {
      continue;  // every node it could use is as in the original run, where nothing fitted
    }
    if (searched && orig_won_here && (alt_pools_[j] & dirty_pools) == 0 &&
        wallet_covers(s, j, aj.value)) {
      // Every node it could use is as in the original run, and so is everything its search
      // reads (the per-model counters of its pools included): it decides as it did there.
      for (int i : greedy_evictions_[pos]) {
        if (s.evicted[i]) continue;
        evict(s, i);
        for (const auto& r : p_.incumbents[i].placements) touch(r.node);
      }
      commit_win(s, j, greedy_.placements[bj]);
      for (const auto& r : greedy_.placements[bj]) touch(r.node);
      if (wj == w) cached_nodes.clear();
      continue;
    }
    // Exact only if the original choice itself is unchanged (a dirty original node may have
    // become worse than clean nodes that lost to it).
    bool fast = searched && Packer::node_scoped(aj);
    // The original choice's node is dirty: its search then picks the best of the dirty nodes
    // and the best clean node, which is the first clean runner-up of the original search
    // (clean nodes are as there and ranked the same). Without a clean runner-up the original
    // candidate may fit nowhere, and later candidates were never searched there: full search.
    bool via_runner = false;
    int runner = -1;
    if (fast && orig_won_here) {
      bool orig_clean = true;
      for (const auto& r : greedy_.placements[bj]) orig_clean = orig_clean && !node_dirty[r.node];
      if (!orig_clean) {
        const int count = runner_count_[pos];
        if (count < 0) {
          fast = false;
        } else {
          const int* list = runners_.data() + pos * Packer::kRunners;
          for (int i = 0; i < count && runner < 0; ++i) {
            if (!node_dirty[list[i]]) runner = list[i];
          }
          via_runner = true;
          if (runner < 0) fast = false;
        }
      }
    }
    const std::size_t log_before = s.evict_log.size();
    bool won = false;
    // The dirty nodes that may hold one of its replicas (the others take no part in a node-scoped
    // search: it is a minimum over per-node outcomes, and they have none).
    const auto hostable_dirty = [&]() {
      only.clear();
      for (int n : dirty_nodes) {
        if ((node_pools_[n] & alt_pools_[j]) != 0 && may_host(s.real, n, aj)) only.push_back(n);
      }
    };
    // A gang with locality any places its replicas one by one, each on the best node of the
    // whole model. If the original placement's nodes are clean, every clean node outside them
    // scores as in the original search. The original run took its nodes in an order o_1..o_r,
    // each the best of all nodes at its step; in the replay, the best clean node at any step is
    // the first o_i not yet taken (clean nodes are as they were at that step of the original,
    // when o_i beat them all, ties included), so a search over the dirty nodes and the
    // original ones chooses as the full search does, whether or not it returns the original
    // placement, and never fails (the original nodes alone hold the gang). Earlier models must
    // be hopeless (too little free capacity in the model), since a gang there could mix clean
    // and dirty nodes. If the original evicted, only a search that returns the original
    // placement is taken. Anything else falls back to the full search.
    bool gang_restricted = false;
    if (searched && orig_won_here && !fast && aj.locality == Locality::Any && aj.replicas > 1 &&
        wallet_covers(s, j, aj.value)) {
      const auto& orig = greedy_.placements[bj];
      bool ok = !orig.empty() && !orig[0].gpus.empty();
      for (const auto& r : orig) ok = ok && !node_dirty[r.node];
      const int model_o = ok ? p_.gpus[orig[0].gpus[0]].model : -1;
      for (const auto& cand : cands_[j]) {
        if (!ok || cand.model == model_o) break;
        if (aj.value + 1e-9 * std::max(1.0, aj.value) < cand.reserve_cost) continue;
        std::int64_t per = aj.gpus, have = s.real.model_free_whole[cand.model];
        if (aj.kind == UnitKind::Share) {
          per = aj.milli;
          have = s.real.model_free_milli[cand.model];
        } else if (aj.kind == UnitKind::Mig) {
          per = cand.profile >= 0 ? p_.models[cand.model].profiles[cand.profile].size : 0;
          have = s.real.model_free_slices[cand.model];
        }
        ok = have < per * aj.replicas;
      }
      if (ok) {
        hostable_dirty();
        for (const auto& r : orig) {
          if (!std::binary_search(only.begin(), only.end(), r.node)) {
            only.insert(std::lower_bound(only.begin(), only.end(), r.node), r.node);
          }
        }
        gang_restricted =
            try_place(s, j, aj.value, false, false, false, scratch, nullptr, true, &only) &&
            (greedy_evictions_[pos].empty() || same_placement(scratch, orig));
      }
    }
    if (gang_restricted) {
      commit_win(s, j, scratch);
      won = true;
    } else if (fast && via_runner) {
      hostable_dirty();
      only.insert(std::lower_bound(only.begin(), only.end(), runner), runner);
      won = try_place(s, j, aj.value, false, false, true, scratch, nullptr, true, &only);
    } else if (fast) {
      hostable_dirty();
      if (orig_won_here) {
        for (const auto& r : greedy_.placements[bj]) {
          if (!std::binary_search(only.begin(), only.end(), r.node)) {
            only.insert(std::lower_bound(only.begin(), only.end(), r.node), r.node);
          }
        }
      }
      // Free resources only: the eviction search minimises over all nodes, so a miss here
      // falls back to the full search when something could be evicted.
      if (!only.empty()) {
        won = try_place(s, j, aj.value, false, false, true, scratch, nullptr, true, &only);
      }
      if (!won && any_preemptible_) {
        won = try_place(s, j, aj.value, true, false, true, scratch);
      }
    } else {
      won = try_place(s, j, aj.value, true, false, true, scratch);
    }
    for (std::size_t e = log_before; e < s.evict_log.size(); ++e) {
      const int i = s.evict_log[e];
      if (!s.evicted[i]) continue;
      mark_incumbent(i);
      for (const auto& r : p_.incumbents[i].placements) touch(r.node);
    }
    if (won) {
      for (const auto& r : scratch) touch(r.node);
      if (wj == w) cached_nodes.clear();
    }
    if (won != orig_won_here || (won && !same_placement(scratch, greedy_.placements[bj]))) {
      if (won) mark_replicas(scratch);
      if (orig_won_here) {
        mark_replicas(greedy_.placements[bj]);
        for (int i : greedy_evictions_[pos]) mark_incumbent(i);
      }
      wallet_dirty[wj] = 1;
      bid_dirty[bj] = 1;
    }
  }
  // After every other item: the bid sits last, down to zero.
  if (!decided) {
    const double high = std::min(a.value, last_score * size_factor);
    const double v = least_winning(0.0, high, true);
    threshold = std::isfinite(v) && v <= high ? v : high;
  }
  return std::min(a.value, std::max(floor, threshold));
}

}  // namespace gpualloc
