// ProblemColumns and PlacementColumns (columns.hpp) and their lowering into ProblemData, one
// function per area: models and their MIG profiles, nodes, GPUs and what outside work holds,
// wallets, bids and alternatives, incumbents.
#include "gpualloc/problem.hpp"

#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

#include "bindings.hpp"
#include "columns.hpp"
#include "enums.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

void need_len(std::string_view name, std::size_t got, std::size_t want) {
  if (got != want) {
    throw InputError(std::string(name),
                     "length " + std::to_string(got) + ", expected " + std::to_string(want));
  }
}

void offsets_ok(std::string_view name, std::span<const std::int64_t> off, std::size_t n,
                std::size_t total) {
  need_len(name, off.size(), n + 1);
  if (off.front() != 0 || static_cast<std::size_t>(off.back()) != total) {
    throw InputError(std::string(name), "offsets must start at 0 and end at the flat length");
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (off[i] > off[i + 1]) throw InputError(std::string(name), "offsets must not decrease");
  }
}

int as_int(std::string_view name, std::int64_t x) {
  if (x < -(1LL << 30) || x > (1LL << 30)) {
    throw InputError(std::string(name), "value out of range");
  }
  return static_cast<int>(x);
}

namespace {

void models_from(const ProblemColumns& c, ProblemData& p) {
  const auto mem = view(c.model_memory_gb), reserve = view(c.model_reserve);
  const auto whole_eq = view(c.model_whole_equivalent);
  const auto units = view(c.model_mig_units), comp = view(c.model_compute_units);
  const std::size_t n_models = mem.size();
  need_len("model_mig_units", units.size(), n_models);
  need_len("model_compute_units", comp.size(), n_models);
  need_len("model_reserve", reserve.size(), n_models);
  need_len("model_whole_equivalent", whole_eq.size(), n_models);
  p.models.resize(n_models);
  for (std::size_t m = 0; m < n_models; ++m) {
    p.models[m].memory_gb = mem[m];
    p.models[m].mig_units = as_int("model_mig_units", units[m]);
    p.models[m].compute_units = as_int("model_compute_units", comp[m]);
    p.models[m].reserve = reserve[m];
    p.models[m].whole_equivalent = whole_eq[m];
  }
  const auto pm = view(c.profile_model), pc = view(c.profile_compute);
  const auto ps = view(c.profile_size), pst = view(c.profile_starts_mask);
  const auto pmax = view(c.profile_max_count), pmedia = view(c.profile_media);
  need_len("profile_compute", pc.size(), pm.size());
  need_len("profile_size", ps.size(), pm.size());
  need_len("profile_starts_mask", pst.size(), pm.size());
  need_len("profile_max_count", pmax.size(), pm.size());
  need_len("profile_media", pmedia.size(), pm.size());
  for (std::size_t q = 0; q < pm.size(); ++q) {
    if (pm[q] < 0 || static_cast<std::size_t>(pm[q]) >= n_models) {
      throw InputError("profile_model", "model index out of range");
    }
    if (pst[q] < 0 || pst[q] > 0xFFFFFFFFLL) {
      throw InputError("profile_starts_mask", "out of range");
    }
    MigProfileData pr;
    pr.compute = as_int("profile_compute", pc[q]);
    pr.size = as_int("profile_size", ps[q]);
    pr.starts_mask = static_cast<std::uint32_t>(pst[q]);
    pr.max_count = as_int("profile_max_count", pmax[q]);
    pr.media = pmedia[q] != 0;
    p.models[pm[q]].profiles.push_back(pr);
  }
}

void nodes_from(const ProblemColumns& c, ProblemData& p) {
  const auto ncpu = view(c.node_cpu_milli), nmem = view(c.node_memory_mib);
  const auto nrack = view(c.node_rack), nzone = view(c.node_zone);
  need_len("node_memory_mib", nmem.size(), ncpu.size());
  need_len("node_rack", nrack.size(), ncpu.size());
  need_len("node_zone", nzone.size(), ncpu.size());
  p.nodes.resize(ncpu.size());
  for (std::size_t n = 0; n < ncpu.size(); ++n) {
    p.nodes[n] = {ncpu[n], nmem[n], as_int("node_rack", nrack[n]), as_int("node_zone", nzone[n])};
  }
}

void gpus_from(const ProblemColumns& c, ProblemData& p) {
  const auto gnode = view(c.gpu_node), gdev = view(c.gpu_device), gmodel = view(c.gpu_model);
  const auto gmode = view(c.gpu_mode), gnv = view(c.gpu_nvlink), gused = view(c.gpu_used_milli);
  const std::size_t n_gpus = gnode.size();
  need_len("gpu_device", gdev.size(), n_gpus);
  need_len("gpu_model", gmodel.size(), n_gpus);
  need_len("gpu_mode", gmode.size(), n_gpus);
  need_len("gpu_nvlink", gnv.size(), n_gpus);
  need_len("gpu_used_milli", gused.size(), n_gpus);
  p.gpus.resize(n_gpus);
  for (std::size_t g = 0; g < n_gpus; ++g) {
    auto& gd = p.gpus[g];
    gd.node = as_int("gpu_node", gnode[g]);
    gd.device = as_int("gpu_device", gdev[g]);
    gd.model = as_int("gpu_model", gmodel[g]);
    gd.mode = enum_at<GpuMode>("gpu_mode", gmode[g]);
    gd.nvlink = as_int("gpu_nvlink", gnv[g]);
    gd.used_milli = as_int("gpu_used_milli", gused[g]);
  }
  const auto hg = view(c.hold_gpu), hp = view(c.hold_profile), hs = view(c.hold_start);
  need_len("hold_profile", hp.size(), hg.size());
  need_len("hold_start", hs.size(), hg.size());
  for (std::size_t i = 0; i < hg.size(); ++i) {
    if (hg[i] < 0 || static_cast<std::size_t>(hg[i]) >= n_gpus) {
      throw InputError("hold_gpu", "out of range");
    }
    p.gpus[hg[i]].outside.push_back({as_int("hold_profile", hp[i]), as_int("hold_start", hs[i])});
  }
  const auto fixed = view(c.gpu_fixed_layout);
  need_len("gpu_fixed_layout", fixed.size(), n_gpus);
  for (std::size_t g = 0; g < n_gpus; ++g) p.gpus[g].fixed_layout = fixed[g] != 0;
  const auto lg = view(c.layout_gpu), lp = view(c.layout_profile), ls = view(c.layout_start);
  need_len("layout_profile", lp.size(), lg.size());
  need_len("layout_start", ls.size(), lg.size());
  for (std::size_t i = 0; i < lg.size(); ++i) {
    if (lg[i] < 0 || static_cast<std::size_t>(lg[i]) >= n_gpus) {
      throw InputError("layout_gpu", "out of range");
    }
    p.gpus[lg[i]].layout.push_back(
        {as_int("layout_profile", lp[i]), as_int("layout_start", ls[i])});
  }
}

void alternatives_from(const ProblemColumns& c, ProblemData& p) {
  const auto abid = view(c.alt_bid), akind = view(c.alt_kind), agpus = view(c.alt_gpus);
  const auto amilli = view(c.alt_milli), arep = view(c.alt_replicas);
  const auto acpu = view(c.alt_cpu_milli), amem = view(c.alt_memory_mib);
  const auto aloc = view(c.alt_locality), aoff = view(c.alt_model_offsets);
  const auto amodels = view(c.alt_models), aprofs = view(c.alt_profiles);
  const auto aval = view(c.alt_value), aminmem = view(c.alt_min_gpu_memory_gb);
  const std::size_t n_alts = abid.size();
  need_len("alt_value", aval.size(), n_alts);
  need_len("alt_min_gpu_memory_gb", aminmem.size(), n_alts);
  need_len("alt_kind", akind.size(), n_alts);
  need_len("alt_gpus", agpus.size(), n_alts);
  need_len("alt_milli", amilli.size(), n_alts);
  need_len("alt_replicas", arep.size(), n_alts);
  need_len("alt_cpu_milli", acpu.size(), n_alts);
  need_len("alt_memory_mib", amem.size(), n_alts);
  need_len("alt_locality", aloc.size(), n_alts);
  offsets_ok("alt_model_offsets", aoff, n_alts, amodels.size());
  need_len("alt_profiles", aprofs.size(), amodels.size());
  p.alternatives.resize(n_alts);
  for (std::size_t k = 0; k < n_alts; ++k) {
    auto& a = p.alternatives[k];
    a.bid = as_int("alt_bid", abid[k]);
    a.value = aval[k];
    a.kind = enum_at<UnitKind>("alt_kind", akind[k]);
    a.gpus = as_int("alt_gpus", agpus[k]);
    a.milli = as_int("alt_milli", amilli[k]);
    a.replicas = as_int("alt_replicas", arep[k]);
    a.cpu_milli = acpu[k];
    a.memory_mib = amem[k];
    a.min_gpu_memory_gb = aminmem[k];
    a.locality = enum_at<Locality>("alt_locality", aloc[k]);
    for (auto j = aoff[k]; j < aoff[k + 1]; ++j) {
      a.models.push_back(as_int("alt_models", amodels[j]));
      if (a.kind == UnitKind::Mig) a.profiles.push_back(as_int("alt_profiles", aprofs[j]));
    }
  }
}

void incumbents_from(const ProblemColumns& c, ProblemData& p) {
  const auto ival = view(c.inc_value), icost = view(c.inc_preemption_cost);
  const auto ipre = view(c.inc_preemptible), icpu = view(c.inc_cpu_milli);
  const auto imem = view(c.inc_memory_mib), ioff = view(c.inc_placement_offsets);
  const std::size_t n_inc = ival.size();
  need_len("inc_preemption_cost", icost.size(), n_inc);
  need_len("inc_preemptible", ipre.size(), n_inc);
  need_len("inc_cpu_milli", icpu.size(), n_inc);
  need_len("inc_memory_mib", imem.size(), n_inc);
  auto pls = replicas_from(c.inc_placements, "inc_placements");
  offsets_ok("inc_placement_offsets", ioff, n_inc, pls.size());
  p.incumbents.resize(n_inc);
  for (std::size_t i = 0; i < n_inc; ++i) {
    auto& inc = p.incumbents[i];
    inc.value = ival[i];
    inc.preemption_cost = icost[i];
    inc.preemptible = ipre[i] != 0;
    inc.cpu_milli = icpu[i];
    inc.memory_mib = imem[i];
    for (auto j = ioff[i]; j < ioff[i + 1]; ++j) inc.placements.push_back(pls[j]);
  }
}

}  // namespace

