// The checks mirror what the spec is used for: the repository and branch go
// on git's command line (so neither may start with '-' and a repository may
// not name a remote helper such as "ext::"), the devcontainer path is read
// inside the clone (so it may not climb out of it), env names become
// environment variables, the user name is looked up with getpwnam, and each
// SSH key becomes one line of an authorized_keys file.
#include "runner/agent/gitspace_spec.h"

#include <algorithm>
#include <cctype>

namespace spacegate {

namespace {

bool fail(SpecError& error, std::string field, std::string message) {
  error = SpecError{std::move(field), std::move(message)};
  return false;
}

bool hasControlCharacter(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    unsigned char byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

bool isHostCharacter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_' || c == '@' || c == '[' || c == ']';
}

// [a-z_][a-z0-9_-]*[$]?, at most 32 characters: the names useradd accepts
// (the same rule as devcontainer.json's remoteUser).
bool isUserName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  if (!(name[0] == '_' || (name[0] >= 'a' && name[0] <= 'z'))) return false;
  for (size_t i = 1; i < name.size(); ++i) {
    char c = name[i];
    bool last = i + 1 == name.size();
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') continue;
    if (c == '$' && last) continue;
    return false;
  }
  return true;
}

bool checkRepository(const std::string& repository, SpecError& error) {
  const char* field = "repository";
  if (repository.empty()) return fail(error, field, "must not be empty");
  if (repository.size() > kMaxRepositoryLength) {
    return fail(error, field,
                "must be at most " + std::to_string(kMaxRepositoryLength) + " characters");
  }
  if (hasControlCharacter(repository))
    return fail(error, field, "must not contain control characters");
  if (repository[0] == '-') return fail(error, field, "must not start with '-'");
  const std::string_view kForms =
      "must be a URL (https://, http://, ssh://, git://, file://), user@host:path or an absolute "
      "path";
  size_t scheme_end = repository.find("://");
  if (scheme_end != std::string::npos) {
    std::string scheme = repository.substr(0, scheme_end);
    static const char* const kSchemes[] = {"https", "http", "ssh", "git", "file"};
    if (std::find(std::begin(kSchemes), std::end(kSchemes), scheme) == std::end(kSchemes)) {
      return fail(error, field, std::string(kForms));
    }
    if (repository.size() == scheme_end + 3) return fail(error, field, std::string(kForms));
  } else if (repository[0] != '/') {
    // scp-like "user@host:path": a host before the first ':' and no '/'
    // before it; "name::address" would select a git remote helper.
    size_t colon = repository.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 >= repository.size() ||
        repository[colon + 1] == ':' ||
        !std::all_of(repository.begin(), repository.begin() + static_cast<long>(colon),
                     isHostCharacter)) {
      return fail(error, field, std::string(kForms));
    }
  }
  std::string folder = repositoryFolderName(repository);
  if (folder.empty() || folder == "." || folder == ".." || folder[0] == '-') {
    return fail(error, field, "has no usable folder name (its last path component)");
  }
  return true;
}

// The parts of git check-ref-format that matter on a command line.
bool checkBranch(const std::string& branch, SpecError& error) {
  const char* field = "branch";
  if (branch.empty()) return true;
  if (branch.size() > kMaxBranchLength) {
    return fail(error, field,
                "must be at most " + std::to_string(kMaxBranchLength) + " characters");
  }
  if (branch[0] == '-') return fail(error, field, "must not start with '-'");
  if (hasControlCharacter(branch) || branch.find_first_of(" ~^:?*[\\") != std::string::npos ||
      branch.find("..") != std::string::npos || branch.find("@{") != std::string::npos ||
      branch.find("//") != std::string::npos || branch.front() == '/' || branch.back() == '/' ||
      branch.back() == '.' || branch.ends_with(".lock") || branch == "@") {
    return fail(error, field, "is not a valid git branch name");
  }
  return true;
}

bool checkBasePath(const std::string& path, SpecError& error) {
  const char* field = "base_path";
  if (path.empty() || path.size() > kMaxBasePathLength || path.front() != '/' ||
      path.back() != '/') {
    return fail(error, field,
                "must start and end with '/', at most " + std::to_string(kMaxBasePathLength) +
                    " characters");
  }
  for (char c : path) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '-' && c != '_' &&
        c != '.' && c != '~') {
      return fail(error, field, "may hold only [A-Za-z0-9/._~-]");
    }
  }
  if (path.find("//") != std::string::npos || path.find("/../") != std::string::npos ||
      path.find("/./") != std::string::npos) {
    return fail(error, field, "must not hold empty, '.' or '..' segments");
  }
  return true;
}

