#include "data/tokenizer/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

// Backtracking budget per match attempt and per search. Real tokenizer patterns use a few
// hundred steps per match; a catastrophic one hits these within a second.
constexpr unsigned long kRetryLimitInMatch = 1'000'000;
constexpr unsigned long kRetryLimitInSearch = 20'000'000;

void init_oniguruma() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

std::string onig_message(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  onig_error_code_to_str(buf, code, info);
  return reinterpret_cast<const char*>(buf);
}

struct MatchParamDeleter {
  void operator()(OnigMatchParam* p) const { onig_free_match_param(p); }
};
struct RegionDeleter {
  void operator()(OnigRegion* r) const { onig_region_free(r, 1); }
};

}  // namespace

Regex::Regex(std::string_view pattern) : pattern_(pattern) {
  init_oniguruma();
  HF_CHECK_INPUT(find_invalid_utf8(pattern) == std::string_view::npos,
                 "regex pattern is not "
                 "valid UTF-8: ",
                 pattern);
  OnigRegex reg = nullptr;
  OnigErrorInfo info;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern_.data());
  int rc = onig_new(&reg, p, p + pattern_.size(), ONIG_OPTION_CAPTURE_GROUP, ONIG_ENCODING_UTF8,
                    ONIG_SYNTAX_DEFAULT, &info);
  HF_CHECK_INPUT(rc == ONIG_NORMAL, "invalid regex pattern '", pattern_,
                 "': ", onig_message(rc, &info));
  regex_ = reg;
}

Regex::~Regex() {
  if (regex_) onig_free(static_cast<OnigRegex>(regex_));
}

void Regex::find_all(std::string_view text,
                     const std::function<void(size_t, size_t)>& on_match) const {
  auto* reg = static_cast<OnigRegex>(regex_);
  // Per-call region and match parameters: the compiled regex itself is only read.
  std::unique_ptr<OnigRegion, RegionDeleter> region(onig_region_new());
  std::unique_ptr<OnigMatchParam, MatchParamDeleter> param(onig_new_match_param());
  onig_initialize_match_param(param.get());
  onig_set_retry_limit_in_match_of_match_param(param.get(), kRetryLimitInMatch);
  onig_set_retry_limit_in_search_of_match_param(param.get(), kRetryLimitInSearch);
  const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = begin + text.size();
  // Mirrors Rust onig's FindMatches: an empty match right where the previous match ended is
  // not reported; the search steps one character forward instead.
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    int r = onig_search_with_param(reg, begin, end, begin + pos, end, region.get(),
                                   ONIG_OPTION_NONE, param.get());
    if (r == ONIG_MISMATCH) break;
    HF_CHECK_INPUT(r >= 0, "regex '", pattern_, "' failed at byte ", pos, ": ",
                   onig_message(r, nullptr),
                   r == ONIGERR_RETRY_LIMIT_IN_MATCH_OVER || r == ONIGERR_RETRY_LIMIT_IN_SEARCH_OVER
                       ? " (catastrophic backtracking: the pattern is rejected)"
                       : "");
    const size_t mb = static_cast<size_t>(region->beg[0]), me = static_cast<size_t>(region->end[0]);
    if (mb == me && have_last && last_end == me) {
      if (me >= text.size()) break;
      pos = me + utf8_length(static_cast<unsigned char>(text[me]));
      continue;
    }
    on_match(mb, me);
    pos = me;
    have_last = true;
    last_end = me;
  }
}

}  // namespace hfrun::data
