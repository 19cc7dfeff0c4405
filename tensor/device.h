// Where a tensor's memory lives: the host (cpu) or CUDA device n (tensor/backend/cuda).
#pragma once

#include <string>

namespace hfrun {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::kCUDA, i}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:1"
};

// Number of usable CUDA devices: 0 in a build without the CUDA backend, without a driver, or
// without a device.
int cuda_device_count();
// One line for logs and test skips: the devices, or why there are none ("no CUDA device: ...").
std::string cuda_status();
// The PCI bus id of CUDA device `index` ("0000:3b:00.0"): which physical GPU it is, whatever
// CUDA_VISIBLE_DEVICES renumbered. Empty when there is no such device.
std::string cuda_pci_bus_id(int index);
// Blocks until every operation queued on `device` has finished (a no-op for the CPU, whose ops
// are synchronous): for timing, and before reading device results through another channel.
void synchronize(Device device);

}  // namespace hfrun
