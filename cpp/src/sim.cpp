#include "gpualloc/sim.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>

namespace gpualloc {
namespace {

constexpr int kWhole = 1000;

std::string at(const char* what, std::size_t i) {
  return std::string(what) + "[" + std::to_string(i) + "]";
}

bool model_ok(const SimPod& pod, int model) {
  if (pod.models == 0) return true;
  return model >= 0 && model < 64 && ((pod.models >> model) & 1u);
}

/// The share's GPU on a node by `score(i)` (called with GPU i's free milli already holding the
/// pod in `free`): GPUs with room, one per distinct free milli, the first best winning ties.
template <typename Score>
double best_share_gpu(const SimPod& pod, int first, int count, std::array<int, 64>& free,
                      SimPlacement& out, Score score) {
  double best = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < count; ++i) {
    if (free[i] < pod.milli) continue;
    bool seen = false;  // GPUs with equal free milli give equal results: the first one counts
    for (int j = 0; j < i && !seen; ++j) seen = free[j] == free[i];
    if (seen) continue;
    free[i] -= pod.milli;
    const double value = score(i);
    free[i] += pod.milli;
    if (value > best) {  // strict: the first GPU wins ties
      best = value;
      out.gpus.assign(1, first + i);
    }
  }
  return best;
}

}  // namespace

SimCluster::SimCluster(std::vector<std::int64_t> cpu_milli, std::vector<std::int64_t> memory_mib,
                       std::vector<int> model, std::vector<int> gpus,
                       std::vector<double> model_memory_gb)
    : cpu_cap_(std::move(cpu_milli)),
      mem_cap_(std::move(memory_mib)),
      node_model_(std::move(model)),
      model_memory_gb_(std::move(model_memory_gb)) {
  const std::size_t n = cpu_cap_.size();
  if (mem_cap_.size() != n) throw InputError("memory_mib", "one entry per node");
  if (node_model_.size() != n) throw InputError("model", "one entry per node");
  if (gpus.size() != n) throw InputError("gpus", "one entry per node");
  if (model_memory_gb_.size() > 64) throw InputError("model_memory_gb", "at most 64 models");
  for (std::size_t m = 0; m < model_memory_gb_.size(); ++m) {
    if (!(std::isfinite(model_memory_gb_[m]) && model_memory_gb_[m] > 0)) {
      throw InputError(at("model_memory_gb", m), "must be positive");
    }
  }
  gpu_first_.assign(n + 1, 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (cpu_cap_[i] < 0) throw InputError(at("cpu_milli", i), "must be >= 0");
    if (mem_cap_[i] < 0) throw InputError(at("memory_mib", i), "must be >= 0");
    if (gpus[i] < 0 || gpus[i] > 64) throw InputError(at("gpus", i), "must be in [0, 64]");
    if (gpus[i] > 0 &&
        (node_model_[i] < 0 || node_model_[i] >= static_cast<int>(model_memory_gb_.size()))) {
      throw InputError(at("model", i), "a node with GPUs needs a model index in range");
    }
    gpu_first_[i + 1] = gpu_first_[i] + gpus[i];
    for (int g = 0; g < gpus[i]; ++g) {
      gpu_node_.push_back(static_cast<int>(i));
      gpu_model_.push_back(std::max(node_model_[i], 0));
    }
  }
  cpu_free_ = cpu_cap_;
  mem_free_ = mem_cap_;
  gpu_free_.assign(gpu_node_.size(), kWhole);
  total_milli_ = static_cast<std::int64_t>(gpu_node_.size()) * kWhole;
  node_frag_.assign(n, 0.0);
}

void SimCluster::set_workload(Workload workload) {
  workload_ = std::move(workload);
  need_ = typical_need(workload_);
  for (int n = 0; n < nodes(); ++n) refresh_fragment(n);
}

void SimCluster::set_pattern(PatternValues values, double reserve_weight) {
  if (!(std::isfinite(reserve_weight) && reserve_weight >= 0 && reserve_weight <= 100)) {
    throw InputError("reserve_weight", "must be in [0, 100]");
  }
  pattern_ = std::move(values);
  reserve_weight_ = reserve_weight;
}

