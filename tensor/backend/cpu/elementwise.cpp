// Unary and binary elementwise kernels (f32 arithmetic for every floating dtype). tanh, sigmoid,
// SiLU and GELU use the branch-free vec_math.h functions so their loops vectorise.
#include <cmath>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/vec_math.h"
#include "tensor/ops.h"

namespace hfrun::cpu {
namespace {

using ops::UnaryOp;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// The tanh GELU's gate: 0.5 (1 + tanh(u)) = sigmoid(2 u) = 1 / (1 + e), e = exp(-2 u),
// u = sqrt(2 / pi) (x + 0.044715 x^3): one exp and one division (tanh_f takes a polynomial, an
// exp and a division, and 1 + tanh cancels where u is very negative). *e_out: e.
[[gnu::always_inline]] inline float gelu_tanh_gate(float x, float* e_out = nullptr) {
  const float e = exp_f(-2.0f * kSqrt2OverPi * (x + 0.044715f * x * x * x));
  if (e_out) *e_out = e;
  return 1.0f / (1.0f + e);
}

template <UnaryOp kOp>
[[gnu::always_inline]] inline float unary_f(float x) {
  if constexpr (kOp == UnaryOp::kNeg) return -x;
  if constexpr (kOp == UnaryOp::kExp) return std::exp(x);
  if constexpr (kOp == UnaryOp::kLog) return std::log(x);
  if constexpr (kOp == UnaryOp::kTanh) return tanh_f(x);
  if constexpr (kOp == UnaryOp::kSqrt) return std::sqrt(x);
  if constexpr (kOp == UnaryOp::kRsqrt) return 1.0f / std::sqrt(x);
  if constexpr (kOp == UnaryOp::kSigmoid) return sigmoid_f(x);
  if constexpr (kOp == UnaryOp::kRelu) return x > 0.0f ? x : 0.0f;
  if constexpr (kOp == UnaryOp::kSilu) return x * sigmoid_f(x);
  if constexpr (kOp == UnaryOp::kGelu) return 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
  if constexpr (kOp == UnaryOp::kGeluTanh) return x * gelu_tanh_gate(x);
  if constexpr (kOp == UnaryOp::kAbs) return std::fabs(x);
  if constexpr (kOp == UnaryOp::kSquare) return x * x;
  return 0.0f;
}

// dy/dx given x and y = f(x).
template <UnaryOp kOp>
[[gnu::always_inline]] inline float unary_grad_f(float x, float y) {
  if constexpr (kOp == UnaryOp::kNeg) return -1.0f;
  if constexpr (kOp == UnaryOp::kExp) return y;
  if constexpr (kOp == UnaryOp::kLog) return 1.0f / x;
  if constexpr (kOp == UnaryOp::kTanh) return 1.0f - y * y;
  if constexpr (kOp == UnaryOp::kSqrt) return 0.5f / y;
  if constexpr (kOp == UnaryOp::kRsqrt) return -0.5f * y * y * y;
  if constexpr (kOp == UnaryOp::kSigmoid) return y * (1.0f - y);
  if constexpr (kOp == UnaryOp::kRelu) return x > 0.0f ? 1.0f : 0.0f;
  if constexpr (kOp == UnaryOp::kSilu) {
    float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
  }
  if constexpr (kOp == UnaryOp::kGelu) {
    return 0.5f * (1.0f + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
  }
  if constexpr (kOp == UnaryOp::kGeluTanh) {
    // d/dx x s = s + 2 x s (1 - s) u'(x) with s = sigmoid(2 u(x)), and 1 - s = e s (not
    // rounded from s, where s is close to 1).
    float e;
    const float s = gelu_tanh_gate(x, &e);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
    return s * (1.0f + 2.0f * x * (e * s) * du);
  }
  if constexpr (kOp == UnaryOp::kAbs) return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
  if constexpr (kOp == UnaryOp::kSquare) return 2.0f * x;
  return 0.0f;
}

template <typename Fn>
void dispatch_unary(UnaryOp op, Fn&& fn) {
  switch (op) {
#define HF_CASE(name) \
  case UnaryOp::name: \
    return fn(std::integral_constant<UnaryOp, UnaryOp::name>{})
    HF_CASE(kNeg);
    HF_CASE(kExp);
    HF_CASE(kLog);
    HF_CASE(kTanh);
    HF_CASE(kSqrt);
    HF_CASE(kRsqrt);
    HF_CASE(kSigmoid);
    HF_CASE(kRelu);
    HF_CASE(kSilu);
    HF_CASE(kGelu);
    HF_CASE(kGeluTanh);
    HF_CASE(kAbs);
    HF_CASE(kSquare);
#undef HF_CASE
  }
}

constexpr int64_t kChunk = 4096;  // elements per parallel task

// One (op, dtype) loop per function: inlined into the dispatching function, the loops of all
// 13 ops x 4 dtypes exhaust GCC's inlining budget there, and the ones left calling tanh_f or
// exp_f out of line run scalar (GELU's forward in f32 ran ~10x slower than its backward).
template <UnaryOp kOp, typename T>
[[gnu::noinline]] void unary_span(const T* x, T* y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) store(y, i, unary_f<kOp>(load(x, i)));
}

// gx = gy * f'(x), with y = f(x) read from `y` when given, else recomputed.
template <UnaryOp kOp, typename T>
[[gnu::noinline]] void unary_backward_span(const T* gy, const T* x, const T* y, T* gx,
                                           int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float xv = load(x, i);
    const float yv = y ? load(y, i) : unary_f<kOp>(xv);
    store(gx, i, load(gy, i) * unary_grad_f<kOp>(xv, yv));
  }
}

// SwiGLU over [begin, end): out = s * up with s = silu(gate) rounded to T, as the unary and
// binary kernels compute and store them.
template <typename T>
[[gnu::noinline]] void swiglu_span(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float s = round_to<T>(unary_f<UnaryOp::kSilu>(load(gate, i)));
    store(out, i, s * load(up, i));
  }
}

