// GitspaceSetup, step by step on a temporary disk: finding the
// devcontainer.json (and refusing one that points out of the repository),
// the environment's precedence, lifecycle commands in their three forms with
// their failures, cancellation, and the file helpers that must not follow
// symbolic links.
#include "runner/agent/gitspace_setup.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace spacegate {
namespace {

class GitspaceSetupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // As the agent does: orphans of background commands come back to this
    // process (and its reaper) instead of a PID 1 that may never reap them.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    char pattern[] = "/tmp/gitspace-setup-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
    config_.disk = root_ + "/disk";
    std::string error;
    prepared_.workspace = config_.disk + "/workspace/app";
    ASSERT_TRUE(makeDirectories(prepared_.workspace, 0755, error)) << error;
    prepared_.user.name = "root";
    prepared_.user.home = config_.disk + "/home/root";
    prepared_.environment = {"PATH=/usr/bin:/bin", "HOME=" + prepared_.user.home};
  }
  void TearDown() override {
    processes_.stopAll(1000);
    std::string error;
    ASSERT_TRUE(removeTree(root_, error)) << error;
  }

  void write(const std::string& relative, const std::string& text) {
    std::string path = prepared_.workspace + "/" + relative;
    std::string error;
    ASSERT_TRUE(makeDirectories(path.substr(0, path.rfind('/')), 0755, error)) << error;
    std::ofstream(path) << text;
  }
  std::string read(const std::string& relative) {
    std::ifstream in(prepared_.workspace + "/" + relative);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  GitspaceSetup setup(std::function<bool()> cancelled = [] { return false; }) {
    SetupTimeouts timeouts;
    timeouts.kill_grace_ms = 1000;
    timeouts.output_drain_ms = 500;
    return GitspaceSetup(config_, log_, processes_, std::move(cancelled), timeouts);
  }
  LifecycleCommand parseCommand(const std::string& json) {
    DevcontainerConfig devcontainer;
    DevcontainerError error;
    EXPECT_TRUE(parseDevcontainer("{\"postCreateCommand\": " + json + "}", devcontainer, error))
        << error.text();
    return devcontainer.post_create_command;
  }

  std::string root_;
  AgentConfig config_;
  SetupLog log_;
  GitspaceProcesses processes_{log_};
  PreparedWorkspace prepared_;
  GitspaceSpec spec_;
};

TEST_F(GitspaceSetupTest, DevcontainerLookupOrder) {
  std::string error;
  ASSERT_TRUE(setup().readDevcontainer(spec_, prepared_, error)) << error;
  EXPECT_EQ(prepared_.devcontainer_file, "");  // none: defaults
  EXPECT_NE(log_.read(0).find("using the defaults"), std::string::npos);

  write(".devcontainer.json", R"({"name": "root file"})");
  ASSERT_TRUE(setup().readDevcontainer(spec_, prepared_, error)) << error;
  EXPECT_EQ(prepared_.devcontainer_file, ".devcontainer.json");
  EXPECT_EQ(prepared_.devcontainer.name, "root file");

  write(".devcontainer/devcontainer.json", "{\"name\": \"folder file\", // comment\n}");
  ASSERT_TRUE(setup().readDevcontainer(spec_, prepared_, error)) << error;
  EXPECT_EQ(prepared_.devcontainer_file, ".devcontainer/devcontainer.json");
  EXPECT_EQ(prepared_.devcontainer.name, "folder file");

  spec_.devcontainer_path = "tools/dev.json";
  EXPECT_FALSE(setup().readDevcontainer(spec_, prepared_, error));
  EXPECT_EQ(error, "tools/dev.json: not found in the repository");
  write("tools/dev.json", R"({"image": "python:3", "forwardPorts": [8000], "build": {}})");
  ASSERT_TRUE(setup().readDevcontainer(spec_, prepared_, error)) << error;
  EXPECT_EQ(prepared_.devcontainer.image, "python:3");
  std::string log = log_.read(0);
  EXPECT_NE(log.find("image python:3 is recorded, not pulled"), std::string::npos) << log;
  EXPECT_NE(log.find("\"build\" is not supported here and is ignored"), std::string::npos);
}

TEST_F(GitspaceSetupTest, DevcontainerErrorsNameTheFile) {
  write(".devcontainer/devcontainer.json", "{\n  \"name\": \"x\",\n  \"forwardPorts\": [0]\n}");
  std::string error;
  EXPECT_FALSE(setup().readDevcontainer(spec_, prepared_, error));
  EXPECT_EQ(error.rfind(".devcontainer/devcontainer.json: line 3", 0), 0u) << error;
}