void SimCluster::set_node_order(std::vector<int> order) {
  if (!order.empty()) {
    if (static_cast<int>(order.size()) != nodes()) {
      throw InputError("node_order", "must list every node once");
    }
    std::vector<std::uint8_t> seen(order.size(), 0);
    for (int n : order) {
      if (n < 0 || n >= nodes() || seen[n]) {
        throw InputError("node_order", "must list every node once");
      }
      seen[n] = 1;
    }
  }
  node_order_ = std::move(order);
}

void SimCluster::check_pod(const SimPod& pod) const {
  if (pod.cpu_milli < 0) throw InputError("pod.cpu_milli", "must be >= 0");
  if (pod.memory_mib < 0) throw InputError("pod.memory_mib", "must be >= 0");
  if (pod.gpus < 0 || pod.gpus > 64) throw InputError("pod.gpus", "must be in [0, 64]");
  if (pod.gpus > 0 && (pod.milli < 1 || pod.milli > kWhole)) {
    throw InputError("pod.milli", "must be in [1, 1000] for a GPU pod");
  }
  if (pod.gpus > 1 && pod.milli != kWhole) {
    throw InputError("pod.milli", "a pod of several GPUs takes them whole (1000)");
  }
  if (pod.gpus == 0 && pod.milli != 0) throw InputError("pod.milli", "must be 0 without GPUs");
}

bool SimCluster::node_fits(const SimPod& pod, int n) const {
  if (cpu_free_[n] < pod.cpu_milli || mem_free_[n] < pod.memory_mib) return false;
  if (pod.gpus == 0) return true;
  if (!model_ok(pod, node_model_[n])) return false;
  int enough = 0;
  for (int g = gpu_first_[n]; g < gpu_first_[n + 1]; ++g) enough += gpu_free_[g] >= pod.milli;
  return enough >= pod.gpus;
}

double SimCluster::fragment_of(int n, const int* free, std::int64_t cpu) const {
  return workload_.node_fragment(free, gpu_model_.data() + gpu_first_[n], gpu_count(n), cpu);
}

void SimCluster::refresh_fragment(int n) {
  const int first = gpu_first_[n];
  node_frag_[n] = fragment_of(n, gpu_free_.data() + first, cpu_free_[n]);
}

double SimCluster::node_fragment(int n) const {
  if (n < 0 || n >= nodes()) throw InputError("node", "out of range");
  return node_frag_[n];
}

double SimCluster::fragment_milli() const {
  double total = 0;
  for (double f : node_frag_) total += f;
  return total;
}

void SimCluster::default_gpus(const SimPod& pod, int n, SimPlacement& out) const {
  out.node = n;
  out.milli = pod.milli;
  out.gpus.clear();
  if (pod.gpus == 0) return;
  if (pod.milli < kWhole) {  // best fit: the least free milli that still fits
    int best = -1;
    for (int g = gpu_first_[n]; g < gpu_first_[n + 1]; ++g) {
      if (gpu_free_[g] >= pod.milli && (best < 0 || gpu_free_[g] < gpu_free_[best])) best = g;
    }
    out.gpus.push_back(best);
    return;
  }
  for (int g = gpu_first_[n]; g < gpu_first_[n + 1] && static_cast<int>(out.gpus.size()) < pod.gpus;
       ++g) {
    if (gpu_free_[g] == kWhole) out.gpus.push_back(g);
  }
}

