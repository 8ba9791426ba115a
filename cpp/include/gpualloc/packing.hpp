// Placement of one alternative (a gang of replicas) into a State: topology indexes and the
// scoring policies.
//
// Policies, in one place:
//  - whole GPUs: best fit. The node (and inside it the NVLink domain) with the fewest free
//    GPUs of the model that still fits wins, so large free domains stay whole for big gangs;
//    whole-mode GPUs are used before free shared-mode ones, which are kept for shares.
//  - shares: FGD (Weng et al., ATC'23). Fragmentation of a GPU with `f` free milli is
//    F(f) = sum_m p_m * (f if f < req_m else 0) over the round's demand mix p (share sizes and
//    whole GPUs, weighted by replicas); the GPU whose F grows least wins; ties go to the smallest
//    leftover, then to already-shared GPUs.
//  - MIG: every legal (GPU, start) is scored by the loss of "potential" of the GPU's free
//    slices, potential(mask) = sum over profiles q of w_q * (legal free starts of q), with w_q
//    growing with size and with demand for q; the smallest loss wins (this keeps large runs
//    free, e.g. a 1g goes to slice 6 before slice 0), ties go to GPUs already partly carved.
//  - gangs: locality gpu/nvlink/node tries the candidate domains from the tightest (least free
//    capacity of the model) upwards and takes the first that holds all replicas; rack/zone/any
//    does the same over racks/zones/the cluster (a node without a rack or zone is one of its
//    own) and places replicas one by one on the best-fit
//    node of the domain.
// With packing Pattern (pattern.hpp), shares are placed by the least loss of pattern value
// first, then by the key above (FGD's growth with a workload, the per-GPU form without) plus the
// growth of the node's CPU and memory reserve; whole GPUs by that reserve too (with a workload
// inside FGD's step, without it before best fit). The reserve's per-GPU need is the workload's,
// or without one the round's GPU bids' (weighted by replicas).
// With an optional per-GPU penalty (the value an eviction there would destroy) as first key,
// the same search prefers placements that evict the least.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "gpualloc/fragmentation.hpp"
#include "gpualloc/pattern.hpp"
#include "gpualloc/problem.hpp"
#include "gpualloc/state.hpp"

namespace gpualloc {

/// Topology indexes and policy tables built once per problem.
class Packer {
 public:
  /// With a `workload` (FGD's target workload), whole and shared GPUs are placed by the growth
  /// of node-level fragmentation against it (CPU included); without, by the per-GPU form.
  /// Growths are compared in the integer steps of 100 sigmoid(-growth / `fragment_scale` milli)
  /// (FGD's score; 0: exactly); within a step the
  /// tighter placement (best fit) wins, which packs where FGD is indifferent.
  /// `node_order` (optional permutation of the nodes) ranks equal steps (else a fixed hash).
  /// `packing` Pattern scores by the pattern rule with `pattern_values` (none: every loss 0)
  /// and `reserve_weight`.
  explicit Packer(const ProblemData& p, const Workload* workload = nullptr,
                  double fragment_scale = 1000.0, const std::vector<int>* node_order = nullptr,
                  Packing packing = Packing::Fgd, const PatternValues* pattern_values = nullptr,
                  double reserve_weight = kDefaultReserveWeight);

  /// Find a placement of all replicas of `alt` on GPUs of `model` (MIG: `profile` is the
  /// profile index on that model). `s` is used as scratch and left unchanged on return.
  /// `penalty` (optional, one entry per GPU) is minimised first. With `first_fit` the first
  /// feasible domain/GPU is taken (cheaper; used for "would it fit" checks).
  /// `only_nodes` (optional, sorted node indices) restricts the search to those nodes; it is
  /// exact for `node_scoped` alternatives (see below) when the other nodes hold nothing better.
  bool find(State& s, const AlternativeData& alt, int model, int profile,
            const std::vector<double>* penalty, bool first_fit, std::vector<Replica>& out,
            const std::vector<int>* only_nodes = nullptr, std::vector<int>* runners = nullptr,
            double* primary = nullptr) const;
  // `primary` (optional) receives the found placement's packing score (lower is better;
  // comparable between models for one alternative).

