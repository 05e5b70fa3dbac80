// AgentApi, driven through its AgentReply seam with requests made here: the
// routing answers, the runner's assignment, the whole token matrix (no
// token, another scheme, malformed, unknown key, forged signature, expired,
// not yet valid, wrong scope, another Gitspace, "*"), the unassigned
// machine, PUT validation and idempotence, stop/start/delete answers and the
// log endpoint. The controller is the real one on a temporary disk; the
// specs point at a repository that does not exist, so setup fails at once
// without starting an IDE.
#include "runner/agent/agent_api.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace spacegate {
namespace {

constexpr int64_t kNow = 1'800'000'000;

class RecordingReply : public AgentReply {
 public:
  void respond(ServiceResponse response) override {
    std::lock_guard<std::mutex> lock(mutex_);
    response_ = std::move(response);
    answered_ = true;
    changed_.notify_all();
  }
  void startStream(int status, std::string content_type) override {
    std::lock_guard<std::mutex> lock(mutex_);
    response_.status = status;
    response_.content_type = std::move(content_type);
    streaming_ = true;
  }
  void sendChunk(std::string bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    response_.body += bytes;
    changed_.notify_all();
  }
  void finishStream() override {
    std::lock_guard<std::mutex> lock(mutex_);
    answered_ = true;
    changed_.notify_all();
  }
  void setOnClientGone(std::function<void()> callback) override {
    std::lock_guard<std::mutex> lock(mutex_);
    on_gone_ = std::move(callback);
  }

  // The complete answer (waiting for an asynchronous one).
  ServiceResponse wait(int timeout_ms = 20'000) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] { return answered_; });
    EXPECT_TRUE(answered_) << "no answer";
    return response_;
  }
  bool answered() {
    std::lock_guard<std::mutex> lock(mutex_);
    return answered_;
  }
  bool streaming() {
    std::lock_guard<std::mutex> lock(mutex_);
    return streaming_;
  }
  void goAway() {
    std::function<void()> callback;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      callback.swap(on_gone_);
    }
    if (callback) callback();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  ServiceResponse response_;
  bool answered_ = false;
  bool streaming_ = false;
  std::function<void()> on_gone_;
};

std::string headerValue(const ServiceResponse& response, const std::string& name) {
  for (const auto& [key, value] : response.headers) {
    if (key == name) return value;
  }
  return "";
}

nlohmann::json bodyJson(const ServiceResponse& response) {
  return nlohmann::json::parse(response.body, nullptr, false);
}

class AgentApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/agent-api-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    disk_ = pattern;
    key_ = generateSigningKey("k1");
    config_.machine_id = "machine-1";
    config_.listen = "127.0.0.1:0";
    config_.runner_secret = "runner-secret-0123456789";
    config_.disk = disk_ + "/disk";
    config_.ide_host = "127.0.0.1";
    config_.keys = {{"k1", key_.public_key}};
    start();
  }

  void start() {
    log_ = std::make_unique<SetupLog>();
    controller_ = std::make_unique<GitspaceController>(config_, *log_);
    std::string error;
    ASSERT_TRUE(controller_->boot(error)) << error;
    api_ = std::make_unique<AgentApi>(*controller_, *log_, [] { return kNow; });
  }

  void TearDown() override {
    if (controller_) controller_->shutdown();
    api_.reset();
    controller_.reset();
    std::string error;
    ASSERT_TRUE(removeTree(disk_, error)) << error;
  }

  std::shared_ptr<RecordingReply> send(const std::string& method, const std::string& target,
                                       const std::string& body = "",
                                       const std::string& authorization = "") {
    ServiceRequest request;
    request.method = method;
    size_t question = target.find('?');
    request.path = target.substr(0, question);
    if (question != std::string::npos) request.query = target.substr(question + 1);
    request.body = body;
    request.over_tcp = true;
    if (!authorization.empty()) request.headers.emplace_back("authorization", authorization);
    auto reply = std::make_shared<RecordingReply>();
    api_->serve(request, reply);
    return reply;
  }

  ServiceResponse call(const std::string& method, const std::string& target,
                       const std::string& body = "", const std::string& authorization = "") {
    return send(method, target, body, authorization)->wait();
  }

  std::string token(const std::string& gs, std::vector<std::string> scopes = {"agent"},
                    int64_t exp = kNow + 3600, int64_t iat = kNow - 10,
                    const SigningKey* key = nullptr) {
    AccessToken access;
    access.sub = "user-1";
    access.gs = gs;
    access.iat = iat;
    access.exp = exp;
    access.scopes = std::move(scopes);
    return "Bearer " + signAccessToken(access, key ? *key : key_);
  }

  void assign(const std::string& id = "gs-a") {
    ServiceResponse response =
        call("PUT", "/v1/machine/assignment", "{\"gitspace_id\": \"" + id + "\"}",
             "Bearer " + config_.runner_secret);
    ASSERT_EQ(response.status, 200) << response.body;
  }

  // Waits until GET /v1/gitspace shows `state`.
  nlohmann::json waitForState(const std::string& state, int timeout_ms = 20'000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    nlohmann::json status;
    while (std::chrono::steady_clock::now() < deadline) {
      status = bodyJson(call("GET", "/v1/gitspace", "", token("gs-a")));
      if (status.value("state", "") == state) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "state never became " << state << ": " << status.dump();
    return status;
  }

  std::string specBody(const std::string& repository = "/nonexistent/spacegate-test/app.git") {
    return "{\"repository\": \"" + repository + "\", \"ide\": \"jupyter\"}";
  }

  std::string disk_;
  SigningKey key_;
  AgentConfig config_;
  std::unique_ptr<SetupLog> log_;
  std::unique_ptr<GitspaceController> controller_;
  std::unique_ptr<AgentApi> api_;
};

