// AgentState: the transition table, the JSON round trip, refusals of a
// damaged file, recovery after a restart, and the atomic state file.
#include "runner/agent/agent_state.h"

#include "runner/agent/gitspace_setup.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace spacegate {
namespace {

using S = GitspaceState;
using E = GitspaceEvent;

GitspaceSpec sampleSpec() {
  GitspaceSpec spec;
  spec.repository = "/srv/git/app.git";
  spec.branch = "main";
  spec.ide = IdeKind::kJupyter;
  spec.env = {{"A", "1"}};
  spec.user.name = "dev";
  spec.user.ssh_authorized_keys = {"ssh-ed25519 AAAA x"};
  return spec;
}

TEST(AgentStateTest, StateNamesRoundTrip) {
  for (S state : {S::kUninitialized, S::kSettingUp, S::kRunning, S::kStopped, S::kError}) {
    S parsed;
    ASSERT_TRUE(parseGitspaceState(gitspaceStateName(state), parsed));
    EXPECT_EQ(parsed, state);
  }
  S parsed;
  EXPECT_FALSE(parseGitspaceState("starting", parsed));
}

TEST(AgentStateTest, TransitionTable) {
  struct Row {
    S from;
    E event;
    bool allowed;
    S to;
  };
  const Row rows[] = {
      {S::kUninitialized, E::kSpecAccepted, true, S::kSettingUp},
      {S::kRunning, E::kSpecAccepted, false, S::kRunning},
      {S::kStopped, E::kSpecAccepted, false, S::kStopped},
      {S::kStopped, E::kStartRequested, true, S::kSettingUp},
      {S::kError, E::kStartRequested, true, S::kSettingUp},
      {S::kRunning, E::kStartRequested, false, S::kRunning},
      {S::kSettingUp, E::kStartRequested, false, S::kSettingUp},
      {S::kUninitialized, E::kStartRequested, false, S::kUninitialized},
      {S::kSettingUp, E::kIdeReady, true, S::kRunning},
      {S::kStopped, E::kIdeReady, false, S::kStopped},
      {S::kSettingUp, E::kFailed, true, S::kError},
      {S::kRunning, E::kFailed, true, S::kError},
      {S::kStopped, E::kFailed, false, S::kStopped},
      {S::kRunning, E::kStopRequested, true, S::kStopped},
      {S::kSettingUp, E::kStopRequested, true, S::kStopped},
      {S::kError, E::kStopRequested, true, S::kStopped},
      {S::kStopped, E::kStopRequested, true, S::kStopped},
      {S::kUninitialized, E::kStopRequested, false, S::kUninitialized},
      {S::kRunning, E::kDeleted, true, S::kUninitialized},
      {S::kError, E::kDeleted, true, S::kUninitialized},
      {S::kUninitialized, E::kDeleted, true, S::kUninitialized},
      {S::kRunning, E::kRebooted, true, S::kStopped},
      {S::kSettingUp, E::kRebooted, true, S::kStopped},
      {S::kError, E::kRebooted, true, S::kError},
      {S::kStopped, E::kRebooted, true, S::kStopped},
  };
  for (const Row& row : rows) {
    S to = row.from;
    EXPECT_EQ(nextGitspaceState(row.from, row.event, to), row.allowed)
        << gitspaceStateName(row.from) << " + " << gitspaceEventName(row.event);
    if (row.allowed) {
      EXPECT_EQ(to, row.to) << gitspaceEventName(row.event);
    }
  }
}

TEST(AgentStateTest, JsonRoundTrip) {
  AgentState state;
  state.gitspace_id = "gs-1";
  state.has_spec = true;
  state.spec = sampleSpec();
  state.state = S::kError;
  state.error = "postCreateCommand failed: exit 3";
  state.step = "postCreateCommand";
  state.clone_done = true;
  state.workspace = "/disk/workspace/app";
  state.user = "root";
  state.user_warning = "user \"dev\" does not exist";
  state.image = "python:3";
  state.forwarded_ports = {3000, 8080};
  state.ide = IdeEndpoint{"jupyter", 8888, "http", "0.0.0.0"};
  state.ide_pid = 4242;
  state.ide_start_time = 123456789;
  AgentState parsed;
  std::string error;
  ASSERT_TRUE(parseAgentState(agentStateToJson(state), parsed, error)) << error;
  EXPECT_EQ(agentStateToJson(parsed), agentStateToJson(state));
  EXPECT_EQ(canonicalSpecJson(parsed.spec), canonicalSpecJson(state.spec));
  EXPECT_EQ(parsed.forwarded_ports, state.forwarded_ports);
  EXPECT_EQ(parsed.ide.port, 8888);
  EXPECT_EQ(parsed.ide_pid, 4242);
  EXPECT_EQ(parsed.ide_start_time, 123456789u);
  EXPECT_FALSE(parsed.post_create_done);
}

TEST(AgentStateTest, DamagedFilesAreRefused) {
  AgentState state;
  std::string error;
  EXPECT_FALSE(parseAgentState("", state, error));
  EXPECT_FALSE(parseAgentState("[]", state, error));
  EXPECT_FALSE(parseAgentState(R"({"state": "flying"})", state, error));
  EXPECT_NE(error.find("state"), std::string::npos);
  EXPECT_FALSE(parseAgentState(R"({"state": "running"})", state, error));
  EXPECT_NE(error.find("spec"), std::string::npos);
  EXPECT_FALSE(parseAgentState(R"({"clone_done": "yes"})", state, error));
  EXPECT_NE(error.find("clone_done"), std::string::npos);
  EXPECT_FALSE(parseAgentState(R"({"forwarded_ports": ["x"]})", state, error));
  EXPECT_FALSE(parseAgentState(R"({"ide": 1})", state, error));
  EXPECT_FALSE(parseAgentState(R"({"ide_process": {"pid": 1}})", state, error));
  EXPECT_FALSE(
      parseAgentState(R"({"state": "stopped", "spec": {"ide": "jupyter"}})", state, error));
  EXPECT_NE(error.find("spec.repository"), std::string::npos) << error;
  // A minimal file: a warm machine that was assigned.
  ASSERT_TRUE(parseAgentState(R"({"gitspace_id": "gs-1"})", state, error)) << error;
  EXPECT_EQ(state.gitspace_id, "gs-1");
  EXPECT_EQ(state.state, S::kUninitialized);
}

TEST(AgentStateTest, RecoveryAfterReboot) {
  AgentState running;
  running.gitspace_id = "gs-1";
  running.has_spec = true;
  running.spec = sampleSpec();
  running.clone_done = true;
  running.post_create_done = true;
  running.state = S::kRunning;

  AgentState state = running;
  recoverAfterReboot(state, true);
  EXPECT_EQ(state.state, S::kStopped);
  EXPECT_TRUE(state.post_create_done);

  state = running;
  state.state = S::kSettingUp;
  recoverAfterReboot(state, true);
  EXPECT_EQ(state.state, S::kStopped);

  state = running;
  recoverAfterReboot(state, false);  // the clone is gone
  EXPECT_EQ(state.state, S::kUninitialized);
  EXPECT_FALSE(state.has_spec);
  EXPECT_FALSE(state.post_create_done);
  EXPECT_EQ(state.gitspace_id, "gs-1");  // the assignment stays

  state = running;
  state.state = S::kError;
  state.error = "boom";
  recoverAfterReboot(state, false);
  EXPECT_EQ(state.state, S::kError);
  EXPECT_EQ(state.error, "boom");

  state = running;
  state.state = S::kStopped;
  recoverAfterReboot(state, false);
  EXPECT_EQ(state.state, S::kUninitialized);
}

class AgentStateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/agent-state-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
  }
  void TearDown() override {
    std::string error;
    ASSERT_TRUE(removeTree(folder_, error)) << error;
  }
  std::string folder_;
};

