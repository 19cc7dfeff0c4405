// CUDA matmul through cuBLASLt. The ops layer hands us a [batch..., M, K] and b [batch..., K, N]
// expanded to out's batch dims (strided views, stride 0 where broadcast) and out [batch..., M, N]
// contiguous. cuBLASLt is column-major, so the row-major product out = a b is computed as
// out^T = b^T a^T: a row-major matrix is a column-major one of the transposed shape, and a
// column-major (transposed view) operand becomes a transpose flag. We describe the problem as
// directly as cuBLASLt allows:
//   - batch dims that are contiguous (or broadcast) across all operands merge into one strided
//     batch (stride 0 for a broadcast operand);
//   - a [B, M, K] x [K, N] product with evenly spaced row blocks of a is one [B*M, K] GEMM;
//   - a matrix with no unit stride, or batch dims that do not merge, is copied contiguous first.
// Compute is f32 (CUBLAS_COMPUTE_32F, no TF32) for every dtype: f32 keeps CPU parity tight and
// bf16/f16 inputs accumulate in f32 as on the CPU. A bias [N] is added by the BIAS epilogue.
// Plans (descriptors + the heuristic's algorithm) are cached per problem, never rebuilt per call.
#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/backend/cuda/cublaslt_api.h"
#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/backend/cuda/cuda_common.h"
#include "tensor/ops.h"
#include "tensor/profiler.h"

namespace hfrun::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what cuBLAS suggests for Hopper

void check_cublas(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) [[likely]] {
    return;
  }
  throw Error(detail::concat(rank_prefix(), call, " failed: ", cublaslt().GetStatusName(st), " (",
                             cublaslt().GetStatusString(st), ")"),
              file, line);
}
#define HF_CUBLAS_CHECK(call) check_cublas((call), #call, __FILE__, __LINE__)

// Per device: the cuBLASLt handle and a workspace, both kept for the life of the process.
struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};
DeviceState& device_state(int device) {
  static std::mutex mu;
  static auto* states = new std::vector<DeviceState>();
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(states->size())) states->resize(device + 1);
  DeviceState& s = (*states)[device];
  if (!s.handle) {
    HF_CUBLAS_CHECK(cublaslt().Create(&s.handle));
    s.workspace = allocator(device).allocate(kWorkspaceBytes);
  }
  return s;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      HF_THROW("matmul (cuda): dtype ", dtype_name(t), " has no cuBLASLt type");
  }
}

// A matrix operand as cuBLASLt sees it, in row-major terms: rows x cols with strides, and the
// batch stride (0 when broadcast).
struct Mat {
  int64_t rows, cols, sr, sc, batch_stride;
};

// Row-major (unit column stride, ld >= cols) or column-major (unit row stride, ld >= rows)
// after normalising the arbitrary strides of unit dims. False when neither fits.
bool normalise_matrix(int64_t rows, int64_t cols, int64_t& sr, int64_t& sc) {
  if (cols == 1) sc = 1;
  if (rows == 1) sr = sc == 1 ? cols : 1;
  if (sc == 1 && sr >= cols && sr >= 1) return true;
  if (sr == 1 && sc >= rows && sc >= 1) return true;
  return false;
}

bool matrix_ok(const Tensor& t) {
  int64_t sr = t.strides()[t.dim() - 2], sc = t.strides()[t.dim() - 1];
  return normalise_matrix(t.sizes()[t.dim() - 2], t.sizes()[t.dim() - 1], sr, sc);
}

// The whole problem: one strided batch of GEMMs.
struct Problem {
  Mat a, b;
  int64_t m, n, k, batch;
  bool ok = true;  // false: the batch dims do not merge into one strided batch
};

