#include "control/server/control_plane.h"

#include <algorithm>

#include "auth/base64url.h"
#include "common/log.h"
#include "control/server/desired_routes.h"
#include "control/server/request_fields.h"
#include "control/server/secret_token.h"
#include "control/server/ssh_public_key.h"

namespace spacegate {

namespace {

constexpr int64_t kMaxIdleTimeoutS = 30 * 24 * 3600;
constexpr int64_t kMaintenanceIntervalMs = 250;
// Finished tasks are kept this long for inspection, then dropped.
constexpr int64_t kFinishedTaskRetentionMs = 7 * 24 * 3'600'000LL;

std::string describeDuration(int64_t milliseconds) {
  if (milliseconds >= 3'600'000 && milliseconds % 3'600'000 == 0) {
    return std::to_string(milliseconds / 3'600'000) + "h";
  }
  if (milliseconds >= 60'000 && milliseconds % 60'000 == 0) {
    return std::to_string(milliseconds / 60'000) + "m";
  }
  if (milliseconds % 1000 == 0) return std::to_string(milliseconds / 1000) + "s";
  return std::to_string(milliseconds) + "ms";
}

// A new id "<prefix><hex>" not in `taken`.
template <typename Map>
std::string newId(const std::string& prefix, size_t bytes, const Map& taken) {
  while (true) {
    std::string id = prefix + randomHex(bytes);
    if (!taken.count(id)) return id;
  }
}

}  // namespace

ControlPlane::ControlPlane(ControlPlaneConfig config, ControlStore& store, SigningKey signing_key,
                           Clock clock)
    : config_(std::move(config)),
      store_(store),
      signing_key_(std::move(signing_key)),
      clock_(std::move(clock)),
      streams_(config_.limits.max_event_streams) {}

ControlPlane::~ControlPlane() {
  stopMaintenance();
}

bool ControlPlane::load(std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  ControlSnapshot snapshot;
  if (!store_.load(snapshot, error)) return false;
  for (UserRecord& user : snapshot.users) {
    user_by_token_[user.token_hash] = user.id;
    users_[user.id] = std::move(user);
  }
  delegate_token_hashes_.insert(snapshot.delegate_token_hashes.begin(),
                                snapshot.delegate_token_hashes.end());
  for (InfraRecord& infra : snapshot.infra) infra_[infra.id] = std::move(infra);
  for (DelegateRecord& delegate : snapshot.delegates) {
    delegates_[delegate.id] = std::move(delegate);
  }
  for (GatewayReport& report : snapshot.gateway_reports) {
    gateway_reports_[{report.delegate, report.gateway}] = std::move(report);
  }
  for (GitspaceRecord& gitspace : snapshot.gitspaces) {
    gitspaces_[gitspace.id] = std::move(gitspace);
  }
  tasks_.restore(std::move(snapshot.live_tasks), snapshot.task_seq);
  route_revision_ = snapshot.route_revision;
  size_t leased = 0;
  for (const auto& [id, task] : tasks_.tasks()) leased += task.state == TaskState::kLeased;
  logEvent(LogLevel::kInfo, "state loaded")
      .with("users", static_cast<int64_t>(users_.size()))
      .with("gitspaces", static_cast<int64_t>(gitspaces_.size()))
      .with("live_tasks", static_cast<int64_t>(tasks_.size()))
      .with("leased_tasks", static_cast<int64_t>(leased))
      .with("route_revision", route_revision_)
      .emit();
  return true;
}

void ControlPlane::setPost(EventStreams::Post post) {
  std::lock_guard<std::mutex> lock(mutex_);
  streams_.setPost(std::move(post));
}

bool ControlPlane::hasAdmin() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [id, user] : users_) {
    if (user.admin()) return true;
  }
  return false;
}

bool ControlPlane::hasDelegateToken() {
  std::lock_guard<std::mutex> lock(mutex_);
  return !delegate_token_hashes_.empty();
}

bool ControlPlane::bootstrapAdmin(const std::string& token_hash, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  UserRecord user;
  // The name "admin" may exist already (a database whose admin was demoted
  // cannot happen through the API, but a hand-edited one might).
  for (const auto& [id, existing] : users_) {
    if (existing.name == "admin") user = existing;
  }
  if (user.id.empty()) {
    user.id = newId("u-", 4, users_);
    user.name = "admin";
    user.created_at_ms = clock_();
  }
  user_by_token_.erase(user.token_hash);
  user.role = "admin";
  user.token_hash = token_hash;
  if (!store_.saveUser(user, error)) return false;
  user_by_token_[token_hash] = user.id;
  users_[user.id] = user;
  return true;
}

bool ControlPlane::addDelegateToken(const std::string& token_hash, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!store_.addDelegateToken(token_hash, clock_(), error)) return false;
  delegate_token_hashes_.insert(token_hash);
  return true;
}