double SimCluster::fgd_on_node(const SimPod& pod, int n, SimPlacement& out) const {
  const int first = gpu_first_[n];
  const int count = gpu_count(n);
  std::array<int, 64> free{};
  std::copy(gpu_free_.begin() + first, gpu_free_.begin() + first + count, free.begin());
  const std::int64_t cpu = cpu_free_[n] - pod.cpu_milli;
  const double before = node_frag_[n];
  out.node = n;
  out.milli = pod.milli;
  out.gpus.clear();
  if (pod.gpus == 0 || pod.milli == kWhole) {  // fully free GPUs are interchangeable
    default_gpus(pod, n, out);
    for (int g : out.gpus) free[g - first] = 0;
    return fgd_score(fragment_of(n, free.data(), cpu) - before);
  }
  return best_share_gpu(pod, first, count, free, out, [&](int /*i*/) {
    return fgd_score(fragment_of(n, free.data(), cpu) - before);
  });
}

double SimCluster::stranded_of(int n, const int* free, std::int64_t cpu,
                               std::int64_t memory) const {
  double idle = 0;
  for (int i = 0; i < gpu_count(n); ++i) idle += free[i];
  return stranded_milli(idle, cpu, memory, need_);
}

double SimCluster::pattern_on_node(const SimPod& pod, int n, SimPlacement& out) const {
  // Steps 2 and 3 of the rule: FGD's score of the fragmentation growth plus the reserve's
  // growth; step 1 (shares): the least loss of pattern value first.
  const int first = gpu_first_[n];
  const int count = gpu_count(n);
  std::array<int, 64> free{};
  std::copy(gpu_free_.begin() + first, gpu_free_.begin() + first + count, free.begin());
  const std::int64_t cpu = cpu_free_[n] - pod.cpu_milli;
  const std::int64_t memory = mem_free_[n] - pod.memory_mib;
  const double frag_before = node_frag_[n];
  const double strand_before = stranded_of(n, free.data(), cpu_free_[n], mem_free_[n]);
  const auto growth = [&]() {
    return fragment_of(n, free.data(), cpu) - frag_before +
           reserve_weight_ * (stranded_of(n, free.data(), cpu, memory) - strand_before);
  };
  out.node = n;
  out.milli = pod.milli;
  out.gpus.clear();
  if (pod.gpus == 0 || pod.milli == kWhole) {  // fully free GPUs are interchangeable
    default_gpus(pod, n, out);
    for (int g : out.gpus) free[g - first] = 0;
    return -pattern_key(0.0, -fgd_score(growth()));
  }
  return best_share_gpu(pod, first, count, free, out, [&](int i) {
    const double loss = pattern_.loss(free[i] + pod.milli, pod.milli);  // free[i] holds the pod
    return -pattern_key(loss, -fgd_score(growth()));
  });
}

double SimCluster::fgd_score(double delta_milli) const {
  // The authors' plugin maps the fragmentation decrease through a sigmoid onto the framework's
  // integer 0..100 scale (truncated), so decreases a few hundredths of a GPU apart tie.
  if (exact_scores_) return -delta_milli;
  return std::trunc(100.0 / (1.0 + std::exp(delta_milli / 1000.0)));
}

double SimCluster::truncate(double score) const {
  return exact_scores_ ? score : std::trunc(score);
}

