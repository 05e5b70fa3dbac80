// The files in the control plane's state_dir (mode 0700): control.db, the
// signing key pair (signing.key 0600, signing.pub), and at first start
// admin.token and delegate.token (0600). Key files have the format of
// `spacegatectl token keygen`: {"kid", "public_key", "private_key"}, base64url.
#pragma once

#include <string>

#include "auth/access_token.h"

namespace spacegate {

struct StateFiles {
  std::string dir;
  std::string database;
  std::string signing_key;
  std::string signing_pub;
  std::string admin_token;
  std::string delegate_token;
};

StateFiles stateFilesIn(const std::string& dir);

// Creates the folder (and parents) and makes it 0700. False with a reason.
bool prepareStateDir(const std::string& dir, std::string& error);
// Loads signing.key, or makes a new pair (kid "cp-<8 hex>") and writes both
// files. `created` says which.
bool loadOrCreateSigningKey(const StateFiles& files, SigningKey& key, bool& created,
                            std::string& error);
// Writes `text` to `path` with mode 0600 (replacing it), synced.
bool writePrivateFile(const std::string& path, const std::string& text, std::string& error);
// The gateway's `auth:` section (YAML) for the public key in signing.pub.
bool gatewayAuthSection(const std::string& dir, std::string& yaml, std::string& error);

}  // namespace spacegate
