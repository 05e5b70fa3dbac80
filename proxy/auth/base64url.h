// base64url without padding (RFC 4648 section 5), as used in access tokens,
// cookies and key files. Decoding is strict: no padding, no whitespace, no
// characters outside the alphabet, no non-zero leftover bits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace spacegate {

std::string base64UrlEncode(std::string_view bytes);
// False if `text` is not strict unpadded base64url.
bool base64UrlDecode(std::string_view text, std::string& bytes);

// Standard base64 (RFC 4648 section 4, "+/"), as OpenSSH keys and
// fingerprints write it. Encoding pads with "=" when asked. Decoding is as
// strict as above and wants the padding: a multiple of four characters.
std::string base64Encode(std::string_view bytes, bool padded);
bool base64Decode(std::string_view text, std::string& bytes);

}  // namespace spacegate
