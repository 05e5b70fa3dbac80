// ControlPlane without HTTP, on a clock the test moves: the Gitspace
// lifecycle driven by task results, queue-after and supersede rules, leases
// that run out, deadlines, the gateway-health rule for start tasks, idle
// auto-stop, route revisions, and a restart on the same database.
#include "control/server/control_plane.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "control/server/secret_token.h"

namespace spacegate {
namespace {

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/control-plane-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    config_.state_dir = folder_;
    config_.task_lease_ms = 10'000;
    config_.starting_deadline_ms = 600'000;
    key_ = generateSigningKey("cp-test");
    open();
    std::string error;
    admin_token_ = newSecretToken();
    ASSERT_TRUE(plane_->bootstrapAdmin(sha256Hex(admin_token_), error)) << error;
    admin_ = plane_->authenticate(admin_token_);
    ASSERT_EQ(admin_.kind, Caller::Kind::kUser);
    ASSERT_EQ(plane_
                  ->createInfra(
                      admin_,
                      {{"name", "default"}, {"gateway_domain", "gs.test"}, {"idle_timeout", "1m"}})
                  .status,
              201);
  }
  void TearDown() override {
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(folder_);
  }
  void open() {
    plane_.reset();
    store_ = std::make_unique<ControlStore>();
    std::string error;
    ASSERT_TRUE(store_->open(folder_ + "/control.db", error)) << error;
    plane_ = std::make_unique<ControlPlane>(config_, *store_, key_, [this] { return now_; });
    ASSERT_TRUE(plane_->load(error)) << error;
  }

  std::string registerDelegate(const std::string& name, bool healthy_gateway = true) {
    nlohmann::json body = {{"name", name}, {"version", "1"}, {"selectors", {"default"}}};
    if (healthy_gateway) {
      body["gateways"] = {{{"name", "gw1"}, {"version", "1"}, {"healthy", true}}};
    }
    ApiOutcome outcome = plane_->registerDelegate(body);
    EXPECT_EQ(outcome.status, 200) << outcome.error << " " << outcome.field;
    return outcome.body["delegate_id"];
  }
  std::string createGitspace(const std::string& name = "gs") {
    ApiOutcome outcome = plane_->createGitspace(
        admin_, {{"name", name}, {"repository", "https://example.com/r.git"}, {"ide", "jupyter"}});
    EXPECT_EQ(outcome.status, 201) << outcome.error << " " << outcome.field;
    return outcome.body["id"];
  }
  nlohmann::json poll(const std::string& delegate) {
    ApiOutcome outcome = plane_->pollTask(delegate, 0, nullptr);
    if (outcome.status == 204) return nullptr;
    EXPECT_EQ(outcome.status, 200) << outcome.error;
    return outcome.body;
  }
  ApiOutcome result(const std::string& delegate, const nlohmann::json& task, bool ok,
                    nlohmann::json data = nlohmann::json::object()) {
    nlohmann::json body = {{"ok", ok}};
    if (ok) {
      body["data"] = data;
    } else {
      body["error"] = "it broke";
    }
    return plane_->taskResult(delegate, task["id"], body);
  }
  nlohmann::json machine() {
    return {{"machine_id", "m-1"}, {"address", "10.0.0.5"},   {"agent_port", 8090},
            {"ide_port", 8888},    {"ide_protocol", "http1"}, {"forwarded_ports", {3000}}};
  }
  GitspaceState state(const std::string& id) { return plane_->gitspace(id)->state; }
  std::vector<EventRecord> events(const std::string& id) {
    std::vector<EventRecord> list;
    std::string error;
    store_->eventsAfter(id, 0, 100'000, list, error);
    return list;
  }
  int countEvents(const std::string& id, const std::string& type) {
    int count = 0;
    for (const EventRecord& event : events(id)) count += event.type == type;
    return count;
  }
  size_t routeCount(const std::string& delegate) {
    return plane_->routes(delegate).body["routes"].size();
  }
  // Runs a start task to running.
  void runStart(const std::string& delegate, const std::string& id) {
    nlohmann::json task = poll(delegate);
    ASSERT_FALSE(task.is_null());
    ASSERT_EQ(task["kind"], "start");
    ASSERT_EQ(task["gitspace"]["id"], id);
    ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
    ASSERT_EQ(state(id), GitspaceState::kRunning);
  }

  std::string folder_;
  ControlPlaneConfig config_;
  SigningKey key_;
  int64_t now_ = 1'700'000'000'000;
  std::unique_ptr<ControlStore> store_;
  std::unique_ptr<ControlPlane> plane_;
  std::string admin_token_;
  Caller admin_;
};

TEST_F(ControlPlaneTest, TheWholeLifecycleDrivenByResults) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  EXPECT_EQ(state(id), GitspaceState::kStarting);
  int64_t revision = plane_->routeRevision();

