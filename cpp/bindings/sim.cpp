// allocator._core.SimCluster: the simulator's cluster state and placement policies
// (gpualloc/sim.hpp). Pods are loaded once as arrays and then referred to by index, so the
// per-pod call that the event loop makes carries two integers.
#include "gpualloc/sim.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "gpualloc/sim_migrate.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

namespace {

std::vector<SimPod> pods_from(const py::handle& cpu, const py::handle& mem, const py::handle& gpus,
                              const py::handle& milli, const py::handle& models) {
  const auto c = as_vector<std::int64_t>(cpu, "cpu_milli");
  const auto m = as_vector<std::int64_t>(mem, "memory_mib");
  const auto g = as_vector<std::int64_t>(gpus, "gpus");
  const auto k = as_vector<std::int64_t>(milli, "milli");
  const auto md = as_vector<std::uint64_t>(models, "models");
  const std::size_t n = c.size();
  if (m.size() != n || g.size() != n || k.size() != n || md.size() != n) {
    throw InputError("pods", "cpu_milli, memory_mib, gpus, milli and models differ in length");
  }
  std::vector<SimPod> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (g[i] < 0 || g[i] > 64) throw InputError("gpus[" + std::to_string(i) + "]", "out of range");
    if (k[i] < 0 || k[i] > 1000) {
      throw InputError("milli[" + std::to_string(i) + "]", "out of range");
    }
    out[i] = SimPod{c[i], m[i], static_cast<int>(g[i]), static_cast<int>(k[i]), md[i]};
  }
  return out;
}

SimPolicy policy_from(const std::string& name) {
  if (name == "random") return SimPolicy::Random;
  if (name == "fifo") return SimPolicy::Fifo;
  if (name == "bestfit") return SimPolicy::BestFit;
  if (name == "dotprod") return SimPolicy::DotProd;
  if (name == "gpupacking") return SimPolicy::GpuPacking;
  if (name == "fgd") return SimPolicy::Fgd;
  if (name == "kai") return SimPolicy::KaiBinpack;
  if (name == "pattern") return SimPolicy::Pattern;
  throw InputError("policy", "unknown placement policy '" + name + "'");
}

py::object placement_to(const SimPlacement& pl) {
  if (pl.node < 0) return py::none();
  return py::make_tuple(pl.node, pl.gpus);
}

/// The cluster plus the pod table and the random stream of one run.
struct Session {
  SimCluster cluster;
  std::vector<SimPod> pods;
  std::vector<SimPlacement> where;
  std::mt19937_64 rng;

  const SimPod& pod(std::int64_t i) const {
    if (i < 0 || static_cast<std::size_t>(i) >= pods.size()) throw InputError("pod", "no such pod");
    return pods[static_cast<std::size_t>(i)];
  }
};

Session* session_new(const py::handle& cpu, const py::handle& mem, const py::handle& model,
                     const py::handle& gpus, const py::handle& model_memory_gb,
                     std::uint64_t seed) {
  auto g = as_vector<std::int64_t>(gpus, "gpus");
  auto md = as_vector<std::int64_t>(model, "model");
  std::vector<int> gi(g.begin(), g.end()), mi(md.begin(), md.end());
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (g[i] < 0 || g[i] > 64 || md[i] < -1 || md[i] > 63) {
      throw InputError("nodes[" + std::to_string(i) + "]", "gpus or model out of range");
    }
  }
  return new Session{SimCluster(as_vector<std::int64_t>(cpu, "cpu_milli"),
                                as_vector<std::int64_t>(mem, "memory_mib"), mi, gi,
                                as_vector<double>(model_memory_gb, "model_memory_gb")),
                     {},
                     {},
                     std::mt19937_64(seed)};
}

void set_workload(Session& s, const py::handle& cpu, const py::handle& mem, const py::handle& gpus,
                  const py::handle& milli, const py::handle& models, const py::handle& weight) {
  const auto pods = pods_from(cpu, mem, gpus, milli, models);
  const auto w = as_vector<double>(weight, "weight");
  if (w.size() != pods.size()) throw InputError("weight", "one weight per task");
  std::vector<Workload::Task> tasks;
  for (std::size_t i = 0; i < pods.size(); ++i) {
    tasks.push_back(
        {pods[i].cpu_milli, pods[i].gpus, pods[i].milli, pods[i].models, w[i], pods[i].memory_mib});
  }
  s.cluster.set_workload(Workload(std::move(tasks)));
}

