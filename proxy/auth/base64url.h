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

}  // namespace spacegate
