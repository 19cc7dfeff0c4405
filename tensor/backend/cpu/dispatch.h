// Runs a generic lambda with the C++ element type of a dtype: HF_DISPATCH_FLOAT for f32/bf16/f16
// kernels, HF_DISPATCH_ALL for every dtype. Unsupported dtypes throw naming the op.
#pragma once

#include <cstdint>

#include "common/error.h"
#include "tensor/dtype.h"

namespace hfrun::cpu {

template <typename T>
struct TypeTag {
  using type = T;
};

template <typename Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<BFloat16>{});
    case DType::kF16:
      return fn(TypeTag<Float16>{});
    default:
      HF_THROW(op, ": dtype ", dtype_name(t), " is not supported (expected f32, bf16, f16)");
  }
}

template <typename Fn>
decltype(auto) dispatch_all(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<BFloat16>{});
    case DType::kF16:
      return fn(TypeTag<Float16>{});
    case DType::kI32:
      return fn(TypeTag<int32_t>{});
    case DType::kI64:
      return fn(TypeTag<int64_t>{});
    case DType::kU8:
      return fn(TypeTag<uint8_t>{});
    case DType::kBool:
      return fn(TypeTag<uint8_t>{});
  }
  HF_THROW(op, ": invalid dtype");
}

template <typename Fn>
decltype(auto) dispatch_index(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kI32:
      return fn(TypeTag<int32_t>{});
    case DType::kI64:
      return fn(TypeTag<int64_t>{});
    default:
      HF_THROW(op, ": index dtype ", dtype_name(t), " is not supported (expected i32, i64)");
  }
}

}  // namespace hfrun::cpu
