#include "control_api/control_api.h"

#include <charconv>
#include <map>

#include "route/route_json.h"

namespace spacegate {

namespace {

ControlResponse jsonResponse(int status, const nlohmann::json& body) {
  ControlResponse response;
  response.status = status;
  // Bytes that are not UTF-8 (echoed from a bad body in an error message)
  // are replaced, never thrown about.
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return response;
}

ControlResponse methodNotAllowed(std::string allow) {
  ControlResponse response = ControlApi::errorResponse(405, "method not allowed");
  response.allow = std::move(allow);
  return response;
}

// ?version=N (0 when absent); false when present but not a number.
bool versionFromQuery(const std::string& query, uint64_t& version) {
  version = 0;
  std::string_view rest = query;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (!pair.starts_with("version=")) continue;
    std::string_view number = pair.substr(8);
    auto [end, code] = std::from_chars(number.data(), number.data() + number.size(), version);
    return code == std::errc() && end == number.data() + number.size() && version > 0;
  }
  return true;
}

std::string formatUnixMs(uint64_t unix_ms) {
  time_t seconds = static_cast<time_t>(unix_ms / 1000);
  struct tm parts;
  gmtime_r(&seconds, &parts);
  char text[40];
  size_t length = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
  snprintf(text + length, sizeof text - length, ".%03uZ", static_cast<unsigned>(unix_ms % 1000));
  return text;
}

void appendMetric(std::string& out, std::string_view name, std::string_view labels, double value) {
  out.append(name);
  if (!labels.empty()) {
    out.push_back('{');
    out.append(labels);
    out.push_back('}');
  }
  out.push_back(' ');
  char text[32];
  auto end = std::to_chars(text, text + sizeof text, value).ptr;
  out.append(text, end);
  out.push_back('\n');
}

void appendHelp(std::string& out, std::string_view name, std::string_view type,
                std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

const char* const kStatusClasses[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

WorkerCountersSnapshot sumCounters(const std::vector<WorkerCountersSnapshot>& workers) {
  WorkerCountersSnapshot total;
  for (const auto& worker : workers) {
    total.connections_accepted += worker.connections_accepted;
    total.client_connections_open += worker.client_connections_open;
    total.upstream_connections_open += worker.upstream_connections_open;
    total.tunnels_open += worker.tunnels_open;
    total.tunnels_opened += worker.tunnels_opened;
    total.tunnels_idle_closed += worker.tunnels_idle_closed;
    total.tunnels_closed += worker.tunnels_closed;
    total.tunnel_bytes_spliced += worker.tunnel_bytes_spliced;
    total.tunnel_bytes_copied += worker.tunnel_bytes_copied;
    total.connections_refused_descriptors += worker.connections_refused_descriptors;
    total.tls_handshakes += worker.tls_handshakes;
    total.tls_handshake_errors += worker.tls_handshake_errors;
    total.tls_resumptions += worker.tls_resumptions;
    total.http2_connections += worker.http2_connections;
    total.http2_streams += worker.http2_streams;
    total.http2_streams_reset += worker.http2_streams_reset;
    total.http2_goaway_sent += worker.http2_goaway_sent;
    total.http2_flood_closes += worker.http2_flood_closes;
    for (int i = 0; i < 6; ++i) total.requests_by_class[i] += worker.requests_by_class[i];
    total.bytes_in += worker.bytes_in;
    total.bytes_out += worker.bytes_out;
    total.upstream_pool_hits += worker.upstream_pool_hits;
    total.upstream_pool_misses += worker.upstream_pool_misses;
    total.connections_closed_by_route_update += worker.connections_closed_by_route_update;
  }
  return total;
}

nlohmann::json countersToJson(const WorkerCountersSnapshot& counters) {
  nlohmann::json requests = nlohmann::json::object();
  for (int i = 0; i < 6; ++i) requests[kStatusClasses[i]] = counters.requests_by_class[i];
  return {{"connections_accepted", counters.connections_accepted},
          {"client_connections_open", counters.client_connections_open},
          {"upstream_connections_open", counters.upstream_connections_open},
          {"tunnels_open", counters.tunnels_open},
          {"tunnels_opened", counters.tunnels_opened},
          {"tunnels_idle_closed", counters.tunnels_idle_closed},
          {"tunnels_closed", counters.tunnels_closed},
          {"tunnel_bytes_spliced", counters.tunnel_bytes_spliced},
          {"tunnel_bytes_copied", counters.tunnel_bytes_copied},
          {"connections_refused_descriptors", counters.connections_refused_descriptors},
          {"tls_handshakes", counters.tls_handshakes},
          {"tls_handshake_errors", counters.tls_handshake_errors},
          {"tls_resumptions", counters.tls_resumptions},
          {"http2_connections", counters.http2_connections},
          {"http2_streams", counters.http2_streams},
          {"http2_streams_reset", counters.http2_streams_reset},
          {"http2_goaway_sent", counters.http2_goaway_sent},
          {"http2_flood_closes", counters.http2_flood_closes},
          {"requests", requests},
          {"bytes_in", counters.bytes_in},
          {"bytes_out", counters.bytes_out},
          {"upstream_pool_hits", counters.upstream_pool_hits},
          {"upstream_pool_misses", counters.upstream_pool_misses},
          {"connections_closed_by_route_update", counters.connections_closed_by_route_update}};
}

}  // namespace

ControlResponse ControlApi::errorResponse(int status, std::string_view message,
                                          std::string_view field) {
  nlohmann::json body = {{"error", message}};
  if (!field.empty()) body["field"] = field;
  return jsonResponse(status, body);
}

ControlResponse ControlApi::writeResult(bool ok, const RouteWriteError& error) {
  if (!ok) return errorResponse(error.status, error.error.message, error.error.field);
  RouteTableSnapshot table = routes_.current();
  return jsonResponse(200, {{"version", table->version()}, {"routes", table->size()}});
}

ControlResponse ControlApi::handle(const ControlRequest& request) {
  bool write = request.method == "PUT" || request.method == "PATCH" || request.method == "DELETE";
  try {
    ControlResponse response = route(request);
    return response;
  } catch (const std::exception& exception) {
    // Never let one request take the control thread down.
    if (write) routes_.countRefusedWrite();
    return errorResponse(500, std::string("internal error: ") + exception.what());
  }
}

void ControlApi::noteRefusedWrite(const std::string& method) {
  if (method == "PUT" || method == "PATCH" || method == "DELETE") routes_.countRefusedWrite();
}

ControlResponse ControlApi::route(const ControlRequest& request) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  auto parseBody = [&](nlohmann::json& body, ControlResponse& failure) {
    try {
      body = nlohmann::json::parse(request.body);
      return true;
    } catch (const nlohmann::json::parse_error& exception) {
      failure = errorResponse(400, std::string("invalid JSON: ") + exception.what());
      routes_.countRefusedWrite();
      return false;
    }
  };
  if (path == "/healthz") {
    if (method != "GET" && method != "HEAD") return methodNotAllowed("GET, HEAD");
    if (gateway_.draining()) return jsonResponse(503, {{"status", "draining"}});
    return jsonResponse(200, {{"status", "ok"}, {"version", routes_.version()}});
  }
  if (path == "/routes") {
    if (method == "GET") return getRoutes();
    if (method != "PUT" && method != "PATCH") return methodNotAllowed("GET, PUT, PATCH");
    nlohmann::json body;
    ControlResponse failure;
    if (!parseBody(body, failure)) return failure;
    RouteWriteError error;
    bool ok = method == "PUT" ? routes_.replaceAll(body, error) : routes_.patch(body, error);
    return writeResult(ok, error);
  }
  if (path.starts_with("/routes/")) {
    std::string id = path.substr(8);
    if (!isValidRouteId(id)) return errorResponse(404, "no route with this id", "id");
    uint64_t version = 0;
    if (!versionFromQuery(request.query, version)) {
      noteRefusedWrite(method);
      return errorResponse(400, "must be a whole number above 0", "version");
    }
    if (method == "GET") {
      RouteTableSnapshot table = routes_.current();
      const Route* route = table->findById(id);
      if (!route) return errorResponse(404, "no route with this id", "id");
      return jsonResponse(200, routeToJson(*route));
    }
    RouteWriteError error;
    if (method == "PUT") {
      nlohmann::json body;
      ControlResponse failure;
      if (!parseBody(body, failure)) return failure;
      return writeResult(routes_.upsertOne(id, body, version, error), error);
    }
    if (method == "DELETE") return writeResult(routes_.deleteOne(id, version, error), error);
    return methodNotAllowed("GET, PUT, DELETE");
  }
  if (path == "/auth/keys") {
    if (method == "GET") return jsonResponse(200, keys_.toJson());
    if (method != "PUT") return methodNotAllowed("GET, PUT");
    nlohmann::json body;
    ControlResponse failure;
    if (!parseBody(body, failure)) return failure;
    ValidationError error;
    if (!keys_.replace(body, error)) return errorResponse(400, error.message, error.field);
    return jsonResponse(200, keys_.toJson());
  }
  if (path == "/stats") {
    if (method != "GET") return methodNotAllowed("GET");
    return stats();
  }
  if (path == "/metrics") {
    if (method != "GET") return methodNotAllowed("GET");
    return metrics();
  }
  if (path == "/activity") {
    if (method != "GET") return methodNotAllowed("GET");
    return activity();
  }
  if (path == "/tls") {
    if (method != "GET") return methodNotAllowed("GET");
    return jsonResponse(200, nlohmann::json::parse(gateway_.tlsListing()));
  }
  if (path == "/tls/reload") {
    if (method != "POST") return methodNotAllowed("POST");
    ValidationError error;
    if (!gateway_.reloadTls(error)) return errorResponse(400, error.message, error.field);
    return jsonResponse(200, nlohmann::json::parse(gateway_.tlsListing()));
  }
  if (path == "/drain") {
    if (method != "POST") return methodNotAllowed("POST");
    gateway_.drain();
    return jsonResponse(202, {{"draining", true}});
  }
  return errorResponse(404, "no such endpoint");
}

ControlResponse ControlApi::getRoutes() {
  RouteTableSnapshot table = routes_.current();
  nlohmann::json list = nlohmann::json::array();
  for (const RoutePtr& route : table->sortedRoutes()) list.push_back(routeToJson(*route));
  return jsonResponse(200, {{"version", table->version()}, {"routes", std::move(list)}});
}

ControlResponse ControlApi::stats() {
  std::vector<WorkerCountersSnapshot> workers = gateway_.workerCounters();
  nlohmann::json per_worker = nlohmann::json::array();
  for (const auto& worker : workers) per_worker.push_back(countersToJson(worker));
  RouteTableSnapshot table = routes_.current();
  nlohmann::json body = {{"route_table",
                          {{"version", table->version()},
                           {"routes", table->size()},
                           {"snapshot_version", routes_.persistedVersion()}}},
                         {"control",
                          {{"writes_accepted", routes_.writesAccepted()},
                           {"writes_refused", routes_.writesRefused()}}},
                         {"draining", gateway_.draining()},
                         {"totals", countersToJson(sumCounters(workers))},
                         {"workers", per_worker}};
  return jsonResponse(200, body);
}

ControlResponse ControlApi::metrics() {
  std::vector<WorkerCountersSnapshot> workers = gateway_.workerCounters();
  WorkerCountersSnapshot total = sumCounters(workers);
  RouteTableSnapshot table = routes_.current();
  std::string out;
  out.reserve(4096);
  appendHelp(out, "spacegate_requests_total", "counter", "Requests by status class.");
  for (int i = 0; i < 6; ++i) {
    appendMetric(out, "spacegate_requests_total",
                 std::string("class=\"") + kStatusClasses[i] + "\"",
                 static_cast<double>(total.requests_by_class[i]));
  }
  appendHelp(out, "spacegate_bytes_in_total", "counter", "Bytes received from clients.");
  appendMetric(out, "spacegate_bytes_in_total", "", static_cast<double>(total.bytes_in));
  appendHelp(out, "spacegate_bytes_out_total", "counter", "Bytes sent to clients.");
  appendMetric(out, "spacegate_bytes_out_total", "", static_cast<double>(total.bytes_out));
  appendHelp(out, "spacegate_client_connections_open", "gauge", "Open client connections.");
  appendMetric(out, "spacegate_client_connections_open", "",
               static_cast<double>(total.client_connections_open));
  appendHelp(out, "spacegate_upstream_connections_open", "gauge", "Open upstream connections.");
  appendMetric(out, "spacegate_upstream_connections_open", "",
               static_cast<double>(total.upstream_connections_open));
  appendHelp(out, "spacegate_tunnels_open", "gauge",
             "Open tunnels (upgraded WebSockets, CONNECT, the WebSocket tunnel endpoint).");
  appendMetric(out, "spacegate_tunnels_open", "", static_cast<double>(total.tunnels_open));
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    appendHelp(out, name, "counter", help);
    appendMetric(out, name, "", static_cast<double>(value));
  };
  counter("spacegate_tunnels_opened_total", "Tunnels opened.", total.tunnels_opened);
  counter("spacegate_tunnels_closed_total", "Tunnels closed, for any reason.",
          total.tunnels_closed);
  counter("spacegate_tunnels_idle_closed_total", "Tunnels closed by the tunnel idle timeout.",
          total.tunnels_idle_closed);
  counter("spacegate_tunnel_bytes_spliced_total",
          "Tunnel bytes moved with splice(2), never entering user space.",
          total.tunnel_bytes_spliced);
  counter("spacegate_tunnel_bytes_copied_total", "Tunnel bytes moved through read buffers.",
          total.tunnel_bytes_copied);
  counter("spacegate_connections_refused_descriptors_total",
          "Connections the gateway could not accept: out of file descriptors.",
          total.connections_refused_descriptors);
  counter("spacegate_tls_handshakes_total", "TLS handshakes completed.", total.tls_handshakes);
  counter("spacegate_tls_handshake_errors_total", "TLS handshakes that failed.",
          total.tls_handshake_errors);
  counter("spacegate_tls_resumptions_total", "TLS handshakes that resumed a session (ticket).",
          total.tls_resumptions);
  counter("spacegate_http2_connections_total", "HTTP/2 connections started.",
          total.http2_connections);
  counter("spacegate_http2_streams_total", "HTTP/2 streams (requests) opened.",
          total.http2_streams);
  counter("spacegate_http2_streams_reset_total", "HTTP/2 streams the gateway reset.",
          total.http2_streams_reset);
  counter("spacegate_http2_goaway_sent_total", "HTTP/2 GOAWAY frames sent.",
          total.http2_goaway_sent);
  counter("spacegate_http2_flood_closes_total",
          "HTTP/2 connections closed for abuse (floods, resets, limits).",
          total.http2_flood_closes);
  appendHelp(out, "spacegate_upstream_pool_hits_total", "counter",
             "Requests served on a reused upstream connection.");
  appendMetric(out, "spacegate_upstream_pool_hits_total", "",
               static_cast<double>(total.upstream_pool_hits));
  appendHelp(out, "spacegate_upstream_pool_misses_total", "counter",
             "Requests that needed a new upstream connection.");
  appendMetric(out, "spacegate_upstream_pool_misses_total", "",
               static_cast<double>(total.upstream_pool_misses));
  appendHelp(out, "spacegate_connections_closed_by_route_update_total", "counter",
             "Connections closed because their route was deleted or moved.");
  appendMetric(out, "spacegate_connections_closed_by_route_update_total", "",
               static_cast<double>(total.connections_closed_by_route_update));
  appendHelp(out, "spacegate_route_table_version", "gauge", "Version of the applied route table.");
  appendMetric(out, "spacegate_route_table_version", "", static_cast<double>(table->version()));
  appendHelp(out, "spacegate_route_table_routes", "gauge", "Routes in the applied table.");
  appendMetric(out, "spacegate_route_table_routes", "", static_cast<double>(table->size()));
  appendHelp(out, "spacegate_control_writes_total", "counter", "Control API route writes.");
  appendMetric(out, "spacegate_control_writes_total", "result=\"accepted\"",
               static_cast<double>(routes_.writesAccepted()));
  appendMetric(out, "spacegate_control_writes_total", "result=\"refused\"",
               static_cast<double>(routes_.writesRefused()));
  appendHelp(out, "spacegate_route_update_apply_seconds", "histogram",
             "Time from a route write's arrival to the new table being published.");
  uint64_t cumulative = 0;
  const auto& bounds = routes_.applyLatencyBucketBounds();
  const auto& buckets = routes_.applyLatencyBuckets();
  for (size_t i = 0; i < buckets.size(); ++i) {
    cumulative += buckets[i];
    std::string bound = "+Inf";
    if (i < bounds.size()) {
      char text[32];
      bound.assign(text, std::to_chars(text, text + sizeof text, bounds[i]).ptr);
    }
    appendMetric(out, "spacegate_route_update_apply_seconds_bucket", "le=\"" + bound + "\"",
                 static_cast<double>(cumulative));
  }
  appendMetric(out, "spacegate_route_update_apply_seconds_sum", "", routes_.applyLatencySum());
  appendMetric(out, "spacegate_route_update_apply_seconds_count", "",
               static_cast<double>(cumulative));
  // Per route: only routes that carried traffic, so a table of 100,000 idle
  // routes does not make a 100,000-line scrape.
  appendHelp(out, "spacegate_route_requests_total", "counter",
             "Requests by route and status class.");
  std::string route_bytes;
  table->forEach([&](const Route& route) {
    const RouteStats& stats = *route.stats;
    uint64_t bytes_in = stats.bytes_in.load(std::memory_order_relaxed);
    uint64_t bytes_out = stats.bytes_out.load(std::memory_order_relaxed);
    bool any = bytes_in || bytes_out;
    for (int i = 0; i < 6; ++i) {
      uint64_t count = stats.requests_by_class[i].load(std::memory_order_relaxed);
      if (!count) continue;
      any = true;
      appendMetric(out, "spacegate_route_requests_total",
                   "route=\"" + route.id + "\",class=\"" + kStatusClasses[i] + "\"",
                   static_cast<double>(count));
    }
    if (!any) return;
    appendMetric(route_bytes, "spacegate_route_bytes_in_total", "route=\"" + route.id + "\"",
                 static_cast<double>(bytes_in));
    appendMetric(route_bytes, "spacegate_route_bytes_out_total", "route=\"" + route.id + "\"",
                 static_cast<double>(bytes_out));
  });
  appendHelp(out, "spacegate_route_bytes_in_total", "counter", "Bytes from clients by route.");
  appendHelp(out, "spacegate_route_bytes_out_total", "counter", "Bytes to clients by route.");
  out.append(route_bytes);
  ControlResponse response;
  response.content_type = "text/plain; version=0.0.4";
  response.body = std::move(out);
  return response;
}

