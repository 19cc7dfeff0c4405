// Element types. bf16 and f16 are stored as 16-bit patterns; arithmetic on them converts to
// f32 (round-to-nearest-even on the way back), as PyTorch's CPU kernels do.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace hfrun {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8, kBool };

size_t dtype_size(DType t);
const char* dtype_name(DType t);           // "f32", "bf16", "f16", "i32", "i64", "u8", "bool"
DType parse_dtype(std::string_view name);  // throws hfrun::Error on an unknown name
inline bool is_floating(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}

struct BFloat16 {
  uint16_t bits = 0;
};
struct Float16 {
  uint16_t bits = 0;
};

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f rounded to bf16 (to nearest even; a NaN stays a NaN, made quiet), as an f32 bit pattern whose
// low 16 bits are zero. A select rather than a branch, and 32-bit throughout, so that loops using
// it vectorise.
inline uint32_t bf16_rounded_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  const uint32_t quiet_nan = (u | 0x00400000u) & 0xffff0000u;
  return (u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
}

inline uint16_t f32_to_bf16(float f) {
  return static_cast<uint16_t>(bf16_rounded_bits(f) >> 16);
}

// f rounded to bf16 and widened back to f32: the value a bf16 store and load give.
inline float round_to_bf16(float f) {
  const uint32_t u = bf16_rounded_bits(f);
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<BFloat16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<Float16> {
  static constexpr DType value = DType::kF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};
template <>
struct DTypeOf<bool> {
  static constexpr DType value = DType::kBool;
};

}  // namespace hfrun
