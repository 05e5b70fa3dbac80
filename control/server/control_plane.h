// ControlPlane: users, infra configs, Gitspaces and their lifecycle, the task
// queue, delegates and what they report, and event streams — the state the
// HTTP API (ControlHttpApi) reads and changes. Every change goes through
// here, under one mutex, and is written to ControlStore in one transaction
// before the answer leaves; every state change goes through
// nextGitspaceState().
//
// Threads: API calls come from the server's loop thread and only ever take
// the mutex briefly (no call waits for a delegate: a long poll parks its
// exchange and is answered later). A maintenance thread runs every 250 ms:
// lease expiries, deadlines, idle Gitspaces, long polls that waited long
// enough, stream keep-alives. Answers that leave while the mutex is held
// (parked polls, stream bytes) go through the server's loop (`post`), never
// inline, so no exchange callback can come back into a held mutex.
#pragma once

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "auth/access_token.h"
#include "control/server/control_config.h"
#include "control/server/control_records.h"
#include "control/server/control_store.h"
#include "control/server/event_streams.h"
#include "control/server/task_queue.h"
#include "service/service_server.h"

namespace spacegate {

// The answer to an API call: a status and a body, or an error with the
// request field it concerns.
struct ApiOutcome {
  int status = 200;
  nlohmann::json body;
  std::string error;
  std::string field;
  bool handled = false;  // the exchange was answered (or parked) already
  std::string allow;     // with 405: the methods allowed

  static ApiOutcome ok(int status, nlohmann::json body) {
    return ApiOutcome{status, std::move(body), {}, {}, false, {}};
  }
  static ApiOutcome fail(int status, std::string error, std::string field = {}) {
    return ApiOutcome{status, nullptr, std::move(error), std::move(field), false, {}};
  }
  static ApiOutcome done() { return ApiOutcome{200, nullptr, {}, {}, true, {}}; }
  static ApiOutcome methodNotAllowed(std::string allow) {
    ApiOutcome outcome = fail(405, "method not allowed");
    outcome.allow = std::move(allow);
    return outcome;
  }
};

// Who is calling, from the bearer token.
struct Caller {
  enum class Kind { kNone, kUser, kDelegate };
  Kind kind = Kind::kNone;
  UserRecord user;  // kUser
};

class ControlPlane {
 public:
  using Clock = std::function<int64_t()>;

  ControlPlane(ControlPlaneConfig config, ControlStore& store, SigningKey signing_key,
               Clock clock = unixNowMs);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // Reads the database. False with a reason.
  bool load(std::string& error);
  // How answers reach the server's loop (ServiceServer::post). Without it
  // they are given inline (tests).
  void setPost(EventStreams::Post post);

  // First start: the admin user and the delegate token (their hashes).
  bool hasAdmin();
  bool hasDelegateToken();
  bool bootstrapAdmin(const std::string& token_hash, std::string& error);
  bool addDelegateToken(const std::string& token_hash, std::string& error);

  Caller authenticate(std::string_view bearer_token);
  nlohmann::json publicKeyJson() const;
  const ControlPlaneConfig& config() const { return config_; }

  // User API (docs/control-plane.md). Bodies are parsed JSON objects.
  ApiOutcome createUser(const Caller& caller, const nlohmann::json& body);
  ApiOutcome me(const Caller& caller);
  // The caller's SSH public keys, each with its type, comment and SHA256
  // fingerprint; set replaces them all ({"keys": [line, ...]}), or refuses
  // naming the first bad key ("keys[2]") and changes nothing.
  ApiOutcome sshKeys(const Caller& caller);
  ApiOutcome setSshKeys(const Caller& caller, const nlohmann::json& body);
  ApiOutcome createInfra(const Caller& caller, const nlohmann::json& body);
  ApiOutcome listInfra(const Caller& caller);
  ApiOutcome createGitspace(const Caller& caller, const nlohmann::json& body);
  ApiOutcome listGitspaces(const Caller& caller);
  ApiOutcome getGitspace(const Caller& caller, const std::string& id);
  // action: "start", "stop", "reset" or "delete".
  ApiOutcome gitspaceAction(const Caller& caller, const std::string& id, const std::string& action);
  // body: {"scope": "ide" (default) | "ssh"}. An ssh token comes with where
  // its tunnel goes (the "ssh" object of the reply).
  ApiOutcome issueToken(const Caller& caller, const std::string& id,
                        const nlohmann::json& body = nlohmann::json::object());
  ApiOutcome gateways(const Caller& caller);
  // Starts an SSE stream on `exchange`: the stored events after `after`,
  // then live ones. handled on success.
  ApiOutcome openEventStream(const Caller& caller, const std::string& id, int64_t after,
                             std::shared_ptr<ServiceExchange> exchange);

