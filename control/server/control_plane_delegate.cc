// ControlPlane's delegate API: registration, task leases (long polls that
// park), task events and results (which drive the Gitspace lifecycle), the
// desired route table, and reports of gateways and activity.
#include <algorithm>
#include <charconv>

#include "common/log.h"
#include "control/server/control_plane.h"
#include "control/server/desired_routes.h"
#include "control/server/request_fields.h"
#include "control/server/secret_token.h"

namespace spacegate {

namespace {

constexpr size_t kMaxEventsPerPost = 1000;
constexpr size_t kMaxGatewaysPerReport = 64;
constexpr size_t kMaxActivityEntries = 100'000;
constexpr size_t kMaxDataBytes = 16 * 1024;
constexpr size_t kMaxMessageBytes = 8192;
constexpr size_t kMaxForwardedPorts = 64;

// Events only the control plane writes.
bool reservedEventType(const std::string& type) {
  return type == "gitspace_created" || type == "state_changed" || type == "deleted" ||
         type == "auto_stopped" || type == "waiting_for_gateway";
}

bool withPrefix(ApiOutcome& error, const std::string& prefix) {
  error.field = error.field.empty() ? prefix : prefix + "." + error.field;
  return false;
}

bool readGateways(const nlohmann::json& body, std::vector<GatewayReport>& gateways,
                  ApiOutcome& error) {
  auto list = body.find("gateways");
  if (list == body.end() || list->is_null()) return true;
  if (!list->is_array() || list->size() > kMaxGatewaysPerReport) {
    error = ApiOutcome::fail(
        400, "must be a list of at most " + std::to_string(kMaxGatewaysPerReport) + " gateways",
        "gateways");
    return false;
  }
  for (size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& entry = (*list)[i];
    std::string prefix = "gateways[" + std::to_string(i) + "]";
    GatewayReport report;
    if (!checkFields(entry, {"name", "version", "healthy"}, error) ||
        !readText(entry, "name", true, 1, 64, TextRule::kLabel, report.gateway, error) ||
        !readText(entry, "version", false, 0, 64, TextRule::kPrintable, report.version, error)) {
      return withPrefix(error, prefix);
    }
    auto healthy = entry.find("healthy");
    if (healthy == entry.end() || !healthy->is_boolean()) {
      error = ApiOutcome::fail(400, "required: true or false", prefix + ".healthy");
      return false;
    }
    report.healthy = healthy->get<bool>();
    gateways.push_back(std::move(report));
  }
  return true;
}

// An event's message: log lines come from the repository's own commands, so
// a message is cut to kMaxMessageBytes (at a character boundary) and its
// control characters replaced, never refused.
bool readMessage(const nlohmann::json& entry, const char* key, size_t max_bytes,
                 std::string& message, ApiOutcome& error) {
  auto it = entry.find(key);
  if (it == entry.end() || it->is_null()) return true;
  if (!it->is_string()) {
    error = ApiOutcome::fail(400, "must be a string", key);
    return false;
  }
  message = it->get<std::string>();
  if (message.size() > max_bytes) {
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
    message.resize(cut);
  }
  for (char& c : message) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) c = ' ';
  }
  return true;
}

size_t dumpedSize(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
}

}  // namespace

bool ControlPlane::gatewayFresh(const std::string& delegate_id, int64_t now_ms) const {
  auto it = gateway_reports_.lower_bound({delegate_id, std::string()});
  for (; it != gateway_reports_.end() && it->first.first == delegate_id; ++it) {
    if (it->second.healthy && now_ms - it->second.reported_at_ms <=
                                  static_cast<int64_t>(config_.limits.gateway_report_max_age_ms)) {
      return true;
    }
  }
  return false;
}

bool ControlPlane::delegateServes(const DelegateRecord& delegate,
                                  const GitspaceRecord& gitspace) const {
  const InfraRecord* infra = infraOf(gitspace);
  return infra && std::find(delegate.selectors.begin(), delegate.selectors.end(),
                            infra->delegate_selector) != delegate.selectors.end();
}

