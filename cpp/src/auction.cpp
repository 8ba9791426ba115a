#include "gpualloc/auction.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace gpualloc {
namespace {

constexpr double kEps = 1e-9;

}  // namespace

const char* loss_reason_name(LossReason r) {
  switch (r) {
    case LossReason::Outbid:
      return "outbid";
    case LossReason::DoesNotFit:
      return "does_not_fit";
    case LossReason::OverBudget:
      return "over_budget";
    case LossReason::BelowReserve:
      return "below_reserve";
  }
  return "outbid";
}

namespace {
void check_options(const EngineOptions& o) {
  if (!std::isfinite(o.alpha) || o.alpha < 0 || o.alpha > 4) {
    throw InputError("alpha", "must be in [0, 4]");
  }
  if (!std::isfinite(o.fragment_scale) || o.fragment_scale < 0) {
    throw InputError("fragment_scale", "must be finite and >= 0");
  }
  if (!std::isfinite(o.reserve_weight) || o.reserve_weight < 0 || o.reserve_weight > 100) {
    throw InputError("reserve_weight", "must be in [0, 100]");
  }
}
}  // namespace

Engine::Engine(ProblemData problem, EngineOptions options)
    : p_((problem.validate(), std::move(problem))),
      opt_((check_options(options), std::move(options))),
      packer_(p_, opt_.workload.empty() ? nullptr : &opt_.workload, opt_.fragment_scale,
              &opt_.node_order, opt_.packing, &opt_.pattern_values, opt_.reserve_weight) {
  index_bids();
  rank_alternatives();
  index_pools();
  index_incumbents();
  checkpoint_every_ = std::max(32, static_cast<int>(std::sqrt(static_cast<double>(order_.size()))));
}

void Engine::index_bids() {
  const int n_bids = static_cast<int>(p_.bids.size());
  const int n_alts = static_cast<int>(p_.alternatives.size());
  bid_first_.assign(static_cast<std::size_t>(n_bids) + 1, n_alts);
  for (int k = n_alts - 1; k >= 0; --k) bid_first_[p_.alternatives[k].bid] = k;
  for (int b = n_bids - 1; b >= 0; --b) bid_first_[b] = std::min(bid_first_[b], bid_first_[b + 1]);
  for (int b = 0; b < n_bids; ++b) {
    if (bid_first_[b] == bid_first_[b + 1]) {
      throw InputError("bids[" + std::to_string(b) + "].alternatives",
                       "a bid needs an alternative");
    }
  }
}

void Engine::rank_alternatives() {
  const int n_alts = static_cast<int>(p_.alternatives.size());
  // Which (model, kind) pairs have GPUs at all.
  std::vector<std::array<bool, 3>> has(p_.models.size(), {false, false, false});
  for (const auto& g : p_.gpus) {
    for (int kd = 0; kd < 3; ++kd) {
      if (serves(g.mode, static_cast<UnitKind>(kd))) has[g.model][kd] = true;
    }
  }
  cands_.resize(n_alts);
  size_.assign(n_alts, 1.0);
  score_.assign(n_alts, 0.0);
  for (int k = 0; k < n_alts; ++k) find_candidates(k, has);
  max_reserve_.assign(n_alts, 0.0);
  for (int k = 0; k < n_alts; ++k) {
    for (const auto& c : cands_[k]) max_reserve_[k] = std::max(max_reserve_[k], c.reserve_cost);
  }
  for (int k = 0; k < n_alts; ++k) {
    if (!cands_[k].empty()) order_.push_back(k);
  }
  std::stable_sort(order_.begin(), order_.end(), [&](int x, int y) {
    if (score_[x] != score_[y]) return score_[x] > score_[y];
    return x < y;
  });
  rank_.assign(n_alts, -1);
  for (std::size_t i = 0; i < order_.size(); ++i) rank_[order_[i]] = static_cast<int>(i);
}

void Engine::find_candidates(int k, const std::vector<std::array<bool, 3>>& has) {
  const auto& a = p_.alternatives[k];
  double min_eq = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < a.models.size(); ++i) {
    const int m = a.models[i];
    const int prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
    if (a.kind == UnitKind::Mig && prof < 0) continue;
    if (!has[m][static_cast<int>(a.kind)]) continue;
    if (p_.models[m].memory_gb + kEps < a.min_gpu_memory_gb) continue;
    const double eq = replica_equivalent(p_, a, m, prof) * a.replicas;
    if (a.value + kEps * std::max(1.0, a.value) < p_.models[m].reserve * eq) continue;
    cands_[k].push_back({m, prof, p_.models[m].reserve * eq});
    min_eq = std::min(min_eq, eq);
  }
  std::sort(cands_[k].begin(), cands_[k].end(), [&](const Candidate& x, const Candidate& y) {
    if (p_.models[x.model].memory_gb != p_.models[y.model].memory_gb) {
      return p_.models[x.model].memory_gb < p_.models[y.model].memory_gb;
    }
    return x.model < y.model;
  });
  if (std::isfinite(min_eq) && min_eq > 0) size_[k] = min_eq;
  score_[k] = a.value / std::pow(size_[k], opt_.alpha);
}

void Engine::index_pools() {
  const int n_alts = static_cast<int>(p_.alternatives.size());
  const bool pools_fit = p_.models.size() * 3 <= 64;
  const auto pool_bit = [](int model, int kind) {
    return std::uint64_t{1} << (static_cast<unsigned>(model) * 3u + static_cast<unsigned>(kind));
  };
  node_pools_.assign(p_.nodes.size(), pools_fit ? 0 : ~std::uint64_t{0});
  alt_pools_.assign(n_alts, pools_fit ? 0 : ~std::uint64_t{0});
  if (!pools_fit) return;
  for (const auto& g : p_.gpus) {
    for (int kd = 0; kd < 3; ++kd) {
      if (serves(g.mode, static_cast<UnitKind>(kd))) node_pools_[g.node] |= pool_bit(g.model, kd);
    }
  }
  for (int k = 0; k < n_alts; ++k) {
    for (const auto& c : cands_[k]) {
      alt_pools_[k] |= pool_bit(c.model, static_cast<int>(p_.alternatives[k].kind));
    }
  }
}

