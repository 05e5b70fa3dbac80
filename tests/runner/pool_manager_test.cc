// PoolManager with a fake driver and fake agents: pools fill to min and
// refill, acquire takes warm machines and is idempotent, max holds under
// concurrent acquires, stop/start/delete move machines through their states,
// reconciliation squares the database with the driver, failed creates back
// off, and an unhealthy warm machine is replaced.
//
// Each slot's agent is a real ServiceServer on 127.0.0.1 (its own port): the
// runner's health checks and Gitspace assignment go over HTTP as in
// production. The fake driver tells the agent of a slot which machine it now
// is when the runner creates it.
#include "runner/pool_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "service/service_server.h"

namespace spacegate {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// --- The fake agent: one per pool slot ---

class FakeAgent : public ServiceHandler {
 public:
  ~FakeAgent() override { shutDown(); }

  bool open(std::string& error) {
    ServiceServerConfig config;
    config.name = "fake-agent";
    config.tcp_enabled = true;
    // parseSocketAddress refuses port 0: parse a real port, then ask the
    // kernel for any free one.
    if (!parseSocketAddress("127.0.0.1:1", config.tcp_address, error)) return false;
    reinterpret_cast<sockaddr_in*>(&config.tcp_address.ip)->sin_port = 0;
    config.tcp_address.port = 0;
    server_ = std::make_unique<ServiceServer>(*this, config, limits_);
    if (!server_->open(error)) return false;
    port_ = server_->tcpPort();
    server_->start();
    return true;
  }

  // The machine stops answering at all: its port is closed.
  void shutDown() {
    if (!server_) return;
    server_->stop();
    server_->join();
    server_.reset();
  }

  bool listening() const { return server_ != nullptr; }
  int port() const { return port_; }

  void boot(const std::string& machine_id, const std::string& gitspace_id,
            const std::string& secret) {
    std::lock_guard<std::mutex> lock(mutex_);
    machine_id_ = machine_id;
    gitspace_id_ = gitspace_id;
    secret_ = secret;
    running_ = true;
  }
  void setRunning(const std::string& machine_id, bool running) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (machine_id_ == machine_id) running_ = running;
  }
  void forget(const std::string& machine_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (machine_id_ != machine_id) return;
    machine_id_.clear();
    gitspace_id_.clear();
    running_ = false;
  }
  bool running(const std::string& machine_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    return machine_id_ == machine_id && running_;
  }
  std::string gitspace() {
    std::lock_guard<std::mutex> lock(mutex_);
    return gitspace_id_;
  }
  int assignments() {
    std::lock_guard<std::mutex> lock(mutex_);
    return assignments_;
  }

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!running_) {
      exchange->respond(ServiceResponse::error(503, "not running"));
      return;
    }
    if (request.method == "GET" && request.path == "/healthz") {
      nlohmann::json body = {
          {"status", "ok"}, {"machine_id", machine_id_}, {"gitspace_id", gitspace_id_}};
      exchange->respond(ServiceResponse::json(200, body.dump()));
      return;
    }
    if (request.method == "PUT" && request.path == "/v1/machine/assignment") {
      if (!request.hasBearerToken(secret_)) {
        exchange->respond(ServiceResponse::error(401, "runner secret required"));
        return;
      }
      nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
      if (!body.is_object() || !body.contains("gitspace_id") || !body["gitspace_id"].is_string()) {
        exchange->respond(ServiceResponse::error(400, "gitspace_id", "gitspace_id"));
        return;
      }
      gitspace_id_ = body["gitspace_id"].get<std::string>();
      ++assignments_;
      exchange->respond(ServiceResponse::json(200, "{}"));
      return;
    }
    exchange->respond(ServiceResponse::error(404, "no such path"));
  }

 private:
  Limits limits_;
  std::unique_ptr<ServiceServer> server_;
  int port_ = 0;
  std::mutex mutex_;
  std::string machine_id_;
  std::string gitspace_id_;
  std::string secret_;
  bool running_ = false;
  int assignments_ = 0;
};

// --- The fake host: what every FakeDriver acts on, and what tests inspect ---

class FakeHost {
 public:
  ~FakeHost() { shutDown(); }

  // Failures on demand.
  std::atomic<bool> fail_prepare{false};
  std::atomic<bool> fail_create{false};
  std::atomic<bool> fail_start{false};
  std::atomic<bool> fail_stop{false};
  std::atomic<bool> fail_destroy{false};

  // Holds start() or destroy() calls until released (to see a busy machine).
  void holdStarts(bool hold) { setGate(hold_start_, hold); }
  void holdStops(bool hold) { setGate(hold_stop_, hold); }
  void holdCreates(bool hold) { setGate(hold_create_, hold); }
  void holdDestroys(bool hold) { setGate(hold_destroy_, hold); }

  void setListed(std::vector<DriverMachine> machines) {
    std::lock_guard<std::mutex> lock(mutex_);
    listed_ = std::move(machines);
  }

  MachineEndpoint endpoint(const std::string& pool, int slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    FakeAgent& agent = agentLocked(pool, slot);
    return MachineEndpoint{"127.0.0.1", agent.port(), agent.port() + 10000, agent.port() + 20000};
  }

  // The agent of a machine the driver created, or nullptr.
  FakeAgent* agentOf(const std::string& machine_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = machine_agent_.find(machine_id);
    return found == machine_agent_.end() ? nullptr : found->second;
  }

