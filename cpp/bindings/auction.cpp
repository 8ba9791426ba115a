// allocator._core.Engine (gpualloc/auction.hpp) and its options: EngineOptions and the target
// Workload it may carry.
#include "gpualloc/auction.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "columns.hpp"
#include "gpualloc/fragmentation.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

namespace {

Workload workload_from(const py::handle& cpu, const py::handle& gpus, const py::handle& milli,
                       const py::handle& models, const py::handle& weight,
                       const py::handle& memory) {
  const auto c = as_vector<std::int64_t>(cpu, "cpu_milli");
  const auto g = as_vector<std::int64_t>(gpus, "gpus");
  const auto k = as_vector<std::int64_t>(milli, "milli");
  const auto md = as_vector<std::uint64_t>(models, "models");
  const auto w = as_vector<double>(weight, "weight");
  const std::size_t n = c.size();
  need_len("gpus", g.size(), n);
  need_len("milli", k.size(), n);
  need_len("models", md.size(), n);
  need_len("weight", w.size(), n);
  std::vector<std::int64_t> mem(n, 0);
  if (!memory.is_none()) {
    mem = as_vector<std::int64_t>(memory, "memory_mib");
    need_len("memory_mib", mem.size(), n);
  }
  std::vector<Workload::Task> tasks(n);
  for (std::size_t i = 0; i < n; ++i) {
    tasks[i] = {c[i], as_int("gpus", g[i]), as_int("milli", k[i]), md[i], w[i], mem[i]};
  }
  return Workload(std::move(tasks));
}

Packing packing_from(const std::string& name) {
  if (name == "fgd") return Packing::Fgd;
  if (name == "pattern") return Packing::Pattern;
  throw InputError("packing", "must be fgd or pattern, not '" + name + "'");
}

std::string packing_name(Packing p) { return p == Packing::Pattern ? "pattern" : "fgd"; }

EngineOptions options_from(double alpha, double fragment_scale, std::vector<int> node_order,
                           Workload workload, const std::string& packing,
                           const std::vector<std::pair<int, double>>& pattern_values,
                           double reserve_weight) {
  EngineOptions o;
  o.alpha = alpha;
  o.fragment_scale = fragment_scale;
  o.node_order = std::move(node_order);
  o.workload = std::move(workload);
  o.packing = packing_from(packing);
  o.pattern_values = PatternValues(pattern_values);
  o.reserve_weight = reserve_weight;
  return o;
}

void bind_options(py::module_& m) {
  py::class_<Workload>(m, "Workload", "FGD's target workload: task shapes and their weights.")
      .def(py::init(&workload_from), py::kw_only(), py::arg("cpu_milli"), py::arg("gpus"),
           py::arg("milli"), py::arg("models"), py::arg("weight"),
           py::arg("memory_mib") = py::none())
      .def("__len__", [](const Workload& w) { return w.tasks().size(); });
  const EngineOptions d;
  py::class_<EngineOptions>(m, "EngineOptions",
                            "Parameters of the engine (gpualloc::EngineOptions).")
      .def(py::init(&options_from), py::kw_only(), py::arg("alpha") = d.alpha,
           py::arg("fragment_scale") = d.fragment_scale, py::arg("node_order") = d.node_order,
           py::arg("workload") = d.workload, py::arg("packing") = packing_name(d.packing),
           py::arg("pattern_values") = std::vector<std::pair<int, double>>{},
           py::arg("reserve_weight") = d.reserve_weight)
      .def_readwrite("alpha", &EngineOptions::alpha)
      .def_property(
          "packing", [](const EngineOptions& o) { return packing_name(o.packing); },
          [](EngineOptions& o, const std::string& name) { o.packing = packing_from(name); })
      .def_property(
          "pattern_values", [](const EngineOptions& o) { return o.pattern_values.pairs(); },
          [](EngineOptions& o, const std::vector<std::pair<int, double>>& v) {
            o.pattern_values = PatternValues(v);
          })
      .def_readwrite("reserve_weight", &EngineOptions::reserve_weight)
      .def_readwrite("fragment_scale", &EngineOptions::fragment_scale)
      .def_readwrite("node_order", &EngineOptions::node_order)
      .def_readwrite("workload", &EngineOptions::workload);
}

Engine* engine_new(const ProblemColumns& problem, const EngineOptions& options) {
  return new Engine(problem_from(problem), options);
}

AllocationColumns greedy(Engine& e) {
  const Solution* s = nullptr;
  {
    py::gil_scoped_release release;
    s = &e.greedy();
  }
  return solution_to(e, *s);
}

AllocationColumns local(Engine& e, const AllocationColumns& start, double time_limit,
                        std::uint64_t seed, std::int64_t max_iterations, std::int64_t patience) {
  Solution s0 = solution_from(e, start);
  LocalStats st;
  Solution s;
  {
    py::gil_scoped_release release;
    s = e.local(s0, time_limit, seed, max_iterations, patience, &st);
  }
  AllocationColumns out = solution_to(e, s);
  out.iterations = st.iterations;
  out.improvements = st.improvements;
  out.seconds = st.seconds;
  return out;
}

F64 critical_payments(Engine& e, const AllocationColumns& alloc, int threads, bool shortcuts) {
  Solution s = solution_from(e, alloc);
  std::vector<double> pay;
  {
    py::gil_scoped_release release;
    struct Restore {  // the engine keeps its shortcuts after this call, even on an error
      Engine& e;
      ~Restore() { e.set_payment_shortcuts(true); }
    } restore{e};
    e.set_payment_shortcuts(shortcuts);
    pay = e.critical_payments(s, threads);
  }
  return to_column(pay);
}

F64 critical_payments_of(Engine& e, const AllocationColumns& alloc, const std::vector<int>& bids,
                         double time_budget_s) {
  Solution s = solution_from(e, alloc);
  std::vector<double> pay;
  {
    py::gil_scoped_release release;
    pay = e.critical_payments_of(s, bids, time_budget_s);
  }
  return to_column(pay);
}

F64 los_payments(Engine& e, const AllocationColumns& alloc) {
  Solution s = solution_from(e, alloc);
  std::vector<double> pay;
  {
    py::gil_scoped_release release;
    pay = e.los_payments(s);
  }
  return to_column(pay);
}

py::list explain(const Engine& e, const AllocationColumns& alloc) {
  Solution s = solution_from(e, alloc);
  const auto ex = e.explain(s);
  py::list out;
  for (std::size_t b = 0; b < ex.size(); ++b) {
    if (s.alt_of_bid[b] >= 0) continue;
    py::dict detail;
    for (const auto& [k, v] : ex[b].detail) detail[py::str(k)] = v;
    out.append(py::make_tuple(b, ex[b].reason, detail, ex[b].model));
  }
  return out;
}

}  // namespace

