// Small builders for hand-made problems in the unit tests.
#pragma once

#include <initializer_list>
#include <vector>

#include "gpualloc/problem.hpp"

namespace gpualloc::testing {

/// Profile indices of the 8-slice table below.
enum Prof { P1g = 0, P1gMe = 1, P1gDouble = 2, P2g = 3, P3g = 4, P4g = 5, P7g = 6 };

inline std::uint32_t starts(std::initializer_list<int> s) {
  std::uint32_t m = 0;
  for (int x : s) m |= 1u << x;
  return m;
}

/// A100-80GB-like model: 8 memory slices, 7 compute slices (catalog order of mig.md).
inline ModelData mig_model(double reserve = 0.0) {
  ModelData m;
  m.memory_gb = 80;
  m.mig_units = 8;
  m.compute_units = 7;
  m.reserve = reserve;
  m.profiles = {
      {1, 1, starts({0, 1, 2, 3, 4, 5, 6}), 7, false},  // 1g
      {1, 1, starts({0, 1, 2, 3, 4, 5, 6}), 1, true},   // 1g+me
      {1, 2, starts({0, 2, 4, 6}), 4, false},           // 1g double memory
      {2, 2, starts({0, 2, 4}), 3, false},              // 2g
      {3, 4, starts({0, 4}), 2, false},                 // 3g
      {4, 4, starts({0}), 1, false},                    // 4g
      {7, 8, starts({0}), 1, false},                    // 7g
  };
  return m;
}

inline ModelData whole_model(double memory = 80, double reserve = 0.0) {
  ModelData m;
  m.memory_gb = memory;
  m.reserve = reserve;
  return m;
}

/// Add a node with `n` GPUs of `model` in `mode`, all in one NVLink domain (`nvlink`, or a fresh
/// domain per node if -1). Returns the node index.
inline int add_node(ProblemData& p, int n, int model, GpuMode mode, std::int64_t cpu = 1000000,
                    std::int64_t mem = 1000000, int rack = -1, int nvlink = -1) {
  const int node = static_cast<int>(p.nodes.size());
  p.nodes.push_back({cpu, mem, rack, -1});
  const int dom = nvlink >= 0 ? nvlink : 1000 + node;
  for (int i = 0; i < n; ++i) {
    GpuData g;
    g.node = node;
    g.device = i;
    g.model = model;
    g.mode = mode;
    g.nvlink = dom;
    p.gpus.push_back(g);
  }
  return node;
}

/// Add a one-alternative bid (own wallet with `balance`); returns the bid index.
inline int add_bid(ProblemData& p, double value, UnitKind kind, int replicas = 1, int gpus = 1,
                   int milli = 0, int profile = -1, Locality loc = Locality::Any,
                   double balance = 1e9, std::vector<int> models = {0}) {
  const int bid = static_cast<int>(p.bids.size());
  p.wallets.push_back(balance);
  p.bids.push_back(static_cast<int>(p.wallets.size()) - 1);
  AlternativeData a;
  a.bid = bid;
  a.value = value;
  a.kind = kind;
  a.gpus = gpus;
  a.milli = milli;
  a.replicas = replicas;
  a.locality = loc;
  a.models = std::move(models);
  if (kind == UnitKind::Mig) a.profiles.assign(a.models.size(), profile);
  p.alternatives.push_back(a);
  return bid;
}

}  // namespace gpualloc::testing