Problem build_problem(const Tensor& a, const Tensor& b, const Tensor& out) {
  Problem p;
  const int64_t r = out.dim();
  p.m = out.size(-2);
  p.n = out.size(-1);
  p.k = a.size(-1);
  // Merge batch dims (out is contiguous; a and b may be strided or broadcast).
  int64_t batch = 1, sa = 0, sb = 0;
  bool have = false;
  for (int64_t d = r - 3; d >= 0; --d) {  // innermost batch dim first
    const int64_t size = out.sizes()[d];
    if (size == 1) continue;
    const int64_t da = a.strides()[d], db = b.strides()[d];
    if (!have) {
      batch = size;
      sa = da;
      sb = db;
      have = true;
      continue;
    }
    // Dim d continues the merged block when each operand steps over it by its whole span.
    if (da == sa * batch && db == sb * batch) {
      batch *= size;
      continue;
    }
    p.ok = false;
  }
  p.batch = batch;
  p.a = {p.m, p.k, a.strides()[r - 2], a.strides()[r - 1], sa};
  p.b = {p.k, p.n, b.strides()[r - 2], b.strides()[r - 1], sb};
  normalise_matrix(p.a.rows, p.a.cols, p.a.sr, p.a.sc);
  normalise_matrix(p.b.rows, p.b.cols, p.b.sr, p.b.sc);
  // [B, M, K] x [K, N] with a's batches consecutive row blocks: one [B*M, K] GEMM.
  if (p.ok && p.batch > 1 && p.b.batch_stride == 0 && p.a.sc == 1 &&
      p.a.batch_stride == p.m * p.a.sr) {
    p.m *= p.batch;
    p.a.rows = p.m;
    p.batch = 1;
    p.a.batch_stride = 0;
  }
  return p;
}

uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

// A cached cuBLASLt plan. `mu` guards the bias pointer, which lives in the shared descriptor.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;
  std::string why;  // when not usable
  std::mutex mu;
};

struct Request {
  Problem p;
  DType in, out;
  int bias_type = -1;  // cudaDataType_t of the bias, -1 without one
  bool gelu = false;   // GELU epilogue writing its input to an aux matrix laid out as out
  uint32_t align_a, align_b, align_c, align_bias, align_aux;
  int device;
};

std::string plan_key(const Request& q) {
  std::string key;
  auto put = [&](int64_t v) { key.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  for (const Mat* m : {&q.p.a, &q.p.b}) {
    put(m->rows);
    put(m->cols);
    put(m->sr);
    put(m->sc);
    put(m->batch_stride);
  }
  for (int64_t v :
       {q.p.m, q.p.n, q.p.k, q.p.batch, int64_t(q.in), int64_t(q.out), int64_t(q.bias_type),
        int64_t(q.gelu), int64_t(q.align_a), int64_t(q.align_b), int64_t(q.align_c),
        int64_t(q.align_bias), int64_t(q.align_aux), int64_t(q.device)}) {
    put(v);
  }
  return key;
}

template <typename V>
void set_layout(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, V v) {
  HF_CUBLAS_CHECK(cublaslt().MatrixLayoutSetAttribute(l, attr, &v, sizeof(v)));
}

// Column-major layout of a row-major view: rows x cols with unit column stride is the
// column-major cols x rows matrix with ld = sr (op N); unit row stride is column-major
// rows x cols with ld = sc, read transposed (op T).
cublasLtMatrixLayout_t make_layout(const Mat& m, cudaDataType_t t, int64_t batch,
                                   cublasOperation_t& op) {
  cublasLtMatrixLayout_t l = nullptr;
  if (m.sc == 1) {
    HF_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&l, t, m.cols, m.rows, m.sr));
    op = CUBLAS_OP_N;
  } else {
    HF_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&l, t, m.rows, m.cols, m.sc));
    op = CUBLAS_OP_T;
  }
  if (batch > 1) {
    set_layout(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, static_cast<int32_t>(batch));
    set_layout(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, m.batch_stride);
  }
  return l;
}

std::shared_ptr<Plan> create_plan(const Request& q, const void* bias_ptr) {
  auto plan = std::make_shared<Plan>();
  const Problem& p = q.p;
  DeviceState& ds = device_state(q.device);
  try {
    HF_CUBLAS_CHECK(cublaslt().MatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // Lt "A" is b^T (N x K), Lt "B" is a^T (K x M), C/D is out^T (N x M, ld N).
    cublasOperation_t op_a, op_b;
    plan->la = make_layout(p.b, cuda_type(q.in), p.batch, op_a);
    plan->lb = make_layout(p.a, cuda_type(q.in), p.batch, op_b);
    HF_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&plan->lc, cuda_type(q.out), p.n, p.m, p.n));
    if (p.batch > 1) {
      set_layout(plan->lc, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, static_cast<int32_t>(p.batch));
      set_layout(plan->lc, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, p.m * p.n);
    }
    HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                      sizeof(op_a)));
    HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                      sizeof(op_b)));
    if (q.gelu) {
      const cublasLtEpilogue_t epi =
          q.bias_type >= 0 ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
      const int64_t aux_ld = p.n;
      HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                        &epi, sizeof(epi)));
      HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(
          plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
    }
    if (q.bias_type >= 0) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      const int32_t bias_type = q.bias_type;
      if (!q.gelu) {
        HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                          &epi, sizeof(epi)));
      }
      HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(
          plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
      HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias_ptr, sizeof(bias_ptr)));
    }
    cublasLtMatmulPreference_t pref = nullptr;
    HF_CUBLAS_CHECK(cublaslt().MatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                            sizeof(ws));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, q.align_b},  // Lt "A" is b
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, q.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, q.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, q.align_c}};
    for (const auto& [attr, value] : aligns) {
      cublaslt().MatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublaslt().MatmulAlgoGetHeuristic(
        ds.handle, plan->op, plan->la, plan->lb, plan->lc, plan->lc, pref, 1, &result, &found);
    cublaslt().MatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      plan->why = detail::concat("no cuBLASLt algorithm (", cublaslt().GetStatusName(st), ", ",
                                 found, " found)");
      return plan;
    }
    plan->algo = result.algo;
    plan->usable = true;
  } catch (const Error& e) {
    plan->why = e.message();
  }
  return plan;
}

