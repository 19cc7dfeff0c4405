// CPU matmul through oneDNN. The ops layer hands us a [batch..., M, K], b [batch..., K, N]
// already broadcast to out's batch dims (strided views; stride 0 where broadcast). We describe
// that problem to oneDNN as directly as it allows:
//   - broadcast batch dims (stride 0) become size-1 dims, which oneDNN broadcasts itself;
//   - batch dims that are contiguous across all three operands are merged into one;
//   - when b is shared by every batch and a's batch rows are evenly spaced, the batch is folded
//     into M: [B, M, K] x [K, N] becomes one [B*M, K] x [K, N] GEMM;
//   - a matrix that is neither row- nor column-major (no unit stride) is copied contiguous first.
// Primitives are created once per problem (shapes, strides, dtypes, bias) and cached; the data
// pointers are wrapped in dnnl::memory without copies on every call.
#include "tensor/backend/cpu/matmul_primitives.h"

#include <algorithm>
#include <array>
#include <list>
#include <mutex>
#include <unordered_map>

#include "common/error.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/onednn.h"

namespace hfrun::cpu {
namespace {

using dims = dnnl::memory::dims;
using dnnl_dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A CPU stream is only a queue handle, but oneDNN does not promise that one stream may be used
// from several threads at once, so each calling thread gets its own (created once).
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

dnnl_dt to_dnnl(DType t) {
  switch (t) {
    case DType::kF32:
      return dnnl_dt::f32;
    case DType::kBF16:
      return dnnl_dt::bf16;
    case DType::kF16:
      return dnnl_dt::f16;
    default:
      HF_THROW("matmul: dtype ", dtype_name(t), " has no oneDNN equivalent");
  }
}

// One operand as oneDNN sees it: dims and strides in elements (batch dims, then rows, cols).
struct Operand {
  dims sizes, strides;
  int64_t rank() const { return static_cast<int64_t>(sizes.size()); }
};

// oneDNN reads a [rows, cols] matrix that is row-major (unit stride along cols, leading
// dimension >= cols) or column-major. Strides of unit-length dims are arbitrary, so they are
// normalised first (equal problems then give equal cache keys). False when neither layout fits.
bool normalise_matrix(int64_t rows, int64_t cols, int64_t& sr, int64_t& sc) {
  if (cols == 1) sc = 1;
  if (rows == 1) sr = sc == 1 ? cols : 1;
  if (sc == 1 && sr >= cols) return true;
  if (sr == 1 && sc >= rows) return true;
  return false;
}
}  // namespace

bool matrix_layout_ok(const Tensor& t) {
  int64_t sr = t.strides()[t.dim() - 2], sc = t.strides()[t.dim() - 1];
  return normalise_matrix(t.sizes()[t.dim() - 2], t.sizes()[t.dim() - 1], sr, sc);
}

namespace {

// The problem handed to oneDNN; all three operands have the same rank.
struct Problem {
  Operand a, b, out;
};

Operand operand_of(const Tensor& t) {
  return {dims(t.sizes().begin(), t.sizes().end()), dims(t.strides().begin(), t.strides().end())};
}

// Drops batch dims where out has size 1 and merges adjacent batch dims d, e that every operand
// either broadcasts in both (size 1) or walks contiguously (stride_d == stride_e * size_e).
void coalesce_batch(Problem& p) {
  const int64_t nb = p.out.rank() - 2;
  Operand* ops_[3] = {&p.a, &p.b, &p.out};
  Operand merged[3];
  for (int64_t d = 0; d < nb; ++d) {
    if (p.out.sizes[d] == 1) continue;
    bool can_merge = !merged[2].sizes.empty();
    for (int k = 0; k < 3 && can_merge; ++k) {
      const Operand& o = *ops_[k];
      const Operand& m = merged[k];
      const int64_t last_size = m.sizes.back(), last_stride = m.strides.back();
      const bool both_broadcast = last_size == 1 && o.sizes[d] == 1;
      const bool contiguous =
          last_size != 1 && o.sizes[d] != 1 && last_stride == o.strides[d] * o.sizes[d];
      can_merge = both_broadcast || contiguous;
    }
    for (int k = 0; k < 3; ++k) {
      const Operand& o = *ops_[k];
      Operand& m = merged[k];
      if (can_merge) {
        m.sizes.back() *= o.sizes[d];
        m.strides.back() = o.strides[d];
      } else {
        m.sizes.push_back(o.sizes[d]);
        m.strides.push_back(o.strides[d]);
      }
    }
  }
  for (int k = 0; k < 3; ++k) {
    const Operand& o = *ops_[k];
    for (int64_t d = nb; d < o.rank(); ++d) {
      merged[k].sizes.push_back(o.sizes[d]);
      merged[k].strides.push_back(o.strides[d]);
    }
    *ops_[k] = std::move(merged[k]);
  }
}

// [B, M, K] x [1, K, N] -> [B*M, K] x [K, N] when a's batches are consecutive row blocks
// (batch stride == M * row stride); out is contiguous so its rows line up the same way.
void fold_batch_into_rows(Problem& p) {
  if (p.out.rank() != 3 || p.b.sizes[0] != 1 || p.a.sizes[0] != p.out.sizes[0]) return;
  const int64_t batch = p.a.sizes[0], m = p.a.sizes[1], k = p.a.sizes[2];
  int64_t sr = p.a.strides[1], sc = p.a.strides[2];
  if (p.a.strides[0] != m * sr || !normalise_matrix(batch * m, k, sr, sc)) return;
  p.a = {{batch * m, k}, {sr, sc}};
  p.b = {{p.b.sizes[1], p.b.sizes[2]}, {p.b.strides[1], p.b.strides[2]}};
  p.out = {{batch * m, p.out.sizes[2]}, {p.out.strides[1], p.out.strides[2]}};
}

// Normalises matrix strides and gives every size-1 batch dim the span of the dims inside it.
void normalise_strides(Operand& o) {
  const int64_t r = o.rank();
  normalise_matrix(o.sizes[r - 2], o.sizes[r - 1], o.strides[r - 2], o.strides[r - 1]);
  int64_t span = std::max(o.sizes[r - 2] * o.strides[r - 2], o.sizes[r - 1] * o.strides[r - 1]);
  for (int64_t d = r - 3; d >= 0; --d) {
    if (o.sizes[d] == 1) o.strides[d] = span;
    span = std::max(span, o.sizes[d] * o.strides[d]);
  }
}

Problem build_problem(const Tensor& a, const Tensor& b, const Tensor& out) {
  Problem p{operand_of(a), operand_of(b), operand_of(out)};
  coalesce_batch(p);
  fold_batch_into_rows(p);
  normalise_strides(p.a);
  normalise_strides(p.b);
  normalise_strides(p.out);
  return p;
}

// Least-recently-used bound on the cache: a run with ever-new shapes (variable sequence lengths,
// say) keeps the primitives it uses without growing without limit. Evicted entries stay alive
// for callers that still hold them (shared_ptr).
constexpr size_t kMaxCachedPrimitives = 2048;
std::mutex g_cache_mutex;
std::list<std::string> g_lru;  // most recently used first
std::unordered_map<std::string,
                   std::pair<std::shared_ptr<const Entry>, std::list<std::string>::iterator>>
    g_cache;
thread_local const Entry* t_last_entry = nullptr;

void append_key(std::string& key, int64_t v) {
  key.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// `accumulate`: out += a @ b (oneDNN's sum post-op, beta = 1 in its GEMM).
std::string make_key(const Problem& p, DType in, DType out, const Tensor& bias, bool allow_ref,
                     bool accumulate, bool prefer_gemm) {
  std::string key;
  key.reserve(256);
  append_key(key, p.out.rank());
  for (const Operand* o : {&p.a, &p.b, &p.out}) {
    for (int64_t v : o->sizes) append_key(key, v);
    for (int64_t v : o->strides) append_key(key, v);
  }
  append_key(key, static_cast<int64_t>(in));
  append_key(key, static_cast<int64_t>(out));
  append_key(key, bias.defined() ? static_cast<int64_t>(bias.dtype()) : -1);
  append_key(key, allow_ref);
  append_key(key, accumulate);
  append_key(key, prefer_gemm);
  return key;
}

// oneDNN 2.6's brgemm matmul chooses its blocking from M, and some long M run far below the
// kernel's rate: [M, 256] x [256, 768] in bf16 ran at 350-410 GFLOP/s with M = 50257 (GPT-2's
// vocabulary: the tied output layer's weight gradient) and 450-490 with M = 16448, where
// 50176 and 16384 rows ran at 600-680 (2 threads, AVX-512 bf16, no AMX; f32 gains less). Such
// a problem runs as two primitives: the rows up to a multiple of kRowAlign, then the short
// tail (at 50257 rows, 81 of them, ~0.4 ms).
constexpr int64_t kRowAlign = 256;
constexpr int64_t kSplitMinRows = 4096;

// p's first `rows` rows, or any `rows` rows at the same strides (2-D problems only).
Problem row_slice(const Problem& p, int64_t rows) {
  Problem s = p;
  s.a.sizes[0] = rows;
  s.out.sizes[0] = rows;
  normalise_strides(s.a);
  normalise_strides(s.out);
  return s;
}

std::shared_ptr<const Entry> create_entry(const Problem& p, DType in, DType out, const Tensor& bias,
                                          bool allow_ref, bool accumulate, bool prefer_gemm);

// Gives e a head and tail entry when p is long and misaligned (kRowAlign) and both halves have
// kernels as good as e's.
void split_rows(Entry& e, const Problem& p, DType in, DType out, const Tensor& bias, bool allow_ref,
                bool accumulate, bool prefer_gemm) {
  const int64_t m = p.out.rank() == 2 ? p.out.sizes[0] : 0;
  if (m < kSplitMinRows || m % kRowAlign == 0) return;
  const int64_t head_rows = m - m % kRowAlign;
  auto head =
      create_entry(row_slice(p, head_rows), in, out, bias, allow_ref, accumulate, prefer_gemm);
  auto tail =
      create_entry(row_slice(p, m - head_rows), in, out, bias, allow_ref, accumulate, prefer_gemm);
  if (!head->usable || !tail->usable || head->impl != e.impl) return;
  e.head = std::move(head);
  e.tail = std::move(tail);
  e.head_rows = head_rows;
}

std::shared_ptr<const Entry> create_entry(const Problem& p, DType in, DType out, const Tensor& bias,
                                          bool allow_ref, bool accumulate, bool prefer_gemm) {
  auto e = std::make_shared<Entry>();
  try {
    e->a_md = dnnl::memory::desc(p.a.sizes, to_dnnl(in), p.a.strides);
    e->b_md = dnnl::memory::desc(p.b.sizes, to_dnnl(in), p.b.strides);
    e->out_md = dnnl::memory::desc(p.out.sizes, to_dnnl(out), p.out.strides);
    e->has_bias = bias.defined();
    if (e->has_bias) {
      // Bias [N] as [1, ..., 1, N]: oneDNN broadcasts it over every row and batch.
      const int64_t r = p.out.rank(), n = p.out.sizes[r - 1];
      dims bias_sizes(r, 1), bias_strides(r, n);
      bias_sizes[r - 1] = n;
      bias_strides[r - 1] = 1;
      e->bias_md = dnnl::memory::desc(bias_sizes, to_dnnl(bias.dtype()), bias_strides);
    }
    dnnl::matmul::desc desc = e->has_bias
                                  ? dnnl::matmul::desc(e->a_md, e->b_md, e->bias_md, e->out_md)
                                  : dnnl::matmul::desc(e->a_md, e->b_md, e->out_md);
    // User-managed scratchpad: executing one cached primitive from several threads at once is
    // then safe whatever the library's build options.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    if (prefer_gemm && std::string(pd.impl_info_str()).rfind("brg", 0) == 0) {
      // The next implementation that is not brgemm, where one is not the reference kernel.
      dnnl::matmul::primitive_desc other = pd;
      while (other.next_impl()) {
        const std::string impl = other.impl_info_str();
        if (impl.rfind("brg", 0) != 0 && impl.rfind("ref", 0) != 0) {
          pd = other;
          break;
        }
      }
    }
    e->impl = pd.impl_info_str();
    e->usable = allow_ref || e->impl.rfind("ref", 0) != 0;
    if (e->usable) {
      e->prim = dnnl::matmul(pd);
      e->scratch_md = pd.scratchpad_desc();
      split_rows(*e, p, in, out, bias, allow_ref, accumulate, prefer_gemm);
    }
  } catch (const dnnl::error& err) {
    e->usable = false;
    e->impl = err.what();
  }
  return e;
}

// C [M, N] = A^T B for A^T [K, M] and B [K, N] dense row-major f32, C dense f32: oneDNN's
// inner product backward-weights primitive (diff_dst A^T, src B, diff_weights C in "oi").
std::shared_ptr<const Entry> create_weights_gradient_entry(int64_t m, int64_t n, int64_t k) {
  using tag = dnnl::memory::format_tag;
  constexpr auto f32 = dnnl::memory::data_type::f32;
  auto e = std::make_shared<Entry>();
  e->weights_gradient = true;
  try {
    e->a_md = dnnl::memory::desc({k, m}, f32, tag::nc);
    e->b_md = dnnl::memory::desc({k, n}, f32, tag::nc);
    e->out_md = dnnl::memory::desc({m, n}, f32, tag::oi);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::inner_product_forward::primitive_desc hint(
        dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, e->b_md, e->out_md,
                                          e->a_md),
        attr, cpu_engine());
    const dnnl::inner_product_backward_weights::primitive_desc pd(
        dnnl::inner_product_backward_weights::desc(e->b_md, e->out_md, e->a_md), attr, cpu_engine(),
        hint);
    const std::string impl = pd.impl_info_str();
    e->impl = "inner_product_backward_weights " + impl;
    e->usable = impl.rfind("ref", 0) != 0;
    if (e->usable) {
      e->prim = dnnl::inner_product_backward_weights(pd);
      e->scratch_md = pd.scratchpad_desc();
    }
  } catch (const dnnl::error& err) {
    e->usable = false;
    e->impl = err.what();
  }
  return e;
}

// The cached entry of `key`, made by make() under the cache's lock on a miss.
template <typename Make>
std::shared_ptr<const Entry> cached(std::string key, Make&& make) {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) {
    g_lru.splice(g_lru.begin(), g_lru, it->second.second);
    return it->second.first;
  }
  // Created under the lock: creation is rare and this keeps one primitive per problem.
  std::shared_ptr<const Entry> e = make();
  g_lru.push_front(key);
  g_cache.emplace(std::move(key), std::make_pair(e, g_lru.begin()));
  if (g_cache.size() > kMaxCachedPrimitives) {
    g_cache.erase(g_lru.back());
    g_lru.pop_back();
  }
  return e;
}

