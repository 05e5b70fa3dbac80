#include "delegate/agent_client.h"

#include "common/log.h"

namespace spacegate {

ApiReply AgentClient::call(const std::string& method, const std::string& target,
                           const nlohmann::json& body) const {
  return callWithTimeout(method, target, body, timeout_ms_);
}

ApiReply AgentClient::callWithTimeout(const std::string& method, const std::string& target,
                                      const nlohmann::json& body, uint64_t timeout_ms) const {
  ApiReply reply;
  reply.error = "no gateway configured";
  for (const GatewayConfig& gateway : gateways_) {
    ServiceEndpoint data{gateway.data_url, "", "", agent_token_};
    ServiceClient client = makeServiceClient(data, timeout_ms);
    client.setHostHeader(agent_host_);
    // The setup log can be large (the agent keeps up to 8 MiB).
    client.setMaxReplySize(16u << 20);
    reply = callApi(client, method, target, body);
    logEvent(reply.reached() ? LogLevel::kDebug : LogLevel::kWarning, "agent call")
        .with("gateway", gateway.name)
        .with("data_url", gateway.data_url)
        .with("host", agent_host_)
        .with("method", method)
        .with("target", target)
        .with("status", static_cast<int64_t>(reply.status))
        .with("error", reply.reached() ? std::string() : reply.error)
        .emit();
    if (reply.reached()) return reply;
    reply.error = gateway.name + " (" + gateway.data_url + "): " + reply.error;
  }
  return reply;
}

}  // namespace spacegate