void Engine::index_incumbents() {
  gpu_incs_.resize(p_.gpus.size());
  node_incs_.resize(p_.nodes.size());
  for (std::size_t i = 0; i < p_.incumbents.size(); ++i) {
    const auto& inc = p_.incumbents[i];
    if (inc.preemptible) any_preemptible_ = true;
    for (const auto& r : inc.placements) {
      for (int g : r.gpus) {
        auto& v = gpu_incs_[g];
        if (v.empty() || v.back() != static_cast<int>(i)) v.push_back(static_cast<int>(i));
      }
      auto& v = node_incs_[r.node];
      if (v.empty() || v.back() != static_cast<int>(i)) v.push_back(static_cast<int>(i));
    }
  }
  // Incumbents must be legal together with the outside usage.
  State s = State::outside_only(p_);
  for (std::size_t i = 0; i < p_.incumbents.size(); ++i) {
    const auto& inc = p_.incumbents[i];
    for (std::size_t j = 0; j < inc.placements.size(); ++j) {
      const auto& r = inc.placements[j];
      if (!replica_fits(p_, s, r, inc.cpu_milli, inc.memory_mib)) {
        throw InputError(
            "incumbents[" + std::to_string(i) + "].placements[" + std::to_string(j) + "]",
            "overlaps other usage, exceeds the node or is illegal on its GPU");
      }
      apply_replica(p_, s, r, inc.cpu_milli, inc.memory_mib, +1);
    }
  }
}

double Engine::reserve_cost(int alt, int model) const {
  const auto& a = p_.alternatives[alt];
  int prof = -1;
  for (std::size_t i = 0; i < a.models.size(); ++i) {
    if (a.models[i] == model) prof = a.kind == UnitKind::Mig ? a.profiles[i] : -1;
  }
  if (model < 0) return 0.0;
  return p_.models[model].reserve * replica_equivalent(p_, a, model, prof) * a.replicas;
}

Solution Engine::initial() const {
  Solution sol;
  sol.alt_of_bid.assign(p_.bids.size(), -1);
  sol.placements.resize(p_.bids.size());
  sol.evicted.assign(p_.incumbents.size(), 0);
  sol.real = State::outside_only(p_);
  sol.pot = sol.real;
  sol.penalty.assign(p_.gpus.size(), 0.0);
  sol.wallet_spent.assign(p_.wallets.size(), 0.0);
  for (const auto& inc : p_.incumbents) {
    for (const auto& r : inc.placements) {
      apply_replica(p_, sol.real, r, inc.cpu_milli, inc.memory_mib, +1);
      if (!inc.preemptible) {
        apply_replica(p_, sol.pot, r, inc.cpu_milli, inc.memory_mib, +1);
      } else {
        for (int g : r.gpus) sol.penalty[g] += inc.value + inc.preemption_cost;
      }
    }
  }
  return sol;
}

double Engine::gpu_penalty(const Solution& sol, int g) const {
  // Summed afresh in incumbent order (as initial() does), so that the value depends only on
  // which incumbents are evicted, not on the evict/restore history (no rounding drift).
  double pen = 0.0;
  for (int i : gpu_incs_[g]) {
    const auto& inc = p_.incumbents[i];
    if (!inc.preemptible || sol.evicted[i]) continue;
    for (const auto& r : inc.placements) {
      for (int x : r.gpus) {
        if (x == g) pen += inc.value + inc.preemption_cost;
      }
    }
  }
  return pen;
}

void Engine::evict(Solution& sol, int i) const {
  const auto& inc = p_.incumbents[i];
  sol.evicted[i] = 1;
  for (const auto& r : inc.placements) {
    apply_replica(p_, sol.real, r, inc.cpu_milli, inc.memory_mib, -1);
    for (int g : r.gpus) sol.penalty[g] = gpu_penalty(sol, g);
  }
  sol.welfare -= inc.value + inc.preemption_cost;
  sol.evict_log.push_back(i);
}

void Engine::restore(Solution& sol, int i) const {
  const auto& inc = p_.incumbents[i];
  sol.evicted[i] = 0;
  for (const auto& r : inc.placements) {
    apply_replica(p_, sol.real, r, inc.cpu_milli, inc.memory_mib, +1);
    for (int g : r.gpus) sol.penalty[g] = gpu_penalty(sol, g);
  }
  sol.welfare += inc.value + inc.preemption_cost;
}

void Engine::commit_win(Solution& sol, int alt, std::vector<Replica> reps) const {
  const auto& a = p_.alternatives[alt];
  for (const auto& r : reps) {
    apply_replica(p_, sol.real, r, a.cpu_milli, a.memory_mib, +1);
    apply_replica(p_, sol.pot, r, a.cpu_milli, a.memory_mib, +1);
  }
  sol.alt_of_bid[a.bid] = alt;
  if (!sol.placements.empty()) sol.placements[a.bid] = std::move(reps);
  sol.wallet_spent[p_.bids[a.bid]] += a.value;
  sol.welfare += a.value;
}

