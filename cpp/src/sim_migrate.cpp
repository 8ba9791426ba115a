#include "gpualloc/sim_migrate.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

namespace gpualloc {
namespace {

/// A plan that worked: the moved pods, the pod's placement and theirs, and the fragmentation
/// it left.
struct Plan {
  std::vector<int> movers;
  SimPlacement placed;
  std::vector<SimPlacement> moved_to;
  double fragment = std::numeric_limits<double>::infinity();
};

/// What a pod asks for, as a key.
using Shape = std::tuple<std::int64_t, std::int64_t, int, int, std::uint64_t>;

bool holds(const SimPlacement& pl, int gpu) {
  return std::find(pl.gpus.begin(), pl.gpus.end(), gpu) != pl.gpus.end();
}

bool same_place(const SimPlacement& a, const SimPlacement& b) {
  return a.node == b.node && a.gpus == b.gpus;
}

/// The search of one call: the state it reads and the plans it tries.
class Search {
 public:
  Search(SimCluster& cluster, const std::vector<SimPod>& pods, std::vector<SimPlacement>& where,
         int pod, const SimMigrateOptions& options, std::mt19937_64& rng)
      : c_(cluster),
        pods_(pods),
        where_(where),
        pod_(pod),
        p_(pods[pod]),
        opt_(options),
        rng_(rng),
        on_node_(static_cast<std::size_t>(cluster.nodes())) {
    for (std::size_t i = 0; i < pods.size(); ++i) {
      const SimPlacement& w = where[i];
      if (w.node >= 0 && pods[i].gpus <= options.max_pod_gpus) {
        on_node_[static_cast<std::size_t>(w.node)].push_back(static_cast<int>(i));
      }
    }
    for (int g = 0; g < cluster.gpus(); ++g) hole_ = std::max(hole_, cluster.free_milli(g));
  }

  /// Fewest moves first; the best of the first `candidates` plans of that size.
  bool run() {
    for (int k = 1; k <= opt_.max_moves && !stop(); ++k) {
      const int n_nodes = c_.nodes();
      const auto& order = c_.node_order();
      for (int i = 0; i < n_nodes && !stop(); ++i) {
        search_node(order.empty() ? i : order[static_cast<std::size_t>(i)], k);
      }
      if (found_ > 0) break;
    }
    return found_ > 0;
  }

  /// Apply the best plan (found in the current state, so it fits) and list its moves.
  void apply_best(std::vector<SimMove>& moves) {
    for (int s : best_.movers) c_.apply(pods_[s], where_[s], -1);
    c_.apply(p_, best_.placed, +1);
    where_[pod_] = best_.placed;
    for (std::size_t j = 0; j < best_.movers.size(); ++j) {
      const int s = best_.movers[j];
      c_.apply(pods_[s], best_.moved_to[j], +1);
      if (!same_place(where_[s], best_.moved_to[j])) {
        moves.push_back(SimMove{s, where_[s], best_.moved_to[j]});
      }
      where_[s] = best_.moved_to[j];
    }
  }

 private:
  [[nodiscard]] bool stop() const {
    return found_ >= opt_.candidates || trials_ >= opt_.max_trials;
  }

  /// Sets of `k` pods on node n whose departure gives the pod room there (on each target GPU).
  void search_node(int n, int k) {
    const auto& here = on_node_[static_cast<std::size_t>(n)];
    if (static_cast<int>(here.size()) < k || !c_.model_allows(p_, n)) return;
    const bool short_host = c_.cpu_free(n) < p_.cpu_milli || c_.memory_free(n) < p_.memory_mib;
    if (p_.gpus == 0) {
      try_sets(n, -1, here, k);
      return;
    }
    for (int g = c_.first_gpu(n); g < c_.first_gpu(n) + c_.gpu_count(n) && !stop(); ++g) {
      if (c_.free_milli(g) >= p_.milli && !short_host) continue;  // not what keeps it out
      std::vector<int> cands;
      for (int s : here) {
        if (holds(where_[s], g)) cands.push_back(s);
      }
      if (short_host) {
        for (int s : here) {
          if (!holds(where_[s], g) && (pods_[s].cpu_milli > 0 || pods_[s].memory_mib > 0)) {
            cands.push_back(s);
          }
        }
      }
      try_sets(n, g, cands, k);
    }
  }

