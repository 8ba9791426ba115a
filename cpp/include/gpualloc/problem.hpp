// The lowered, index-based problem of one round: the C++ mirror of allocator.model.Problem.
//
// Names are gone: nodes, GPUs, models, MIG profiles, wallets, bids and incumbents are indices
// into flat vectors, filled once by the bindings (or by a test). `validate()` checks every index
// and number and throws `InputError` naming the offending field; nothing past it assumes more
// than what it checked. No Python in here.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpualloc {

/// Bad input crossing the API boundary. `field()` names the offending field (e.g.
/// "alternatives[3].replicas"); the bindings turn it into Python's ValueError.
class InputError : public std::invalid_argument {
 public:
  InputError(std::string field, const std::string& message)
      : std::invalid_argument(field + ": " + message), field_(std::move(field)) {}
  [[nodiscard]] const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

/// How a GPU is offered.
enum class GpuMode : std::uint8_t { Whole = 0, Shared = 1, Mig = 2 };
/// What one replica needs.
enum class UnitKind : std::uint8_t { Whole = 0, Mig = 1, Share = 2 };
/// Locality of a gang, tightest first.
enum class Locality : std::uint8_t { Gpu = 0, Nvlink = 1, Node = 2, Rack = 3, Zone = 4, Any = 5 };

/// Whether a GPU in `mode` can serve a unit of `kind`: whole units on whole GPUs and on (free)
/// shared GPUs, shares on shared GPUs, MIG instances on MIG GPUs.
[[nodiscard]] constexpr bool serves(GpuMode mode, UnitKind kind) {
  switch (kind) {
    case UnitKind::Whole:
      return mode != GpuMode::Mig;
    case UnitKind::Share:
      return mode == GpuMode::Shared;
    case UnitKind::Mig:
      return mode == GpuMode::Mig;
  }
  return false;
}

/// Most MIG profiles one model may have (the catalog has at most 7) and most memory slices.
inline constexpr int kMaxProfiles = 8;
inline constexpr int kMaxMigUnits = 16;

/// One MIG profile of one model: `size` memory slices from a start in `starts_mask` (bit s set
/// means start s is legal), `compute` compute slices, at most `max_count` per GPU.
struct MigProfileData {
  int compute = 1;
  int size = 1;
  std::uint32_t starts_mask = 0;
  int max_count = 1;
  bool media = false;
};

/// A GPU model present in the cluster. `mig_units` == 0: not MIG-capable.
/// `reserve` is the least value per GPU-equivalent at which it is sold (0: none).
struct ModelData {
  double memory_gb = 0.0;
  int mig_units = 0;
  int compute_units = 0;
  double reserve = 0.0;
  /// GPU-equivalents one whole GPU of this model stands for (1 for a GPU; less for a MIG
  /// instance offered as a whole device, e.g. Kubernetes' static MIG instances).
  double whole_equivalent = 1.0;
  std::vector<MigProfileData> profiles;
};

/// A MIG instance held by outside work: profile index (of the GPU's model) and start slot.
struct MigHold {
  int profile = 0;
  int start = 0;
};

/// One physical GPU. `nvlink` is a cluster-wide NVLink domain id (GPUs of one node with the
/// same id; a node whose GPUs have no id forms one domain). `outside` are MIG instances held by
/// work outside the market; `used_milli` the milli-GPU used outside (shared GPUs only). With
/// `fixed_layout`, MIG units may only take the instances listed in `layout` (the ones that exist
/// on a GPU whose layout is kept); otherwise any legal instance may be carved.
struct GpuData {
  int node = 0;
  int device = 0;
  int model = 0;
  GpuMode mode = GpuMode::Whole;
  int nvlink = 0;
  int used_milli = 0;
  std::vector<MigHold> outside;
  bool fixed_layout = false;
  std::vector<MigHold> layout;

  /// Whether an instance of `profile` at `start` may exist on this GPU (its fixed layout's).
  [[nodiscard]] bool layout_allows(int profile, int start) const {
    if (!fixed_layout) return true;
    for (const auto& h : layout) {
      if (h.profile == profile && h.start == start) return true;
    }
    return false;
  }
};

/// A node: CPU (milli) and memory (MiB) left for this market; rack and zone ids (-1: none).
struct NodeData {
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  int rack = -1;
  int zone = -1;
};

/// One alternative of a bid. `models` lists the model indices it may use (already resolved from
/// names/aliases and the "empty means any" rule); for MIG units `profiles[i]` is the profile
/// index on `models[i]` (-1 if that model lacks it).
struct AlternativeData {
  int bid = 0;
  double value = 0.0;
  UnitKind kind = UnitKind::Whole;
  int gpus = 1;
  int milli = 0;
  int replicas = 1;
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  std::vector<int> models;
  std::vector<int> profiles;
  double min_gpu_memory_gb = 0.0;
  Locality locality = Locality::Any;
};

/// One replica's placement: node, GPU indices (global, into ProblemData::gpus), and the MIG
/// profile/start (kind Mig) or milli (kind Share).
struct Replica {
  int node = -1;
  UnitKind kind = UnitKind::Whole;
  int profile = -1;
  int start = -1;
  int milli = 0;
  std::vector<int> gpus;

  /// Same node, kind, profile, start, share and GPUs.
  bool operator==(const Replica&) const = default;
};

/// Running work: placements fixed; kept or evicted as a whole. `cpu_milli`/`memory_mib` are per
/// placement (as in the Python model).
struct IncumbentData {
  double value = 0.0;
  double preemption_cost = 0.0;
  bool preemptible = true;
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  std::vector<Replica> placements;
};

/// The whole round. `bids[i]` is the wallet index of bid i, `bidders[i]` (if not empty) the
/// index of the agent that sent it (empty: every bid is an agent of its own); alternatives of one
/// bid are contiguous and in order (`alternatives[k].bid`).
struct ProblemData {
  std::vector<ModelData> models;
  std::vector<NodeData> nodes;
  std::vector<GpuData> gpus;
  std::vector<double> wallets;
  std::vector<int> bids;
  std::vector<int> bidders;
  std::vector<AlternativeData> alternatives;
  std::vector<IncumbentData> incumbents;

  /// Throws InputError naming the first bad field. Call once before building an Engine.
  void validate() const;
};

/// GPU-equivalents of one replica of `alt` on model `m` (whole: gpus; MIG: compute share;
/// share: milli/1000). `profile` is the MIG profile on that model (ignored otherwise).
double replica_equivalent(const ProblemData& p, const AlternativeData& alt, int model, int profile);

}  // namespace gpualloc