void Engine::remove_win(Solution& sol, int bid, std::vector<Replica>* taken) const {
  const int alt = sol.alt_of_bid[bid];
  if (alt < 0) return;
  const auto& a = p_.alternatives[alt];
  for (const auto& r : sol.placements[bid]) {
    apply_replica(p_, sol.real, r, a.cpu_milli, a.memory_mib, -1);
    apply_replica(p_, sol.pot, r, a.cpu_milli, a.memory_mib, -1);
  }
  if (taken != nullptr) *taken = std::move(sol.placements[bid]);
  sol.placements[bid].clear();
  sol.alt_of_bid[bid] = -1;
  sol.wallet_spent[p_.bids[bid]] -= a.value;
  sol.welfare -= a.value;
}

int Engine::gpu_victim(const Solution& sol, const Replica& r) const {
  // Overlapping claims must go first, then the cheapest co-tenants.
  const auto cost = [&](int i) {
    return p_.incumbents[i].value + p_.incumbents[i].preemption_cost;
  };
  int pick = -1;
  bool pick_direct = false;
  for (int g : r.gpus) {
    for (int i : gpu_incs_[g]) {
      if (sol.evicted[i] || !p_.incumbents[i].preemptible) continue;
      bool direct = r.kind == UnitKind::Whole;
      if (r.kind == UnitKind::Mig) {
        const auto& pr = p_.models[p_.gpus[g].model].profiles[r.profile];
        const std::uint32_t bits = slice_bits(r.start, pr.size);
        for (const auto& ir : p_.incumbents[i].placements) {
          if (ir.kind != UnitKind::Mig || ir.gpus[0] != g) continue;
          const auto& ipr = p_.models[p_.gpus[g].model].profiles[ir.profile];
          if (slice_bits(ir.start, ipr.size) & bits) direct = true;
        }
      }
      if (pick < 0 || (direct && !pick_direct) || (direct == pick_direct && cost(i) < cost(pick))) {
        pick = i;
        pick_direct = direct;
      }
    }
  }
  return pick;
}

bool Engine::make_room(Solution& sol, const std::vector<Replica>& reps, const AlternativeData& a,
                       std::vector<int>& evicted) const {
  const auto cost = [&](int i) {
    return p_.incumbents[i].value + p_.incumbents[i].preemption_cost;
  };
  const auto alive = [&](int i) { return !sol.evicted[i] && p_.incumbents[i].preemptible; };
  std::size_t applied = 0;
  bool ok = true;
  for (const auto& r : reps) {
    // GPU-level conflicts first: overlapping claims must go, then the cheapest co-tenants.
    while (!replica_fits(p_, sol.real, r, 0, 0)) {
      const int pick = gpu_victim(sol, r);
      if (pick < 0) {
        ok = false;
        break;
      }
      evict(sol, pick);
      evicted.push_back(pick);
    }
    if (!ok) break;
    while (!replica_fits(p_, sol.real, r, a.cpu_milli, a.memory_mib)) {
      int pick = -1;
      for (int i : node_incs_[r.node]) {
        if (alive(i) && (pick < 0 || cost(i) < cost(pick))) pick = i;
      }
      if (pick < 0) {
        ok = false;
        break;
      }
      evict(sol, pick);
      evicted.push_back(pick);
    }
    if (!ok) break;
    apply_replica(p_, sol.real, r, a.cpu_milli, a.memory_mib, +1);
    ++applied;
  }
  for (std::size_t i = applied; i-- > 0;) {
    apply_replica(p_, sol.real, reps[i], a.cpu_milli, a.memory_mib, -1);
  }
  return ok;
}

bool Engine::may_host(const State& s, int n, const AlternativeData& a) const {
  const auto& nd = p_.nodes[n];
  if (s.cpu_used[n] + a.cpu_milli > nd.cpu_milli || s.mem_used[n] + a.memory_mib > nd.memory_mib) {
    return false;
  }
  switch (a.kind) {
    case UnitKind::Whole:
      return s.node_free_whole[n] >= a.gpus;
    case UnitKind::Share:
      return s.node_free_milli[n] >= a.milli;
    case UnitKind::Mig:
      return s.node_free_slices[n] > 0;
  }
  return true;
}

bool Engine::wallet_covers(const Solution& sol, int alt, double value) const {
  const int w = p_.bids[p_.alternatives[alt].bid];
  return !(sol.wallet_spent[w] + value > p_.wallets[w] + kEps * std::max(1.0, p_.wallets[w]));
}

bool Engine::covers(double value, double reserve_cost) {
  return value + kEps * std::max(1.0, value) >= reserve_cost;
}

bool Engine::try_place(Solution& sol, int alt, double value, bool allow_evict, bool first_fit,
                       bool commit, std::vector<Replica>& out, double* least_value,
                       bool check_wallet, const std::vector<int>* only_nodes,
                       std::vector<int>* runners) {
  const auto& a = p_.alternatives[alt];
  if (least_value) *least_value = 0.0;
  if (check_wallet && !wallet_covers(sol, alt, value)) return false;
  if (packer_.node_level() && !first_fit && cands_[alt].size() > 1 &&
      place_by_score(sol, alt, value, commit, out, least_value, only_nodes)) {
    return true;
  }
  for (const auto& c : cands_[alt]) {
    if (!covers(value, c.reserve_cost)) continue;
    if (packer_.find(sol.real, a, c.model, c.profile, nullptr, first_fit, out, only_nodes,
                     runners)) {
      if (least_value) *least_value = c.reserve_cost;
      if (commit) commit_win(sol, alt, out);
      return true;
    }
  }
  if (runners != nullptr) runners->assign(1, -1);
  if (!allow_evict || !any_preemptible_) return false;
  return place_evicting(sol, alt, value, first_fit, commit, out, least_value, only_nodes);
}

