// AgentClient: calls to one machine's agent (runner/agent/README.md), only
// ever through a gateway: to the gateway's traffic port (`data_url`) with
// `Host: agent--<gs>.<domain>`, which the gateway routes to the agent over
// the route the control plane made for it (`access: agent`), and the task's
// agent token as the bearer token. Machines live in a network that only the
// gateway reaches; the delegate never dials an agent's own address.
//
// Gateways are tried in the configured order: the next one only when a
// gateway cannot be reached at all (any HTTP answer is the answer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/api_call.h"
#include "delegate/delegate_config.h"

namespace spacegate {

class AgentClient {
 public:
  AgentClient(std::vector<GatewayConfig> gateways, std::string agent_host, std::string agent_token,
              uint64_t timeout_ms)
      : gateways_(std::move(gateways)),
        agent_host_(std::move(agent_host)),
        agent_token_(std::move(agent_token)),
        timeout_ms_(timeout_ms) {}

  // One call; logged with the gateway, the host and the status (the
  // gateway's access log has the same line on its side).
  ApiReply call(const std::string& method, const std::string& target,
                const nlohmann::json& body = nullptr) const;
  // As call(), with another timeout (stop and delete answer when done).
  ApiReply callWithTimeout(const std::string& method, const std::string& target,
                           const nlohmann::json& body, uint64_t timeout_ms) const;

  const std::string& host() const { return agent_host_; }

 private:
  std::vector<GatewayConfig> gateways_;
  std::string agent_host_;
  std::string agent_token_;
  uint64_t timeout_ms_;
};

}  // namespace spacegate
