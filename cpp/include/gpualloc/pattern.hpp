// The pattern packing rule, shared by the simulator's `pattern` policy and the engine's packer
// (EngineOptions::packing = Packing::Pattern).
//
// It places a GPU pod in three steps of preference (docs/simulator.md, "Beyond FGD"):
//  1. Patterns (shares only). The pattern linear program of the expected demand (Gilmore and
//     Gomory: which share combinations fill a GPU; the same program as the simulator's proven
//     ceiling, allocator/sim/bound.py) gives every item size a net value w(s): its size less its
//     dual price, i.e. what it is worth to a GPU when GPUs are what is scarce. A GPU with gap g
//     can still collect K(g) = the most net value that sizes fitting in g add up to (a knapsack
//     over the values). Putting a share of s milli into a GPU with f free gives up
//         loss(f, s) = K(f) - w(s) - K(f - s) >= 0
//     of that potential, and the GPU with the least loss wins: a share goes where it completes,
//     or can still complete, a pattern of the linear program's optimum (a 320 beside a 650
//     rather than beside a 470, whose 530 gap a 470 fills). This is the distribution-aware
//     ("SS*") side of Sum of Squares (Csirik et al., JACM 2006) in the program's own terms.
//  2. FGD's fragmentation growth (Weng et al., ATC'23) plus a CPU and memory reserve: the idle
//     GPU milli of a node that its free CPU or memory cannot serve, at the workload's typical
//     CPU and memory per GPU, counts `reserve_weight` times as growth (stranded_milli below).
//     Compared on FGD's integer sigmoid scale, as FGD does.
//  3. The first node in the preference order, the first GPU in the node.
// Whole-GPU and CPU-only pods use steps 2 and 3 (a whole GPU loses the same in step 1 anywhere).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "gpualloc/fragmentation.hpp"

namespace gpualloc {

/// Default weight of the CPU and memory reserve (step 2): stranded milli count three times as
/// much as FGD's fragment (docs/simulator.md: 1 and 10 land within 0.05 point of 3).
inline constexpr double kDefaultReserveWeight = 3.0;

/// How the engine's packer scores whole and shared GPUs.
enum class Packing : std::uint8_t {
  Fgd = 0,      ///< FGD's fragmentation growth (the default; see packing.hpp)
  Pattern = 1,  ///< the pattern rule above
};

/// Net values of item sizes (milli, 1..1000; 1000 is a whole GPU) and the best completion of a
/// gap. Values are rounded to multiples of 1/16 milli, so sums are exact and equal losses
/// compare equal.
class PatternValues {
 public:
  /// No values: every loss is 0 (the rule is then steps 2 and 3 alone).
  PatternValues() = default;
  /// (size, net value) pairs; a size listed twice keeps its last value. Throws InputError on a
  /// size outside 1..1000 or a value that is negative, not finite or above its size.
  explicit PatternValues(const std::vector<std::pair<int, double>>& values);

  [[nodiscard]] bool empty() const { return value_.empty(); }
  /// The net value of a share of `milli` (0 for a size without one).
  [[nodiscard]] double value(int milli) const;
  /// K(gap): the most net value that sizes with a value fit into `gap` milli (0..1000).
  [[nodiscard]] double completion(int gap) const;
  /// K(free) - w(milli) - K(free - milli): what placing `milli` into a GPU with `free` milli
  /// free gives up (>= 0; 0 without values). Needs 0 < milli <= free <= 1000.
  [[nodiscard]] double loss(int free, int milli) const;
  /// The (size, value) pairs, sizes ascending.
  [[nodiscard]] std::vector<std::pair<int, double>> pairs() const;

 private:
  std::vector<double> value_;  // by size, 0..1000
  std::vector<double> best_;   // K by gap, 0..1000
};

/// CPU (milli) and memory (MiB) that a GPU-equivalent of the workload's GPU tasks asks for:
/// weighted sums of CPU and memory over weighted GPU-equivalents (0 without GPU tasks).
struct ResourceNeed {
  double cpu_per_gpu = 0;
  double memory_per_gpu = 0;
};
[[nodiscard]] ResourceNeed typical_need(const Workload& workload);

/// Idle milli-GPU of a node (`idle_milli` in all) that its `cpu_free` CPU or `memory_free`
/// memory cannot serve at `need` per GPU-equivalent: idle * max(0, 1 - cpu_free / cpu needed,
/// 1 - memory_free / memory needed).
[[nodiscard]] double stranded_milli(double idle_milli, std::int64_t cpu_free,
                                    std::int64_t memory_free, const ResourceNeed& need);

/// Key of a placement under the rule (lower is better): the loss of step 1 (a multiple of 1/16
/// milli, at most 1000) in units of 1/16 milli times 2^24, plus `rest`, step 2's key, clamped
/// to |rest| < 2^23. One double that orders by loss first and is exact to 2^-14, so that the
/// engine compares placements across models as it compares FGD's.
[[nodiscard]] double pattern_key(double loss, double rest);

}  // namespace gpualloc