Caller ControlPlane::authenticate(std::string_view bearer_token) {
  Caller caller;
  // Tokens are 64 hex characters; anything much longer is not worth hashing.
  if (bearer_token.empty() || bearer_token.size() > 256) return caller;
  std::string hash = sha256Hex(bearer_token);
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = user_by_token_.find(hash); it != user_by_token_.end()) {
    caller.kind = Caller::Kind::kUser;
    caller.user = users_[it->second];
  } else if (delegate_token_hashes_.count(hash)) {
    caller.kind = Caller::Kind::kDelegate;
  }
  return caller;
}

nlohmann::json ControlPlane::publicKeyJson() const {
  return {{"kid", signing_key_.kid}, {"public_key", base64UrlEncode(signing_key_.public_key)}};
}

// ---------------------------------------------------------------------------
// Helpers (mutex_ held)
// ---------------------------------------------------------------------------

const InfraRecord* ControlPlane::infraOf(const GitspaceRecord& gitspace) const {
  auto it = infra_.find(gitspace.infra);
  return it == infra_.end() ? nullptr : &it->second;
}

std::vector<nlohmann::json> ControlPlane::routesOf(const GitspaceRecord& gitspace) const {
  const InfraRecord* infra = infraOf(gitspace);
  if (!infra) return {};
  return desiredRoutesFor(gitspace, *infra);
}

nlohmann::json ControlPlane::gitspaceJson(const GitspaceRecord& gitspace) const {
  const InfraRecord* infra = infraOf(gitspace);
  nlohmann::json body = {
      {"id", gitspace.id},
      {"name", gitspace.name},
      {"owner", gitspace.owner},
      {"repository", gitspace.repository},
      {"branch", gitspace.branch},
      {"ide", gitspace.ide},
      {"infra", gitspace.infra},
      {"state", gitspaceStateName(gitspace.state)},
      {"state_reason", gitspace.state_reason},
      {"state_since", formatUnixMs(gitspace.state_since_ms)},
      {"idle_timeout_s", gitspace.idle_timeout_s},
      {"machine_id", gitspace.machine_id},
      {"url", infra ? gitspaceUrl(gitspace, *infra) : ""},
      {"path_url", infra ? gitspacePathUrl(gitspace, *infra) : ""},
      {"forwarded_ports", gitspace.forwarded_ports},
      {"ssh_port",
       gitspace.ssh_port > 0 ? nlohmann::json(gitspace.ssh_port) : nlohmann::json(nullptr)},
      {"last_activity", gitspace.last_activity_ms
                            ? nlohmann::json(formatUnixMs(gitspace.last_activity_ms))
                            : nlohmann::json(nullptr)},
      {"created_at", formatUnixMs(gitspace.created_at_ms)},
  };
  return body;
}

nlohmann::json ControlPlane::infraJson(const InfraRecord& infra) const {
  return {{"id", infra.id},
          {"name", infra.name},
          {"gateway_domain", infra.gateway_domain},
          {"url_scheme", infra.url_scheme},
          {"gateway_port", infra.gateway_port},
          {"runner_pool", infra.runner_pool},
          {"delegate_selector", infra.delegate_selector},
          {"idle_timeout_s", infra.idle_timeout_s},
          {"created_at", formatUnixMs(infra.created_at_ms)}};
}

GitspaceRecord* ControlPlane::visibleGitspace(const Caller& caller, const std::string& id) {
  auto it = gitspaces_.find(id);
  if (it == gitspaces_.end()) return nullptr;
  // Another user's Gitspace does not exist for this caller (404, not 403:
  // ids are not to be probed).
  if (!caller.user.admin() && it->second.owner != caller.user.id) return nullptr;
  return &it->second;
}

void ControlPlane::save(const GitspaceRecord& gitspace) {
  std::string error;
  if (!store_.saveGitspace(gitspace, error)) {
    logEvent(LogLevel::kError, "cannot save a Gitspace")
        .with("gitspace", gitspace.id)
        .with("error", error)
        .emit();
  }
}

void ControlPlane::save(const TaskRecord& task) {
  std::string error;
  if (!store_.saveTask(task, error)) {
    logEvent(LogLevel::kError, "cannot save a task")
        .with("task", task.id)
        .with("error", error)
        .emit();
  }
}

void ControlPlane::commitStore() {
  std::string error;
  if (!store_.commit(error)) {
    logEvent(LogLevel::kError, "database commit failed").with("error", error).emit();
  }
}

void ControlPlane::appendEvent(const std::string& gitspace, std::string type, std::string message,
                               nlohmann::json data) {
  EventRecord event;
  event.gitspace = gitspace;
  event.type = std::move(type);
  event.message = std::move(message);
  event.data = std::move(data);
  event.at_ms = clock_();
  std::string error;
  if (!store_.appendEvent(event, config_.limits.events_per_gitspace, error)) {
    logEvent(LogLevel::kError, "cannot save an event")
        .with("gitspace", gitspace)
        .with("error", error)
        .emit();
    return;
  }
  streams_.send(event);
}

