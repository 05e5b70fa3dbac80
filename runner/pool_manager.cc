#include "runner/pool_manager.h"

#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/log.h"
#include "service/service_client.h"

namespace spacegate {

namespace {

constexpr int kOperationThreads = 4;
constexpr int kHealthTimeoutMs = 1000;
// A warm machine failing this many checks in a row is replaced.
constexpr int kWarmFailuresBeforeReplace = 3;
// A machine for a Gitspace gets this many create attempts.
constexpr int kCreateAttempts = 3;

std::string randomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  RAND_bytes(reinterpret_cast<uint8_t*>(raw.data()), raw.size());
  static const char kDigits[] = "0123456789abcdef";
  std::string text;
  for (unsigned char c : raw) {
    text.push_back(kDigits[c >> 4]);
    text.push_back(kDigits[c & 15]);
  }
  return text;
}

bool holdsResources(MachineState state) {
  return state != MachineState::kLost;
}

PoolOutcome makeOutcome(int status, const MachineRecord& machine, std::string error = {},
                        std::string field = {}) {
  PoolOutcome outcome;
  outcome.status = status;
  outcome.machine = machine;
  outcome.error = std::move(error);
  outcome.field = std::move(field);
  return outcome;
}

}  // namespace

bool validGitspaceId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

PoolManager::PoolManager(const RunnerConfig& config, std::vector<ManagedPool> pools,
                         MachineStore& store,
                         std::vector<std::pair<std::string, std::string>> control_plane_keys)
    : config_(config),
      pools_(std::move(pools)),
      store_(store),
      control_plane_keys_(std::move(control_plane_keys)) {}

PoolManager::~PoolManager() {
  stopThreads();
}

ManagedPool* PoolManager::findPool(const std::string& name) {
  for (ManagedPool& pool : pools_) {
    if (pool.config.name == name) return &pool;
  }
  return nullptr;
}

MachineSpec PoolManager::specFor(const MachineRecord& record) const {
  MachineSpec spec;
  spec.id = record.id;
  spec.pool = record.pool;
  spec.gitspace_id = record.gitspace_id;
  spec.slot = record.slot;
  spec.runner_secret = record.runner_secret;
  spec.control_plane_keys = control_plane_keys_;
  if (!record.gitspace_id.empty()) {
    std::string kept = config_.state_dir + "/storage/" + record.gitspace_id;
    if (std::filesystem::exists(kept)) spec.kept_disk = kept;
  }
  return spec;
}

int PoolManager::freeSlot(const std::string& pool) const {
  std::set<int> used;
  for (const auto& [id, record] : machines_) {
    if (record.pool == pool && holdsResources(record.state)) used.insert(record.slot);
  }
  int slot = 1;
  while (used.count(slot)) ++slot;
  return slot;
}

PoolCounts PoolManager::countsLocked(const std::string& pool) const {
  PoolCounts counts;
  for (const auto& [id, record] : machines_) {
    if (record.pool != pool) continue;
    switch (record.state) {
      case MachineState::kProvisioning: ++counts.provisioning; break;
      case MachineState::kWarm: ++counts.warm; break;
      case MachineState::kInUse: ++counts.in_use; break;
      case MachineState::kStopped: ++counts.stopped; break;
      case MachineState::kTerminating: ++counts.terminating; break;
      case MachineState::kLost: ++counts.lost; break;
    }
    bool should_answer = record.state == MachineState::kWarm ||
                         (record.state == MachineState::kInUse && record.checked_at_ms != 0);
    if (should_answer && !record.healthy) ++counts.unhealthy;
  }
  return counts;
}

int PoolManager::holdingCount(const std::string& pool) const {
  int count = 0;
  for (const auto& [id, record] : machines_) {
    if (record.pool == pool && holdsResources(record.state)) ++count;
  }
  return count;
}

void PoolManager::saveLocked(const MachineRecord& record) {
  std::string error;
  if (!store_.save(record, error)) {
    logEvent(LogLevel::kError, "cannot save a machine to the database")
        .with("machine", record.id)
        .with("error", error)
        .emit();
  }
}

