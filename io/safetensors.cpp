// The safetensors reader: maps the file, validates it as the reference implementation does,
// and hands out tensors over the mapping.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <string_view>

#include "common/error.h"
#include "io/io_util.h"
#include "tensor/ops.h"

namespace hfrun::io {

namespace {

using json = nlohmann::ordered_json;

struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

std::optional<DType> supported_dtype(std::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  if (s == "U8") return DType::kU8;
  if (s == "BOOL") return DType::kBool;
  return std::nullopt;
}

// Dtypes the format defines that hfrun has no element type for.
bool known_unsupported_dtype(std::string_view s) {
  static constexpr std::string_view kNames[] = {
      "F64",     "I8",      "I16",     "U16",     "U32", "U64", "F8_E5M2",
      "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64"};
  return std::find(std::begin(kNames), std::end(kNames), s) != std::end(kNames);
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer, or nullopt (negative, fractional, not a number).
std::optional<uint64_t> as_u64(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) ::munmap(data, size);
  }
};

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
    case DType::kBool:
      return "BOOL";
  }
  HF_CHECK_INPUT(false, "dtype ", dtype_name(dtype), " cannot be stored in safetensors");
  return "";
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors file " + path;
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  HF_CHECK_INPUT(fd.fd >= 0, where, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  HF_CHECK_INPUT(::fstat(fd.fd, &st) == 0, where, ": cannot stat: ", std::strerror(errno));
  HF_CHECK_INPUT(S_ISREG(st.st_mode), where, ": not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  HF_CHECK_INPUT(file_size >= 8, where, ": file has ", file_size,
                 " bytes, fewer than the 8-byte header length (truncated or not safetensors)");

  SafetensorsFile f;
  f.path_ = path;
  f.mapping_ = std::make_shared<Mapping>();
  // Private and writable: tensors over it may be written (copy-on-write), the file never is.
  void* m = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
  HF_CHECK(m != MAP_FAILED, where, ": mmap failed: ", std::strerror(errno));
  f.mapping_->data = m;
  f.mapping_->size = file_size;
  const auto* base = static_cast<const unsigned char*>(m);

  const uint64_t n = read_u64_le(base);
  HF_CHECK_INPUT(n <= kMaxSafetensorsHeaderBytes, where, ": header length ", n,
                 " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                 " bytes (corrupt or not safetensors)");
  HF_CHECK_INPUT(8 + n <= file_size, where, ": header length ", n, " needs ", 8 + n,
                 " bytes but the file has only ", file_size, " (truncated?)");
  std::string_view text(reinterpret_cast<const char*>(base + 8), n);
  HF_CHECK_INPUT(!text.empty() && text.front() == '{', where,
                 ": header must be a JSON object starting with '{'");
  json header;
  std::optional<detail::DuplicateKey> dup;
  try {
    header = detail::parse_json_checked(text, dup);
  } catch (const json::exception& e) {
    HF_CHECK_INPUT(false, where, ": header is not valid JSON: ", e.what());
  }
  HF_CHECK_INPUT(header.is_object(), where, ": header must be a JSON object, got ",
                 header.type_name());
  if (dup) {
    HF_CHECK_INPUT(dup->depth != 1, where, ": tensor '", dup->key,
                   "' appears more than once in the header");
    HF_CHECK_INPUT(false, where, ": key '", dup->key, "' appears more than once in the entry of '",
                   dup->parent, "'");
  }

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (info.is_null()) continue;
      HF_CHECK_INPUT(info.is_object(), where, ": __metadata__ must be an object of strings, got ",
                     info.type_name());
      for (const auto& [k, v] : info.items()) {
        HF_CHECK_INPUT(v.is_string(), where, ": __metadata__ value of '", k,
                       "' must be a string, got ", v.type_name());
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = where + ": tensor '" + name + "'";
    HF_CHECK_INPUT(info.is_object(), what, ": entry must be an object with dtype, shape and ",
                   "data_offsets, got ", info.type_name());
    HF_CHECK_INPUT(info.contains("dtype") && info["dtype"].is_string(), what,
                   ": missing or non-string \"dtype\"");
    const std::string dtype_str = info["dtype"].get<std::string>();
    HF_CHECK_INPUT(!known_unsupported_dtype(dtype_str), what, ": dtype ", dtype_str,
                   " is not supported by hfrun (supported: F32, BF16, F16, I32, I64, U8, BOOL)");
    std::optional<DType> dtype = supported_dtype(dtype_str);
    HF_CHECK_INPUT(dtype.has_value(), what, ": unknown dtype \"", dtype_str, "\"");
    HF_CHECK_INPUT(info.contains("shape") && info["shape"].is_array(), what,
                   ": missing \"shape\" (expected a list of non-negative integers)");
    TensorEntry e;
    e.name = name;
    e.dtype = *dtype;
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : info["shape"]) {
      std::optional<uint64_t> dim = as_u64(d);
      HF_CHECK_INPUT(dim.has_value(), what, ": shape ", info["shape"].dump(),
                     " must be a list of non-negative integers");
      overflow = overflow || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                 __builtin_mul_overflow(numel, *dim, &numel);
      e.shape.push_back(static_cast<int64_t>(*dim));
    }
    overflow = overflow || __builtin_mul_overflow(numel, dtype_size(*dtype), &e.nbytes) ||
               e.nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    HF_CHECK_INPUT(!overflow, what, ": shape ", info["shape"].dump(), " of ", dtype_str,
                   " overflows the byte size");
    const json* offs = info.contains("data_offsets") ? &info["data_offsets"] : nullptr;
    std::optional<uint64_t> begin, end;
    if (offs != nullptr && offs->is_array() && offs->size() == 2) {
      begin = as_u64((*offs)[0]);
      end = as_u64((*offs)[1]);
    }
    HF_CHECK_INPUT(begin && end, what,
                   ": \"data_offsets\" must be [begin, end] with non-negative integers");
    HF_CHECK_INPUT(*end >= *begin, what, ": data_offsets [", *begin, ", ", *end,
                   "] end before they begin");
    HF_CHECK_INPUT(*end - *begin == e.nbytes, what, ": shape ", shape_str(e.shape), " of ",
                   dtype_str, " needs ", e.nbytes, " bytes but data_offsets [", *begin, ", ", *end,
                   "] span ", *end - *begin);
    e.offset = *begin;  // relative to the data section until the layout is checked
    f.index_.emplace(name, f.entries_.size());
    f.entries_.push_back(std::move(e));
  }

  // The data section must be covered exactly: tensors back to back from 0, in offset order.
  std::vector<size_t> order(f.entries_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const TensorEntry& x = f.entries_[a];
    const TensorEntry& y = f.entries_[b];
    return std::pair(x.offset, x.nbytes) < std::pair(y.offset, y.nbytes);
  });
  const uint64_t data_size = file_size - 8 - n;
  uint64_t cursor = 0;
  const TensorEntry* prev = nullptr;
  for (size_t i : order) {
    const TensorEntry& e = f.entries_[i];
    HF_CHECK_INPUT(e.offset >= cursor, where, ": tensor '", e.name, "' (data_offsets [", e.offset,
                   ", ", e.offset + e.nbytes, "]) overlaps tensor '", prev ? prev->name : "",
                   "', which ends at ", cursor);
    HF_CHECK_INPUT(e.offset == cursor, where, ": gap of ", e.offset - cursor,
                   " bytes before tensor '", e.name, "' (data_offsets begin at ", e.offset,
                   ", expected ", cursor, ": tensors must be packed without gaps)");
    cursor = e.offset + e.nbytes;
    prev = &e;
  }
  const std::string last = prev ? "tensor '" + prev->name + "'" : "the header (no tensors)";
  HF_CHECK_INPUT(cursor <= data_size, where, ": ", last, " ends at data byte ", cursor,
                 " but the file has only ", data_size, " data bytes after the ", n,
                 "-byte header (truncated?)");
  HF_CHECK_INPUT(cursor == data_size, where, ": ", data_size - cursor,
                 " trailing bytes after the data of ", last, " (expected the file to end at byte ",
                 8 + n + cursor, ", it has ", file_size, ")");
  for (TensorEntry& e : f.entries_) e.offset += 8 + n;
  return f;
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  HF_CHECK_INPUT(it != index_.end(), "safetensors file ", path_, ": no tensor named '", name, "'");
  return entries_[it->second];
}

const unsigned char* SafetensorsFile::mapped_data() const {
  return mapping_ ? static_cast<const unsigned char*>(mapping_->data) : nullptr;
}

uint64_t SafetensorsFile::mapped_size() const {
  return mapping_ ? mapping_->size : 0;
}

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const TensorEntry& e = entry(name);
  auto addr = reinterpret_cast<uintptr_t>(mapped_data() + e.offset);
  return e.nbytes > 0 && addr % dtype_size(e.dtype) == 0;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  auto* src = static_cast<unsigned char*>(mapping_->data) + e.offset;
  if (!is_zero_copy(name)) {
    Tensor t = ops::empty(e.shape, e.dtype);
    if (e.nbytes > 0) std::memcpy(t.raw_data(), src, e.nbytes);
    return t;
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(src, e.nbytes, Device::cpu(), mapping_);
  impl->sizes = e.shape;
  impl->strides = contiguous_strides(e.shape);
  impl->offset = 0;
  impl->dtype = e.dtype;
  return Tensor(std::move(impl));
}

}  // namespace hfrun::io