  // The machine's agent stops answering (its port closes).
  void silence(const std::string& machine_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = machine_agent_.find(machine_id);
    ASSERT_NE(found, machine_agent_.end()) << machine_id;
    found->second->shutDown();
  }

  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }
  int count(const std::string& call) {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int>(std::count(calls_.begin(), calls_.end(), call));
  }
  int countPrefix(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int>(std::count_if(
        calls_.begin(), calls_.end(), [&](const std::string& c) { return c.starts_with(prefix); }));
  }
  std::vector<Clock::time_point> createTimes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return create_times_;
  }
  std::vector<MachineSpec> createdSpecs() {
    std::lock_guard<std::mutex> lock(mutex_);
    return created_specs_;
  }

  // Releases every held call and closes every agent.
  void shutDown() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shut_down_ = true;
    }
    gates_.notify_all();
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [key, agent] : agents_) agent->shutDown();
  }

  // --- Called by FakeDriver ---

  bool create(const std::string& pool, const MachineSpec& spec, std::string& error) {
    std::unique_lock<std::mutex> lock(mutex_);
    calls_.push_back("create " + spec.id);
    create_times_.push_back(Clock::now());
    created_specs_.push_back(spec);
    gates_.wait(lock, [&] { return !hold_create_ || shut_down_; });
    if (fail_create) {
      error = "no space left on the fake host";
      return false;
    }
    FakeAgent& agent = agentLocked(pool, spec.slot);
    agent.boot(spec.id, spec.gitspace_id, spec.runner_secret);
    machine_agent_[spec.id] = &agent;
    return true;
  }

  bool start(const std::string& pool, const MachineSpec& spec, std::string& error) {
    std::unique_lock<std::mutex> lock(mutex_);
    calls_.push_back("start " + spec.id);
    gates_.wait(lock, [&] { return !hold_start_ || shut_down_; });
    if (fail_start) {
      error = "the fake refuses to start";
      return false;
    }
    if (auto found = machine_agent_.find(spec.id); found != machine_agent_.end()) {
      found->second->setRunning(spec.id, true);
    } else {
      // A machine made by an earlier runner: its slot's agent boots as it.
      FakeAgent& agent = agentLocked(pool, spec.slot);
      agent.boot(spec.id, spec.gitspace_id, spec.runner_secret);
      machine_agent_[spec.id] = &agent;
    }
    return true;
  }

  bool stop(const std::string& id, std::string& error) {
    std::unique_lock<std::mutex> lock(mutex_);
    calls_.push_back("stop " + id);
    gates_.wait(lock, [&] { return !hold_stop_ || shut_down_; });
    if (fail_stop) {
      error = "the fake refuses to stop";
      return false;
    }
    if (auto found = machine_agent_.find(id); found != machine_agent_.end()) {
      found->second->setRunning(id, false);
    }
    return true;
  }

  bool destroy(const std::string& id, const std::string& keep_disk_as, std::string& error) {
    std::unique_lock<std::mutex> lock(mutex_);
    calls_.push_back("destroy " + id + (keep_disk_as.empty() ? "" : " keep=" + keep_disk_as));
    gates_.wait(lock, [&] { return !hold_destroy_ || shut_down_; });
    if (fail_destroy) {
      error = "the fake refuses to destroy";
      return false;
    }
    if (auto found = machine_agent_.find(id); found != machine_agent_.end()) {
      found->second->forget(id);
      machine_agent_.erase(found);
    }
    if (!keep_disk_as.empty()) std::filesystem::create_directories(keep_disk_as);
    return true;
  }

  std::vector<DriverMachine> list() {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.push_back("list");
    return listed_;
  }

  bool processAlive(const std::string& id, std::string& reason) {
    FakeAgent* agent = agentOf(id);
    if (agent && agent->running(id)) return true;
    reason = "the fake process exited";
    return false;
  }

 private:
  void setGate(bool& gate, bool hold) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gate = hold;
    }
    gates_.notify_all();
  }

  // A slot's agent; a new one when the slot has none or its was silenced.
  FakeAgent& agentLocked(const std::string& pool, int slot) {
    std::string key = pool + "/" + std::to_string(slot);
    auto& agent = agents_[key];
    if (!agent || !agent->listening()) {
      if (agent) retired_.push_back(std::move(agent));
      agent = std::make_unique<FakeAgent>();
      std::string error;
      EXPECT_TRUE(agent->open(error)) << error;
    }
    return *agent;
  }

  std::mutex mutex_;
  std::condition_variable gates_;
  bool hold_start_ = false;
  bool hold_stop_ = false;
  bool hold_create_ = false;
  bool hold_destroy_ = false;
  bool shut_down_ = false;
  std::map<std::string, std::unique_ptr<FakeAgent>> agents_;  // "pool/slot"
  std::vector<std::unique_ptr<FakeAgent>> retired_;           // silenced, kept for pointers
  std::map<std::string, FakeAgent*> machine_agent_;           // machine id → its agent
  std::vector<std::string> calls_;
  std::vector<Clock::time_point> create_times_;
  std::vector<MachineSpec> created_specs_;
  std::vector<DriverMachine> listed_;
};

class FakeDriver : public Driver {
 public:
  FakeDriver(FakeHost& host, std::string pool) : host_(host), pool_(std::move(pool)) {}