bool Engine::place_by_score(Solution& sol, int alt, double value, bool commit,
                            std::vector<Replica>& out, double* least_value,
                            const std::vector<int>* only_nodes) {
  // With a workload, every usable model competes: the least reserve cost, then the best
  // packing score (otherwise the smallest model that fits is taken).
  const auto& a = p_.alternatives[alt];
  thread_local std::vector<Replica> trial;
  bool found = false;
  double best_cost = 0, best_score = 0;
  for (const auto& c : cands_[alt]) {
    if (!covers(value, c.reserve_cost) || (found && c.reserve_cost > best_cost)) continue;
    double score = 0;
    if (packer_.find(sol.real, a, c.model, c.profile, nullptr, false, trial, only_nodes, nullptr,
                     &score) &&
        (!found || c.reserve_cost < best_cost || score < best_score)) {
      found = true;
      best_cost = c.reserve_cost;
      best_score = score;
      out = trial;
    }
  }
  if (!found) return false;
  if (least_value) *least_value = best_cost;
  if (commit) commit_win(sol, alt, out);
  return true;
}

bool Engine::eviction_on(Solution& sol, const AlternativeData& a, const Candidate& c,
                         bool first_fit, std::vector<Replica>& out,
                         const std::vector<int>* only_nodes, double& cost) const {
  if (!packer_.find(sol.pot, a, c.model, c.profile, &sol.penalty, first_fit, out, only_nodes)) {
    return false;
  }
  thread_local std::vector<int> ev;
  ev.clear();
  const bool ok = make_room(sol, out, a, ev);
  cost = 0;
  for (int i : ev) cost += p_.incumbents[i].value + p_.incumbents[i].preemption_cost;
  for (auto it = ev.rbegin(); it != ev.rend(); ++it) restore(sol, *it);
  return ok;
}

bool Engine::place_evicting(Solution& sol, int alt, double value, bool first_fit, bool commit,
                            std::vector<Replica>& out, double* least_value,
                            const std::vector<int>* only_nodes) {
  const auto& a = p_.alternatives[alt];
  double best_cost = std::numeric_limits<double>::infinity();
  std::vector<Replica> best, reps;
  double best_reserve = 0.0;
  for (const auto& c : cands_[alt]) {
    if (!covers(value, c.reserve_cost)) continue;
    double cost = 0;
    if (eviction_on(sol, a, c, first_fit, reps, only_nodes, cost) && cost < value - kEps &&
        cost < best_cost) {
      best_cost = cost;
      best_reserve = c.reserve_cost;
      best = reps;
      if (first_fit) break;
    }
  }
  if (best.empty()) return false;
  out = best;
  if (least_value) *least_value = std::max(best_cost, best_reserve);
  if (commit) {
    std::vector<int> ev;
    make_room(sol, best, a, ev);
    commit_win(sol, alt, best);
  }
  return true;
}

double Engine::least_value(Solution& sol, int alt, double value, double enough, bool free_only,
                           const std::vector<int>* only_nodes, std::vector<Replica>& out,
                           bool& evicting) {
  const auto& a = p_.alternatives[alt];
  thread_local std::vector<Replica> trial;
  double best = std::numeric_limits<double>::infinity();
  evicting = false;
  for (const auto& c : cands_[alt]) {
    if (!covers(value, c.reserve_cost) || c.reserve_cost >= best) continue;
    // Straight into `out` until something is found (usually the first find decides).
    const bool found = std::isfinite(best);
    if (packer_.find(sol.real, a, c.model, c.profile, nullptr, true, found ? trial : out,
                     only_nodes)) {
      best = c.reserve_cost;
      if (found) out = trial;
      if (best <= enough) return best;
    }
  }
  if (free_only || !any_preemptible_) return best;
  // At a value where no model it may use fits free, try_place evicts on the model whose
  // evictions destroy the least, and wins if that is less than the value.
  for (const auto& c : cands_[alt]) {
    if (!covers(value, c.reserve_cost) || c.reserve_cost >= best) continue;
    double cost = 0;
    if (eviction_on(sol, a, c, false, trial, nullptr, cost) && cost < value - kEps &&
        std::max(cost, c.reserve_cost) < best) {
      best = std::max(cost, c.reserve_cost);
      out = trial;
      evicting = true;
    }
  }
  return best;
}

bool Engine::own_loser(int b, int other) const {
  return other != b && !p_.bidders.empty() && p_.bidders[b] == p_.bidders[other] &&
         greedy_.alt_of_bid[other] < 0 && greedy_bid_searched_[other] == 0;
}

const Solution& Engine::greedy() {
  if (greedy_done_) return greedy_;
  Solution sol = initial();
  greedy_rank_of_bid_.assign(p_.bids.size(), -1);
  greedy_evictions_.assign(order_.size(), {});
  greedy_searched_.assign(order_.size(), 0);
  greedy_bid_searched_.assign(p_.bids.size(), 0);
  std::vector<Replica> reps;
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    const int alt = order_[pos];
    const int bid = p_.alternatives[alt].bid;
    if (sol.alt_of_bid[bid] >= 0) continue;
    greedy_searched_[pos] = wallet_covers(sol, alt, p_.alternatives[alt].value) ? 1 : 0;
    greedy_bid_searched_[bid] |= greedy_searched_[pos];
    const std::size_t log_before = sol.evict_log.size();
    if (try_place(sol, alt, p_.alternatives[alt].value, true, false, true, reps)) {
      greedy_rank_of_bid_[bid] = static_cast<int>(pos);
      for (std::size_t e = log_before; e < sol.evict_log.size(); ++e) {
        // Trial evictions are logged too (and restored); one entry per incumbent still evicted.
        const int i = sol.evict_log[e];
        auto& evs = greedy_evictions_[pos];
        if (sol.evicted[i] && std::find(evs.begin(), evs.end(), i) == evs.end()) evs.push_back(i);
      }
    }
  }
  greedy_ = std::move(sol);
  greedy_done_ = true;
  return greedy_;
}

