// IdeServer: the IDE command lines, sshd's config, and the readiness probe
// against listeners made here (an HTTP answer, an SSH banner, silence).
#include "runner/agent/ide_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace spacegate {
namespace {

// A loopback listener that answers every connection with `greeting` (or
// nothing) and closes it.
class Listener {
 public:
  explicit Listener(std::string greeting) : greeting_(std::move(greeting)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t length = sizeof address;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int client = ::accept(fd_, nullptr, nullptr);
        if (client < 0 || stopping_) {
          if (client >= 0) ::close(client);
          return;
        }
        if (!greeting_.empty()) {
          char request[1024];
          ssize_t ignored = 0;
          if (greeting_.starts_with("HTTP")) ignored = ::read(client, request, sizeof request);
          ignored = ::write(client, greeting_.data(), greeting_.size());
          (void)ignored;
          ::close(client);
        } else {
          held_.push_back(client);  // accepted, never answered
        }
      }
    });
  }
  ~Listener() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    for (int client : held_) ::close(client);
  }
  int port() const { return port_; }

 private:
  std::string greeting_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::vector<int> held_;
  std::thread thread_;
};

int freePort() {
  Listener listener("x");
  return listener.port();  // closed when this returns
}

PreparedWorkspace prepared() {
  PreparedWorkspace workspace;
  workspace.workspace = "/disk/workspace/app";
  workspace.user.name = "root";
  workspace.user.uid = 0;
  workspace.user.home = "/disk/home/root";
  workspace.environment = {"HOME=/disk/home/root", "PATH=/usr/bin:/bin", "GITSPACE_ID=gs-1"};
  return workspace;
}

TEST(IdeServerTest, JupyterCommandLine) {
  AgentConfig config;
  config.disk = "/disk";
  config.ide_host = "0.0.0.0";
  config.ide_port = 8899;
  SetupLog log;
  GitspaceProcesses processes(log);
  GitspaceSetup setup(config, log, processes, [] { return false; });
  GitspaceSpec spec;
  spec.ide = IdeKind::kJupyter;
  IdeLaunch launch;
  std::string error;
  PreparedWorkspace workspace = prepared();
  ASSERT_TRUE(prepareIdeLaunch(spec, config, setup, workspace, log, launch, error)) << error;
  const std::vector<std::string>& argv = launch.child.argv;
  ASSERT_GE(argv.size(), 4u);
  EXPECT_EQ(argv[0], "/usr/bin/python3");
  auto has = [&](const std::string& argument) {
    return std::find(argv.begin(), argv.end(), argument) != argv.end();
  };
  EXPECT_TRUE(has("--ip=0.0.0.0"));
  EXPECT_TRUE(has("--port=8899"));
  EXPECT_TRUE(has("--NotebookApp.token="));
  EXPECT_TRUE(has("--NotebookApp.password="));
  EXPECT_TRUE(has("--NotebookApp.notebook_dir=/disk/workspace/app"));
  EXPECT_TRUE(has("--allow-root"));
  EXPECT_EQ(launch.child.working_directory, "/disk/workspace/app");
  EXPECT_FALSE(launch.child.inherit_environment);
  EXPECT_EQ(launch.child.environment, workspace.environment);
  EXPECT_EQ(launch.protocol, "http");
  EXPECT_EQ(launch.port, 8899);

  // Not root: no --allow-root, and the user is switched to.
  workspace.user.name = "nobody";
  workspace.user.uid = 65534;
  workspace.user.gid = 65534;
  workspace.user.switch_user = true;
  ASSERT_TRUE(prepareIdeLaunch(spec, config, setup, workspace, log, launch, error)) << error;
  EXPECT_EQ(std::count(launch.child.argv.begin(), launch.child.argv.end(), "--allow-root"), 0);
  EXPECT_EQ(launch.child.uid, 65534);
  EXPECT_EQ(launch.child.gid, 65534);
}