void set_pods(Session& s, const py::handle& cpu, const py::handle& mem, const py::handle& gpus,
              const py::handle& milli, const py::handle& models) {
  s.pods = pods_from(cpu, mem, gpus, milli, models);
  s.where.assign(s.pods.size(), SimPlacement{});
}

py::object place(Session& s, std::int64_t i, const std::string& policy) {
  const SimPod& pod = s.pod(i);
  if (s.where[i].node >= 0) throw InputError("pod", "already placed");
  SimPlacement pl;
  if (!s.cluster.choose(pod, policy_from(policy), s.rng, pl)) return py::none();
  s.cluster.apply(pod, pl, +1);
  s.where[i] = pl;
  return placement_to(pl);
}

void assign(Session& s, std::int64_t i, int node, const std::vector<int>& gpus) {
  const SimPod& pod = s.pod(i);
  if (s.where[i].node >= 0) throw InputError("pod", "already placed");
  SimPlacement pl{node, pod.milli, gpus};
  s.cluster.apply(pod, pl, +1);
  s.where[i] = pl;
}

void release(Session& s, std::int64_t i) {
  const SimPod& pod = s.pod(i);
  if (s.where[i].node < 0) throw InputError("pod", "not placed");
  s.cluster.apply(pod, s.where[i], -1);
  s.where[i] = SimPlacement{};
}

py::object place_with_moves(Session& s, std::int64_t i, const std::string& policy, int max_moves,
                            int max_pod_gpus, int candidates, std::int64_t max_trials) {
  s.pod(i);  // checks the index
  SimMigrateOptions options;
  options.max_moves = max_moves;
  options.max_pod_gpus = max_pod_gpus;
  options.candidates = candidates;
  options.max_trials = max_trials;
  options.policy = policy_from(policy);
  std::vector<SimMove> moves;
  bool ok = false;
  {
    py::gil_scoped_release release;
    ok = gpualloc::place_with_moves(s.cluster, s.pods, s.where, static_cast<int>(i), options, s.rng,
                                    moves);
  }
  if (!ok) return py::none();
  py::list moved;
  for (const SimMove& m : moves) moved.append(py::make_tuple(m.pod, m.to.node, m.to.gpus));
  return py::make_tuple(placement_to(s.where[static_cast<std::size_t>(i)]), moved);
}

py::list auction_round(Session& s, const py::handle& pods, const py::handle& values,
                       const SimAuctionOptions& options) {
  const auto idx = as_vector<std::int64_t>(pods, "pods");
  const auto val = as_vector<double>(values, "values");
  std::vector<SimPod> round;
  for (auto i : idx) {
    const SimPod& pod = s.pod(i);  // checks the index first
    if (s.where[static_cast<std::size_t>(i)].node >= 0) {
      throw InputError("pods", "pod " + std::to_string(i) + " is already placed");
    }
    round.push_back(pod);
  }
  std::vector<SimPlacement> got;
  {
    py::gil_scoped_release release;
    got = s.cluster.auction_round(round, val, options);
  }
  py::list out;
  for (std::size_t k = 0; k < idx.size(); ++k) {
    s.where[idx[k]] = got[k];
    out.append(placement_to(got[k]));
  }
  return out;
}

SimAuctionOptions auction_options_from(const EngineOptions& engine, bool workload_hint,
                                       bool local_search, double time_limit_s,
                                       std::int64_t max_iterations, std::uint64_t seed) {
  return SimAuctionOptions{engine, workload_hint, local_search, time_limit_s, max_iterations, seed};
}

py::array_t<std::int64_t> gpu_free_milli(const Session& s) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(s.cluster.gpus()));
  for (int g = 0; g < s.cluster.gpus(); ++g) v[g] = s.cluster.free_milli(g);
  return py::array_t<std::int64_t>(static_cast<py::ssize_t>(v.size()), v.data());
}

py::tuple node_free(const Session& s) {
  std::vector<std::int64_t> cpu, mem;
  for (int n = 0; n < s.cluster.nodes(); ++n) {
    cpu.push_back(s.cluster.cpu_free(n));
    mem.push_back(s.cluster.memory_free(n));
  }
  return py::make_tuple(
      py::array_t<std::int64_t>(static_cast<py::ssize_t>(cpu.size()), cpu.data()),
      py::array_t<std::int64_t>(static_cast<py::ssize_t>(mem.size()), mem.data()));
}