void PoolManager::transition(MachineRecord& record, MachineState state, std::string reason) {
  if (record.state != state) {
    logEvent(LogLevel::kInfo, "machine state")
        .with("machine", record.id)
        .with("pool", record.pool)
        .with("gitspace", record.gitspace_id)
        .with("from", machineStateName(record.state))
        .with("to", machineStateName(state))
        .with("reason", reason)
        .emit();
  }
  record.state = state;
  if (!reason.empty() || state == MachineState::kInUse || state == MachineState::kWarm) {
    record.reason = std::move(reason);
  }
  if (state != MachineState::kInUse && state != MachineState::kWarm) {
    record.ready = false;
    record.ready_at_ms = 0;
  }
  record.updated_at_ms = wallClockMs();
  saveLocked(record);
}

void PoolManager::enqueueAfterCheckLocked(MachineRecord& record, JobKind kind) {
  if (record.busy && record.checking) {
    after_check_[record.id] = kind;
    return;
  }
  enqueueLocked(record, kind);
}

void PoolManager::enqueueLocked(MachineRecord& record, JobKind kind) {
  record.busy = true;
  record.checking = kind == JobKind::kHealth;
  if (kind == JobKind::kCreate || kind == JobKind::kStart) {
    boot_started_ms_[record.id] = wallClockMs();
  }
  jobs_.push_back(Job{record.id, kind});
  work_ready_.notify_one();
}

MachineRecord PoolManager::newRecordLocked(const ManagedPool& pool,
                                           const std::string& gitspace_id) {
  MachineRecord record;
  do {
    record.id = "m-" + randomHex(4);
  } while (machines_.count(record.id));
  record.pool = pool.config.name;
  record.gitspace_id = gitspace_id;
  record.state = MachineState::kProvisioning;
  record.slot = freeSlot(pool.config.name);
  MachineEndpoint endpoint = pool.driver->endpointFor(record.slot);
  record.address = endpoint.address;
  record.agent_port = endpoint.agent_port;
  record.ide_port = endpoint.ide_port;
  record.ssh_port = endpoint.ssh_port;
  record.runner_secret = randomHex(32);
  record.created_at_ms = record.updated_at_ms = wallClockMs();
  // Written before the driver makes anything: a crash from here on leaves
  // a record that the next start cleans up.
  saveLocked(record);
  ++statistics_[pool.config.name].created;
  return record;
}

