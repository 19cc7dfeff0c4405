#include "tensor/storage.h"

#include "common/error.h"
#include "tensor/allocator.h"
#ifdef HFRUN_WITH_CUDA
#include "tensor/backend/cuda/cuda_backend.h"
#endif

namespace hfrun {
namespace {
Allocator* g_cuda_allocator = nullptr;
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
  if (g_cuda_allocator) return *g_cuda_allocator;
#ifdef HFRUN_WITH_CUDA
  return cuda::allocator(device.index);  // one caching allocator per device
#else
  HF_THROW("no allocator for device ", device.str(), ": this build has no CUDA backend");
#endif
}

void register_allocator(DeviceType type, Allocator* allocator) {
  HF_CHECK(type == DeviceType::kCUDA, "register_allocator: only CUDA allocators can be registered");
  g_cuda_allocator = allocator;
}

Storage::Storage(size_t nbytes, Device device)
    : nbytes_(nbytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(nbytes);
}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner)
    : data_(data), nbytes_(nbytes), device_(device), owner_(std::move(owner)) {}

Storage::~Storage() {
  if (allocator_ && data_) allocator_->deallocate(data_, nbytes_);
}

void Storage::release() {
  HF_CHECK(allocator_ != nullptr, "Storage::release: the memory is not ours (external storage)");
  if (data_) allocator_->deallocate(data_, nbytes_);
  data_ = nullptr;
}

void Storage::materialize() {
  HF_CHECK(allocator_ != nullptr, "Storage::materialize: external storage");
  if (!data_ && nbytes_ > 0) data_ = allocator_->allocate(nbytes_);
}

}  // namespace hfrun
