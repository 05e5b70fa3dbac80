// Fuzz target: access tokens as they arrive in a header, a cookie or a query
// parameter, into the parser and the verifier. Checks: nothing but kValid
// for a token the fixed test key signed, never kValid for anything else
// (the fuzzer cannot forge Ed25519), and a token that parsed re-signs into
// one that verifies with the same payload.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "auth/access_token.h"
#include "auth/token_cache.h"

namespace {

#define TOKEN_CHECK(condition, message)                           \
  do {                                                            \
    if (!(condition)) {                                           \
      std::fprintf(stderr, "access_token_fuzzer: %s\n", message); \
      std::abort();                                               \
    }                                                             \
  } while (0)

constexpr int64_t kNow = 1'800'000'000;

struct Fixture {
  // A fresh key per run: the checks hold for any key, and no input can be
  // signed by it except through signAccessToken below.
  spacegate::SigningKey key = spacegate::generateSigningKey("k1");
  spacegate::KeyRingSnapshot ring = [this] {
    auto keys = std::make_shared<spacegate::KeyRing>();
    keys->add("k1", key.public_key);
    return spacegate::KeyRingSnapshot(keys);
  }();
  spacegate::TokenCache cache{64};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spacegate;
  static Fixture fixture;
  std::string text(reinterpret_cast<const char*>(data), size);
  AccessToken token;
  TokenCheck check = verifyAccessToken(text, *fixture.ring, kNow, token);
  TOKEN_CHECK(check != TokenCheck::kValid, "a token nobody signed verified");
  // The cache answers like the verifier, twice.
  const AccessToken* cached = nullptr;
  TokenCheck first = fixture.cache.check(text, fixture.ring, kNow, cached);
  TokenCheck second = fixture.cache.check(text, fixture.ring, kNow, cached);
  TOKEN_CHECK(first == check && second == check, "the token cache disagrees with the verifier");
  std::string signed_part;
  std::string signature;
  AccessToken parsed;
  if (parseAccessToken(text, parsed, signed_part, signature)) {
    // Re-signed by the real key, the same payload verifies (when in date).
    parsed.exp = kNow + 60;
    parsed.iat = kNow;
    std::string resigned = signAccessToken(parsed, fixture.key);
    AccessToken again;
    TOKEN_CHECK(verifyAccessToken(resigned, *fixture.ring, kNow, again) == TokenCheck::kValid,
                "a re-signed token does not verify");
    TOKEN_CHECK(again.sub == parsed.sub && again.gs == parsed.gs && again.scopes == parsed.scopes,
                "a re-signed token changed its payload");
  }
  return 0;
}
