// allocator._core: the pybind11 face of gpualloc_core. One register_<area> function per area.
// Bulk data crosses as dicts of numpy arrays (see allocator/solvers/native.py for the layout).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "arrays.hpp"
#include "gpualloc/auction.hpp"
#include "gpualloc/problem.hpp"

namespace py = pybind11;
using namespace gpualloc;

namespace {

template <typename T>
std::vector<T> column(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw InputError(key, "missing array");
  return bindings::as_vector<T>(d[key], key);
}

void need_len(const char* key, std::size_t got, std::size_t want) {
  if (got != want) {
    throw InputError(key, "length " + std::to_string(got) + ", expected " + std::to_string(want));
  }
}

void offsets_ok(const char* key, const std::vector<std::int64_t>& off, std::size_t n,
                std::size_t total) {
  need_len(key, off.size(), n + 1);
  if (off.front() != 0 || static_cast<std::size_t>(off.back()) != total) {
    throw InputError(key, "offsets must start at 0 and end at the flat length");
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (off[i] > off[i + 1]) throw InputError(key, "offsets must not decrease");
  }
}

int as_int(const char* key, std::int64_t x) {
  if (x < -(1LL << 30) || x > (1LL << 30)) throw InputError(key, "value out of range");
  return static_cast<int>(x);
}

/// Flat placements: node, kind, profile, start, milli, gpu_offsets (n+1), gpus.
std::vector<Replica> replicas_from(const py::dict& d, const char* prefix) {
  const std::string pre(prefix);
  const auto key = [&](const char* k) { return pre + k; };
  const auto node = column<std::int64_t>(d, key("node").c_str());
  const auto kind = column<std::int64_t>(d, key("kind").c_str());
  const auto prof = column<std::int64_t>(d, key("profile").c_str());
  const auto start = column<std::int64_t>(d, key("start").c_str());
  const auto milli = column<std::int64_t>(d, key("milli").c_str());
  const auto goff = column<std::int64_t>(d, key("gpu_offsets").c_str());
  const auto gl = column<std::int64_t>(d, key("gpus").c_str());
  const std::size_t n = node.size();
  need_len(key("kind").c_str(), kind.size(), n);
  need_len(key("profile").c_str(), prof.size(), n);
  need_len(key("start").c_str(), start.size(), n);
  need_len(key("milli").c_str(), milli.size(), n);
  offsets_ok(key("gpu_offsets").c_str(), goff, n, gl.size());
  std::vector<Replica> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto& r = out[i];
    r.node = as_int("node", node[i]);
    if (kind[i] < 0 || kind[i] > 2) throw InputError(key("kind"), "unit kind must be 0, 1 or 2");
    r.kind = static_cast<UnitKind>(kind[i]);
    r.profile = as_int("profile", prof[i]);
    r.start = as_int("start", start[i]);
    r.milli = as_int("milli", milli[i]);
    for (auto j = goff[i]; j < goff[i + 1]; ++j) r.gpus.push_back(as_int("gpus", gl[j]));
  }
  return out;
}