bool PoolManager::reconcile(std::string& error) {
  for (ManagedPool& pool : pools_) {
    if (!pool.driver->prepare(error)) return false;
    logEvent(LogLevel::kInfo, "pool ready")
        .with("pool", pool.config.name)
        .with("min", static_cast<int64_t>(pool.config.min))
        .with("max", static_cast<int64_t>(pool.config.max))
        .with("isolation", pool.driver->isolation())
        .emit();
  }
  std::vector<MachineRecord> records;
  if (!store_.loadAll(records, error)) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, MachineRecord> known;
  for (MachineRecord& record : records) known[record.id] = std::move(record);

  for (ManagedPool& pool : pools_) {
    std::map<std::string, bool> present;
    for (const DriverMachine& machine : pool.driver->list()) present[machine.id] = machine.running;
    // Machines the database does not know: made by a runner that died
    // before writing them down, or left by hand. They are destroyed.
    for (const auto& [id, running] : present) {
      auto found = known.find(id);
      if (found != known.end() && found->second.pool == pool.config.name) continue;
      std::string reason;
      bool ok = pool.driver->destroy(id, "", reason);
      logEvent(ok ? LogLevel::kWarning : LogLevel::kError, "orphan machine destroyed")
          .with("machine", id)
          .with("pool", pool.config.name)
          .with("error", reason)
          .emit();
    }
    for (auto& [id, record] : known) {
      if (record.pool != pool.config.name) continue;
      auto found = present.find(id);
      bool exists = found != present.end();
      bool running = exists && found->second;
      switch (record.state) {
        case MachineState::kTerminating:
        case MachineState::kProvisioning: {
          // Half made or half destroyed when the runner stopped: remove
          // what exists. A machine promised to a Gitspace is made again.
          std::string reason;
          bool removed = pool.driver->destroy(id, "", reason);
          if (record.state == MachineState::kProvisioning && !record.gitspace_id.empty() &&
              removed) {
            machines_[id] = record;
            logEvent(LogLevel::kInfo, "interrupted provisioning is redone")
                .with("machine", id)
                .emit();
            continue;
          }
          if (removed) {
            store_.remove(id, reason);
            logEvent(LogLevel::kInfo, "interrupted machine removed").with("machine", id).emit();
          } else {
            record.state = MachineState::kTerminating;
            machines_[id] = record;
          }
          break;
        }
        case MachineState::kWarm:
        case MachineState::kInUse:
        case MachineState::kStopped:
          if (!exists) {
            machines_[id] = record;
            transition(machines_[id], MachineState::kLost,
                       "the driver no longer has this machine (host restarted, or removed "
                       "outside the runner)");
            break;
          }
          machines_[id] = record;
          if (record.state == MachineState::kWarm && !running) {
            transition(machines_[id], MachineState::kTerminating,
                       "warm machine found not running at runner start");
          } else if (record.state == MachineState::kInUse && !running) {
            machines_[id].reason = "found not running at runner start; starting it again";
            machines_[id].busy = false;
          }
          break;
        case MachineState::kLost: machines_[id] = record; break;
      }
    }
  }
  // Records of pools no longer configured.
  for (auto& [id, record] : known) {
    if (findPool(record.pool) || machines_.count(id)) continue;
    machines_[id] = record;
    if (record.state != MachineState::kLost) {
      transition(machines_[id], MachineState::kLost,
                 "pool " + record.pool + " is no longer configured");
    }
  }
  // Queue the follow-ups (threads start later).
  for (auto& [id, record] : machines_) {
    if (record.state == MachineState::kProvisioning) enqueueLocked(record, JobKind::kCreate);
    if (record.state == MachineState::kTerminating) enqueueLocked(record, JobKind::kDestroy);
    if (record.state == MachineState::kInUse && !record.reason.empty() &&
        record.reason.starts_with("found not running")) {
      enqueueLocked(record, JobKind::kStart);
    }
  }
  return true;
}

void PoolManager::startThreads() {
  threads_.emplace_back([this] { maintenanceLoop(); });
  for (int i = 0; i < kOperationThreads; ++i) threads_.emplace_back([this] { operationLoop(); });
}

void PoolManager::stopThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  work_ready_.notify_all();
  maintenance_.notify_all();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