// Its backward: the mul's two gradients (g * s, g * up), then silu's backward of the second,
// each rounded to T as the composed backward stores it.
template <typename T>
[[gnu::noinline]] void swiglu_backward_span(const T* g, const T* gate, const T* up, T* g_gate,
                                            T* g_up, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float x = load(gate, i), gv = load(g, i);
    const float s = round_to<T>(unary_f<UnaryOp::kSilu>(x));
    const float g_s = round_to<T>(gv * load(up, i));
    store(g_up, i, gv * s);
    store(g_gate, i, g_s * unary_grad_f<UnaryOp::kSilu>(x, s));
  }
}

bool swiglu_fits(const Tensor& a, const Tensor& b) {
  return a.is_contiguous() && b.is_contiguous() && a.sizes() == b.sizes() &&
         a.dtype() == b.dtype() &&
         (a.dtype() == DType::kF32 || a.dtype() == DType::kBF16 || a.dtype() == DType::kF16);
}

}  // namespace

Tensor CpuBackend::swiglu(const Tensor& gate, const Tensor& up) {
  if (!swiglu_fits(gate, up)) return Tensor();
  Tensor out = ops::empty(gate.sizes(), gate.dtype(), gate.device());
  const int64_t n = gate.numel();
  dispatch_float(gate.dtype(), "swiglu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = gate.data<T>();
    const T* up_p = up.data<T>();
    T* op_ = out.data<T>();
    parallel_for((n + kChunk - 1) / kChunk, kChunk, [&](int64_t c) {
      swiglu_span(gp, up_p, op_, c * kChunk, std::min(n, (c + 1) * kChunk));
    });
  });
  return out;
}

