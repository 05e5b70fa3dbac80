#include "control_api/key_ring_store.h"

#include <fstream>
#include <sstream>

#include "auth/base64url.h"
#include "common/log.h"
#include "control_api/snapshot_writer.h"

namespace spacegate {

bool KeyRingStore::parseKeyList(const nlohmann::json& list, const std::string& path, KeyRing& ring,
                                ValidationError& error) {
  if (!list.is_array()) return rejectField(error, path, "must be a list of keys");
  if (list.size() > 64) return rejectField(error, path, "at most 64 keys");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string item = path + "[" + std::to_string(i) + "]";
    const nlohmann::json& key = list[i];
    if (!key.is_object()) return rejectField(error, item, "must be {\"kid\", \"public_key\"}");
    for (const auto& [name, value] : key.items()) {
      if (name != "kid" && name != "public_key")
        return rejectField(error, item + "." + name, "unknown field");
    }
    if (!key.contains("kid") || !key["kid"].is_string() || key["kid"].get<std::string>().empty() ||
        key["kid"].get<std::string>().size() > 64) {
      return rejectField(error, item + ".kid", "must be a string of 1..64 characters");
    }
    std::string kid = key["kid"].get<std::string>();
    std::string public_key;
    if (!key.contains("public_key") || !key["public_key"].is_string() ||
        !base64UrlDecode(key["public_key"].get<std::string>(), public_key) ||
        public_key.size() != 32) {
      return rejectField(error, item + ".public_key", "must be a 32-byte Ed25519 key in base64url");
    }
    if (ring.find(kid)) return rejectField(error, item + ".kid", "duplicate key id");
    ring.add(std::move(kid), std::move(public_key));
  }
  return true;
}

bool KeyRingStore::replace(const nlohmann::json& body, ValidationError& error) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  if (!body.is_object()) return rejectField(error, "", "the body must be a JSON object");
  for (const auto& [name, value] : body.items()) {
    if (name != "keys") return rejectField(error, name, "unknown field");
  }
  if (!body.contains("keys")) return rejectField(error, "keys", "is required");
  KeyRing ring;
  if (!parseKeyList(body["keys"], "keys", ring, error)) return false;
  auto snapshot = std::make_shared<const KeyRing>(std::move(ring));
  publisher_.publish(snapshot);
  if (!path_.empty()) {
    std::string failure;
    if (!SnapshotWriter::writeDurably(path_, toJson().dump(1) + "\n", failure)) {
      logEvent(LogLevel::kError, "cannot write the key snapshot").with("error", failure).emit();
    }
  }
  logEvent(LogLevel::kInfo, "access token keys replaced")
      .with("keys", static_cast<uint64_t>(snapshot->size()))
      .emit();
  return true;
}

void KeyRingStore::replaceWith(KeyRing ring) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  publisher_.publish(std::make_shared<const KeyRing>(std::move(ring)));
}

nlohmann::json KeyRingStore::toJson() const {
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& [kid, key] : publisher_.current()->keys()) {
    keys.push_back({{"kid", kid}, {"public_key", base64UrlEncode(key)}});
  }
  return {{"keys", keys}};
}

bool KeyRingStore::loadAndPersistTo(const std::string& path) {
  path_ = path;
  std::ifstream stream(path);
  if (!stream) return false;
  std::stringstream contents;
  contents << stream.rdbuf();
  nlohmann::json document = nlohmann::json::parse(contents.str(), nullptr, false);
  KeyRing ring;
  ValidationError error;
  if (!document.is_object() || !document.contains("keys") ||
      !parseKeyList(document["keys"], "keys", ring, error)) {
    std::string aside = path + ".corrupt-" + std::to_string(::time(nullptr));
    ::rename(path.c_str(), aside.c_str());
    logEvent(LogLevel::kError, "key snapshot is corrupt; moved aside")
        .with("file", path)
        .with("moved_to", aside)
        .emit();
    return false;
  }
  replaceWith(std::move(ring));
  return true;
}

}  // namespace spacegate
