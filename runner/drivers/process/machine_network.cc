#include "runner/drivers/process/machine_network.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "runner/process/child_process.h"
#include "runner/runner_config.h"

namespace spacegate {

namespace {

constexpr int kIpTimeoutMs = 20'000;

bool ip(const std::vector<std::string>& arguments, std::string& error) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return runCommand(argv, kIpTimeoutMs, error);
}

bool linkExists(const std::string& name) {
  return std::filesystem::exists("/sys/class/net/" + name);
}

}  // namespace

std::string MachineNetwork::hostInterfaceName(const std::string& machine_id) {
  // Interface names hold 15 bytes: "sgv" + the 8 hex digits of "m-xxxxxxxx".
  std::string hex = machine_id.size() > 2 ? machine_id.substr(2) : machine_id;
  return "sgv" + hex.substr(0, 12);
}

std::string MachineNetwork::addressFor(int slot) const {
  return formatIpv4(subnet_address_ + 1 + static_cast<uint32_t>(slot));
}

std::string MachineNetwork::gatewayAddress() const {
  return formatIpv4(subnet_address_ + 1);
}

bool MachineNetwork::namespacesAvailable(std::string& reason) {
  if (::geteuid() != 0) {
    reason = "the runner is not root: it cannot create network namespaces";
    return false;
  }
  std::string error;
  if (!runCommand({"unshare", "--net", "--mount", "--pid", "--uts", "--ipc", "--fork", "true"},
                  kIpTimeoutMs, error)) {
    reason = "namespaces are not allowed here: " + error;
    return false;
  }
  if (!runCommand({"ip", "-V"}, kIpTimeoutMs, error)) {
    reason = "iproute2 (`ip`) is missing: " + error;
    return false;
  }
  return true;
}

bool MachineNetwork::prepareBridge(std::string& error) {
  std::string prefix = "/" + std::to_string(subnet_prefix_);
  if (!linkExists(bridge_) && !ip({"link", "add", "name", bridge_, "type", "bridge"}, error)) {
    return false;
  }
  return ip({"addr", "replace", gatewayAddress() + prefix, "dev", bridge_}, error) &&
         ip({"link", "set", bridge_, "up"}, error);
}

bool MachineNetwork::exists(const std::string& machine_id) const {
  return std::filesystem::exists("/run/netns/" + namespaceName(machine_id));
}

std::vector<std::string> MachineNetwork::listNamespaces() {
  std::vector<std::string> ids;
  std::error_code failure;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", failure)) {
    std::string name = entry.path().filename();
    if (name.starts_with("sg-m-")) ids.push_back(name.substr(3));
  }
  return ids;
}

bool MachineNetwork::create(const std::string& machine_id, int slot, std::string& error) {
  if (!destroy(machine_id, error)) return false;
  std::string netns = namespaceName(machine_id);
  std::string host_side = hostInterfaceName(machine_id);
  std::string prefix = "/" + std::to_string(subnet_prefix_);
  bool made = ip({"netns", "add", netns}, error) &&
              ip({"link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", netns},
                 error) &&
              ip({"link", "set", host_side, "master", bridge_, "up"}, error) &&
              ip({"-n", netns, "addr", "add", addressFor(slot) + prefix, "dev", "eth0"}, error) &&
              ip({"-n", netns, "link", "set", "eth0", "up"}, error) &&
              ip({"-n", netns, "link", "set", "lo", "up"}, error) &&
              ip({"-n", netns, "route", "add", "default", "via", gatewayAddress()}, error);
  if (!made) {
    std::string ignored;
    destroy(machine_id, ignored);
    return false;
  }
  return true;
}

bool MachineNetwork::destroy(const std::string& machine_id, std::string& error) {
  std::string netns = namespaceName(machine_id);
  std::string host_side = hostInterfaceName(machine_id);
  // Deleting the namespace deletes the veth end inside it, and with it the
  // host end; a host end left from a failed create is deleted on its own.
  if (exists(machine_id) && !ip({"netns", "del", netns}, error)) return false;
  if (linkExists(host_side) && !ip({"link", "del", host_side}, error)) return false;
  return true;
}

}  // namespace spacegate
