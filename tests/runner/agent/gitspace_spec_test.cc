// GitspaceSpec: a valid body in every form, and a refusal naming the field
// for every kind of bad field.
#include "runner/agent/gitspace_spec.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

struct BadCase {
  std::string body;
  std::string field;
  std::string message_part;
};

TEST(GitspaceSpecTest, MinimalSpec) {
  GitspaceSpec spec;
  SpecError error;
  ASSERT_TRUE(
      parseGitspaceSpec(R"({"repository": "/srv/git/app.git", "ide": "jupyter"})", spec, error))
      << error.field << ": " << error.message;
  EXPECT_EQ(spec.repository, "/srv/git/app.git");
  EXPECT_EQ(spec.ide, IdeKind::kJupyter);
  EXPECT_TRUE(spec.branch.empty());
  EXPECT_TRUE(spec.devcontainer_path.empty());
  EXPECT_TRUE(spec.env.empty());
  EXPECT_TRUE(spec.user.name.empty());
}

TEST(GitspaceSpecTest, FullSpec) {
  GitspaceSpec spec;
  SpecError error;
  ASSERT_TRUE(parseGitspaceSpec(R"({
      "repository": "https://git.example.com/org/app.git",
      "branch": "feature/x-1",
      "devcontainer_path": ".devcontainer/python/devcontainer.json",
      "ide": "ssh",
      "env": {"FOO": "bar", "_X1": ""},
      "user": {"name": "dev", "ssh_authorized_keys": ["ssh-ed25519 AAAA user@host"]}})",
                                spec, error))
      << error.field << ": " << error.message;
  EXPECT_EQ(spec.branch, "feature/x-1");
  EXPECT_EQ(spec.devcontainer_path, ".devcontainer/python/devcontainer.json");
  EXPECT_EQ(spec.ide, IdeKind::kSsh);
  EXPECT_EQ(spec.env.at("FOO"), "bar");
  EXPECT_EQ(spec.env.at("_X1"), "");
  EXPECT_EQ(spec.user.name, "dev");
  ASSERT_EQ(spec.user.ssh_authorized_keys.size(), 1u);
}

TEST(GitspaceSpecTest, RepositoryForms) {
  for (const char* repository :
       {"https://h/o/a.git", "http://h/a", "ssh://git@h:22/o/a.git", "git://h/a.git",
        "file:///srv/a.git", "git@github.com:org/app.git", "/srv/git/app", "/srv/git/app.git/"}) {
    GitspaceSpec spec;
    SpecError error;
    nlohmann::json body = {{"repository", repository}, {"ide", "vscode-web"}};
    EXPECT_TRUE(gitspaceSpecFromJson(body, spec, error)) << repository << ": " << error.message;
  }
}

