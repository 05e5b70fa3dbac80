#include "control/server/state_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "auth/base64url.h"
#include "control/server/secret_token.h"

namespace spacegate {

namespace {

bool writeFile(const std::string& path, const std::string& text, mode_t mode, std::string& error) {
  std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  ::fchmod(fd, mode);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    return false;
  }
  return true;
}

}  // namespace

StateFiles stateFilesIn(const std::string& dir) {
  return StateFiles{dir,
                    dir + "/control.db",
                    dir + "/signing.key",
                    dir + "/signing.pub",
                    dir + "/admin.token",
                    dir + "/delegate.token"};
}

bool prepareStateDir(const std::string& dir, std::string& error) {
  std::error_code failure;
  std::filesystem::create_directories(dir, failure);
  if (failure) {
    error = dir + ": " + failure.message();
    return false;
  }
  if (::chmod(dir.c_str(), 0700) != 0) {
    error = dir + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool writePrivateFile(const std::string& path, const std::string& text, std::string& error) {
  return writeFile(path, text, 0600, error);
}

bool loadOrCreateSigningKey(const StateFiles& files, SigningKey& key, bool& created,
                            std::string& error) {
  created = false;
  if (::access(files.signing_key.c_str(), F_OK) == 0) {
    return loadSigningKeyFile(files.signing_key, key, error);
  }
  key = generateSigningKey("cp-" + randomHex(4));
  nlohmann::json public_json = {{"kid", key.kid}, {"public_key", base64UrlEncode(key.public_key)}};
  nlohmann::json private_json = public_json;
  private_json["private_key"] = base64UrlEncode(key.private_key);
  // The public half first: a crash between the two leaves no private key
  // without its public one.
  if (!writeFile(files.signing_pub, public_json.dump(1) + "\n", 0644, error) ||
      !writeFile(files.signing_key, private_json.dump(1) + "\n", 0600, error)) {
    return false;
  }
  created = true;
  return true;
}

bool gatewayAuthSection(const std::string& dir, std::string& yaml, std::string& error) {
  StateFiles files = stateFilesIn(dir);
  std::ifstream stream(files.signing_pub);
  if (!stream) {
    error = files.signing_pub + ": cannot read (start spacegate-control once to make the keys)";
    return false;
  }
  std::stringstream contents;
  contents << stream.rdbuf();
  std::string kid;
  std::string public_key;
  if (!parsePublicKeyJson(contents.str(), kid, public_key, error)) {
    error = files.signing_pub + ": " + error;
    return false;
  }
  // JSON strings are valid YAML scalars: quoting through the JSON library
  // keeps any character safe.
  yaml = "# The control plane's token signing key (from " + files.signing_pub +
         "): add it to the gateway's config.\n"
         "auth:\n"
         "  public_keys:\n"
         "    - kid: " +
         nlohmann::json(kid).dump() +
         "\n      public_key: " + nlohmann::json(base64UrlEncode(public_key)).dump() + "\n";
  return true;
}

}  // namespace spacegate