ProblemData problem_from(const py::dict& d) {
  ProblemData p;
  const auto mem = column<double>(d, "model_memory_gb");
  const auto units = column<std::int64_t>(d, "model_mig_units");
  const auto comp = column<std::int64_t>(d, "model_compute_units");
  const auto reserve = column<double>(d, "model_reserve");
  const auto whole_eq = column<double>(d, "model_whole_equivalent");
  const auto pm = column<std::int64_t>(d, "profile_model");
  const auto pc = column<std::int64_t>(d, "profile_compute");
  const auto ps = column<std::int64_t>(d, "profile_size");
  const auto pst = column<std::int64_t>(d, "profile_starts_mask");
  const auto pmax = column<std::int64_t>(d, "profile_max_count");
  const auto pmedia = column<std::int64_t>(d, "profile_media");
  const std::size_t n_models = mem.size();
  need_len("model_mig_units", units.size(), n_models);
  need_len("model_compute_units", comp.size(), n_models);
  need_len("model_reserve", reserve.size(), n_models);
  need_len("model_whole_equivalent", whole_eq.size(), n_models);
  for (const char* k : {"profile_compute", "profile_size", "profile_starts_mask",
                        "profile_max_count", "profile_media"}) {
    need_len(k, column<std::int64_t>(d, k).size(), pm.size());
  }
  p.models.resize(n_models);
  for (std::size_t m = 0; m < n_models; ++m) {
    p.models[m].memory_gb = mem[m];
    p.models[m].mig_units = as_int("model_mig_units", units[m]);
    p.models[m].compute_units = as_int("model_compute_units", comp[m]);
    p.models[m].reserve = reserve[m];
    p.models[m].whole_equivalent = whole_eq[m];
  }
  for (std::size_t q = 0; q < pm.size(); ++q) {
    if (pm[q] < 0 || static_cast<std::size_t>(pm[q]) >= n_models) {
      throw InputError("profile_model", "model index out of range");
    }
    if (pst[q] < 0 || pst[q] > 0xFFFFFFFFLL)
      throw InputError("profile_starts_mask", "out of range");
    MigProfileData pr;
    pr.compute = as_int("profile_compute", pc[q]);
    pr.size = as_int("profile_size", ps[q]);
    pr.starts_mask = static_cast<std::uint32_t>(pst[q]);
    pr.max_count = as_int("profile_max_count", pmax[q]);
    pr.media = pmedia[q] != 0;
    p.models[pm[q]].profiles.push_back(pr);
  }

  const auto ncpu = column<std::int64_t>(d, "node_cpu_milli");
  const auto nmem = column<std::int64_t>(d, "node_memory_mib");
  const auto nrack = column<std::int64_t>(d, "node_rack");
  const auto nzone = column<std::int64_t>(d, "node_zone");
  need_len("node_memory_mib", nmem.size(), ncpu.size());
  need_len("node_rack", nrack.size(), ncpu.size());
  need_len("node_zone", nzone.size(), ncpu.size());
  p.nodes.resize(ncpu.size());
  for (std::size_t n = 0; n < ncpu.size(); ++n) {
    p.nodes[n] = {ncpu[n], nmem[n], as_int("node_rack", nrack[n]), as_int("node_zone", nzone[n])};
  }

  const auto gnode = column<std::int64_t>(d, "gpu_node");
  const auto gdev = column<std::int64_t>(d, "gpu_device");
  const auto gmodel = column<std::int64_t>(d, "gpu_model");
  const auto gmode = column<std::int64_t>(d, "gpu_mode");
  const auto gnv = column<std::int64_t>(d, "gpu_nvlink");
  const auto gused = column<std::int64_t>(d, "gpu_used_milli");
  const std::size_t n_gpus = gnode.size();
  for (const char* k : {"gpu_device", "gpu_model", "gpu_mode", "gpu_nvlink", "gpu_used_milli"}) {
    need_len(k, column<std::int64_t>(d, k).size(), n_gpus);
  }
  p.gpus.resize(n_gpus);
  for (std::size_t g = 0; g < n_gpus; ++g) {
    auto& gd = p.gpus[g];
    gd.node = as_int("gpu_node", gnode[g]);
    gd.device = as_int("gpu_device", gdev[g]);
    gd.model = as_int("gpu_model", gmodel[g]);
    if (gmode[g] < 0 || gmode[g] > 2) throw InputError("gpu_mode", "must be 0, 1 or 2");
    gd.mode = static_cast<GpuMode>(gmode[g]);
    gd.nvlink = as_int("gpu_nvlink", gnv[g]);
    gd.used_milli = as_int("gpu_used_milli", gused[g]);
  }
  const auto hg = column<std::int64_t>(d, "hold_gpu");
  const auto hp = column<std::int64_t>(d, "hold_profile");
  const auto hs = column<std::int64_t>(d, "hold_start");
  need_len("hold_profile", hp.size(), hg.size());
  need_len("hold_start", hs.size(), hg.size());
  for (std::size_t i = 0; i < hg.size(); ++i) {
    if (hg[i] < 0 || static_cast<std::size_t>(hg[i]) >= n_gpus)
      throw InputError("hold_gpu", "out of range");
    p.gpus[hg[i]].outside.push_back({as_int("hold_profile", hp[i]), as_int("hold_start", hs[i])});
  }

  p.wallets = column<double>(d, "wallet_balance");
  for (auto w : column<std::int64_t>(d, "bid_wallet")) p.bids.push_back(as_int("bid_wallet", w));

  const auto abid = column<std::int64_t>(d, "alt_bid");
  const auto aval = column<double>(d, "alt_value");
  const auto akind = column<std::int64_t>(d, "alt_kind");
  const auto agpus = column<std::int64_t>(d, "alt_gpus");
  const auto amilli = column<std::int64_t>(d, "alt_milli");
  const auto arep = column<std::int64_t>(d, "alt_replicas");
  const auto acpu = column<std::int64_t>(d, "alt_cpu_milli");
  const auto amem = column<std::int64_t>(d, "alt_memory_mib");
  const auto aminmem = column<double>(d, "alt_min_gpu_memory_gb");
  const auto aloc = column<std::int64_t>(d, "alt_locality");
  const auto aoff = column<std::int64_t>(d, "alt_model_offsets");
  const auto amodels = column<std::int64_t>(d, "alt_models");
  const auto aprofs = column<std::int64_t>(d, "alt_profiles");
  const std::size_t n_alts = abid.size();
  need_len("alt_value", aval.size(), n_alts);
  need_len("alt_min_gpu_memory_gb", aminmem.size(), n_alts);
  for (const char* k : {"alt_kind", "alt_gpus", "alt_milli", "alt_replicas", "alt_cpu_milli",
                        "alt_memory_mib", "alt_locality"}) {
    need_len(k, column<std::int64_t>(d, k).size(), n_alts);
  }
  offsets_ok("alt_model_offsets", aoff, n_alts, amodels.size());
  need_len("alt_profiles", aprofs.size(), amodels.size());
  p.alternatives.resize(n_alts);
  for (std::size_t k = 0; k < n_alts; ++k) {
    auto& a = p.alternatives[k];
    a.bid = as_int("alt_bid", abid[k]);
    a.value = aval[k];
    if (akind[k] < 0 || akind[k] > 2) throw InputError("alt_kind", "must be 0, 1 or 2");
    a.kind = static_cast<UnitKind>(akind[k]);
    a.gpus = as_int("alt_gpus", agpus[k]);
    a.milli = as_int("alt_milli", amilli[k]);
    a.replicas = as_int("alt_replicas", arep[k]);
    a.cpu_milli = acpu[k];
    a.memory_mib = amem[k];
    a.min_gpu_memory_gb = aminmem[k];
    if (aloc[k] < 0 || aloc[k] > 5) throw InputError("alt_locality", "must be in 0..5");
    a.locality = static_cast<Locality>(aloc[k]);
    for (auto j = aoff[k]; j < aoff[k + 1]; ++j) {
      a.models.push_back(as_int("alt_models", amodels[j]));
      if (a.kind == UnitKind::Mig) a.profiles.push_back(as_int("alt_profiles", aprofs[j]));
    }
  }

  const auto ival = column<double>(d, "inc_value");
  const auto icost = column<double>(d, "inc_preemption_cost");
  const auto ipre = column<std::int64_t>(d, "inc_preemptible");
  const auto icpu = column<std::int64_t>(d, "inc_cpu_milli");
  const auto imem = column<std::int64_t>(d, "inc_memory_mib");
  const auto ioff = column<std::int64_t>(d, "inc_placement_offsets");
  const std::size_t n_inc = ival.size();
  need_len("inc_preemption_cost", icost.size(), n_inc);
  need_len("inc_preemptible", ipre.size(), n_inc);
  need_len("inc_cpu_milli", icpu.size(), n_inc);
  need_len("inc_memory_mib", imem.size(), n_inc);
  auto pls = replicas_from(d, "inc_pl_");
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
  return p;
}