  /// The nodes of `model` (ascending) where one replica of `alt` fits in `s` as find() would
  /// place it in a search over several nodes (any GPU and NVLink domain of the node, no
  /// penalty). A node missing from `out` adds nothing to such a search (locality any, rack or
  /// zone) while it only fills, since each node takes the same replicas whatever the others do.
  void hosts(const State& s, const AlternativeData& alt, int model, int profile,
             std::vector<int>& out) const;

  /// Whether placements are scored by node-level fragmentation against a given workload.
  [[nodiscard]] bool node_level() const { return !node_workload_.empty(); }
  /// The packing rule.
  [[nodiscard]] Packing packing() const { return packing_; }

  /// How many runners-up `find` records (see below).
  static constexpr std::size_t kRunners = 4;
  // `runners` (optional, only with `penalty` null): on success of a node-scoped search with
  // locality nvlink, node or any (one replica), the nodes of the next feasible domains in the
  // search's own order after the chosen one, at most kRunners (fewer: there are no more). Any
  // other case leaves {-1} (nothing recorded). A search over a state that differs only on some
  // nodes then chooses the best of those nodes and the first runner-up not among them.

  /// Whether the search for `alt` is a minimum over independent per-node choices (locality gpu,
  /// nvlink or node, or a single replica with locality any), so that restricting it to the nodes
  /// whose state changed plus the previous choice gives the same answer as a full search.
  [[nodiscard]] static bool node_scoped(const AlternativeData& alt) {
    return alt.locality == Locality::Gpu || alt.locality == Locality::Nvlink ||
           alt.locality == Locality::Node || (alt.locality == Locality::Any && alt.replicas == 1);
  }

  /// Free capacity of `model` in `s` over the whole cluster, in the unit's own measure (free
  /// whole-capable GPUs, free milli on shared GPUs, free MIG slices).
  [[nodiscard]] std::int64_t free_capacity(const State& s, UnitKind kind, int model) const;

  /// MIG potential of a free mask on `model` (exposed for tests).
  [[nodiscard]] double mig_potential(int model, std::uint32_t mask) const {
    return mig_potential_[model][mask];
  }
  /// FGD fragmentation of a shared GPU with `free_milli` free (exposed for tests).
  [[nodiscard]] double share_fragment(int free_milli) const { return share_fragment_[free_milli]; }

  [[nodiscard]] const std::vector<int>& gpus_of_node(int n) const { return node_gpus_[n]; }
  /// The nodes of node n's rack (`loc` Rack) or zone (Zone), n included, sorted; empty when n
  /// has none (it is then a group of its own).
  [[nodiscard]] const std::vector<int>& domain_nodes(Locality loc, int n) const {
    static const std::vector<int> none;
    const int id = loc == Locality::Rack ? p_.nodes[n].rack : p_.nodes[n].zone;
    if (id < 0) return none;
    return (loc == Locality::Rack ? rack_nodes_ : zone_nodes_)[id];
  }