TEST_F(AgentApiTest, HealthNeedsNoToken) {
  ServiceResponse response = call("GET", "/healthz");
  ASSERT_EQ(response.status, 200);
  nlohmann::json body = bodyJson(response);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["machine_id"], "machine-1");
  EXPECT_EQ(body["gitspace_id"], "");
  EXPECT_EQ(body["gitspace_state"], "uninitialized");
}

TEST_F(AgentApiTest, UnknownPathAndWrongMethod) {
  EXPECT_EQ(call("GET", "/v1/nothing").status, 404);
  EXPECT_EQ(call("GET", "/v1/gitspace/").status, 404);
  ServiceResponse response = call("POST", "/v1/gitspace");
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(headerValue(response, "Allow"), "GET, PUT, DELETE");
  response = call("GET", "/v1/gitspace/stop");
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(headerValue(response, "Allow"), "POST");
  EXPECT_EQ(headerValue(call("POST", "/healthz"), "Allow"), "GET");
  EXPECT_EQ(headerValue(call("GET", "/v1/machine/assignment"), "Allow"), "PUT");
}

TEST_F(AgentApiTest, AssignmentNeedsTheRunnerSecret) {
  std::string body = R"({"gitspace_id": "gs-a"})";
  ServiceResponse response = call("PUT", "/v1/machine/assignment", body);
  EXPECT_EQ(response.status, 401);
  EXPECT_NE(headerValue(response, "WWW-Authenticate").find("Bearer"), std::string::npos);
  EXPECT_EQ(call("PUT", "/v1/machine/assignment", body, "Bearer wrong").status, 401);
  // An agent token is not the runner's secret.
  EXPECT_EQ(call("PUT", "/v1/machine/assignment", body, token("gs-a")).status, 401);
  EXPECT_EQ(bodyJson(call("GET", "/healthz"))["gitspace_id"], "");
}

TEST_F(AgentApiTest, AssignmentValidatesAndIsIdempotent) {
  std::string secret = "Bearer " + config_.runner_secret;
  struct Bad {
    std::string body;
    std::string field;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"nope", ""},
           {"[]", ""},
           {"{}", "gitspace_id"},
           {R"({"gitspace_id": ""})", "gitspace_id"},
           {R"({"gitspace_id": 7})", "gitspace_id"},
           {R"({"gitspace_id": "a/b"})", "gitspace_id"},
           {R"({"gitspace_id": "a b"})", "gitspace_id"},
           {"{\"gitspace_id\": \"" + std::string(129, 'a') + "\"}", "gitspace_id"},
           {R"({"gitspace_id": "gs-a", "pool": "x"})", "pool"},
       }) {
    ServiceResponse response = call("PUT", "/v1/machine/assignment", bad.body, secret);
    EXPECT_EQ(response.status, 400) << bad.body;
    EXPECT_EQ(bodyJson(response).value("field", ""), bad.field) << bad.body;
  }
  std::string id128(128, 'x');
  EXPECT_EQ(
      call("PUT", "/v1/machine/assignment", "{\"gitspace_id\": \"" + id128 + "\"}", secret).status,
      200);
  EXPECT_EQ(
      call("PUT", "/v1/machine/assignment", "{\"gitspace_id\": \"" + id128 + "\"}", secret).status,
      200);
  ServiceResponse conflict =
      call("PUT", "/v1/machine/assignment", R"({"gitspace_id": "gs-other"})", secret);
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(bodyJson(call("GET", "/healthz"))["gitspace_id"], id128);
}