void ControlPlane::bumpRouteRevision() {
  // At least the wall clock in milliseconds: a control plane whose database
  // was lost still outranks the versions the gateways keep.
  route_revision_ = std::max(route_revision_ + 1, clock_());
  std::string error;
  if (!store_.setRouteRevision(route_revision_, error)) {
    logEvent(LogLevel::kError, "cannot save the route revision").with("error", error).emit();
  }
}

void ControlPlane::commitGitspace(GitspaceRecord& gitspace,
                                  const std::vector<nlohmann::json>& before) {
  save(gitspace);
  if (routesOf(gitspace) != before) bumpRouteRevision();
}

bool ControlPlane::transition(GitspaceRecord& gitspace, GitspaceEvent event, std::string reason) {
  std::optional<GitspaceState> next = nextGitspaceState(gitspace.state, event);
  if (!next) {
    logEvent(LogLevel::kWarning, "transition refused")
        .with("gitspace", gitspace.id)
        .with("state", gitspaceStateName(gitspace.state))
        .with("event", gitspaceEventName(event))
        .emit();
    return false;
  }
  std::vector<nlohmann::json> before = routesOf(gitspace);
  GitspaceState from = gitspace.state;
  gitspace.state = *next;
  gitspace.state_reason = reason;
  gitspace.state_since_ms = clock_();
  commitGitspace(gitspace, before);
  std::string message = std::string(gitspaceStateName(from)) + " -> " + gitspaceStateName(*next);
  if (!reason.empty()) message += ": " + reason;
  logEvent(*next == GitspaceState::kError ? LogLevel::kWarning : LogLevel::kInfo,
           "gitspace state changed")
      .with("gitspace", gitspace.id)
      .with("from", gitspaceStateName(from))
      .with("to", gitspaceStateName(*next))
      .with("event", gitspaceEventName(event))
      .with("reason", reason)
      .emit();
  appendEvent(gitspace.id, "state_changed", message,
              {{"from", gitspaceStateName(from)},
               {"to", gitspaceStateName(*next)},
               {"event", gitspaceEventName(event)},
               {"reason", reason}});
  if (*next == GitspaceState::kError) {
    appendEvent(gitspace.id, "error", reason, {{"reason", reason}});
  }
  if (*next == GitspaceState::kDeleted) {
    appendEvent(gitspace.id, "deleted", "the Gitspace was deleted");
    streams_.finish(gitspace.id);
  }
  return true;
}

void ControlPlane::queueTask(GitspaceRecord& gitspace, TaskKind kind) {
  int64_t now = clock_();
  if (!gitspace.task_id.empty()) {
    TaskRecord* current = tasks_.find(gitspace.task_id);
    if (current && current->state == TaskState::kQueued) {
      save(tasks_.drop(current->id, std::string("superseded by a ") + taskKindName(kind) + " task",
                       now));
    }
  }
  TaskRecord task;
  task.id = "t-" + randomHex(8);
  task.kind = kind;
  task.gitspace = gitspace.id;
  TaskRecord& queued = tasks_.enqueue(std::move(task), now);
  save(queued);
  gitspace.task_id = queued.id;
  save(gitspace);
  logEvent(LogLevel::kInfo, "task queued")
      .with("task", queued.id)
      .with("kind", taskKindName(kind))
      .with("gitspace", gitspace.id)
      .with("behind_leased_task", tasks_.hasLeased(gitspace.id))
      .emit();
}

void ControlPlane::releaseCurrentTask(GitspaceRecord& gitspace, const std::string& reason) {
  if (gitspace.task_id.empty()) return;
  TaskRecord* current = tasks_.find(gitspace.task_id);
  if (current && current->state == TaskState::kQueued) {
    save(tasks_.drop(current->id, reason, clock_()));
  }
  // A leased one stays leased to its delegate (which may be at work), but
  // its result no longer moves the Gitspace; its lease runs out or it
  // finishes, and a task queued after it waits until then.
  gitspace.task_id.clear();
  save(gitspace);
}

void ControlPlane::clearMachine(GitspaceRecord& gitspace) {
  gitspace.machine_id.clear();
  gitspace.address.clear();
  gitspace.agent_port = 0;
  gitspace.ide_port = 0;
  gitspace.ssh_port = 0;
  gitspace.ide_protocol.clear();
  gitspace.forwarded_ports.clear();
}

// ---------------------------------------------------------------------------
// User API
// ---------------------------------------------------------------------------