 private:
  struct Scratch;  // per-thread search buffers (packing.cpp)
  static Scratch& scratch();
  struct Score {
    double penalty = 0, primary = 0, secondary = 0, tertiary = 0;
    bool operator<(const Score& o) const {
      if (penalty != o.penalty) return penalty < o.penalty;
      if (primary != o.primary) return primary < o.primary;
      if (secondary != o.secondary) return secondary < o.secondary;
      return tertiary < o.tertiary;
    }
  };
  bool best_on_node(const State& s, const AlternativeData& alt, int model, int profile, int node,
                    int nvlink, int only_gpu, const std::vector<double>* penalty, Replica& out,
                    Score& score, Scratch& tmp) const;
  // The best replica on one node, by unit kind (best_on_node's cases; `best` is the score).
  bool whole_on_node(const State& s, const AlternativeData& alt, int model, int node, int nvlink,
                     const std::vector<double>* penalty, Replica& out, Score& best,
                     Scratch& tmp) const;
  // Whole GPUs inside one NVLink domain of the node, the tightest that fits (from tmp.cands).
  bool whole_in_domain(const State& s, const AlternativeData& alt, int node, double node_free,
                       Replica& out, Score& best, Scratch& tmp) const;
  bool share_on_node(const State& s, const AlternativeData& alt, int model, int node, int nvlink,
                     int only_gpu, const std::vector<double>* penalty, Replica& out,
                     Score& best) const;
  bool mig_on_node(const State& s, int model, int profile, int node, int nvlink, int only_gpu,
                   const std::vector<double>* penalty, Replica& out, Score& best) const;
  struct Query;  // one search of find(): arguments and best so far (packing.cpp)
  // The steps of find(): the candidate nodes, a replica's need in the unit's measure, then the
  // search by locality (gpu; nvlink or node domains; any; rack or zone groups).
  const std::vector<int>& candidate_nodes(Query& q) const;
  [[nodiscard]] std::int64_t replica_need(const AlternativeData& alt, int model, int profile) const;
  void find_per_gpu(Query& q) const;
  void find_in_domains(Query& q, Locality loc, std::vector<int>* runners) const;
  void find_anywhere(Query& q, std::vector<int>* runners) const;
  void find_in_groups(Query& q, Locality loc) const;
  bool gang_in(State& s, const AlternativeData& alt, int model, int profile,
               const std::vector<int>& nodes, int nvlink, int only_gpu,
               const std::vector<double>* penalty, std::vector<Replica>& out, double* total_penalty,
               double* total_primary, Scratch& tmp, std::vector<int>* runners = nullptr) const;
  // Runners-up of gang_in: inserts (sc, n) into `top` (best first, at most kRunners + 1;
  // on equal scores the earlier node stays ahead).
  static void keep_top(std::vector<std::pair<Score, int>>& top, const Score& sc, int n);
  // The constructor's steps: node preference order, topology indexes, rack/zone groups, the
  // scoring tables (share fragmentation, MIG potential of one model).
  void rank_nodes(const std::vector<int>* node_order);
  void index_topology();
  void group_nodes();
  void tabulate_policies();
  void tabulate_mig_potential(std::size_t m, const std::vector<double>& demand);
  [[nodiscard]] std::int64_t capacity_on(const State& s, UnitKind kind, int model, int node,
                                         int nvlink) const;

  const ProblemData& p_;
  std::vector<std::vector<int>> node_gpus_;
  std::vector<std::vector<int>> model_nodes_;  // nodes holding GPUs of a model
  std::vector<std::vector<int>> model_gpus_;
  std::vector<int> nvlink_node_;  // NVLink domain -> its node
  std::vector<std::vector<int>> rack_nodes_, zone_nodes_;
  // Per model: its nodes grouped by rack / zone (each group sorted).
  std::vector<std::vector<std::vector<int>>> rack_model_nodes_, zone_model_nodes_;
  // Per model, per node: the index of its group in rack_model_nodes_ / zone_model_nodes_ (-1:
  // the node holds no GPU of the model). Lets a restricted search bucket its nodes by group.
  std::vector<std::vector<int>> rack_group_of_, zone_group_of_;
  std::vector<int> all_nodes_;
  std::vector<std::uint8_t> single_model_;    // node holds GPUs of one model only
  std::vector<std::uint8_t> model_alone_;     // no node of the model holds another model
  std::vector<std::uint8_t> node_has_model_;  // [node * models + model]: node holds the model
  std::vector<std::vector<double>> mig_potential_;
  std::vector<double> share_fragment_;
  Workload node_workload_;  // empty: per-GPU share fragmentation only
  double fragment_scale_ = 1000.0;
  Packing packing_ = Packing::Fgd;
  PatternValues pattern_values_;
  double reserve_weight_ = kDefaultReserveWeight;
  ResourceNeed need_;  // per GPU-equivalent, for the reserve (pattern packing)
  [[nodiscard]] bool pattern() const { return packing_ == Packing::Pattern; }
  /// Growth of node n's stranded milli (pattern.hpp) when `gpus` each take `milli` (1000: whole)
  /// and the node gives `cpu` and `memory`.
  [[nodiscard]] double reserve_growth(const State& s, int node, const std::vector<int>& gpus,
                                      int milli, std::int64_t cpu, std::int64_t memory) const;
  std::vector<double> node_tie_;  // per node, in [0, 1): rank in the preference order
  [[nodiscard]] double fragment_key(double growth, int node) const;
  /// Node-level FGD growth of placing `gpus` (each taking `milli`) and `cpu` on node n, with
  /// pattern packing plus reserve_weight times the reserve's growth (`memory` read only then).
  [[nodiscard]] double node_fragment_growth(const State& s, int node, const std::vector<int>& gpus,
                                            int milli, std::int64_t cpu, std::int64_t memory) const;
};

}  // namespace gpualloc
