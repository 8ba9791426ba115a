// Occupancy of the cluster: compact per-GPU and per-node counters that placements are added to
// and removed from. Copying a State is a couple of memcpy's, which is what local search and the
// payment replays rely on.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "gpualloc/problem.hpp"

namespace gpualloc {

/// What one GPU holds. `milli`: used milli-GPU (a whole-GPU claim sets it to 1000);
/// `mig_mask`: occupied memory slices (bit s = slice s); `counts[p]`: instances of profile p;
/// `media`: +me instances.
struct GpuState {
  std::int16_t milli = 0;
  std::uint16_t mig_mask = 0;
  std::uint8_t media = 0;
  std::array<std::uint8_t, kMaxProfiles> counts{};
};

/// Occupancy of all GPUs and nodes.
struct State {
  std::vector<GpuState> gpus;
  std::vector<std::int64_t> cpu_used;
  std::vector<std::int64_t> mem_used;
  /// Per model, kept in step by apply_replica: free whole-capable GPUs, free milli on shared
  /// GPUs, free MIG slices. Used to reject hopeless searches at once.
  std::vector<std::int64_t> model_free_whole, model_free_milli, model_free_slices;
  /// The same per node (all models of the node together).
  std::vector<std::int32_t> node_free_whole, node_free_milli, node_free_slices;

  /// Empty cluster except the outside usage (used_milli, outside MIG instances).
  static State outside_only(const ProblemData& p);
};

/// Whether a MIG instance of `profile` fits on `gpu` at `start` given state `g`.
bool mig_fits(const ProblemData& p, int gpu, const GpuState& g, int profile, int start);

/// Whether `r` can be added to `s` (every GPU, slice, milli and node CPU/memory check).
/// Also checks that the replica is well-formed (indices in range, GPU modes right).
bool replica_fits(const ProblemData& p, const State& s, const Replica& r, std::int64_t cpu,
                  std::int64_t mem);

/// Add (`sign` = +1) or remove (-1) a replica and its node CPU/memory. No checks: callers use
/// replica_fits first.
void apply_replica(const ProblemData& p, State& s, const Replica& r, std::int64_t cpu,
                   std::int64_t mem, int sign);

/// Bitmask of the slices [start, start + size).
inline std::uint32_t slice_bits(int start, int size) { return ((1u << size) - 1u) << start; }

}  // namespace gpualloc
