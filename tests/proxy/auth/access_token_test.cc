#include "auth/access_token.h"

#include <gtest/gtest.h>

#include "auth/base64url.h"

namespace spacegate {
namespace {

TEST(Base64UrlTest, RoundTripAndStrictness) {
  for (std::string bytes : {std::string(""), std::string("f"), std::string("fo"),
                            std::string("foo"), std::string("\xff\xfe\x00\x01", 4)}) {
    std::string decoded;
    ASSERT_TRUE(base64UrlDecode(base64UrlEncode(bytes), decoded));
    EXPECT_EQ(decoded, bytes);
  }
  std::string out;
  EXPECT_FALSE(base64UrlDecode("Zm9v=", out));  // padding
  EXPECT_FALSE(base64UrlDecode("Zm9v+", out));  // standard alphabet
  EXPECT_FALSE(base64UrlDecode("Z", out));      // impossible length
  EXPECT_FALSE(base64UrlDecode("Zh", out));     // non-zero leftover bits ("Zg" is canonical)
  EXPECT_TRUE(base64UrlDecode("Zg", out));
}

class AccessTokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = generateSigningKey("k1");
    ring_.add("k1", key_.public_key);
    token_.sub = "user-1";
    token_.gs = "gs-a";
    token_.iat = kNow - 10;
    token_.exp = kNow + 3600;
    token_.scopes = {"ide"};
  }
  TokenCheck check(const std::string& text) {
    AccessToken parsed;
    return verifyAccessToken(text, ring_, kNow, parsed);
  }
  static constexpr int64_t kNow = 1'800'000'000;
  SigningKey key_;
  KeyRing ring_;
  AccessToken token_;
};

TEST_F(AccessTokenTest, SignedTokenVerifies) {
  std::string text = signAccessToken(token_, key_);
  EXPECT_TRUE(text.starts_with("v1."));
  AccessToken parsed;
  ASSERT_EQ(verifyAccessToken(text, ring_, kNow, parsed), TokenCheck::kValid);
  EXPECT_EQ(parsed.sub, "user-1");
  EXPECT_EQ(parsed.gs, "gs-a");
  EXPECT_EQ(parsed.kid, "k1");
  EXPECT_TRUE(parsed.hasScope("ide"));
  EXPECT_FALSE(parsed.hasScope("agent"));
}

TEST_F(AccessTokenTest, RefusesEveryBadShape) {
  std::string good = signAccessToken(token_, key_);
  // Forged: payload changed, signature kept.
  AccessToken other = token_;
  other.sub = "admin";
  std::string forged_payload = signAccessToken(other, key_);
  std::string forged =
      forged_payload.substr(0, forged_payload.rfind('.')) + good.substr(good.rfind('.'));
  EXPECT_EQ(check(forged), TokenCheck::kBadSignature);
  // Signed by another key under the same kid.
  SigningKey impostor = generateSigningKey("k1");
  EXPECT_EQ(check(signAccessToken(token_, impostor)), TokenCheck::kBadSignature);
  SigningKey unknown = generateSigningKey("k9");
  EXPECT_EQ(check(signAccessToken(token_, unknown)), TokenCheck::kUnknownKey);
  AccessToken expired = token_;
  expired.exp = kNow;
  EXPECT_EQ(check(signAccessToken(expired, key_)), TokenCheck::kExpired);
  AccessToken future = token_;
  future.iat = kNow + kClockSkewSeconds + 5;
  EXPECT_EQ(check(signAccessToken(future, key_)), TokenCheck::kNotYetValid);
  EXPECT_EQ(check(good.substr(0, good.size() - 3)), TokenCheck::kMalformed);  // truncated
  EXPECT_EQ(check("v2" + good.substr(2)), TokenCheck::kMalformed);
  EXPECT_EQ(check(good + "." + "AAAA"), TokenCheck::kMalformed);
  EXPECT_EQ(check(std::string(kMaxTokenLength + 1, 'a')), TokenCheck::kMalformed);
  EXPECT_EQ(check("v1.!!!.AAAA"), TokenCheck::kMalformed);
  EXPECT_EQ(check("v1." + base64UrlEncode("not json") + "." + good.substr(good.rfind('.') + 1)),
            TokenCheck::kMalformed);
  EXPECT_EQ(check(""), TokenCheck::kMalformed);
}

TEST_F(AccessTokenTest, PayloadFieldTypesAreChecked) {
  std::string signature = signAccessToken(token_, key_);
  signature = signature.substr(signature.rfind('.'));
  for (const char* payload : {R"({"kid":"k1","sub":"u","gs":"g","exp":"1","iat":1,"scope":"ide"})",
                              R"({"kid":"k1","sub":"","gs":"g","exp":1,"iat":1,"scope":"ide"})",
                              R"({"kid":"k1","sub":"u","gs":"g","exp":1,"iat":1,"scope":""})",
                              R"({"kid":"k1","sub":"u","gs":"g","exp":1,"iat":1})",
                              R"({"kid":1,"sub":"u","gs":"g","exp":1,"iat":1,"scope":"ide"})"}) {
    AccessToken parsed;
    std::string signed_part, raw_signature;
    EXPECT_FALSE(parseAccessToken("v1." + base64UrlEncode(payload) + signature, parsed, signed_part,
                                  raw_signature))
        << payload;
  }
}

}  // namespace
}  // namespace spacegate