ApiOutcome ControlPlane::registerDelegate(const nlohmann::json& body) {
  ApiOutcome error;
  DelegateRecord incoming;
  std::vector<GatewayReport> gateways;
  if (!checkFields(body, {"name", "version", "selectors", "gateways"}, error) ||
      !readText(body, "name", true, 1, 64, TextRule::kLabel, incoming.name, error) ||
      !readText(body, "version", false, 0, 64, TextRule::kPrintable, incoming.version, error) ||
      !readGateways(body, gateways, error)) {
    return error;
  }
  if (auto selectors = body.find("selectors"); selectors != body.end() && !selectors->is_null()) {
    if (!selectors->is_array() || selectors->empty() || selectors->size() > 32) {
      return ApiOutcome::fail(400, "must be a list of 1 to 32 selectors", "selectors");
    }
    for (size_t i = 0; i < selectors->size(); ++i) {
      const nlohmann::json& selector = (*selectors)[i];
      std::string field = "selectors[" + std::to_string(i) + "]";
      if (!selector.is_string() || selector.get_ref<const std::string&>().empty() ||
          selector.get_ref<const std::string&>().size() > 64 ||
          !textFollowsRule(selector.get<std::string>(), TextRule::kName)) {
        return ApiOutcome::fail(400, "must be 1 to 64 of [a-z0-9._-]", field);
      }
      incoming.selectors.push_back(selector);
    }
  } else {
    incoming.selectors = {"default"};
  }
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t now = clock_();
  DelegateRecord* delegate = nullptr;
  for (auto& [id, existing] : delegates_) {
    if (existing.name == incoming.name) delegate = &existing;
  }
  bool known = delegate != nullptr;
  if (!delegate) {
    incoming.id = "dg-" + randomHex(4);
    while (delegates_.count(incoming.id)) incoming.id = "dg-" + randomHex(4);
    incoming.registered_at_ms = now;
    delegate = &(delegates_[incoming.id] = incoming);
  }
  delegate->version = incoming.version;
  delegate->selectors = incoming.selectors;
  delegate->last_seen_ms = now;
  store_.begin();
  std::string store_error;
  if (!store_.saveDelegate(*delegate, store_error)) {
    logEvent(LogLevel::kError, "cannot save a delegate").with("error", store_error).emit();
  }
  for (GatewayReport& report : gateways) {
    report.delegate = delegate->id;
    report.reported_at_ms = now;
    store_.saveGatewayReport(report, store_error);
    gateway_reports_[{report.delegate, report.gateway}] = report;
  }
  commitStore();
  logEvent(LogLevel::kInfo, known ? "delegate registered again" : "delegate registered")
      .with("delegate", delegate->id)
      .with("name", delegate->name)
      .with("version", delegate->version)
      .with("gateways", static_cast<int64_t>(gateways.size()))
      .emit();
  std::string id = delegate->id;
  dispatchParked(now);
  return ApiOutcome::ok(200, {{"delegate_id", id}});
}

ApiOutcome ControlPlane::resolveDelegate(const std::string* delegate_header,
                                         std::string& delegate_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (delegate_header) {
    if (!delegates_.count(*delegate_header)) {
      return ApiOutcome::fail(403, "unknown delegate id: register first", "X-Spacegate-Delegate");
    }
    delegate_id = *delegate_header;
    return ApiOutcome::ok(200, nullptr);
  }
  // Without the header, a deployment with a single delegate still works.
  if (delegates_.size() == 1) {
    delegate_id = delegates_.begin()->first;
    return ApiOutcome::ok(200, nullptr);
  }
  if (delegates_.empty()) {
    return ApiOutcome::fail(403, "no delegate is registered: POST /api/v1/delegate/register first",
                            "X-Spacegate-Delegate");
  }
  return ApiOutcome::fail(400,
                          "required when several delegates are registered (the delegate_id "
                          "from register)",
                          "X-Spacegate-Delegate");
}

