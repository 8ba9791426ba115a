#include "gpualloc/problem.hpp"

#include <cmath>
#include <string>

namespace gpualloc {
namespace {

std::string at(const char* what, std::size_t i) {
  return std::string(what) + "[" + std::to_string(i) + "]";
}

void finite_nonneg(const std::string& field, double x) {
  if (!std::isfinite(x) || x < 0) throw InputError(field, "must be finite and >= 0");
}

void index_in(const std::string& field, long long x, std::size_t n) {
  if (x < 0 || static_cast<std::size_t>(x) >= n) {
    throw InputError(field,
                     "index " + std::to_string(x) + " out of range [0, " + std::to_string(n) + ")");
  }
}

// A set of MIG instances of one GPU (those held outside, or its layout): legal starts, no
// overlap, per-profile and +me limits.
void validate_mig_set(const std::string& path, const std::vector<MigHold>& holds,
                      const ModelData& md) {
  std::uint32_t mask = 0;
  int counts[kMaxProfiles] = {};
  int media = 0;
  for (const auto& h : holds) {
    index_in(path + ".profile", h.profile, md.profiles.size());
    const auto& pr = md.profiles[h.profile];
    if (h.start < 0 || h.start >= 32 || !((pr.starts_mask >> h.start) & 1u)) {
      throw InputError(path + ".start", "illegal start slot");
    }
    const std::uint32_t bits = ((1u << pr.size) - 1u) << h.start;
    if (mask & bits) throw InputError(path, "instances overlap");
    mask |= bits;
    if (++counts[h.profile] > pr.max_count) {
      throw InputError(path, "too many instances of one profile");
    }
    media += pr.media ? 1 : 0;
    if (media > 1) throw InputError(path, "at most one +me instance");
  }
}

void validate_models(const ProblemData& p) {
  for (std::size_t m = 0; m < p.models.size(); ++m) {
    const auto& md = p.models[m];
    const std::string path = at("models", m);
    if (!(std::isfinite(md.memory_gb) && md.memory_gb > 0)) {
      throw InputError(path + ".memory_gb", "must be positive");
    }
    finite_nonneg(path + ".reserve", md.reserve);
    if (!(std::isfinite(md.whole_equivalent) && md.whole_equivalent > 0)) {
      throw InputError(path + ".whole_equivalent", "must be positive");
    }
    if (md.mig_units < 0 || md.mig_units > kMaxMigUnits) {
      throw InputError(path + ".mig_units", "must be in [0, 16]");
    }
    if (static_cast<int>(md.profiles.size()) > kMaxProfiles) {
      throw InputError(path + ".profiles", "at most 8 MIG profiles per model");
    }
    if ((md.mig_units == 0) != md.profiles.empty()) {
      throw InputError(path + ".mig_units", "MIG profiles need mig_units > 0 and vice versa");
    }
    if (md.mig_units > 0 && md.compute_units <= 0) {
      throw InputError(path + ".compute_units", "must be > 0 for a MIG model");
    }
    for (std::size_t q = 0; q < md.profiles.size(); ++q) {
      const auto& pr = md.profiles[q];
      const std::string pp = path + "." + at("profiles", q);
      if (pr.size < 1 || pr.size > md.mig_units) throw InputError(pp + ".size", "out of range");
      if (pr.compute < 1 || pr.compute > md.compute_units) {
        throw InputError(pp + ".compute", "out of range");
      }
      if (pr.max_count < 1 || pr.max_count > 255)
        throw InputError(pp + ".max_count", "out of range");
      for (int s = 0; s < 32; ++s) {
        if ((pr.starts_mask >> s) & 1u) {
          if (s + pr.size > md.mig_units) throw InputError(pp + ".starts", "start past the end");
        }
      }
    }
  }
}

void validate_nodes_and_gpus(const ProblemData& p) {
  for (std::size_t n = 0; n < p.nodes.size(); ++n) {
    if (p.nodes[n].cpu_milli < 0) throw InputError(at("nodes", n) + ".cpu_milli", "must be >= 0");
    if (p.nodes[n].memory_mib < 0) throw InputError(at("nodes", n) + ".memory_mib", "must be >= 0");
  }
  for (std::size_t g = 0; g < p.gpus.size(); ++g) {
    const auto& gd = p.gpus[g];
    const std::string path = at("gpus", g);
    index_in(path + ".node", gd.node, p.nodes.size());
    index_in(path + ".model", gd.model, p.models.size());
    if (gd.nvlink < 0) throw InputError(path + ".nvlink", "must be >= 0");
    if (gd.used_milli < 0 || gd.used_milli > 1000) {
      throw InputError(path + ".used_milli", "must be in [0, 1000]");
    }
    if (gd.used_milli && gd.mode != GpuMode::Shared) {
      throw InputError(path + ".used_milli", "only a shared GPU can have used_milli");
    }
    const auto& md = p.models[gd.model];
    if (gd.mode == GpuMode::Mig && md.mig_units == 0) {
      throw InputError(path + ".mode", "model is not MIG-capable");
    }
    if (!gd.outside.empty() && gd.mode != GpuMode::Mig) {
      throw InputError(path + ".mig_instances", "only a MIG GPU holds MIG instances");
    }
    validate_mig_set(path + ".mig_instances", gd.outside, md);
    if ((gd.fixed_layout || !gd.layout.empty()) && gd.mode != GpuMode::Mig) {
      throw InputError(path + ".layout", "only a MIG GPU has a MIG layout");
    }
    validate_mig_set(path + ".layout", gd.layout, md);
    for (const auto& h : gd.outside) {
      if (!gd.layout_allows(h.profile, h.start)) {
        throw InputError(path + ".mig_instances", "an instance held outside is not in the layout");
      }
    }
  }
}

// Wallets, bids and alternatives.
void validate_bids(const ProblemData& p) {
  for (std::size_t w = 0; w < p.wallets.size(); ++w) finite_nonneg(at("wallets", w), p.wallets[w]);
  for (std::size_t b = 0; b < p.bids.size(); ++b)
    index_in(at("bids", b) + ".wallet", p.bids[b], p.wallets.size());
  if (!p.bidders.empty() && p.bidders.size() != p.bids.size()) {
    throw InputError("bidders", "must have one entry per bid (or none)");
  }
  for (std::size_t b = 0; b < p.bidders.size(); ++b) {
    if (p.bidders[b] < 0) throw InputError(at("bids", b) + ".bidder", "must be >= 0");
  }
  int last_bid = -1;
  for (std::size_t k = 0; k < p.alternatives.size(); ++k) {
    const auto& a = p.alternatives[k];
    const std::string path = at("alternatives", k);
    index_in(path + ".bid", a.bid, p.bids.size());
    if (a.bid < last_bid) throw InputError(path + ".bid", "alternatives must be grouped by bid");
    last_bid = a.bid;
    finite_nonneg(path + ".value", a.value);
    finite_nonneg(path + ".min_gpu_memory_gb", a.min_gpu_memory_gb);
    if (a.replicas < 1) throw InputError(path + ".replicas", "must be >= 1");
    if (a.replicas > 100000) throw InputError(path + ".replicas", "must be at most 100000");
    if (a.cpu_milli < 0) throw InputError(path + ".cpu_milli", "must be >= 0");
    if (a.memory_mib < 0) throw InputError(path + ".memory_mib", "must be >= 0");
    if (static_cast<int>(a.locality) > 5) throw InputError(path + ".locality", "unknown locality");
    switch (a.kind) {
      case UnitKind::Whole:
        if (a.gpus < 1 || a.gpus > 4096)
          throw InputError(path + ".unit.gpus", "must be in [1, 4096]");
        if (a.locality == Locality::Gpu && a.replicas > 1) {
          throw InputError(path + ".locality", "whole-GPU replicas cannot share one GPU");
        }
        break;
      case UnitKind::Share:
        if (a.milli < 1 || a.milli >= 1000)
          throw InputError(path + ".unit.milli", "must be in [1, 999]");
        break;
      case UnitKind::Mig:
        if (a.profiles.size() != a.models.size()) {
          throw InputError(path + ".unit.profile", "one profile index per allowed model");
        }
        break;
      default:
        throw InputError(path + ".unit.kind", "unknown unit kind");
    }
    for (std::size_t i = 0; i < a.models.size(); ++i) {
      index_in(path + ".models", a.models[i], p.models.size());
      if (a.kind == UnitKind::Mig && a.profiles[i] >= 0) {
        index_in(path + ".unit.profile", a.profiles[i], p.models[a.models[i]].profiles.size());
      }
    }
  }
}

void validate_incumbents(const ProblemData& p) {
  for (std::size_t i = 0; i < p.incumbents.size(); ++i) {
    const auto& inc = p.incumbents[i];
    const std::string path = at("incumbents", i);
    finite_nonneg(path + ".value", inc.value);
    finite_nonneg(path + ".preemption_cost", inc.preemption_cost);
    if (inc.cpu_milli < 0 || inc.memory_mib < 0)
      throw InputError(path + ".cpu_milli", "must be >= 0");
    if (inc.placements.empty()) throw InputError(path + ".placements", "at least one placement");
    for (std::size_t j = 0; j < inc.placements.size(); ++j) {
      const auto& r = inc.placements[j];
      const std::string pp = path + "." + at("placements", j);
      index_in(pp + ".node", r.node, p.nodes.size());
      if (r.gpus.empty()) throw InputError(pp + ".gpus", "at least one GPU");
      for (int g : r.gpus) {
        index_in(pp + ".gpus", g, p.gpus.size());
        if (p.gpus[g].node != r.node) throw InputError(pp + ".gpus", "GPU is not on that node");
      }
      if (r.kind == UnitKind::Mig) {
        if (r.gpus.size() != 1) throw InputError(pp + ".gpus", "a MIG instance is on one GPU");
        index_in(pp + ".mig_profile", r.profile, p.models[p.gpus[r.gpus[0]].model].profiles.size());
      }
      if (r.kind == UnitKind::Share && (r.milli < 1 || r.milli >= 1000 || r.gpus.size() != 1)) {
        throw InputError(pp + ".milli", "a share is 1..999 milli on one GPU");
      }
    }
  }
}

}  // namespace

void ProblemData::validate() const {
  validate_models(*this);
  validate_nodes_and_gpus(*this);
  validate_bids(*this);
  validate_incumbents(*this);
}

double replica_equivalent(const ProblemData& p, const AlternativeData& alt, int model,
                          int profile) {
  switch (alt.kind) {
    case UnitKind::Whole:
      return static_cast<double>(alt.gpus) * p.models[model].whole_equivalent;
    case UnitKind::Share:
      return alt.milli / 1000.0;
    case UnitKind::Mig: {
      const auto& md = p.models[model];
      if (profile < 0 || md.compute_units <= 0) return 1.0;
      return static_cast<double>(md.profiles[profile].compute) / md.compute_units;
    }
  }
  return 1.0;
}

}  // namespace gpualloc