std::shared_ptr<Plan> lookup(const Request& q, const void* bias_ptr) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<std::string, std::shared_ptr<Plan>>();
  const std::string key = plan_key(q);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  auto plan = create_plan(q, bias_ptr);
  cache->emplace(key, plan);
  return plan;
}

// Runs one cached plan; false when cuBLASLt has no algorithm for it (the caller falls back).
// With `aux` (laid out as out): out = gelu_tanh(a @ b + bias), aux = a @ b + bias. With
// `accumulate`: out += a @ b (beta = 1, in place: C and D are one matrix with one layout).
bool run(const Tensor& a, const Tensor& b, const Tensor& bias, int bias_type, Tensor& out,
         std::string& why, Tensor* aux = nullptr, bool accumulate = false) {
  Request q;
  q.p = build_problem(a, b, out);
  if (!q.p.ok) {
    why = "batch dims do not merge into one strided batch";
    return false;
  }
  q.in = a.dtype();
  q.out = out.dtype();
  q.bias_type = bias.defined() ? bias_type : -1;
  q.align_a = alignment_of(a.raw_data());
  q.align_b = alignment_of(b.raw_data());
  q.align_c = alignment_of(out.raw_data());
  q.align_bias = bias.defined() ? alignment_of(bias.raw_data()) : 0;
  q.gelu = aux != nullptr;
  q.align_aux = aux ? alignment_of(aux->raw_data()) : 0;
  q.device = out.device().index;
  const void* bias_ptr = bias.defined() ? bias.raw_data() : nullptr;
  std::shared_ptr<Plan> plan = lookup(q, bias_ptr);
  if (!plan->usable) {
    why = plan->why;
    return false;
  }
  DeviceState& ds = device_state(q.device);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  std::lock_guard<std::mutex> lock(plan->mu);
  if (bias_ptr) {
    HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias_ptr, sizeof(bias_ptr)));
  }
  if (aux) {
    void* aux_ptr = aux->raw_data();
    HF_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_ptr, sizeof(aux_ptr)));
  }
  const cublasStatus_t st =
      cublaslt().Matmul(ds.handle, plan->op, &alpha, b.raw_data(), plan->la, a.raw_data(), plan->lb,
                        &beta, out.raw_data(), plan->lc, out.raw_data(), plan->lc, &plan->algo,
                        ds.workspace, kWorkspaceBytes, current_stream());
  if (st != CUBLAS_STATUS_SUCCESS) {
    why = detail::concat("cublasLtMatmul: ", cublaslt().GetStatusName(st), " (",
                         cublaslt().GetStatusString(st), ")");
    return false;
  }
  return true;
}

std::string describe(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  return detail::concat(a.str(), " strides ", shape_str(a.strides()), " x ", b.str(), " strides ",
                        shape_str(b.strides()), bias.defined() ? " + bias " + bias.str() : "",
                        " -> ", out.str());
}