TEST(IdeServerTest, CodeServerMustBeInstalled) {
  AgentConfig config;
  config.disk = "/disk";
  config.ide_host = "127.0.0.1";
  SetupLog log;
  GitspaceProcesses processes(log);
  GitspaceSetup setup(config, log, processes, [] { return false; });
  GitspaceSpec spec;
  spec.ide = IdeKind::kVscodeWeb;
  IdeLaunch launch;
  std::string error;
  EXPECT_FALSE(prepareIdeLaunch(spec, config, setup, prepared(), log, launch, error));
  EXPECT_EQ(error, "code-server is not installed on this host");
  config.code_server = "/nonexistent/code-server";
  EXPECT_FALSE(prepareIdeLaunch(spec, config, setup, prepared(), log, launch, error));
  EXPECT_EQ(error, "code-server is not installed on this host");
  config.code_server = "/bin/true";  // any executable stands in
  ASSERT_TRUE(prepareIdeLaunch(spec, config, setup, prepared(), log, launch, error)) << error;
  std::vector<std::string> expected = {
      "/bin/true", "--bind-addr",         "127.0.0.1:8888",         "--auth",
      "none",      "--disable-telemetry", "--disable-update-check", "/disk/workspace/app"};
  EXPECT_EQ(launch.child.argv, expected);
}

TEST(IdeServerTest, SshdConfig) {
  SshdSettings settings;
  settings.listen_host = "::1";
  settings.port = 2222;
  settings.host_key = "/disk/.spacegate/ssh_host_ed25519_key";
  settings.authorized_keys = "/disk/.spacegate/authorized_keys";
  settings.pid_file = "/disk/.spacegate/sshd.pid";
  settings.allow_user = "dev";
  settings.environment = {"PATH=/bin", "GITSPACE_ID=gs-1", "GREETING=hello world", "TRICKY=a\"b"};
  std::string text = sshdConfigText(settings);
  for (const char* line :
       {"ListenAddress [::1]:2222\n", "HostKey /disk/.spacegate/ssh_host_ed25519_key\n",
        "AuthorizedKeysFile /disk/.spacegate/authorized_keys\n",
        "PidFile /disk/.spacegate/sshd.pid\n", "UsePAM no\n", "StrictModes no\n",
        "PasswordAuthentication no\n", "KbdInteractiveAuthentication no\n",
        "PermitRootLogin prohibit-password\n", "AllowTcpForwarding yes\n", "AllowUsers dev\n",
        "SetEnv GITSPACE_ID=\"gs-1\" GREETING=\"hello world\"\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  EXPECT_EQ(text.find("TRICKY"), std::string::npos);  // cannot be quoted safely
  EXPECT_EQ(text.find("SetEnv PATH"), std::string::npos);
  settings.listen_host = "10.0.0.2";
  settings.environment.clear();
  text = sshdConfigText(settings);
  EXPECT_NE(text.find("ListenAddress 10.0.0.2:2222\n"), std::string::npos);
  EXPECT_EQ(text.find("SetEnv"), std::string::npos);
}

TEST(IdeServerTest, ProbeHost) {
  EXPECT_EQ(probeHost("0.0.0.0"), "127.0.0.1");
  EXPECT_EQ(probeHost(""), "127.0.0.1");
  EXPECT_EQ(probeHost("::"), "::1");
  EXPECT_EQ(probeHost("10.1.2.3"), "10.1.2.3");
}

TEST(IdeServerTest, ReadinessProbe) {
  Listener http("HTTP/1.1 302 Found\r\nLocation: /tree\r\nContent-Length: 0\r\n\r\n");
  Listener ssh("SSH-2.0-OpenSSH_9.2p1\r\n");
  Listener silent("");
  int closed = freePort();
  EXPECT_TRUE(ideAnswers("127.0.0.1", http.port(), "http", 1000));
  EXPECT_TRUE(ideAnswers("0.0.0.0", http.port(), "http", 1000));
  EXPECT_TRUE(ideAnswers("127.0.0.1", ssh.port(), "ssh", 1000));
  EXPECT_FALSE(ideAnswers("127.0.0.1", ssh.port(), "http", 500));  // not HTTP
  EXPECT_FALSE(ideAnswers("127.0.0.1", http.port(), "ssh", 500));  // not SSH
  EXPECT_FALSE(ideAnswers("127.0.0.1", silent.port(), "http", 300));
  EXPECT_FALSE(ideAnswers("127.0.0.1", silent.port(), "ssh", 300));
  EXPECT_FALSE(ideAnswers("127.0.0.1", closed, "http", 300));
  EXPECT_FALSE(ideAnswers("127.0.0.1", closed, "ssh", 300));
}

}  // namespace
}  // namespace spacegate
