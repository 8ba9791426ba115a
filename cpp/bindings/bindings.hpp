// The areas of allocator._core, each registered by one function from its own file (module.cpp
// calls them in order: enums first, the types they use before the classes that use them).
#pragma once

#include <pybind11/pybind11.h>

namespace gpualloc::bindings {

void register_errors(pybind11::module_& m);      // module.cpp: InputError -> ValueError
void register_enums(pybind11::module_& m);       // enums.cpp
void register_problem(pybind11::module_& m);     // problem.cpp: ProblemColumns, PlacementColumns
void register_allocation(pybind11::module_& m);  // allocation.cpp: AllocationColumns
void register_auction(pybind11::module_& m);     // auction.cpp: EngineOptions, Workload, Engine
void register_sim(pybind11::module_& m);         // sim.cpp: SimAuctionOptions, SimCluster

}  // namespace gpualloc::bindings
