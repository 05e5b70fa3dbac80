// MachineStore: the runner's machines in SQLite (WAL), so that a runner
// killed at any moment comes back knowing every machine it made. Each write
// is one statement in autocommit; a record is written before the driver acts
// on it (so an interrupted create is found and cleaned up at the next start).
#pragma once

#include <sqlite3.h>

#include <mutex>
#include <string>
#include <vector>

#include "runner/machine.h"

namespace spacegate {

class MachineStore {
 public:
  MachineStore() = default;
  ~MachineStore();
  MachineStore(const MachineStore&) = delete;
  MachineStore& operator=(const MachineStore&) = delete;

  // Opens (creating) the database file. False with a reason.
  bool open(const std::string& path, std::string& error);
  bool save(const MachineRecord& record, std::string& error);
  bool remove(const std::string& id, std::string& error);
  bool loadAll(std::vector<MachineRecord>& records, std::string& error);

 private:
  bool execute(const char* sql, std::string& error);

  std::mutex mutex_;  // one statement sequence (reset, bind, step) at a time
  sqlite3* database_ = nullptr;
  sqlite3_stmt* save_ = nullptr;
  sqlite3_stmt* remove_ = nullptr;
};

}  // namespace spacegate