  nlohmann::json task = poll(delegate);
  ASSERT_FALSE(task.is_null());
  EXPECT_EQ(task["kind"], "start");
  EXPECT_EQ(task["attempt"], 1);
  EXPECT_EQ(task["infra"]["gateway_domain"], "gs.test");
  EXPECT_EQ(task["lease_until_ms"], now_ + 10'000);
  // The agent token: scope agent, for this Gitspace, sub delegate.
  KeyRing ring;
  ring.add(key_.kid, key_.public_key);
  AccessToken agent;
  ASSERT_EQ(verifyAccessToken(task["agent_token"].get<std::string>(), ring, now_ / 1000, agent),
            TokenCheck::kValid);
  EXPECT_TRUE(agent.hasScope("agent"));
  EXPECT_EQ(agent.gs, id);
  EXPECT_EQ(agent.sub, "delegate");
  EXPECT_EQ(agent.exp - agent.iat, 15 * 60);

  // machine_assigned puts the agent route in the table at once.
  EXPECT_EQ(routeCount(delegate), 0u);
  nlohmann::json assigned = {
      {"events",
       {{{"type", "machine_assigned"},
         {"message", "machine m-1"},
         {"data", {{"machine_id", "m-1"}, {"address", "10.0.0.5"}, {"agent_port", 8090}}}}}}};
  now_ += 5000;
  ApiOutcome events_outcome = plane_->taskEvents(delegate, task["id"], assigned);
  ASSERT_EQ(events_outcome.status, 200) << events_outcome.error << events_outcome.field;
  EXPECT_EQ(events_outcome.body["lease_until_ms"], now_ + 10'000);  // extended
  EXPECT_GT(plane_->routeRevision(), revision);
  revision = plane_->routeRevision();
  EXPECT_EQ(routeCount(delegate), 1u);
  EXPECT_EQ(plane_->gitspace(id)->machine_id, "m-1");

  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kRunning);
  EXPECT_GT(plane_->routeRevision(), revision);
  EXPECT_EQ(routeCount(delegate), 4u);  // agent, IDE, port 3000, path
  EXPECT_EQ(plane_->gitspace(id)->forwarded_ports, std::vector<int>{3000});

  // A result for a finished task: 409.
  EXPECT_EQ(result(delegate, task, true, machine()).status, 409);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "stop").status, 202);
  EXPECT_EQ(state(id), GitspaceState::kStopping);
  EXPECT_EQ(routeCount(delegate), 1u);  // only the agent route while stopping
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "stop");
  EXPECT_EQ(task["gitspace"]["machine_id"], "m-1");
  ASSERT_EQ(result(delegate, task, true).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kStopped);
  EXPECT_EQ(routeCount(delegate), 0u);
  EXPECT_EQ(plane_->gitspaceAction(admin_, id, "stop").status, 409);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "start").status, 202);
  runStart(delegate, id);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "reset").status, 202);
  EXPECT_EQ(state(id), GitspaceState::kCleaning);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "reset");
  ASSERT_EQ(result(delegate, task, true).status, 200);
  // cleaned -> starting, with a new start task and no machine.
  EXPECT_EQ(state(id), GitspaceState::kStarting);
  EXPECT_EQ(plane_->gitspace(id)->machine_id, "");
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "start");
  EXPECT_EQ(task["gitspace"]["machine_id"], "");
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kRunning);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "delete").status, 202);
  EXPECT_EQ(state(id), GitspaceState::kCleaning);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "delete");
  ASSERT_EQ(result(delegate, task, true).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kDeleted);
  EXPECT_EQ(routeCount(delegate), 0u);
  EXPECT_EQ(plane_->gitspaceAction(admin_, id, "delete").status, 409);
  EXPECT_EQ(countEvents(id, "deleted"), 1);
  EXPECT_EQ(countEvents(id, "gitspace_created"), 1);
  EXPECT_EQ(countEvents(id, "machine_assigned"), 1);
}

TEST_F(ControlPlaneTest, FailedTaskPutsTheGitspaceInErrorAndStartRetries) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  nlohmann::json task = poll(delegate);
  ASSERT_EQ(result(delegate, task, false).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kError);
  EXPECT_EQ(plane_->gitspace(id)->state_reason, "start failed: it broke");
  EXPECT_EQ(countEvents(id, "error"), 1);
  EXPECT_EQ(plane_->gitspaceAction(admin_, id, "stop").status, 409);
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "start").status, 202);
  runStart(delegate, id);
}

