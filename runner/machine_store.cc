#include "runner/machine_store.h"

#include <chrono>

namespace spacegate {

const char* machineStateName(MachineState state) {
  switch (state) {
    case MachineState::kProvisioning: return "provisioning";
    case MachineState::kWarm: return "warm";
    case MachineState::kInUse: return "in_use";
    case MachineState::kStopped: return "stopped";
    case MachineState::kTerminating: return "terminating";
    case MachineState::kLost: return "lost";
  }
  return "unknown";
}

bool parseMachineState(const std::string& text, MachineState& state) {
  for (MachineState candidate :
       {MachineState::kProvisioning, MachineState::kWarm, MachineState::kInUse,
        MachineState::kStopped, MachineState::kTerminating, MachineState::kLost}) {
    if (text == machineStateName(candidate)) {
      state = candidate;
      return true;
    }
  }
  return false;
}

int64_t wallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

MachineStore::~MachineStore() {
  if (save_) sqlite3_finalize(save_);
  if (remove_) sqlite3_finalize(remove_);
  if (database_) sqlite3_close(database_);
}

bool MachineStore::execute(const char* sql, std::string& error) {
  char* message = nullptr;
  if (sqlite3_exec(database_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    error = message ? message : "sqlite error";
    sqlite3_free(message);
    return false;
  }
  return true;
}

bool MachineStore::open(const std::string& path, std::string& error) {
  if (sqlite3_open_v2(path.c_str(), &database_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    error = path + ": " + (database_ ? sqlite3_errmsg(database_) : "cannot open");
    return false;
  }
  sqlite3_busy_timeout(database_, 5000);
  if (!execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", error) ||
      !execute("CREATE TABLE IF NOT EXISTS machines ("
               " id TEXT PRIMARY KEY, pool TEXT NOT NULL, gitspace_id TEXT NOT NULL,"
               " state TEXT NOT NULL, slot INTEGER NOT NULL, address TEXT NOT NULL,"
               " agent_port INTEGER NOT NULL, ide_port INTEGER NOT NULL,"
               " ssh_port INTEGER NOT NULL, runner_secret TEXT NOT NULL, reason TEXT NOT NULL,"
               " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,"
               " keep_storage INTEGER NOT NULL DEFAULT 0)",
               error)) {
    error = path + ": " + error;
    return false;
  }
  const char* save_sql =
      "INSERT OR REPLACE INTO machines (id, pool, gitspace_id, state, slot, address, agent_port,"
      " ide_port, ssh_port, runner_secret, reason, created_at_ms, updated_at_ms, keep_storage)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
  if (sqlite3_prepare_v2(database_, save_sql, -1, &save_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(database_, "DELETE FROM machines WHERE id = ?1", -1, &remove_, nullptr) !=
          SQLITE_OK) {
    error = path + ": " + sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

bool MachineStore::save(const MachineRecord& record, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  sqlite3_reset(save_);
  auto text = [&](int index, const std::string& value) {
    sqlite3_bind_text(save_, index, value.c_str(), static_cast<int>(value.size()),
                      SQLITE_TRANSIENT);
  };
  text(1, record.id);
  text(2, record.pool);
  text(3, record.gitspace_id);
  text(4, machineStateName(record.state));
  sqlite3_bind_int(save_, 5, record.slot);
  text(6, record.address);
  sqlite3_bind_int(save_, 7, record.agent_port);
  sqlite3_bind_int(save_, 8, record.ide_port);
  sqlite3_bind_int(save_, 9, record.ssh_port);
  text(10, record.runner_secret);
  text(11, record.reason);
  sqlite3_bind_int64(save_, 12, record.created_at_ms);
  sqlite3_bind_int64(save_, 13, record.updated_at_ms);
  sqlite3_bind_int(save_, 14, record.keep_storage_on_delete ? 1 : 0);
  if (sqlite3_step(save_) != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

bool MachineStore::remove(const std::string& id, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  sqlite3_reset(remove_);
  sqlite3_bind_text(remove_, 1, id.c_str(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(remove_) != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

bool MachineStore::loadAll(std::vector<MachineRecord>& records, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  sqlite3_stmt* query = nullptr;
  if (sqlite3_prepare_v2(database_,
                         "SELECT id, pool, gitspace_id, state, slot, address, agent_port, ide_port,"
                         " ssh_port, runner_secret, reason, created_at_ms, updated_at_ms,"
                         " keep_storage FROM machines ORDER BY created_at_ms, id",
                         -1, &query, nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  auto column = [&](int index) {
    const unsigned char* value = sqlite3_column_text(query, index);
    return std::string(value ? reinterpret_cast<const char*>(value) : "");
  };
  records.clear();
  int step;
  while ((step = sqlite3_step(query)) == SQLITE_ROW) {
    MachineRecord record;
    record.id = column(0);
    record.pool = column(1);
    record.gitspace_id = column(2);
    if (!parseMachineState(column(3), record.state)) {
      record.state = MachineState::kLost;
      record.reason = "unknown state in the database: " + column(3);
    }
    record.slot = sqlite3_column_int(query, 4);
    record.address = column(5);
    record.agent_port = sqlite3_column_int(query, 6);
    record.ide_port = sqlite3_column_int(query, 7);
    record.ssh_port = sqlite3_column_int(query, 8);
    record.runner_secret = column(9);
    if (record.reason.empty()) record.reason = column(10);
    record.created_at_ms = sqlite3_column_int64(query, 11);
    record.updated_at_ms = sqlite3_column_int64(query, 12);
    record.keep_storage_on_delete = sqlite3_column_int(query, 13) != 0;
    records.push_back(std::move(record));
  }
  sqlite3_finalize(query);
  if (step != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

}  // namespace spacegate