TEST(GitspaceSpecTest, EveryBadFieldIsNamed) {
  const std::vector<BadCase> cases = {
      {"not json", "", "not valid JSON"},
      {"[1]", "", "JSON object"},
      {R"({"repository": "/r", "ide": "ssh", "extra": 1})", "extra", "unknown field: extra"},
      {R"({"repository": "/r", "ide": "ssh", "b": 1, "a": 2})", "a", "unknown fields: a, b"},
      // repository
      {R"({"ide": "ssh"})", "repository", "required"},
      {R"({"repository": 5, "ide": "ssh"})", "repository", "string"},
      {R"({"repository": "", "ide": "ssh"})", "repository", "empty"},
      {R"({"repository": "-uhttps://x/a", "ide": "ssh"})", "repository", "'-'"},
      {R"({"repository": "ftp://h/a.git", "ide": "ssh"})", "repository", "URL"},
      {R"({"repository": "ext::sh -c touch% /tmp/x", "ide": "ssh"})", "repository", "URL"},
      {R"({"repository": "a::b", "ide": "ssh"})", "repository", "URL"},
      {R"({"repository": "relative/path", "ide": "ssh"})", "repository", "URL"},
      {R"({"repository": "https://host", "ide": "ssh"})", "repository", "folder name"},
      {R"({"repository": "/", "ide": "ssh"})", "repository", "folder name"},
      {R"({"repository": "/srv/..", "ide": "ssh"})", "repository", "folder name"},
      {R"({"repository": "/srv/a\nb", "ide": "ssh"})", "repository", "control"},
      {R"({"repository": "/srv/a\u0000", "ide": "ssh"})", "repository", "NUL"},
      {"{\"repository\": \"/" + std::string(kMaxRepositoryLength, 'a') + "\", \"ide\": \"ssh\"}",
       "repository", "at most"},
      // branch
      {R"({"repository": "/r", "ide": "ssh", "branch": 1})", "branch", "string"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "-b"})", "branch", "'-'"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "a..b"})", "branch", "branch name"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "a b"})", "branch", "branch name"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "x.lock"})", "branch", "branch name"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "/x"})", "branch", "branch name"},
      {R"({"repository": "/r", "ide": "ssh", "branch": "x~1"})", "branch", "branch name"},
      {"{\"repository\": \"/r\", \"ide\": \"ssh\", \"branch\": \"" +
           std::string(kMaxBranchLength + 1, 'b') + "\"}",
       "branch", "at most"},
      // devcontainer_path
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": []})", "devcontainer_path",
       "string"},
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": "/etc/x.json"})",
       "devcontainer_path", "leading /"},
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": "../x.json"})",
       "devcontainer_path", ".."},
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": "a/../../x.json"})",
       "devcontainer_path", ".."},
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": "dir/"})", "devcontainer_path",
       "file"},
      {R"({"repository": "/r", "ide": "ssh", "devcontainer_path": "a\tb"})", "devcontainer_path",
       "control"},
      // ide
      {R"({"repository": "/r"})", "ide", "required"},
      {R"({"repository": "/r", "ide": 1})", "ide", "string"},
      {R"({"repository": "/r", "ide": "emacs"})", "ide", "jupyter, vscode-web or ssh"},
      {R"({"repository": "/r", "ide": "Jupyter"})", "ide", "jupyter, vscode-web or ssh"},
      // env
      {R"({"repository": "/r", "ide": "ssh", "env": ["A=b"]})", "env", "object"},
      {R"({"repository": "/r", "ide": "ssh", "env": {"1A": "x"}})", "env.1A", "names"},
      {R"({"repository": "/r", "ide": "ssh", "env": {"A-B": "x"}})", "env.A-B", "names"},
      {R"({"repository": "/r", "ide": "ssh", "env": {"": "x"}})", "env.", "names"},
      {R"({"repository": "/r", "ide": "ssh", "env": {"A": 1}})", "env.A", "string"},
      {R"({"repository": "/r", "ide": "ssh", "env": {"A": "x\u0000y"}})", "env.A", "NUL"},
      // user
      {R"({"repository": "/r", "ide": "ssh", "user": "dev"})", "user", "object"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"name": 1}})", "user.name", "string"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"name": "Dev"}})", "user.name", "user name"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"name": "a b"}})", "user.name", "user name"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"uid": 0}})", "user.uid", "unknown"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"ssh_authorized_keys": "k"}})",
       "user.ssh_authorized_keys", "array"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"ssh_authorized_keys": ["ssh-ed25519 A", 1]}})",
       "user.ssh_authorized_keys[1]", "string"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"ssh_authorized_keys": [""]}})",
       "user.ssh_authorized_keys[0]", "empty"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"ssh_authorized_keys": ["ssh-ed25519 A\nssh-rsa B"]}})",
       "user.ssh_authorized_keys[0]", "one line"},
      {R"({"repository": "/r", "ide": "ssh", "user": {"ssh_authorized_keys": ["nospace"]}})",
       "user.ssh_authorized_keys[0]", "key type"},
  };
  for (const BadCase& bad : cases) {
    GitspaceSpec spec;
    SpecError error;
    EXPECT_FALSE(parseGitspaceSpec(bad.body, spec, error)) << bad.body;
    EXPECT_EQ(error.field, bad.field) << bad.body << " → " << error.message;
    EXPECT_NE(error.message.find(bad.message_part), std::string::npos)
        << bad.body << " → " << error.message;
  }
}

TEST(GitspaceSpecTest, TooManyEnvEntriesAndKeys) {
  nlohmann::json env = nlohmann::json::object();
  for (size_t i = 0; i <= kMaxSpecEnvEntries; ++i) env["V" + std::to_string(i)] = "x";
  GitspaceSpec spec;
  SpecError error;
  EXPECT_FALSE(
      gitspaceSpecFromJson({{"repository", "/r"}, {"ide", "ssh"}, {"env", env}}, spec, error));
  EXPECT_EQ(error.field, "env");
  std::vector<std::string> keys(kMaxAuthorizedKeys + 1, "ssh-ed25519 AAAA");
  EXPECT_FALSE(gitspaceSpecFromJson(
      {{"repository", "/r"}, {"ide", "ssh"}, {"user", {{"ssh_authorized_keys", keys}}}}, spec,
      error));
  EXPECT_EQ(error.field, "user.ssh_authorized_keys");
}

