#include "gpualloc/pattern.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "gpualloc/problem.hpp"

namespace gpualloc {
namespace {

constexpr int kWhole = 1000;
constexpr double kGrid = 16.0;  // values are multiples of 1/16 milli

}  // namespace

PatternValues::PatternValues(const std::vector<std::pair<int, double>>& values) {
  if (values.empty()) return;
  value_.assign(kWhole + 1, 0.0);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto [size, v] = values[i];
    const std::string at = "pattern_values[" + std::to_string(i) + "]";
    if (size < 1 || size > kWhole) throw InputError(at, "size must be in [1, 1000] milli");
    if (!(std::isfinite(v) && v >= 0 && v <= size)) {
      throw InputError(at, "value must be finite, >= 0 and at most the size");
    }
    value_[size] = std::round(v * kGrid) / kGrid;
  }
  // K(g): an unbounded knapsack over the sizes with a value (exact: multiples of 1/16).
  best_.assign(kWhole + 1, 0.0);
  for (int g = 1; g <= kWhole; ++g) {
    double b = best_[g - 1];
    for (int s = 1; s <= g; ++s) {
      if (value_[s] > 0) b = std::max(b, best_[g - s] + value_[s]);
    }
    best_[g] = b;
  }
}

double PatternValues::value(int milli) const {
  if (value_.empty() || milli < 0 || milli > kWhole) return 0.0;
  return value_[milli];
}

double PatternValues::completion(int gap) const {
  if (best_.empty() || gap < 0) return 0.0;
  return best_[std::min(gap, kWhole)];
}

double PatternValues::loss(int free, int milli) const {
  if (best_.empty()) return 0.0;
  return std::max(0.0, completion(free) - value(milli) - completion(free - milli));
}

std::vector<std::pair<int, double>> PatternValues::pairs() const {
  std::vector<std::pair<int, double>> out;
  for (int s = 1; s <= kWhole && !value_.empty(); ++s) {
    if (value_[s] > 0) out.emplace_back(s, value_[s]);
  }
  return out;
}

ResourceNeed typical_need(const Workload& workload) {
  double cpu = 0, memory = 0, gpus = 0;
  for (const auto& t : workload.tasks()) {
    if (t.gpus == 0) continue;
    cpu += t.weight * static_cast<double>(t.cpu_milli);
    memory += t.weight * static_cast<double>(t.memory_mib);
    gpus += t.weight * t.gpus * (t.milli / static_cast<double>(kWhole));
  }
  if (!(gpus > 0)) return {};
  return {cpu / gpus, memory / gpus};
}

double stranded_milli(double idle_milli, std::int64_t cpu_free, std::int64_t memory_free,
                      const ResourceNeed& need) {
  if (!(idle_milli > 0)) return 0.0;
  const double gpus = idle_milli / kWhole;
  double short_of = 0;  // the largest fraction of the idle GPUs' need that is not there
  const auto shortfall = [&](double per_gpu, std::int64_t free) {
    const double needed = per_gpu * gpus;
    if (!(needed > 0)) return;
    const double have = static_cast<double>(std::max<std::int64_t>(free, 0));
    short_of = std::max(short_of, 1.0 - have / needed);
  };
  shortfall(need.cpu_per_gpu, cpu_free);
  shortfall(need.memory_per_gpu, memory_free);
  return idle_milli * short_of;
}

double pattern_key(double loss, double rest) {
  constexpr double kRest = 8388608.0;  // 2^23
  const double units = std::round(loss * kGrid);
  return units * 16777216.0 + std::clamp(rest, -kRest + 1.0, kRest - 1.0);
}

}  // namespace gpualloc
