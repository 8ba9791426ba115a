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
// score times the winner's size^alpha (the least value that still outranks it), provided that,
// with that item in its room, the winner finds room nowhere else (first fit, no evictions): one
// that still does would win below the item without taking its room (a gang spreading over other
// nodes, a replica on a free GPU of another model or node). Winners never priced that way pay
// their reserve. Payment = min(bid, max(reserve of the model used,
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
//
// An agent's own losing bids (Engine::own_loser) block none of its winners and take none of its
// wallet's money in the walk, as `critical` leaves them out (docs/concepts.md).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

#include "gpualloc/auction.hpp"

namespace gpualloc {

namespace {

constexpr double kEps = 1e-9;

// Nodes under a small non-negative key (a node's potential, below), visited from a least key
// upwards, nodes ascending within a key: the order of a set of (key, node), kept as one sorted
// bucket per key and a bitmap of the keys in use (no tree to walk, no allocation per entry).
class NodesByKey {
 public:
  void insert(std::int64_t key, int node) {
    const auto k = static_cast<std::size_t>(key);
    if (k >= buckets_.size()) {
      buckets_.resize(k + 1);
      used_.resize(std::max(used_.size(), k / 64 + 1), 0);
    }
    auto& bucket = buckets_[k];
    bucket.insert(std::lower_bound(bucket.begin(), bucket.end(), node), node);
    used_[k / 64] |= std::uint64_t{1} << (k % 64);
  }
  void erase(std::int64_t key, int node) {
    const auto k = static_cast<std::size_t>(key);
    if (k >= buckets_.size()) return;
    auto& bucket = buckets_[k];
    const auto it = std::lower_bound(bucket.begin(), bucket.end(), node);
    if (it != bucket.end() && *it == node) bucket.erase(it);
    if (bucket.empty()) used_[k / 64] &= ~(std::uint64_t{1} << (k % 64));
  }
  // Calls visit(node) for every node with key >= least, by key, then node.
  template <class Visit>
  void each_from(std::int64_t least, const Visit& visit) const {
    const auto k = static_cast<std::size_t>(std::max<std::int64_t>(least, 0));
    for (std::size_t w = k / 64; w < used_.size(); ++w) {
      std::uint64_t bits = used_[w];
      if (w == k / 64) bits &= ~std::uint64_t{0} << (k % 64);
      for (; bits != 0; bits &= bits - 1) {
        for (int n : buckets_[w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits))]) visit(n);
      }
    }
  }

 private:
  std::vector<std::vector<int>> buckets_;  // per key: its nodes, ascending
  std::vector<std::uint64_t> used_;        // bit k: key k has nodes
};

}  // namespace

