#include "control/server/desired_routes.h"

namespace spacegate {

namespace {

std::string authority(const std::string& host, const InfraRecord& infra) {
  bool default_port = (infra.url_scheme == "http" && infra.gateway_port == 80) ||
                      (infra.url_scheme == "https" && infra.gateway_port == 443);
  return default_port ? host : host + ":" + std::to_string(infra.gateway_port);
}

std::string basePath(const GitspaceRecord& gitspace) {
  return "/gs/" + gitspace.id;
}

}  // namespace

std::string upstreamAddress(const std::string& address, int port) {
  if (address.find(':') != std::string::npos) {
    return "[" + address + "]:" + std::to_string(port);
  }
  return address + ":" + std::to_string(port);
}

std::string gitspaceUrl(const GitspaceRecord& gitspace, const InfraRecord& infra) {
  return infra.url_scheme + "://" + authority(gitspace.id + "." + infra.gateway_domain, infra) +
         basePath(gitspace) + "/";
}

std::string gitspacePathUrl(const GitspaceRecord& gitspace, const InfraRecord& infra) {
  return infra.url_scheme + "://" + authority(infra.gateway_domain, infra) + basePath(gitspace) +
         "/";
}

std::string gitspaceHost(const GitspaceRecord& gitspace, const InfraRecord& infra) {
  return gitspace.id + "." + infra.gateway_domain;
}

std::string gatewayUrl(const InfraRecord& infra) {
  return infra.url_scheme + "://" + authority(infra.gateway_domain, infra);
}

std::string tunnelWebSocketUrl(const GitspaceRecord& gitspace, const InfraRecord& infra, int port) {
  std::string scheme = infra.url_scheme == "https" ? "wss" : "ws";
  return scheme + "://" + authority(gitspaceHost(gitspace, infra), infra) + "/.spacegate/tunnel/" +
         std::to_string(port);
}

std::vector<nlohmann::json> desiredRoutesFor(const GitspaceRecord& gitspace,
                                             const InfraRecord& infra) {
  std::vector<nlohmann::json> routes;
  const std::string& domain = infra.gateway_domain;
  const std::string& gs = gitspace.id;
  GitspaceState state = gitspace.state;
  // The agent route exists while the Gitspace has a machine that a task may
  // need to reach: from the moment the delegate knows it during a start,
  // through running, to the end of a stop or a clean-up.
  bool machine_phase = state == GitspaceState::kStarting || state == GitspaceState::kRunning ||
                       state == GitspaceState::kStopping || state == GitspaceState::kCleaning;
  if (machine_phase && gitspace.hasMachine()) {
    routes.push_back({{"id", "agent--" + gs},
                      {"host", "agent--" + gs + "." + domain},
                      {"path_prefix", "/"},
                      {"strip_prefix", false},
                      {"upstream", upstreamAddress(gitspace.address, gitspace.agent_port)},
                      {"protocol", "http1"},
                      {"gitspace", gs},
                      {"access", "agent"}});
  }
  if (state != GitspaceState::kRunning || gitspace.address.empty() || gitspace.ide_port <= 0) {
    return routes;
  }
  std::string ide_upstream = upstreamAddress(gitspace.address, gitspace.ide_port);
  // Jupyter serves under its base path /gs/<gs>/ on both hosts. code-server
  // has no base path: both of its routes take the prefix off (its pages use
  // relative links), so the same URLs work for it.
  bool strip = gitspace.ide == "vscode-web";
  auto owner_route = [&](std::string id, std::string host, std::string prefix, bool strip_prefix,
                         std::string upstream) {
    return nlohmann::json{{"id", std::move(id)},
                          {"host", std::move(host)},
                          {"path_prefix", std::move(prefix)},
                          {"strip_prefix", strip_prefix},
                          {"upstream", std::move(upstream)},
                          {"protocol", "http1"},
                          {"gitspace", gs},
                          {"owner", gitspace.owner},
                          {"access", "owner"}};
  };
  nlohmann::json ide_route =
      owner_route(gs, gs + "." + domain, strip ? basePath(gitspace) : "/", strip, ide_upstream);
  // SSH reaches the machine's sshd through the IDE host: CONNECT or the
  // WebSocket tunnel endpoint, with an ssh token (docs/tunnels.md).
  if (gitspace.ssh_port > 0) ide_route["tunnel_ports"] = nlohmann::json::array({gitspace.ssh_port});
  routes.push_back(std::move(ide_route));
  for (int port : gitspace.forwarded_ports) {
    routes.push_back(owner_route(gs + "--" + std::to_string(port),
                                 std::to_string(port) + "--" + gs + "." + domain, "/", false,
                                 upstreamAddress(gitspace.address, port)));
  }
  routes.push_back(owner_route(gs + "--path", domain, basePath(gitspace), strip, ide_upstream));
  return routes;
}

}  // namespace spacegate