TEST_F(ControlPlaneTest, ResultFromAnotherDelegateIsRefused) {
  std::string first = registerDelegate("d1");
  std::string second = registerDelegate("d2");
  std::string id = createGitspace();
  nlohmann::json task = poll(first);
  EXPECT_EQ(result(second, task, true, machine()).status, 409);
  EXPECT_EQ(plane_->taskEvents(second, task["id"], {{"events", nlohmann::json::array()}}).status,
            409);
  EXPECT_EQ(plane_->taskResult(first, "t-0000", {{"ok", true}}).status, 404);
  EXPECT_EQ(state(id), GitspaceState::kStarting);
  EXPECT_EQ(result(first, task, true, machine()).status, 200);
}

TEST_F(ControlPlaneTest, StartResultMustNameTheMachine) {
  std::string delegate = registerDelegate("d1");
  createGitspace();
  nlohmann::json task = poll(delegate);
  nlohmann::json data = machine();
  data.erase("ide_port");
  ApiOutcome outcome = result(delegate, task, true, data);
  EXPECT_EQ(outcome.status, 400);
  EXPECT_EQ(outcome.field, "data.ide_port");
  data = machine();
  data["address"] = "not an address";
  EXPECT_EQ(result(delegate, task, true, data).field, "data.address");
  data = machine();
  data.erase("agent_port");
  EXPECT_EQ(result(delegate, task, true, data).field, "data.agent_port");
  // Still leased: a good result is taken.
  EXPECT_EQ(result(delegate, task, true, machine()).status, 200);
}

TEST_F(ControlPlaneTest, ExpiredLeaseIsHandedOutAgainThenGivesUp) {
  std::string first = registerDelegate("d1");
  std::string second = registerDelegate("d2");
  std::string id = createGitspace();
  nlohmann::json task = poll(first);
  EXPECT_TRUE(poll(second).is_null());  // leased to d1
  now_ += 10'001;
  plane_->maintain();
  nlohmann::json again = poll(second);
  ASSERT_FALSE(again.is_null());
  EXPECT_EQ(again["id"], task["id"]);
  EXPECT_EQ(again["attempt"], 2);
  EXPECT_EQ(result(first, task, true, machine()).status, 409);  // d1's lease is over
  for (int attempt = 3; attempt <= 5; ++attempt) {
    now_ += 10'001;
    plane_->maintain();
    nlohmann::json next = poll(first);
    ASSERT_FALSE(next.is_null());
    EXPECT_EQ(next["attempt"], attempt);
  }
  now_ += 10'001;
  plane_->maintain();
  EXPECT_EQ(state(id), GitspaceState::kError);
  EXPECT_EQ(plane_->gitspace(id)->state_reason, "start failed: no delegate finished the task");
  EXPECT_TRUE(poll(first).is_null());
}

TEST_F(ControlPlaneTest, DeadlineCancelsAndALateResultNoLongerMovesTheState) {
  config_.starting_deadline_ms = 60'000;
  config_.task_lease_ms = 300'000;
  open();
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  nlohmann::json task = poll(delegate);
  now_ += 60'001;
  plane_->maintain();
  EXPECT_EQ(state(id), GitspaceState::kError);
  EXPECT_EQ(plane_->gitspace(id)->state_reason, "starting took longer than its deadline of 1m");
  EXPECT_EQ(plane_->gitspace(id)->task_id, "");
  // The delegate finishes late: accepted (it holds the lease), the machine
  // is remembered, the state stays error.
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kError);
  EXPECT_EQ(plane_->gitspace(id)->machine_id, "m-1");
  // A queued task past its deadline is dropped.
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "start").status, 202);
  std::string queued = plane_->gitspace(id)->task_id;
  now_ += 60'001;
  plane_->maintain();
  EXPECT_FALSE(plane_->liveTask(queued).has_value());
  EXPECT_TRUE(poll(delegate).is_null());
}