  /// Whether the pod would have room on node n (GPU `gpu`, -1: none needed) once the pods of
  /// `set` left, skipping position `skip` of it.
  [[nodiscard]] bool room(int n, int gpu, const std::vector<int>& set, std::size_t skip) const {
    std::int64_t cpu = c_.cpu_free(n), mem = c_.memory_free(n);
    std::int64_t milli = gpu >= 0 ? c_.free_milli(gpu) : 0;
    for (std::size_t j = 0; j < set.size(); ++j) {
      if (j == skip) continue;
      const SimPod& q = pods_[set[j]];
      cpu += q.cpu_milli;
      mem += q.memory_mib;
      if (gpu >= 0 && holds(where_[set[j]], gpu)) milli += q.milli;
    }
    return cpu >= p_.cpu_milli && mem >= p_.memory_mib && (gpu < 0 || milli >= p_.milli);
  }

  /// Every set of `k` of `cands` that gives room, and none of whose subsets does, tried.
  void try_sets(int n, int gpu, const std::vector<int>& cands, int k) {
    const int m = static_cast<int>(cands.size());
    if (m < k || !enough_in_top(n, gpu, cands, k)) return;
    std::vector<int> idx(static_cast<std::size_t>(k));
    for (int j = 0; j < k; ++j) idx[static_cast<std::size_t>(j)] = j;
    std::vector<int> set(static_cast<std::size_t>(k));
    const std::size_t none = set.size();
    while (!stop()) {
      for (int j = 0; j < k; ++j) {
        set[static_cast<std::size_t>(j)] = cands[static_cast<std::size_t>(idx[j])];
      }
      if (room(n, gpu, set, none)) {
        bool minimal = true;
        for (std::size_t j = 0; j < set.size() && minimal && k > 1; ++j) {
          minimal = !room(n, gpu, set, j);
        }
        if (minimal && could_return(gpu, set)) trial(n, set);
      }
      int j = k - 1;  // next combination in lexicographic order
      while (j >= 0 && idx[static_cast<std::size_t>(j)] == m - k + j) --j;
      if (j < 0) return;
      ++idx[static_cast<std::size_t>(j)];
      for (int t = j + 1; t < k; ++t) {
        idx[static_cast<std::size_t>(t)] = idx[static_cast<std::size_t>(t - 1)] + 1;
      }
    }
  }

  /// A necessary condition for any `k` of `cands` to give room: the `k` largest CPU, memory
  /// and milli on the target GPU, each on its own, cover what the pod lacks.
  [[nodiscard]] bool enough_in_top(int n, int gpu, const std::vector<int>& cands, int k) const {
    std::vector<std::int64_t> cpu, mem, milli;
    for (int s : cands) {
      cpu.push_back(pods_[s].cpu_milli);
      mem.push_back(pods_[s].memory_mib);
      milli.push_back(gpu >= 0 && holds(where_[s], gpu) ? pods_[s].milli : 0);
    }
    auto top = [k](std::vector<std::int64_t>& v) {
      std::sort(v.begin(), v.end(), std::greater<>());
      std::int64_t sum = 0;
      for (int j = 0; j < k && j < static_cast<int>(v.size()); ++j) sum += v[j];
      return sum;
    };
    if (c_.cpu_free(n) + top(cpu) < p_.cpu_milli) return false;
    if (c_.memory_free(n) + top(mem) < p_.memory_mib) return false;
    return gpu < 0 || c_.free_milli(gpu) + top(milli) >= p_.milli;
  }