ControlResponse ControlApi::activity() {
  struct Activity {
    uint64_t last_unix_ms = 0;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    int64_t open_connections = 0;
    int64_t open_tunnels = 0;
    std::vector<std::string> routes;
  };
  std::map<std::string, Activity> by_gitspace;
  RouteTableSnapshot table = routes_.current();
  table->forEach([&](const Route& route) {
    // User traffic only: the agent route carries the delegate's own calls,
    // which must not keep an idle Gitspace awake.
    if (route.gitspace.empty() || route.access == RouteAccess::kAgent) return;
    Activity& activity = by_gitspace[route.gitspace];
    const RouteStats& stats = *route.stats;
    activity.last_unix_ms = std::max(activity.last_unix_ms,
                                     stats.last_activity_unix_ms.load(std::memory_order_relaxed));
    activity.bytes_in += stats.bytes_in.load(std::memory_order_relaxed);
    activity.bytes_out += stats.bytes_out.load(std::memory_order_relaxed);
    activity.open_connections += stats.open_connections.load(std::memory_order_relaxed);
    activity.open_tunnels += stats.open_tunnels.load(std::memory_order_relaxed);
    activity.routes.push_back(route.id);
  });
  nlohmann::json list = nlohmann::json::array();
  for (auto& [gitspace, activity] : by_gitspace) {
    std::sort(activity.routes.begin(), activity.routes.end());
    list.push_back({{"gitspace", gitspace},
                    {"last_activity", activity.last_unix_ms
                                          ? nlohmann::json(formatUnixMs(activity.last_unix_ms))
                                          : nlohmann::json(nullptr)},
                    {"last_activity_unix_ms", activity.last_unix_ms},
                    {"bytes_in", activity.bytes_in},
                    {"bytes_out", activity.bytes_out},
                    {"open_connections", activity.open_connections},
                    {"open_tunnels", activity.open_tunnels},
                    {"routes", activity.routes}});
  }
  return jsonResponse(200, {{"gitspaces", std::move(list)}});
}

}  // namespace spacegate