std::pair<Tensor, Tensor> CpuBackend::swiglu_backward(const Tensor& g, const Tensor& gate,
                                                      const Tensor& up) {
  if (!swiglu_fits(gate, up) || !swiglu_fits(g, gate)) return {};
  Tensor g_gate = ops::empty(gate.sizes(), gate.dtype(), gate.device());
  Tensor g_up = ops::empty(gate.sizes(), gate.dtype(), gate.device());
  const int64_t n = gate.numel();
  dispatch_float(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = g.data<T>();
    const T* xp = gate.data<T>();
    const T* up_p = up.data<T>();
    T* ggp = g_gate.data<T>();
    T* gup = g_up.data<T>();
    parallel_for((n + kChunk - 1) / kChunk, 2 * kChunk, [&](int64_t c) {
      swiglu_backward_span(gp, xp, up_p, ggp, gup, c * kChunk, std::min(n, (c + 1) * kChunk));
    });
  });
  return {g_gate, g_up};
}

void CpuBackend::unary(ops::UnaryOp op, const Tensor& x, Tensor& y) {
  dispatch_float(x.dtype(), ops::unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    const int64_t n = x.numel();
    dispatch_unary(op, [&](auto op_c) {
      constexpr UnaryOp kOp = decltype(op_c)::value;
      parallel_for((n + kChunk - 1) / kChunk, kChunk, [&](int64_t c) {
        unary_span<kOp>(xp, yp, c * kChunk, std::min(n, (c + 1) * kChunk));
      });
    });
  });
}

void CpuBackend::unary_backward(ops::UnaryOp op, const Tensor& gy, const Tensor& x, const Tensor& y,
                                Tensor& gx) {
  dispatch_float(x.dtype(), ops::unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* yp = y.defined() ? static_cast<const T*>(y.raw_data()) : nullptr;
    const T* gp = static_cast<const T*>(gy.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    const int64_t n = x.numel();
    dispatch_unary(op, [&](auto op_c) {
      constexpr UnaryOp kOp = decltype(op_c)::value;
      parallel_for((n + kChunk - 1) / kChunk, kChunk, [&](int64_t c) {
        unary_backward_span<kOp>(gp, xp, yp, gxp, c * kChunk, std::min(n, (c + 1) * kChunk));
      });
    });
  });
}

void CpuBackend::pow_scalar(const Tensor& x, double p, Tensor& y) {
  dispatch_float(x.dtype(), "pow_scalar", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    const float pf = static_cast<float>(p);
    parallel_for(x.numel(), 4, [&](int64_t i) { store(yp, i, std::pow(load(xp, i), pf)); });
  });
}

namespace {

template <BinaryOp kOp>
inline float binary_f(float a, float b) {
  if constexpr (kOp == BinaryOp::kAdd) return a + b;
  if constexpr (kOp == BinaryOp::kSub) return a - b;
  if constexpr (kOp == BinaryOp::kMul) return a * b;
  if constexpr (kOp == BinaryOp::kDiv) return a / b;
  if constexpr (kOp == BinaryOp::kMax) return (a > b || std::isnan(a)) ? a : b;
  return 0.0f;
}

template <BinaryOp kOp, typename T>
inline T binary_int(T a, T b) {
  if constexpr (kOp == BinaryOp::kAdd) return a + b;
  if constexpr (kOp == BinaryOp::kSub) return a - b;
  if constexpr (kOp == BinaryOp::kMul) return a * b;
  if constexpr (kOp == BinaryOp::kDiv) return b == 0 ? 0 : a / b;
  if constexpr (kOp == BinaryOp::kMax) return a > b ? a : b;
  return 0;
}

// p[i] as comparisons read it: half types as f32, every other type exactly in its own type
// (i32/i64 values beyond 2^24 are not exact in f32).
template <typename T>
inline auto compare_value(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
    return load(p, i);
  } else {
    return p[i];
  }
}

