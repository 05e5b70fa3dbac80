#include "ssh_key_commands.h"

#include <cstdio>
#include <fstream>

#include "gitspace_progress.h"
#include "text_table.h"

namespace spacegate {

namespace {

using Json = nlohmann::json;

constexpr const char* kSshKeysPath = "/api/v1/users/me/ssh-keys";

std::string stringField(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string()) return "";
  return object[key].get<std::string>();
}

// "keys[7]" → 7; false for any other field.
bool keyIndex(const std::string& field, size_t& index) {
  if (!field.starts_with("keys[") || !field.ends_with("]") || field.size() < 7) return false;
  index = 0;
  for (size_t i = 5; i + 1 < field.size(); ++i) {
    if (field[i] < '0' || field[i] > '9' || index > 1'000'000) return false;
    index = index * 10 + static_cast<size_t>(field[i] - '0');
  }
  return true;
}

}  // namespace

SshKeyCommands::SshKeyCommands(CLI::App& app, const bool& global_json) : global_json_(global_json) {
  ssh_key_ = app.add_subcommand(
      "ssh-key", "your SSH public keys at the control plane (for ssh into your Gitspaces)");
  ssh_key_->require_subcommand(1);
  ssh_key_->add_option("--control-url", control_.url, "the control plane's API")
      ->envname("SPACEGATE_CONTROL_URL")
      ->capture_default_str();
  ssh_key_
      ->add_option("--control-token-file", control_.token_file,
                   "file holding your API token (the admin's: <state_dir>/admin.token)")
      ->envname("SPACEGATE_CONTROL_TOKEN_FILE");
  ssh_key_->add_flag("--json", json_, "print the API's JSON");

  set_ = ssh_key_->add_subcommand(
      "set", "replace your keys with those in the files (e.g. ~/.ssh/id_ed25519.pub)");
  set_->add_option("files", files_, "public key files, one key a line")->required();
  list_ = ssh_key_->add_subcommand("list", "list your keys with their fingerprints");
  for (CLI::App* command : {set_, list_}) command->fallthrough();
}

int SshKeyCommands::run() {
  json_ = json_ || global_json_;
  // Files first: a bad file is a usage error whatever the token says.
  if (set_->parsed()) return runSet();
  return runList();
}

int SshKeyCommands::runSet() {
  std::vector<std::string> keys;
  std::vector<KeyOrigin> origins;
  for (const std::string& file : files_) {
    std::ifstream stream(file);
    if (!stream) {
      std::fprintf(stderr, "spacegatectl: %s: cannot read the file\n", file.c_str());
      return kExitUsage;
    }
    std::string line;
    size_t number = 0;
    size_t found = 0;
    while (std::getline(stream, line)) {
      ++number;
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
        line.pop_back();
      }
      size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#') continue;
      if (line.compare(start, 10, "-----BEGIN") == 0) {
        std::fprintf(stderr,
                     "spacegatectl: %s:%zu: this is a private key; give the public key (the .pub "
                     "file)\n",
                     file.c_str(), number);
        return kExitUsage;
      }
      keys.push_back(line.substr(start));
      origins.push_back(KeyOrigin{file, number});
      ++found;
    }
    if (found == 0) {
      std::fprintf(stderr, "spacegatectl: %s: no public key in the file\n", file.c_str());
      return kExitUsage;
    }
  }
  std::string error;
  if (!api_.open(control_, error)) {
    std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
    return kExitUsage;
  }
  Json reply;
  int code = api_.call("PUT", kSshKeysPath, Json{{"keys", keys}}, reply, /*quiet=*/true);
  if (code == kExitRefused) {
    // Say which file and line the refused key came from.
    size_t index = 0;
    if (api_.lastStatus() == 400 && keyIndex(stringField(reply, "field"), index) &&
        index < origins.size()) {
      std::fprintf(stderr, "spacegatectl: %s:%zu: %s\n", origins[index].file.c_str(),
                   origins[index].line, printableText(stringField(reply, "error")).c_str());
    } else {
      printControlPlaneRefusal(api_.lastStatus(), reply);
    }
  }
  if (code != kExitOk) return code;
  return printKeys(reply);
}

int SshKeyCommands::runList() {
  std::string error;
  if (!api_.open(control_, error)) {
    std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
    return kExitUsage;
  }
  Json reply;
  if (int code = api_.call("GET", kSshKeysPath, nullptr, reply); code != kExitOk) return code;
  return printKeys(reply);
}

int SshKeyCommands::printKeys(const Json& reply) const {
  if (json_) {
    std::printf("%s\n", reply.dump(2).c_str());
    return kExitOk;
  }
  const Json empty = Json::array();
  const Json& list = reply.is_object() && reply.contains("keys") ? reply["keys"] : empty;
  if (list.empty()) {
    std::printf("no SSH keys: nobody can log in to your Gitspaces over SSH\n");
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"TYPE", "FINGERPRINT", "COMMENT"}};
  for (const Json& key : list) {
    std::string comment = stringField(key, "comment");
    rows.push_back({printableText(stringField(key, "type")),
                    printableText(stringField(key, "fingerprint")),
                    comment.empty() ? "-" : printableText(comment)});
  }
  printTable(rows);
  return kExitOk;
}

}  // namespace spacegate