  /// A quick necessary condition for a plan: each moved pod fits somewhere already (before
  /// the plan), or it is a share that fits what the pod leaves of the target GPU.
  bool could_return(int gpu, const std::vector<int>& set) {
    std::int64_t left = 0;
    if (gpu >= 0) {
      left = c_.free_milli(gpu) - p_.milli;
      for (int s : set) {
        if (holds(where_[s], gpu)) left += pods_[s].milli;
      }
    }
    for (int s : set) {
      const SimPod& q = pods_[s];
      if (q.gpus > 0 && q.gpus == 1 && q.milli <= left) continue;
      if (q.gpus == 0) continue;  // CPU-only: may go back to the node
      auto [it, fresh] =
          fits_now_.try_emplace(Shape{q.cpu_milli, q.memory_mib, q.gpus, q.milli, q.models}, false);
      if (fresh) {
        SimPlacement tmp;
        it->second = q.milli <= hole_ && c_.choose(q, SimPolicy::Fifo, rng_, tmp);
      }
      if (!it->second) return false;
    }
    return true;
  }

  /// Try the plan for real: release `set`, place the pod on n, place the set again anywhere;
  /// keep it if it is the best so far; undo.
  void trial(int n, std::vector<int> set) {
    ++trials_;
    std::sort(set.begin(), set.end(), [&](int a, int b) {
      const SimPod& x = pods_[a];
      const SimPod& y = pods_[b];
      const std::int64_t gx = static_cast<std::int64_t>(x.gpus) * x.milli;
      const std::int64_t gy = static_cast<std::int64_t>(y.gpus) * y.milli;
      if (gx != gy) return gx > gy;
      if (x.cpu_milli != y.cpu_milli) return x.cpu_milli > y.cpu_milli;
      return a < b;
    });
    for (int s : set) c_.apply(pods_[s], where_[s], -1);
    Plan plan;
    plan.movers = set;
    bool ok = c_.choose_on_node(p_, opt_.policy, n, plan.placed);
    if (ok) c_.apply(p_, plan.placed, +1);
    for (std::size_t j = 0; ok && j < set.size(); ++j) {
      SimPlacement to;
      ok = c_.choose(pods_[set[j]], opt_.policy, rng_, to);
      if (ok) {
        c_.apply(pods_[set[j]], to, +1);
        plan.moved_to.push_back(std::move(to));
      }
    }
    if (ok) {
      plan.fragment = c_.fragment_milli();
      ++found_;
      if (plan.fragment < best_.fragment) best_ = plan;
    }
    for (std::size_t j = plan.moved_to.size(); j-- > 0;) {
      c_.apply(pods_[set[j]], plan.moved_to[j], -1);
    }
    if (plan.placed.node >= 0) c_.apply(p_, plan.placed, -1);  // applied if it was chosen
    for (int s : set) c_.apply(pods_[s], where_[s], +1);
  }

  SimCluster& c_;
  const std::vector<SimPod>& pods_;
  std::vector<SimPlacement>& where_;
  int pod_;
  const SimPod& p_;
  const SimMigrateOptions& opt_;
  std::mt19937_64& rng_;
  std::vector<std::vector<int>> on_node_;
  Plan best_;
  int found_ = 0;
  std::int64_t trials_ = 0;
  int hole_ = 0;                    // the most free milli of any GPU before the search
  std::map<Shape, bool> fits_now_;  // a moved pod's shape: fits somewhere before any plan
};

}  // namespace

bool place_with_moves(SimCluster& cluster, const std::vector<SimPod>& pods,
                      std::vector<SimPlacement>& where, int pod, const SimMigrateOptions& options,
                      std::mt19937_64& rng, std::vector<SimMove>& moves) {
  moves.clear();
  if (where.size() != pods.size()) throw InputError("where", "one placement per pod");
  if (pod < 0 || static_cast<std::size_t>(pod) >= pods.size()) {
    throw InputError("pod", "no such pod");
  }
  if (where[static_cast<std::size_t>(pod)].node >= 0) throw InputError("pod", "already placed");
  if (options.max_moves < 0) throw InputError("max_moves", "must be >= 0");
  if (options.candidates < 1) throw InputError("candidates", "must be >= 1");
  if (options.max_trials < 0) throw InputError("max_trials", "must be >= 0");
  if (options.max_pod_gpus < 0) throw InputError("max_pod_gpus", "must be >= 0");
  if (pods[static_cast<std::size_t>(pod)].gpus > 1 || options.max_moves == 0) return false;
  Search search(cluster, pods, where, pod, options, rng);
  if (!search.run()) return false;
  search.apply_best(moves);
  return true;
}

}  // namespace gpualloc
