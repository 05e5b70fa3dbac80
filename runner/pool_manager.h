// PoolManager: the runner's machine lifecycle. It keeps each pool between
// `min` warm machines and `max` machines in all, hands machines to Gitspaces,
// and moves each machine through its states (machine.h) in one place,
// transition(). Everything it knows is in MachineStore before a driver acts
// on it, so a runner killed at any point reconciles at the next start:
// machines the database does not know are destroyed, machines the driver no
// longer has are marked lost, half-made ones are cleaned up or redone.
//
// Threads: API calls take the mutex briefly and queue work; a maintenance
// thread refills pools and schedules health checks every health interval;
// a few operation threads run the blocking driver calls and health checks,
// at most one at a time per machine (`busy`).
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runner/driver.h"
#include "runner/machine.h"
#include "runner/machine_store.h"
#include "runner/runner_config.h"

namespace spacegate {

struct ManagedPool {
  PoolConfig config;
  std::unique_ptr<Driver> driver;
};

// The result of an API operation: an HTTP status, the machine, or a reason
// (with the request field it concerns).
struct PoolOutcome {
  int status = 200;
  MachineRecord machine;
  std::string error;
  std::string field;
  std::string source;  // acquire: "existing", "warm", "cold", "woken"
};

struct PoolCounts {
  int warm = 0;
  int in_use = 0;
  int stopped = 0;
  int provisioning = 0;
  int terminating = 0;
  int lost = 0;
  int unhealthy = 0;
};

class PoolManager {
 public:
  PoolManager(const RunnerConfig& config, std::vector<ManagedPool> pools, MachineStore& store,
              std::vector<std::pair<std::string, std::string>> control_plane_keys);
  ~PoolManager();

  // Prepares the drivers and reconciles the database with what they report.
  // False with a reason (the runner then exits).
  bool reconcile(std::string& error);
  void startThreads();
  void stopThreads();

  PoolOutcome acquire(const std::string& pool, const std::string& gitspace_id);
  PoolOutcome stopMachine(const std::string& id);
  PoolOutcome startMachine(const std::string& id);
  PoolOutcome deleteMachine(const std::string& id, bool keep_storage);
  bool find(const std::string& id, MachineRecord& record);
  std::vector<MachineRecord> machines();
  std::string bootLog(const std::string& id, size_t max_bytes);

  struct PoolView {
    const PoolConfig* config;
    std::string isolation;
    PoolCounts counts;
  };
  std::vector<PoolView> pools();
  std::string metricsText();

 private:
  enum class JobKind { kCreate, kStart, kStop, kDestroy, kHealth };
  struct Job {
    std::string machine_id;
    JobKind kind;
  };
  struct PoolStatistics {
    uint64_t created = 0;
    uint64_t create_failures = 0;
    uint64_t warm_taken = 0;
    uint64_t cold_started = 0;
    uint64_t refused_at_max = 0;
    uint64_t boots = 0;
    uint64_t boot_ms_total = 0;  // create/start to healthy
    int consecutive_create_failures = 0;
    int64_t next_create_at_ms = 0;  // back-off after failures
  };

  ManagedPool* findPool(const std::string& name);
  MachineSpec specFor(const MachineRecord& record) const;
  int freeSlot(const std::string& pool) const;
  PoolCounts countsLocked(const std::string& pool) const;
  int holdingCount(const std::string& pool) const;  // machines counted against max
  // Changes a machine's state, stamps it and writes it through (lock held).
  void transition(MachineRecord& record, MachineState state, std::string reason = {});
  void saveLocked(const MachineRecord& record);
  void enqueueLocked(MachineRecord& record, JobKind kind);
  // The same, unless a health check runs: then right after it (API calls
  // must not fail because a routine check happens to run).
  void enqueueAfterCheckLocked(MachineRecord& record, JobKind kind);
  MachineRecord newRecordLocked(const ManagedPool& pool, const std::string& gitspace_id);

  void maintenanceLoop();
  void maintainLocked();
  void operationLoop();
  void runJob(const Job& job);
  void checkHealth(const std::string& id);

  RunnerConfig config_;
  std::vector<ManagedPool> pools_;
  MachineStore& store_;
  std::vector<std::pair<std::string, std::string>> control_plane_keys_;

  std::mutex mutex_;
  std::condition_variable work_ready_;   // operation threads wait here
  std::condition_variable maintenance_;  // wakes the maintenance thread
  std::map<std::string, MachineRecord> machines_;
  std::map<std::string, PoolStatistics> statistics_;
  std::map<std::string, int64_t> boot_started_ms_;  // machine id → create/start time
  std::map<std::string, int> create_attempts_;
  std::map<std::string, JobKind> after_check_;  // machine id → operation queued behind a check
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Gitspace and machine ids: 1 to 128 of [A-Za-z0-9._-].
bool validGitspaceId(const std::string& id);

}  // namespace spacegate
