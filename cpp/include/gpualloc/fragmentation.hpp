// FGD's measure of GPU fragmentation (Weng et al., "Beware of Fragmentation: Scheduling
// GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC'23).
//
// A target workload is a list of task shapes (CPU, GPUs, milli-GPU per GPU, allowed models) with
// probabilities. For one node and one task: if the task needs no GPU, or the node cannot host it
// (too little free CPU, or fewer than its GPU count of allowed GPUs with enough free milli), all
// of the node's idle milli-GPU is fragment; otherwise the idle milli on GPUs that cannot take
// one of its replicas (too little free, or a model it does not allow) is. A node's fragmentation
// is the expectation over the workload. Placing work where fragmentation grows least is FGD.
// Memory is not part of the measure (as in the paper's simulator). Used by the simulator's `fgd`
// policy and, with the round's own bids as workload unless one is given, by the engine's
// packing of whole and shared GPUs.
#pragma once

#include <cstdint>
#include <vector>

namespace gpualloc {

class Workload {
 public:
  struct Task {
    std::int64_t cpu_milli = 0;
    int gpus = 0;
    int milli = 0;             ///< per GPU (1000: whole GPUs)
    std::uint64_t models = 0;  ///< bit m: model m allowed (0: any)
    double weight = 0.0;
    /// Memory (MiB); FGD's measure ignores it, the pattern rule's CPU and memory reserve reads it
    /// (pattern.hpp).
    std::int64_t memory_mib = 0;
  };

  Workload() = default;
  /// Weights are normalised to sum to 1. Throws InputError on a bad task.
  explicit Workload(std::vector<Task> tasks);

  [[nodiscard]] bool empty() const { return tasks_.empty(); }
  [[nodiscard]] const std::vector<Task>& tasks() const { return tasks_; }

  /// Expected fragment (milli-GPU) of a node whose GPUs have `free` milli each and models
  /// `model` (one entry per GPU, < 64), with `cpu_free` CPU (milli) left.
  [[nodiscard]] double node_fragment(const int* free, const int* model, int count,
                                     std::int64_t cpu_free) const;

 private:
  std::vector<Task> tasks_;
};

}  // namespace gpualloc
