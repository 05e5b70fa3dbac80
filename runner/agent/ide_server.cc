// sshd is the one IDE that does not run as the user: it must be root to let
// the user log in. Its files live in the agent's own folder (0700); the host
// key is made once per machine, so a client that trusted it keeps trusting
// it across restarts.
#include "runner/agent/ide_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "service/service_client.h"

namespace spacegate {

namespace {

std::string hostPort(const std::string& host, int port) {
  bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// A value sshd_config reads back as one argument.
std::string sshdQuoted(std::string text) {
  std::string escaped;
  for (char c : text) {
    if (c == '%') escaped += '%';  // sshd expands %-tokens in some paths
    escaped += c;
  }
  return escaped.find_first_of(" \t") == std::string::npos ? escaped : "\"" + escaped + "\"";
}

bool writeFile(const std::string& path, const std::string& text, mode_t mode, std::string& error) {
  std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  ::fchmod(fd, mode);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    return false;
  }
  return true;
}

bool prepareSshd(const GitspaceSpec& spec, const AgentConfig& config,
                 const PreparedWorkspace& prepared, SetupLog& log, IdeLaunch& launch,
                 std::string& error) {
  const std::string sshd = "/usr/sbin/sshd";
  if (::access(sshd.c_str(), X_OK) != 0) {
    error = "sshd is not installed on this host (" + sshd + ")";
    return false;
  }
  std::string folder = agentFolder(config);
  SshdSettings settings;
  settings.listen_host = config.ide_host;
  settings.port = config.ssh_port;
  settings.host_key = folder + "/ssh_host_ed25519_key";
  settings.authorized_keys = folder + "/authorized_keys";
  settings.pid_file = folder + "/sshd.pid";
  settings.allow_user = prepared.user.name;
  settings.environment = prepared.environment;
  if (::access(settings.host_key.c_str(), F_OK) != 0) {
    log.note("generating the SSH host key " + settings.host_key);
    std::string keygen_error;
    if (!runCommand({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "spacegate-agent", "-f",
                     settings.host_key},
                    30'000, keygen_error)) {
      error = "ssh-keygen: " + keygen_error;
      return false;
    }
  }
  if (spec.user.ssh_authorized_keys.empty()) {
    log.note("no SSH keys in the spec: nobody can log in over SSH yet");
  }
  if (!writeAuthorizedKeys(spec, config, error)) return false;
  std::string config_path = folder + "/sshd_config";
  if (!writeFile(config_path, sshdConfigText(settings), 0600, error)) return false;
  // sshd refuses to start without its privilege separation folder.
  if (::mkdir("/run/sshd", 0755) != 0 && errno != EEXIST) {
    error = std::string("/run/sshd: ") + std::strerror(errno);
    return false;
  }
  launch.child.argv = {sshd, "-D", "-e", "-f", config_path};
  launch.child.environment = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "LANG=C.UTF-8"};
  launch.child.inherit_environment = false;
  launch.child.working_directory = "/";
  log.note("sshd runs as root (it must, to log the user in); logins are for " + prepared.user.name +
           " with the spec's keys only");
  return true;
}

}  // namespace

bool writeAuthorizedKeys(const GitspaceSpec& spec, const AgentConfig& config, std::string& error) {
  std::string keys;
  for (const std::string& key : spec.user.ssh_authorized_keys) keys += key + "\n";
  return writeFile(agentFolder(config) + "/authorized_keys", keys, 0644, error);
}

int idePort(IdeKind kind, const AgentConfig& config) {
  return kind == IdeKind::kSsh ? config.ssh_port : config.ide_port;
}

const char* ideProtocol(IdeKind kind) {
  return kind == IdeKind::kSsh ? "ssh" : "http";
}

std::string sshdConfigText(const SshdSettings& settings) {
  std::string text =
      "# Written by spacegate-agent at every start of the Gitspace's SSH server.\n"
      "ListenAddress " +
      hostPort(settings.listen_host, settings.port) +
      "\n"
      "HostKey " +
      sshdQuoted(settings.host_key) +
      "\n"
      "AuthorizedKeysFile " +
      sshdQuoted(settings.authorized_keys) +
      "\n"
      "PidFile " +
      sshdQuoted(settings.pid_file) +
      "\n"
      "UsePAM no\n"
      "StrictModes no\n"
      "PasswordAuthentication no\n"
      "KbdInteractiveAuthentication no\n"
      "PermitRootLogin prohibit-password\n"
      "AllowTcpForwarding yes\n"
      "Subsystem sftp internal-sftp\n";
  if (!settings.allow_user.empty()) text += "AllowUsers " + settings.allow_user + "\n";
  // The session gets the Gitspace's variables (PATH, HOME and USER are
  // sshd's own to set). One SetEnv line: sshd takes only the first.
  std::string variables;
  for (const std::string& entry : settings.environment) {
    size_t equals = entry.find('=');
    std::string name = entry.substr(0, equals);
    std::string value = entry.substr(equals + 1);
    if (name == "PATH" || name == "HOME" || name == "USER" || name == "SHELL") continue;
    bool safe = value.find_first_of("\"\\%\n\r") == std::string::npos;
    if (safe) variables += " " + name + "=\"" + value + "\"";
  }
  if (!variables.empty()) text += "SetEnv" + variables + "\n";
  return text;
}

bool prepareIdeLaunch(const GitspaceSpec& spec, const AgentConfig& config,
                      const GitspaceSetup& setup, const PreparedWorkspace& prepared, SetupLog& log,
                      IdeLaunch& launch, std::string& error) {
  launch = IdeLaunch{};
  launch.host = config.ide_host;
  launch.port = idePort(spec.ide, config);
  launch.protocol = ideProtocol(spec.ide);
  switch (spec.ide) {
    case IdeKind::kJupyter: {
      // -I: the clone is the working folder, and a repository holding a
      // notebook.py (or any module Jupyter imports) must not shadow it.
      std::vector<std::string> argv = {
          "/usr/bin/python3", "-I", "-m", "notebook", "--no-browser", "--ip=" + config.ide_host,
          "--port=" + std::to_string(launch.port), "--port-retries=0",
          "--NotebookApp.token=", "--NotebookApp.password=", "--NotebookApp.allow_origin=*",
          // Reached through the gateway under the Gitspace's
          // own host name, never "localhost".
          "--NotebookApp.allow_remote_access=True",
          "--NotebookApp.notebook_dir=" + prepared.workspace,
          "--NotebookApp.base_url=" + spec.base_path};
      if (prepared.user.isRoot()) argv.push_back("--allow-root");
      launch.child = setup.commandSpec(std::move(argv), prepared);
      return true;
    }
    case IdeKind::kVscodeWeb: {
      if (config.code_server.empty() || ::access(config.code_server.c_str(), X_OK) != 0) {
        error = "code-server is not installed on this host";
        return false;
      }
      launch.child = setup.commandSpec(
          {config.code_server, "--bind-addr", hostPort(config.ide_host, launch.port), "--auth",
           "none", "--disable-telemetry", "--disable-update-check", prepared.workspace},
          prepared);
      return true;
    }
    case IdeKind::kSsh: return prepareSshd(spec, config, prepared, log, launch, error);
  }
  error = "unknown IDE";
  return false;
}

std::string probeHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::" || host == "[::]") return "::1";
  return host;
}

