#include "gpualloc/fragmentation.hpp"

#include <cmath>
#include <string>

#include "gpualloc/problem.hpp"

namespace gpualloc {

Workload::Workload(std::vector<Task> tasks) : tasks_(std::move(tasks)) {
  double total = 0;
  for (std::size_t i = 0; i < tasks_.size(); ++i) {
    const auto& t = tasks_[i];
    const std::string at = "workload[" + std::to_string(i) + "]";
    if (t.cpu_milli < 0) throw InputError(at + ".cpu_milli", "must be >= 0");
    if (t.memory_mib < 0) throw InputError(at + ".memory_mib", "must be >= 0");
    if (t.gpus < 0 || t.gpus > 64) throw InputError(at + ".gpus", "must be in [0, 64]");
    if (t.gpus > 0 && (t.milli < 1 || t.milli > 1000)) {
      throw InputError(at + ".milli", "must be in [1, 1000] for a task with GPUs");
    }
    if (!(std::isfinite(t.weight) && t.weight >= 0)) {
      throw InputError(at + ".weight", "must be finite and >= 0");
    }
    total += t.weight;
  }
  if (!tasks_.empty() && !(total > 0)) throw InputError("workload", "weights sum to zero");
  for (auto& t : tasks_) t.weight /= total;
}

double Workload::node_fragment(const int* free, const int* model, int count,
                               std::int64_t cpu_free) const {
  double idle = 0;
  for (int i = 0; i < count; ++i) idle += free[i];
  if (idle <= 0) return 0.0;
  double frag = 0;
  for (const auto& t : tasks_) {
    if (t.gpus == 0 || cpu_free < t.cpu_milli) {
      frag += t.weight * idle;
      continue;
    }
    int usable = 0;
    double stranded = 0;
    for (int i = 0; i < count; ++i) {
      const bool allowed =
          t.models == 0 || (model[i] >= 0 && model[i] < 64 && ((t.models >> model[i]) & 1u));
      if (allowed && free[i] >= t.milli) {
        ++usable;
      } else {
        stranded += free[i];
      }
    }
    frag += t.weight * (usable < t.gpus ? idle : stranded);
  }
  return frag;
}

}  // namespace gpualloc