TEST_F(AgentApiTest, AssignmentSurvivesARestart) {
  assign("gs-a");
  controller_->shutdown();
  api_.reset();
  controller_.reset();
  start();
  EXPECT_EQ(bodyJson(call("GET", "/healthz"))["gitspace_id"], "gs-a");
  EXPECT_EQ(call("PUT", "/v1/machine/assignment", R"({"gitspace_id": "gs-b"})",
                 "Bearer " + config_.runner_secret)
                .status,
            409);
}

TEST_F(AgentApiTest, UnassignedMachineIsAConflict) {
  ServiceResponse response = call("GET", "/v1/gitspace", "", token("gs-a"));
  EXPECT_EQ(response.status, 409);
  EXPECT_EQ(bodyJson(response)["error"], "machine is not assigned to a Gitspace");
  EXPECT_EQ(call("PUT", "/v1/gitspace", specBody(), token("gs-a")).status, 409);
  // Authentication still comes first.
  EXPECT_EQ(call("GET", "/v1/gitspace").status, 401);
}

TEST_F(AgentApiTest, TokenMatrix) {
  assign("gs-a");
  SigningKey other_kid = generateSigningKey("k9");
  SigningKey same_kid_other_key = generateSigningKey("k1");
  struct Case {
    std::string name;
    std::string authorization;
    int status;
    std::string error_part;
  };
  std::string good = token("gs-a");
  std::string tampered = good;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  const std::vector<Case> cases = {
      {"no token", "", 401, "missing bearer token"},
      {"basic auth", "Basic dXNlcjpwYXNz", 401, "bearer token"},
      {"malformed", "Bearer not-a-token", 401, "malformed"},
      {"oversized", "Bearer v1." + std::string(kMaxTokenLength, 'a') + ".b", 401, "malformed"},
      {"unknown key", token("gs-a", {"agent"}, kNow + 3600, kNow - 10, &other_kid), 401,
       "unknown key"},
      {"forged signature", token("gs-a", {"agent"}, kNow + 3600, kNow - 10, &same_kid_other_key),
       401, "signature"},
      {"tampered signature", tampered, 401, ""},
      {"expired", token("gs-a", {"agent"}, kNow - 1, kNow - 100), 401, "expired"},
      {"not yet valid", token("gs-a", {"agent"}, kNow + 7200, kNow + 3600), 401, "not valid yet"},
      {"wrong scope", token("gs-a", {"ide", "ssh"}), 403, "token scope does not include agent"},
      {"port scope only", token("gs-a", {"port:8888"}), 403, "token scope does not include agent"},
      {"other gitspace", token("gs-b"), 403, "token is for another Gitspace"},
      {"wildcard gitspace", token("*"), 403, "token is for another Gitspace"},
      {"valid", good, 200, ""},
      {"valid with more scopes", token("gs-a", {"ide", "agent"}), 200, ""},
  };
  for (const Case& test : cases) {
    for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
             {"GET", "/v1/gitspace"}, {"GET", "/v1/gitspace/logs"}}) {
      ServiceResponse response = call(method, target, "", test.authorization);
      EXPECT_EQ(response.status, test.status)
          << test.name << " " << target << ": " << response.body;
      if (test.status == 401) {
        EXPECT_NE(headerValue(response, "WWW-Authenticate").find("Bearer"), std::string::npos)
            << test.name;
      }
      if (!test.error_part.empty()) {
        EXPECT_NE(bodyJson(response).value("error", "").find(test.error_part), std::string::npos)
            << test.name << ": " << response.body;
      }
    }
  }
  // Refused tokens change nothing.
  for (const Case& test : cases) {
    if (test.status == 200) continue;
    EXPECT_NE(call("PUT", "/v1/gitspace", specBody(), test.authorization).status, 202) << test.name;
    EXPECT_NE(call("POST", "/v1/gitspace/start", "", test.authorization).status, 202) << test.name;
  }
  EXPECT_EQ(bodyJson(call("GET", "/healthz"))["gitspace_state"], "uninitialized");
}