void bind_auction_options(py::module_& m) {
  const SimAuctionOptions d;
  py::class_<SimAuctionOptions>(m, "SimAuctionOptions", "Options of SimCluster.auction_round.")
      .def(py::init(&auction_options_from), py::kw_only(), py::arg("engine") = d.engine,
           py::arg("workload_hint") = d.workload_hint, py::arg("local_search") = d.local_search,
           py::arg("time_limit_s") = d.time_limit_s, py::arg("max_iterations") = d.max_iterations,
           py::arg("seed") = d.seed)
      .def_readwrite("engine", &SimAuctionOptions::engine)
      .def_readwrite("workload_hint", &SimAuctionOptions::workload_hint)
      .def_readwrite("local_search", &SimAuctionOptions::local_search)
      .def_readwrite("time_limit_s", &SimAuctionOptions::time_limit_s)
      .def_readwrite("max_iterations", &SimAuctionOptions::max_iterations)
      .def_readwrite("seed", &SimAuctionOptions::seed);
}

}  // namespace

void register_sim(py::module_& m) {
  bind_auction_options(m);
  py::class_<Session>(m, "SimCluster")
      .def(py::init(&session_new), py::arg("cpu_milli"), py::arg("memory_mib"), py::arg("model"),
           py::arg("gpus"), py::arg("model_memory_gb"), py::arg("seed") = 0)
      .def("set_workload", &set_workload, py::arg("cpu_milli"), py::arg("memory_mib"),
           py::arg("gpus"), py::arg("milli"), py::arg("models"), py::arg("weight"))
      .def("set_pods", &set_pods, py::arg("cpu_milli"), py::arg("memory_mib"), py::arg("gpus"),
           py::arg("milli"), py::arg("models"))
      .def("place", &place, py::arg("pod"), py::arg("policy"),
           "Place pod i by `policy` and apply it; (node, [gpu, ...]) or None if it fits nowhere.")
      .def("assign", &assign, py::arg("pod"), py::arg("node"), py::arg("gpus"),
           "Apply a placement chosen elsewhere (ValueError if it does not fit).")
      .def("release", &release, py::arg("pod"))
      .def("place_with_moves", &place_with_moves, py::arg("pod"), py::arg("policy") = "fgd",
           py::kw_only(), py::arg("max_moves") = 2, py::arg("max_pod_gpus") = 1,
           py::arg("candidates") = 1, py::arg("max_trials") = 2000,
           "Place pod i by moving at most max_moves placed pods (gpualloc/sim_migrate.hpp); "
           "((node, [gpu, ...]), [(moved pod, node, [gpu, ...]), ...]) or None.")
      .def(
          "placement",
          [](const Session& s, std::int64_t i) {
            s.pod(i);
            return placement_to(s.where[static_cast<std::size_t>(i)]);
          },
          py::arg("pod"), "Where pod i is now: (node, [gpu, ...]) or None.")
      .def("auction_round", &auction_round, py::arg("pods"), py::arg("values"),
           py::arg("options") = SimAuctionOptions(),
           "Clear one round of the auction engine over the given pods; one placement or None each.")
      .def(
          "set_exact_scores", [](Session& s, bool exact) { s.cluster.set_exact_scores(exact); },
          py::arg("exact"))
      .def(
          "set_random_ties", [](Session& s, bool random) { s.cluster.set_random_ties(random); },
          py::arg("random"))
      .def(
          "set_node_order",
          [](Session& s, const py::handle& order) {
            const auto o = as_vector<std::int64_t>(order, "node_order");
            s.cluster.set_node_order(std::vector<int>(o.begin(), o.end()));
          },
          py::arg("order"))
      .def(
          "set_pattern",
          [](Session& s, const std::vector<std::pair<int, double>>& values, double reserve_weight) {
            s.cluster.set_pattern(PatternValues(values), reserve_weight);
          },
          py::arg("values"), py::arg("reserve_weight") = kDefaultReserveWeight,
          "The pattern rule's (size, net value) pairs and the weight of its CPU/memory reserve.")
      .def_property_readonly("pattern_values",
                             [](const Session& s) { return s.cluster.pattern_values().pairs(); })
      .def("fragment_milli", [](const Session& s) { return s.cluster.fragment_milli(); })
      .def("node_fragment", [](const Session& s, int n) { return s.cluster.node_fragment(n); })
      .def_property_readonly("used_milli", [](const Session& s) { return s.cluster.used_milli(); })
      .def_property_readonly("total_milli",
                             [](const Session& s) { return s.cluster.total_milli(); })
      .def("gpu_free_milli", &gpu_free_milli)
      .def("node_free", &node_free);
}

}  // namespace gpualloc::bindings