TEST_F(GitspaceSetupTest, DevcontainerMayNotPointOutOfTheRepository) {
  std::string outside = root_ + "/secret.json";
  std::ofstream(outside) << R"({"name": "secret"})";
  ASSERT_EQ(::symlink(outside.c_str(), (prepared_.workspace + "/.devcontainer.json").c_str()), 0);
  std::string error;
  EXPECT_FALSE(setup().readDevcontainer(spec_, prepared_, error));
  EXPECT_EQ(error, ".devcontainer.json: must be a file inside the repository");
  // A link inside the repository is fine.
  ::unlink((prepared_.workspace + "/.devcontainer.json").c_str());
  write("config/real.json", R"({"name": "inside"})");
  ASSERT_EQ(::symlink("config/real.json", (prepared_.workspace + "/.devcontainer.json").c_str()),
            0);
  ASSERT_TRUE(setup().readDevcontainer(spec_, prepared_, error)) << error;
  EXPECT_EQ(prepared_.devcontainer.name, "inside");
}

TEST_F(GitspaceSetupTest, EnvironmentPrecedence) {
  prepared_.devcontainer.container_env = {
      {"A", "container"}, {"B", "container"}, {"GITSPACE_ID", "forged"}, {"PATH", "/opt/bin"}};
  spec_.env = {{"B", "spec"}, {"C", "spec"}};
  GitspaceSetup steps = setup();
  steps.buildEnvironment(spec_, "gs-7", prepared_);
  std::map<std::string, std::string> env;
  for (const std::string& entry : prepared_.environment) {
    env[entry.substr(0, entry.find('='))] = entry.substr(entry.find('=') + 1);
  }
  EXPECT_EQ(env["A"], "container");
  EXPECT_EQ(env["B"], "spec");
  EXPECT_EQ(env["C"], "spec");
  EXPECT_EQ(env["GITSPACE_ID"], "gs-7");
  EXPECT_EQ(env["GITSPACE_WORKSPACE"], prepared_.workspace);
  EXPECT_EQ(env["PATH"], "/opt/bin");  // containerEnv may set PATH
  EXPECT_EQ(env["LANG"], "C.UTF-8");
  EXPECT_EQ(env["SHELL"], "/bin/sh");
  EXPECT_EQ(env["USER"], "root");
  EXPECT_EQ(env["HOME"], prepared_.user.home);
}

TEST_F(GitspaceSetupTest, LifecycleCommandForms) {
  std::string error;
  GitspaceSetup steps = setup();
  ASSERT_TRUE(steps.runLifecycleCommand(
      "postCreateCommand", parseCommand(R"("echo shell > shell.txt; pwd")"), prepared_, error))
      << error;
  EXPECT_EQ(read("shell.txt"), "shell\n");
  EXPECT_NE(log_.read(0).find("[postCreateCommand] " + prepared_.workspace), std::string::npos);
  ASSERT_TRUE(steps.runLifecycleCommand("postCreateCommand",
                                        parseCommand(R"(["sh", "-c", "echo argv > argv.txt"])"),
                                        prepared_, error))
      << error;
  EXPECT_EQ(read("argv.txt"), "argv\n");
  // The object form runs in parallel: each waits for the other's file.
  ASSERT_TRUE(steps.runLifecycleCommand(
      "postStartCommand", parseCommand(R"({"a": "touch a; while [ ! -e b ]; do sleep 0.05; done",
                       "b": ["sh", "-c", "touch b; while [ ! -e a ]; do sleep 0.05; done"]})"),
      prepared_, error))
      << error;
  EXPECT_TRUE(steps.runLifecycleCommand("postStartCommand", LifecycleCommand{}, prepared_, error));
}

TEST_F(GitspaceSetupTest, LifecycleCommandFailures) {
  std::string error;
  GitspaceSetup steps = setup();
  EXPECT_FALSE(steps.runLifecycleCommand("postCreateCommand", parseCommand(R"("exit 3")"),
                                         prepared_, error));
  EXPECT_EQ(error, "postCreateCommand failed: exit 3");
  EXPECT_FALSE(steps.runLifecycleCommand(
      "postStartCommand", parseCommand(R"({"ok": "true", "bad": "exit 4"})"), prepared_, error));
  EXPECT_EQ(error, "postStartCommand failed (postStartCommand.bad): exit 4");
  EXPECT_FALSE(steps.runLifecycleCommand(
      "postCreateCommand", parseCommand(R"(["no-such-program-anywhere"])"), prepared_, error));
  EXPECT_NE(error.find("could not start"), std::string::npos) << error;
  EXPECT_FALSE(steps.runLifecycleCommand("postCreateCommand", parseCommand(R"("kill -9 $$")"),
                                         prepared_, error));
  EXPECT_EQ(error, "postCreateCommand failed: killed by signal 9");
}

