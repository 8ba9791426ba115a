// The simulator's cluster: nodes with CPU, memory and GPUs measured in milli-GPU (the openb
// trace's model of a GPU cluster, where a GPU is either shared by fractional pods or taken
// whole), the one-pod-at-a-time placement policies the FGD paper compares, FGD's fragmentation
// measure, and rounds cleared by the auction engine on the same state.
//
// Policies, as the FGD paper's simulator (hkust-adsl/kubernetes-scheduler-simulator) scores
// them; docs/simulator.md gives the formulas and sources. Every score is an integer in 0..100
// (truncated, as the Kubernetes framework's are) and the highest wins. Equal scores go to the
// first node in the scoring order (a seeded permutation of the nodes): that, and not upstream
// kube-scheduler's uniformly random choice among equals (set_random_ties), reproduces the
// published figures (docs/simulator.md shows both). CPU is scaled by 128 cores and GPUs by
// eight, both constants:
//  - random: a feasible node at random (and, for a share, a GPU with room at random);
//  - fifo: the first feasible node in node order and its first GPUs with room (first fit);
//  - bestfit: 100 (1 - 0.5 CPU left - 0.5 GPU left after placement);
//  - dotprod: 100 (1 - <free, request> / 2), the smallest alignment wins;
//  - gpupacking: already-shared GPUs first (50..100), then partly used nodes (33..50), then idle
//    nodes;
//  - fgd: 100 sigmoid(fragmentation decrease / 1000 milli), trying every GPU with room;
//  - kai: KAI Scheduler's default bin-packing placement (as its documentation states it: fill a
//    node before the next, and with fractions a GPU before the next): the node with the largest
//    allocated share of its GPU milli after placement (not truncated), best-fit GPU;
//  - pattern: the pattern rule of pattern.hpp (shares: the least loss of pattern value, then
//    FGD's score of fragmentation growth plus the CPU and memory reserve; other pods: that score),
//    trying every GPU with room. Without pattern values (set_pattern) every loss is 0.
// Shares go to the best-fit GPU (least free milli that fits) except under random, fgd and fifo;
// whole GPUs are the node's lowest-index fully free ones. A CPU-only pod needs CPU and memory.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gpualloc/auction.hpp"
#include "gpualloc/fragmentation.hpp"
#include "gpualloc/pattern.hpp"
#include "gpualloc/problem.hpp"

namespace gpualloc {

/// What a pod asks for: CPU, memory, `gpus` GPUs each with `milli` free (1000: whole GPUs;
/// below 1000 only with gpus == 1), on a model whose bit is set in `models` (0: any model).
struct SimPod {
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  int gpus = 0;
  int milli = 0;
  std::uint64_t models = 0;
};

enum class SimPolicy : std::uint8_t {
  Random = 0,
  Fifo = 1,
  BestFit = 2,
  DotProd = 3,
  GpuPacking = 4,
  Fgd = 5,
  KaiBinpack = 6,
  Pattern = 7,
};

/// Where a pod went: node and its GPUs (global GPU indices), each given `milli`.
struct SimPlacement {
  int node = -1;
  int milli = 0;
  std::vector<int> gpus;
};

/// Options of an auction round (see SimCluster::auction_round).
struct SimAuctionOptions {
  /// The engine's options (alpha, fragment_scale). Its node order is the cluster's
  /// (set_node_order) and, with `workload_hint`, its workload the cluster's (set_workload).
  EngineOptions engine;
  /// Give the engine the target workload for its packing (otherwise `engine.workload`, by
  /// default empty: the round's own bids), and with `engine.packing` Pattern and no
  /// `engine.pattern_values`, the cluster's pattern values and reserve weight (set_pattern).
  bool workload_hint = true;
  /// Improve the greedy allocation by local search, seeded by `seed`, until `time_limit_s`
  /// seconds or `max_iterations` moves (-1: no limit; with a limit and a time limit that does
  /// not bind, the round is deterministic).
  bool local_search = false;
  double time_limit_s = 1.0;
  std::int64_t max_iterations = -1;
  std::uint64_t seed = 0;
};

class SimCluster {
 public:
  /// Nodes with their CPU (milli), memory (MiB), GPU model (index < `models`, -1 with no GPU)
  /// and GPU count; `model_memory_gb` per model. Throws InputError naming a bad field.
  SimCluster(std::vector<std::int64_t> cpu_milli, std::vector<std::int64_t> memory_mib,
             std::vector<int> model, std::vector<int> gpus, std::vector<double> model_memory_gb);

  /// FGD's target workload (also given to the engine in auction rounds); its GPU tasks' CPU and
  /// memory per GPU are the pattern rule's reserve.
  void set_workload(Workload workload);
  /// The pattern rule's values and the weight of its CPU and memory reserve (pattern.hpp; also
  /// given to the engine in auction rounds with a workload hint and packing Pattern).
  void set_pattern(PatternValues values, double reserve_weight = kDefaultReserveWeight);
  [[nodiscard]] const PatternValues& pattern_values() const { return pattern_; }
  [[nodiscard]] double reserve_weight() const { return reserve_weight_; }

  /// Choose a placement for `pod` under `policy` (nothing changes). False: it fits nowhere.
  bool choose(const SimPod& pod, SimPolicy policy, std::mt19937_64& rng, SimPlacement& out) const;
  /// Whether `pl` is a legal placement of `pod` in the current state.
  [[nodiscard]] bool fits(const SimPod& pod, const SimPlacement& pl) const;
  /// Choose a placement for `pod` on node `n` only, as `policy` would there (nothing changes).
  /// False: it does not fit on n. (For migration: sim_migrate.hpp.)
  bool choose_on_node(const SimPod& pod, SimPolicy policy, int n, SimPlacement& out) const;
  /// Whether node n's GPU model is one `pod` allows (always true for a pod without GPUs).
  [[nodiscard]] bool model_allows(const SimPod& pod, int n) const;
  /// Apply (`sign` +1) or release (-1) a placement. InputError if it does not fit / was not held.
  void apply(const SimPod& pod, const SimPlacement& pl, int sign);