void Engine::record_runners() {
  if (runners_done_) return;
  greedy();
  const std::size_t k = Packer::kRunners;
  runners_.assign(order_.size() * k, -1);
  runner_count_.assign(order_.size(), -1);
  Solution sol = initial();
  std::vector<Replica> reps;
  std::vector<int> found;
  checkpoints_.clear();
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    if (pos % static_cast<std::size_t>(checkpoint_every_) == 0) {
      Solution light;
      light.alt_of_bid = sol.alt_of_bid;
      light.evicted = sol.evicted;
      light.real = sol.real;
      light.pot = sol.pot;
      light.penalty = sol.penalty;
      light.wallet_spent = sol.wallet_spent;
      light.welfare = sol.welfare;
      checkpoints_.push_back(std::move(light));
    }
    const int alt = order_[pos];
    const int bid = p_.alternatives[alt].bid;
    if (sol.alt_of_bid[bid] >= 0) continue;
    found.assign(1, -1);
    if (try_place(sol, alt, p_.alternatives[alt].value, true, false, true, reps, nullptr, true,
                  nullptr, &found) &&
        !(found.size() == 1 && found[0] == -1)) {
      runner_count_[pos] = static_cast<std::int8_t>(found.size());
      std::copy(found.begin(), found.end(),
                runners_.begin() + static_cast<std::ptrdiff_t>(pos * k));
    }
  }
  runners_done_ = true;
}

Solution Engine::load(const std::vector<int>& bids, const std::vector<int>& alts,
                      const std::vector<std::vector<Replica>>& replicas,
                      const std::vector<std::uint8_t>& evicted) const {
  if (bids.size() != alts.size() || bids.size() != replicas.size()) {
    throw InputError("winners", "bids, alternatives and placements differ in length");
  }
  if (evicted.size() != p_.incumbents.size()) {
    throw InputError("evicted", "one flag per incumbent expected");
  }
  Solution sol = initial();
  for (std::size_t i = 0; i < evicted.size(); ++i) {
    if (!evicted[i]) continue;
    if (!p_.incumbents[i].preemptible) {
      throw InputError("evicted", "incumbent " + std::to_string(i) + " is not preemptible");
    }
    evict(sol, static_cast<int>(i));
  }
  for (std::size_t w = 0; w < bids.size(); ++w) {
    const std::string path = "winners[" + std::to_string(bids[w]) + "]";
    const int b = bids[w];
    if (b < 0 || b >= static_cast<int>(p_.bids.size())) throw InputError(path, "no such bid");
    if (sol.alt_of_bid[b] >= 0) throw InputError(path, "bid wins twice");
    const int alt = bid_first_[b] + alts[w];
    if (alts[w] < 0 || alt >= bid_first_[b + 1])
      throw InputError(path + ".alternative", "out of range");
    const auto& a = p_.alternatives[alt];
    if (static_cast<int>(replicas[w].size()) != a.replicas) {
      throw InputError(path + ".placements", "one placement per replica expected");
    }
    load_replicas(sol, path + ".placements", a, replicas[w]);
    sol.alt_of_bid[b] = alt;
    sol.placements[b] = replicas[w];
    sol.wallet_spent[p_.bids[b]] += a.value;
    sol.welfare += a.value;
  }
  return sol;
}

void Engine::load_replicas(Solution& sol, const std::string& path, const AlternativeData& a,
                           const std::vector<Replica>& reps) const {
  int model = -1;
  for (const auto& r : reps) {
    if (r.kind != a.kind || r.gpus.empty()) throw InputError(path, "wrong unit kind");
    if (a.kind == UnitKind::Whole && static_cast<int>(r.gpus.size()) != a.gpus) {
      throw InputError(path, "wrong number of GPUs");
    }
    if (a.kind == UnitKind::Share && r.milli != a.milli) throw InputError(path, "wrong milli");
    for (int g : r.gpus) {
      if (g < 0 || g >= static_cast<int>(p_.gpus.size())) throw InputError(path, "no such GPU");
      if (model >= 0 && p_.gpus[g].model != model) {
        throw InputError(path, "GPUs of more than one model");
      }
      model = p_.gpus[g].model;
    }
    const auto it = std::find(a.models.begin(), a.models.end(), model);
    if (it == a.models.end()) throw InputError(path, "model not allowed");
    if (a.kind == UnitKind::Mig && a.profiles[it - a.models.begin()] != r.profile) {
      throw InputError(path, "wrong MIG profile");
    }
    if (!replica_fits(p_, sol.real, r, a.cpu_milli, a.memory_mib)) {
      throw InputError(path, "does not fit (overlap, capacity or MIG rule)");
    }
    apply_replica(p_, sol.real, r, a.cpu_milli, a.memory_mib, +1);
    apply_replica(p_, sol.pot, r, a.cpu_milli, a.memory_mib, +1);
  }
}

bool Engine::touches(const std::vector<Replica>& a, const std::vector<Replica>& b,
                     bool node_level) const {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (node_level && x.node == y.node) return true;
      if (x.node != y.node) continue;
      for (int g : x.gpus) {
        if (std::find(y.gpus.begin(), y.gpus.end(), g) != y.gpus.end()) return true;
      }
    }
  }
  return false;
}

