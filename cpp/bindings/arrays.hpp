// Numeric arrays crossing the binding: one conversion with field-named errors for every module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "gpualloc/problem.hpp"

namespace gpualloc::bindings {

/// A one-dimensional numeric array (anything numpy converts) as a vector; InputError naming
/// `name` otherwise.
template <typename T>
std::vector<T> as_vector(const pybind11::handle& h, const char* name) {
  using Array = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;
  Array arr;
  try {
    arr = Array::ensure(h);
  } catch (const pybind11::error_already_set&) {
    throw InputError(name, "not convertible to a numeric array");
  }
  if (!arr || arr.ndim() != 1) throw InputError(name, "must be a one-dimensional numeric array");
  return std::vector<T>(arr.data(), arr.data() + arr.size());
}

}  // namespace gpualloc::bindings