nlohmann::json ControlPlane::taskJson(const TaskRecord& task, const GitspaceRecord& gitspace,
                                      const InfraRecord& infra, int64_t now_ms) const {
  AccessToken agent;
  agent.kid = signing_key_.kid;
  agent.sub = "delegate";
  agent.gs = gitspace.id;
  agent.iat = now_ms / 1000;
  agent.exp = agent.iat + static_cast<int64_t>(config_.agent_token_ttl_ms / 1000);
  agent.scopes = {"agent"};
  nlohmann::json task_gitspace = {{"id", gitspace.id},
                                  {"name", gitspace.name},
                                  {"owner", gitspace.owner},
                                  {"repository", gitspace.repository},
                                  {"branch", gitspace.branch},
                                  {"ide", gitspace.ide},
                                  {"machine_id", gitspace.machine_id}};
  // The owner's keys as they are now: the agent writes them to sshd's
  // authorized_keys when it sets the Gitspace up or starts it again.
  if (task.kind == TaskKind::kStart || task.kind == TaskKind::kReset) {
    auto owner = users_.find(gitspace.owner);
    task_gitspace["ssh_authorized_keys"] =
        owner == users_.end() ? std::vector<std::string>{} : owner->second.ssh_keys;
  }
  return {{"id", task.id},
          {"kind", taskKindName(task.kind)},
          {"attempt", task.attempt},
          {"gitspace", std::move(task_gitspace)},
          {"infra",
           {{"gateway_domain", infra.gateway_domain},
            {"url_scheme", infra.url_scheme},
            {"gateway_port", infra.gateway_port},
            {"runner_pool", infra.runner_pool}}},
          {"agent_token", signAccessToken(agent, signing_key_)},
          {"lease_until_ms", task.lease_until_ms}};
}

nlohmann::json ControlPlane::leaseNextTask(const std::string& delegate_id, int64_t now_ms) {
  auto delegate_it = delegates_.find(delegate_id);
  if (delegate_it == delegates_.end()) return nullptr;
  const DelegateRecord& delegate = delegate_it->second;
  bool fresh = gatewayFresh(delegate_id, now_ms);
  TaskRecord* task = tasks_.next([&](const TaskRecord& candidate) {
    auto gitspace = gitspaces_.find(candidate.gitspace);
    if (gitspace == gitspaces_.end() || !delegateServes(delegate, gitspace->second)) return false;
    if (candidate.kind == TaskKind::kStart && !fresh) {
      TaskRecord* waiting = tasks_.find(candidate.id);
      if (!waiting->waiting_noted) {
        waiting->waiting_noted = true;
        save(*waiting);
        appendEvent(candidate.gitspace, "waiting_for_gateway",
                    "waiting for a delegate whose gateway reported healthy in the last " +
                        std::to_string(config_.limits.gateway_report_max_age_ms / 1000) + "s",
                    {{"delegate", delegate_id}});
      }
      return false;
    }
    return true;
  });
  if (!task) return nullptr;
  const GitspaceRecord& gitspace = gitspaces_[task->gitspace];
  const InfraRecord* infra = infraOf(gitspace);
  tasks_.lease(*task, delegate_id, now_ms, static_cast<int64_t>(config_.task_lease_ms));
  nlohmann::json body = taskJson(*task, gitspace, *infra, now_ms);
  nlohmann::json payload = body;
  payload.erase("agent_token");
  task->payload = payload.dump();
  save(*task);
  logEvent(LogLevel::kInfo, "task leased")
      .with("task", task->id)
      .with("kind", taskKindName(task->kind))
      .with("gitspace", task->gitspace)
      .with("delegate", delegate_id)
      .with("attempt", static_cast<int64_t>(task->attempt))
      .emit();
  return body;
}

void ControlPlane::respondLater(const std::shared_ptr<ServiceExchange>& exchange,
                                ServiceResponse response) {
  streams_.post([exchange, response = std::move(response)]() mutable {
    exchange->respond(std::move(response));
  });
}

void ControlPlane::dispatchParked(int64_t now_ms) {
  if (parked_.empty() || tasks_.size() == 0) return;
  store_.begin();
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->exchange->clientGone()) {
      it = parked_.erase(it);
      continue;
    }
    nlohmann::json task = leaseNextTask(it->delegate, now_ms);
    if (task.is_null()) {
      ++it;
      continue;
    }
    respondLater(
        it->exchange,
        ServiceResponse::json(
            200, task.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
    it = parked_.erase(it);
  }
  commitStore();
}