bool Engine::refill(Solution& sol, std::vector<int> items, std::mt19937_64* rng, double noise,
                    bool allow_evict, const std::chrono::steady_clock::time_point* deadline) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  if (rng != nullptr && noise > 0) {
    std::uniform_real_distribution<double> u(1.0 - noise, 1.0 + noise);
    // A third of the time: largest first (first-fit decreasing packs tight MIG/share layouts).
    const bool by_size = (*rng)() % 3 == 0;
    std::vector<std::pair<double, int>> keyed;
    keyed.reserve(items.size());
    for (int alt : items) {
      const double key = by_size ? size_[alt] : score_[alt];
      keyed.emplace_back(-key * u(*rng), alt);
    }
    std::sort(keyed.begin(), keyed.end());
    for (std::size_t i = 0; i < items.size(); ++i) items[i] = keyed[i].second;
  } else {
    std::sort(items.begin(), items.end(), [&](int x, int y) { return rank_[x] < rank_[y]; });
  }
  std::vector<Replica> reps;
  std::size_t done = 0;
  for (int alt : items) {
    // Checking the clock every 64 items keeps its cost negligible.
    if (deadline != nullptr && ++done % 64 == 0 && std::chrono::steady_clock::now() >= *deadline) {
      return false;
    }
    if (rank_[alt] < 0) continue;
    const int bid = p_.alternatives[alt].bid;
    if (sol.alt_of_bid[bid] >= 0) continue;
    try_place(sol, alt, p_.alternatives[alt].value, allow_evict, false, true, reps);
  }
  return true;
}

// One run of local search: the incumbent solution, the best one seen, the random stream and
// the candidate of the current move (`nxt_`, with the alternatives its ruin removed).
class Engine::LocalSearch {
 public:
  LocalSearch(Engine& e, const Solution& start, double time_limit_s, std::uint64_t seed,
              std::int64_t max_iterations, std::int64_t patience);
  Solution run(LocalStats* stats);

 private:
  enum Move { kInsert = 0, kRestore = 1, kDropWinner = 2, kClearNodes = 3 };

  [[nodiscard]] bool out_of_budget() const;
  [[nodiscard]] std::vector<int> losers_of(const Solution& s) const;
  [[nodiscard]] std::vector<int> alts_of(int b) const;
  // One move: ruin, recreate, accept; false: stop the search.
  bool iterate();
  // The move to make (-1: nothing to move); sorts the bids into winners and losers first.
  int pick_move();
  void drop(int b);
  // Ruin of `move`; false: the move is void (nothing to recreate).
  bool ruin(int move);
  bool choose_insertion(std::vector<Replica>& target, int& target_alt);
  void spread_damage();
  bool wallet_room(int b, double value);
  bool make_way(const std::vector<Replica>& target, int target_alt, bool insert);
  bool free_node(const Replica& r, std::int64_t cpu, std::int64_t mem, int target_alt);
  void clear_nodes();
  void drop_neighbourhood();
  // Re-insert the losers and the removed; false: the deadline passed.
  bool recreate(int move);
  void restore_freed();
  void accept();
  Solution finish(LocalStats* stats);

  Engine& e_;
  const ProblemData& p_;
  const double time_limit_s_;
  const std::int64_t max_iterations_;
  std::int64_t patience_;
  std::chrono::steady_clock::time_point t0_, deadline_;
  std::mt19937_64 rng_;
  Solution cur_, best_, nxt_;
  State base_;  // outside usage + non-preemptible incumbents only
  std::vector<int> orderable_bids_;
  LocalStats st_;
  std::int64_t since_gain_ = 0;
  std::vector<double> damage_;
  // Of the current move: alternatives to re-insert, evicted incumbents, winners and losers.
  std::vector<int> removed_, evicted_now_, winners_, losers_;
};

Engine::LocalSearch::LocalSearch(Engine& e, const Solution& start, double time_limit_s,
                                 std::uint64_t seed, std::int64_t max_iterations,
                                 std::int64_t patience)
    : e_(e),
      p_(e.p_),
      time_limit_s_(time_limit_s),
      max_iterations_(max_iterations),
      patience_(patience),
      t0_(std::chrono::steady_clock::now()),
      deadline_(t0_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(std::min(time_limit_s, 1e9)))),
      rng_(seed),
      cur_(start),
      best_(start) {
  const Solution empty = e_.initial();
  base_ = empty.pot;
  for (int b = 0; b < static_cast<int>(p_.bids.size()); ++b) {
    for (int k = e_.bid_first_[b]; k < e_.bid_first_[b + 1]; ++k) {
      if (e_.rank_[k] >= 0) {
        orderable_bids_.push_back(b);
        break;
      }
    }
  }
  if (patience_ <= 0) {
    // Measured on benchmarks/solver_quality.py: fewer moves leave some 50-bid rounds at 0.98 of
    // the optimum; this many take about a second there (far below the default 10 s limit).
    patience_ = std::clamp<std::int64_t>(1000 * static_cast<std::int64_t>(orderable_bids_.size()),
                                         100000, 2000000);
  }
  damage_.assign(p_.gpus.size(), 0.0);
}

bool Engine::LocalSearch::out_of_budget() const {
  if (max_iterations_ >= 0 && st_.iterations >= max_iterations_) return true;
  if (since_gain_ >= patience_) return true;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  return elapsed >= time_limit_s_;
}

std::vector<int> Engine::LocalSearch::losers_of(const Solution& s) const {
  std::vector<int> items;
  for (int b : orderable_bids_) {
    if (s.alt_of_bid[b] >= 0) continue;
    for (int k = e_.bid_first_[b]; k < e_.bid_first_[b + 1]; ++k) {
      if (e_.rank_[k] >= 0) items.push_back(k);
    }
  }
  return items;
}

std::vector<int> Engine::LocalSearch::alts_of(int b) const {
  std::vector<int> v;
  for (int k = e_.bid_first_[b]; k < e_.bid_first_[b + 1]; ++k) {
    if (e_.rank_[k] >= 0) v.push_back(k);
  }
  return v;
}

Solution Engine::LocalSearch::run(LocalStats* stats) {
  while (!out_of_budget()) {
    ++st_.iterations;
    ++since_gain_;
    if (!iterate()) break;
  }
  return finish(stats);
}

bool Engine::LocalSearch::iterate() {
  nxt_ = cur_;
  removed_.clear();
  const int move = pick_move();
  if (move < 0) return false;
  if (!ruin(move)) return true;
  if (!recreate(move)) return false;
  accept();
  return true;
}

