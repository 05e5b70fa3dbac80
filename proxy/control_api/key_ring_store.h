// KeyRingStore: the public keys that verify access tokens, replaced whole
// through the control API (PUT /auth/keys) so keys rotate without a restart:
// publish the new key beside the old, switch signing, drop the old. A write
// is validated whole before it is published, and kept in the state folder
// (keys.json) so a restarted gateway verifies with the same keys.
#pragma once

#include <nlohmann/json.hpp>

#include <mutex>
#include <string>

#include "auth/access_token.h"
#include "common/validation_error.h"

namespace spacegate {

class KeyRingStore {
 public:
  explicit KeyRingStore(KeyRingPublisher& publisher) : publisher_(publisher) {}

  // {"keys": [{"kid": ..., "public_key": base64url}, ...]}
  bool replace(const nlohmann::json& body, ValidationError& error);
  nlohmann::json toJson() const;
  // Keys from the config file (start).
  void replaceWith(KeyRing ring);
  // Keep applied rings in `path`; load it at start if present (true if loaded).
  bool loadAndPersistTo(const std::string& path);

  static bool parseKeyList(const nlohmann::json& list, const std::string& path, KeyRing& ring,
                           ValidationError& error);

 private:
  KeyRingPublisher& publisher_;
  std::mutex write_mutex_;
  std::string path_;
};

}  // namespace spacegate