TEST(GitspaceSpecTest, CanonicalJsonIgnoresOrderAndDefaults) {
  GitspaceSpec a;
  GitspaceSpec b;
  SpecError error;
  ASSERT_TRUE(parseGitspaceSpec(
      R"({"ide": "jupyter", "repository": "/r/app.git", "env": {"B": "2", "A": "1"}})", a, error));
  ASSERT_TRUE(parseGitspaceSpec(
      R"({"env": {"A": "1", "B": "2"}, "repository": "/r/app.git", "branch": "", "ide": "jupyter",
          "user": {}})",
      b, error));
  EXPECT_EQ(canonicalSpecJson(a), canonicalSpecJson(b));
  GitspaceSpec c = a;
  c.env["A"] = "other";
  EXPECT_NE(canonicalSpecJson(a), canonicalSpecJson(c));
  // The canonical form parses back to the same spec.
  GitspaceSpec round_trip;
  ASSERT_TRUE(gitspaceSpecFromJson(gitspaceSpecToJson(a), round_trip, error)) << error.message;
  EXPECT_EQ(canonicalSpecJson(round_trip), canonicalSpecJson(a));
}

TEST(GitspaceSpecTest, RepositoryFolderName) {
  EXPECT_EQ(repositoryFolderName("https://git.example.com/org/app.git"), "app");
  EXPECT_EQ(repositoryFolderName("https://git.example.com/org/app"), "app");
  EXPECT_EQ(repositoryFolderName("https://git.example.com/org/app/"), "app");
  EXPECT_EQ(repositoryFolderName("git@github.com:org/tool.git"), "tool");
  EXPECT_EQ(repositoryFolderName("git@github.com:tool.git"), "tool");
  EXPECT_EQ(repositoryFolderName("/srv/git/lib.git"), "lib");
  EXPECT_EQ(repositoryFolderName("/srv/git/lib.git/"), "lib");
  EXPECT_EQ(repositoryFolderName("https://host"), "");
}

TEST(GitspaceSpecTest, IdeKindNames) {
  for (IdeKind kind : {IdeKind::kJupyter, IdeKind::kVscodeWeb, IdeKind::kSsh}) {
    IdeKind parsed;
    ASSERT_TRUE(parseIdeKind(ideKindName(kind), parsed));
    EXPECT_EQ(parsed, kind);
  }
  IdeKind parsed;
  EXPECT_FALSE(parseIdeKind("vscode", parsed));
}

TEST(GitspaceSpecTest, EnvironmentNames) {
  EXPECT_TRUE(isEnvironmentName("A"));
  EXPECT_TRUE(isEnvironmentName("_a1"));
  EXPECT_FALSE(isEnvironmentName(""));
  EXPECT_FALSE(isEnvironmentName("1A"));
  EXPECT_FALSE(isEnvironmentName("A=B"));
  EXPECT_FALSE(isEnvironmentName("A.B"));
}

}  // namespace
}  // namespace spacegate

namespace spacegate {
namespace {

TEST(GitspaceSpecTest, BasePath) {
  GitspaceSpec spec;
  SpecError error;
  ASSERT_TRUE(parseGitspaceSpec(R"({"repository": "/r.git", "ide": "jupyter"})", spec, error));
  EXPECT_EQ(spec.base_path, "/");
  ASSERT_TRUE(parseGitspaceSpec(
      R"({"repository": "/r.git", "ide": "jupyter", "base_path": "/gs/gs-1a2b/"})", spec, error))
      << error.message;
  EXPECT_EQ(spec.base_path, "/gs/gs-1a2b/");
  EXPECT_EQ(gitspaceSpecToJson(spec)["base_path"], "/gs/gs-1a2b/");
  for (const char* bad :
       {"", "gs/x/", "/gs/x", "/gs//x/", "/gs/../x/", "/gs/./x/", "/a b/", "/gs/\"x/"}) {
    std::string body = std::string(R"({"repository": "/r.git", "ide": "jupyter", "base_path": )") +
                       nlohmann::json(bad).dump() + "}";
    EXPECT_FALSE(parseGitspaceSpec(body, spec, error)) << bad;
    EXPECT_EQ(error.field, "base_path") << bad;
  }
}

}  // namespace
}  // namespace spacegate