std::shared_ptr<const Entry> lookup_problem(const Problem& p, DType in, DType out,
                                            const Tensor& bias, bool allow_ref, bool accumulate,
                                            bool prefer_gemm = false) {
  return cached(make_key(p, in, out, bias, allow_ref, accumulate, prefer_gemm),
                [&] { return create_entry(p, in, out, bias, allow_ref, accumulate, prefer_gemm); });
}

// oneDNN's per-thread scratchpad (loops.h's thread_buffer).
struct ScratchpadTag;
void* thread_scratchpad(size_t bytes) {
  return thread_buffer<ScratchpadTag>(bytes);
}

void execute(const Entry& e, void* a, void* b, void* bias, void* out) {
  if (e.head) {
    // Row r of a and out starts r row strides in (a is row- or column-major: the stride of
    // dim 0 either way); b and the bias are shared.
    execute(*e.head, a, b, bias, out);
    const auto at_row = [&](void* base, const dnnl::memory::desc& md) {
      const size_t bytes = dnnl::memory::data_type_size(md.data_type());
      return static_cast<char*>(base) +
             e.head_rows * md.data.format_desc.blocking.strides[0] * bytes;
    };
    execute(*e.tail, at_row(a, e.a_md), b, bias, at_row(out, e.out_md));
    t_last_entry = &e;
    return;
  }
  dnnl::engine& eng = cpu_engine();
  std::unordered_map<int, dnnl::memory> args;
  if (e.weights_gradient) {
    args.emplace(DNNL_ARG_DIFF_DST, dnnl::memory(e.a_md, eng, a));
    args.emplace(DNNL_ARG_SRC, dnnl::memory(e.b_md, eng, b));
    args.emplace(DNNL_ARG_DIFF_WEIGHTS, dnnl::memory(e.out_md, eng, out));
  } else {
    args.emplace(DNNL_ARG_SRC, dnnl::memory(e.a_md, eng, a));
    args.emplace(DNNL_ARG_WEIGHTS, dnnl::memory(e.b_md, eng, b));
    args.emplace(DNNL_ARG_DST, dnnl::memory(e.out_md, eng, out));
  }
  if (e.has_bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(e.bias_md, eng, bias));
  if (size_t bytes = e.scratch_md.get_size(); bytes > 0) {
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(e.scratch_md, eng, thread_scratchpad(bytes)));
  }
  dnnl::stream& stream = thread_stream();
  e.prim.execute(stream, args);
  stream.wait();
  t_last_entry = &e;
}
}  // namespace

