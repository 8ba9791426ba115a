#include "gpualloc/state.hpp"

#include <bit>

namespace gpualloc {

State State::outside_only(const ProblemData& p) {
  State s;
  s.gpus.resize(p.gpus.size());
  s.cpu_used.assign(p.nodes.size(), 0);
  s.mem_used.assign(p.nodes.size(), 0);
  s.model_free_whole.assign(p.models.size(), 0);
  s.model_free_milli.assign(p.models.size(), 0);
  s.model_free_slices.assign(p.models.size(), 0);
  s.node_free_whole.assign(p.nodes.size(), 0);
  s.node_free_milli.assign(p.nodes.size(), 0);
  s.node_free_slices.assign(p.nodes.size(), 0);
  for (std::size_t g = 0; g < p.gpus.size(); ++g) {
    const auto& gd = p.gpus[g];
    auto& gs = s.gpus[g];
    gs.milli = static_cast<std::int16_t>(gd.used_milli);
    for (const auto& h : gd.outside) {
      const auto& pr = p.models[gd.model].profiles[h.profile];
      gs.mig_mask = static_cast<std::uint16_t>(gs.mig_mask | slice_bits(h.start, pr.size));
      gs.counts[h.profile]++;
      gs.media = static_cast<std::uint8_t>(gs.media + (pr.media ? 1 : 0));
    }
    switch (gd.mode) {
      case GpuMode::Whole:
        s.model_free_whole[gd.model] += 1;
        s.node_free_whole[gd.node] += 1;
        break;
      case GpuMode::Shared:
        s.model_free_whole[gd.model] += gs.milli == 0 ? 1 : 0;
        s.model_free_milli[gd.model] += 1000 - gs.milli;
        s.node_free_whole[gd.node] += gs.milli == 0 ? 1 : 0;
        s.node_free_milli[gd.node] += 1000 - gs.milli;
        break;
      case GpuMode::Mig: {
        const int free =
            p.models[gd.model].mig_units - std::popcount(static_cast<std::uint32_t>(gs.mig_mask));
        s.model_free_slices[gd.model] += free;
        s.node_free_slices[gd.node] += free;
        break;
      }
    }
  }
  return s;
}

bool mig_fits(const ProblemData& p, int gpu, const GpuState& g, int profile, int start) {
  const auto& gd = p.gpus[gpu];
  if (gd.mode != GpuMode::Mig) return false;
  const auto& md = p.models[gd.model];
  if (profile < 0 || profile >= static_cast<int>(md.profiles.size())) return false;
  const auto& pr = md.profiles[profile];
  if (start < 0 || start >= 32 || !((pr.starts_mask >> start) & 1u)) return false;
  if (!gd.layout_allows(profile, start)) return false;
  if (g.mig_mask & slice_bits(start, pr.size)) return false;
  if (g.counts[profile] >= pr.max_count) return false;
  if (pr.media && g.media >= 1) return false;
  return true;
}

bool replica_fits(const ProblemData& p, const State& s, const Replica& r, std::int64_t cpu,
                  std::int64_t mem) {
  if (r.node < 0 || r.node >= static_cast<int>(p.nodes.size())) return false;
  if (s.cpu_used[r.node] + cpu > p.nodes[r.node].cpu_milli) return false;
  if (s.mem_used[r.node] + mem > p.nodes[r.node].memory_mib) return false;
  if (r.gpus.empty()) return false;
  for (std::size_t i = 0; i < r.gpus.size(); ++i) {
    const int g = r.gpus[i];
    if (g < 0 || g >= static_cast<int>(p.gpus.size()) || p.gpus[g].node != r.node) return false;
    for (std::size_t j = 0; j < i; ++j) {
      if (r.gpus[j] == g) return false;
    }
  }
  switch (r.kind) {
    case UnitKind::Whole:
      for (int g : r.gpus) {
        if (p.gpus[g].mode == GpuMode::Mig || s.gpus[g].milli != 0) return false;
      }
      return true;
    case UnitKind::Share: {
      if (r.gpus.size() != 1 || r.milli < 1 || r.milli >= 1000) return false;
      const int g = r.gpus[0];
      return p.gpus[g].mode == GpuMode::Shared && s.gpus[g].milli + r.milli <= 1000;
    }
    case UnitKind::Mig:
      return r.gpus.size() == 1 && mig_fits(p, r.gpus[0], s.gpus[r.gpus[0]], r.profile, r.start);
  }
  return false;
}

void apply_replica(const ProblemData& p, State& s, const Replica& r, std::int64_t cpu,
                   std::int64_t mem, int sign) {
  s.cpu_used[r.node] += sign * cpu;
  s.mem_used[r.node] += sign * mem;
  switch (r.kind) {
    case UnitKind::Whole:
      for (int g : r.gpus) {
        const int m = p.gpus[g].model;
        s.gpus[g].milli = static_cast<std::int16_t>(sign > 0 ? 1000 : 0);
        s.model_free_whole[m] -= sign;
        s.node_free_whole[r.node] -= sign;
        if (p.gpus[g].mode == GpuMode::Shared) {
          s.model_free_milli[m] -= sign * 1000;
          s.node_free_milli[r.node] -= sign * 1000;
        }
      }
      break;
    case UnitKind::Share: {
      const int m = p.gpus[r.gpus[0]].model;
      auto& gs = s.gpus[r.gpus[0]];
      const bool was_free = gs.milli == 0;
      gs.milli = static_cast<std::int16_t>(gs.milli + sign * r.milli);
      const bool is_free = gs.milli == 0;
      s.model_free_whole[m] += (is_free ? 1 : 0) - (was_free ? 1 : 0);
      s.model_free_milli[m] -= sign * r.milli;
      s.node_free_whole[r.node] += (is_free ? 1 : 0) - (was_free ? 1 : 0);
      s.node_free_milli[r.node] -= sign * r.milli;
      break;
    }
    case UnitKind::Mig: {
      auto& gs = s.gpus[r.gpus[0]];
      const auto& pr = p.models[p.gpus[r.gpus[0]].model].profiles[r.profile];
      const std::uint32_t bits = slice_bits(r.start, pr.size);
      if (sign > 0) {
        gs.mig_mask = static_cast<std::uint16_t>(gs.mig_mask | bits);
      } else {
        gs.mig_mask = static_cast<std::uint16_t>(gs.mig_mask & ~bits);
      }
      gs.counts[r.profile] = static_cast<std::uint8_t>(gs.counts[r.profile] + sign);
      s.model_free_slices[p.gpus[r.gpus[0]].model] -= sign * pr.size;
      s.node_free_slices[r.node] -= sign * pr.size;
      if (pr.media) gs.media = static_cast<std::uint8_t>(gs.media + sign);
      break;
    }
  }
}

}  // namespace gpualloc
