#include "distributed/comm/reduce_kernels.h"

#include "common/error.h"
#include "tensor/dtype.h"

namespace hfrun::dist::detail {
namespace {

template <typename T>
void divide_by(T* p, int64_t count, T n) {
  for (int64_t i = 0; i < count; ++i) p[i] = static_cast<T>(p[i] / n);
}

}  // namespace

void divide_in_place(Tensor& t, int n) {
  HF_CHECK(n > 0, "avg: group size ", n, " is not positive");
  switch (t.dtype()) {
    case DType::kF32:
      return divide_by(static_cast<float*>(t.raw_data()), t.numel(), static_cast<float>(n));
    case DType::kI32:
      return divide_by(static_cast<int32_t*>(t.raw_data()), t.numel(), static_cast<int32_t>(n));
    case DType::kI64:
      return divide_by(static_cast<int64_t*>(t.raw_data()), t.numel(), static_cast<int64_t>(n));
    default:
      HF_THROW("avg: unsupported dtype ", dtype_name(t.dtype()));
  }
}

void bf16_sum_into(const uint16_t* a, uint16_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

}  // namespace hfrun::dist::detail
