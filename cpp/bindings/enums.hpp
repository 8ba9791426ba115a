// The core's enums as Python sees them: one table of (name, value) per enum, from which
// register_enums binds allocator._core.GpuMode, UnitKind, Locality and LossReason and the column
// checks take the valid values. allocator/solvers/native.py maps the model's words to these
// names (e.g. "does_not_fit" -> DoesNotFit).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "gpualloc/auction.hpp"
#include "gpualloc/problem.hpp"

namespace gpualloc::bindings {

template <typename E>
struct EnumTable;

template <>
struct EnumTable<GpuMode> {
  static constexpr const char* name = "GpuMode";
  static constexpr std::array<std::pair<const char*, GpuMode>, 3> values{{
      {"Whole", GpuMode::Whole},
      {"Shared", GpuMode::Shared},
      {"Mig", GpuMode::Mig},
  }};
};

template <>
struct EnumTable<UnitKind> {
  static constexpr const char* name = "UnitKind";
  static constexpr std::array<std::pair<const char*, UnitKind>, 3> values{{
      {"Whole", UnitKind::Whole},
      {"Mig", UnitKind::Mig},
      {"Share", UnitKind::Share},
  }};
};

template <>
struct EnumTable<Locality> {
  static constexpr const char* name = "Locality";
  static constexpr std::array<std::pair<const char*, Locality>, 6> values{{
      {"Gpu", Locality::Gpu},
      {"Nvlink", Locality::Nvlink},
      {"Node", Locality::Node},
      {"Rack", Locality::Rack},
      {"Zone", Locality::Zone},
      {"Any", Locality::Any},
  }};
};

template <>
struct EnumTable<LossReason> {
  static constexpr const char* name = "LossReason";
  static constexpr std::array<std::pair<const char*, LossReason>, 4> values{{
      {"Outbid", LossReason::Outbid},
      {"DoesNotFit", LossReason::DoesNotFit},
      {"OverBudget", LossReason::OverBudget},
      {"BelowReserve", LossReason::BelowReserve},
  }};
};

/// The enum value `x` read from column `column`; InputError unless it is one of E's values.
template <typename E>
E enum_at(std::string_view column, std::int64_t x) {
  for (const auto& [name, value] : EnumTable<E>::values) {
    if (static_cast<std::int64_t>(value) == x) return value;
  }
  throw InputError(std::string(column), std::string("must be a value of ") + EnumTable<E>::name);
}

}  // namespace gpualloc::bindings