  bool prepare(std::string& error) override {
    if (host_.fail_prepare) {
      error = "the fake cannot prepare";
      return false;
    }
    return true;
  }
  std::string isolation() const override { return "fake"; }
  MachineEndpoint endpointFor(int slot) const override { return host_.endpoint(pool_, slot); }
  bool create(const MachineSpec& spec, std::string& error) override {
    return host_.create(pool_, spec, error);
  }
  bool start(const MachineSpec& spec, std::string& error) override {
    return host_.start(pool_, spec, error);
  }
  bool stop(const std::string& id, std::string& error) override { return host_.stop(id, error); }
  bool destroy(const std::string& id, const std::string& keep_disk_as,
               std::string& error) override {
    return host_.destroy(id, keep_disk_as, error);
  }
  std::vector<DriverMachine> list() override { return host_.list(); }
  bool processAlive(const std::string& id, std::string& reason) override {
    return host_.processAlive(id, reason);
  }
  std::string bootLog(const std::string& id, size_t) override { return "boot log of " + id; }

 private:
  FakeHost& host_;
  std::string pool_;
};

// --- The fixture ---

PoolConfig poolConfig(std::string name, int min, int max) {
  PoolConfig pool;
  pool.name = std::move(name);
  pool.min = min;
  pool.max = max;
  return pool;
}

class PoolManagerTest : public ::testing::Test {
 protected:
  // The binaries ignore SIGPIPE in main(); libuv writes to a peer that has
  // gone would otherwise kill the test process.
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    char folder[] = "/tmp/pool-manager-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    std::string error;
    ASSERT_TRUE(store_.open(folder_ + "/runner.db", error)) << error;
  }

  void TearDown() override {
    host_.holdStarts(false);
    host_.holdStops(false);
    host_.holdCreates(false);
    host_.holdDestroys(false);
    if (manager_) manager_->stopThreads();
    manager_.reset();
    host_.shutDown();
    std::filesystem::remove_all(folder_);
  }

  // A manager over `pools` (each with a FakeDriver), reconciled.
  void makeManager(std::vector<PoolConfig> pools, bool start_threads = true) {
    config_.state_dir = folder_;
    config_.health_interval_ms = 100;
    config_.pools = pools;
    std::vector<ManagedPool> managed;
    for (PoolConfig& pool : pools) {
      std::string name = pool.name;
      managed.push_back(ManagedPool{std::move(pool), std::make_unique<FakeDriver>(host_, name)});
    }
    manager_ = std::make_unique<PoolManager>(config_, std::move(managed), store_,
                                             std::vector<std::pair<std::string, std::string>>{});
    std::string error;
    ASSERT_TRUE(manager_->reconcile(error)) << error;
    if (start_threads) manager_->startThreads();
  }

  PoolCounts counts(const std::string& pool = "default") {
    for (const auto& view : manager_->pools()) {
      if (view.config->name == pool) return view.counts;
    }
    ADD_FAILURE() << "no pool " << pool;
    return {};
  }

  // Polls `condition` every 10 ms for up to `timeout`.
  static bool waitUntil(const std::function<bool()>& condition,
                        std::chrono::milliseconds timeout = 5000ms) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (condition()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return condition();
  }

  MachineRecord machine(const std::string& id) {
    MachineRecord record;
    EXPECT_TRUE(manager_->find(id, record)) << id;
    return record;
  }
  bool exists(const std::string& id) {
    MachineRecord record;
    return manager_->find(id, record);
  }
  bool inUseAndReady(const std::string& id) {
    MachineRecord record;
    return manager_->find(id, record) && record.state == MachineState::kInUse && record.ready;
  }

  std::vector<MachineRecord> stored() {
    std::vector<MachineRecord> records;
    std::string error;
    EXPECT_TRUE(store_.loadAll(records, error)) << error;
    return records;
  }
  bool storedWithId(const std::string& id, MachineRecord* out = nullptr) {
    for (const MachineRecord& record : stored()) {
      if (record.id != id) continue;
      if (out) *out = record;
      return true;
    }
    return false;
  }

  // stop/start refuse (409) while any operation runs on the machine, a
  // routine health check included: retry those.
  PoolOutcome whenIdle(const std::function<PoolOutcome()>& call) {
    PoolOutcome outcome;
    auto deadline = Clock::now() + 2s;
    do {
      outcome = call();
      if (!(outcome.status == 409 && outcome.machine.busy)) return outcome;
      std::this_thread::sleep_for(5ms);
    } while (Clock::now() < deadline);
    return outcome;
  }

  // Writes a record for reconciliation tests.
  MachineRecord storeRecord(const std::string& id, MachineState state, std::string gitspace = {},
                            int slot = 1, std::string pool = "default") {
    MachineRecord record;
    record.id = id;
    record.pool = std::move(pool);
    record.gitspace_id = std::move(gitspace);
    record.state = state;
    record.slot = slot;
    record.address = "127.0.0.1";
    record.agent_port = 1;  // nothing answers there
    record.runner_secret = std::string(64, 'a');
    record.created_at_ms = record.updated_at_ms = wallClockMs();
    std::string error;
    EXPECT_TRUE(store_.save(record, error)) << error;
    return record;
  }

  std::string folder_;
  RunnerConfig config_;
  MachineStore store_;
  FakeHost host_;
  std::unique_ptr<PoolManager> manager_;
};

// --- Filling and acquiring ---