bool checkDevcontainerPath(const std::string& path, SpecError& error) {
  const char* field = "devcontainer_path";
  if (path.empty()) return true;
  if (path.size() > kMaxDevcontainerPathLength) {
    return fail(error, field,
                "must be at most " + std::to_string(kMaxDevcontainerPathLength) + " characters");
  }
  if (hasControlCharacter(path)) return fail(error, field, "must not contain control characters");
  if (path[0] == '/')
    return fail(error, field, "must be relative to the repository (no leading /)");
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view part = std::string_view(path).substr(
        start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") return fail(error, field, "must not contain '..'");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (path.back() == '/') return fail(error, field, "must name a file, not a folder");
  return true;
}

bool readString(const nlohmann::json& value, const std::string& field, std::string& out,
                SpecError& error) {
  if (!value.is_string()) return fail(error, field, "must be a string");
  out = value.get<std::string>();
  if (out.find('\0') != std::string::npos) return fail(error, field, "must not contain NUL");
  return true;
}

bool readEnv(const nlohmann::json& value, std::map<std::string, std::string>& env,
             SpecError& error) {
  if (!value.is_object()) return fail(error, "env", "must be an object of NAME: value strings");
  if (value.size() > kMaxSpecEnvEntries) {
    return fail(error, "env",
                "must have at most " + std::to_string(kMaxSpecEnvEntries) + " entries");
  }
  for (const auto& [name, entry] : value.items()) {
    std::string field = "env." + name;
    if (name.size() > kMaxSpecEnvNameLength || !isEnvironmentName(name)) {
      return fail(error, field.size() > 80 ? "env" : field,
                  "names must match [A-Za-z_][A-Za-z0-9_]* (at most " +
                      std::to_string(kMaxSpecEnvNameLength) + " characters)");
    }
    std::string text;
    if (!readString(entry, field, text, error)) return false;
    env[name] = std::move(text);
  }
  return true;
}

bool readUser(const nlohmann::json& value, GitspaceUser& user, SpecError& error) {
  if (!value.is_object()) return fail(error, "user", "must be an object");
  for (const auto& [key, entry] : value.items()) {
    if (key == "name") {
      if (!readString(entry, "user.name", user.name, error)) return false;
      if (!user.name.empty() && !isUserName(user.name)) {
        return fail(error, "user.name",
                    "must be a user name ([a-z_][a-z0-9_-]*, at most 32 characters)");
      }
    } else if (key == "ssh_authorized_keys") {
      const char* field = "user.ssh_authorized_keys";
      if (!entry.is_array()) return fail(error, field, "must be an array of strings");
      if (entry.size() > kMaxAuthorizedKeys) {
        return fail(error, field,
                    "must have at most " + std::to_string(kMaxAuthorizedKeys) + " keys");
      }
      size_t index = 0;
      for (const auto& key_value : entry) {
        std::string item = std::string(field) + "[" + std::to_string(index++) + "]";
        std::string line;
        if (!readString(key_value, item, line, error)) return false;
        if (line.empty()) return fail(error, item, "must not be empty");
        if (line.size() > kMaxAuthorizedKeyLength) {
          return fail(error, item,
                      "must be at most " + std::to_string(kMaxAuthorizedKeyLength) + " bytes");
        }
        if (hasControlCharacter(line)) {
          return fail(error, item, "must be one line (an authorized_keys entry)");
        }
        if (line.find(' ') == std::string::npos) {
          return fail(error, item, "must be \"<key type> <base64 key> [comment]\"");
        }
        user.ssh_authorized_keys.push_back(std::move(line));
      }
    } else {
      return fail(error, "user." + key.substr(0, 80), "unknown field");
    }
  }
  return true;
}

}  // namespace

const char* ideKindName(IdeKind kind) {
  switch (kind) {
    case IdeKind::kJupyter: return "jupyter";
    case IdeKind::kVscodeWeb: return "vscode-web";
    case IdeKind::kSsh: return "ssh";
  }
  return "unknown";
}