TEST_F(ControlPlaneTest, ActionQueuesAfterALeasedTaskAndSupersedesAQueuedOne) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  nlohmann::json start = poll(delegate);
  // Delete while the start is leased: accepted, queued behind it.
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "delete").status, 202);
  EXPECT_EQ(state(id), GitspaceState::kCleaning);
  EXPECT_TRUE(poll(delegate).is_null());
  // A second delete changes nothing.
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "delete").status, 202);
  // The start finishes: the machine is recorded, the state stays cleaning,
  // and the delete (carrying the machine) is handed out.
  ASSERT_EQ(result(delegate, start, true, machine()).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kCleaning);
  nlohmann::json del = poll(delegate);
  ASSERT_FALSE(del.is_null());
  EXPECT_EQ(del["kind"], "delete");
  EXPECT_EQ(del["gitspace"]["machine_id"], "m-1");
  ASSERT_EQ(result(delegate, del, true).status, 200);
  EXPECT_EQ(state(id), GitspaceState::kDeleted);

  // A queued stop is superseded by a delete: only the delete is handed out.
  std::string other = createGitspace("other");
  runStart(delegate, other);
  ASSERT_EQ(plane_->gitspaceAction(admin_, other, "stop").status, 202);
  std::string stop_id = plane_->gitspace(other)->task_id;
  ASSERT_EQ(plane_->gitspaceAction(admin_, other, "delete").status, 202);
  EXPECT_FALSE(plane_->liveTask(stop_id).has_value());
  nlohmann::json next = poll(delegate);
  ASSERT_EQ(next["kind"], "delete");
  EXPECT_TRUE(poll(delegate).is_null());
}

TEST_F(ControlPlaneTest, StartTasksWaitForAHealthyGatewayReport) {
  std::string delegate = registerDelegate("d1", false);
  std::string id = createGitspace();
  EXPECT_TRUE(poll(delegate).is_null());
  EXPECT_TRUE(poll(delegate).is_null());
  EXPECT_EQ(countEvents(id, "waiting_for_gateway"), 1);
  // An unhealthy gateway does not count.
  ASSERT_EQ(plane_->report(delegate, {{"gateways", {{{"name", "gw"}, {"healthy", false}}}}}).status,
            200);
  EXPECT_TRUE(poll(delegate).is_null());
  ASSERT_EQ(plane_->report(delegate, {{"gateways", {{{"name", "gw"}, {"healthy", true}}}}}).status,
            200);
  nlohmann::json task = poll(delegate);
  ASSERT_FALSE(task.is_null());
  EXPECT_EQ(task["kind"], "start");
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
  // Five minutes without a report: the next start waits again.
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "stop").status, 202);
  ASSERT_EQ(result(delegate, poll(delegate), true).status, 200);  // stop needs no gateway
  now_ += 5 * 60'000 + 1;
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "start").status, 202);
  EXPECT_TRUE(poll(delegate).is_null());
  EXPECT_EQ(countEvents(id, "waiting_for_gateway"), 2);
}

TEST_F(ControlPlaneTest, TasksGoOnlyToDelegatesWithTheInfrasSelector) {
  ASSERT_EQ(
      plane_
          ->createInfra(
              admin_, {{"name", "eu"}, {"gateway_domain", "eu.test"}, {"delegate_selector", "eu"}})
          .status,
      201);
  std::string plain = registerDelegate("d1");
  ApiOutcome eu = plane_->registerDelegate({{"name", "d-eu"},
                                            {"selectors", {"eu"}},
                                            {"gateways", {{{"name", "gw"}, {"healthy", true}}}}});
  std::string eu_id = eu.body["delegate_id"];
  ApiOutcome created = plane_->createGitspace(
      admin_, {{"name", "x"}, {"repository", "r"}, {"ide", "ssh"}, {"infra", "eu"}});
  ASSERT_EQ(created.status, 201);
  EXPECT_TRUE(poll(plain).is_null());
  nlohmann::json task = poll(eu_id);
  ASSERT_FALSE(task.is_null());
  EXPECT_EQ(task["infra"]["gateway_domain"], "eu.test");
}

TEST_F(ControlPlaneTest, IdleRunningGitspaceIsStopped) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  runStart(delegate, id);
  now_ += 50'000;
  plane_->maintain();
  EXPECT_EQ(state(id), GitspaceState::kRunning);
  // Activity 50 s into the run keeps it going for another minute.
  ASSERT_EQ(plane_
                ->report(delegate, {{"activity",
                                     {{{"gitspace", id},
                                       {"last_activity_unix_ms", now_},
                                       {"open_connections", 1},
                                       {"open_tunnels", 0}}}}})
                .status,
            200);
  now_ += 40'000;
  plane_->maintain();
  EXPECT_EQ(state(id), GitspaceState::kRunning);
  now_ += 30'000;
  plane_->maintain();
  EXPECT_EQ(state(id), GitspaceState::kStopping);
  ASSERT_EQ(countEvents(id, "auto_stopped"), 1);
  for (const EventRecord& event : events(id)) {
    if (event.type == "auto_stopped") {
      EXPECT_EQ(event.message, "idle for 1 minutes");
    }
  }
  nlohmann::json task = poll(delegate);
  ASSERT_FALSE(task.is_null());
  EXPECT_EQ(task["kind"], "stop");
}