ApiOutcome ControlPlane::createUser(const Caller& caller, const nlohmann::json& body) {
  if (!caller.user.admin()) return ApiOutcome::fail(403, "only admins may create users");
  ApiOutcome error;
  std::string name;
  std::string role = "user";
  if (!checkFields(body, {"name", "role"}, error) ||
      !readText(body, "name", true, 1, 64, TextRule::kName, name, error) ||
      !readText(body, "role", false, 1, 16, TextRule::kName, role, error)) {
    return error;
  }
  if (role != "user" && role != "admin")
    return ApiOutcome::fail(400, "must be user or admin", "role");
  std::string token = newSecretToken();
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [id, user] : users_) {
    if (user.name == name) return ApiOutcome::fail(409, "a user with this name exists", "name");
  }
  UserRecord user;
  user.id = newId("u-", 4, users_);
  user.name = name;
  user.role = role;
  user.token_hash = sha256Hex(token);
  user.created_at_ms = clock_();
  std::string store_error;
  if (!store_.saveUser(user, store_error)) {
    return ApiOutcome::fail(503, "cannot save the user: " + store_error);
  }
  user_by_token_[user.token_hash] = user.id;
  users_[user.id] = user;
  logEvent(LogLevel::kInfo, "user created")
      .with("user", user.id)
      .with("name", name)
      .with("role", role)
      .with("by", caller.user.id)
      .emit();
  return ApiOutcome::ok(201, {{"id", user.id}, {"name", name}, {"role", role}, {"token", token}});
}

ApiOutcome ControlPlane::me(const Caller& caller) {
  return ApiOutcome::ok(
      200, {{"id", caller.user.id}, {"name", caller.user.name}, {"role", caller.user.role}});
}

namespace {

nlohmann::json sshKeysJson(const std::vector<SshPublicKey>& keys) {
  nlohmann::json list = nlohmann::json::array();
  for (const SshPublicKey& key : keys) {
    list.push_back({{"key", key.line},
                    {"type", key.type},
                    {"comment", key.comment},
                    {"fingerprint", sshKeyFingerprint(key)}});
  }
  return {{"keys", std::move(list)}};
}

}  // namespace

ApiOutcome ControlPlane::sshKeys(const Caller& caller) {
  std::vector<SshPublicKey> keys;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto user = users_.find(caller.user.id);
    if (user == users_.end()) return ApiOutcome::fail(404, "no such user");
    for (const std::string& line : user->second.ssh_keys) {
      SshPublicKey key;
      std::string reason;
      // Stored keys passed this check when they were set.
      if (parseSshPublicKey(line, key, reason)) keys.push_back(std::move(key));
    }
  }
  return ApiOutcome::ok(200, sshKeysJson(keys));
}

ApiOutcome ControlPlane::setSshKeys(const Caller& caller, const nlohmann::json& body) {
  ApiOutcome error;
  if (!checkFields(body, {"keys"}, error)) return error;
  auto list = body.find("keys");
  if (list == body.end() || list->is_null()) return ApiOutcome::fail(400, "required", "keys");
  if (!list->is_array()) return ApiOutcome::fail(400, "must be an array of strings", "keys");
  if (list->size() > kMaxUserSshKeys) {
    return ApiOutcome::fail(400, "at most " + std::to_string(kMaxUserSshKeys) + " keys", "keys");
  }
  std::vector<SshPublicKey> keys;
  std::map<std::string, size_t> index_of_blob;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string field = "keys[" + std::to_string(i) + "]";
    const nlohmann::json& entry = (*list)[i];
    if (!entry.is_string()) return ApiOutcome::fail(400, "must be a string", field);
    SshPublicKey key;
    std::string reason;
    if (!parseSshPublicKey(entry.get<std::string>(), key, reason)) {
      return ApiOutcome::fail(400, reason, field);
    }
    auto [seen, added] = index_of_blob.emplace(key.blob, i);
    if (!added) {
      return ApiOutcome::fail(400, "the same key as keys[" + std::to_string(seen->second) + "]",
                              field);
    }
    keys.push_back(std::move(key));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto user = users_.find(caller.user.id);
  if (user == users_.end()) return ApiOutcome::fail(404, "no such user");
  UserRecord updated = user->second;
  updated.ssh_keys.clear();
  for (const SshPublicKey& key : keys) updated.ssh_keys.push_back(key.line);
  std::string store_error;
  if (!store_.saveUser(updated, store_error)) {
    return ApiOutcome::fail(503, "cannot save the keys: " + store_error);
  }
  user->second = std::move(updated);
  logEvent(LogLevel::kInfo, "ssh keys set")
      .with("user", caller.user.id)
      .with("keys", static_cast<int64_t>(keys.size()))
      .emit();
  return ApiOutcome::ok(200, sshKeysJson(keys));
}