TEST_F(PoolManagerTest, FillsToMinAndNoFurther) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 2, 4)}));
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 2; })) << counts().provisioning;
  // Stays at min: no more creates while nothing is taken.
  std::this_thread::sleep_for(300ms);
  PoolCounts now = counts();
  EXPECT_EQ(now.warm, 2);
  EXPECT_EQ(now.provisioning, 0);
  EXPECT_EQ(now.in_use, 0);
  EXPECT_EQ(now.unhealthy, 0);
  EXPECT_EQ(host_.countPrefix("create "), 2);
  auto machines = manager_->machines();
  ASSERT_EQ(machines.size(), 2u);
  std::set<int> slots;
  for (const MachineRecord& record : machines) {
    EXPECT_TRUE(record.id.starts_with("m-")) << record.id;
    EXPECT_EQ(record.id.size(), 10u) << record.id;
    EXPECT_TRUE(record.healthy);
    EXPECT_TRUE(record.ready);
    EXPECT_EQ(record.gitspace_id, "");
    EXPECT_EQ(record.runner_secret.size(), 64u);
    slots.insert(record.slot);
    // Written through to the database.
    MachineRecord saved;
    ASSERT_TRUE(storedWithId(record.id, &saved));
    EXPECT_EQ(saved.state, MachineState::kWarm);
  }
  EXPECT_EQ(slots, (std::set<int>{1, 2}));
  EXPECT_NE(
      manager_->metricsText().find("spacegate_runner_machines{pool=\"default\",state=\"warm\"} 2"),
      std::string::npos);
}

TEST_F(PoolManagerTest, AcquireTakesAWarmMachineAndThePoolRefills) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 1, 3)}));
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1; }));
  std::string warm_id = manager_->machines()[0].id;

  PoolOutcome taken = manager_->acquire("default", "gs-1");
  EXPECT_EQ(taken.status, 201) << taken.error;
  EXPECT_EQ(taken.source, "warm");
  EXPECT_EQ(taken.machine.id, warm_id);
  EXPECT_EQ(taken.machine.state, MachineState::kInUse);
  EXPECT_EQ(taken.machine.gitspace_id, "gs-1");

  // The agent learns its Gitspace (PUT with the runner secret) and the
  // machine becomes ready; the pool makes another warm machine.
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(warm_id); }));
  FakeAgent* agent = host_.agentOf(warm_id);
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(agent->gitspace(), "gs-1");
  EXPECT_EQ(agent->assignments(), 1);
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1 && counts().in_use == 1; }));
  EXPECT_EQ(manager_->machines().size(), 2u);
  MachineRecord saved;
  ASSERT_TRUE(storedWithId(warm_id, &saved));
  EXPECT_EQ(saved.state, MachineState::kInUse);
  EXPECT_EQ(saved.gitspace_id, "gs-1");

  // The same Gitspace again: its machine, not another.
  PoolOutcome again = manager_->acquire("default", "gs-1");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.source, "existing");
  EXPECT_EQ(again.machine.id, warm_id);
  EXPECT_TRUE(again.machine.ready);
  EXPECT_EQ(manager_->machines().size(), 2u);
}

TEST_F(PoolManagerTest, AcquireWithoutWarmMachinesStartsCold) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome cold = manager_->acquire("default", "gs-cold");
  EXPECT_EQ(cold.status, 201) << cold.error;
  EXPECT_EQ(cold.source, "cold");
  EXPECT_EQ(cold.machine.state, MachineState::kProvisioning);
  EXPECT_TRUE(storedWithId(cold.machine.id));  // written before the driver acts
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(cold.machine.id); }));
  auto specs = host_.createdSpecs();
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].gitspace_id, "gs-cold");
  EXPECT_EQ(specs[0].pool, "default");
  EXPECT_EQ(specs[0].kept_disk, "");
  // Created for its Gitspace: nothing to assign afterwards.
  EXPECT_EQ(host_.agentOf(cold.machine.id)->assignments(), 0);
  EXPECT_EQ(counts().warm, 0);  // min 0: nothing made in advance
}

TEST_F(PoolManagerTest, MaxIsNeverExceededUnderConcurrentAcquires) {
  constexpr int kMax = 5;
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, kMax)}));
  std::atomic<bool> done{false};
  std::atomic<size_t> most_seen{0};
  std::thread sampler([&] {
    while (!done) {
      size_t size = manager_->machines().size();
      size_t seen = most_seen.load();
      while (size > seen && !most_seen.compare_exchange_weak(seen, size)) {
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::vector<PoolOutcome> outcomes(20);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      outcomes[i] = manager_->acquire("default", "gs-" + std::to_string(i));
    });
  }
  go = true;
  for (std::thread& thread : threads) thread.join();
  int created = 0;
  int refused = 0;
  for (const PoolOutcome& outcome : outcomes) {
    if (outcome.status == 201) ++created;
    if (outcome.status == 429) {
      ++refused;
      EXPECT_EQ(outcome.field, "pool");
      EXPECT_NE(outcome.error.find("maximum of 5"), std::string::npos) << outcome.error;
    }
  }
  EXPECT_EQ(created, kMax);
  EXPECT_EQ(refused, 20 - kMax);
  // The machines boot; still never more than max.
  EXPECT_TRUE(waitUntil([&] { return counts().in_use == kMax; }));
  std::this_thread::sleep_for(200ms);
  done = true;
  sampler.join();
  EXPECT_LE(most_seen.load(), static_cast<size_t>(kMax));
  EXPECT_EQ(manager_->machines().size(), static_cast<size_t>(kMax));
  EXPECT_NE(
      manager_->metricsText().find("spacegate_runner_refused_at_max_total{pool=\"default\"} 15"),
      std::string::npos);
}