TEST_F(ControlPlaneTest, UsersSeeOnlyTheirGitspaces) {
  ApiOutcome created = plane_->createUser(admin_, {{"name", "alice"}});
  ASSERT_EQ(created.status, 201);
  Caller alice = plane_->authenticate(created.body["token"].get<std::string>());
  ASSERT_EQ(alice.kind, Caller::Kind::kUser);
  EXPECT_EQ(plane_->createUser(alice, {{"name", "bob"}}).status, 403);
  EXPECT_EQ(plane_->createUser(admin_, {{"name", "alice"}}).status, 409);
  std::string admins = createGitspace();
  EXPECT_EQ(plane_->getGitspace(alice, admins).status, 404);
  EXPECT_EQ(plane_->gitspaceAction(alice, admins, "delete").status, 404);
  EXPECT_EQ(plane_->listGitspaces(alice).body["gitspaces"].size(), 0u);
  ApiOutcome own =
      plane_->createGitspace(alice, {{"name", "mine"}, {"repository", "r"}, {"ide", "vscode-web"}});
  ASSERT_EQ(own.status, 201);
  EXPECT_EQ(plane_->listGitspaces(alice).body["gitspaces"].size(), 1u);
  EXPECT_EQ(plane_->listGitspaces(admin_).body["gitspaces"].size(), 2u);
  // The IDE token is for the owner.
  ApiOutcome token = plane_->issueToken(admin_, own.body["id"]);
  ASSERT_EQ(token.status, 200);
  KeyRing ring;
  ring.add(key_.kid, key_.public_key);
  AccessToken access;
  ASSERT_EQ(verifyAccessToken(token.body["token"].get<std::string>(), ring, now_ / 1000, access),
            TokenCheck::kValid);
  EXPECT_EQ(access.sub, alice.user.id);
  EXPECT_EQ(access.gs, own.body["id"]);
  EXPECT_TRUE(access.hasScope("ide"));
  EXPECT_TRUE(access.aud.empty());
  EXPECT_EQ(
      token.body["url"].get<std::string>(),
      own.body["url"].get<std::string>() + "?sg_token=" + token.body["token"].get<std::string>());
}