ApiOutcome ControlPlane::createInfra(const Caller& caller, const nlohmann::json& body) {
  if (!caller.user.admin()) return ApiOutcome::fail(403, "only admins may create infra configs");
  ApiOutcome error;
  InfraRecord infra;
  int64_t port = infra.gateway_port;
  infra.idle_timeout_s = static_cast<int64_t>(config_.default_idle_timeout_ms / 1000);
  if (!checkFields(body,
                   {"name", "gateway_domain", "url_scheme", "gateway_port", "runner_pool",
                    "delegate_selector", "idle_timeout"},
                   error) ||
      !readText(body, "name", true, 1, 64, TextRule::kName, infra.name, error) ||
      !readText(body, "gateway_domain", true, 1, 200, TextRule::kPrintable, infra.gateway_domain,
                error) ||
      !readText(body, "url_scheme", false, 1, 8, TextRule::kName, infra.url_scheme, error) ||
      !readNumber(body, "gateway_port", false, 1, 65535, port, error) ||
      !readText(body, "runner_pool", false, 1, 12, TextRule::kPoolName, infra.runner_pool, error) ||
      !readText(body, "delegate_selector", false, 1, 64, TextRule::kName, infra.delegate_selector,
                error) ||
      !readDurationSeconds(body, "idle_timeout", kMaxIdleTimeoutS, infra.idle_timeout_s, error)) {
    return error;
  }
  if (!validGatewayDomain(infra.gateway_domain)) {
    return ApiOutcome::fail(400, "must be a lower-case DNS name of at most 200 characters",
                            "gateway_domain");
  }
  if (infra.url_scheme != "http" && infra.url_scheme != "https") {
    return ApiOutcome::fail(400, "must be http or https", "url_scheme");
  }
  infra.gateway_port = static_cast<int>(port);
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [id, existing] : infra_) {
    if (existing.name == infra.name) {
      return ApiOutcome::fail(409, "an infra config with this name exists", "name");
    }
  }
  infra.id = newId("inf-", 4, infra_);
  infra.created_at_ms = clock_();
  std::string store_error;
  if (!store_.saveInfra(infra, store_error)) {
    return ApiOutcome::fail(503, "cannot save the infra config: " + store_error);
  }
  infra_[infra.id] = infra;
  logEvent(LogLevel::kInfo, "infra created")
      .with("infra", infra.id)
      .with("name", infra.name)
      .with("gateway_domain", infra.gateway_domain)
      .emit();
  return ApiOutcome::ok(201, infraJson(infra));
}

ApiOutcome ControlPlane::listInfra(const Caller&) {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [id, infra] : infra_) list.push_back(infraJson(infra));
  return ApiOutcome::ok(200, {{"infra", list}});
}

ApiOutcome ControlPlane::createGitspace(const Caller& caller, const nlohmann::json& body) {
  ApiOutcome error;
  GitspaceRecord gitspace;
  std::string infra_ref;
  int64_t idle_timeout_s = -1;
  if (!checkFields(body, {"name", "repository", "branch", "ide", "infra", "idle_timeout"}, error) ||
      !readText(body, "name", true, 1, 64, TextRule::kLabel, gitspace.name, error) ||
      !readText(body, "repository", true, 1, 2048, TextRule::kPrintable, gitspace.repository,
                error) ||
      !readText(body, "branch", false, 0, 255, TextRule::kPrintable, gitspace.branch, error) ||
      !readText(body, "ide", true, 1, 16, TextRule::kName, gitspace.ide, error) ||
      !readText(body, "infra", false, 1, 64, TextRule::kName, infra_ref, error) ||
      !readDurationSeconds(body, "idle_timeout", kMaxIdleTimeoutS, idle_timeout_s, error)) {
    return error;
  }
  if (gitspace.ide != "jupyter" && gitspace.ide != "vscode-web" && gitspace.ide != "ssh") {
    return ApiOutcome::fail(400, "must be jupyter, vscode-web or ssh", "ide");
  }
  if (!gitspace.branch.empty() && gitspace.branch.front() == '-') {
    return ApiOutcome::fail(400, "must not start with '-'", "branch");
  }
  if (gitspace.repository.front() == '-') {
    return ApiOutcome::fail(400, "must not start with '-'", "repository");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const InfraRecord* infra = nullptr;
  if (infra_ref.empty()) {
    if (infra_.size() != 1) {
      return ApiOutcome::fail(400,
                              infra_.empty() ? "no infra config exists yet (an admin creates one)"
                                             : "required when there are several infra configs",
                              "infra");
    }
    infra = &infra_.begin()->second;
  } else {
    for (const auto& [id, candidate] : infra_) {
      if (candidate.id == infra_ref || candidate.name == infra_ref) infra = &candidate;
    }
    if (!infra) return ApiOutcome::fail(400, "no such infra config", "infra");
  }
  uint64_t owned = 0;
  for (const auto& [id, existing] : gitspaces_) {
    if (existing.owner != caller.user.id || existing.state == GitspaceState::kDeleted) continue;
    ++owned;
    if (existing.name == gitspace.name) {
      return ApiOutcome::fail(409, "you have a Gitspace with this name", "name");
    }
  }
  if (owned >= config_.limits.max_gitspaces_per_user) {
    return ApiOutcome::fail(409, "you have " + std::to_string(owned) +
                                     " Gitspaces, the most allowed; delete one first");
  }
  int64_t now = clock_();
  gitspace.id = newId("gs-", 4, gitspaces_);
  gitspace.owner = caller.user.id;
  gitspace.infra = infra->id;
  gitspace.idle_timeout_s = idle_timeout_s >= 0 ? idle_timeout_s : infra->idle_timeout_s;
  gitspace.created_at_ms = now;
  gitspace.state_since_ms = now;
  GitspaceRecord& stored = gitspaces_[gitspace.id] = gitspace;
  store_.begin();
  save(stored);
  appendEvent(stored.id, "gitspace_created", "Gitspace " + stored.name + " created",
              {{"name", stored.name}, {"repository", stored.repository}, {"ide", stored.ide}});
  transition(stored, GitspaceEvent::kCreate, "created");
  queueTask(stored, TaskKind::kStart);
  commitStore();
  dispatchParked(now);
  return ApiOutcome::ok(201, gitspaceJson(stored));
}

ApiOutcome ControlPlane::listGitspaces(const Caller& caller) {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [id, gitspace] : gitspaces_) {
    if (caller.user.admin() || gitspace.owner == caller.user.id) {
      list.push_back(gitspaceJson(gitspace));
    }
  }
  return ApiOutcome::ok(200, {{"gitspaces", list}});
}

