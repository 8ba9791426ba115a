// allocator._core: the pybind11 face of gpualloc_core, one register_<area> per area
// (bindings.hpp). A problem and allocations cross as structs of named numpy columns
// (columns.hpp); allocator/_core.pyi types them and allocator/solvers/native.py builds them.
#include <pybind11/pybind11.h>

#include <exception>

#include "bindings.hpp"
#include "gpualloc/problem.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

void register_errors(py::module_& /*m*/) {
  py::register_exception_translator([](std::exception_ptr ptr) {
    try {
      if (ptr) std::rethrow_exception(ptr);
    } catch (const InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

}  // namespace gpualloc::bindings

PYBIND11_MODULE(_core, m) {
  using namespace gpualloc::bindings;
  m.doc() = "C++ core of the GPU allocator: packing, greedy, local search, payments.";
  register_errors(m);
  register_enums(m);
  register_problem(m);
  register_allocation(m);
  register_auction(m);
  register_sim(m);
}
