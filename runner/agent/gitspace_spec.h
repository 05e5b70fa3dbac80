// GitspaceSpec: what the delegate asks a machine's agent to set up, the body
// of `PUT /v1/gitspace`: the repository (and branch) to clone, where its
// devcontainer.json is, which IDE to serve, extra environment variables and
// the user's name and SSH keys. Parsing checks every field and names the
// first bad one, so a refused request says exactly what to fix; unknown
// fields are refused too (a typo must not silently become a default). The
// canonical JSON (sorted keys, every field present) is what the agent stores
// and compares: the same spec sent twice is the same text.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace spacegate {

enum class IdeKind {
  kJupyter,    // Jupyter Notebook (HTTP)
  kVscodeWeb,  // code-server (HTTP)
  kSsh,        // sshd, for desktop IDEs over SSH
};

const char* ideKindName(IdeKind kind);  // "jupyter", "vscode-web", "ssh"
bool parseIdeKind(std::string_view text, IdeKind& kind);

struct GitspaceUser {
  std::string name;  // empty: devcontainer remoteUser, else root
  std::vector<std::string> ssh_authorized_keys;
};

struct GitspaceSpec {
  // A URL (https://, http://, ssh://, git://, file://), the scp-like
  // "user@host:path", or an absolute path on the machine.
  std::string repository;
  std::string branch;             // empty: the repository's default branch
  std::string devcontainer_path;  // relative to the clone; empty: the usual places
  // The path the IDE serves under ("/gs/gs-abc/"), so that the gateway's
  // host form and path form reach one upstream without rewriting. Jupyter's
  // base_url; code-server has none (the gateway strips the prefix for it).
  std::string base_path = "/";
  IdeKind ide = IdeKind::kJupyter;
  std::map<std::string, std::string> env;
  GitspaceUser user;
};

// Limits on what a spec may carry (the body as a whole is bounded by the
// server at 1 MiB).
constexpr size_t kMaxRepositoryLength = 4096;
constexpr size_t kMaxBranchLength = 255;
constexpr size_t kMaxDevcontainerPathLength = 1024;
constexpr size_t kMaxBasePathLength = 256;
constexpr size_t kMaxSpecEnvEntries = 1024;
constexpr size_t kMaxSpecEnvNameLength = 256;
constexpr size_t kMaxAuthorizedKeys = 256;
constexpr size_t kMaxAuthorizedKeyLength = 16 * 1024;

struct SpecError {
  std::string field;  // "ide", "env.FOO", "user.ssh_authorized_keys[1]"; empty: the body
  std::string message;
};

// Parses a request body. False with the first error.
bool parseGitspaceSpec(std::string_view body, GitspaceSpec& spec, SpecError& error);
bool gitspaceSpecFromJson(const nlohmann::json& document, GitspaceSpec& spec, SpecError& error);
// Every field, empty ones included, keys sorted: equal specs give equal JSON.
nlohmann::json gitspaceSpecToJson(const GitspaceSpec& spec);
std::string canonicalSpecJson(const GitspaceSpec& spec);

// The clone's folder name: the repository's last path component without a
// trailing ".git" ("https://host/org/app.git" → "app").
std::string repositoryFolderName(std::string_view repository);

// [A-Za-z_][A-Za-z0-9_]*, the names a shell can use.
bool isEnvironmentName(std::string_view name);

}  // namespace spacegate