ApiOutcome ControlPlane::getGitspace(const Caller& caller, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  GitspaceRecord* gitspace = visibleGitspace(caller, id);
  if (!gitspace) return ApiOutcome::fail(404, "no such Gitspace");
  return ApiOutcome::ok(200, gitspaceJson(*gitspace));
}

ApiOutcome ControlPlane::gitspaceAction(const Caller& caller, const std::string& id,
                                        const std::string& action) {
  GitspaceEvent event;
  TaskKind kind;
  if (action == "start") {
    event = GitspaceEvent::kStart;
    kind = TaskKind::kStart;
  } else if (action == "stop") {
    event = GitspaceEvent::kStop;
    kind = TaskKind::kStop;
  } else if (action == "reset") {
    event = GitspaceEvent::kReset;
    kind = TaskKind::kReset;
  } else if (action == "delete") {
    event = GitspaceEvent::kDelete;
    kind = TaskKind::kDelete;
  } else {
    return ApiOutcome::fail(404, "no such action (start, stop, reset)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  GitspaceRecord* gitspace = visibleGitspace(caller, id);
  if (!gitspace) return ApiOutcome::fail(404, "no such Gitspace");
  // A second delete while one is under way changes nothing.
  if (kind == TaskKind::kDelete && !gitspace->task_id.empty()) {
    TaskRecord* current = tasks_.find(gitspace->task_id);
    if (current && current->kind == TaskKind::kDelete) {
      return ApiOutcome::ok(202, gitspaceJson(*gitspace));
    }
  }
  if (!nextGitspaceState(gitspace->state, event)) {
    return ApiOutcome::fail(
        409, "cannot " + action + " a Gitspace that is " + gitspaceStateName(gitspace->state));
  }
  store_.begin();
  transition(*gitspace, event, action + " requested by " + caller.user.name);
  queueTask(*gitspace, kind);
  commitStore();
  dispatchParked(clock_());
  return ApiOutcome::ok(202, gitspaceJson(*gitspace));
}

ApiOutcome ControlPlane::issueToken(const Caller& caller, const std::string& id,
                                    const nlohmann::json& body) {
  ApiOutcome error;
  if (!checkFields(body, {"scope"}, error)) return error;
  std::string scope = "ide";
  if (body.contains("scope")) {
    const nlohmann::json& value = body["scope"];
    if (!value.is_string() || (value != "ide" && value != "ssh")) {
      return ApiOutcome::fail(400, "must be ide or ssh", "scope");
    }
    scope = value.get<std::string>();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  GitspaceRecord* gitspace = visibleGitspace(caller, id);
  if (!gitspace) return ApiOutcome::fail(404, "no such Gitspace");
  if (gitspace->state == GitspaceState::kDeleted) {
    return ApiOutcome::fail(409, "the Gitspace is deleted");
  }
  const InfraRecord* infra = infraOf(*gitspace);
  if (!infra) return ApiOutcome::fail(409, "the Gitspace's infra config is gone");
  bool ssh = scope == "ssh";
  // An ssh token is only worth having with a port to tunnel to: the one the
  // IDE route's tunnel_ports allows, which exists while the Gitspace runs.
  if (ssh && gitspace->state != GitspaceState::kRunning) {
    return ApiOutcome::fail(409, std::string("the Gitspace is ") +
                                     gitspaceStateName(gitspace->state) +
                                     ", not running: its ssh tunnel opens when it runs");
  }
  if (ssh && gitspace->ssh_port <= 0) {
    return ApiOutcome::fail(409, "the Gitspace's machine reported no ssh port");
  }
  AccessToken access;
  access.kid = signing_key_.kid;
  access.sub = gitspace->owner;
  access.gs = gitspace->id;
  access.iat = clock_() / 1000;
  access.exp = access.iat + static_cast<int64_t>(config_.token_ttl_ms / 1000);
  access.scopes = {scope};
  std::string token = signAccessToken(access, signing_key_);
  logEvent(LogLevel::kInfo, ssh ? "ssh token issued" : "ide token issued")
      .with("gitspace", gitspace->id)
      .with("owner", gitspace->owner)
      .with("by", caller.user.id)
      .with("exp", access.exp)
      .emit();
  nlohmann::json reply = {
      {"token", token}, {"scope", scope}, {"expires_at", formatUnixMs(access.exp * 1000)}};
  if (!ssh) {
    reply["url"] = gitspaceUrl(*gitspace, *infra) + "?sg_token=" + token;
    return ApiOutcome::ok(200, reply);
  }
  // No "url": an ssh token opens no page (IDE routes want scope ide).
  reply["ssh"] = {{"host", gitspaceHost(*gitspace, *infra)},
                  {"port", gitspace->ssh_port},
                  {"gateway", gatewayUrl(*infra)},
                  {"websocket_url", tunnelWebSocketUrl(*gitspace, *infra, gitspace->ssh_port)}};
  return ApiOutcome::ok(200, reply);
}

ApiOutcome ControlPlane::gateways(const Caller&) {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [key, report] : gateway_reports_) {
    auto delegate = delegates_.find(report.delegate);
    list.push_back(
        {{"delegate", delegate == delegates_.end() ? report.delegate : delegate->second.name},
         {"delegate_id", report.delegate},
         {"gateway", report.gateway},
         {"version", report.version},
         {"healthy", report.healthy},
         {"reported_at", formatUnixMs(report.reported_at_ms)}});
  }
  return ApiOutcome::ok(200, list);
}

ApiOutcome ControlPlane::openEventStream(const Caller& caller, const std::string& id, int64_t after,
                                         std::shared_ptr<ServiceExchange> exchange) {
  uint64_t stream_id = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    GitspaceRecord* gitspace = visibleGitspace(caller, id);
    if (!gitspace) return ApiOutcome::fail(404, "no such Gitspace");
    if (streams_.full()) {
      return ApiOutcome::fail(503, "too many open event streams; try again later");
    }
    if (streams_.countOf(caller.user.id) >= config_.limits.max_event_streams_per_user) {
      return ApiOutcome::fail(429, "you have too many open event streams");
    }
    std::vector<EventRecord> stored;
    std::string error;
    if (!store_.eventsAfter(id, after, config_.limits.events_per_gitspace, stored, error)) {
      return ApiOutcome::fail(503, "cannot read events: " + error);
    }
    // The newest events that fit the backlog bound, oldest first.
    std::vector<std::string> formatted;
    size_t bytes = 0;
    for (auto event = stored.rbegin(); event != stored.rend(); ++event) {
      std::string text = EventStreams::format(*event);
      if (bytes + text.size() > config_.limits.max_stream_backlog) break;
      bytes += text.size();
      formatted.push_back(std::move(text));
    }
    std::string backlog;
    backlog.reserve(bytes);
    for (auto text = formatted.rbegin(); text != formatted.rend(); ++text) backlog += *text;
    // Posted under the mutex: no live event can be sent before the backlog.
    bool ended = gitspace->state == GitspaceState::kDeleted;
    streams_.post([exchange, backlog = std::move(backlog), ended] {
      exchange->startStream(200, "text/event-stream", {{"X-Accel-Buffering", "no"}});
      if (!backlog.empty()) exchange->sendChunk(backlog);
      if (ended) exchange->finishStream();
    });
    if (ended) return ApiOutcome::done();
    stream_id = streams_.add(id, caller.user.id, exchange);
  }
  // Outside the mutex: the callback runs at once if the client is gone.
  exchange->setOnClientGone([this, stream_id] {
    std::lock_guard<std::mutex> lock(mutex_);
    streams_.remove(stream_id);
  });
  return ApiOutcome::done();
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

void ControlPlane::maintain() {
  runMaintenance(clock_());
}

void ControlPlane::runMaintenance(int64_t now) {
  std::lock_guard<std::mutex> lock(mutex_);
  store_.begin();
  // Leases that ran out.
  for (TaskQueue::Expired& expired : tasks_.expire(
           now, static_cast<int>(config_.limits.max_task_attempts), [this](const TaskRecord& task) {
             auto it = gitspaces_.find(task.gitspace);
             return it != gitspaces_.end() && it->second.task_id == task.id;
           })) {
    save(expired.task);
    logEvent(LogLevel::kWarning, "task lease ran out")
        .with("task", expired.task.id)
        .with("kind", taskKindName(expired.task.kind))
        .with("gitspace", expired.task.gitspace)
        .with("delegate", expired.task.delegate)
        .with("attempt", static_cast<int64_t>(expired.task.attempt))
        .with("outcome", expired.gave_up      ? "gave up"
                         : expired.superseded ? "dropped (superseded)"
                                              : "queued again")
        .emit();
    if (expired.gave_up) {
      auto it = gitspaces_.find(expired.task.gitspace);
      if (it != gitspaces_.end()) {
        it->second.task_id.clear();
        transition(it->second, GitspaceEvent::kFailed,
                   std::string(taskKindName(expired.task.kind)) +
                       " failed: no delegate finished the task");
      }
    }
  }
  // Busy states past their deadlines.
  for (auto& [id, gitspace] : gitspaces_) {
    if (!isBusyState(gitspace.state)) continue;
    uint64_t deadline = gitspace.state == GitspaceState::kStarting   ? config_.starting_deadline_ms
                        : gitspace.state == GitspaceState::kStopping ? config_.stopping_deadline_ms
                                                                     : config_.cleaning_deadline_ms;
    if (now - gitspace.state_since_ms <= static_cast<int64_t>(deadline)) continue;
    std::string reason = std::string(gitspaceStateName(gitspace.state)) +
                         " took longer than its deadline of " +
                         describeDuration(static_cast<int64_t>(deadline));
    releaseCurrentTask(gitspace, "cancelled: " + reason);
    transition(gitspace, GitspaceEvent::kDeadline, reason);
  }
  // Idle Gitspaces.
  for (auto& [id, gitspace] : gitspaces_) {
    if (gitspace.state != GitspaceState::kRunning || gitspace.idle_timeout_s <= 0) continue;
    int64_t since = std::max(gitspace.last_activity_ms, gitspace.state_since_ms);
    int64_t idle = now - since;
    if (idle <= gitspace.idle_timeout_s * 1000) continue;
    std::string how_long = idle >= 60'000 ? std::to_string(idle / 60'000) + " minutes"
                                          : std::to_string(idle / 1000) + " seconds";
    appendEvent(gitspace.id, "auto_stopped", "idle for " + how_long,
                {{"idle_ms", idle}, {"idle_timeout_s", gitspace.idle_timeout_s}});
    transition(gitspace, GitspaceEvent::kStop, "idle for " + how_long);
    queueTask(gitspace, TaskKind::kStop);
  }
  // Long polls that waited long enough.
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->deadline_ms > now) {
      ++it;
      continue;
    }
    ServiceResponse empty;
    empty.status = 204;
    empty.content_type = "application/json";
    respondLater(it->exchange, std::move(empty));
    it = parked_.erase(it);
  }
  if (now - last_keepalive_ms_ >= static_cast<int64_t>(config_.limits.stream_keepalive_ms)) {
    last_keepalive_ms_ = now;
    streams_.keepAlive();
  }
  if (now - last_prune_ms_ >= 3'600'000) {
    last_prune_ms_ = now;
    std::string error;
    store_.pruneFinishedTasks(now - kFinishedTaskRetentionMs, error);
  }
  commitStore();
  dispatchParked(now);
}

void ControlPlane::startMaintenance() {
  maintenance_thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(maintenance_mutex_);
    while (!maintenance_stop_) {
      lock.unlock();
      maintain();
      lock.lock();
      maintenance_wake_.wait_for(lock, std::chrono::milliseconds(kMaintenanceIntervalMs),
                                 [this] { return maintenance_stop_; });
    }
  });
}

void ControlPlane::stopMaintenance() {
  {
    std::lock_guard<std::mutex> lock(maintenance_mutex_);
    maintenance_stop_ = true;
  }
  maintenance_wake_.notify_all();
  if (maintenance_thread_.joinable()) maintenance_thread_.join();
}

int64_t ControlPlane::routeRevision() {
  std::lock_guard<std::mutex> lock(mutex_);
  return route_revision_;
}

std::optional<GitspaceRecord> ControlPlane::gitspace(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = gitspaces_.find(id);
  if (it == gitspaces_.end()) return std::nullopt;
  return it->second;
}

std::optional<TaskRecord> ControlPlane::liveTask(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  TaskRecord* task = tasks_.find(id);
  if (!task) return std::nullopt;
  return *task;
}

}  // namespace spacegate