// run() with the bias first as given, then in out's dtype: a f32 bias on a 16-bit output is tried
// as is (cuBLASLt adds it in f32 before rounding, as oneDNN does), a 16-bit bias on a f32 output
// is widened first. `bias` and `bias_type` end as the last ones tried.
bool run_with_bias(const Tensor& a, const Tensor& b, Tensor& bias, int& bias_type, Tensor& out,
                   std::string& why, Tensor* aux = nullptr) {
  if (bias.defined() && bias.dtype() != out.dtype() && out.dtype() == DType::kF32) {
    bias = ops::to_dtype(bias, DType::kF32);
  }
  bias_type = bias.defined() ? static_cast<int>(cuda_type(bias.dtype())) : -1;
  if (run(a, b, bias, bias_type, out, why, aux)) return true;
  if (!bias.defined() || bias.dtype() == out.dtype()) return false;
  bias = ops::to_dtype(bias, out.dtype());
  bias_type = static_cast<int>(cuda_type(out.dtype()));
  return run(a, b, bias, bias_type, out, why, aux);
}

}  // namespace

void CudaBackend::matmul(const Tensor& a_in, const Tensor& b_in, const Tensor& bias_in,
                         Tensor& out) {
  HF_PROFILE_SCOPE("matmul");
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  Tensor a = matrix_ok(a_in) ? a_in : ops::contiguous(a_in);
  Tensor b = matrix_ok(b_in) ? b_in : ops::contiguous(b_in);
  Tensor bias = bias_in;
  int bias_type = -1;
  std::string why;
  if (run_with_bias(a, b, bias, bias_type, out, why)) return;
  // Dense, non-broadcast operands: the layout cuBLASLt always takes.
  const Shape& os = out.sizes();
  Shape a_shape(os.begin(), os.end() - 2), b_shape(os.begin(), os.end() - 2);
  a_shape.insert(a_shape.end(), {a.size(-2), a.size(-1)});
  b_shape.insert(b_shape.end(), {b.size(-2), b.size(-1)});
  Tensor ad = ops::contiguous(ops::expand(a, a_shape));
  Tensor bd = ops::contiguous(ops::expand(b, b_shape));
  std::string why_dense;
  if (run(ad, bd, bias, bias_type, out, why_dense)) return;
  HF_THROW(rank_prefix(), "matmul (cuda): cuBLASLt cannot compute ",
           describe(a_in, b_in, bias_in, out), ": ", why,
           "; with contiguous operands: ", why_dense);
}

// out += a @ b in one cuBLASLt GEMM with beta = 1 (a weight or input gradient added into its
// f32 buffer), or the base class's product and add where cuBLASLt has no algorithm for it. A
// bf16 out (LoRA's term added to its base layer's output) takes the product and add: beta = 1
// over a bf16 C has not run on hardware yet.
void CudaBackend::matmul_add(const Tensor& a_in, const Tensor& b_in, Tensor& out) {
  HF_PROFILE_SCOPE("matmul");
  if (out.numel() == 0) return;
  if (out.dtype() != DType::kF32) {
    Backend::matmul_add(a_in, b_in, out);
    return;
  }
  DeviceGuard guard(out.device());
  Tensor a = matrix_ok(a_in) ? a_in : ops::contiguous(a_in);
  Tensor b = matrix_ok(b_in) ? b_in : ops::contiguous(b_in);
  std::string why;
  if (run(a, b, Tensor(), -1, out, why, nullptr, /*accumulate=*/true)) return;
  Backend::matmul_add(a, b, out);
}

namespace {
std::atomic<int64_t> g_gelu_epilogues{0};
}  // namespace

int64_t gelu_epilogue_calls() {
  return g_gelu_epilogues.load();
}

// The GELU epilogue where cuBLASLt has one for the problem (plain 2-D operands, out and pre of
// one dtype); otherwise the composition of the base class.
void CudaBackend::matmul_gelu(const Tensor& a_in, const Tensor& b_in, const Tensor& bias_in,
                              Tensor& out, Tensor& pre) {
  HF_PROFILE_SCOPE("matmul");
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  // HFRUN_GEMM_EPILOGUES=0: always compose (for comparisons).
  static const bool epilogues = [] {
    const char* e = std::getenv("HFRUN_GEMM_EPILOGUES");
    return e == nullptr || std::string(e) != "0";
  }();
  if (epilogues) {
    Tensor a = matrix_ok(a_in) ? a_in : ops::contiguous(a_in);
    Tensor b = matrix_ok(b_in) ? b_in : ops::contiguous(b_in);
    Tensor bias = bias_in;
    int bias_type = -1;
    std::string why;
    if (pre.dtype() == out.dtype() && run_with_bias(a, b, bias, bias_type, out, why, &pre)) {
      g_gelu_epilogues.fetch_add(1);
      return;
    }
  }
  Backend::matmul_gelu(a_in, b_in, bias_in, out, pre);
}

}  // namespace hfrun::cuda
