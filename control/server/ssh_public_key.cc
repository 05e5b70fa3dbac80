#include "control/server/ssh_public_key.h"

#include <openssl/sha.h>

#include <array>
#include <cstdint>

#include "auth/base64url.h"

namespace spacegate {

namespace {

constexpr std::array<std::string_view, 7> kKeyTypes = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
};

bool isSpace(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && isSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && (isSpace(text.back()) || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

// The next space-separated word of `text`, which loses it.
std::string_view nextWord(std::string_view& text) {
  size_t end = 0;
  while (end < text.size() && !isSpace(text[end])) ++end;
  std::string_view word = text.substr(0, end);
  text.remove_prefix(end);
  while (!text.empty() && isSpace(text.front())) text.remove_prefix(1);
  return word;
}

bool knownType(std::string_view type) {
  for (std::string_view known : kKeyTypes) {
    if (type == known) return true;
  }
  return false;
}

}  // namespace

std::string acceptedSshKeyTypes() {
  std::string list;
  for (std::string_view type : kKeyTypes) {
    if (!list.empty()) list += ", ";
    list += type;
  }
  return list;
}

bool parseSshPublicKey(std::string_view line, SshPublicKey& key, std::string& reason) {
  key = SshPublicKey{};
  if (line.size() > kMaxSshKeyLineLength) {
    reason = "must be at most " + std::to_string(kMaxSshKeyLineLength) + " bytes";
    return false;
  }
  // A file's CRLF ending is forgiven; tabs separate like spaces (and
  // become spaces: sshd's authorized_keys lines and the agent take no
  // control characters).
  std::string_view rest = trim(line);
  for (char c : rest) {
    unsigned char byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) {
      reason = "must be one line without control characters";
      return false;
    }
  }
  if (rest.empty()) {
    reason = "must not be empty";
    return false;
  }
  if (rest.starts_with("-----BEGIN")) {
    reason = "is a private key; give the public key (the .pub file)";
    return false;
  }
  std::string_view type = nextWord(rest);
  if (!knownType(type)) {
    std::string shown(type.substr(0, 40));
    reason = "must start with the key type (" + acceptedSshKeyTypes() + "), not \"" + shown +
             "\"; options in front of the key are not accepted";
    return false;
  }
  std::string_view encoded = nextWord(rest);
  if (encoded.empty()) {
    reason = "the key's base64 blob is missing after " + std::string(type);
    return false;
  }
  std::string blob;
  if (!base64Decode(encoded, blob)) {
    reason = "the key's blob is not valid base64";
    return false;
  }
  // The blob opens with the type again: uint32 length (big-endian), then
  // the name.
  uint32_t length = 0;
  if (blob.size() >= 4) {
    for (int i = 0; i < 4; ++i) length = (length << 8) | static_cast<unsigned char>(blob[i]);
  }
  if (blob.size() < 4 || length != type.size() || blob.size() - 4 < length ||
      std::string_view(blob).substr(4, length) != type) {
    reason = "the key's blob is not a " + std::string(type) + " key";
    return false;
  }
  if (blob.size() == 4 + length) {
    reason = "the key's blob holds no key after its type";
    return false;
  }
  // Every key type's blob is a run of such strings (RSA's mpints too): a
  // blob cut short, or with bytes left over, is not a key.
  for (size_t at = 4 + length; at < blob.size();) {
    if (blob.size() - at < 4) {
      reason = "the key's blob is cut short or malformed";
      return false;
    }
    uint32_t part = 0;
    for (int i = 0; i < 4; ++i) part = (part << 8) | static_cast<unsigned char>(blob[at + i]);
    at += 4;
    if (blob.size() - at < part) {
      reason = "the key's blob is cut short or malformed";
      return false;
    }
    at += part;
  }
  key.type = std::string(type);
  key.blob = std::move(blob);
  key.comment = std::string(rest);
  for (char& c : key.comment) {
    if (c == '\t') c = ' ';
  }
  key.line = key.type + " " + std::string(encoded) + (rest.empty() ? "" : " " + key.comment);
  return true;
}

std::string sshKeyFingerprint(const SshPublicKey& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.blob.data()), key.blob.size(), digest);
  return "SHA256:" +
         base64Encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)),
                      /*padded=*/false);
}

}  // namespace spacegate