TEST_F(PoolManagerTest, MaxHoldsWithWarmMachinesAndRefillsToo) {
  constexpr int kMax = 4;
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 2, kMax)}));
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 2; }));
  std::atomic<bool> done{false};
  std::atomic<size_t> most_seen{0};
  std::thread sampler([&] {
    while (!done) {
      size_t size = manager_->machines().size();
      size_t seen = most_seen.load();
      while (size > seen && !most_seen.compare_exchange_weak(seen, size)) {
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::vector<PoolOutcome> outcomes(12);
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back(
        [&, i] { outcomes[i] = manager_->acquire("default", "gs-" + std::to_string(i)); });
  }
  for (std::thread& thread : threads) thread.join();
  int warm = 0;
  int created = 0;
  for (const PoolOutcome& outcome : outcomes) {
    if (outcome.status == 201) ++created;
    if (outcome.source == "warm") ++warm;
    EXPECT_TRUE(outcome.status == 201 || outcome.status == 429) << outcome.status;
  }
  EXPECT_EQ(warm, 2);
  // Refilling competes for the same room: never more than max in all.
  EXPECT_GE(created, 2);
  EXPECT_LE(created, kMax);
  std::this_thread::sleep_for(500ms);
  done = true;
  sampler.join();
  EXPECT_LE(most_seen.load(), static_cast<size_t>(kMax));
}

TEST_F(PoolManagerTest, AcquireRefusals) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2), poolConfig("other", 0, 2)}));
  for (const std::string& bad : {std::string(), std::string("has space"), std::string("a/b"),
                                 std::string("ü"), std::string(129, 'a')}) {
    PoolOutcome outcome = manager_->acquire("default", bad);
    EXPECT_EQ(outcome.status, 400) << bad;
    EXPECT_EQ(outcome.field, "gitspace_id") << bad;
    EXPECT_FALSE(outcome.error.empty());
  }
  EXPECT_TRUE(validGitspaceId(std::string(128, 'a')));
  EXPECT_TRUE(validGitspaceId("Gs-1.a_b"));

  PoolOutcome unknown = manager_->acquire("nowhere", "gs-1");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.field, "pool");
  EXPECT_NE(unknown.error.find("nowhere"), std::string::npos);

  // A Gitspace has one machine: asking another pool for it is a conflict.
  EXPECT_EQ(manager_->acquire("default", "gs-1").status, 201);
  PoolOutcome elsewhere = manager_->acquire("other", "gs-1");
  EXPECT_EQ(elsewhere.status, 409);
  EXPECT_EQ(elsewhere.field, "pool");
  EXPECT_TRUE(manager_->machines().size() == 1u);
}

// --- Stop, start, delete ---

TEST_F(PoolManagerTest, StopStartAndDelete) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 1, 3)}));
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1; }));
  std::string warm_id = manager_->machines()[0].id;
  // Only an in-use machine stops; only a stopped one starts.
  PoolOutcome stop_warm = whenIdle([&] { return manager_->stopMachine(warm_id); });
  EXPECT_EQ(stop_warm.status, 409);
  EXPECT_EQ(stop_warm.field, "id");
  EXPECT_NE(stop_warm.error.find("machine is warm"), std::string::npos) << stop_warm.error;
  PoolOutcome start_warm = whenIdle([&] { return manager_->startMachine(warm_id); });
  EXPECT_EQ(start_warm.status, 409);
  EXPECT_EQ(manager_->stopMachine("m-missing").status, 404);
  EXPECT_EQ(manager_->startMachine("m-missing").status, 404);
  EXPECT_EQ(manager_->deleteMachine("m-missing", false).status, 404);

  PoolOutcome acquired = manager_->acquire("default", "gs-s");
  ASSERT_EQ(acquired.status, 201);
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));

  // Stop.
  PoolOutcome stopping = whenIdle([&] { return manager_->stopMachine(id); });
  EXPECT_EQ(stopping.status, 202) << stopping.error;
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kStopped; }));
  EXPECT_EQ(host_.count("stop " + id), 1);
  EXPECT_FALSE(machine(id).ready);
  EXPECT_FALSE(host_.agentOf(id)->running(id));
  EXPECT_EQ(manager_->stopMachine(id).status, 200);  // already stopped
  MachineRecord saved;
  ASSERT_TRUE(storedWithId(id, &saved));
  EXPECT_EQ(saved.state, MachineState::kStopped);

  // Start, held in the driver: the machine is busy meanwhile.
  host_.holdStarts(true);
  PoolOutcome starting = manager_->startMachine(id);
  EXPECT_EQ(starting.status, 202) << starting.error;
  EXPECT_EQ(starting.machine.state, MachineState::kInUse);
  ASSERT_TRUE(waitUntil([&] { return host_.count("start " + id) == 1; }));
  PoolOutcome stop_busy = manager_->stopMachine(id);
  EXPECT_EQ(stop_busy.status, 409);
  EXPECT_NE(stop_busy.error.find("busy"), std::string::npos) << stop_busy.error;
  EXPECT_EQ(manager_->startMachine(id).status, 200);  // in use already
  host_.holdStarts(false);
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  EXPECT_EQ(host_.count("start " + id), 1);

  // Delete, keeping the disk: the driver moves it under state_dir/storage.
  PoolOutcome deleting = manager_->deleteMachine(id, true);
  EXPECT_EQ(deleting.status, 202);
  EXPECT_EQ(deleting.machine.state, MachineState::kTerminating);
  std::string kept = folder_ + "/storage/gs-s";
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }));
  EXPECT_EQ(host_.count("destroy " + id + " keep=" + kept), 1);
  EXPECT_FALSE(storedWithId(id));

  // The Gitspace comes back: a cold machine with its kept disk, although a
  // warm one waits.
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1; }));
  PoolOutcome back = manager_->acquire("default", "gs-s");
  EXPECT_EQ(back.status, 201);
  EXPECT_EQ(back.source, "cold");
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(back.machine.id); }));
  bool found_spec = false;
  for (const MachineSpec& spec : host_.createdSpecs()) {
    if (spec.id == back.machine.id) {
      found_spec = true;
      EXPECT_EQ(spec.kept_disk, kept);
    }
  }
  EXPECT_TRUE(found_spec);

  // Delete without keeping.
  EXPECT_EQ(manager_->deleteMachine(back.machine.id, false).status, 202);
  ASSERT_TRUE(waitUntil([&] { return !exists(back.machine.id); }));
  EXPECT_EQ(host_.count("destroy " + back.machine.id), 2);  // before create, and now
}