std::vector<double> Engine::los_payments(const Solution& sol) {
  if (sol.alt_of_bid.size() != p_.bids.size()) {
    throw InputError("allocation", "does not belong to this problem");
  }
  const Solution& g = greedy();
  std::vector<double> pay(p_.bids.size(), 0.0);
  std::vector<double> floor(p_.bids.size(), 0.0);
  std::vector<std::uint8_t> priced(p_.bids.size(), 0);  // priced by this rule (a greedy winner)
  std::vector<double> scale(p_.bids.size(), 0.0);       // per priced winner: its size^alpha
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    const int k = sol.alt_of_bid[b];
    if (k < 0) continue;
    pay[b] = p_.alternatives[k].value;  // first price unless the pass prices it
    if (g.alt_of_bid[b] == k && g.placements[b] == sol.placements[b]) {
      priced[b] = 1;
      scale[b] = std::pow(size_[k], opt_.alpha);
      const auto& reps = sol.placements[b];
      const int model =
          !reps.empty() && !reps[0].gpus.empty() ? p_.gpus[reps[0].gpus[0]].model : -1;
      floor[b] = model >= 0 ? reserve_cost(k, model) : 0.0;
    }
  }
  // Winners of the pass so far that no blocked item has priced yet (by bid), with their nodes.
  struct Open {
    int alt = -1;
    std::int64_t cpu = 0, memory = 0;    // per replica, as its alternative asks (read here, once)
    std::vector<int> nodes;              // sorted, distinct
    std::vector<std::array<int, 2>> on;  // per entry of nodes: the GPUs it uses there, replicas
  };
  std::vector<Open> open(p_.bids.size());
  std::vector<std::uint64_t> open_pools(p_.bids.size(), 0);  // per open winner: its pools
  // Per wallet: its winners of the pass not yet priced by a bid their spending blocked, with what
  // the wallet's side below reads of each, side by side (it visits them all at each of the
  // wallet's items).
  struct WalletOpen {
    int bid = -1;
    double value = 0.0;  // of its alternative: back in the wallet without it
    double size = 0.0;   // its size^alpha
    double floor = 0.0;  // its reserve
    double extra = 0.0;  // see the wallet's side below
    // The bids of its wallet that win without it where the run had them lose.
    std::vector<int> won;
  };
  std::vector<std::vector<WalletOpen>> wallet_open(p_.wallets.size());
  std::vector<double> threshold(p_.bids.size(), 0.0);
  Solution s = initial();
  // Which open winners a blocked item may fit in once freed. Per node: its open winners with
  // the GPUs each uses there, and its potential per unit kind: its free units of the kind plus
  // the most one open winner there holds (GPUs; x1000 milli; x8 MIG slices). Per pool (bit
  // model*3+kind, when the pools fit in 64 bits): its nodes by potential. A replica of a
  // blocked item fits on a node freed of one winner only if the node's potential covers it, so
  // only the winners on such nodes are tried (the others were skipped by may_fit below anyway).
  const bool indexed = p_.models.size() * 3 <= 64;
  std::vector<std::array<std::vector<std::pair<int, int>>, 3>> node_open(p_.nodes.size());
  std::vector<std::array<int, 3>> held(p_.nodes.size(), {0, 0, 0});
  std::vector<std::array<std::int64_t, 3>> potential(p_.nodes.size(), {-1, -1, -1});
  std::vector<NodesByKey> by_potential(indexed ? 64 : 0);
  const auto update_potential = [&](int n) {
    if (!indexed) return;
    for (int kind = 0; kind < 3; ++kind) {
      std::int64_t now = 0;
      switch (static_cast<UnitKind>(kind)) {
        case UnitKind::Whole:
          now = s.real.node_free_whole[n] + held[n][0];
          break;
        case UnitKind::Share:
          now = s.real.node_free_milli[n] + std::int64_t{1000} * held[n][2];
          break;
        case UnitKind::Mig:
          now = s.real.node_free_slices[n] + std::int64_t{8} * held[n][1];
          break;
      }
      auto& before = potential[n][static_cast<std::size_t>(kind)];
      if (now == before) continue;
      for (std::uint64_t bits = node_pools_[n]; bits != 0; bits &= bits - 1) {
        const int bit = __builtin_ctzll(bits);
        if (bit % 3 != kind) continue;
        auto& nodes = by_potential[static_cast<std::size_t>(bit)];
        if (before >= 0) nodes.erase(before, n);
        nodes.insert(now, n);
      }
      before = now;
    }
  };
  for (int n = 0; n < static_cast<int>(p_.nodes.size()); ++n) update_potential(n);
  // Whether all of an alternative's replicas must share one node.
  const auto on_one_node = [](const AlternativeData& a) {
    return a.locality == Locality::Gpu || a.locality == Locality::Nvlink ||
           a.locality == Locality::Node;
  };
  // Units of the item's kind one node must have free for it at least: one replica's (MIG: the
  // smallest profile it may use), all of them for a gang that must share one node.
  const auto need_of = [&](int alt) -> std::int64_t {
    const auto& a = p_.alternatives[alt];
    std::int64_t need = a.kind == UnitKind::Whole ? a.gpus : a.milli;
    if (a.kind == UnitKind::Mig) {
      need = 8;
      for (const auto& c : cands_[alt]) {
        if (c.profile >= 0) {
          need = std::min<std::int64_t>(need, p_.models[c.model].profiles[c.profile].size);
        }
      }
    }
    return on_one_node(a) ? need * a.replicas : need;
  };
  // Whether freeing open winner `b` may let `alt` fit on its nodes: per node of its pools, the
  // replicas its free units plus every GPU `b` uses there taken as freed whole, and its CPU and
  // memory less what `b`'s replicas there use, could hold; on one node for a gang that must
  // share one, summed otherwise (a necessary condition only; the search decides).
  const auto may_fit = [&](int b, int alt) {
    const Open& o = open[b];
    const auto& a = p_.alternatives[alt];
    const bool one_node = on_one_node(a);
    std::int64_t total = 0;
    for (std::size_t k = 0; k < o.nodes.size(); ++k) {
      const int n = o.nodes[k];
      if ((node_pools_[n] & alt_pools_[alt]) == 0) continue;
      const auto& nd = p_.nodes[n];
      std::int64_t fit = a.replicas;
      if (a.cpu_milli > 0) {
        fit = std::min(fit, (nd.cpu_milli - s.real.cpu_used[n] + o.cpu * o.on[k][1]) / a.cpu_milli);
      }
      if (a.memory_mib > 0) {
        fit = std::min(fit,
                       (nd.memory_mib - s.real.mem_used[n] + o.memory * o.on[k][1]) / a.memory_mib);
      }
      if (a.kind == UnitKind::Whole) {
        fit = std::min<std::int64_t>(fit, (s.real.node_free_whole[n] + o.on[k][0]) / a.gpus);
      } else if (a.kind == UnitKind::Share && a.milli > 0) {
        fit = std::min<std::int64_t>(
            fit, (s.real.node_free_milli[n] + std::int64_t{1000} * o.on[k][0]) / a.milli);
        // Shares fit per GPU: whole shares in each shared GPU's free milli once `b`'s
        // replicas there are freed (all on one GPU for locality gpu).
        std::int64_t shares = 0;
        for (int gpu : packer_.gpus_of_node(n)) {
          if (fit <= 0 || p_.gpus[gpu].mode != GpuMode::Shared) continue;
          std::int64_t used = s.real.gpus[gpu].milli;
          for (const auto& r : s.placements[b]) {
            if (r.node != n || std::find(r.gpus.begin(), r.gpus.end(), gpu) == r.gpus.end()) {
              continue;
            }
            used -= r.kind == UnitKind::Share ? r.milli : r.kind == UnitKind::Whole ? 1000 : 0;
          }
          const std::int64_t here = (1000 - used) / a.milli;
          shares = a.locality == Locality::Gpu ? std::max(shares, here) : shares + here;
        }
        fit = std::min(fit, shares);
      }
      if (fit <= 0) continue;
      if (one_node ? fit >= a.replicas : (total += fit) >= a.replicas) return true;
    }
    return false;
  };
  const auto kind_of = [&](int b) {
    return static_cast<std::size_t>(p_.alternatives[open[b].alt].kind);
  };
  const auto close = [&](int b) {
    const std::size_t kind = kind_of(b);
    for (int n : open[b].nodes) {
      auto& list = node_open[n][kind];
      int most = 0;
      for (std::size_t j = 0; j < list.size();) {
        if (list[j].first == b) {
          list[j] = list.back();
          list.pop_back();
        } else {
          most = std::max(most, list[j++].second);
        }
      }
      if (most != held[n][kind]) {
        held[n][kind] = most;
        update_potential(n);
      }
    }
    open[b] = Open{};
  };
  std::vector<Replica> trial, elsewhere;
  // Whether an item has room as the run stands (first fit, no evictions). The pass only fills
  // the cluster (evictions aside), and the search reads only a usable (model, profile) and the
  // demands (kind, locality, units per replica, replicas, CPU, memory), so per class of those
  // (a candidate with its kind and locality) and per demands seen: whether it had no room since
  // the last eviction (none now either, nor for larger demands: the search is first fit over
  // every node, so a demand no larger than one that fits finds room), and the last placement
  // found (still there, also for smaller demands, while no win has touched its nodes; once one
  // has, it is looked for on those nodes first). The item has room if one of the candidates its
  // value covers has (as try_place's first-fit search would find).
  // Demands: units per replica (GPUs, milli), replicas, CPU, memory per replica.
  using Need = std::array<std::int64_t, 5>;
  struct Room {
    Need need{};
    bool none = false;
    bool found = false;
    std::size_t at = 0;      // the position that found it
    std::vector<int> nodes;  // sorted, distinct
    // With none: the nodes where one replica of these demands fitted once (Packer::hosts), a
    // superset of those where it fits now; read when hosts_known.
    bool hosts_known = false;
    std::vector<int> hosts;
  };
  // Per class (model, profile, kind, locality), at its index below: per demands seen.
  constexpr std::size_t kKinds = 3, kLocalities = 6, kProfiles = kMaxProfiles + 1;  // with none
  std::vector<std::vector<Room>> rooms(p_.models.size() * kProfiles * kKinds * kLocalities);
  const auto class_of = [&](const Candidate& c, const AlternativeData& a) {
    const auto model = static_cast<std::size_t>(c.model);
    const auto profile = static_cast<std::size_t>(c.profile + 1);
    return ((model * kProfiles + profile) * kKinds + static_cast<std::size_t>(a.kind)) *
               kLocalities +
           static_cast<std::size_t>(a.locality);
  };
  std::vector<std::size_t> touched(p_.nodes.size(), 0);   // last position + 1 that changed it
  const auto within = [](const Need& x, const Need& y) {  // x needs no more than y of anything
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (x[i] > y[i]) return false;
    }
    return true;
  };
  std::vector<Replica> probe;
  const auto found_at = [&](Room& r, std::size_t pos) {
    r.found = true;
    r.at = pos;
    r.nodes.clear();
    for (const auto& rep : probe) r.nodes.push_back(rep.node);
    std::sort(r.nodes.begin(), r.nodes.end());
    r.nodes.erase(std::unique(r.nodes.begin(), r.nodes.end()), r.nodes.end());
  };
  const auto untouched = [&](const Room& r) {
    return std::all_of(r.nodes.begin(), r.nodes.end(), [&](int n) { return touched[n] <= r.at; });
  };
  // The room (with its placement) of a candidate that `alt` has at `value`, or none; then
  // `nones` (when given) holds, per candidate the value covers, the record (class, index) that
  // told it has none.
  using RoomRef = std::pair<std::size_t, std::size_t>;
  const auto room_at = [&](int alt, double value, std::size_t pos,
                           std::vector<RoomRef>* nones = nullptr) -> const Room* {
    if (nones != nullptr) nones->clear();
    const auto& a = p_.alternatives[alt];
    const Need need{a.gpus, a.milli, a.replicas, a.cpu_milli, a.memory_mib};
    for (std::size_t j = 0; j < cands_[alt].size(); ++j) {
      const auto& c = cands_[alt][j];
      if (!covers(value, c.reserve_cost)) continue;
      const std::size_t id = class_of(c, a);
      auto& known = rooms[id];
      Room* same = nullptr;
      bool none = false;
      for (Room& r : known) {
        if (r.none && within(r.need, need)) {
          none = true;
          if (nones != nullptr) {
            nones->emplace_back(id, static_cast<std::size_t>(&r - known.data()));
          }
          break;
        }
        if (r.found && within(need, r.need) && untouched(r)) return &r;
        if (r.need == need) same = &r;
      }
      if (none) continue;
      if (same == nullptr) {
        known.push_back(Room{need, false, false, 0, {}, false, {}});
        same = &known.back();
      }
      Room& r = *same;
      if (r.found && packer_.find(s.real, a, c.model, c.profile, nullptr, true, probe, &r.nodes)) {
        found_at(r, pos);
        return &r;
      }
      if (packer_.find(s.real, a, c.model, c.profile, nullptr, true, probe)) {
        found_at(r, pos);
        return &r;
      }
      r.none = true;
      r.found = false;
      r.hosts_known = false;
      if (nones != nullptr) {
        nones->emplace_back(id, static_cast<std::size_t>(&r - known.data()));
      }
    }
    return nullptr;
  };
  // The nodes where one replica of a none record's demands fitted once (computed on first use,
  // as the run stands).
  AlternativeData shape;
  const auto hosts_of = [&](const RoomRef& ref) -> const std::vector<int>& {
    Room& r = rooms[ref.first][ref.second];
    if (!r.hosts_known) {
      std::size_t id = ref.first;  // the class index's parts, as class_of makes it
      shape.locality = static_cast<Locality>(id % kLocalities);
      id /= kLocalities;
      shape.kind = static_cast<UnitKind>(id % kKinds);
      id /= kKinds;
      const int profile = static_cast<int>(id % kProfiles) - 1;
      const int model = static_cast<int>(id / kProfiles);
      shape.gpus = static_cast<int>(r.need[0]);
      shape.milli = static_cast<int>(r.need[1]);
      shape.replicas = static_cast<int>(r.need[2]);
      shape.cpu_milli = r.need[3];
      shape.memory_mib = r.need[4];
      packer_.hosts(s.real, shape, model, profile, r.hosts);
      r.hosts_known = true;
    }
    return r.hosts;
  };
  // Whether the blocked item `alt` blocks open winner `b`: `b`'s nodes, freed of it, hold the
  // item (no evictions, the wallets as they stand), and with the item there `b` finds room
  // nowhere else (first fit, no evictions): one that still does would win below the item
  // without taking its room. Room for `b`'s shape off its own nodes as the run stands is still
  // there then (no trial needed); a shape that must sit on one node and has room nowhere as the
  // run stands can only find it on its own nodes. A gang that may spread (locality any, rack,
  // zone) and has room nowhere as the run stands can only find it on its own nodes and those
  // where one of its replicas fits now (each node takes the same replicas whatever the others
  // do; Packer::hosts), so the search is restricted to those.
  std::vector<RoomRef> nones;
  std::vector<int> reach;
  std::vector<Replica> saved;
  const auto blocks = [&](int b, int alt, double value, std::size_t pos) {
    const Open& o = open[b];
    const auto& ao = p_.alternatives[o.alt];
    const Room* r = room_at(o.alt, ao.value, pos, &nones);
    if (r != nullptr && std::none_of(r->nodes.begin(), r->nodes.end(), [&](int n) {
          return std::binary_search(o.nodes.begin(), o.nodes.end(), n);
        })) {
      return false;
    }
    const std::vector<int>* only = nullptr;
    if (r == nullptr && (ao.replicas == 1 || on_one_node(ao))) {
      only = &o.nodes;
    } else if (r == nullptr) {
      reach = o.nodes;
      for (const RoomRef& ref : nones) {
        const auto& hosts = hosts_of(ref);
        reach.insert(reach.end(), hosts.begin(), hosts.end());
      }
      std::sort(reach.begin(), reach.end());
      reach.erase(std::unique(reach.begin(), reach.end()), reach.end());
      only = &reach;
    }
    remove_win(s, b, &saved);
    bool blocked = try_place(s, alt, value, false, true, false, trial, nullptr, true, &o.nodes);
    if (blocked) {
      commit_win(s, alt, std::move(trial));
      blocked = !try_place(s, o.alt, ao.value, false, true, false, elsewhere, nullptr, false, only);
      remove_win(s, p_.alternatives[alt].bid, &trial);
    }
    commit_win(s, o.alt, std::move(saved));
    return blocked;
  };
  std::vector<int> candidates;
  std::vector<int> seen(p_.bids.size(), -1);  // the last position that listed it
  // What the pass reads of the item at each position, gathered once (in order, where the items
  // themselves lie scattered).
  struct Item {
    double value;
    double score;
    int bid;
    int wallet;
  };
  std::vector<Item> items(order_.size());
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    const auto& a = p_.alternatives[order_[pos]];
    items[pos] = {a.value, score_[order_[pos]], a.bid, p_.bids[a.bid]};
  }
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    const Item& item = items[pos];
    const int bid = item.bid;
    if (s.alt_of_bid[bid] >= 0) continue;
    const int alt = order_[pos];
    const bool searched = greedy_searched_[pos] != 0;
    const bool blocked = searched && greedy_rank_of_bid_[bid] != static_cast<int>(pos);
    const int w = item.wallet;
    const double value = item.value;
    const double slack = p_.wallets[w] - s.wallet_spent[w];  // before this item's outcome
    if (blocked) {
      candidates.clear();
      const auto kind = static_cast<std::size_t>(p_.alternatives[alt].kind);
      const auto list = [&](int n) {
        for (const auto& [b, gpus] : node_open[n][kind]) {
          if (seen[b] == static_cast<int>(pos)) continue;
          seen[b] = static_cast<int>(pos);
          candidates.push_back(b);
        }
      };
      if (indexed) {
        const std::int64_t need = need_of(alt);
        for (std::uint64_t bits = alt_pools_[alt]; bits != 0; bits &= bits - 1) {
          by_potential[static_cast<std::size_t>(__builtin_ctzll(bits))].each_from(need, list);
        }
      } else {
        for (int n = 0; n < static_cast<int>(p_.nodes.size()); ++n) list(n);
      }
      for (int b : candidates) {
        if ((open_pools[b] & alt_pools_[alt]) == 0 || own_loser(b, bid) || !may_fit(b, alt)) {
          continue;
        }
        if (blocks(b, alt, value, pos)) {
          threshold[b] = std::max(threshold[b], item.score * scale[b]);
          close(b);
        }
      }
    }
    // The run's own outcome at this position, repeated from its record (no search).
    const bool won = greedy_rank_of_bid_[bid] == static_cast<int>(pos);
    if (won) {
      if (!greedy_evictions_[pos].empty()) {
        for (auto& known : rooms) known.clear();
      }
      for (int i : greedy_evictions_[pos]) {
        evict(s, i);
        for (const auto& r : p_.incumbents[i].placements) update_potential(r.node);
      }
      commit_win(s, alt, g.placements[bid]);
      for (const auto& r : g.placements[bid]) {
        update_potential(r.node);
        touched[r.node] = pos + 1;
      }
    }
    if (!wallet_open[w].empty()) {
      // The wallet's side of each open winner wb: the run without wb has wb's value back in the
      // wallet, less what the wallet's blocked items take with it, plus what its won items no
      // longer take (extra: the difference from the run's spending). wb still wins just
      // above the next item while the wallet covers that item's score at wb's size; the first
      // time it no longer does, wb's threshold is the score of this item (the last interval
      // where it won).
      const double next = pos + 1 < order_.size() ? items[pos + 1].score : 0.0;
      int room = -1;  // whether this item had room, computed when needed
      auto& list = wallet_open[w];
      for (std::size_t i = 0; i < list.size();) {
        WalletOpen& o = list[i];
        double avail = slack + o.value - o.extra;
        const bool won_before =
            !o.won.empty() && std::find(o.won.begin(), o.won.end(), bid) != o.won.end();
        if (won) {
          if (!won_before && value <= avail + kEps * std::max(1.0, avail)) {
            avail -= value;
          } else {
            o.extra -=
                value;  // without it the bid has won already or its wallet no longer covers it
          }
        } else if (!searched && !won_before && value <= avail + kEps * std::max(1.0, avail) &&
                   !own_loser(o.bid, bid)) {
          if (room < 0) room = room_at(alt, value, pos) != nullptr ? 1 : 0;
          if (room == 1) {
            o.extra += value;
            avail -= value;
            o.won.push_back(bid);
          }
        }
        if (std::max(o.floor, next * o.size) > avail + kEps * std::max(1.0, avail)) {
          threshold[o.bid] = std::max(threshold[o.bid], item.score * o.size);
          list[i] = std::move(list.back());
          list.pop_back();
        } else {
          ++i;
        }
      }
    }
    if (won && priced[bid] && sol.alt_of_bid[bid] == alt) {
      wallet_open[w].push_back({bid, value, scale[bid], floor[bid], 0.0, {}});
      Open& o = open[bid];
      o.alt = alt;
      open_pools[bid] = alt_pools_[alt];
      for (const auto& r : s.placements[bid]) o.nodes.push_back(r.node);
      std::sort(o.nodes.begin(), o.nodes.end());
      o.nodes.erase(std::unique(o.nodes.begin(), o.nodes.end()), o.nodes.end());
      o.cpu = p_.alternatives[alt].cpu_milli;
      o.memory = p_.alternatives[alt].memory_mib;
      o.on.assign(o.nodes.size(), {0, 0});
      for (const auto& r : s.placements[bid]) {
        const auto k = std::lower_bound(o.nodes.begin(), o.nodes.end(), r.node) - o.nodes.begin();
        o.on[static_cast<std::size_t>(k)][0] += static_cast<int>(r.gpus.size());
        o.on[static_cast<std::size_t>(k)][1] += 1;
      }
      for (std::size_t k = 0; k < o.nodes.size(); ++k) {
        const int n = o.nodes[k];
        const std::size_t kind = kind_of(bid);
        node_open[n][kind].emplace_back(bid, o.on[k][0]);
        if (o.on[k][0] > held[n][kind]) {
          held[n][kind] = o.on[k][0];
          update_potential(n);
        }
      }
    }
  }
  for (std::size_t b = 0; b < p_.bids.size(); ++b) {
    if (priced[b]) pay[b] = std::min(pay[b], std::max(floor[b], threshold[b]));
  }
  return pay;
}

}  // namespace gpualloc
