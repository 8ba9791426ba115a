#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <iterator>
#include <limits>
#include <string>
#include <thread>

#include "gpualloc/auction.hpp"

namespace gpualloc {

void Engine::prepare_critical(const Solution& sol) {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  if (packer_.node_level()) {  // the replay's shortcuts assume the default model order
    throw InputError("workload", "critical payments are not supported with a workload hint");
  }
  greedy();
  record_runners();
}

std::vector<double> Engine::critical_payments(const Solution& sol, int threads) {
  if (threads < 0) throw InputError("threads", "must be >= 0 (0: one per hardware thread)");
  prepare_critical(sol);
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

std::vector<double> Engine::critical_payments_of(const Solution& sol, const std::vector<int>& bids,
                                                 double time_budget_s) {
  if (!(time_budget_s >= 0.0)) throw InputError("time_budget", "must be a number >= 0");
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  for (std::size_t i = 0; i < bids.size(); ++i) {
    const int b = bids[i];
    if (b < 0 || b >= static_cast<int>(p_.bids.size()) || sol.alt_of_bid[b] < 0) {
      throw InputError("bids[" + std::to_string(i) + "]", "is not a winner of the allocation");
    }
  }
  prepare_critical(sol);
  std::vector<double> pay(bids.size(), std::numeric_limits<double>::quiet_NaN());
  const auto start = std::chrono::steady_clock::now();
  std::vector<Replica> scratch;
  for (std::size_t i = 0; i < bids.size(); ++i) {
    const std::chrono::duration<double> spent = std::chrono::steady_clock::now() - start;
    if (i > 0 && spent.count() >= time_budget_s) break;
    pay[i] = critical_payment_of(sol, bids[i], scratch);
  }
  return pay;
}

namespace {

// Inserts n into the sorted vector v unless it is there already.
void insert_sorted(std::vector<int>& v, int n) {
  if (!std::binary_search(v.begin(), v.end(), n))
    v.insert(std::lower_bound(v.begin(), v.end(), n), n);
}

// v becomes the sorted union of v and the sorted `add`.
void union_sorted(std::vector<int>& v, const std::vector<int>& add, std::vector<int>& tmp) {
  tmp.clear();
  std::set_union(v.begin(), v.end(), add.begin(), add.end(), std::back_inserter(tmp));
  v.swap(tmp);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

// One winner's replay of the greedy run without its bid. Every field is the replay's own (the
// engine's tables are only read), so replays of different winners may run on different threads.
class Engine::PaymentReplay {
 public:
  // `b` must be rankable; `scratch` is the calling thread's placement buffer.
  PaymentReplay(Engine& e, const Solution& sol, int b, std::vector<Replica>& scratch);
  // The critical payment.
  double run();

 private:
  // The item at one position of the order, as the replay meets it.
  struct Item {
    std::size_t pos;
    int j;   // global alternative index
    int bj;  // its bid
    int wj;  // its wallet
    const AlternativeData* aj;
    bool orig_won_here;  // the original run placed bj with this item
    bool searched;       // the original run searched a placement here
  };

  void mark_node(int n);
  // Marks the rack and zone of the newly dirty node n (see place_in_groups).
  void mark_groups(int n);
  // The nodes of the dirty racks (zones), sorted, built on demand.
  const std::vector<int>& dirty_group_nodes(Locality loc);
  void mark_replicas(const std::vector<Replica>& reps);
  void mark_incumbent(int i);
  // The original run's win at `pos` (bid bj): its nodes, evictions and wallet differ now.
  void mark_original_win(std::size_t pos, int bj);
  void touch(int n);
  bool holds_somewhere(double high);
  double attempt(double low, double high, const std::vector<int>* restrict_to);
  double least_winning(double low, double high, bool exact);
  // The scan at item j (position >= its own rank): true when the critical value is decided.
  bool decides_at(int j);
  // One step of the replay; true when the scan is decided.
  bool step(std::size_t pos);
  void replay_item(const Item& it);
  void repeat_original(const Item& it);
  bool runner_keeps_fast(const Item& it, bool& via_runner, int& runner) const;
  void hostable_dirty(const Item& it);
  bool gang_models_hopeless(const Item& it, const std::vector<Replica>& orig) const;
  bool place_gang_restricted(const Item& it);
  bool search_fast(const Item& it, bool via_runner, int runner);
  bool place_in_groups(const Item& it, bool& won);
  void record_outcome(const Item& it, bool won, std::size_t log_before);

  Engine& e_;
  const ProblemData& p_;
  std::vector<Replica>& scratch_;
  const int b_;
  const int k_;
  const AlternativeData& a_;
  double floor_ = 0.0;
  std::size_t scan_from_ = 0;
  std::size_t first_ = 0;  // first position replayed (a checkpoint's)
  Solution s_;
  double size_factor_ = 1.0;
  int w_ = -1;
  double balance_ = 0.0;
  double threshold_ = 0.0;
  double last_score_ = 0.0;
  bool decided_ = false;
  // Replay bookkeeping. The replay state equals the original greedy state except on "dirty"
  // nodes (where some decision differed, starting with the bid's own placement), wallets and
  // bids. A node-scoped item whose bid and wallet are clean chooses the best of its original
  // choice and the dirty nodes, so only those are searched (exact, see Packer::node_scoped).
  std::vector<std::uint8_t> node_dirty_, wallet_dirty_, bid_dirty_;
  std::vector<int> dirty_nodes_;   // sorted
  std::uint64_t dirty_pools_ = 0;  // pools served by some dirty node
  std::vector<int> only_, merge_tmp_;
  // Per locality (0: rack, 1: zone): which racks (zones) hold a dirty node, how many nodes they
  // hold (a node without a rack (zone) is a group of its own), and their nodes (sorted, built
  // on demand; `stale` once the dirty set changed): see place_in_groups.
  struct DirtyGroups {
    std::vector<std::uint8_t> dirty;
    std::size_t nodes = 0;
    std::vector<int> list;
    bool stale = true;
  };
  std::array<DirtyGroups, 2> groups_;
  bool b_scoped_ = false;
  // The last placement found for the bid stays valid while nothing touches its nodes or its
  // wallet; then "it still fits" needs no search.
  std::vector<int> cached_nodes_;  // sorted; empty: no valid cache
  double cached_cost_ = 0.0;
  // Witness scan (node-scoped bid, nothing preemptible, every model's reserve cost within
  // the interval): then "it wins at `low`" only asks whether some node holds it, and a node
  // that cannot hold it never can again (the replay only adds load). The witness is the first
  // node, in index order, found to hold it; it is checked again only after the replay touches
  // it, and the scan moves on past nodes that no longer hold it. Each node is checked about
  // once per winner instead of a cluster-wide search per touched witness.
  bool witness_ok_ = false;
  int n_nodes_ = 0;
  int witness_ = -1;            // node under the scan (n_nodes_: none holds the bid)
  bool witness_valid_ = false;  // it holds the bid and the replay has not touched it since
  std::vector<int> one_node_;
};

Engine::PaymentReplay::PaymentReplay(Engine& e, const Solution& sol, int b,
                                     std::vector<Replica>& scratch)
    : e_(e), p_(e.p_), scratch_(scratch), b_(b), k_(sol.alt_of_bid[b]), a_(e.p_.alternatives[k_]) {
  const auto every = static_cast<std::size_t>(e_.checkpoint_every_);
  int model = -1;
  if (b < static_cast<int>(sol.placements.size()) && !sol.placements[b].empty() &&
      !sol.placements[b][0].gpus.empty()) {
    model = p_.gpus[sol.placements[b][0].gpus[0]].model;
  }
  floor_ = model >= 0 ? e_.reserve_cost(k_, model) : 0.0;
  // Positions above the item's own rank would need a value above its bid, so the scan starts
  // at its rank; a winner greedy did not pick there gets a threshold of its own value.
  scan_from_ = static_cast<std::size_t>(e_.rank_[k_]);
  std::size_t start = scan_from_;
  if (e_.greedy_rank_of_bid_[b] >= 0) {
    start = std::min(start, static_cast<std::size_t>(e_.greedy_rank_of_bid_[b]));
  }
  const std::size_t c = std::min(start / every, e_.checkpoints_.size() - 1);
  first_ = c * every;
  s_ = e_.checkpoints_[c];
  size_factor_ = std::pow(e_.size_[k_], e_.opt_.alpha);
  w_ = p_.bids[b];
  balance_ = p_.wallets[w_] + 1e-9 * std::max(1.0, p_.wallets[w_]);
  last_score_ = e_.score_[k_];
  node_dirty_.assign(p_.nodes.size(), 0);
  wallet_dirty_.assign(p_.wallets.size(), 0);
  bid_dirty_.assign(p_.bids.size(), 0);
  int racks = 0, zones = 0;
  for (const auto& nd : p_.nodes) {
    racks = std::max(racks, nd.rack + 1);
    zones = std::max(zones, nd.zone + 1);
  }
  groups_[0].dirty.assign(static_cast<std::size_t>(racks), 0);
  groups_[1].dirty.assign(static_cast<std::size_t>(zones), 0);
  b_scoped_ = Packer::node_scoped(a_);
  witness_ok_ = b_scoped_ && !e_.any_preemptible_;
  n_nodes_ = static_cast<int>(p_.nodes.size());
  one_node_.resize(1);
}

void Engine::PaymentReplay::mark_node(int n) {
  if (node_dirty_[n]) return;
  node_dirty_[n] = 1;
  dirty_pools_ |= e_.node_pools_[n];
  dirty_nodes_.insert(std::lower_bound(dirty_nodes_.begin(), dirty_nodes_.end(), n), n);
  mark_groups(n);
}

void Engine::PaymentReplay::mark_groups(int n) {
  for (int k = 0; k < 2; ++k) {
    auto& g = groups_[k];
    const int id = k == 0 ? p_.nodes[n].rack : p_.nodes[n].zone;
    g.stale = true;
    if (id < 0) {
      ++g.nodes;
    } else if (!g.dirty[id]) {
      g.dirty[id] = 1;
      g.nodes += e_.packer_.domain_nodes(k == 0 ? Locality::Rack : Locality::Zone, n).size();
    }
  }
}

const std::vector<int>& Engine::PaymentReplay::dirty_group_nodes(Locality loc) {
  auto& g = groups_[loc == Locality::Rack ? 0 : 1];
  if (!g.stale) return g.list;
  g.list.clear();
  for (int n : dirty_nodes_) {
    const auto& members = e_.packer_.domain_nodes(loc, n);
    if (members.empty()) {
      g.list.push_back(n);
    } else if (members.front() == n || !node_dirty_[members.front()]) {
      // Each dirty group once: by its first dirty member (members and dirty_nodes_ are sorted).
      const auto first =
          std::find_if(members.begin(), members.end(), [&](int m) { return node_dirty_[m] != 0; });
      if (*first == n) g.list.insert(g.list.end(), members.begin(), members.end());
    }
  }
  std::sort(g.list.begin(), g.list.end());
  g.stale = false;
  return g.list;
}

void Engine::PaymentReplay::mark_replicas(const std::vector<Replica>& reps) {
  for (const auto& r : reps) mark_node(r.node);
}

void Engine::PaymentReplay::mark_incumbent(int i) {
  for (const auto& r : p_.incumbents[i].placements) mark_node(r.node);
}

void Engine::PaymentReplay::mark_original_win(std::size_t pos, int bj) {
  mark_replicas(e_.greedy_.placements[bj]);
  for (int i : e_.greedy_evictions_[pos]) mark_incumbent(i);
  wallet_dirty_[p_.bids[bj]] = 1;
}

void Engine::PaymentReplay::touch(int n) {
  if (n == witness_) witness_valid_ = false;
  if (!cached_nodes_.empty() && std::binary_search(cached_nodes_.begin(), cached_nodes_.end(), n)) {
    cached_nodes_.clear();
  }
}

// Whether some node holds the bid now (witness scan; see above).
bool Engine::PaymentReplay::holds_somewhere(double high) {
  if (witness_valid_) return true;
  if (witness_ < 0) witness_ = 0;
  for (; witness_ < n_nodes_; ++witness_) {
    if ((e_.node_pools_[witness_] & e_.alt_pools_[k_]) == 0 ||
        !e_.may_host(s_.real, witness_, a_)) {
      continue;
    }
    one_node_[0] = witness_;
    if (e_.try_place(s_, k_, high, false, true, false, scratch_, nullptr, false, &one_node_)) {
      witness_valid_ = true;
      return true;
    }
  }
  return false;
}

// Least value (or +inf) with which the bid wins in the current state, at least `low` (see
// Engine::least_value; `restrict_to` non-null: free resources on those nodes only). A free
// placement found becomes the cached placement.
double Engine::PaymentReplay::attempt(double low, double high,
                                      const std::vector<int>* restrict_to) {
  bool evicting = false;
  const double cost =
      e_.least_value(s_, k_, high, low, restrict_to != nullptr, restrict_to, scratch_, evicting);
  if (!std::isfinite(cost)) return kInf;
  if (!evicting) {
    // Only a free placement is kept: whether an eviction pays depends on the penalties of
    // every node (the search minimises them over the cluster), not only on its own nodes.
    cached_nodes_.clear();
    for (const auto& r : scratch_) cached_nodes_.push_back(r.node);
    std::sort(cached_nodes_.begin(), cached_nodes_.end());
    cached_cost_ = cost;
  }
  const double v = std::max(low, cost);
  if (s_.wallet_spent[w_] + v > balance_) return kInf;
  return v;
}

// Least value (or +inf) with which the bid wins in the current state, given the interval.
double Engine::PaymentReplay::least_winning(double low, double high, bool exact) {
  if (!e_.payment_shortcuts_) return attempt(low, high, nullptr);
  if (!exact && witness_ok_ && e_.max_reserve_[k_] <= low) {
    // Every model's reserve cost is covered, so any free placement wins at `low`.
    if (!holds_somewhere(high)) return kInf;
    return s_.wallet_spent[w_] + low <= balance_ ? low : kInf;
  }
  if (!exact && !cached_nodes_.empty() && cached_cost_ <= low &&
      s_.wallet_spent[w_] + low <= balance_) {
    return low;
  }
  if (!exact && b_scoped_ && !dirty_nodes_.empty()) {
    const double v = attempt(low, high, &dirty_nodes_);
    if (v <= low) return v;  // it wins here free; that is all the scan needs to know
  }
  return attempt(low, high, nullptr);
}

// Scan the positions the bid would take at lower values. Between the previous item and
// item j (values in (score_j, last_score] x size^alpha) it is processed in the state before
// j; it wins there with any value that fits, pays for its evictions and fits its wallet.
// The first position where that fails sets the critical value.
bool Engine::PaymentReplay::decides_at(int j) {
  const double low = e_.score_[j] * size_factor_;
  const double high = std::min(a_.value, last_score_ * size_factor_);
  if (high <= floor_) {  // below the reserve cost the floor decides
    decided_ = true;
    return true;
  }
  if (low < a_.value) {
    const double v = least_winning(low, high, false);
    if (v > low) {  // it does not win all the way down this interval
      threshold_ = std::isfinite(v) && v <= high ? v : high;
      decided_ = true;
      return true;
    }
  }
  last_score_ = std::min(last_score_, e_.score_[j]);
  return false;
}

double Engine::PaymentReplay::run() {
  for (std::size_t pos = first_; pos < e_.order_.size(); ++pos) {
    if (step(pos)) break;
  }
  // After every other item: the bid sits last, down to zero.
  if (!decided_) {
    const double high = std::min(a_.value, last_score_ * size_factor_);
    const double v = least_winning(0.0, high, true);
    threshold_ = std::isfinite(v) && v <= high ? v : high;
  }
  return std::min(a_.value, std::max(floor_, threshold_));
}

bool Engine::PaymentReplay::step(std::size_t pos) {
  const int j = e_.order_[pos];
  const int bj = p_.alternatives[j].bid;
  const bool orig_won_here = e_.greedy_rank_of_bid_[bj] == static_cast<int>(pos);
  if (bj == b_) {
    // The original run placed the bid here; the replay does not.
    if (orig_won_here) mark_original_win(pos, b_);
    return false;
  }
  // The agent's own losing bids are left out of its winners' prices. A bid that loses changes
  // nothing in the greedy run, so the run without them is this very run (checkpoints, records
  // and all), and skipping them replays the round without them.
  if (e_.own_loser(b_, bj)) return false;
  if (pos >= scan_from_ && decides_at(j)) return true;
  if (s_.alt_of_bid[bj] >= 0) {
    if (orig_won_here) {  // won earlier in the replay, here in the original: they differ
      mark_original_win(pos, bj);
      bid_dirty_[bj] = 1;
    }
    return false;
  }
  // The original run searched here (its bid had not won, its wallet covered it): that
  // search's outcome is known, and the replay reaches the same point with the same bid state.
  const Item it{
      pos, j, bj, p_.bids[bj], &p_.alternatives[j], orig_won_here, e_.greedy_searched_[pos] != 0};
  replay_item(it);
  return false;
}

// Every node it could use is as in the original run, and so is everything its search reads
// (the per-model counters of its pools included): it decides as it did there.
void Engine::PaymentReplay::repeat_original(const Item& it) {
  for (int i : e_.greedy_evictions_[it.pos]) {
    if (s_.evicted[i]) continue;
    e_.evict(s_, i);
    for (const auto& r : p_.incumbents[i].placements) touch(r.node);
  }
  e_.commit_win(s_, it.j, e_.greedy_.placements[it.bj]);
  for (const auto& r : e_.greedy_.placements[it.bj]) touch(r.node);
  if (it.wj == w_) cached_nodes_.clear();
}

// The original choice's node is dirty: its search then picks the best of the dirty nodes
// and the best clean node, which is the first clean runner-up of the original search
// (clean nodes are as there and ranked the same). Without a clean runner-up the original
// candidate may fit nowhere, and later candidates were never searched there: full search.
// Returns whether the node-scoped search stays exact.
bool Engine::PaymentReplay::runner_keeps_fast(const Item& it, bool& via_runner, int& runner) const {
  bool orig_clean = true;
  for (const auto& r : e_.greedy_.placements[it.bj])
    orig_clean = orig_clean && !node_dirty_[r.node];
  if (orig_clean) return true;
  const int count = e_.runner_count_[it.pos];
  if (count < 0) return false;
  const int* list = e_.runners_.data() + it.pos * Packer::kRunners;
  for (int i = 0; i < count && runner < 0; ++i) {
    if (!node_dirty_[list[i]]) runner = list[i];
  }
  via_runner = true;
  return runner >= 0;
}

// The dirty nodes that may hold one of its replicas (the others take no part in a node-scoped
// search: it is a minimum over per-node outcomes, and they have none).
void Engine::PaymentReplay::hostable_dirty(const Item& it) {
  only_.clear();
  for (int n : dirty_nodes_) {
    if ((e_.node_pools_[n] & e_.alt_pools_[it.j]) != 0 && e_.may_host(s_.real, n, *it.aj)) {
      only_.push_back(n);
    }
  }
}

// Whether the original placement's nodes are clean and every model before its own lacks the
// free capacity for the gang (see place_gang_restricted).
bool Engine::PaymentReplay::gang_models_hopeless(const Item& it,
                                                 const std::vector<Replica>& orig) const {
  const auto& aj = *it.aj;
  bool ok = !orig.empty() && !orig[0].gpus.empty();
  for (const auto& r : orig) ok = ok && !node_dirty_[r.node];
  const int model_o = ok ? p_.gpus[orig[0].gpus[0]].model : -1;
  for (const auto& cand : e_.cands_[it.j]) {
    if (!ok || cand.model == model_o) break;
    if (aj.value + 1e-9 * std::max(1.0, aj.value) < cand.reserve_cost) continue;
    std::int64_t per = aj.gpus, have = s_.real.model_free_whole[cand.model];
    if (aj.kind == UnitKind::Share) {
      per = aj.milli;
      have = s_.real.model_free_milli[cand.model];
    } else if (aj.kind == UnitKind::Mig) {
      per = cand.profile >= 0 ? p_.models[cand.model].profiles[cand.profile].size : 0;
      have = s_.real.model_free_slices[cand.model];
    }
    ok = have < per * aj.replicas;
  }
  return ok;
}

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
bool Engine::PaymentReplay::place_gang_restricted(const Item& it) {
  const auto& orig = e_.greedy_.placements[it.bj];
  if (!gang_models_hopeless(it, orig)) return false;
  hostable_dirty(it);
  for (const auto& r : orig) insert_sorted(only_, r.node);
  return e_.try_place(s_, it.j, it.aj->value, false, false, false, scratch_, nullptr, true,
                      &only_) &&
         (e_.greedy_evictions_[it.pos].empty() || scratch_ == orig);
}

bool Engine::PaymentReplay::search_fast(const Item& it, bool via_runner, int runner) {
  const double value = it.aj->value;
  hostable_dirty(it);
  if (via_runner) {
    only_.insert(std::lower_bound(only_.begin(), only_.end(), runner), runner);
    return e_.try_place(s_, it.j, value, false, false, true, scratch_, nullptr, true, &only_);
  }
  if (it.orig_won_here) {
    for (const auto& r : e_.greedy_.placements[it.bj]) insert_sorted(only_, r.node);
  }
  // Free resources only: the eviction search minimises over all nodes, so a miss here
  // falls back to the full search when something could be evicted.
  bool won = false;
  if (!only_.empty()) {
    won = e_.try_place(s_, it.j, value, false, false, true, scratch_, nullptr, true, &only_);
  }
  if (!won && e_.any_preemptible_) {
    won = e_.try_place(s_, it.j, value, true, false, true, scratch_);
  }
  return won;
}

// A gang with locality rack or zone takes, for the first model (in candidate order) where any
// group holds it, the first group in (free capacity, group order) that holds it; a group's
// capacity and outcome depend on its own nodes only. A group without a dirty node (clean) is
// as in the original run. There, every clean group failed on the models before the one used
// and on the chosen model every group ordered before the chosen one failed; if the item did
// not win (or won only by evicting) every group failed the free search. So, when the chosen
// group is clean (or nothing was chosen), the free search over the dirty groups plus the chosen
// one, whole (so that capacities and ties are as in the full search; restricted groups keep
// their order), returns what the full free search returns. A miss there falls back to the
// full search when something could be evicted. Returns false (full search) when the chosen
// group is dirty, or on a large cluster (64 nodes or more) when the dirty groups hold a quarter
// of its nodes or more (then the full search costs about as much; small clusters keep the
// restricted search, cheap either way, so that the plain-replay tests exercise it).
bool Engine::PaymentReplay::place_in_groups(const Item& it, bool& won) {
  const Locality loc = it.aj->locality;
  const auto& groups = groups_[loc == Locality::Rack ? 0 : 1];
  if (p_.nodes.size() >= 64 && groups.nodes * 4 >= p_.nodes.size()) return false;
  const auto& dirty = groups.dirty;
  const std::vector<int>* restrict_to = &dirty_group_nodes(loc);
  if (it.orig_won_here) {
    only_ = *restrict_to;
    for (const auto& r : e_.greedy_.placements[it.bj]) {
      const int id = loc == Locality::Rack ? p_.nodes[r.node].rack : p_.nodes[r.node].zone;
      if (id < 0) {
        if (node_dirty_[r.node]) return false;
        insert_sorted(only_, r.node);
      } else {
        if (dirty[id]) return false;
        const auto& members = e_.packer_.domain_nodes(loc, r.node);
        if (!std::binary_search(only_.begin(), only_.end(), members.front())) {
          union_sorted(only_, members, merge_tmp_);
        }
      }
    }
    restrict_to = &only_;
  }
  won = false;
  if (!restrict_to->empty()) {
    won = e_.try_place(s_, it.j, it.aj->value, false, false, true, scratch_, nullptr, true,
                       restrict_to);
  }
  if (!won && e_.any_preemptible_) {
    won = e_.try_place(s_, it.j, it.aj->value, true, false, true, scratch_);
  }
  return true;
}

void Engine::PaymentReplay::replay_item(const Item& it) {
  const auto& aj = *it.aj;
  if (!e_.payment_shortcuts_) {  // plain replay (tests): the full search, as greedy() does
    const std::size_t log_before = s_.evict_log.size();
    const bool won = e_.try_place(s_, it.j, aj.value, true, false, true, scratch_);
    record_outcome(it, won, log_before);
    return;
  }
  const bool pools_clean = (e_.alt_pools_[it.j] & dirty_pools_) == 0;
  if (it.searched && !it.orig_won_here && pools_clean) {
    return;  // every node it could use is as in the original run, where nothing fitted
  }
  if (it.searched && it.orig_won_here && pools_clean && e_.wallet_covers(s_, it.j, aj.value)) {
    repeat_original(it);
    return;
  }
  // Exact only if the original choice itself is unchanged (a dirty original node may have
  // become worse than clean nodes that lost to it).
  bool fast = it.searched && Packer::node_scoped(aj);
  bool via_runner = false;
  int runner = -1;
  if (fast && it.orig_won_here) fast = runner_keeps_fast(it, via_runner, runner);
  const std::size_t log_before = s_.evict_log.size();
  bool won = false;
  if (it.searched && (aj.locality == Locality::Rack || aj.locality == Locality::Zone) &&
      place_in_groups(it, won)) {
    record_outcome(it, won, log_before);
    return;
  }
  if (it.searched && it.orig_won_here && !fast && aj.locality == Locality::Any && aj.replicas > 1 &&
      e_.wallet_covers(s_, it.j, aj.value) && place_gang_restricted(it)) {
    e_.commit_win(s_, it.j, scratch_);
    won = true;
  } else if (fast) {
    won = search_fast(it, via_runner, runner);
  } else {
    won = e_.try_place(s_, it.j, aj.value, true, false, true, scratch_);
  }
  record_outcome(it, won, log_before);
}

void Engine::PaymentReplay::record_outcome(const Item& it, bool won, std::size_t log_before) {
  for (std::size_t e = log_before; e < s_.evict_log.size(); ++e) {
    const int i = s_.evict_log[e];
    if (!s_.evicted[i]) continue;
    mark_incumbent(i);
    for (const auto& r : p_.incumbents[i].placements) touch(r.node);
  }
  if (won) {
    for (const auto& r : scratch_) touch(r.node);
    if (it.wj == w_) cached_nodes_.clear();
  }
  const auto& orig = e_.greedy_.placements[it.bj];
  if (won != it.orig_won_here || (won && scratch_ != orig)) {
    if (won) mark_replicas(scratch_);
    if (it.orig_won_here) {
      mark_replicas(orig);
      for (int i : e_.greedy_evictions_[it.pos]) mark_incumbent(i);
    }
    wallet_dirty_[it.wj] = 1;
    bid_dirty_[it.bj] = 1;
  }
}

double Engine::critical_payment_of(const Solution& sol, int b, std::vector<Replica>& scratch) {
  const int k = sol.alt_of_bid[b];
  if (rank_[k] < 0) return p_.alternatives[k].value;  // never rankable: first price
  return PaymentReplay(*this, sol, b, scratch).run();
}

}  // namespace gpualloc
