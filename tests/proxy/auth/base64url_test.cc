#include "auth/base64url.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

TEST(Base64Test, UrlAlphabetUnpaddedRoundTrips) {
  std::string bytes("\xfb\xff\x00\x01", 4);
  std::string text = base64UrlEncode(bytes);
  EXPECT_EQ(text, "-_8AAQ");
  std::string back;
  ASSERT_TRUE(base64UrlDecode(text, back));
  EXPECT_EQ(back, bytes);
  EXPECT_FALSE(base64UrlDecode("-_8AAQ==", back));  // no padding in base64url
}

TEST(Base64Test, StandardAlphabetAsOpenSshWritesIt) {
  std::string bytes("\xfb\xff\x00\x01", 4);
  EXPECT_EQ(base64Encode(bytes, /*padded=*/true), "+/8AAQ==");
  EXPECT_EQ(base64Encode(bytes, /*padded=*/false), "+/8AAQ");
  std::string back;
  ASSERT_TRUE(base64Decode("+/8AAQ==", back));
  EXPECT_EQ(back, bytes);
  ASSERT_TRUE(base64Decode("QUJD", back));
  EXPECT_EQ(back, "ABC");
}

TEST(Base64Test, StandardDecodingIsStrict) {
  std::string back;
  EXPECT_FALSE(base64Decode("+/8AAQ", back));    // padding missing
  EXPECT_FALSE(base64Decode("-_8AAQ==", back));  // the URL alphabet
  EXPECT_FALSE(base64Decode("QU=D", back));      // '=' inside
  EXPECT_FALSE(base64Decode("QR==", back));      // leftover bits not zero
  EXPECT_FALSE(base64Decode("QUJD\n", back));    // whitespace
}

}  // namespace
}  // namespace spacegate
