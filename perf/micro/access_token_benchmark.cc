// Access token checks at the gateway: a full verification (parse, base64url,
// JSON, Ed25519) and a check answered by the per-worker TokenCache, which is
// what every request after the first on a page or connection costs.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "auth/access_token.h"
#include "auth/token_cache.h"

namespace spacegate::perf {
namespace {

constexpr int64_t kNow = 1'800'000'000;

struct Keys {
  SigningKey signing = generateSigningKey("k1");
  KeyRingSnapshot ring = [this] {
    auto keys = std::make_shared<KeyRing>();
    keys->add("k1", signing.public_key);
    return KeyRingSnapshot(keys);
  }();
  std::string token = [this] {
    AccessToken access;
    access.sub = "user-1";
    access.gs = "gs-abc";
    access.iat = kNow;
    access.exp = kNow + 8 * 3600;
    access.scopes = {"ide"};
    return signAccessToken(access, signing);
  }();
};

void BM_VerifyToken(benchmark::State& state) {
  Keys keys;
  for (auto _ : state) {
    AccessToken parsed;
    TokenCheck check = verifyAccessToken(keys.token, *keys.ring, kNow, parsed);
    benchmark::DoNotOptimize(check);
  }
  state.SetLabel(std::to_string(keys.token.size()) + "-byte token");
}
BENCHMARK(BM_VerifyToken);

void BM_CachedTokenCheck(benchmark::State& state) {
  Keys keys;
  TokenCache cache;
  const AccessToken* token = nullptr;
  cache.check(keys.token, keys.ring, kNow, token);
  for (auto _ : state) {
    TokenCheck check = cache.check(keys.token, keys.ring, kNow, token);
    benchmark::DoNotOptimize(check);
  }
}
BENCHMARK(BM_CachedTokenCheck);

}  // namespace
}  // namespace spacegate::perf