bool parseIdeKind(std::string_view text, IdeKind& kind) {
  for (IdeKind candidate : {IdeKind::kJupyter, IdeKind::kVscodeWeb, IdeKind::kSsh}) {
    if (text == ideKindName(candidate)) {
      kind = candidate;
      return true;
    }
  }
  return false;
}

bool isEnvironmentName(std::string_view name) {
  if (name.empty()) return false;
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  if (name[0] >= '0' && name[0] <= '9') return false;
  return std::all_of(name.begin(), name.end(), word);
}

std::string repositoryFolderName(std::string_view repository) {
  std::string_view rest = repository;
  size_t scheme_end = rest.find("://");
  if (scheme_end != std::string_view::npos) {
    rest.remove_prefix(scheme_end + 3);
    size_t slash = rest.find('/');
    // A URL with no path ("https://host") has no folder name.
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  } else if (!rest.empty() && rest[0] != '/') {
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) rest.remove_prefix(colon + 1);
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  size_t slash = rest.find_last_of('/');
  if (slash != std::string_view::npos) rest.remove_prefix(slash + 1);
  if (rest.ends_with(".git")) rest.remove_suffix(4);
  return std::string(rest);
}

bool gitspaceSpecFromJson(const nlohmann::json& document, GitspaceSpec& spec, SpecError& error) {
  if (!document.is_object()) return fail(error, "", "body must be a JSON object");
  std::vector<std::string> unknown;
  for (const auto& [key, value] : document.items()) {
    static const char* const kKnown[] = {
        "repository", "branch", "devcontainer_path", "base_path", "ide", "env", "user"};
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      unknown.push_back(key.substr(0, 80));
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (const std::string& name : unknown) list += (list.empty() ? "" : ", ") + name;
    return fail(error, unknown.front(),
                std::string(unknown.size() == 1 ? "unknown field: " : "unknown fields: ") + list);
  }
  GitspaceSpec parsed;
  if (!document.contains("repository")) return fail(error, "repository", "required");
  if (!readString(document["repository"], "repository", parsed.repository, error) ||
      !checkRepository(parsed.repository, error)) {
    return false;
  }
  if (document.contains("branch") &&
      (!readString(document["branch"], "branch", parsed.branch, error) ||
       !checkBranch(parsed.branch, error))) {
    return false;
  }
  if (document.contains("devcontainer_path") &&
      (!readString(document["devcontainer_path"], "devcontainer_path", parsed.devcontainer_path,
                   error) ||
       !checkDevcontainerPath(parsed.devcontainer_path, error))) {
    return false;
  }
  if (document.contains("base_path") &&
      (!readString(document["base_path"], "base_path", parsed.base_path, error) ||
       !checkBasePath(parsed.base_path, error))) {
    return false;
  }
  if (!document.contains("ide")) return fail(error, "ide", "required: jupyter, vscode-web or ssh");
  std::string ide;
  if (!readString(document["ide"], "ide", ide, error)) return false;
  if (!parseIdeKind(ide, parsed.ide)) {
    return fail(error, "ide", "must be jupyter, vscode-web or ssh");
  }
  if (document.contains("env") && !readEnv(document["env"], parsed.env, error)) return false;
  if (document.contains("user") && !readUser(document["user"], parsed.user, error)) return false;
  spec = std::move(parsed);
  return true;
}

bool parseGitspaceSpec(std::string_view body, GitspaceSpec& spec, SpecError& error) {
  nlohmann::json document = nlohmann::json::parse(body, nullptr, false);
  if (document.is_discarded()) return fail(error, "", "body is not valid JSON");
  return gitspaceSpecFromJson(document, spec, error);
}

nlohmann::json gitspaceSpecToJson(const GitspaceSpec& spec) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [name, value] : spec.env) env[name] = value;
  return {
      {"repository", spec.repository},
      {"branch", spec.branch},
      {"devcontainer_path", spec.devcontainer_path},
      {"base_path", spec.base_path},
      {"ide", ideKindName(spec.ide)},
      {"env", env},
      {"user", {{"name", spec.user.name}, {"ssh_authorized_keys", spec.user.ssh_authorized_keys}}}};
}

std::string canonicalSpecJson(const GitspaceSpec& spec) {
  return gitspaceSpecToJson(spec).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace spacegate