TEST_F(PoolManagerTest, AcquireWakesAStoppedMachine) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-w");
  ASSERT_EQ(acquired.status, 201);
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kStopped; }));
  PoolOutcome woken = manager_->acquire("default", "gs-w");
  EXPECT_EQ(woken.status, 200);
  EXPECT_EQ(woken.source, "woken");
  EXPECT_EQ(woken.machine.id, id);
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  EXPECT_EQ(host_.count("start " + id), 1);
}

TEST_F(PoolManagerTest, FailedStartLeavesTheMachineStopped) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-f");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kStopped; }));
  host_.fail_start = true;
  EXPECT_EQ(manager_->startMachine(id).status, 202);
  ASSERT_TRUE(waitUntil([&] {
    MachineRecord record = machine(id);
    return record.state == MachineState::kStopped && !record.busy;
  }));
  EXPECT_NE(machine(id).reason.find("start failed: the fake refuses to start"), std::string::npos)
      << machine(id).reason;
}

TEST_F(PoolManagerTest, DeleteOfABusyMachineWaitsForItsOperation) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-b");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kStopped; }));
  host_.holdStarts(true);
  ASSERT_EQ(manager_->startMachine(id).status, 202);
  ASSERT_TRUE(waitUntil([&] { return host_.count("start " + id) == 1; }));
  PoolOutcome deleting = manager_->deleteMachine(id, false);
  EXPECT_EQ(deleting.status, 202);
  EXPECT_EQ(deleting.machine.state, MachineState::kTerminating);
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(host_.countPrefix("destroy " + id), 1);  // only the one before create
  host_.holdStarts(false);
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }));
  EXPECT_EQ(host_.countPrefix("destroy " + id), 2);
  EXPECT_FALSE(storedWithId(id));
}

// A delete accepted while a stop runs must not be undone when the stop
// ends (the machine would stay stopped, never destroyed).
TEST_F(PoolManagerTest, DeleteDuringAStopIsNotLost) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-ds");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  host_.holdStops(true);
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return host_.count("stop " + id) == 1; }));
  EXPECT_EQ(manager_->deleteMachine(id, false).status, 202);
  host_.holdStops(false);
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }, 2000ms))
      << "left in state " << machineStateName(machine(id).state);
  EXPECT_FALSE(storedWithId(id));
}

// The same for a start that fails after the delete was accepted.
TEST_F(PoolManagerTest, DeleteDuringAFailingStartIsNotLost) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-df");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kStopped; }));
  host_.fail_start = true;
  host_.holdStarts(true);
  ASSERT_EQ(manager_->startMachine(id).status, 202);
  ASSERT_TRUE(waitUntil([&] { return host_.count("start " + id) == 1; }));
  EXPECT_EQ(manager_->deleteMachine(id, false).status, 202);
  host_.holdStarts(false);
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }, 2000ms))
      << "left in state " << machineStateName(machine(id).state);
  EXPECT_FALSE(storedWithId(id));
}

// ... and a create that fails after the delete was accepted is not retried.
TEST_F(PoolManagerTest, DeleteDuringAFailingCreateIsNotRetried) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  host_.fail_create = true;
  host_.holdCreates(true);
  PoolOutcome acquired = manager_->acquire("default", "gs-dc");
  ASSERT_EQ(acquired.status, 201);
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return host_.count("create " + id) == 1; }));
  EXPECT_EQ(manager_->deleteMachine(id, false).status, 202);
  host_.holdCreates(false);
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }, 2000ms));
  EXPECT_EQ(host_.count("create " + id), 1);
  EXPECT_FALSE(storedWithId(id));
}

TEST_F(PoolManagerTest, FailedStopKeepsTheMachineInUseWithAReason) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-fs");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  host_.fail_stop = true;
  ASSERT_EQ(whenIdle([&] { return manager_->stopMachine(id); }).status, 202);
  ASSERT_TRUE(waitUntil([&] { return machine(id).reason.starts_with("stop failed"); }));
  EXPECT_EQ(machine(id).state, MachineState::kInUse);
  EXPECT_EQ(machine(id).reason, "stop failed: the fake refuses to stop");
  MachineRecord saved;
  ASSERT_TRUE(storedWithId(id, &saved));
  EXPECT_EQ(saved.reason, "stop failed: the fake refuses to stop");
}

TEST_F(PoolManagerTest, FailedDestroyIsRetried) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-fd");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  host_.fail_destroy = true;
  EXPECT_EQ(manager_->deleteMachine(id, false).status, 202);
  // Retried by the maintenance pass; the machine stays terminating.
  ASSERT_TRUE(waitUntil([&] { return host_.count("destroy " + id) >= 3; }));
  MachineRecord leaving = machine(id);
  EXPECT_EQ(leaving.state, MachineState::kTerminating);
  EXPECT_EQ(leaving.reason, "destroy failed: the fake refuses to destroy (retried)");
  host_.fail_destroy = false;
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }));
  EXPECT_FALSE(storedWithId(id));
}

