// Migration in the simulator: place a pod that fits nowhere by first moving a few running pods
// (evict and re-place, as a descheduler would), the fewest moves that make room.
//
// For a pod that fits nowhere, the search looks at every node (in the cluster's scoring order)
// and every GPU of it as the pod's target, and at the sets of movable pods on that node, fewest
// first, whose departure leaves the pod room there: pods holding the target GPU, and when the
// node lacks CPU or memory the node's other pods too. A set is tried for real: its pods are
// released, the pod is placed on the node (as `policy` places it there), then each moved pod is
// placed again anywhere by `policy` (largest first) without further moves. If one of them fits
// nowhere, everything is undone and the search goes on. Among the first `candidates` plans that
// work with the fewest moves, the one leaving the least FGD fragmentation is applied.
//
// Only pods of at most `max_pod_gpus` GPUs move (gangs stay), and only pods of at most one GPU
// are helped (a multi-GPU pod would need whole GPUs on one node: larger sets than this search
// tries).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "gpualloc/sim.hpp"

namespace gpualloc {

/// One pod moved: where it was and where it went.
struct SimMove {
  int pod = -1;
  SimPlacement from;
  SimPlacement to;
};

/// Options of place_with_moves.
struct SimMigrateOptions {
  /// Pods moved for this one placement at most (0: the search tries nothing).
  int max_moves = 2;
  /// Pods of more GPUs than this are never moved.
  int max_pod_gpus = 1;
  /// Plans (sets of the fewest moves that work) compared before one is applied; the least
  /// fragmentation after the plan wins (1: the first that works).
  int candidates = 1;
  /// Plans tried for real (released and re-placed) at most before giving up.
  std::int64_t max_trials = 2000;
  /// How the pod and the moved pods are placed.
  SimPolicy policy = SimPolicy::Fgd;
};

/// Place `pods[pod]` (not placed: `where[pod].node < 0`) by moving at most
/// `options.max_moves` placed pods (`where[i].node >= 0`). On success everything is applied to
/// `cluster`, `where` holds the new placements (the pod's and the moved pods'), `moves` lists
/// the moves and true is returned; otherwise nothing changes and `moves` is empty. `where` must
/// describe what `cluster` holds. Throws InputError on bad indices or options.
bool place_with_moves(SimCluster& cluster, const std::vector<SimPod>& pods,
                      std::vector<SimPlacement>& where, int pod, const SimMigrateOptions& options,
                      std::mt19937_64& rng, std::vector<SimMove>& moves);

}  // namespace gpualloc