py::dict solution_to(const Engine& e, const Solution& s) {
  const auto& p = e.problem();
  std::vector<std::int64_t> wb, wa, roff{0}, node, kind, prof, start, milli, goff{0}, gl, ev;
  for (std::size_t b = 0; b < s.alt_of_bid.size(); ++b) {
    const int k = s.alt_of_bid[b];
    if (k < 0) continue;
    wb.push_back(static_cast<std::int64_t>(b));
    wa.push_back(k - e.first_alt(static_cast<int>(b)));
    for (const auto& r : s.placements[b]) {
      node.push_back(r.node);
      kind.push_back(static_cast<std::int64_t>(r.kind));
      prof.push_back(r.profile);
      start.push_back(r.start);
      milli.push_back(r.milli);
      for (int g : r.gpus) gl.push_back(g);
      goff.push_back(static_cast<std::int64_t>(gl.size()));
    }
    roff.push_back(static_cast<std::int64_t>(node.size()));
  }
  for (std::size_t i = 0; i < s.evicted.size(); ++i) {
    if (s.evicted[i]) ev.push_back(static_cast<std::int64_t>(i));
  }
  (void)p;
  py::dict d;
  const auto arr = [](const std::vector<std::int64_t>& v) {
    return py::array_t<std::int64_t>(static_cast<py::ssize_t>(v.size()), v.data());
  };
  d["win_bid"] = arr(wb);
  d["win_alt"] = arr(wa);
  d["win_replica_offsets"] = arr(roff);
  d["pl_node"] = arr(node);
  d["pl_kind"] = arr(kind);
  d["pl_profile"] = arr(prof);
  d["pl_start"] = arr(start);
  d["pl_milli"] = arr(milli);
  d["pl_gpu_offsets"] = arr(goff);
  d["pl_gpus"] = arr(gl);
  d["evicted"] = arr(ev);
  d["welfare"] = s.welfare;
  return d;
}