PoolOutcome PoolManager::acquire(const std::string& pool_name, const std::string& gitspace_id) {
  PoolOutcome outcome;
  if (!validGitspaceId(gitspace_id)) {
    outcome.status = 400;
    outcome.error = "must be 1 to 128 of [A-Za-z0-9._-]";
    outcome.field = "gitspace_id";
    return outcome;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ManagedPool* pool = findPool(pool_name);
  if (!pool) {
    outcome.status = 404;
    outcome.error = "no pool named " + pool_name;
    outcome.field = "pool";
    return outcome;
  }
  // Idempotent: the Gitspace's machine, wherever it is in its life.
  for (auto& [id, record] : machines_) {
    if (record.gitspace_id != gitspace_id) continue;
    if (record.state == MachineState::kLost || record.state == MachineState::kTerminating) continue;
    if (record.pool != pool_name) {
      outcome.status = 409;
      outcome.error = "Gitspace " + gitspace_id + " has machine " + id + " in pool " + record.pool;
      outcome.field = "pool";
      return outcome;
    }
    outcome.status = 200;
    outcome.source = "existing";
    if (record.state == MachineState::kStopped && (!record.busy || record.checking)) {
      // A stopped machine is woken instead of making another.
      transition(record, MachineState::kInUse, "starting");
      enqueueAfterCheckLocked(record, JobKind::kStart);
      outcome.source = "woken";
    } else if (record.state == MachineState::kInUse && !record.healthy &&
               record.checked_at_ms != 0 && (!record.busy || record.checking)) {
      // Its agent died (the machine's first process is gone): asking for
      // the Gitspace's machine again boots it again, disk and all, rather
      // than handing back a dead one.
      ManagedPool* owner = findPool(record.pool);
      std::string reason;
      if (owner && !owner->driver->processAlive(id, reason)) {
        record.reason = "booted again: " + reason;
        record.ready = false;
        saveLocked(record);
        enqueueAfterCheckLocked(record, JobKind::kStart);
        outcome.source = "rebooted";
      }
    }
    outcome.machine = record;
    return outcome;
  }
  bool has_kept_disk = std::filesystem::exists(config_.state_dir + "/storage/" + gitspace_id);
  // A warm machine, healthy and idle. (A Gitspace with a kept disk needs a
  // machine made with that disk.)
  if (!has_kept_disk) {
    for (auto& [id, record] : machines_) {
      if (record.pool != pool_name || record.state != MachineState::kWarm || !record.healthy ||
          (record.busy && !record.checking)) {
        continue;
      }
      record.gitspace_id = gitspace_id;
      record.ready = false;
      record.ready_at_ms = 0;
      transition(record, MachineState::kInUse);
      boot_started_ms_[id] = wallClockMs();
      ++statistics_[pool_name].warm_taken;
      // The health check assigns the Gitspace to the agent and marks ready
      // (a check already running sees the change and queues another).
      if (!record.busy) enqueueLocked(record, JobKind::kHealth);
      outcome.status = 201;
      outcome.source = "warm";
      outcome.machine = record;
      maintenance_.notify_one();  // refill
      return outcome;
    }
  }
  // A warm machine still booting: claiming it beats making another (and,
  // at max, beats refusing). It serves the Gitspace once its agent answers.
  if (!has_kept_disk) {
    for (auto& [id, record] : machines_) {
      if (record.pool != pool_name || record.state != MachineState::kProvisioning ||
          !record.gitspace_id.empty()) {
        continue;
      }
      record.gitspace_id = gitspace_id;
      saveLocked(record);
      ++statistics_[pool_name].warm_taken;
      outcome.status = 201;
      outcome.source = "booting";
      outcome.machine = record;
      maintenance_.notify_one();  // refill
      return outcome;
    }
  }
  if (holdingCount(pool_name) >= pool->config.max) {
    ++statistics_[pool_name].refused_at_max;
    outcome.status = 429;
    outcome.error = "pool " + pool_name + " is at its maximum of " +
                    std::to_string(pool->config.max) + " machines";
    outcome.field = "pool";
    return outcome;
  }
  MachineRecord record = newRecordLocked(*pool, gitspace_id);
  ++statistics_[pool_name].cold_started;
  MachineRecord& stored = machines_[record.id] = record;
  enqueueLocked(stored, JobKind::kCreate);
  outcome.status = 201;
  outcome.source = "cold";
  outcome.machine = stored;
  return outcome;
}

PoolOutcome PoolManager::stopMachine(const std::string& id) {
  PoolOutcome outcome;
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(id);
  if (found == machines_.end()) return makeOutcome(404, {}, "no machine " + id, "id");
  MachineRecord& record = found->second;
  if (record.state == MachineState::kStopped) return makeOutcome(200, record, {}, {});
  bool busy = record.busy && !record.checking;
  if (record.state != MachineState::kInUse || busy) {
    return makeOutcome(409, record,
                       std::string("machine is ") + machineStateName(record.state) +
                           (busy ? " and busy" : "") + "; only an in-use, idle machine stops",
                       "id");
  }
  enqueueAfterCheckLocked(record, JobKind::kStop);
  return makeOutcome(202, record, {}, {});
}

PoolOutcome PoolManager::startMachine(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(id);
  if (found == machines_.end()) return makeOutcome(404, {}, "no machine " + id, "id");
  MachineRecord& record = found->second;
  if (record.state == MachineState::kInUse) return makeOutcome(200, record, {}, {});
  bool busy = record.busy && !record.checking;
  if (record.state != MachineState::kStopped || busy) {
    return makeOutcome(409, record,
                       std::string("machine is ") + machineStateName(record.state) +
                           (busy ? " and busy" : "") + "; only a stopped machine starts",
                       "id");
  }
  transition(record, MachineState::kInUse, "starting");
  enqueueAfterCheckLocked(record, JobKind::kStart);
  return makeOutcome(202, record, {}, {});
}

PoolOutcome PoolManager::deleteMachine(const std::string& id, bool keep_storage) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(id);
  if (found == machines_.end()) return makeOutcome(404, {}, "no machine " + id, "id");
  MachineRecord& record = found->second;
  if (record.state == MachineState::kLost) {
    // Nothing on the host: only the record goes.
    std::string error;
    store_.remove(id, error);
    MachineRecord copy = record;
    machines_.erase(found);
    return makeOutcome(200, copy, {}, {});
  }
  record.keep_storage_on_delete = keep_storage && !record.gitspace_id.empty();
  if (record.state != MachineState::kTerminating) {
    transition(record, MachineState::kTerminating, "deleted through the API");
  }
  if (!record.busy || record.checking) enqueueAfterCheckLocked(record, JobKind::kDestroy);
  // A machine busy with another operation is destroyed by the maintenance
  // pass once that operation ends.
  return makeOutcome(202, record, {}, {});
}

