// Internal helpers of the checkpoint code (not part of train/'s API): durable writes and the
// housekeeping of a checkpoints directory.
#pragma once

#include <cstdint>
#include <string>

#include "common/file_util.h"

namespace hfrun::train::detail {

// fsync_path: common/file_util.h.
using ::hfrun::fsync_path;
// Writes `text` to `path` (truncating), fsyncs it; errors name the path.
void write_synced(const std::string& path, const std::string& text);
// Cleans up after saves that died: step-*.tmp-PID directories whose process is gone (or is
// this one) are removed; a step-*.old-PID directory (a committed checkpoint moved aside to be
// replaced) is renamed back when its replacement never arrived, else removed. Directories of a
// live process are left alone.
void remove_stale_temporaries(const std::string& root);
// Deletes the oldest committed checkpoints beyond the newest `keep` (keep <= 0: none), never
// `protect`.
void prune_checkpoints(const std::string& root, int64_t keep, const std::string& protect);
// The step of a committed checkpoint directory name "step-NNNNNNNN"; -1 for anything else.
int64_t parse_checkpoint_name(const std::string& name);

}  // namespace hfrun::train::detail