int Engine::LocalSearch::pick_move() {
  evicted_now_.clear();
  winners_.clear();
  losers_.clear();
  for (std::size_t i = 0; i < nxt_.evicted.size(); ++i) {
    if (nxt_.evicted[i]) evicted_now_.push_back(static_cast<int>(i));
  }
  for (int b : orderable_bids_) {
    if (nxt_.alt_of_bid[b] >= 0)
      winners_.push_back(b);
    else
      losers_.push_back(b);
  }
  int move = static_cast<int>(rng_() % 8);
  if (move >= 5) move = kInsert;  // insertion is the main move
  if (move == 4) move = kClearNodes;
  if (move == kRestore && evicted_now_.empty()) move = kInsert;
  if (move == kDropWinner && winners_.empty()) move = kInsert;
  if (move == kInsert && losers_.empty()) {
    if (winners_.empty()) return -1;
    move = kDropWinner;
  }
  return move;
}

void Engine::LocalSearch::drop(int b) {
  removed_.push_back(nxt_.alt_of_bid[b]);
  e_.remove_win(nxt_, b);
}

bool Engine::LocalSearch::ruin(int move) {
  bool valid = true;
  std::vector<Replica> target;
  int target_alt = -1;
  if (move == kInsert) {
    valid = choose_insertion(target, target_alt);
  } else if (move == kRestore) {
    const int i = evicted_now_[rng_() % evicted_now_.size()];
    target = p_.incumbents[i].placements;
    target_alt = -1 - i;
  }
  if (move == kInsert || move == kRestore) {
    if (valid) valid = make_way(target, target_alt, move == kInsert);
  } else if (move == kClearNodes) {
    clear_nodes();
  } else {
    drop_neighbourhood();
  }
  return valid;
}

// Where to put a random loser: the placement in the market-free cluster that destroys the least
// (winners' values and incumbents' costs spread over their GPUs), with noise so that repeated
// tries explore different regions.
bool Engine::LocalSearch::choose_insertion(std::vector<Replica>& target, int& target_alt) {
  const int b = losers_[rng_() % losers_.size()];
  auto alts = alts_of(b);
  target_alt = alts[rng_() % alts.size()];
  const auto& a = p_.alternatives[target_alt];
  const auto& cands = e_.cands_[target_alt];
  spread_damage();
  const std::size_t first = rng_() % cands.size();
  bool found = false;
  for (std::size_t t = 0; t < cands.size() && !found; ++t) {
    const auto& c = cands[(first + t) % cands.size()];
    found = e_.packer_.find(base_, a, c.model, c.profile, &damage_, false, target);
  }
  if (!found) return false;
  return wallet_room(b, a.value);
}

void Engine::LocalSearch::spread_damage() {
  std::fill(damage_.begin(), damage_.end(), 0.0);
  std::uniform_real_distribution<double> noise(0.6, 1.4);
  for (int ob : winners_) {
    const int k = nxt_.alt_of_bid[ob];
    std::size_t touched = 0;
    for (const auto& r : nxt_.placements[ob]) touched += r.gpus.size();
    const double per =
        p_.alternatives[k].value / static_cast<double>(std::max<std::size_t>(1, touched));
    for (const auto& r : nxt_.placements[ob]) {
      for (int g : r.gpus) damage_[g] += per;
    }
  }
  for (std::size_t g = 0; g < damage_.size(); ++g)
    damage_[g] = (damage_[g] + nxt_.penalty[g]) * noise(rng_);
}

// Wallet room: drop the wallet's lowest-scored winners.
bool Engine::LocalSearch::wallet_room(int b, double value) {
  const int w = p_.bids[b];
  while (nxt_.wallet_spent[w] + value > p_.wallets[w] + kEps * std::max(1.0, p_.wallets[w])) {
    int worst = -1;
    for (int ob : winners_) {
      if (nxt_.alt_of_bid[ob] >= 0 && p_.bids[ob] == w &&
          (worst < 0 || e_.score_[nxt_.alt_of_bid[ob]] < e_.score_[nxt_.alt_of_bid[worst]])) {
        worst = ob;
      }
    }
    if (worst < 0) return false;
    drop(worst);
  }
  return true;
}

// Clears `target` (a placement of alternative `target_alt`, or of incumbent -1 - target_alt
// when not `insert`) of winners and preemptible incumbents, then puts it there.
bool Engine::LocalSearch::make_way(const std::vector<Replica>& target, int target_alt,
                                   bool insert) {
  for (int ob : winners_) {
    if (nxt_.alt_of_bid[ob] >= 0 && e_.touches(target, nxt_.placements[ob], false)) drop(ob);
  }
  for (const auto& r : target) {
    for (int g : r.gpus) {
      for (int i : e_.gpu_incs_[g]) {
        if (!nxt_.evicted[i] && p_.incumbents[i].preemptible) e_.evict(nxt_, i);
      }
    }
  }
  // Node CPU/memory: free the target's nodes as needed.
  const std::int64_t cpu =
      insert ? p_.alternatives[target_alt].cpu_milli : p_.incumbents[-1 - target_alt].cpu_milli;
  const std::int64_t mem =
      insert ? p_.alternatives[target_alt].memory_mib : p_.incumbents[-1 - target_alt].memory_mib;
  bool valid = true;
  std::size_t applied = 0;
  for (const auto& r : target) {
    valid = free_node(r, cpu, mem, target_alt);
    if (!valid) break;
    apply_replica(p_, nxt_.real, r, cpu, mem, +1);
    ++applied;
  }
  for (std::size_t i = applied; i-- > 0;) apply_replica(p_, nxt_.real, target[i], cpu, mem, -1);
  if (valid) {
    if (insert) {
      e_.commit_win(nxt_, target_alt, target);
    } else {
      e_.restore(nxt_, -1 - target_alt);
    }
  }
  return valid;
}