void register_auction(py::module_& m) {
  bind_options(m);
  py::class_<Engine>(m, "Engine", "One lowered problem: greedy, local search, payments, reasons.")
      .def(py::init(&engine_new), py::arg("problem"), py::arg("options") = EngineOptions())
      .def("greedy", &greedy, "The greedy allocation (with its welfare).")
      .def("local", &local, py::arg("start"), py::arg("time_limit"), py::arg("seed"),
           py::arg("max_iterations") = -1, py::arg("patience") = 0,
           "Local search from `start`; the result carries its iterations, gains and seconds.")
      .def("critical_payments", &critical_payments, py::arg("alloc"), py::arg("threads") = 1,
           py::arg("shortcuts") = true,
           "Payment per bid (0 for losers) of any feasible allocation. `shortcuts` false (tests "
           "only): plain per-winner replays, none of the replay's shortcuts.")
      .def("critical_payments_of", &critical_payments_of, py::arg("alloc"), py::arg("bids"),
           py::arg("time_budget"),
           "Critical payments of the winners `bids` only, in order, until `time_budget` seconds "
           "have passed (NaN for those left out; the first is always replayed).")
      .def("los_payments", &los_payments, py::arg("alloc"),
           "The `los` payment per bid (0 for losers), read off the greedy run; a winner greedy "
           "did not make the same way pays its bid.")
      .def("explain", &explain, py::arg("alloc"),
           "(bid, LossReason, detail, model index or -1) for every losing bid.")
      .def("score", &Engine::score, py::arg("alt"))
      .def(
          "welfare",
          [](const Engine& e, const AllocationColumns& alloc) {
            return solution_from(e, alloc).welfare;
          },
          py::arg("alloc"));
}

}  // namespace gpualloc::bindings