double SimCluster::score_on_node(const SimPod& pod, SimPolicy policy, int n,
                                 SimPlacement& out) const {
  constexpr double kCpuScale = 128000.0;  // the largest node's CPU in openb (milli)
  constexpr double kGpuScale = 8000.0;    // eight GPUs (milli)
  const double gpu_req = static_cast<double>(pod.gpus) * pod.milli;
  double gpu_left = 0;
  bool all_free = true;
  for (int g = gpu_first_[n]; g < gpu_first_[n + 1]; ++g) {
    gpu_left += gpu_free_[g];
    all_free = all_free && gpu_free_[g] == kWhole;
  }
  const auto cpu_left = static_cast<double>(cpu_free_[n]);
  const auto cpu_req = static_cast<double>(pod.cpu_milli);
  switch (policy) {
    case SimPolicy::BestFit: {
      default_gpus(pod, n, out);
      const double s =
          0.5 * (cpu_left - cpu_req) / kCpuScale + 0.5 * (gpu_left - gpu_req) / kGpuScale;
      return truncate((1.0 - s) * 100.0);
    }
    case SimPolicy::DotProd: {
      default_gpus(pod, n, out);
      const double dot = (cpu_left / kCpuScale) * (cpu_req / kCpuScale) +
                         (gpu_left / kGpuScale) * (gpu_req / kGpuScale);
      return truncate(100.0 * (1.0 - dot / 2.0));
    }
    case SimPolicy::GpuPacking: {
      default_gpus(pod, n, out);
      if (pod.gpus == 0) return 0;
      const int count = gpu_count(n);
      if (all_free) return std::max(33 - count, count);
      int fully_free_used = 0;  // (integer arithmetic, as the plugin's)
      std::int64_t left_points = 0;
      for (int g : out.gpus) {
        fully_free_used += gpu_free_[g] == kWhole;
        left_points += gpu_free_[g] * 100 / kWhole;
      }
      if (fully_free_used > 0) return std::max(50 - fully_free_used, 33);
      return static_cast<double>(std::max<std::int64_t>(100 - left_points / 10, 50));
    }
    case SimPolicy::Fgd:
      return fgd_on_node(pod, n, out);
    case SimPolicy::Pattern:
      return pattern_on_node(pod, n, out);
    case SimPolicy::KaiBinpack: {
      default_gpus(pod, n, out);
      const double cap = static_cast<double>(gpu_count(n)) * kWhole;
      return cap > 0 ? (cap - gpu_left + gpu_req) / cap : 0.0;
    }
    case SimPolicy::Random:
    case SimPolicy::Fifo:
      break;
  }
  default_gpus(pod, n, out);
  return 0;
}

bool SimCluster::choose(const SimPod& pod, SimPolicy policy, std::mt19937_64& rng,
                        SimPlacement& out) const {
  check_pod(pod);
  out = SimPlacement{};
  const int n_nodes = nodes();
  if (policy == SimPolicy::Fifo) {
    for (int n = 0; n < n_nodes; ++n) {
      if (!node_fits(pod, n)) continue;
      out.node = n;
      out.milli = pod.milli;
      int need = pod.gpus;  // first fit inside the node too
      for (int g = gpu_first_[n]; g < gpu_first_[n + 1] && need > 0; ++g) {
        if (gpu_free_[g] >= pod.milli) {
          out.gpus.push_back(g);
          --need;
        }
      }
      return true;
    }
    return false;
  }
  if (policy == SimPolicy::Random) {  // one feasible node drawn uniformly (whatever the ties)
    std::vector<int> feasible;
    for (int n = 0; n < n_nodes; ++n) {
      if (node_fits(pod, n)) feasible.push_back(n);
    }
    if (feasible.empty()) return false;
    default_gpus(pod,
                 feasible[std::uniform_int_distribution<std::size_t>(0, feasible.size() - 1)(rng)],
                 out);
  } else {
    choose_best(pod, policy, rng, out);
  }
  if (out.node < 0) return false;
  if (policy == SimPolicy::Random && pod.gpus == 1 && pod.milli < kWhole) {
    // The random policy also draws the GPU among those with room.
    std::vector<int> room;
    for (int g = gpu_first_[out.node]; g < gpu_first_[out.node + 1]; ++g) {
      if (gpu_free_[g] >= pod.milli) room.push_back(g);
    }
    out.gpus.assign(1, room[std::uniform_int_distribution<std::size_t>(0, room.size() - 1)(rng)]);
  }
  return true;
}

void SimCluster::choose_best(const SimPod& pod, SimPolicy policy, std::mt19937_64& rng,
                             SimPlacement& out) const {
  const int n_nodes = nodes();
  // Highest integer score wins; equal scores go to the first node in the scoring order, or with
  // random ties to a uniformly random one (reservoir draw, as kube-scheduler's selectHost).
  double best = -std::numeric_limits<double>::infinity();
  std::int64_t ties = 0;
  SimPlacement cand;
  for (int k = 0; k < n_nodes; ++k) {
    const int n = node_order_.empty() ? k : node_order_[k];
    if (!node_fits(pod, n)) continue;
    const double score = score_on_node(pod, policy, n, cand);
    if (score > best) {
      best = score;
      ties = 1;
      out = cand;
    } else if (score == best && random_ties_) {
      ++ties;
      if (std::uniform_int_distribution<std::int64_t>(0, ties - 1)(rng) == 0) out = cand;
    }
  }
}

