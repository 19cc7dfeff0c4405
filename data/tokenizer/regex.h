// A compiled Oniguruma regex (the engine Hugging Face tokenizers uses, so \p{L}, (?i:...),
// lookahead and Unicode classes behave identically). Searches are bounded: a pattern that
// backtracks catastrophically fails with an hfrun::Error instead of running for hours.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace hfrun::data {

class Regex {
 public:
  // Throws hfrun::Error (invalid input) naming the pattern and Oniguruma's message.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }

  // Calls on_match(begin, end) (byte offsets) for each leftmost non-overlapping match in
  // text, as Rust onig's find_iter does: after an empty match the search resumes one
  // character later. text must be valid UTF-8. Safe to call from several threads at once.
  void find_all(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const;

 private:
  std::string pattern_;
  void* regex_ = nullptr;  // OnigRegex (no oniguruma.h in this header)
};

}  // namespace hfrun::data
