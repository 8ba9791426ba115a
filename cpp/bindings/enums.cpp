// allocator._core.GpuMode, UnitKind, Locality and LossReason, bound from the tables of enums.hpp.
#include "enums.hpp"

#include <pybind11/pybind11.h>

#include "bindings.hpp"

namespace py = pybind11;

namespace gpualloc::bindings {

namespace {

template <typename E>
void bind_enum(py::module_& m, const char* doc) {
  py::enum_<E> e(m, EnumTable<E>::name, doc);
  for (const auto& [name, value] : EnumTable<E>::values) e.value(name, value);
}

}  // namespace

void register_enums(py::module_& m) {
  bind_enum<GpuMode>(m, "How a GPU is offered (gpu_mode column).");
  bind_enum<UnitKind>(m, "What one replica needs (alt_kind and placement kind columns).");
  bind_enum<Locality>(m, "Locality of a gang, tightest first (alt_locality column).");
  bind_enum<LossReason>(m, "Why a bid lost (Engine.explain).");
}

}  // namespace gpualloc::bindings
