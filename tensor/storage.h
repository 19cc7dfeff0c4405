// A block of memory shared by a tensor and all its views.
#pragma once

#include <cstddef>
#include <memory>

#include "tensor/device.h"

namespace hfrun {

class Allocator;

class Storage {
 public:
  // Allocates nbytes from the device's allocator.
  Storage(size_t nbytes, Device device);
  // Wraps memory owned by someone else (an mmap'd file, a caller's buffer); `owner` keeps it
  // alive for as long as this storage lives.
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  // Returns the memory to the allocator while tensors keep referring to this storage (ZeRO-3
  // frees a layer's gathered parameters between uses); materialize() allocates it again with
  // undefined contents. Only for storage this class allocated.
  void release();
  void materialize();
  bool is_materialized() const { return data_ != nullptr || nbytes_ == 0; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;  // null when the memory is external
  std::shared_ptr<void> owner_;
};

// The allocator for a device; CUDA registers its own (issue "GPU backend").
Allocator& allocator_for(Device device);
void register_allocator(DeviceType type, Allocator* allocator);

}  // namespace hfrun