// --- Reconciliation ---

TEST_F(PoolManagerTest, ReconcileMarksMachinesTheDriverLostAsLost) {
  storeRecord("m-00000001", MachineState::kWarm, "", 1);
  storeRecord("m-00000002", MachineState::kInUse, "gs-2", 2);
  storeRecord("m-00000003", MachineState::kStopped, "gs-3", 3);
  host_.setListed({});
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}, /*start_threads=*/false));
  for (const std::string id : {"m-00000001", "m-00000002", "m-00000003"}) {
    MachineRecord record = machine(id);
    EXPECT_EQ(record.state, MachineState::kLost) << id;
    EXPECT_NE(record.reason.find("the driver no longer has this machine"), std::string::npos)
        << record.reason;
    MachineRecord saved;
    ASSERT_TRUE(storedWithId(id, &saved));
    EXPECT_EQ(saved.state, MachineState::kLost);
    EXPECT_EQ(saved.reason, record.reason);
  }
  EXPECT_EQ(counts().lost, 3);
  EXPECT_EQ(host_.countPrefix("destroy "), 0);
  // Lost machines do not count against max, and deleting one only drops
  // the record.
  PoolOutcome deleted = manager_->deleteMachine("m-00000001", false);
  EXPECT_EQ(deleted.status, 200);
  EXPECT_FALSE(exists("m-00000001"));
  EXPECT_FALSE(storedWithId("m-00000001"));
  EXPECT_EQ(host_.countPrefix("destroy "), 0);
  // A lost machine's Gitspace gets a new machine.
  PoolOutcome again = manager_->acquire("default", "gs-2");
  EXPECT_EQ(again.status, 201);
  EXPECT_NE(again.machine.id, "m-00000002");
}

TEST_F(PoolManagerTest, ReconcileDestroysMachinesTheDatabaseDoesNotKnow) {
  storeRecord("m-0000000a", MachineState::kWarm, "", 1);
  host_.setListed({{"m-orphan01", true}, {"m-0000000a", true}, {"m-orphan02", false}});
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}, /*start_threads=*/false));
  EXPECT_EQ(host_.count("destroy m-orphan01"), 1);
  EXPECT_EQ(host_.count("destroy m-orphan02"), 1);
  EXPECT_EQ(host_.countPrefix("destroy m-0000000a"), 0);
  EXPECT_FALSE(exists("m-orphan01"));
  EXPECT_EQ(machine("m-0000000a").state, MachineState::kWarm);
  EXPECT_EQ(manager_->machines().size(), 1u);
}

TEST_F(PoolManagerTest, ReconcileCleansUpInterruptedWork) {
  // Half made for the warm pool: destroyed and forgotten.
  storeRecord("m-00000001", MachineState::kProvisioning, "", 1);
  // Half destroyed: destroyed and forgotten.
  storeRecord("m-00000002", MachineState::kTerminating, "gs-t", 2);
  // A warm machine found not running: destroyed.
  storeRecord("m-00000003", MachineState::kWarm, "", 3);
  host_.setListed({{"m-00000001", false}, {"m-00000002", false}, {"m-00000003", false}});
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}, /*start_threads=*/false));
  EXPECT_EQ(host_.count("destroy m-00000001"), 1);
  EXPECT_EQ(host_.count("destroy m-00000002"), 1);
  EXPECT_FALSE(exists("m-00000001"));
  EXPECT_FALSE(exists("m-00000002"));
  EXPECT_FALSE(storedWithId("m-00000001"));
  EXPECT_FALSE(storedWithId("m-00000002"));
  MachineRecord warm = machine("m-00000003");
  EXPECT_EQ(warm.state, MachineState::kTerminating);
  EXPECT_NE(warm.reason.find("not running"), std::string::npos) << warm.reason;
  manager_->startThreads();
  ASSERT_TRUE(waitUntil([&] { return !exists("m-00000003"); }));
  EXPECT_FALSE(storedWithId("m-00000003"));
  EXPECT_TRUE(manager_->machines().empty());
}

TEST_F(PoolManagerTest, ReconcileRedoesAMachinePromisedToAGitspace) {
  MachineRecord record = storeRecord("m-0000000b", MachineState::kProvisioning, "gs-r", 1);
  MachineEndpoint endpoint = host_.endpoint("default", 1);
  record.agent_port = endpoint.agent_port;
  std::string error;
  ASSERT_TRUE(store_.save(record, error)) << error;
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}));
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady("m-0000000b"); }));
  // Destroyed at reconcile, then before the create, then created.
  EXPECT_EQ(host_.count("destroy m-0000000b"), 2);
  EXPECT_EQ(host_.count("create m-0000000b"), 1);
  EXPECT_EQ(host_.agentOf("m-0000000b")->gitspace(), "gs-r");
}

TEST_F(PoolManagerTest, ReconcileStartsAnInUseMachineFoundNotRunning) {
  MachineRecord record = storeRecord("m-0000000c", MachineState::kInUse, "gs-c", 1);
  MachineEndpoint endpoint = host_.endpoint("default", 1);
  record.agent_port = endpoint.agent_port;
  std::string error;
  ASSERT_TRUE(store_.save(record, error)) << error;
  host_.setListed({{"m-0000000c", false}});
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}, /*start_threads=*/false));
  EXPECT_EQ(machine("m-0000000c").state, MachineState::kInUse);
  EXPECT_TRUE(machine("m-0000000c").busy);  // its start is queued
  manager_->startThreads();
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady("m-0000000c"); }));
  EXPECT_EQ(host_.count("start m-0000000c"), 1);
}