bool ideAnswers(const std::string& host, int port, const std::string& protocol, int timeout_ms) {
  std::string target = probeHost(host);
  if (protocol == "http") {
    ServiceClient client("", "http://" + hostPort(target, port), "");
    client.setTimeoutMs(timeout_ms);
    client.setUserAgent("spacegate-agent (readiness probe)");
    ServiceReply reply;
    std::string error;
    return client.call("GET", "/", "", reply, error) && reply.status >= 100;
  }
  // SSH: the server speaks first; its banner starts "SSH-2.0-".
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (::getaddrinfo(target.c_str(), std::to_string(port).c_str(), &hints, &results) != 0) {
    return false;
  }
  bool answered = false;
  int fd = ::socket(results->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0) {
    int result = ::connect(fd, results->ai_addr, results->ai_addrlen);
    pollfd entry{fd, POLLOUT, 0};
    if (result == 0 || (errno == EINPROGRESS && ::poll(&entry, 1, timeout_ms) > 0)) {
      int socket_error = 0;
      socklen_t size = sizeof socket_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &size);
      std::string banner;
      entry = pollfd{fd, POLLIN, 0};
      while (socket_error == 0 && banner.size() < 8 && ::poll(&entry, 1, timeout_ms) > 0) {
        char buffer[8];
        ssize_t got = ::read(fd, buffer, 8 - banner.size());
        if (got <= 0) break;
        banner.append(buffer, static_cast<size_t>(got));
      }
      answered = banner == "SSH-2.0-";
    }
    ::close(fd);
  }
  ::freeaddrinfo(results);
  return answered;
}

}  // namespace spacegate