// Drops winners, then evicts preemptible incumbents, on r's node until r fits; false if it
// cannot be made to.
bool Engine::LocalSearch::free_node(const Replica& r, std::int64_t cpu, std::int64_t mem,
                                    int target_alt) {
  while (!replica_fits(p_, nxt_.real, r, cpu, mem)) {
    int victim = -1;
    for (int ob : winners_) {
      if (nxt_.alt_of_bid[ob] < 0) continue;
      for (const auto& orr : nxt_.placements[ob]) {
        if (orr.node == r.node) victim = ob;
      }
      if (victim >= 0) break;
    }
    if (victim >= 0) {
      drop(victim);
      continue;
    }
    int inc = -1;
    for (int i : e_.node_incs_[r.node]) {
      if (!nxt_.evicted[i] && p_.incumbents[i].preemptible && i != -1 - target_alt) inc = i;
    }
    if (inc < 0) return false;
    e_.evict(nxt_, inc);
  }
  return true;
}

// Clear a few random nodes and rebuild them.
void Engine::LocalSearch::clear_nodes() {
  const int count = 1 + static_cast<int>(rng_() % 3);
  std::vector<std::uint8_t> cleared(p_.nodes.size(), 0);
  for (int t = 0; t < count; ++t) cleared[rng_() % p_.nodes.size()] = 1;
  for (int ob : winners_) {
    if (nxt_.alt_of_bid[ob] < 0) continue;
    for (const auto& r : nxt_.placements[ob]) {
      if (cleared[r.node]) {
        drop(ob);
        break;
      }
    }
  }
  if (rng_() % 2 == 0) {
    for (std::size_t n = 0; n < p_.nodes.size(); ++n) {
      if (!cleared[n]) continue;
      for (int i : e_.node_incs_[n]) {
        if (!nxt_.evicted[i] && p_.incumbents[i].preemptible) e_.evict(nxt_, i);
      }
    }
  }
}

// Drop a random winner and, half the time, its node neighbours.
void Engine::LocalSearch::drop_neighbourhood() {
  const int b = winners_[rng_() % winners_.size()];
  const auto mine = nxt_.placements[b];
  drop(b);
  if (rng_() % 2 == 0) {
    for (int ob : winners_) {
      if (nxt_.alt_of_bid[ob] >= 0 && e_.touches(mine, nxt_.placements[ob], true)) drop(ob);
    }
  }
}

bool Engine::LocalSearch::recreate(int move) {
  std::vector<int> items = losers_of(nxt_);
  items.insert(items.end(), removed_.begin(), removed_.end());
  const bool noisy = rng_() % 2 == 0;
  if (!e_.refill(nxt_, std::move(items), &rng_, noisy ? 0.3 : 0.0, move == kClearNodes,
                 &deadline_)) {
    return false;
  }
  if (move == kClearNodes || move == kDropWinner) restore_freed();
  return true;
}

// Evicted incumbents whose resources are free again come back for free.
void Engine::LocalSearch::restore_freed() {
  for (std::size_t i = 0; i < nxt_.evicted.size(); ++i) {
    if (!nxt_.evicted[i]) continue;
    const auto& inc = p_.incumbents[i];
    State probe = nxt_.real;
    bool fits = true;
    for (const auto& r : inc.placements) {
      if (!replica_fits(p_, probe, r, inc.cpu_milli, inc.memory_mib)) {
        fits = false;
        break;
      }
      apply_replica(p_, probe, r, inc.cpu_milli, inc.memory_mib, +1);
    }
    if (fits) e_.restore(nxt_, static_cast<int>(i));
  }
}

// Threshold acceptance: a move may lose up to tau, which shrinks to zero as the moves
// without a new best run out; the best allocation seen is what is returned.
void Engine::LocalSearch::accept() {
  const double scale = std::max(1.0, std::abs(best_.welfare));
  const double tau =
      0.002 * scale *
      std::max(0.0, 1.0 - static_cast<double>(since_gain_) / static_cast<double>(patience_));
  if (nxt_.welfare > best_.welfare + kEps * scale) {
    best_ = nxt_;
    cur_ = std::move(nxt_);
    ++st_.improvements;
    since_gain_ = 0;
  } else if (nxt_.welfare >= cur_.welfare - tau - kEps * scale) {
    cur_ = std::move(nxt_);
  }
}

Solution Engine::LocalSearch::finish(LocalStats* stats) {
  Solution out = std::move(best_);
  // Recompute the welfare from scratch (the running sum drifts by rounding).
  out.welfare = 0.0;
  for (std::size_t b = 0; b < out.alt_of_bid.size(); ++b) {
    if (out.alt_of_bid[b] >= 0) out.welfare += p_.alternatives[out.alt_of_bid[b]].value;
  }
  for (std::size_t i = 0; i < out.evicted.size(); ++i) {
    if (out.evicted[i]) out.welfare -= p_.incumbents[i].value + p_.incumbents[i].preemption_cost;
  }
  st_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  if (stats) *stats = st_;
  return out;
}

Solution Engine::local(const Solution& start, double time_limit_s, std::uint64_t seed,
                       std::int64_t max_iterations, std::int64_t patience, LocalStats* stats) {
  if (!std::isfinite(time_limit_s) || time_limit_s < 0) {
    throw InputError("time_limit", "must be a finite number of seconds >= 0");
  }
  if (start.alt_of_bid.size() != p_.bids.size() || start.evicted.size() != p_.incumbents.size()) {
    throw InputError("start", "allocation does not belong to this problem");
  }
  return LocalSearch(*this, start, time_limit_s, seed, max_iterations, patience).run(stats);
}

}  // namespace gpualloc