TEST_F(ControlPlaneTest, SshTokensNameTheirTunnel) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  KeyRing ring;
  ring.add(key_.kid, key_.public_key);

  // The scope is checked before anything else; unknown fields too.
  ApiOutcome bad = plane_->issueToken(admin_, id, {{"scope", "root"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.field, "scope");
  EXPECT_EQ(plane_->issueToken(admin_, id, {{"scope", 22}}).field, "scope");
  EXPECT_EQ(plane_->issueToken(admin_, id, {{"scope", nullptr}}).field, "scope");
  EXPECT_EQ(plane_->issueToken(admin_, id, {{"scopes", "ssh"}}).status, 400);
  // Starting: no tunnel yet.
  ApiOutcome early = plane_->issueToken(admin_, id, {{"scope", "ssh"}});
  EXPECT_EQ(early.status, 409);
  EXPECT_NE(early.error.find("starting"), std::string::npos) << early.error;

  nlohmann::json task = poll(delegate);
  nlohmann::json data = machine();
  data["ssh_port"] = 2222;
  ASSERT_EQ(result(delegate, task, true, data).status, 200);
  ASSERT_EQ(state(id), GitspaceState::kRunning);
  EXPECT_EQ(plane_->gitspace(id)->ssh_port, 2222);
  EXPECT_EQ(plane_->getGitspace(admin_, id).body["ssh_port"], 2222);
  // The IDE route allows the machine's ssh port.
  bool found = false;
  ApiOutcome table = plane_->routes(delegate);
  for (const nlohmann::json& route : table.body["routes"]) {
    if (route["id"] != id) continue;
    found = true;
    EXPECT_EQ(route["tunnel_ports"], nlohmann::json::array({2222}));
  }
  EXPECT_TRUE(found);

  ApiOutcome ssh = plane_->issueToken(admin_, id, {{"scope", "ssh"}});
  ASSERT_EQ(ssh.status, 200) << ssh.error;
  AccessToken access;
  ASSERT_EQ(verifyAccessToken(ssh.body["token"].get<std::string>(), ring, now_ / 1000, access),
            TokenCheck::kValid);
  EXPECT_EQ(access.scopes, std::vector<std::string>{"ssh"});
  EXPECT_EQ(access.gs, id);
  EXPECT_EQ(access.sub, admin_.user.id);
  EXPECT_EQ(ssh.body["scope"], "ssh");
  EXPECT_FALSE(ssh.body.contains("url"));  // an ssh token opens no page
  EXPECT_EQ(ssh.body["ssh"], nlohmann::json({{"host", id + ".gs.test"},
                                             {"port", 2222},
                                             {"gateway", "http://gs.test:8080"},
                                             {"websocket_url", "ws://" + id +
                                                                   ".gs.test:8080/.spacegate/"
                                                                   "tunnel/2222"}}));
  // The default and an explicit "ide" are the IDE token, as before.
  for (const nlohmann::json& body : {nlohmann::json::object(), nlohmann::json{{"scope", "ide"}}}) {
    ApiOutcome ide = plane_->issueToken(admin_, id, body);
    ASSERT_EQ(ide.status, 200);
    ASSERT_EQ(verifyAccessToken(ide.body["token"].get<std::string>(), ring, now_ / 1000, access),
              TokenCheck::kValid);
    EXPECT_EQ(access.scopes, std::vector<std::string>{"ide"});
    EXPECT_TRUE(ide.body.contains("url"));
    EXPECT_FALSE(ide.body.contains("ssh"));
  }

  // The port survives a restart.
  open();
  admin_ = plane_->authenticate(admin_token_);
  EXPECT_EQ(plane_->gitspace(id)->ssh_port, 2222);
  EXPECT_EQ(plane_->issueToken(admin_, id, {{"scope", "ssh"}}).status, 200);

  // A start on a machine that reports no ssh port: no tunnel, no ssh token.
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "reset").status, 202);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "reset");
  ASSERT_EQ(result(delegate, task, true).status, 200);
  EXPECT_EQ(plane_->gitspace(id)->ssh_port, 0);  // the machine was forgotten
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "start");
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);
  ASSERT_EQ(state(id), GitspaceState::kRunning);
  ApiOutcome none = plane_->issueToken(admin_, id, {{"scope", "ssh"}});
  EXPECT_EQ(none.status, 409);
  EXPECT_NE(none.error.find("no ssh port"), std::string::npos) << none.error;
  EXPECT_TRUE(plane_->getGitspace(admin_, id).body["ssh_port"].is_null());
}

TEST_F(ControlPlaneTest, MachineDataRefusesABadSshPort) {
  std::string delegate = registerDelegate("d1");
  createGitspace();
  nlohmann::json task = poll(delegate);
  nlohmann::json data = machine();
  data["ssh_port"] = 70000;
  ApiOutcome refused = result(delegate, task, true, data);
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(refused.field, "data.ssh_port") << refused.error;
}

TEST_F(ControlPlaneTest, GitspaceLimitsAndValidation) {
  config_.limits.max_gitspaces_per_user = 2;
  open();
  admin_ = plane_->authenticate(admin_token_);
  createGitspace("a");
  EXPECT_EQ(
      plane_->createGitspace(admin_, {{"name", "a"}, {"repository", "r"}, {"ide", "ssh"}}).status,
      409);
  createGitspace("b");
  EXPECT_EQ(
      plane_->createGitspace(admin_, {{"name", "c"}, {"repository", "r"}, {"ide", "ssh"}}).status,
      409);
  auto field = [&](nlohmann::json body) { return plane_->createGitspace(admin_, body).field; };
  EXPECT_EQ(field({{"repository", "r"}, {"ide", "ssh"}}), "name");
  EXPECT_EQ(field({{"name", std::string(65, 'x')}, {"repository", "r"}, {"ide", "ssh"}}), "name");
  EXPECT_EQ(field({{"name", "x"}, {"repository", "has space"}, {"ide", "ssh"}}), "repository");
  EXPECT_EQ(field({{"name", "x"}, {"repository", "r"}, {"ide", "emacs"}}), "ide");
  EXPECT_EQ(field({{"name", "x"}, {"repository", "r"}, {"ide", "ssh"}, {"infra", "nope"}}),
            "infra");
  EXPECT_EQ(field({{"name", "x"}, {"repository", "r"}, {"ide", "ssh"}, {"idle_timeout", "x"}}),
            "idle_timeout");
  EXPECT_EQ(field({{"name", "x"}, {"repository", "r"}, {"ide", "ssh"}, {"colour", "red"}}),
            "colour");
}