bool SimCluster::fits(const SimPod& pod, const SimPlacement& pl) const {
  if (pl.node < 0 || pl.node >= nodes()) return false;
  if (pl.milli != pod.milli || static_cast<int>(pl.gpus.size()) != pod.gpus) return false;
  if (cpu_free_[pl.node] < pod.cpu_milli || mem_free_[pl.node] < pod.memory_mib) return false;
  if (pod.gpus > 0 && !model_ok(pod, node_model_[pl.node])) return false;
  for (std::size_t i = 0; i < pl.gpus.size(); ++i) {
    const int g = pl.gpus[i];
    if (g < gpu_first_[pl.node] || g >= gpu_first_[pl.node + 1]) return false;
    if (gpu_free_[g] < pod.milli) return false;
    for (std::size_t j = 0; j < i; ++j) {
      if (pl.gpus[j] == g) return false;
    }
  }
  return true;
}

bool SimCluster::choose_on_node(const SimPod& pod, SimPolicy policy, int n,
                                SimPlacement& out) const {
  check_pod(pod);
  if (n < 0 || n >= nodes()) throw InputError("node", "out of range");
  out = SimPlacement{};
  if (!node_fits(pod, n)) return false;
  score_on_node(pod, policy, n, out);
  return true;
}

bool SimCluster::model_allows(const SimPod& pod, int n) const {
  if (n < 0 || n >= nodes()) throw InputError("node", "out of range");
  return pod.gpus == 0 || model_ok(pod, node_model_[n]);
}

void SimCluster::apply(const SimPod& pod, const SimPlacement& pl, int sign) {
  check_pod(pod);
  if (sign != 1 && sign != -1) throw InputError("sign", "must be +1 or -1");
  if (sign > 0) {
    if (!fits(pod, pl)) throw InputError("placement", "does not fit the current state");
  } else {
    if (pl.node < 0 || pl.node >= nodes() || static_cast<int>(pl.gpus.size()) != pod.gpus) {
      throw InputError("placement", "is not a placement of this pod");
    }
    if (cpu_free_[pl.node] + pod.cpu_milli > cpu_cap_[pl.node] ||
        mem_free_[pl.node] + pod.memory_mib > mem_cap_[pl.node]) {
      throw InputError("placement", "releases more CPU or memory than the node holds");
    }
    for (int g : pl.gpus) {
      if (g < gpu_first_[pl.node] || g >= gpu_first_[pl.node + 1] ||
          gpu_free_[g] + pod.milli > kWhole) {
        throw InputError("placement", "releases milli-GPU that was not held");
      }
    }
  }
  cpu_free_[pl.node] -= sign * pod.cpu_milli;
  mem_free_[pl.node] -= sign * pod.memory_mib;
  for (int g : pl.gpus) gpu_free_[g] -= sign * pod.milli;
  used_milli_ += static_cast<std::int64_t>(sign) * pod.milli * static_cast<int>(pl.gpus.size());
  refresh_fragment(pl.node);
}

ProblemData SimCluster::round_cluster() const {
  ProblemData pd;
  for (double mem : model_memory_gb_) {
    ModelData md;
    md.memory_gb = mem;
    pd.models.push_back(md);
  }
  for (int n = 0; n < nodes(); ++n) {
    NodeData nd;
    nd.cpu_milli = cpu_free_[n];
    nd.memory_mib = mem_free_[n];
    pd.nodes.push_back(nd);
    for (int g = gpu_first_[n]; g < gpu_first_[n + 1]; ++g) {
      GpuData gd;
      gd.node = n;
      gd.device = g - gpu_first_[n];
      gd.model = node_model_[n];
      gd.mode = GpuMode::Shared;
      gd.nvlink = n;
      gd.used_milli = kWhole - gpu_free_[g];
      pd.gpus.push_back(gd);
    }
  }
  return pd;
}

