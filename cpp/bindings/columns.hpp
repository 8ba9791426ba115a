// The typed boundary of allocator._core: a problem and an allocation cross it as structs of named
// numpy columns (one-dimensional, int64 or float64), one row per model, profile, node, GPU, MIG
// instance held outside, wallet, bid, alternative, incumbent, winner or replica. Columns keep the
// bulk data in numpy (one Python object per bid would be slow at 10,000 bids); the structs give
// every column a name and a type.
//
// Each struct's fields are listed once, in its GPUALLOC_*_FIELDS list below: the C++ members, the
// Python keyword constructor, the attributes and the class's FIELDS table (name -> type, which
// tests/test_native.py holds allocator/_core.pyi to) are all generated from it. Unit kinds, GPU
// modes and localities are columns of the bound enums' values (register_enums).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpualloc/auction.hpp"
#include "gpualloc/problem.hpp"

namespace gpualloc::bindings {

/// A one-dimensional numeric column; anything numpy can cast is converted on assignment.
template <typename T>
using Column = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;
using I64 = Column<std::int64_t>;
using F64 = Column<double>;

/// Read-only view of a column's elements (the column must outlive it).
template <typename T>
std::span<const T> view(const Column<T>& c) {
  return {c.data(), static_cast<std::size_t>(c.size())};
}

/// A vector as a new column.
template <typename T>
Column<T> to_column(const std::vector<T>& v) {
  return Column<T>(static_cast<pybind11::ssize_t>(v.size()), v.data());
}

// X(type, name) for each field. Members with a default initialiser (the FIGURES lists) may be
// left out of the constructor; every other field is required.
#define GPUALLOC_DECLARE_FIELD(type, name) type name;
#define GPUALLOC_DECLARE_FIGURE(type, name, init) type name = init;
#define GPUALLOC_VISIT_FIELD(type, name) f(#name, name, true);
#define GPUALLOC_VISIT_FIGURE(type, name, init) f(#name, name, false);
#define GPUALLOC_MEMBER_FIELD(type, name) f(#name, &Self::name);
#define GPUALLOC_MEMBER_FIGURE(type, name, init) f(#name, &Self::name);
#define GPUALLOC_NO_FIGURES(X)

/// The body of a columns struct: members, `visit(f)` calling f(name, member, required) and the
/// static `members(f)` calling f(name, member pointer), in list order.
#define GPUALLOC_COLUMNS_STRUCT(Name, FIELDS, FIGURES)              \
  struct Name {                                                     \
    using Self = Name;                                              \
    FIELDS(GPUALLOC_DECLARE_FIELD)                                  \
    FIGURES(GPUALLOC_DECLARE_FIGURE)                                \
    template <typename F>                                           \
    void visit(F&& f) {                                             \
      FIELDS(GPUALLOC_VISIT_FIELD) FIGURES(GPUALLOC_VISIT_FIGURE)   \
    }                                                               \
    template <typename F>                                           \
    static void members(F&& f) {                                    \
      FIELDS(GPUALLOC_MEMBER_FIELD) FIGURES(GPUALLOC_MEMBER_FIGURE) \
    }                                                               \
  }

/// Replica placements, flat: per replica its node, unit kind (UnitKind), MIG profile (index in
/// its GPU model's table) and start slot (-1: none), milli-GPU (shares); its GPUs (global GPU
/// indices) are gpus[gpu_offsets[r]:gpu_offsets[r + 1]].
#define GPUALLOC_PLACEMENT_FIELDS(X) \
  X(I64, node)                       \
  X(I64, kind)                       \
  X(I64, profile)                    \
  X(I64, start)                      \
  X(I64, milli)                      \
  X(I64, gpu_offsets)                \
  X(I64, gpus)
GPUALLOC_COLUMNS_STRUCT(PlacementColumns, GPUALLOC_PLACEMENT_FIELDS, GPUALLOC_NO_FIGURES);

/// The lowered round (see allocator/solvers/native.py and gpualloc/problem.hpp). Per model; per
/// MIG profile (profile_model: its model; starts as a bit mask); per node (rack and zone ids, -1:
/// none); per GPU (gpu_mode: GpuMode; gpu_nvlink: cluster-wide domain id); per MIG instance held
/// outside the market; per GPU whether its layout is fixed (0/1) and per instance of those
/// layouts (layout_gpu, layout_profile, layout_start); per wallet; per bid (its wallet); per
/// alternative (alt_kind: UnitKind, alt_locality: Locality, its models
/// alt_models[alt_model_offsets[k]:alt_model_offsets[k + 1]] and, for MIG units, the profile on
/// each in alt_profiles); per incumbent (its placements
/// inc_placements[inc_placement_offsets[i]:inc_placement_offsets[i + 1]]).
#define GPUALLOC_PROBLEM_FIELDS(X) \
  X(F64, model_memory_gb)          \
  X(I64, model_mig_units)          \
  X(I64, model_compute_units)      \
  X(F64, model_reserve)            \
  X(F64, model_whole_equivalent)   \
  X(I64, profile_model)            \
  X(I64, profile_compute)          \
  X(I64, profile_size)             \
  X(I64, profile_starts_mask)      \
  X(I64, profile_max_count)        \
  X(I64, profile_media)            \
  X(I64, node_cpu_milli)           \
  X(I64, node_memory_mib)          \
  X(I64, node_rack)                \
  X(I64, node_zone)                \
  X(I64, gpu_node)                 \
  X(I64, gpu_device)               \
  X(I64, gpu_model)                \
  X(I64, gpu_mode)                 \
  X(I64, gpu_nvlink)               \
  X(I64, gpu_used_milli)           \
  X(I64, hold_gpu)                 \
  X(I64, hold_profile)             \
  X(I64, hold_start)               \
  X(I64, gpu_fixed_layout)         \
  X(I64, layout_gpu)               \
  X(I64, layout_profile)           \
  X(I64, layout_start)             \
  X(F64, wallet_balance)           \
  X(I64, bid_wallet)               \
  X(I64, bid_bidder)               \
  X(I64, alt_bid)                  \
  X(F64, alt_value)                \
  X(I64, alt_kind)                 \
  X(I64, alt_gpus)                 \
  X(I64, alt_milli)                \
  X(I64, alt_replicas)             \
  X(I64, alt_cpu_milli)            \
  X(I64, alt_memory_mib)           \
  X(F64, alt_min_gpu_memory_gb)    \
  X(I64, alt_locality)             \
  X(I64, alt_model_offsets)        \
  X(I64, alt_models)               \
  X(I64, alt_profiles)             \
  X(F64, inc_value)                \
  X(F64, inc_preemption_cost)      \
  X(I64, inc_preemptible)          \
  X(I64, inc_cpu_milli)            \
  X(I64, inc_memory_mib)           \
  X(I64, inc_placement_offsets)    \
  X(PlacementColumns, inc_placements)
GPUALLOC_COLUMNS_STRUCT(ProblemColumns, GPUALLOC_PROBLEM_FIELDS, GPUALLOC_NO_FIGURES);

/// An allocation: winners in bid order (win_alt: index of the alternative within the bid; their
/// replicas placements[win_replica_offsets[w]:win_replica_offsets[w + 1]]) and the evicted
/// incumbents. The figures are the engine's: welfare, and the local search's moves, gains and
/// seconds (0 where it did not run); an allocation handed in needs none of them.
#define GPUALLOC_ALLOCATION_FIELDS(X) \
  X(I64, win_bid)                     \
  X(I64, win_alt)                     \
  X(I64, win_replica_offsets)         \
  X(PlacementColumns, placements)     \
  X(I64, evicted)
#define GPUALLOC_ALLOCATION_FIGURES(X) \
  X(double, welfare, 0.0)              \
  X(std::int64_t, iterations, 0)       \
  X(std::int64_t, improvements, 0)     \
  X(double, seconds, 0.0)
GPUALLOC_COLUMNS_STRUCT(AllocationColumns, GPUALLOC_ALLOCATION_FIELDS, GPUALLOC_ALLOCATION_FIGURES);

/// Conversion of one field from Python (`from`, InputError naming the field) and the name of
/// its type in FIELDS.
template <typename T>
struct Field;
template <typename T>
struct Field<Column<T>> {
  static constexpr const char* type = std::is_same_v<T, double> ? "float64" : "int64";
  static Column<T> from(const pybind11::handle& h, const char* name) {
    Column<T> arr;
    try {
      arr = Column<T>::ensure(h);
    } catch (const pybind11::error_already_set&) {
      throw InputError(name, "not convertible to a numeric array");
    }
    if (!arr || arr.ndim() != 1) throw InputError(name, "must be a one-dimensional numeric array");
    return arr;
  }
};
template <>
struct Field<PlacementColumns> {
  static constexpr const char* type = "PlacementColumns";
  static PlacementColumns from(const pybind11::handle& h, const char* name) {
    if (!pybind11::isinstance<PlacementColumns>(h)) {
      throw InputError(name, "must be a PlacementColumns");
    }
    return h.cast<PlacementColumns>();
  }
};
template <typename T>
  requires std::is_arithmetic_v<T>
struct Field<T> {
  static constexpr const char* type = std::is_floating_point_v<T> ? "float" : "int";
  static T from(const pybind11::handle& h, const char* name) {
    try {
      return h.cast<T>();
    } catch (const pybind11::cast_error&) {
      throw InputError(name, std::string("must be a Python ") + type);
    }
  }
};

/// A columns struct from keyword arguments: every field by name, figures optional; InputError
/// (ValueError) naming a missing or bad field, TypeError for an unknown keyword.
template <typename S>
S from_kwargs(const pybind11::kwargs& kw) {
  std::size_t known = 0;
  S::members([&](const char* name, auto) { known += kw.contains(name) ? 1 : 0; });
  if (known != kw.size()) {
    for (const auto& item : kw) {
      bool found = false;
      const auto key = item.first.cast<std::string>();
      S::members([&](const char* name, auto) { found = found || key == name; });
      if (!found) throw pybind11::type_error("unexpected keyword argument '" + key + "'");
    }
  }
  S s;
  s.visit([&](const char* name, auto& member, bool required) {
    using T = std::decay_t<decltype(member)>;
    if (kw.contains(name)) {
      member = Field<T>::from(kw[name], name);
    } else if (required) {
      throw InputError(name, "missing");
    }
  });
  return s;
}

/// Python class `name` for columns struct S: keyword constructor, one checked attribute per
/// field, and FIELDS (field name -> "int64", "float64", "int", "float" or a struct's name).
template <typename S>
pybind11::class_<S> bind_columns(pybind11::module_& m, const char* name, const char* doc) {
  namespace py = pybind11;
  py::class_<S> cls(m, name, doc);
  cls.def(py::init([](const py::kwargs& kw) { return from_kwargs<S>(kw); }));
  py::dict fields;
  S::members([&](const char* field, auto member) {
    using T = std::decay_t<decltype(std::declval<S&>().*member)>;
    fields[field] = Field<T>::type;
    cls.def_property(
        field, [member](S& s) -> T& { return s.*member; },
        [member, field](S& s, const py::handle& h) { s.*member = Field<T>::from(h, field); },
        py::return_value_policy::reference_internal);
  });
  cls.attr("FIELDS") = fields;
  return cls;
}

/// The lowered problem (problem.cpp); InputError naming a bad column. Needs the GIL.
ProblemData problem_from(const ProblemColumns& c);
/// Replicas of flat placements; errors name `name` + "." + the column.
std::vector<Replica> replicas_from(const PlacementColumns& c, const std::string& name);
/// An allocation loaded into `e` (checked feasible), and a solution as columns (allocation.cpp).
Solution solution_from(const Engine& e, const AllocationColumns& c);
AllocationColumns solution_to(const Engine& e, const Solution& s);

/// `got` must equal `want`: InputError naming `name` otherwise.
void need_len(std::string_view name, std::size_t got, std::size_t want);
/// Offsets of n rows into a flat column of `total` entries: n + 1 of them, from 0 to total, not
/// decreasing.
void offsets_ok(std::string_view name, std::span<const std::int64_t> off, std::size_t n,
                std::size_t total);
/// An index or count in int range (|x| <= 2^30).
int as_int(std::string_view name, std::int64_t x);

}  // namespace gpualloc::bindings
