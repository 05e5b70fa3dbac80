// Tasks as the control plane sends them: every field read, each refusal
// naming its field (with the id kept so the refusal can be posted), the
// result's JSON both ways, and the text that goes into event messages.
#include "delegate/task.h"

#include <gtest/gtest.h>

#include "delegate/api_call.h"

namespace spacegate {
namespace {

nlohmann::json startTask() {
  return nlohmann::json::parse(R"({
    "id": "t-0a1b2c3d", "kind": "start", "attempt": 2,
    "gitspace": {"id": "gs-1234abcd", "name": "demo", "owner": "u-1",
                 "repository": "https://git.example/app.git", "branch": "",
                 "ide": "vscode-web", "machine_id": ""},
    "infra": {"gateway_domain": "gitspaces.example", "url_scheme": "https",
              "gateway_port": 443, "runner_pool": "default"},
    "agent_token": "v1.x.y", "lease_until_ms": 1700000060000})");
}

TEST(TaskTest, ReadsEveryField) {
  Task task;
  std::string error;
  ASSERT_TRUE(parseTask(startTask(), task, error)) << error;
  EXPECT_EQ(task.id, "t-0a1b2c3d");
  EXPECT_EQ(task.kind, TaskKind::kStart);
  EXPECT_EQ(task.attempt, 2);
  EXPECT_EQ(task.gitspace.id, "gs-1234abcd");
  EXPECT_EQ(task.gitspace.owner, "u-1");
  EXPECT_EQ(task.gitspace.ide, "vscode-web");
  EXPECT_EQ(task.infra.gateway_port, 443);
  EXPECT_EQ(task.infra.runner_pool, "default");
  EXPECT_EQ(task.agent_token, "v1.x.y");
  EXPECT_EQ(task.lease_until_ms, 1700000060000);
  EXPECT_EQ(task.agentHost(), "agent--gs-1234abcd.gitspaces.example");
  EXPECT_EQ(task.basePath(), "/gs/gs-1234abcd/");
  EXPECT_FALSE(task.gitspace.ssh_authorized_keys.has_value());  // not sent: not known
}

TEST(TaskTest, ReadsTheOwnersSshKeys) {
  nlohmann::json document = startTask();
  document["gitspace"]["ssh_authorized_keys"] = {"ssh-ed25519 AAAA a", "ssh-rsa BBBB"};
  Task task;
  std::string error;
  ASSERT_TRUE(parseTask(document, task, error)) << error;
  ASSERT_TRUE(task.gitspace.ssh_authorized_keys.has_value());
  EXPECT_EQ(*task.gitspace.ssh_authorized_keys,
            (std::vector<std::string>{"ssh-ed25519 AAAA a", "ssh-rsa BBBB"}));
  document["gitspace"]["ssh_authorized_keys"] = nlohmann::json::array();
  ASSERT_TRUE(parseTask(document, task, error)) << error;
  ASSERT_TRUE(task.gitspace.ssh_authorized_keys.has_value());  // none: sshd takes nobody
  EXPECT_TRUE(task.gitspace.ssh_authorized_keys->empty());
}

TEST(TaskTest, RefusalsNameTheField) {
  struct Case {
    const char* pointer;
    nlohmann::json value;
    const char* error;
  };
  const Case cases[] = {
      {"/kind", "rebuild", "kind: this delegate does not know \"rebuild\""},
      {"/gitspace/id", "../x", "gitspace.id: must be 1 to 128 of [A-Za-z0-9._-]"},
      {"/gitspace/id", nullptr, "gitspace.id: required"},
      {"/gitspace/machine_id", "m 1", "gitspace.machine_id: must be"},
      {"/gitspace/repository", "", "gitspace.repository: required for a start"},
      {"/infra/gateway_domain", "", "infra.gateway_domain: required for a start"},
      {"/infra/gateway_domain", "a/b", "infra.gateway_domain: must be a DNS name"},
      {"/infra/runner_pool", "", "infra.runner_pool: required for a start"},
      {"/agent_token", "", "agent_token: required for a start"},
      {"/gitspace/ide", 3, "gitspace.ide: must be a string"},
      {"/gitspace/ssh_authorized_keys", "ssh-ed25519 AAAA",
       "gitspace.ssh_authorized_keys: must be an array of strings"},
      {"/gitspace/ssh_authorized_keys",
       {"ssh-ed25519 AAAA", 7},
       "gitspace.ssh_authorized_keys[1]: must be a string"},
  };
  for (const Case& c : cases) {
    nlohmann::json document = startTask();
    document[nlohmann::json::json_pointer(c.pointer)] = c.value;
    Task task;
    std::string error;
    EXPECT_FALSE(parseTask(document, task, error)) << c.pointer;
    EXPECT_EQ(error.rfind(c.error, 0), 0u) << c.pointer << ": " << error;
    EXPECT_EQ(task.id, "t-0a1b2c3d") << c.pointer;  // so the refusal can be posted
  }
  Task task;
  std::string error;
  EXPECT_FALSE(parseTask(nlohmann::json::array(), task, error));
  EXPECT_FALSE(parseTask({{"kind", "start"}}, task, error));
  EXPECT_EQ(error, "id: required");
}

TEST(TaskTest, StopAndDeleteNeedLess) {
  nlohmann::json document = {
      {"id", "t-2"}, {"kind", "delete"}, {"gitspace", {{"id", "gs-1"}, {"machine_id", "m-1"}}}};
  Task task;
  std::string error;
  ASSERT_TRUE(parseTask(document, task, error)) << error;
  EXPECT_EQ(task.kind, TaskKind::kDelete);
  EXPECT_EQ(task.gitspace.machine_id, "m-1");
  document["kind"] = "reset";
  ASSERT_TRUE(parseTask(document, task, error)) << error;
  EXPECT_EQ(task.kind, TaskKind::kReset);
  document["kind"] = "stop";
  ASSERT_TRUE(parseTask(document, task, error)) << error;
  EXPECT_EQ(task.kind, TaskKind::kStop);
}

TEST(TaskResultTest, JsonBothWays) {
  TaskResult ok = TaskResult::success({{"machine_id", "m-1"}});
  EXPECT_EQ(ok.toJson(), nlohmann::json::parse(R"({"ok":true,"data":{"machine_id":"m-1"}})"));
  TaskResult failed = TaskResult::failure("no room");
  EXPECT_EQ(failed.toJson(), nlohmann::json::parse(R"({"ok":false,"error":"no room"})"));
  TaskResult read;
  ASSERT_TRUE(TaskResult::fromJson(ok.toJson(), read));
  EXPECT_TRUE(read.ok);
  EXPECT_EQ(read.data["machine_id"], "m-1");
  ASSERT_TRUE(TaskResult::fromJson(failed.toJson(), read));
  EXPECT_FALSE(read.ok);
  EXPECT_EQ(read.error, "no room");
  EXPECT_FALSE(TaskResult::fromJson({{"ok", false}}, read));
  EXPECT_FALSE(TaskResult::fromJson("ok", read));
}

TEST(PlainTextTest, ControlCharactersAndEscapesGo) {
  EXPECT_EQ(plainText("\x1b[1;32mgreen\x1b[0m and\tplain\r", 100), "green and\tplain ");
  EXPECT_EQ(plainText(std::string("a\0b\x7f", 4), 100), "a b ");
  EXPECT_EQ(plainText("abcdef", 3), "abc");
  // Not cut inside a UTF-8 character: "é" is two bytes.
  EXPECT_EQ(plainText("ab\xc3\xa9", 3), "ab");
}

}  // namespace
}  // namespace spacegate
