// MachineNetwork: the network side of the process driver. Each pool has a
// bridge on the host holding the pool subnet's first address; each machine
// has a network namespace ("sg-<machine id>") joined to the bridge by a veth
// pair, with one address of the subnet. Only addresses the runner creates
// are used, and machines reach nothing but the bridge: no NAT, no forwarding
// (the gateway on the host is their only way in).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spacegate {

class MachineNetwork {
 public:
  MachineNetwork(std::string bridge, uint32_t subnet_address, int subnet_prefix)
      : bridge_(std::move(bridge)),
        subnet_address_(subnet_address),
        subnet_prefix_(subnet_prefix) {}

  // Creates the bridge and its address when missing (idempotent).
  bool prepareBridge(std::string& error);
  // The machine's address for `slot` (1-based): the subnet's slot+1-th host.
  std::string addressFor(int slot) const;
  std::string gatewayAddress() const;

  static std::string namespaceName(const std::string& machine_id) { return "sg-" + machine_id; }
  // The host end of the machine's veth pair ("sgv" + the id's hex part).
  static std::string hostInterfaceName(const std::string& machine_id);

  // Namespace, veth pair, address, routes. Idempotent: a half-made network
  // from an interrupted attempt is removed first.
  bool create(const std::string& machine_id, int slot, std::string& error);
  // Removes the namespace and the veth pair; true when both are gone.
  bool destroy(const std::string& machine_id, std::string& error);
  bool exists(const std::string& machine_id) const;
  // Machine ids with a namespace on this host (every pool's).
  static std::vector<std::string> listNamespaces();

  // True when this process may create network namespaces (root, and the
  // kernel lets it); `reason` says why not.
  static bool namespacesAvailable(std::string& reason);

 private:
  std::string bridge_;
  uint32_t subnet_address_;
  int subnet_prefix_;
};

}  // namespace spacegate