ApiOutcome ControlPlane::pollTask(const std::string& delegate_id, int wait_s,
                                  std::shared_ptr<ServiceExchange> exchange) {
  uint64_t poll_id = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t now = clock_();
    auto delegate = delegates_.find(delegate_id);
    if (delegate == delegates_.end()) return ApiOutcome::fail(403, "unknown delegate");
    delegate->second.last_seen_ms = now;
    store_.begin();
    nlohmann::json task = leaseNextTask(delegate_id, now);
    commitStore();
    if (!task.is_null()) return ApiOutcome::ok(200, std::move(task));
    if (wait_s <= 0) return ApiOutcome::ok(204, nullptr);
    uint64_t parked = 0;
    for (const ParkedPoll& poll : parked_) parked += poll.delegate == delegate_id;
    if (parked >= config_.limits.max_polls_per_delegate) {
      return ApiOutcome::fail(429, "too many long polls from this delegate at once");
    }
    poll_id = next_poll_id_++;
    parked_.push_back(ParkedPoll{poll_id, delegate_id, now + wait_s * 1000LL, exchange});
  }
  exchange->setOnClientGone([this, poll_id] {
    std::lock_guard<std::mutex> lock(mutex_);
    parked_.remove_if([poll_id](const ParkedPoll& poll) { return poll.id == poll_id; });
  });
  return ApiOutcome::done();
}

bool ControlPlane::validMachineData(const nlohmann::json& data, bool require_all,
                                    std::string& field, std::string& reason) const {
  auto text = [&](const char* key, bool required, size_t max, TextRule rule) {
    auto it = data.find(key);
    if (it == data.end() || it->is_null()) {
      if (!required) return true;
      field = key;
      reason = "required";
      return false;
    }
    if (!it->is_string() || it->get_ref<const std::string&>().empty() ||
        it->get_ref<const std::string&>().size() > max ||
        !textFollowsRule(it->get<std::string>(), rule)) {
      field = key;
      reason = "must be a string of 1 to " + std::to_string(max) + " printable characters";
      return false;
    }
    return true;
  };
  auto port = [&](const char* key, bool required) {
    auto it = data.find(key);
    if (it == data.end() || it->is_null()) {
      if (!required) return true;
      field = key;
      reason = "required";
      return false;
    }
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 65535) {
      field = key;
      reason = "must be a port from 1 to 65535";
      return false;
    }
    return true;
  };
  if (!text("machine_id", true, 128, TextRule::kPrintable) ||
      !text("address", true, 253, TextRule::kPrintable) || !port("agent_port", !require_all) ||
      !port("ide_port", require_all) || !port("ssh_port", false) ||
      !text("ide_protocol", false, 16, TextRule::kName)) {
    return false;
  }
  if (!validMachineAddress(data["address"].get<std::string>())) {
    field = "address";
    reason = "must be an IP address or a DNS name";
    return false;
  }
  if (auto ports = data.find("forwarded_ports"); ports != data.end() && !ports->is_null()) {
    if (!ports->is_array() || ports->size() > kMaxForwardedPorts) {
      field = "forwarded_ports";
      reason = "must be a list of at most " + std::to_string(kMaxForwardedPorts) + " ports";
      return false;
    }
    for (size_t i = 0; i < ports->size(); ++i) {
      const nlohmann::json& entry = (*ports)[i];
      if (!entry.is_number_integer() || entry.get<int64_t>() < 1 || entry.get<int64_t>() > 65535) {
        field = "forwarded_ports[" + std::to_string(i) + "]";
        reason = "must be a port from 1 to 65535";
        return false;
      }
    }
  }
  return true;
}

void ControlPlane::recordMachine(GitspaceRecord& gitspace, const nlohmann::json& data) {
  std::string machine_id = data.value("machine_id", std::string());
  if (machine_id != gitspace.machine_id) {
    gitspace.forwarded_ports.clear();
    gitspace.ssh_port = 0;  // another machine's sshd may not be where the old one's was
  }
  gitspace.machine_id = machine_id;
  gitspace.address = data.value("address", std::string());
  if (data.contains("agent_port") && data["agent_port"].is_number_integer()) {
    gitspace.agent_port = data["agent_port"].get<int>();
  }
  if (data.contains("ide_port") && data["ide_port"].is_number_integer()) {
    gitspace.ide_port = data["ide_port"].get<int>();
  }
  if (data.contains("ssh_port") && data["ssh_port"].is_number_integer()) {
    gitspace.ssh_port = data["ssh_port"].get<int>();
  }
  if (data.contains("ide_protocol") && data["ide_protocol"].is_string()) {
    gitspace.ide_protocol = data["ide_protocol"].get<std::string>();
  }
  if (data.contains("forwarded_ports") && data["forwarded_ports"].is_array()) {
    std::vector<int> ports;
    for (const auto& port : data["forwarded_ports"]) ports.push_back(port.get<int>());
    std::sort(ports.begin(), ports.end());
    ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
    gitspace.forwarded_ports = std::move(ports);
  }
}