Solution solution_from(const Engine& e, const py::dict& d) {
  const auto wb = column<std::int64_t>(d, "win_bid");
  const auto wa = column<std::int64_t>(d, "win_alt");
  const auto roff = column<std::int64_t>(d, "win_replica_offsets");
  const auto reps = replicas_from(d, "pl_");
  const auto ev = column<std::int64_t>(d, "evicted");
  need_len("win_alt", wa.size(), wb.size());
  offsets_ok("win_replica_offsets", roff, wb.size(), reps.size());
  std::vector<int> bids, alts;
  std::vector<std::vector<Replica>> per;
  for (std::size_t w = 0; w < wb.size(); ++w) {
    bids.push_back(as_int("win_bid", wb[w]));
    alts.push_back(as_int("win_alt", wa[w]));
    per.emplace_back(reps.begin() + roff[w], reps.begin() + roff[w + 1]);
  }
  std::vector<std::uint8_t> flags(e.problem().incumbents.size(), 0);
  for (auto i : ev) {
    if (i < 0 || static_cast<std::size_t>(i) >= flags.size())
      throw InputError("evicted", "no such incumbent");
    flags[i] = 1;
  }
  return e.load(bids, alts, per, flags);
}

void register_model(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr ptr) {
    try {
      if (ptr) std::rethrow_exception(ptr);
    } catch (const InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.attr("MAX_MIG_UNITS") = kMaxMigUnits;
  m.attr("MAX_PROFILES") = kMaxProfiles;
  m.def(
      "validate_problem", [](const py::dict& d) { problem_from(d).validate(); },
      "Lower and validate a problem dict; raises ValueError naming the bad field.");
}

void register_auction(py::module_& m) {
  py::class_<Engine>(m, "Engine")
      .def(py::init([](const py::dict& d, double alpha) {
             EngineOptions opt;
             opt.alpha = alpha;
             return new Engine(problem_from(d), opt);
           }),
           py::arg("data"), py::arg("alpha") = 0.75)
      .def("greedy",
           [](Engine& e) {
             const Solution* s = nullptr;
             {
               py::gil_scoped_release release;
               s = &e.greedy();
             }
             return solution_to(e, *s);
           })
      .def(
          "local",
          [](Engine& e, const py::dict& start, double time_limit, std::uint64_t seed,
             std::int64_t max_iterations, std::int64_t patience) {
            Solution s0 = solution_from(e, start);
            LocalStats st;
            Solution s;
            {
              py::gil_scoped_release release;
              s = e.local(s0, time_limit, seed, max_iterations, patience, &st);
            }
            py::dict out = solution_to(e, s);
            out["iterations"] = st.iterations;
            out["improvements"] = st.improvements;
            out["seconds"] = st.seconds;
            return out;
          },
          py::arg("start"), py::arg("time_limit"), py::arg("seed"), py::arg("max_iterations") = -1,
          py::arg("patience") = 0)
      .def(
          "critical_payments",
          [](Engine& e, const py::dict& alloc, int threads) {
            Solution s = solution_from(e, alloc);
            std::vector<double> pay;
            {
              py::gil_scoped_release release;
              pay = e.critical_payments(s, threads);
            }
            return py::array_t<double>(static_cast<py::ssize_t>(pay.size()), pay.data());
          },
          py::arg("alloc"), py::arg("threads") = 1)
      .def("explain",
           [](Engine& e, const py::dict& alloc) {
             Solution s = solution_from(e, alloc);
             const auto ex = e.explain(s);
             py::list out;
             for (std::size_t b = 0; b < ex.size(); ++b) {
               if (s.alt_of_bid[b] >= 0) continue;
               py::dict detail;
               for (const auto& [k, v] : ex[b].detail) detail[py::str(k)] = v;
               out.append(py::make_tuple(b, loss_reason_name(ex[b].reason), detail, ex[b].model));
             }
             return out;
           })
      .def("score", &Engine::score, py::arg("alt"))
      .def("welfare",
           [](const Engine& e, const py::dict& alloc) { return solution_from(e, alloc).welfare; });
}

}  // namespace

void register_sim(py::module_& m);  // cpp/bindings/sim.cpp

PYBIND11_MODULE(_core, m) {
  m.doc() = "C++ core of the GPU allocator: packing, greedy, local search, payments.";
  register_model(m);
  register_auction(m);
  register_sim(m);
}