  // Delegate API. `delegate_header` is X-Spacegate-Delegate (nullptr when
  // absent); resolveDelegate() turns it into a registered delegate's id.
  ApiOutcome registerDelegate(const nlohmann::json& body);
  ApiOutcome resolveDelegate(const std::string* delegate_header, std::string& delegate_id);
  // Answers at once with a task, or parks the exchange for up to wait_s
  // seconds (204 when nothing came). handled when parked or answered.
  ApiOutcome pollTask(const std::string& delegate_id, int wait_s,
                      std::shared_ptr<ServiceExchange> exchange);
  ApiOutcome taskEvents(const std::string& delegate_id, const std::string& task_id,
                        const nlohmann::json& body);
  ApiOutcome taskResult(const std::string& delegate_id, const std::string& task_id,
                        const nlohmann::json& body);
  ApiOutcome routes(const std::string& delegate_id);
  ApiOutcome report(const std::string& delegate_id, const nlohmann::json& body);

  // One maintenance step at `now` (the thread calls it; tests call it).
  void maintain();
  void startMaintenance();
  void stopMaintenance();

  // For tests and logs.
  int64_t routeRevision();
  std::optional<GitspaceRecord> gitspace(const std::string& id);
  std::optional<TaskRecord> liveTask(const std::string& id);

 private:
  struct ParkedPoll {
    uint64_t id;
    std::string delegate;
    int64_t deadline_ms;
    std::shared_ptr<ServiceExchange> exchange;
  };

  // All of these run with mutex_ held.
  nlohmann::json gitspaceJson(const GitspaceRecord& gitspace) const;
  nlohmann::json infraJson(const InfraRecord& infra) const;
  GitspaceRecord* visibleGitspace(const Caller& caller, const std::string& id);
  const InfraRecord* infraOf(const GitspaceRecord& gitspace) const;
  std::vector<nlohmann::json> routesOf(const GitspaceRecord& gitspace) const;
  void save(const GitspaceRecord& gitspace);
  void save(const TaskRecord& task);
  void appendEvent(const std::string& gitspace, std::string type, std::string message,
                   nlohmann::json data = nullptr);
  // Applies nextGitspaceState(); false (and nothing changes) when refused.
  bool transition(GitspaceRecord& gitspace, GitspaceEvent event, std::string reason);
  // Saves the Gitspace and grows the route revision when its routes differ
  // from `before`.
  void commitGitspace(GitspaceRecord& gitspace, const std::vector<nlohmann::json>& before);
  void bumpRouteRevision();
  // Queues a task of `kind` as the Gitspace's current one; a queued current
  // task is superseded (a leased one finishes or expires first).
  void queueTask(GitspaceRecord& gitspace, TaskKind kind);
  // The Gitspace stops waiting for its current task (deadline): a queued one
  // fails, a leased one is no longer current.
  void releaseCurrentTask(GitspaceRecord& gitspace, const std::string& reason);
  void clearMachine(GitspaceRecord& gitspace);
  bool gatewayFresh(const std::string& delegate_id, int64_t now_ms) const;
  bool delegateServes(const DelegateRecord& delegate, const GitspaceRecord& gitspace) const;
  // Leases the next task this delegate may take; the task JSON, or null.
  nlohmann::json leaseNextTask(const std::string& delegate_id, int64_t now_ms);
  nlohmann::json taskJson(const TaskRecord& task, const GitspaceRecord& gitspace,
                          const InfraRecord& infra, int64_t now_ms) const;
  // Hands tasks to parked polls that can take them.
  void dispatchParked(int64_t now_ms);
  void respondLater(const std::shared_ptr<ServiceExchange>& exchange, ServiceResponse response);
  void commitStore();
  void runMaintenance(int64_t now_ms);
  bool validMachineData(const nlohmann::json& data, bool require_all, std::string& field,
                        std::string& reason) const;
  void recordMachine(GitspaceRecord& gitspace, const nlohmann::json& data);

  ControlPlaneConfig config_;
  ControlStore& store_;
  SigningKey signing_key_;
  Clock clock_;

  std::mutex mutex_;
  std::map<std::string, UserRecord> users_;           // by id
  std::map<std::string, std::string> user_by_token_;  // token hash -> user id
  std::set<std::string> delegate_token_hashes_;
  std::map<std::string, InfraRecord> infra_;         // by id
  std::map<std::string, DelegateRecord> delegates_;  // by id
  std::map<std::pair<std::string, std::string>, GatewayReport> gateway_reports_;
  std::map<std::string, GitspaceRecord> gitspaces_;  // by id
  TaskQueue tasks_;
  int64_t route_revision_ = 0;
  // Gitspace → the route version that first holds its IDE routes, until a
  // gateway report shows it (then the event ide_routes_completed).
  std::map<std::string, int64_t> ide_routes_pending_;
  EventStreams streams_;
  std::list<ParkedPoll> parked_;
  uint64_t next_poll_id_ = 1;
  int64_t last_keepalive_ms_ = 0;
  int64_t last_prune_ms_ = 0;

  std::mutex maintenance_mutex_;
  std::condition_variable maintenance_wake_;
  bool maintenance_stop_ = false;
  std::thread maintenance_thread_;
};

}  // namespace spacegate