std::shared_ptr<const Entry> lookup(const Tensor& a, const Tensor& b, const Tensor& out, DType in,
                                    DType out_dtype, const Tensor& bias, bool allow_ref,
                                    bool accumulate, bool prefer_gemm) {
  return lookup_problem(build_problem(a, b, out), in, out_dtype, bias, allow_ref, accumulate,
                        prefer_gemm);
}

std::shared_ptr<const Entry> lookup_weights_gradient(int64_t m, int64_t n, int64_t k) {
  std::string key = "inner_product_backward_weights";
  for (int64_t v : {m, n, k}) append_key(key, v);
  return cached(std::move(key), [&] { return create_weights_gradient_entry(m, n, k); });
}
void execute(const Entry& e, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out) {
  execute(e, a.raw_data(), b.raw_data(), bias.defined() ? bias.raw_data() : nullptr,
          out.raw_data());
}
namespace {

// The cached primitive of a 2-D problem given by its operands' layouts (run_matrices).
std::shared_ptr<const Entry> lookup_matrices(const Matrix& a, const Matrix& b, const Matrix& out,
                                             DType in, DType out_dtype, bool accumulate = false) {
  const auto operand = [](const Matrix& m) {
    Operand o{{m.rows, m.cols}, {m.row_stride, m.col_stride}};
    normalise_strides(o);
    return o;
  };
  const Problem p{operand(a), operand(b), operand(out)};
  return lookup_problem(p, in, out_dtype, Tensor(), true, accumulate);
}

// run_matrices' per-thread state of one problem.
struct Prepared {
  std::shared_ptr<const Entry> entry;
  dnnl::memory a, b, out, scratch;
  std::unordered_map<int, dnnl::memory> args;
};
struct MatricesKey {
  std::array<int64_t, 15> v;
  bool operator==(const MatricesKey& o) const { return v == o.v; }
};
struct MatricesKeyHash {
  size_t operator()(const MatricesKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the values
    for (int64_t x : k.v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};
// Problems a thread keeps prepared; beyond it the thread's table starts over.
constexpr size_t kMaxPreparedPerThread = 1024;

}  // namespace

void run_matrices(const Matrix& a, const void* pa, const Matrix& b, const void* pb,
                  const Matrix& out, void* pout, DType in, DType out_dtype, bool accumulate) {
  thread_local std::unordered_map<MatricesKey, Prepared, MatricesKeyHash> prepared;
  const MatricesKey key{{a.rows, a.cols, a.row_stride, a.col_stride, b.rows, b.cols, b.row_stride,
                         b.col_stride, out.rows, out.cols, out.row_stride, out.col_stride,
                         static_cast<int64_t>(in), static_cast<int64_t>(out_dtype), accumulate}};
  auto it = prepared.find(key);
  if (it == prepared.end()) {
    if (prepared.size() >= kMaxPreparedPerThread) prepared.clear();
    Prepared p;
    p.entry = lookup_matrices(a, b, out, in, out_dtype, accumulate);
    HF_CHECK(p.entry->usable, "matmul: oneDNN has no kernel for a ", a.rows, "x", a.cols, " @ ",
             b.rows, "x", b.cols, " product: ", p.entry->impl);
    if (!p.entry->head) {
      dnnl::engine& eng = cpu_engine();
      p.a = dnnl::memory(p.entry->a_md, eng, nullptr);
      p.b = dnnl::memory(p.entry->b_md, eng, nullptr);
      p.out = dnnl::memory(p.entry->out_md, eng, nullptr);
      p.args = {{DNNL_ARG_SRC, p.a}, {DNNL_ARG_WEIGHTS, p.b}, {DNNL_ARG_DST, p.out}};
      if (p.entry->scratch_md.get_size() > 0) {
        p.scratch = dnnl::memory(p.entry->scratch_md, eng, nullptr);
        p.args.emplace(DNNL_ARG_SCRATCHPAD, p.scratch);
      }
    }
    it = prepared.emplace(key, std::move(p)).first;
  }
  Prepared& p = it->second;
  if (p.entry->head) {  // a long problem run as two (split_rows): the general path
    execute(*p.entry, const_cast<void*>(pa), const_cast<void*>(pb), nullptr, pout);
    return;
  }
  p.a.set_data_handle(const_cast<void*>(pa));
  p.b.set_data_handle(const_cast<void*>(pb));
  p.out.set_data_handle(pout);
  if (p.scratch) p.scratch.set_data_handle(thread_scratchpad(p.entry->scratch_md.get_size()));
  dnnl::stream& stream = thread_stream();
  p.entry->prim.execute(stream, p.args);
  stream.wait();
  t_last_entry = p.entry.get();
}

bool native_bf16_matmul() {
  static const bool ok = [] {
    try {
      const Matrix m{16, 16, 16, 1};
      return lookup_matrices(m, m, m, DType::kBF16, DType::kF32)->usable;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return ok;
}

size_t matmul_cache_capacity() {
  return kMaxCachedPrimitives;
}

size_t matmul_cache_size() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return g_cache.size();
}

std::string matmul_last_impl() {
  return t_last_entry ? t_last_entry->impl : std::string();
}

}  // namespace hfrun::cpu