ApiOutcome ControlPlane::taskEvents(const std::string& delegate_id, const std::string& task_id,
                                    const nlohmann::json& body) {
  ApiOutcome error;
  if (!checkFields(body, {"events"}, error)) return error;
  auto events = body.find("events");
  if (events == body.end() || !events->is_array() || events->size() > kMaxEventsPerPost) {
    return ApiOutcome::fail(
        400, "must be a list of at most " + std::to_string(kMaxEventsPerPost) + " events",
        "events");
  }
  struct Incoming {
    std::string type;
    std::string message;
    nlohmann::json data;
  };
  std::vector<Incoming> incoming;
  for (size_t i = 0; i < events->size(); ++i) {
    const nlohmann::json& entry = (*events)[i];
    std::string prefix = "events[" + std::to_string(i) + "]";
    Incoming event;
    if (!checkFields(entry, {"type", "message", "data"}, error) ||
        !readText(entry, "type", true, 1, 64, TextRule::kEventType, event.type, error) ||
        !readMessage(entry, "message", kMaxMessageBytes, event.message, error)) {
      withPrefix(error, prefix);
      return error;
    }
    if (reservedEventType(event.type)) {
      return ApiOutcome::fail(400, "only the control plane writes this event type",
                              prefix + ".type");
    }
    if (auto data = entry.find("data"); data != entry.end() && !data->is_null()) {
      if (!data->is_object() || dumpedSize(*data) > kMaxDataBytes) {
        return ApiOutcome::fail(400, "must be an object of at most 16 KiB", prefix + ".data");
      }
      event.data = *data;
    }
    if (event.type == "machine_assigned") {
      std::string field;
      std::string reason;
      if (!event.data.is_object() || !validMachineData(event.data, false, field, reason)) {
        return ApiOutcome::fail(400, event.data.is_object() ? reason : "required",
                                prefix + ".data" + (field.empty() ? "" : "." + field));
      }
    }
    incoming.push_back(std::move(event));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  switch (tasks_.claim(task_id, delegate_id)) {
    case TaskQueue::Claim::kLeased: break;
    case TaskQueue::Claim::kNotYours:
      return ApiOutcome::fail(409, "the task is not leased to this delegate");
    case TaskQueue::Claim::kUnknown: {
      TaskRecord stored;
      std::string ignored;
      if (store_.findTask(task_id, stored, ignored)) {
        return ApiOutcome::fail(409, "the task is no longer leased (it finished or was dropped)");
      }
      return ApiOutcome::fail(404, "no such task");
    }
  }
  int64_t now = clock_();
  store_.begin();
  tasks_.extend(task_id, delegate_id, now, static_cast<int64_t>(config_.task_lease_ms));
  TaskRecord* task = tasks_.find(task_id);
  save(*task);
  auto gitspace = gitspaces_.find(task->gitspace);
  for (Incoming& event : incoming) {
    if (gitspace == gitspaces_.end()) break;
    if (event.type == "machine_assigned") {
      std::vector<nlohmann::json> before = routesOf(gitspace->second);
      recordMachine(gitspace->second, event.data);
      commitGitspace(gitspace->second, before);
      if (event.message.empty()) {
        event.message =
            "machine " + gitspace->second.machine_id + " at " + gitspace->second.address;
      }
    }
    event.data["task"] = task_id;
    appendEvent(task->gitspace, std::move(event.type), std::move(event.message),
                std::move(event.data));
  }
  int64_t lease_until = task->lease_until_ms;
  commitStore();
  return ApiOutcome::ok(200, {{"lease_until_ms", lease_until}});
}

ApiOutcome ControlPlane::taskResult(const std::string& delegate_id, const std::string& task_id,
                                    const nlohmann::json& body) {
  ApiOutcome error;
  if (!checkFields(body, {"ok", "data", "error"}, error)) return error;
  auto ok_field = body.find("ok");
  if (ok_field == body.end() || !ok_field->is_boolean()) {
    return ApiOutcome::fail(400, "required: true or false", "ok");
  }
  bool ok = ok_field->get<bool>();
  nlohmann::json data = nlohmann::json::object();
  if (auto it = body.find("data"); it != body.end() && !it->is_null()) {
    if (!it->is_object() || dumpedSize(*it) > kMaxDataBytes) {
      return ApiOutcome::fail(400, "must be an object of at most 16 KiB", "data");
    }
    data = *it;
  }
  std::string failure;
  if (!readMessage(body, "error", kMaxMessageBytes, failure, error)) return error;
  if (!ok && failure.empty()) failure = "the delegate gave no reason";

  std::lock_guard<std::mutex> lock(mutex_);
  switch (tasks_.claim(task_id, delegate_id)) {
    case TaskQueue::Claim::kLeased: break;
    case TaskQueue::Claim::kNotYours:
      return ApiOutcome::fail(409, "the task is not leased to this delegate");
    case TaskQueue::Claim::kUnknown: {
      TaskRecord stored;
      std::string ignored;
      if (store_.findTask(task_id, stored, ignored)) {
        return ApiOutcome::fail(409, "the task is no longer leased (it finished or was dropped)");
      }
      return ApiOutcome::fail(404, "no such task");
    }
  }
  TaskRecord* task = tasks_.find(task_id);
  auto gitspace_it = gitspaces_.find(task->gitspace);
  if (ok && task->kind == TaskKind::kStart) {
    std::string field;
    std::string reason;
    // agent_port may have come with machine_assigned already.
    bool has_agent_port = gitspace_it != gitspaces_.end() && gitspace_it->second.agent_port > 0 &&
                          data.value("machine_id", std::string()) == gitspace_it->second.machine_id;
    if (!validMachineData(data, true, field, reason)) {
      return ApiOutcome::fail(400, reason, "data." + field);
    }
    if (!has_agent_port && !data.contains("agent_port")) {
      return ApiOutcome::fail(400, "required", "data.agent_port");
    }
  }
  int64_t now = clock_();
  store_.begin();
  TaskRecord finished = tasks_.finish(task_id, ok, data.dump(), failure, now);
  save(finished);
  logEvent(ok ? LogLevel::kInfo : LogLevel::kWarning, "task finished")
      .with("task", finished.id)
      .with("kind", taskKindName(finished.kind))
      .with("gitspace", finished.gitspace)
      .with("delegate", delegate_id)
      .with("ok", ok)
      .with("error", failure)
      .emit();
  if (gitspace_it != gitspaces_.end()) {
    GitspaceRecord& gitspace = gitspace_it->second;
    bool current = gitspace.task_id == finished.id;
    std::vector<nlohmann::json> before = routesOf(gitspace);
    if (ok && finished.kind == TaskKind::kStart) recordMachine(gitspace, data);
    bool machine_gone =
        ok && (finished.kind == TaskKind::kReset || finished.kind == TaskKind::kDelete);
    if (current && machine_gone) clearMachine(gitspace);
    if (current) gitspace.task_id.clear();
    commitGitspace(gitspace, before);
    if (current && ok) {
      switch (finished.kind) {
        case TaskKind::kStart:
          if (transition(gitspace, GitspaceEvent::kStarted, "started")) {
            // The IDE and port routes are in the table from this version
            // on; a gateway reporting it (or a later one) has them.
            ide_routes_pending_[gitspace.id] = route_revision_;
          }
          break;
        case TaskKind::kStop: transition(gitspace, GitspaceEvent::kStopped, "stopped"); break;
        case TaskKind::kReset:
          if (transition(gitspace, GitspaceEvent::kCleaned, "reset: the machine was removed") &&
              transition(gitspace, GitspaceEvent::kRestart, "reset: starting fresh")) {
            queueTask(gitspace, TaskKind::kStart);
          }
          break;
        case TaskKind::kDelete: transition(gitspace, GitspaceEvent::kDeleted, "deleted"); break;
      }
    } else if (current) {
      transition(gitspace, GitspaceEvent::kFailed,
                 std::string(taskKindName(finished.kind)) + " failed: " + failure);
    }
  }
  commitStore();
  dispatchParked(now);
  return ApiOutcome::ok(200, nlohmann::json::object());
}

ApiOutcome ControlPlane::routes(const std::string& delegate_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto delegate = delegates_.find(delegate_id);
  if (delegate == delegates_.end()) return ApiOutcome::fail(403, "unknown delegate");
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [id, gitspace] : gitspaces_) {
    if (gitspace.state == GitspaceState::kDeleted || !delegateServes(delegate->second, gitspace)) {
      continue;
    }
    for (nlohmann::json& route : routesOf(gitspace)) list.push_back(std::move(route));
  }
  return ApiOutcome::ok(200, {{"version", route_revision_}, {"routes", std::move(list)}});
}