bool PoolManager::find(const std::string& id, MachineRecord& record) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(id);
  if (found == machines_.end()) return false;
  record = found->second;
  return true;
}

std::vector<MachineRecord> PoolManager::machines() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<MachineRecord> list;
  for (const auto& [id, record] : machines_) list.push_back(record);
  return list;
}

std::string PoolManager::bootLog(const std::string& id, size_t max_bytes) {
  Driver* driver = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = machines_.find(id);
    if (found == machines_.end()) return {};
    ManagedPool* pool = findPool(found->second.pool);
    if (pool) driver = pool->driver.get();
  }
  return driver ? driver->bootLog(id, max_bytes) : std::string();
}

std::vector<PoolManager::PoolView> PoolManager::pools() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<PoolView> views;
  for (ManagedPool& pool : pools_) {
    views.push_back(
        PoolView{&pool.config, pool.driver->isolation(), countsLocked(pool.config.name)});
  }
  return views;
}

std::string PoolManager::metricsText() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string text;
  text +=
      "# HELP spacegate_runner_machines Machines by pool and state.\n"
      "# TYPE spacegate_runner_machines gauge\n";
  for (ManagedPool& pool : pools_) {
    PoolCounts counts = countsLocked(pool.config.name);
    const std::pair<const char*, int> states[] = {{"provisioning", counts.provisioning},
                                                  {"warm", counts.warm},
                                                  {"in_use", counts.in_use},
                                                  {"stopped", counts.stopped},
                                                  {"terminating", counts.terminating},
                                                  {"lost", counts.lost}};
    for (const auto& [state, count] : states) {
      text += "spacegate_runner_machines{pool=\"" + pool.config.name + "\",state=\"" + state +
              "\"} " + std::to_string(count) + "\n";
    }
  }
  text +=
      "# HELP spacegate_runner_machines_unhealthy Warm or in-use machines whose agent does not "
      "answer.\n# TYPE spacegate_runner_machines_unhealthy gauge\n";
  for (ManagedPool& pool : pools_) {
    text += "spacegate_runner_machines_unhealthy{pool=\"" + pool.config.name + "\"} " +
            std::to_string(countsLocked(pool.config.name).unhealthy) + "\n";
  }
  auto counter = [&](const char* name, const char* help, auto member) {
    text += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (ManagedPool& pool : pools_) {
      text += std::string(name) + "{pool=\"" + pool.config.name + "\"} " +
              std::to_string(statistics_[pool.config.name].*member) + "\n";
    }
  };
  counter("spacegate_runner_machines_created_total", "Machines made.", &PoolStatistics::created);
  counter("spacegate_runner_create_failures_total", "Machine creations that failed.",
          &PoolStatistics::create_failures);
  counter("spacegate_runner_warm_taken_total", "Gitspaces given a warm machine.",
          &PoolStatistics::warm_taken);
  counter("spacegate_runner_cold_started_total", "Gitspaces that needed a new machine.",
          &PoolStatistics::cold_started);
  counter("spacegate_runner_refused_at_max_total", "Requests refused at the pool's max.",
          &PoolStatistics::refused_at_max);
  counter("spacegate_runner_boots_total", "Machines booted to a healthy agent.",
          &PoolStatistics::boots);
  counter("spacegate_runner_boot_milliseconds_total",
          "Milliseconds from create or start to a healthy agent, summed.",
          &PoolStatistics::boot_ms_total);
  return text;
}