template <typename Fn>
void dispatch_arith(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::kAdd:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kAdd>{});
    case BinaryOp::kSub:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kSub>{});
    case BinaryOp::kMul:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kMul>{});
    case BinaryOp::kDiv:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kDiv>{});
    case BinaryOp::kMax:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kMax>{});
    default:
      HF_THROW("binary: not an arithmetic op");
  }
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (op == BinaryOp::kEq || op == BinaryOp::kGt || op == BinaryOp::kLt) {
    // Comparisons: any input dtype (a and b share one), bool output.
    dispatch_all(a.dtype(), "compare", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* ap = static_cast<const T*>(a.raw_data());
      const T* bp = static_cast<const T*>(b.raw_data());
      uint8_t* op_ = static_cast<uint8_t*>(out.raw_data());
      strided_loop<3>(out.sizes(), {out.strides(), a.strides(), b.strides()},
                      [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> inc) {
                        for (int64_t i = 0; i < n; ++i) {
                          const auto x = compare_value(ap, off[1] + i * inc[1]);
                          const auto y = compare_value(bp, off[2] + i * inc[2]);
                          bool r =
                              op == BinaryOp::kEq ? x == y : (op == BinaryOp::kGt ? x > y : x < y);
                          op_[off[0] + i * inc[0]] = r;
                        }
                      });
    });
    return;
  }
  dispatch_arith(op, [&](auto op_c) {
    constexpr BinaryOp kOp = decltype(op_c)::value;
    dispatch_all(out.dtype(), "binary", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* ap = static_cast<const T*>(a.raw_data());
      const T* bp = static_cast<const T*>(b.raw_data());
      T* op_ = static_cast<T*>(out.raw_data());
      strided_loop<3>(out.sizes(), {out.strides(), a.strides(), b.strides()},
                      [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> inc) {
                        T* o = op_ + off[0];
                        const T* x = ap + off[1];
                        const T* y = bp + off[2];
                        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, BFloat16> ||
                                      std::is_same_v<T, Float16>) {
                          // f32 arithmetic; 16-bit values widened on load and rounded on store. The
                          // unit-stride cases are loops of their own so that they vectorise.
                          if (inc[0] == 1 && inc[1] == 1 && inc[2] == 1) {
                            for (int64_t i = 0; i < n; ++i)
                              store(o, i, binary_f<kOp>(load(x, i), load(y, i)));
                          } else if (inc[0] == 1 && inc[1] == 1 && inc[2] == 0) {
                            const float yv = load(y, 0);
                            for (int64_t i = 0; i < n; ++i)
                              store(o, i, binary_f<kOp>(load(x, i), yv));
                          } else if (inc[0] == 1 && inc[1] == 0 && inc[2] == 1) {
                            const float xv = load(x, 0);
                            for (int64_t i = 0; i < n; ++i)
                              store(o, i, binary_f<kOp>(xv, load(y, i)));
                          } else {
                            for (int64_t i = 0; i < n; ++i)
                              store(o, i * inc[0],
                                    binary_f<kOp>(load(x, i * inc[1]), load(y, i * inc[2])));
                          }
                        } else {
                          for (int64_t i = 0; i < n; ++i)
                            o[i * inc[0]] = binary_int<kOp, T>(x[i * inc[1]], y[i * inc[2]]);
                        }
                      });
    });
  });
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch_all(out.dtype(), "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const uint8_t* cp = static_cast<const uint8_t*>(cond.raw_data());
    const T* ap = static_cast<const T*>(a.raw_data());
    const T* bp = static_cast<const T*>(b.raw_data());
    T* op_ = static_cast<T*>(out.raw_data());
    strided_loop<4>(out.sizes(), {out.strides(), cond.strides(), a.strides(), b.strides()},
                    [&](std::array<int64_t, 4> off, int64_t n, std::array<int64_t, 4> inc) {
                      for (int64_t i = 0; i < n; ++i) {
                        op_[off[0] + i * inc[0]] = cp[off[1] + i * inc[1]]
                                                       ? ap[off[2] + i * inc[2]]
                                                       : bp[off[3] + i * inc[3]];
                      }
                    });
  });
}

}  // namespace hfrun::cpu
