// Access tokens: `v1.<base64url(payload JSON)>.<base64url(Ed25519 signature)>`.
// The signature covers the ASCII text "v1.<payload part>". One version, one
// algorithm: nothing in the token chooses how it is checked. The payload:
//   kid   key id (which public key verifies it)
//   sub   user
//   gs    Gitspace id, or "*" for the deployment-wide kind
//   aud   optional: the host or route id it is for
//   exp   expiry, Unix seconds
//   iat   issued at, Unix seconds
//   scope space-separated: "ide", "port:3000", "ssh", "agent"
// The control plane signs; the gateway holds only public keys, so a gateway
// that is broken into cannot mint tokens. See docs/access-tokens.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/snapshot_publisher.h"

namespace spacegate {

struct AccessToken {
  std::string kid;
  std::string sub;
  std::string gs;
  std::string aud;
  int64_t exp = 0;
  int64_t iat = 0;
  std::vector<std::string> scopes;

  bool hasScope(std::string_view scope) const;
};

// Longest token accepted anywhere (header, cookie, query).
constexpr size_t kMaxTokenLength = 4096;
// Clock skew tolerated for `iat` in the future.
constexpr int64_t kClockSkewSeconds = 60;

enum class TokenCheck {
  kValid,
  kMalformed,   // not the token format, bad base64url, bad JSON or field types
  kUnknownKey,  // no public key with this kid
  kBadSignature,
  kExpired,
  kNotYetValid,  // iat more than the allowed skew in the future
};

const char* tokenCheckName(TokenCheck check);

// Public keys by id. Immutable once built; replaced whole on rotation.
class KeyRing {
 public:
  // `public_key` is the 32-byte Ed25519 public key.
  void add(std::string kid, std::string public_key) {
    keys_[std::move(kid)] = std::move(public_key);
  }
  const std::string* find(std::string_view kid) const;
  const std::map<std::string, std::string, std::less<>>& keys() const { return keys_; }
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> keys_;
};

using KeyRingSnapshot = std::shared_ptr<const KeyRing>;
using KeyRingPublisher = SnapshotPublisher<KeyRing>;
using KeyRingReader = SnapshotReader<KeyRing>;

// Parses the token and checks its signature and times against `keys`.
TokenCheck verifyAccessToken(std::string_view text, const KeyRing& keys, int64_t now_unix,
                             AccessToken& token);
// Parses without checking anything but the format (fuzzing, tools).
bool parseAccessToken(std::string_view text, AccessToken& token, std::string& signed_part,
                      std::string& signature);

// A key pair: `private_key` is BoringSSL's 64-byte Ed25519 private key.
struct SigningKey {
  std::string kid;
  std::string private_key;
  std::string public_key;
};
SigningKey generateSigningKey(std::string kid);
std::string signAccessToken(const AccessToken& token, const SigningKey& key);

// Key files (JSON): {"kid": ..., "public_key": base64url} and, for the
// private file, also "private_key". False with a reason.
bool loadSigningKeyFile(const std::string& path, SigningKey& key, std::string& error);
bool parsePublicKeyJson(std::string_view text, std::string& kid, std::string& public_key,
                        std::string& error);

}  // namespace spacegate