void PoolManager::maintenanceLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    maintainLocked();
    maintenance_.wait_for(lock, std::chrono::milliseconds(config_.health_interval_ms));
  }
}

void PoolManager::maintainLocked() {
  int64_t now = wallClockMs();
  for (ManagedPool& pool : pools_) {
    const std::string& name = pool.config.name;
    PoolStatistics& statistics = statistics_[name];
    // Refill: warm machines, and warm ones on their way, up to min.
    PoolCounts counts = countsLocked(name);
    int coming = 0;
    for (const auto& [id, record] : machines_) {
      if (record.pool == name && record.state == MachineState::kProvisioning &&
          record.gitspace_id.empty()) {
        ++coming;
      }
    }
    int missing = pool.config.min - (counts.warm + coming);
    while (missing-- > 0 && holdingCount(name) < pool.config.max &&
           now >= statistics.next_create_at_ms) {
      MachineRecord record = newRecordLocked(pool, "");
      MachineRecord& stored = machines_[record.id] = record;
      enqueueLocked(stored, JobKind::kCreate);
    }
  }
  for (auto& [id, record] : machines_) {
    if (record.busy) continue;
    switch (record.state) {
      case MachineState::kProvisioning: {
        auto started = boot_started_ms_.find(id);
        int64_t since = started == boot_started_ms_.end() ? record.created_at_ms : started->second;
        if (now - since > static_cast<int64_t>(config_.provision_timeout_ms)) {
          ManagedPool* pool = findPool(record.pool);
          std::string tail = pool ? pool->driver->bootLog(id, 300) : "";
          std::string reason = "the agent did not answer within " +
                               std::to_string(config_.provision_timeout_ms / 1000) + " s";
          if (!tail.empty()) reason += "; boot log ends: " + tail;
          if (record.gitspace_id.empty() || ++create_attempts_[id] >= kCreateAttempts) {
            transition(record, MachineState::kTerminating, reason);
            enqueueLocked(record, JobKind::kDestroy);
          } else {
            record.reason = reason + "; trying again";
            enqueueLocked(record, JobKind::kCreate);
          }
          break;
        }
        enqueueLocked(record, JobKind::kHealth);
        break;
      }
      case MachineState::kWarm:
      case MachineState::kInUse:
        if (now - record.checked_at_ms >= static_cast<int64_t>(config_.health_interval_ms) - 50) {
          enqueueLocked(record, JobKind::kHealth);
        }
        break;
      case MachineState::kTerminating: enqueueLocked(record, JobKind::kDestroy); break;
      case MachineState::kStopped:
      case MachineState::kLost: break;
    }
  }
}

void PoolManager::operationLoop() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = jobs_.front();
      jobs_.pop_front();
    }
    runJob(job);
  }
}

