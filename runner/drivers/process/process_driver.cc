#include "runner/drivers/process/process_driver.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "runner/process/child_process.h"

namespace spacegate {

namespace fs = std::filesystem;

namespace {

// Grace for the agent to stop its IDE and save its state on SIGTERM.
constexpr int kStopGraceMs = 10'000;

std::string shellQuote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

// State of a pid from /proc: alive (running, sleeping...), or gone/zombie.
bool pidAlive(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

std::string readCommandLine(pid_t pid) {
  std::ifstream stream("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(stream)), {});
  for (char& c : text) {
    if (c == '\0') c = ' ';
  }
  return text;
}

bool writePrivateFile(const std::string& path, const std::string& contents, std::string& error) {
  std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  bool ok = ::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = path + ": cannot write";
    return false;
  }
  return true;
}

}  // namespace

ProcessDriver::ProcessDriver(const PoolConfig& pool, std::string state_dir,
                             std::string agent_binary, std::string code_server)
    : pool_(pool),
      state_dir_(std::move(state_dir)),
      agent_binary_(std::move(agent_binary)),
      code_server_(std::move(code_server)),
      network_(pool.process.bridge, pool.process.subnet_address, pool.process.subnet_prefix) {}

std::string ProcessDriver::machineFolder(const std::string& id) const {
  return state_dir_ + "/pools/" + pool_.name + "/machines/" + id;
}

bool ProcessDriver::prepare(std::string& error) {
  std::error_code failure;
  fs::create_directories(state_dir_ + "/pools/" + pool_.name + "/machines", failure);
  if (failure) {
    error = state_dir_ + ": " + failure.message();
    return false;
  }
  if (::access(agent_binary_.c_str(), X_OK) != 0) {
    error = agent_binary_ + ": the agent binary is missing or not executable";
    return false;
  }
  std::string reason;
  if (pool_.process.sandbox == SandboxMode::kProcesses) {
    namespaces_ = false;
    fallback_reason_ = "sandbox: processes in the pool's config";
  } else if (MachineNetwork::namespacesAvailable(reason)) {
    namespaces_ = true;
  } else if (pool_.process.sandbox == SandboxMode::kNamespaces) {
    error = "pool " + pool_.name + ": sandbox: namespaces, but " + reason;
    return false;
  } else {
    namespaces_ = false;
    fallback_reason_ = reason;
  }
  if (namespaces_ && !network_.prepareBridge(error)) {
    error = "pool " + pool_.name + ": bridge " + pool_.process.bridge + ": " + error;
    return false;
  }
  if (::geteuid() == 0) limits_.detect();
  if (!namespaces_) {
    logEvent(LogLevel::kWarning,
             "no namespaces: machines are plain child processes on loopback ports")
        .with("pool", pool_.name)
        .with("reason", fallback_reason_)
        .emit();
    warnIfPortsAreEphemeral();
  }
  return true;
}

std::string ProcessDriver::isolation() const {
  std::string limits = limits_.available() ? limits_.description() : "rlimits only";
  if (namespaces_) {
    return "namespaces (network on bridge " + pool_.process.bridge + " " +
           pool_.process.subnet_text + ", mount, pid, uts, ipc); " + limits;
  }
  return "processes on 127.0.0.1, no namespaces (" + fallback_reason_ + "); " + limits;
}

MachineEndpoint ProcessDriver::endpointFor(int slot) const {
  MachineEndpoint endpoint;
  if (namespaces_) {
    endpoint.address = network_.addressFor(slot);
    endpoint.agent_port = kDefaultAgentPort;
    endpoint.ide_port = 8888;
    endpoint.ssh_port = 22;
  } else {
    int base = pool_.process.port_base + (slot - 1) * kLoopbackPortsPerMachine;
    endpoint.address = "127.0.0.1";
    endpoint.agent_port = base;
    endpoint.ide_port = base + 1;
    endpoint.ssh_port = base + 2;
  }
  return endpoint;
}

bool ProcessDriver::create(const MachineSpec& spec, std::string& error) {
  std::string folder = machineFolder(spec.id);
  std::error_code failure;
  fs::create_directories(folder, failure);
  if (failure) {
    error = folder + ": " + failure.message();
    return false;
  }
  // Passable, not listable: a Gitspace user other than root reaches disk/
  // through it; agent.json and the logs stay 0600.
  ::chmod(folder.c_str(), 0711);
  if (!spec.kept_disk.empty() && fs::exists(spec.kept_disk) && !fs::exists(folder + "/disk")) {
    fs::rename(spec.kept_disk, folder + "/disk", failure);
    if (failure) {
      error = spec.kept_disk + ": cannot move the kept disk in: " + failure.message();
      return false;
    }
  }
  fs::create_directories(folder + "/disk", failure);
  if (failure) {
    error = folder + "/disk: " + failure.message();
    return false;
  }
  if (namespaces_ && !network_.create(spec.id, spec.slot, error)) return false;
  MachineLimits limits;
  limits.memory_bytes = pool_.process.memory_mib << 20;
  limits.cpus = pool_.process.cpus;
  limits.max_processes = pool_.process.max_processes;
  if (limits_.available() && !limits_.create(spec.id, limits, error)) return false;
  return boot(spec, error);
}

bool ProcessDriver::start(const MachineSpec& spec, std::string& error) {
  if (livePid(spec.id) != 0) return true;
  if (!fs::exists(machineFolder(spec.id) + "/disk")) {
    error = "machine " + spec.id + " has no disk on this host";
    return false;
  }
  if (namespaces_ && !network_.exists(spec.id) && !network_.create(spec.id, spec.slot, error)) {
    return false;
  }
  return boot(spec, error);
}

bool ProcessDriver::boot(const MachineSpec& spec, std::string& error) {
  std::string folder = machineFolder(spec.id);
  MachineEndpoint endpoint = endpointFor(spec.slot);
  AgentConfig agent;
  agent.machine_id = spec.id;
  agent.listen =
      (namespaces_ ? endpoint.address : "127.0.0.1") + ":" + std::to_string(endpoint.agent_port);
  agent.runner_secret = spec.runner_secret;
  agent.gitspace_id = spec.gitspace_id;
  agent.keys = spec.control_plane_keys;
  agent.disk = folder + "/disk";
  agent.ide_host = namespaces_ ? "0.0.0.0" : "127.0.0.1";
  agent.ide_port = endpoint.ide_port;
  agent.ssh_port = endpoint.ssh_port;
  agent.code_server = code_server_;
  agent.sandboxed = namespaces_;
  if (!writePrivateFile(folder + "/agent.json", agentConfigToJson(agent), error)) return false;

  // The launcher joins the machine's control groups before it becomes the
  // machine, so that nothing the machine ever starts is outside them.
  std::string script;
  for (const std::string& file : limits_.procsFiles(spec.id)) {
    script += "echo $$ > " + shellQuote(file) + " || exit 121\n";
  }
  std::string agent_command =
      shellQuote(agent_binary_) + " --config " + shellQuote(folder + "/agent.json");
  if (namespaces_) {
    // `ip netns exec` enters the network namespace; unshare makes the
    // rest, forks the agent as PID 1 with its own /proc, and kills it if
    // unshare itself is killed.
    script += "exec ip netns exec " + shellQuote(MachineNetwork::namespaceName(spec.id)) +
              " unshare --mount --pid --uts --ipc --fork --kill-child --mount-proc"
              " --propagation private " +
              agent_command + "\n";
  } else {
    script += "exec " + agent_command + "\n";
  }
  int log_fd =
      ::open((folder + "/boot.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    error = folder + "/boot.log: " + std::strerror(errno);
    return false;
  }
  ChildSpec child;
  child.argv = {"/bin/sh", "-c", script};
  child.stdout_fd = log_fd;
  child.stderr_fd = log_fd;
  child.working_directory = folder;
  child.max_open_files = pool_.process.max_open_files;
  child.new_session = true;
  child.inherit_environment = false;
  child.environment = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "LANG=C.UTF-8", "HOME=/root"};
  pid_t pid = ChildReaper::instance().spawn(child, error);
  ::close(log_fd);
  if (pid < 0) return false;
  std::string ignored;
  writePrivateFile(folder + "/machine.pid", std::to_string(pid) + "\n", ignored);
  return true;
}

pid_t ProcessDriver::livePid(const std::string& id) const {
  std::ifstream stream(machineFolder(id) + "/machine.pid");
  pid_t pid = 0;
  if (!(stream >> pid) || !pidAlive(pid)) return 0;
  // A pid can be reused after a reboot: it must still be this machine's.
  if (readCommandLine(pid).find(id) == std::string::npos) return 0;
  return pid;
}

bool ProcessDriver::processAlive(const std::string& id, std::string& reason) {
  if (livePid(id) != 0) return true;
  std::string tail = bootLog(id, 400);
  reason = "the machine's first process is not running";
  if (!tail.empty()) {
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    size_t line = tail.rfind('\n');
    reason += " (boot log: " + tail.substr(line == std::string::npos ? 0 : line + 1) + ")";
  }
  return false;
}

bool ProcessDriver::stop(const std::string& id, std::string& error) {
  pid_t pid = livePid(id);
  if (pid != 0) {
    // SIGTERM to the launcher's group reaches the agent (same group); the
    // agent stops its IDE and saves its state.
    ChildReaper::signalGroup(pid, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kStopGraceMs);
    while (pidAlive(pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (pidAlive(pid)) ChildReaper::signalGroup(pid, SIGKILL);
  }
  // Whatever is left in the machine's groups (children that left the
  // agent's session) goes now.
  if (limits_.available()) {
    for (pid_t left : limits_.processes(id)) ::kill(left, SIGKILL);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!limits_.processes(id).empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!limits_.processes(id).empty()) {
      error = "machine " + id + ": processes are left after SIGKILL";
      return false;
    }
  } else if (pid != 0 && pidAlive(pid)) {
    error = "machine " + id + ": the first process did not stop";
    return false;
  }
  std::error_code ignored;
  fs::remove(machineFolder(id) + "/machine.pid", ignored);
  return true;
}

bool ProcessDriver::destroy(const std::string& id, const std::string& keep_disk_as,
                            std::string& error) {
  std::string folder = machineFolder(id);
  if (!stop(id, error)) return false;
  if (limits_.available() && !limits_.destroy(id, 5000, error)) return false;
  if (namespaces_ && !network_.destroy(id, error)) return false;
  std::error_code failure;
  if (!keep_disk_as.empty() && fs::exists(folder + "/disk")) {
    fs::create_directories(fs::path(keep_disk_as).parent_path(), failure);
    fs::remove_all(keep_disk_as, failure);
    fs::rename(folder + "/disk", keep_disk_as, failure);
    if (failure) {
      error = keep_disk_as + ": cannot keep the disk: " + failure.message();
      return false;
    }
  }
  fs::remove_all(folder, failure);
  if (failure) {
    error = folder + ": " + failure.message();
    return false;
  }
  return true;
}

void ProcessDriver::warnIfPortsAreEphemeral() const {
  // On loopback the machines share the host's ports. The kernel hands ports
  // of its ephemeral range to outgoing connections (and to bind(0)), so a
  // pool inside that range can find a machine's port taken by anyone's
  // connection: the agent then cannot listen and the machine never boots.
  std::ifstream range_file("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0, last = 0;
  if (!(range_file >> first >> last)) return;
  int pool_first = pool_.process.port_base;
  int pool_last = pool_.process.port_base + pool_.max * kLoopbackPortsPerMachine - 1;
  if (pool_first <= last && first <= pool_last) {
    logEvent(LogLevel::kWarning,
             "the pool's loopback ports overlap the kernel's ephemeral port range: any "
             "outgoing connection may take a machine's port; move process.port_base below " +
                 std::to_string(first))
        .with("pool", pool_.name)
        .with("ports", std::to_string(pool_first) + "-" + std::to_string(pool_last))
        .with("ephemeral", std::to_string(first) + "-" + std::to_string(last))
        .emit();
  }
}

std::vector<DriverMachine> ProcessDriver::list() {
  std::vector<DriverMachine> machines;
  std::error_code failure;
  for (const auto& entry :
       fs::directory_iterator(state_dir_ + "/pools/" + pool_.name + "/machines", failure)) {
    if (!entry.is_directory()) continue;
    DriverMachine machine;
    machine.id = entry.path().filename();
    machine.running = livePid(machine.id) != 0;
    machines.push_back(std::move(machine));
  }
  return machines;
}

std::string ProcessDriver::bootLog(const std::string& id, size_t max_bytes) {
  std::ifstream stream(machineFolder(id) + "/boot.log", std::ios::binary);
  if (!stream) return {};
  stream.seekg(0, std::ios::end);
  std::streamoff size = stream.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                             ? size - static_cast<std::streamoff>(max_bytes)
                             : 0;
  stream.seekg(start);
  return std::string((std::istreambuf_iterator<char>(stream)), {});
}

}  // namespace spacegate
