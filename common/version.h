#pragma once

namespace hfrun {
// The hfrun version string ("0.1.0"), set by CMake from project(VERSION).
const char* version();
}  // namespace hfrun