std::vector<Replica> replicas_from(const PlacementColumns& c, const std::string& name) {
  // Field names built once, not per replica.
  const std::string k_node = name + ".node", k_kind = name + ".kind", k_prof = name + ".profile";
  const std::string k_start = name + ".start", k_milli = name + ".milli";
  const std::string k_goff = name + ".gpu_offsets", k_gpus = name + ".gpus";
  const auto node = view(c.node), kind = view(c.kind), prof = view(c.profile);
  const auto start = view(c.start), milli = view(c.milli);
  const auto goff = view(c.gpu_offsets), gl = view(c.gpus);
  const std::size_t n = node.size();
  need_len(k_kind, kind.size(), n);
  need_len(k_prof, prof.size(), n);
  need_len(k_start, start.size(), n);
  need_len(k_milli, milli.size(), n);
  offsets_ok(k_goff, goff, n, gl.size());
  std::vector<Replica> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto& r = out[i];
    r.node = as_int(k_node, node[i]);
    r.kind = enum_at<UnitKind>(k_kind, kind[i]);
    r.profile = as_int(k_prof, prof[i]);
    r.start = as_int(k_start, start[i]);
    r.milli = as_int(k_milli, milli[i]);
    for (auto j = goff[i]; j < goff[i + 1]; ++j) r.gpus.push_back(as_int(k_gpus, gl[j]));
  }
  return out;
}

ProblemData problem_from(const ProblemColumns& c) {
  ProblemData p;
  models_from(c, p);
  nodes_from(c, p);
  gpus_from(c, p);
  p.wallets.assign(c.wallet_balance.data(), c.wallet_balance.data() + c.wallet_balance.size());
  for (auto w : view(c.bid_wallet)) p.bids.push_back(as_int("bid_wallet", w));
  for (auto a : view(c.bid_bidder)) p.bidders.push_back(as_int("bid_bidder", a));
  alternatives_from(c, p);
  incumbents_from(c, p);
  return p;
}

void register_problem(py::module_& m) {
  bind_columns<PlacementColumns>(m, "PlacementColumns",
                                 "Replica placements as columns (gpus flat, by gpu_offsets).");
  bind_columns<ProblemColumns>(m, "ProblemColumns",
                               "A lowered round as named columns (allocator.solvers.native).");
  m.attr("MAX_MIG_UNITS") = kMaxMigUnits;
  m.attr("MAX_PROFILES") = kMaxProfiles;
  m.def(
      "validate_problem", [](const ProblemColumns& c) { problem_from(c).validate(); },
      py::arg("problem"), "Lower and validate a problem; raises ValueError naming the bad field.");
}

}  // namespace gpualloc::bindings