  /// Clear one auction round with the engine: every pod of `pods` that needs a GPU is a bid of
  /// value `values[i]` (one wallet that never binds, no reserve); the engine's greedy (or local
  /// search) decides; winners are applied. Pods without a GPU are placed by FGD's score, or
  /// with packing Pattern by the pattern policy's (the market sells GPUs). Returns one
  /// placement per pod (node -1: not placed).
  std::vector<SimPlacement> auction_round(const std::vector<SimPod>& pods,
                                          const std::vector<double>& values,
                                          const SimAuctionOptions& options);

  /// Exact scores: no truncation to integers (ties then need equal real scores), FGD scored by
  /// the fragmentation growth itself. Off by default (the published experiment truncates).
  void set_exact_scores(bool exact) { exact_scores_ = exact; }
  /// Equal scores: a uniformly random node (true, default) or the first in node order.
  void set_random_ties(bool random) { random_ties_ = random; }
  /// The order in which nodes are scored (a permutation; empty: index order).
  void set_node_order(std::vector<int> order);

  /// FGD fragmentation of node n (milli-GPU), against the target workload.
  [[nodiscard]] double node_fragment(int n) const;
  /// Sum of node_fragment over all nodes (milli-GPU).
  [[nodiscard]] double fragment_milli() const;

  [[nodiscard]] std::int64_t total_milli() const { return total_milli_; }
  [[nodiscard]] std::int64_t used_milli() const { return used_milli_; }
  [[nodiscard]] int nodes() const { return static_cast<int>(cpu_cap_.size()); }
  [[nodiscard]] int gpus() const { return static_cast<int>(gpu_node_.size()); }
  [[nodiscard]] int free_milli(int g) const { return gpu_free_[g]; }
  [[nodiscard]] std::int64_t cpu_free(int n) const { return cpu_free_[n]; }
  [[nodiscard]] std::int64_t memory_free(int n) const { return mem_free_[n]; }
  [[nodiscard]] int first_gpu(int n) const { return gpu_first_[n]; }
  [[nodiscard]] int gpu_count(int n) const { return gpu_first_[n + 1] - gpu_first_[n]; }
  /// The order in which nodes are scored (empty: index order).
  [[nodiscard]] const std::vector<int>& node_order() const { return node_order_; }

 private:
  void check_pod(const SimPod& pod) const;
  /// The cluster as an auction round sees it: every GPU shared (a whole-GPU unit takes a free
  /// one), its used milli as outside usage, the nodes' free CPU and memory left to sell.
  [[nodiscard]] ProblemData round_cluster() const;
  /// One bid per GPU pod of the round that some model allows (all in one wallet covering every
  /// bid); returns the pod index (into `pods`) of each bid.
  std::vector<int> add_round_bids(ProblemData& pd, const std::vector<SimPod>& pods,
                                  const std::vector<double>& values) const;
  void refresh_fragment(int n);
  /// Node-level filter: CPU, memory, model and enough GPUs with `milli` free.
  [[nodiscard]] bool node_fits(const SimPod& pod, int n) const;
  /// FGD fragmentation of node n with its GPUs at `free` milli and `cpu` CPU left.
  [[nodiscard]] double fragment_of(int n, const int* free, std::int64_t cpu) const;
  /// Integer score (0..100) of `policy` for `pod` on feasible node n, and the GPUs it takes.
  double score_on_node(const SimPod& pod, SimPolicy policy, int n, SimPlacement& out) const;
  /// The best-scoring feasible node (out.node -1 if none); ties as configured.
  void choose_best(const SimPod& pod, SimPolicy policy, std::mt19937_64& rng,
                   SimPlacement& out) const;
  /// FGD's score of a fragmentation change (sigmoid of the decrease, truncated to 0..100).
  [[nodiscard]] double fgd_score(double delta_milli) const;
  [[nodiscard]] double truncate(double score) const;
  /// The GPUs a non-FGD policy gives `pod` on node n: the best-fit GPU for a share (least free
  /// milli that fits), the first fully free GPUs otherwise.
  void default_gpus(const SimPod& pod, int n, SimPlacement& out) const;
  /// FGD on node n: the GPU choice with the best score (first GPU on ties); returns the score.
  double fgd_on_node(const SimPod& pod, int n, SimPlacement& out) const;
  /// The pattern rule on node n (first GPU on ties); returns minus its key.
  double pattern_on_node(const SimPod& pod, int n, SimPlacement& out) const;
  /// Idle milli of node n that its CPU/memory cannot serve, with GPUs at `free` and `cpu`,
  /// `memory` left (pattern.hpp).
  [[nodiscard]] double stranded_of(int n, const int* free, std::int64_t cpu,
                                   std::int64_t memory) const;

  std::vector<std::int64_t> cpu_cap_, mem_cap_, cpu_free_, mem_free_;
  std::vector<int> node_model_, gpu_first_, gpu_node_, gpu_free_;
  std::vector<double> model_memory_gb_;
  std::vector<int> gpu_model_;
  Workload workload_;
  std::vector<double> node_frag_;  // node_fragment, kept in step by apply
  std::int64_t total_milli_ = 0, used_milli_ = 0;
  bool exact_scores_ = false;
  bool random_ties_ = true;
  std::vector<int> node_order_;
  PatternValues pattern_;
  double reserve_weight_ = kDefaultReserveWeight;
  ResourceNeed need_;  // of workload_'s GPU tasks
};

}  // namespace gpualloc
