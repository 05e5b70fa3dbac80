// ControlStore: the control plane's state in SQLite (WAL), so a restart, or a
// kill -9, loses no user, Gitspace, task or event. ControlPlane keeps the
// live records in memory and writes each change through, one transaction
// per API call or maintenance step; events are read back from here (stream
// resumes) and are not kept in memory.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "control/server/control_records.h"

namespace spacegate {

// Everything ControlPlane loads at start.
struct ControlSnapshot {
  std::vector<UserRecord> users;
  std::vector<std::string> delegate_token_hashes;
  std::vector<InfraRecord> infra;
  std::vector<DelegateRecord> delegates;
  std::vector<GatewayReport> gateway_reports;
  std::vector<GitspaceRecord> gitspaces;
  std::vector<TaskRecord> live_tasks;  // queued or leased
  int64_t route_revision = 0;
  int64_t task_seq = 0;  // the highest task sequence number used
};

class ControlStore {
 public:
  ControlStore() = default;
  ~ControlStore();
  ControlStore(const ControlStore&) = delete;
  ControlStore& operator=(const ControlStore&) = delete;

  // Opens (creating) the database. False with a reason.
  bool open(const std::string& path, std::string& error);
  bool load(ControlSnapshot& snapshot, std::string& error);

  // Groups the writes until commit() into one transaction (nesting counts).
  void begin();
  bool commit(std::string& error);

  bool saveUser(const UserRecord& user, std::string& error);
  bool addDelegateToken(const std::string& token_hash, int64_t now_ms, std::string& error);
  bool saveInfra(const InfraRecord& infra, std::string& error);
  bool saveDelegate(const DelegateRecord& delegate, std::string& error);
  bool saveGatewayReport(const GatewayReport& report, std::string& error);
  bool saveGitspace(const GitspaceRecord& gitspace, std::string& error);
  bool saveTask(const TaskRecord& task, std::string& error);
  // Any task, finished ones too. False when there is none (error empty) or on
  // a database error.
  bool findTask(const std::string& id, TaskRecord& task, std::string& error);
  bool setRouteRevision(int64_t revision, std::string& error);

  // Appends and sets event.id; then drops the Gitspace's events beyond the
  // newest `keep`.
  bool appendEvent(EventRecord& event, uint64_t keep, std::string& error);
  // Events of a Gitspace with id > after, oldest first, at most `limit`.
  bool eventsAfter(const std::string& gitspace, int64_t after, size_t limit,
                   std::vector<EventRecord>& events, std::string& error);
  // Drops finished tasks last changed before `before_ms`.
  bool pruneFinishedTasks(int64_t before_ms, std::string& error);

 private:
  bool execute(const char* sql, std::string& error);
  // Adds the columns a database made by an older version lacks.
  bool addMissingColumns(std::string& error);
  bool prepare(const char* sql, sqlite3_stmt** statement, std::string& error);
  bool finishStep(sqlite3_stmt* statement, std::string& error);

  std::recursive_mutex mutex_;  // one statement sequence at a time; a transaction holds it
  int transaction_depth_ = 0;
  bool transaction_failed_ = false;
  sqlite3* database_ = nullptr;
  std::vector<sqlite3_stmt*> statements_;  // finalized at close
  sqlite3_stmt* save_user_ = nullptr;
  sqlite3_stmt* add_delegate_token_ = nullptr;
  sqlite3_stmt* save_infra_ = nullptr;
  sqlite3_stmt* save_delegate_ = nullptr;
  sqlite3_stmt* save_gateway_report_ = nullptr;
  sqlite3_stmt* save_gitspace_ = nullptr;
  sqlite3_stmt* save_task_ = nullptr;
  sqlite3_stmt* find_task_ = nullptr;
  sqlite3_stmt* set_setting_ = nullptr;
  sqlite3_stmt* append_event_ = nullptr;
  sqlite3_stmt* prune_events_ = nullptr;
  sqlite3_stmt* events_after_ = nullptr;
};

}  // namespace spacegate