TEST_F(GitspaceSetupTest, LifecycleCommandTimeoutAndCancel) {
  std::string error;
  SetupTimeouts timeouts;
  timeouts.lifecycle_command_ms = 300;
  timeouts.kill_grace_ms = 500;
  GitspaceSetup slow(
      config_, log_, processes_, [] { return false; }, timeouts);
  auto started = std::chrono::steady_clock::now();
  EXPECT_FALSE(slow.runLifecycleCommand("postCreateCommand", parseCommand(R"("sleep 30")"),
                                        prepared_, error));
  EXPECT_EQ(error, "postCreateCommand failed: timed out after 300 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));

  std::atomic<bool> cancelled{false};
  GitspaceSetup cancellable = setup([&] { return cancelled.load(); });
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cancelled = true;
  });
  started = std::chrono::steady_clock::now();
  EXPECT_FALSE(cancellable.runLifecycleCommand("postStartCommand", parseCommand(R"("sleep 30")"),
                                               prepared_, error));
  canceller.join();
  EXPECT_EQ(error, "postStartCommand cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

TEST_F(GitspaceSetupTest, BackgroundProcessesAreStoppedWithTheGitspace) {
  std::string error;
  ASSERT_TRUE(setup().runLifecycleCommand(
      "postStartCommand", parseCommand(R"("sleep 60 & echo $! > bg.pid; echo $$ > group.pid")"),
      prepared_, error))
      << error;
  pid_t background = std::atoi(read("bg.pid").c_str());
  pid_t group = std::atoi(read("group.pid").c_str());
  ASSERT_GT(background, 0);
  EXPECT_EQ(::kill(background, 0), 0);  // outlived its command
  EXPECT_TRUE(processGroupExists(group));
  processes_.stopAll(2000);
  EXPECT_TRUE(descendantProcesses(::getpid()).empty());
  EXPECT_FALSE(processGroupExists(group));
}

TEST_F(GitspaceSetupTest, FileHelpersDoNotFollowLinks) {
  std::string outside = root_ + "/outside";
  std::string error;
  ASSERT_TRUE(makeDirectories(outside, 0755, error));
  std::ofstream(outside + "/keep.txt") << "keep";
  write("tree/file.txt", "x");
  ASSERT_EQ(::symlink(outside.c_str(), (prepared_.workspace + "/tree/link").c_str()), 0);
  if (::geteuid() == 0) {
    ASSERT_TRUE(chownTree(prepared_.workspace, 65534, 65534, error)) << error;
    struct stat info {};
    ASSERT_EQ(::stat((prepared_.workspace + "/tree/file.txt").c_str(), &info), 0);
    EXPECT_EQ(info.st_uid, 65534u);
    ASSERT_EQ(::stat(outside.c_str(), &info), 0);
    EXPECT_EQ(info.st_uid, 0u);  // the link's target is not handed over
  }
  ASSERT_TRUE(removeTree(prepared_.workspace, error)) << error;
  EXPECT_NE(::access(prepared_.workspace.c_str(), F_OK), 0);
  EXPECT_EQ(::access((outside + "/keep.txt").c_str(), F_OK), 0);
  EXPECT_TRUE(removeTree(prepared_.workspace, error));  // already gone: fine
}

TEST_F(GitspaceSetupTest, FindInPath) {
  EXPECT_EQ(findInPath("sh", "/nonexistent:/bin"), "/bin/sh");
  EXPECT_EQ(findInPath("sh", "/nonexistent"), "");
  EXPECT_EQ(findInPath("/custom/tool", "/bin"), "/custom/tool");
  EXPECT_EQ(findInPath("sh", ""), "");
}

TEST_F(GitspaceSetupTest, CloneFromALocalRepository) {
  std::string bare = root_ + "/origin.git";
  std::string work = root_ + "/origin-work";
  std::string script = "set -e; git init -q --bare -b main '" + bare + "'; git init -q -b main '" +
                       work + "'; cd '" + work +
                       "'; echo hi > hi.txt; git add hi.txt; git -c user.name=t -c "
                       "user.email=t@e commit -q -m one; git push -q '" +
                       bare +
                       "' main; git checkout -q -b topic; echo t > topic.txt; git add "
                       "topic.txt; git -c user.name=t -c user.email=t@e commit -q -m two; git "
                       "push -q '" +
                       bare + "' topic";
  std::string error;
  ASSERT_TRUE(runCommand({"/bin/sh", "-c", script}, 60'000, error)) << error;
  spec_.repository = bare;
  spec_.branch = "topic";
  std::string workspace = config_.disk + "/workspace/origin";
  ASSERT_TRUE(setup().cloneRepository(spec_, workspace, error)) << error << "\n" << log_.read(0);
  EXPECT_EQ(::access((workspace + "/topic.txt").c_str(), F_OK), 0);
  // A second clone replaces what an unfinished one left.
  ASSERT_TRUE(setup().cloneRepository(spec_, workspace, error)) << error;
  spec_.branch = "no-such-branch";
  EXPECT_FALSE(setup().cloneRepository(spec_, workspace, error));
  EXPECT_EQ(error.rfind("git clone failed: exit 128", 0), 0u) << error;
}

}  // namespace
}  // namespace spacegate
