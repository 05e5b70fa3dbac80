// SSH public keys as users give them (one line of an id_*.pub file, or of
// an authorized_keys file without options): `<type> <base64 blob> [comment]`.
// The control plane keeps each user's keys and hands them to the agent of
// every Gitspace the user starts, which writes them to sshd's
// authorized_keys; so a line is checked here the way sshd would read it: a
// known key type, a blob that is base64 and starts with that same type
// (length-prefixed, RFC 4253 section 6.6), no options in front, one line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace spacegate {

// Limits on a user's keys (PUT /api/v1/users/me/ssh-keys).
constexpr size_t kMaxUserSshKeys = 20;
constexpr size_t kMaxSshKeyLineLength = 8 * 1024;

struct SshPublicKey {
  std::string type;     // "ssh-ed25519", "ecdsa-sha2-nistp256", ...
  std::string blob;     // the decoded key blob
  std::string comment;  // what follows the blob, may be empty
  std::string line;     // "<type> <base64> [comment]", surrounding spaces removed
};

// Reads one line; false with a reason a person can act on.
bool parseSshPublicKey(std::string_view line, SshPublicKey& key, std::string& reason);

// As `ssh-keygen -lf` prints it: "SHA256:" + unpadded base64 of the
// SHA-256 of the blob.
std::string sshKeyFingerprint(const SshPublicKey& key);

// The key types accepted, for messages: "ssh-ed25519, ssh-rsa, ...".
std::string acceptedSshKeyTypes();

}  // namespace spacegate
