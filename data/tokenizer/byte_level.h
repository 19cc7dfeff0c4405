// GPT-2's byte-level alphabet: every byte maps to one printable Unicode character (printable
// ASCII and Latin-1 bytes to themselves, the rest to U+0100.. in order), so any byte string
// becomes a string of "characters" that a BPE vocabulary can cover with 256 base tokens.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace hfrun::data {

// UTF-8 of the character byte b maps to.
const std::string& byte_to_char(uint8_t b);
// Appends the byte-level form of `bytes` to out.
void byte_level_encode(std::string_view bytes, std::string& out);
// The byte a character (code point) stands for, or -1 when it is not in the alphabet.
int char_to_byte(char32_t cp);
// Decodes one token's byte-level characters back to bytes; returns false (leaving out
// untouched) when some character is not in the alphabet.
bool byte_level_decode_token(std::string_view token, std::string& out);

}  // namespace hfrun::data
