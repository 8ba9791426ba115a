// AllocationColumns (columns.hpp): an allocation crossing into the engine (loaded and checked
// feasible) and out of it (greedy, local search).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "bindings.hpp"
#include "columns.hpp"
#include "gpualloc/auction.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

Solution solution_from(const Engine& e, const AllocationColumns& c) {
  const auto wb = view(c.win_bid), wa = view(c.win_alt), roff = view(c.win_replica_offsets);
  const auto reps = replicas_from(c.placements, "placements");
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
  for (auto i : view(c.evicted)) {
    if (i < 0 || static_cast<std::size_t>(i) >= flags.size()) {
      throw InputError("evicted", "no such incumbent");
    }
    flags[i] = 1;
  }
  return e.load(bids, alts, per, flags);
}

AllocationColumns solution_to(const Engine& e, const Solution& s) {
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
  AllocationColumns out;
  out.win_bid = to_column(wb);
  out.win_alt = to_column(wa);
  out.win_replica_offsets = to_column(roff);
  out.placements.node = to_column(node);
  out.placements.kind = to_column(kind);
  out.placements.profile = to_column(prof);
  out.placements.start = to_column(start);
  out.placements.milli = to_column(milli);
  out.placements.gpu_offsets = to_column(goff);
  out.placements.gpus = to_column(gl);
  out.evicted = to_column(ev);
  out.welfare = s.welfare;
  return out;
}

void register_allocation(py::module_& m) {
  bind_columns<AllocationColumns>(
      m, "AllocationColumns",
      "An allocation as named columns (winners, their placements, evictions) and the engine's "
      "figures.");
}

}  // namespace gpualloc::bindings
