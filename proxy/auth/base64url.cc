#include "auth/base64url.h"

#include <array>

namespace spacegate {

namespace {

constexpr char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr char kStandardAlphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> makeDecodeTable(const char* alphabet) {
  std::array<int8_t, 256> table{};
  for (auto& entry : table) entry = -1;
  for (int i = 0; i < 64; ++i)
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
  return table;
}
constexpr std::array<int8_t, 256> kUrlDecode = makeDecodeTable(kUrlAlphabet);
constexpr std::array<int8_t, 256> kStandardDecode = makeDecodeTable(kStandardAlphabet);

std::string encodeWith(const char* kAlphabet, std::string_view bytes) {
  std::string text;
  text.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t group = (static_cast<uint8_t>(bytes[i]) << 16) |
                     (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    text.push_back(kAlphabet[(group >> 18) & 63]);
    text.push_back(kAlphabet[(group >> 12) & 63]);
    text.push_back(kAlphabet[(group >> 6) & 63]);
    text.push_back(kAlphabet[group & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t group = static_cast<uint8_t>(bytes[i]) << 16;
    text.push_back(kAlphabet[(group >> 18) & 63]);
    text.push_back(kAlphabet[(group >> 12) & 63]);
  } else if (rest == 2) {
    uint32_t group =
        (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    text.push_back(kAlphabet[(group >> 18) & 63]);
    text.push_back(kAlphabet[(group >> 12) & 63]);
    text.push_back(kAlphabet[(group >> 6) & 63]);
  }
  return text;
}

bool decodeWith(const std::array<int8_t, 256>& kDecode, std::string_view text, std::string& bytes) {
  if (text.size() % 4 == 1) return false;
  bytes.clear();
  bytes.reserve(text.size() * 3 / 4);
  uint32_t group = 0;
  int bits = 0;
  for (char c : text) {
    int8_t value = kDecode[static_cast<unsigned char>(c)];
    if (value < 0) return false;
    group = (group << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<char>((group >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero: one text per byte string.
  return (group & ((1u << bits) - 1)) == 0;
}

}  // namespace

std::string base64UrlEncode(std::string_view bytes) {
  return encodeWith(kUrlAlphabet, bytes);
}

bool base64UrlDecode(std::string_view text, std::string& bytes) {
  return decodeWith(kUrlDecode, text, bytes);
}

std::string base64Encode(std::string_view bytes, bool padded) {
  std::string text = encodeWith(kStandardAlphabet, bytes);
  if (padded) text.append((4 - text.size() % 4) % 4, '=');
  return text;
}

bool base64Decode(std::string_view text, std::string& bytes) {
  if (text.size() % 4 != 0) return false;
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') {
    ++padding;
  }
  return decodeWith(kStandardDecode, text.substr(0, text.size() - padding), bytes);
}

}  // namespace spacegate