std::vector<int> SimCluster::add_round_bids(ProblemData& pd, const std::vector<SimPod>& pods,
                                            const std::vector<double>& values) const {
  std::vector<int> bid_pod;
  double value_total = 1.0;
  for (std::size_t i = 0; i < pods.size(); ++i) {
    const SimPod& q = pods[i];
    if (q.gpus == 0) continue;
    AlternativeData a;
    a.bid = static_cast<int>(bid_pod.size());
    a.value = values[i];
    a.kind = q.milli < kWhole ? UnitKind::Share : UnitKind::Whole;
    a.gpus = q.milli < kWhole ? 1 : q.gpus;
    a.milli = q.milli < kWhole ? q.milli : 0;
    a.replicas = 1;
    a.cpu_milli = q.cpu_milli;
    a.memory_mib = q.memory_mib;
    for (int m = 0; m < static_cast<int>(pd.models.size()); ++m) {
      if (model_ok(q, m)) a.models.push_back(m);
    }
    a.profiles.assign(a.models.size(), -1);
    a.locality = Locality::Any;
    if (a.models.empty()) continue;  // no model of the cluster allowed: it cannot win
    pd.bids.push_back(0);
    pd.alternatives.push_back(std::move(a));
    bid_pod.push_back(static_cast<int>(i));
    value_total += values[i];
  }
  pd.wallets.push_back(value_total);  // one wallet that covers every bid
  return bid_pod;
}

std::vector<SimPlacement> SimCluster::auction_round(const std::vector<SimPod>& pods,
                                                    const std::vector<double>& values,
                                                    const SimAuctionOptions& options) {
  if (values.size() != pods.size()) throw InputError("values", "one value per pod");
  for (std::size_t i = 0; i < pods.size(); ++i) {
    check_pod(pods[i]);
    if (!(std::isfinite(values[i]) && values[i] >= 0)) {
      throw InputError(at("values", i), "must be finite and >= 0");
    }
  }
  std::vector<SimPlacement> out(pods.size());
  ProblemData pd = round_cluster();
  const std::vector<int> bid_pod = add_round_bids(pd, pods, values);
  if (!bid_pod.empty()) {
    EngineOptions eo = options.engine;
    if (options.workload_hint) {
      eo.workload = workload_;
      if (eo.packing == Packing::Pattern && eo.pattern_values.empty()) {
        eo.pattern_values = pattern_;
        eo.reserve_weight = reserve_weight_;
      }
    }
    eo.node_order = node_order_;
    Engine engine(std::move(pd), eo);
    Solution sol = engine.greedy();
    if (options.local_search) {
      sol = engine.local(sol, options.time_limit_s, options.seed, options.max_iterations);
    }
    for (std::size_t b = 0; b < bid_pod.size(); ++b) {
      if (sol.alt_of_bid[b] < 0) continue;
      const int i = bid_pod[b];
      SimPlacement pl;
      const auto& reps = sol.placements[b];
      pl.node = reps.at(0).node;
      pl.milli = pods[i].milli;
      pl.gpus = reps[0].gpus;
      apply(pods[i], pl, +1);  // GPU indices of the round are this cluster's (same order)
      out[i] = std::move(pl);
    }
  }
  std::mt19937_64 rng(options.seed);  // CPU-only pods: FGD's score, or the pattern rule's
  const SimPolicy cpu_policy =
      options.engine.packing == Packing::Pattern ? SimPolicy::Pattern : SimPolicy::Fgd;
  for (std::size_t i = 0; i < pods.size(); ++i) {
    if (pods[i].gpus != 0) continue;
    SimPlacement pl;
    if (choose(pods[i], cpu_policy, rng, pl)) {
      apply(pods[i], pl, +1);
      out[i] = std::move(pl);
    }
  }
  return out;
}

}  // namespace gpualloc