TEST_F(AgentApiTest, PutValidatesTheBody) {
  assign();
  ServiceResponse response =
      call("PUT", "/v1/gitspace", R"({"repository": "/r/app", "ide": "notepad"})", token("gs-a"));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(bodyJson(response)["field"], "ide");
  response = call("PUT", "/v1/gitspace", R"({"repository": "/r/app", "ide": "ssh", "colour": 1})",
                  token("gs-a"));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(bodyJson(response)["field"], "colour");
  EXPECT_NE(bodyJson(response)["error"].get<std::string>().find("colour"), std::string::npos);
  response = call("PUT", "/v1/gitspace", "{", token("gs-a"));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(bodyJson(call("GET", "/v1/gitspace", "", token("gs-a")))["state"], "uninitialized");
}

TEST_F(AgentApiTest, PutIsIdempotentAndRefusesAnotherSpec) {
  assign();
  ServiceResponse response = call("PUT", "/v1/gitspace", specBody(), token("gs-a"));
  ASSERT_EQ(response.status, 202) << response.body;
  nlohmann::json status = bodyJson(response);
  EXPECT_EQ(status["state"], "setting_up");
  EXPECT_EQ(status["ide"]["kind"], "jupyter");
  EXPECT_EQ(status["ide"]["protocol"], "http");
  EXPECT_EQ(status["ide"]["host"], "127.0.0.1");
  EXPECT_EQ(status["ide"]["port"], 8888);
  EXPECT_EQ(status["workspace"], config_.disk + "/workspace/app");
  // The same spec, written differently: no new work.
  response = call("PUT", "/v1/gitspace",
                  R"({"ide": "jupyter", "branch": "", "env": {},
                      "repository": "/nonexistent/spacegate-test/app.git"})",
                  token("gs-a"));
  EXPECT_EQ(response.status, 200) << response.body;
  response =
      call("PUT", "/v1/gitspace", specBody("/nonexistent/spacegate-test/other.git"), token("gs-a"));
  EXPECT_EQ(response.status, 409);
  EXPECT_NE(bodyJson(response)["error"].get<std::string>().find("DELETE"), std::string::npos);
  // The clone fails (no such repository): error, with git's reason.
  status = waitForState("error");
  EXPECT_NE(status["error"].get<std::string>().find("git clone failed"), std::string::npos)
      << status.dump();
  EXPECT_EQ(call("PUT", "/v1/gitspace", specBody(), token("gs-a")).status, 200);
  std::string log = call("GET", "/v1/gitspace/logs", "", token("gs-a")).body;
  EXPECT_NE(log.find("git clone failed"), std::string::npos) << log;
}

// The delegate sends the owner's current SSH keys with every start: a spec
// that differs only in them is the same Gitspace with new keys (200, kept
// for the next sshd start), not another spec.
TEST_F(AgentApiTest, PutWithOnlyNewSshKeysTakesTheKeys) {
  assign();
  const std::string repository = "/nonexistent/spacegate-test/app.git";
  auto body = [&](const std::string& keys, const std::string& ide) {
    return "{\"repository\": \"" + repository + "\", \"ide\": \"" + ide +
           "\", \"user\": {\"ssh_authorized_keys\": " + keys + "}}";
  };
  ASSERT_EQ(
      call("PUT", "/v1/gitspace", body(R"(["ssh-ed25519 AAAA old"])", "ssh"), token("gs-a")).status,
      202);
  waitForState("error");  // no such repository
  ServiceResponse response =
      call("PUT", "/v1/gitspace", body(R"(["ssh-ed25519 BBBB new", "ssh-rsa CCCC"])", "ssh"),
           token("gs-a"));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(controller_->snapshot().spec.user.ssh_authorized_keys,
            (std::vector<std::string>{"ssh-ed25519 BBBB new", "ssh-rsa CCCC"}));
  // The same keys again: unchanged. New keys and another IDE: another spec.
  EXPECT_EQ(call("PUT", "/v1/gitspace", body(R"(["ssh-ed25519 BBBB new", "ssh-rsa CCCC"])", "ssh"),
                 token("gs-a"))
                .status,
            200);
  EXPECT_EQ(call("PUT", "/v1/gitspace", body(R"([])", "jupyter"), token("gs-a")).status, 409);
}

