#include "auth/access_token.h"

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "Spacegate links BoringSSL (android-libboringssl-dev), not OpenSSL"
#endif
#include <openssl/curve25519.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "auth/base64url.h"

namespace spacegate {

bool AccessToken::hasScope(std::string_view scope) const {
  for (const std::string& entry : scopes) {
    if (entry == scope) return true;
  }
  return false;
}

const char* tokenCheckName(TokenCheck check) {
  switch (check) {
    case TokenCheck::kValid: return "valid";
    case TokenCheck::kMalformed: return "malformed";
    case TokenCheck::kUnknownKey: return "unknown_key";
    case TokenCheck::kBadSignature: return "bad_signature";
    case TokenCheck::kExpired: return "expired";
    case TokenCheck::kNotYetValid: return "not_yet_valid";
  }
  return "invalid";
}

const std::string* KeyRing::find(std::string_view kid) const {
  auto found = keys_.find(kid);
  return found == keys_.end() ? nullptr : &found->second;
}

namespace {

bool readString(const nlohmann::json& payload, const char* key, std::string& out, bool required) {
  auto found = payload.find(key);
  if (found == payload.end()) return !required;
  if (!found->is_string()) return false;
  out = found->get<std::string>();
  return !out.empty() && out.size() <= 256;
}

bool readTime(const nlohmann::json& payload, const char* key, int64_t& out) {
  auto found = payload.find(key);
  if (found == payload.end() || !found->is_number_integer()) return false;
  if (found->is_number_unsigned() && found->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return false;
  }
  out = found->get<int64_t>();
  return true;
}

}  // namespace

bool parseAccessToken(std::string_view text, AccessToken& token, std::string& signed_part,
                      std::string& signature) {
  if (text.size() > kMaxTokenLength || !text.starts_with("v1.")) return false;
  size_t second_dot = text.find('.', 3);
  if (second_dot == std::string_view::npos ||
      text.find('.', second_dot + 1) != std::string_view::npos) {
    return false;
  }
  std::string_view payload_text = text.substr(3, second_dot - 3);
  std::string_view signature_text = text.substr(second_dot + 1);
  std::string payload_bytes;
  if (payload_text.empty() || !base64UrlDecode(payload_text, payload_bytes)) return false;
  if (!base64UrlDecode(signature_text, signature) || signature.size() != ED25519_SIGNATURE_LEN) {
    return false;
  }
  nlohmann::json payload =
      nlohmann::json::parse(payload_bytes, nullptr, /*allow_exceptions=*/false);
  if (!payload.is_object()) return false;
  token = AccessToken{};
  if (!readString(payload, "kid", token.kid, true) ||
      !readString(payload, "sub", token.sub, true) || !readString(payload, "gs", token.gs, true) ||
      !readString(payload, "aud", token.aud, false) || !readTime(payload, "exp", token.exp) ||
      !readTime(payload, "iat", token.iat)) {
    return false;
  }
  std::string scope;
  if (!readString(payload, "scope", scope, true)) return false;
  size_t start = 0;
  while (start < scope.size()) {
    size_t space = scope.find(' ', start);
    if (space == std::string::npos) space = scope.size();
    if (space > start) token.scopes.emplace_back(scope.substr(start, space - start));
    start = space + 1;
  }
  if (token.scopes.empty() || token.scopes.size() > 16) return false;
  signed_part = std::string(text.substr(0, second_dot));
  return true;
}

TokenCheck verifyAccessToken(std::string_view text, const KeyRing& keys, int64_t now_unix,
                             AccessToken& token) {
  std::string signed_part;
  std::string signature;
  if (!parseAccessToken(text, token, signed_part, signature)) return TokenCheck::kMalformed;
  const std::string* public_key = keys.find(token.kid);
  if (!public_key || public_key->size() != ED25519_PUBLIC_KEY_LEN) return TokenCheck::kUnknownKey;
  if (ED25519_verify(reinterpret_cast<const uint8_t*>(signed_part.data()), signed_part.size(),
                     reinterpret_cast<const uint8_t*>(signature.data()),
                     reinterpret_cast<const uint8_t*>(public_key->data())) != 1) {
    return TokenCheck::kBadSignature;
  }
  if (token.exp <= now_unix) return TokenCheck::kExpired;
  if (token.iat > now_unix + kClockSkewSeconds) return TokenCheck::kNotYetValid;
  return TokenCheck::kValid;
}

SigningKey generateSigningKey(std::string kid) {
  SigningKey key;
  key.kid = std::move(kid);
  uint8_t public_key[ED25519_PUBLIC_KEY_LEN];
  uint8_t private_key[ED25519_PRIVATE_KEY_LEN];
  ED25519_keypair(public_key, private_key);
  key.public_key.assign(reinterpret_cast<char*>(public_key), sizeof public_key);
  key.private_key.assign(reinterpret_cast<char*>(private_key), sizeof private_key);
  return key;
}

std::string signAccessToken(const AccessToken& token, const SigningKey& key) {
  std::string scope;
  for (const std::string& entry : token.scopes) {
    if (!scope.empty()) scope.push_back(' ');
    scope += entry;
  }
  nlohmann::json payload = {{"kid", key.kid},   {"sub", token.sub}, {"gs", token.gs},
                            {"exp", token.exp}, {"iat", token.iat}, {"scope", scope}};
  if (!token.aud.empty()) payload["aud"] = token.aud;
  std::string signed_part = "v1." + base64UrlEncode(payload.dump());
  uint8_t signature[ED25519_SIGNATURE_LEN];
  ED25519_sign(signature, reinterpret_cast<const uint8_t*>(signed_part.data()), signed_part.size(),
               reinterpret_cast<const uint8_t*>(key.private_key.data()));
  return signed_part + "." +
         base64UrlEncode(std::string_view(reinterpret_cast<char*>(signature), sizeof signature));
}

bool parsePublicKeyJson(std::string_view text, std::string& kid, std::string& public_key,
                        std::string& error) {
  nlohmann::json document = nlohmann::json::parse(text, nullptr, false);
  if (!document.is_object() || !document.contains("kid") || !document["kid"].is_string() ||
      !document.contains("public_key") || !document["public_key"].is_string()) {
    error = "expected {\"kid\": ..., \"public_key\": base64url}";
    return false;
  }
  kid = document["kid"].get<std::string>();
  if (!base64UrlDecode(document["public_key"].get<std::string>(), public_key) ||
      public_key.size() != ED25519_PUBLIC_KEY_LEN) {
    error = "public_key must be 32 bytes of base64url";
    return false;
  }
  return true;
}

bool loadSigningKeyFile(const std::string& path, SigningKey& key, std::string& error) {
  std::ifstream stream(path);
  if (!stream) {
    error = path + ": cannot read the key file";
    return false;
  }
  std::stringstream contents;
  contents << stream.rdbuf();
  nlohmann::json document = nlohmann::json::parse(contents.str(), nullptr, false);
  if (!document.is_object() || !document.contains("private_key") ||
      !document["private_key"].is_string()) {
    error = path + ": expected a private key file from `spacegatectl token keygen`";
    return false;
  }
  if (!parsePublicKeyJson(contents.str(), key.kid, key.public_key, error)) {
    error = path + ": " + error;
    return false;
  }
  if (!base64UrlDecode(document["private_key"].get<std::string>(), key.private_key) ||
      key.private_key.size() != ED25519_PRIVATE_KEY_LEN) {
    error = path + ": private_key must be 64 bytes of base64url";
    return false;
  }
  return true;
}

}  // namespace spacegate