TEST_F(ControlPlaneTest, RestartKeepsGitspacesTasksAndRevision) {
  std::string delegate = registerDelegate("d1");
  std::string running_id = createGitspace("running");
  runStart(delegate, running_id);
  std::string starting_id = createGitspace("starting");
  nlohmann::json leased = poll(delegate);
  ASSERT_EQ(leased["gitspace"]["id"], starting_id);
  int64_t revision = plane_->routeRevision();
  int64_t last_event = events(starting_id).back().id;

  open();  // a new process on the same database
  EXPECT_EQ(state(running_id), GitspaceState::kRunning);
  EXPECT_EQ(state(starting_id), GitspaceState::kStarting);
  EXPECT_EQ(plane_->routeRevision(), revision);
  EXPECT_EQ(routeCount(delegate), 4u);
  EXPECT_EQ(plane_->authenticate(admin_token_).kind, Caller::Kind::kUser);
  // The lease survived: still d1's, and its result is taken.
  std::optional<TaskRecord> task = plane_->liveTask(leased["id"]);
  ASSERT_TRUE(task.has_value());
  EXPECT_EQ(task->state, TaskState::kLeased);
  // After the lease runs out it is handed out again.
  now_ += 10'001;
  plane_->maintain();
  nlohmann::json again = poll(delegate);
  ASSERT_FALSE(again.is_null());
  EXPECT_EQ(again["id"], leased["id"]);
  EXPECT_EQ(again["attempt"], 2);
  ASSERT_EQ(result(delegate, again, true, machine()).status, 200);
  EXPECT_GT(plane_->routeRevision(), revision);
  EXPECT_GT(events(starting_id).back().id, last_event);
}

TEST_F(ControlPlaneTest, DelegateInputIsBounded) {
  std::string delegate = registerDelegate("d1");
  createGitspace();
  nlohmann::json task = poll(delegate);
  nlohmann::json many = nlohmann::json::array();
  for (int i = 0; i < 1001; ++i) many.push_back({{"type", "agent_setup_log"}, {"message", "x"}});
  EXPECT_EQ(plane_->taskEvents(delegate, task["id"], {{"events", many}}).field, "events");
  EXPECT_EQ(plane_
                ->taskEvents(delegate, task["id"],
                             {{"events", {{{"type", "Bad Type"}, {"message", "x"}}}}})
                .field,
            "events[0].type");
  EXPECT_EQ(plane_
                ->taskEvents(delegate, task["id"],
                             {{"events", {{{"type", "state_changed"}, {"message", "x"}}}}})
                .field,
            "events[0].type");
  EXPECT_EQ(plane_
                ->taskEvents(delegate, task["id"],
                             {{"events",
                               {{{"type", "machine_assigned"},
                                 {"data", {{"machine_id", "m"}, {"address", "10.0.0.1"}}}}}}})
                .field,
            "events[0].data.agent_port");
  EXPECT_EQ(plane_->registerDelegate({{"name", "x"}, {"selectors", nlohmann::json::array()}}).field,
            "selectors");
  EXPECT_EQ(plane_->report(delegate, {{"activity", {{{"gitspace", "gs-1"}}}}}).field,
            "activity[0].last_activity_unix_ms");
  EXPECT_EQ(plane_->report(delegate, {{"gateways", {{{"name", "gw"}}}}}).field,
            "gateways[0].healthy");
}

constexpr const char* kEd25519Key =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINRZTSniZdG46eWK+l3SlnxsqfTvxVYI+j2T1BT9D1y4 alice@laptop";
constexpr const char* kEcdsaKey =
    "ecdsa-sha2-nistp256 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEqb5uOIdTYBI3iclsoCtsihU3csOL+Yfeq8Nfjj"
    "LRPfpBVcpRmpQMWuPGu1Cw8hjrj3Auhpj3/ljgXFccCD0dQ= ci";