ApiOutcome ControlPlane::report(const std::string& delegate_id, const nlohmann::json& body) {
  ApiOutcome error;
  std::vector<GatewayReport> gateways;
  if (!checkFields(body, {"gateways", "activity"}, error) || !readGateways(body, gateways, error)) {
    return error;
  }
  struct Activity {
    std::string gitspace;
    int64_t last_activity_ms = 0;
  };
  std::vector<Activity> activity;
  if (auto list = body.find("activity"); list != body.end() && !list->is_null()) {
    if (!list->is_array() || list->size() > kMaxActivityEntries) {
      return ApiOutcome::fail(
          400, "must be a list of at most " + std::to_string(kMaxActivityEntries) + " entries",
          "activity");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const nlohmann::json& entry = (*list)[i];
      std::string prefix = "activity[" + std::to_string(i) + "]";
      Activity item;
      int64_t ignored = 0;
      if (!checkFields(entry,
                       {"gitspace", "last_activity_unix_ms", "open_connections", "open_tunnels"},
                       error) ||
          // Any route's `gitspace` may show up here (static routes too):
          // unknown ones are skipped below, not refused.
          !readText(entry, "gitspace", true, 1, 128, TextRule::kPrintable, item.gitspace, error) ||
          !readNumber(entry, "last_activity_unix_ms", true, 0, INT64_MAX / 2, item.last_activity_ms,
                      error) ||
          !readNumber(entry, "open_connections", false, 0, INT64_MAX / 2, ignored, error) ||
          !readNumber(entry, "open_tunnels", false, 0, INT64_MAX / 2, ignored, error)) {
        withPrefix(error, prefix);
        return error;
      }
      activity.push_back(std::move(item));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto delegate = delegates_.find(delegate_id);
  if (delegate == delegates_.end()) return ApiOutcome::fail(403, "unknown delegate");
  int64_t now = clock_();
  store_.begin();
  std::string store_error;
  for (GatewayReport& report : gateways) {
    report.delegate = delegate_id;
    report.reported_at_ms = now;
    store_.saveGatewayReport(report, store_error);
    gateway_reports_[{report.delegate, report.gateway}] = report;
  }
  for (const Activity& item : activity) {
    auto gitspace = gitspaces_.find(item.gitspace);
    if (gitspace == gitspaces_.end() || !delegateServes(delegate->second, gitspace->second)) {
      continue;
    }
    // A clock ahead of ours must not keep a Gitspace alive forever.
    int64_t when = std::min(item.last_activity_ms, now);
    if (when > gitspace->second.last_activity_ms) {
      gitspace->second.last_activity_ms = when;
      save(gitspace->second);
    }
  }
  for (const GatewayReport& report : gateways) {
    int64_t version = 0;
    auto [end, code] = std::from_chars(report.version.data(),
                                       report.version.data() + report.version.size(), version);
    if (!report.healthy || code != std::errc() ||
        end != report.version.data() + report.version.size()) {
      continue;
    }
    for (auto pending = ide_routes_pending_.begin(); pending != ide_routes_pending_.end();) {
      auto gitspace = gitspaces_.find(pending->first);
      bool still_running =
          gitspace != gitspaces_.end() && gitspace->second.state == GitspaceState::kRunning;
      if (still_running && version >= pending->second) {
        appendEvent(pending->first, "ide_routes_completed",
                    "the IDE and port routes are on gateway " + report.gateway +
                        " (route version " + report.version + ")",
                    {{"gateway", report.gateway}, {"route_version", version}});
      }
      if (!still_running || version >= pending->second) {
        pending = ide_routes_pending_.erase(pending);
      } else {
        ++pending;
      }
    }
  }
  delegate->second.last_seen_ms = now;
  store_.saveDelegate(delegate->second, store_error);
  commitStore();
  dispatchParked(now);
  return ApiOutcome::ok(200, nlohmann::json::object());
}

}  // namespace spacegate