TEST_F(PoolManagerTest, ReconcileMarksMachinesOfRemovedPoolsLost) {
  storeRecord("m-0000000d", MachineState::kInUse, "gs-d", 1, "retired");
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 5)}, /*start_threads=*/false));
  MachineRecord record = machine("m-0000000d");
  EXPECT_EQ(record.state, MachineState::kLost);
  EXPECT_EQ(record.reason, "pool retired is no longer configured");
}

TEST_F(PoolManagerTest, ReconcileFailsWhenADriverCannotPrepare) {
  host_.fail_prepare = true;
  config_.state_dir = folder_;
  std::vector<ManagedPool> managed;
  managed.push_back(
      ManagedPool{poolConfig("default", 0, 1), std::make_unique<FakeDriver>(host_, "default")});
  manager_ = std::make_unique<PoolManager>(config_, std::move(managed), store_,
                                           std::vector<std::pair<std::string, std::string>>{});
  std::string error;
  EXPECT_FALSE(manager_->reconcile(error));
  EXPECT_EQ(error, "the fake cannot prepare");
}

// --- Failures ---

TEST_F(PoolManagerTest, FailedCreatesBackOffAndLeaveNoRecord) {
  host_.fail_create = true;
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 1, 3)}));
  ASSERT_TRUE(waitUntil([&] { return host_.createTimes().size() == 1; }));
  // The failed machine is destroyed and forgotten.
  ASSERT_TRUE(waitUntil([&] { return manager_->machines().empty() && stored().empty(); }));
  // No new attempt at every maintenance pass (100 ms): the next after ~1 s.
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(host_.createTimes().size(), 1u);
  ASSERT_TRUE(waitUntil([&] { return host_.createTimes().size() == 2; }, 3000ms));
  auto times = host_.createTimes();
  EXPECT_GE(times[1] - times[0], 900ms);
  ASSERT_TRUE(waitUntil([&] { return manager_->machines().empty() && stored().empty(); }));
  EXPECT_NE(
      manager_->metricsText().find("spacegate_runner_create_failures_total{pool=\"default\"} 2"),
      std::string::npos);
}

TEST_F(PoolManagerTest, FailedCreatesForAGitspaceAreRetriedThenDropped) {
  host_.fail_create = true;
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 3)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-x");
  ASSERT_EQ(acquired.status, 201);
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }));
  EXPECT_EQ(host_.count("create " + id), 3);
  EXPECT_FALSE(storedWithId(id));
  // The Gitspace may ask again.
  host_.fail_create = false;
  PoolOutcome again = manager_->acquire("default", "gs-x");
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.source, "cold");
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(again.machine.id); }));
}

TEST_F(PoolManagerTest, UnhealthyWarmMachineIsReplacedAfterThreeFailedChecks) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 1, 3)}));
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1; }));
  std::string id = manager_->machines()[0].id;
  // Hold destroys to see the machine on its way out.
  host_.holdDestroys(true);
  host_.silence(id);
  MachineRecord first_failure;
  ASSERT_TRUE(waitUntil([&] {
    first_failure = machine(id);
    return first_failure.failed_checks >= 1;
  }));
  EXPECT_FALSE(first_failure.healthy);
  if (first_failure.failed_checks < 3) {
    // Still in the pool (not taken: acquire wants a healthy machine).
    EXPECT_EQ(first_failure.state, MachineState::kWarm);
  }
  ASSERT_TRUE(waitUntil([&] { return machine(id).state == MachineState::kTerminating; }));
  MachineRecord leaving = machine(id);
  EXPECT_GE(leaving.failed_checks, 3);
  EXPECT_TRUE(leaving.reason.starts_with("warm machine unhealthy: agent does not answer"))
      << leaving.reason;
  host_.holdDestroys(false);
  ASSERT_TRUE(waitUntil([&] { return !exists(id); }));
  // A new warm machine takes its place.
  ASSERT_TRUE(waitUntil([&] { return counts().warm == 1; }));
  auto machines = manager_->machines();
  ASSERT_EQ(machines.size(), 1u);
  EXPECT_NE(machines[0].id, id);
  EXPECT_FALSE(storedWithId(id));
}

TEST_F(PoolManagerTest, UnhealthyInUseMachineIsKeptAndRecovers) {
  ASSERT_NO_FATAL_FAILURE(makeManager({poolConfig("default", 0, 2)}));
  PoolOutcome acquired = manager_->acquire("default", "gs-u");
  std::string id = acquired.machine.id;
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  host_.agentOf(id)->setRunning(id, false);  // answers 503
  ASSERT_TRUE(waitUntil([&] { return machine(id).failed_checks >= 4; }));
  MachineRecord sick = machine(id);
  EXPECT_EQ(sick.state, MachineState::kInUse);
  EXPECT_FALSE(sick.ready);
  EXPECT_NE(sick.health_reason.find("503"), std::string::npos) << sick.health_reason;
  // The process is asked about too.
  EXPECT_NE(sick.health_reason.find("the fake process exited"), std::string::npos)
      << sick.health_reason;
  host_.agentOf(id)->setRunning(id, true);
  ASSERT_TRUE(waitUntil([&] { return inUseAndReady(id); }));
  EXPECT_EQ(machine(id).failed_checks, 0);
}

}  // namespace
}  // namespace spacegate