void PoolManager::runJob(const Job& job) {
  if (job.kind == JobKind::kHealth) {
    checkHealth(job.machine_id);
    return;
  }
  MachineSpec spec;
  Driver* driver = nullptr;
  std::string keep_disk_as;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = machines_.find(job.machine_id);
    if (found == machines_.end()) return;
    ManagedPool* pool = findPool(found->second.pool);
    if (!pool) {
      found->second.busy = false;
      return;
    }
    driver = pool->driver.get();
    spec = specFor(found->second);
    if (found->second.keep_storage_on_delete) {
      keep_disk_as = config_.state_dir + "/storage/" + found->second.gitspace_id;
    }
  }
  std::string error;
  bool ok = false;
  switch (job.kind) {
    case JobKind::kCreate: {
      // Whatever an earlier attempt left is removed first.
      ok = driver->destroy(spec.id, "", error) && driver->create(spec, error);
      break;
    }
    case JobKind::kStart: ok = driver->start(spec, error); break;
    case JobKind::kStop: ok = driver->stop(spec.id, error); break;
    case JobKind::kDestroy: ok = driver->destroy(spec.id, keep_disk_as, error); break;
    case JobKind::kHealth: break;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(job.machine_id);
  if (found == machines_.end()) return;
  MachineRecord& record = found->second;
  record.busy = false;
  record.checking = false;
  PoolStatistics& statistics = statistics_[record.pool];
  switch (job.kind) {
    case JobKind::kCreate:
      if (ok) {
        statistics.consecutive_create_failures = 0;
        break;  // provisioning until the agent answers
      }
      ++statistics.create_failures;
      // Back off (1 s, 2 s, 4 s ... 30 s) so that a broken host does not
      // spin creating machines.
      statistics.consecutive_create_failures =
          std::min(statistics.consecutive_create_failures + 1, 6);
      statistics.next_create_at_ms =
          wallClockMs() +
          std::min<int64_t>(30'000, 500LL << statistics.consecutive_create_failures);
      logEvent(LogLevel::kError, "machine create failed")
          .with("machine", record.id)
          .with("pool", record.pool)
          .with("error", error)
          .emit();
      // (Not when the machine was deleted while the create ran.)
      if (record.state == MachineState::kProvisioning && !record.gitspace_id.empty() &&
          ++create_attempts_[record.id] < kCreateAttempts) {
        record.reason = "create failed: " + error + "; trying again";
        saveLocked(record);
        enqueueLocked(record, JobKind::kCreate);
      } else {
        transition(record, MachineState::kTerminating, "create failed: " + error);
        enqueueLocked(record, JobKind::kDestroy);
      }
      break;
    case JobKind::kStart:
      // A delete accepted while the start ran wins (the maintenance pass
      // destroys the machine once it is idle): it is not made stopped again.
      if (!ok && record.state != MachineState::kTerminating) {
        record.reason = "start failed: " + error;
        transition(record, MachineState::kStopped, record.reason);
      }
      break;
    case JobKind::kStop:
      if (record.state == MachineState::kTerminating) break;  // deleted meanwhile, as above
      if (ok) {
        record.healthy = false;
        transition(record, MachineState::kStopped, "stopped through the API");
      } else {
        record.reason = "stop failed: " + error;
        saveLocked(record);
      }
      break;
    case JobKind::kDestroy:
      if (ok) {
        std::string ignored;
        store_.remove(record.id, ignored);
        logEvent(LogLevel::kInfo, "machine destroyed")
            .with("machine", record.id)
            .with("pool", record.pool)
            .with("kept_disk", keep_disk_as)
            .emit();
        boot_started_ms_.erase(record.id);
        create_attempts_.erase(record.id);
        after_check_.erase(record.id);
        machines_.erase(found);
        maintenance_.notify_one();
      } else {
        record.reason = "destroy failed: " + error + " (retried)";
        saveLocked(record);
      }
      break;
    case JobKind::kHealth: break;
  }
}

void PoolManager::checkHealth(const std::string& id) {
  MachineRecord snapshot;
  Driver* driver = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = machines_.find(id);
    if (found == machines_.end()) return;
    snapshot = found->second;
    ManagedPool* pool = findPool(snapshot.pool);
    if (!pool) {
      found->second.busy = false;
      return;
    }
    driver = pool->driver.get();
  }
  std::string base = "http://" + snapshot.address + ":" + std::to_string(snapshot.agent_port);
  ServiceClient client("", base, "");
  client.setTimeoutMs(kHealthTimeoutMs);
  client.setUserAgent("spacegate-runner");
  client.setMaxReplySize(64 * 1024);
  ServiceReply reply;
  std::string error;
  bool answered = client.call("GET", "/healthz", "", reply, error);
  std::string agent_gitspace;
  bool healthy = false;
  std::string reason;
  if (!answered) {
    reason = "agent does not answer: " + error;
  } else if (reply.status != 200) {
    reason = "agent answers /healthz with " + std::to_string(reply.status);
  } else {
    nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
    if (!body.is_object() || body.value("status", "") != "ok") {
      reason = "agent's /healthz is not {\"status\": \"ok\"}";
    } else if (body.value("machine_id", "") != snapshot.id) {
      reason = "another machine answers at " + base;
    } else {
      healthy = true;
      agent_gitspace = body.value("gitspace_id", "");
    }
  }
  if (!healthy) {
    std::string process_reason;
    if (!driver->processAlive(id, process_reason)) reason += "; " + process_reason;
  }
  // A machine taken from the pool learns its Gitspace now.
  bool assigned = healthy && agent_gitspace == snapshot.gitspace_id;
  if (healthy && !snapshot.gitspace_id.empty() && agent_gitspace.empty()) {
    ServiceClient runner_call("", base, snapshot.runner_secret);
    runner_call.setTimeoutMs(kHealthTimeoutMs * 5);
    runner_call.setUserAgent("spacegate-runner");
    ServiceReply assignment;
    std::string body = nlohmann::json{{"gitspace_id", snapshot.gitspace_id}}.dump();
    if (runner_call.call("PUT", "/v1/machine/assignment", body, assignment, error) &&
        assignment.status == 200) {
      assigned = true;
    } else {
      reason = "assigning the Gitspace to the agent failed: " +
               (error.empty() ? std::to_string(assignment.status) + " " + assignment.body : error);
    }
  } else if (healthy && !snapshot.gitspace_id.empty() && !assigned) {
    reason = "the agent serves Gitspace " + agent_gitspace + ", not " + snapshot.gitspace_id;
  }

  std::lock_guard<std::mutex> lock(mutex_);
  auto found = machines_.find(id);
  if (found == machines_.end()) return;
  MachineRecord& record = found->second;
  record.busy = false;
  record.checking = false;
  if (auto pending = after_check_.find(id); pending != after_check_.end()) {
    // An operation asked for while this check ran goes first; the check's
    // result is stale by then.
    JobKind kind = pending->second;
    after_check_.erase(pending);
    enqueueLocked(record, kind);
    return;
  }
  if (record.gitspace_id != snapshot.gitspace_id) {
    // Taken from the pool while this check ran: check (and assign) again.
    enqueueLocked(record, JobKind::kHealth);
    return;
  }
  record.checked_at_ms = wallClockMs();
  record.healthy = healthy;
  record.health_reason = healthy ? "" : reason;
  if (!healthy) {
    ++record.failed_checks;
  } else {
    record.failed_checks = 0;
  }
  bool ready = healthy && (record.gitspace_id.empty() || assigned);
  if (ready && !record.ready) {
    record.ready_at_ms = record.checked_at_ms;
    auto started = boot_started_ms_.find(id);
    if (started != boot_started_ms_.end()) {
      PoolStatistics& statistics = statistics_[record.pool];
      ++statistics.boots;
      statistics.boot_ms_total += static_cast<uint64_t>(record.checked_at_ms - started->second);
      boot_started_ms_.erase(started);
    }
  }
  record.ready = ready;
  if (!ready && !healthy && record.state == MachineState::kInUse) record.ready = false;
  if (record.state == MachineState::kProvisioning && ready) {
    create_attempts_.erase(id);
    transition(record, record.gitspace_id.empty() ? MachineState::kWarm : MachineState::kInUse);
    record.ready = true;
  } else if (record.state == MachineState::kWarm && !healthy &&
             record.failed_checks >= kWarmFailuresBeforeReplace) {
    transition(record, MachineState::kTerminating, "warm machine unhealthy: " + reason);
    enqueueLocked(record, JobKind::kDestroy);
  }
  if (!healthy && record.failed_checks == 1 && record.state != MachineState::kProvisioning) {
    logEvent(LogLevel::kWarning, "machine unhealthy")
        .with("machine", id)
        .with("state", machineStateName(record.state))
        .with("reason", reason)
        .emit();
  }
}

}  // namespace spacegate