TEST_F(ControlPlaneTest, SshKeysAreSetListedAndKeptAcrossARestart) {
  EXPECT_EQ(plane_->sshKeys(admin_).body, nlohmann::json({{"keys", nlohmann::json::array()}}));
  ApiOutcome set = plane_->setSshKeys(admin_, {{"keys", {kEd25519Key, kEcdsaKey}}});
  ASSERT_EQ(set.status, 200) << set.error << " " << set.field;
  ASSERT_EQ(set.body["keys"].size(), 2u);
  EXPECT_EQ(
      set.body["keys"][0],
      nlohmann::json({{"key", kEd25519Key},
                      {"type", "ssh-ed25519"},
                      {"comment", "alice@laptop"},
                      {"fingerprint", "SHA256:h95eFf2MaRKpfwrQQvjK++hi4Z+0mutJ79qIkKDUvE4"}}));
  EXPECT_EQ(set.body["keys"][1]["fingerprint"],
            "SHA256:mo1Ryrvj7n/iwlnSCCnVFGFN8Ha79/Z0s0kHM6dKZ2g");
  EXPECT_EQ(plane_->sshKeys(admin_).body, set.body);

  // Another user's keys are theirs alone.
  ApiOutcome bob = plane_->createUser(admin_, {{"name", "bob"}});
  ASSERT_EQ(bob.status, 201);
  Caller bob_caller = plane_->authenticate(bob.body["token"].get<std::string>());
  EXPECT_TRUE(plane_->sshKeys(bob_caller).body["keys"].empty());

  open();  // a restart on the same database
  EXPECT_EQ(plane_->sshKeys(plane_->authenticate(admin_token_)).body, set.body);
  // An empty list removes them.
  ASSERT_EQ(plane_->setSshKeys(admin_, {{"keys", nlohmann::json::array()}}).status, 200);
  EXPECT_TRUE(plane_->sshKeys(admin_).body["keys"].empty());
}

TEST_F(ControlPlaneTest, ARefusedSshKeyPutNamesTheKeyAndChangesNothing) {
  ASSERT_EQ(plane_->setSshKeys(admin_, {{"keys", {kEd25519Key}}}).status, 200);
  nlohmann::json before = plane_->sshKeys(admin_).body;
  std::vector<std::string> too_many(21, kEd25519Key);
  struct Case {
    nlohmann::json body;
    const char* field;
    const char* error;
  };
  const Case cases[] = {
      {nlohmann::json::object(), "keys", "required"},
      {{{"keys", "ssh-ed25519 AAAA"}}, "keys", "must be an array"},
      {{{"keys", too_many}}, "keys", "at most 20 keys"},
      {{{"keys", {kEcdsaKey, 7}}}, "keys[1]", "must be a string"},
      {{{"keys", {kEcdsaKey, kEd25519Key, "ssh-dss AAAA x"}}}, "keys[2]", "key type"},
      {{{"keys", {std::string("no-pty ") + kEd25519Key}}}, "keys[0]", "options"},
      {{{"keys", {kEcdsaKey, std::string(kEcdsaKey) + " again"}}},
       "keys[1]",
       "the same key as keys[0]"},
      {{{"keys", {kEcdsaKey}}, {"colour", 1}}, "colour", ""},
  };
  for (const Case& c : cases) {
    ApiOutcome outcome = plane_->setSshKeys(admin_, c.body);
    EXPECT_EQ(outcome.status, 400) << c.body.dump();
    EXPECT_EQ(outcome.field, c.field) << c.body.dump() << ": " << outcome.error;
    EXPECT_NE(outcome.error.find(c.error), std::string::npos) << outcome.error;
  }
  EXPECT_EQ(plane_->sshKeys(admin_).body, before);
  open();
  EXPECT_EQ(plane_->sshKeys(plane_->authenticate(admin_token_)).body, before);
}

// Start and reset tasks carry the owner's keys as they are when the task is
// handed out; stop and delete tasks do not need them.
TEST_F(ControlPlaneTest, StartAndResetTasksCarryTheOwnersCurrentSshKeys) {
  std::string delegate = registerDelegate("d1");
  std::string id = createGitspace();
  ASSERT_EQ(plane_->setSshKeys(admin_, {{"keys", {kEd25519Key}}}).status, 200);
  nlohmann::json task = poll(delegate);
  ASSERT_EQ(task["kind"], "start");
  EXPECT_EQ(task["gitspace"]["ssh_authorized_keys"], nlohmann::json({kEd25519Key}));
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "stop").status, 202);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "stop");
  EXPECT_FALSE(task["gitspace"].contains("ssh_authorized_keys"));
  ASSERT_EQ(result(delegate, task, true).status, 200);

  // Keys changed while stopped reach the next start.
  ASSERT_EQ(plane_->setSshKeys(admin_, {{"keys", {kEcdsaKey, kEd25519Key}}}).status, 200);
  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "start").status, 202);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "start");
  EXPECT_EQ(task["gitspace"]["ssh_authorized_keys"], nlohmann::json({kEcdsaKey, kEd25519Key}));
  ASSERT_EQ(result(delegate, task, true, machine()).status, 200);

  ASSERT_EQ(plane_->gitspaceAction(admin_, id, "reset").status, 202);
  task = poll(delegate);
  ASSERT_EQ(task["kind"], "reset");
  EXPECT_EQ(task["gitspace"]["ssh_authorized_keys"].size(), 2u);
}

}  // namespace
}  // namespace spacegate