TEST_F(AgentApiTest, StopStartAndDelete) {
  assign();
  ServiceResponse response = call("POST", "/v1/gitspace/stop", "", token("gs-a"));
  EXPECT_EQ(response.status, 409);
  EXPECT_NE(bodyJson(response)["error"].get<std::string>().find("uninitialized"),
            std::string::npos);
  EXPECT_EQ(call("POST", "/v1/gitspace/start", "", token("gs-a")).status, 409);
  ASSERT_EQ(call("PUT", "/v1/gitspace", specBody(), token("gs-a")).status, 202);
  waitForState("error");
  // From error, start sets up again (the clone never finished).
  response = call("POST", "/v1/gitspace/start", "", token("gs-a"));
  EXPECT_EQ(response.status, 202) << response.body;
  waitForState("error");
  response = call("POST", "/v1/gitspace/stop", "", token("gs-a"));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(bodyJson(response)["state"], "stopped");
  response = call("POST", "/v1/gitspace/stop", "", token("gs-a"));
  EXPECT_EQ(response.status, 200);
  response = call("DELETE", "/v1/gitspace", "", token("gs-a"));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(bodyJson(response)["state"], "uninitialized");
  EXPECT_EQ(bodyJson(response)["gitspace_id"], "gs-a");
  EXPECT_EQ(call("GET", "/v1/gitspace/logs", "", token("gs-a")).body, "");
  // Deleting again is fine, and a new spec is accepted after a delete.
  EXPECT_EQ(call("DELETE", "/v1/gitspace", "", token("gs-a")).status, 200);
  EXPECT_EQ(call("PUT", "/v1/gitspace", specBody("/nonexistent/x/other.git"), token("gs-a")).status,
            202);
}

TEST_F(AgentApiTest, LogsFromAnOffsetAndFollowed) {
  assign();
  ASSERT_EQ(call("PUT", "/v1/gitspace", specBody(), token("gs-a")).status, 202);
  waitForState("error");
  ServiceResponse whole = call("GET", "/v1/gitspace/logs", "", token("gs-a"));
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.content_type.rfind("text/plain", 0), 0u);
  ASSERT_GT(whole.body.size(), 10u);
  EXPECT_EQ(call("GET", "/v1/gitspace/logs?offset=10", "", token("gs-a")).body,
            whole.body.substr(10));
  EXPECT_EQ(call("GET", "/v1/gitspace/logs?offset=99999999", "", token("gs-a")).body, "");
  ServiceResponse bad = call("GET", "/v1/gitspace/logs?offset=-1", "", token("gs-a"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bodyJson(bad)["field"], "offset");
  bad = call("GET", "/v1/gitspace/logs?follow=maybe", "", token("gs-a"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bodyJson(bad)["field"], "follow");
  // Not setting up: a follower gets what exists and the stream ends.
  auto follower = send("GET", "/v1/gitspace/logs?follow=true&offset=5", "", token("gs-a"));
  ServiceResponse streamed = follower->wait();
  EXPECT_TRUE(follower->streaming());
  EXPECT_EQ(streamed.status, 200);
  EXPECT_EQ(streamed.body, whole.body.substr(5));
}

TEST_F(AgentApiTest, FollowEndsWhenTheLogIsClearedOrTheClientGoes) {
  assign();
  // A follower while setting up stays open until setup ends; here setup
  // fails fast, so follow a "setting up" state made by a start instead.
  ASSERT_EQ(call("PUT", "/v1/gitspace", specBody(), token("gs-a")).status, 202);
  auto follower = send("GET", "/v1/gitspace/logs?follow=1", "", token("gs-a"));
  ServiceResponse streamed = follower->wait();
  EXPECT_NE(streamed.body.find("setting up"), std::string::npos) << streamed.body;
  EXPECT_NE(streamed.body.find("git clone failed"), std::string::npos) << streamed.body;
  // A client that goes away is dropped from the log's watchers.
  auto leaving = send("GET", "/v1/gitspace/logs?follow=true", "", token("gs-a"));
  leaving->goAway();
  log_->note("after the client left");
}

}  // namespace
}  // namespace spacegate