TEST_F(AgentStateFileTest, MissingFileIsNotAnError) {
  AgentStateFile file(folder_ + "/agent-state.json");
  AgentState state;
  bool found = true;
  std::string error;
  ASSERT_TRUE(file.load(state, found, error)) << error;
  EXPECT_FALSE(found);
}

TEST_F(AgentStateFileTest, SaveIsAtomicAndPrivate) {
  AgentStateFile file(folder_ + "/agent-state.json");
  AgentState state;
  state.gitspace_id = "gs-9";
  state.has_spec = true;
  state.spec = sampleSpec();
  state.state = S::kRunning;
  std::string error;
  ASSERT_TRUE(file.save(state, error)) << error;
  state.state = S::kStopped;
  ASSERT_TRUE(file.save(state, error)) << error;
  struct stat info {};
  ASSERT_EQ(::stat(file.path().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_NE(::access((file.path() + ".tmp").c_str(), F_OK), 0);  // no leftover
  AgentState loaded;
  bool found = false;
  ASSERT_TRUE(file.load(loaded, found, error)) << error;
  EXPECT_TRUE(found);
  EXPECT_EQ(loaded.state, S::kStopped);
  EXPECT_EQ(loaded.gitspace_id, "gs-9");
  ASSERT_TRUE(file.remove(error));
  ASSERT_TRUE(file.remove(error));  // twice is fine
}

TEST_F(AgentStateFileTest, CorruptFileIsReported) {
  AgentStateFile file(folder_ + "/agent-state.json");
  std::ofstream(file.path()) << "{\"state\": ";
  AgentState state;
  bool found = false;
  std::string error;
  EXPECT_FALSE(file.load(state, found, error));
  EXPECT_TRUE(found);
  EXPECT_NE(error.find(file.path()), std::string::npos);
}

}  // namespace
}  // namespace spacegate
