#include "control/server/control_store.h"

#include <cstring>
#include <functional>

namespace spacegate {

namespace {

// Binds by position, one call per column, so each save reads like its table.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* statement) : statement_(statement) {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
  Binder& text(const std::string& value) {
    sqlite3_bind_text(statement_, ++index_, value.c_str(), static_cast<int>(value.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Binder& integer(int64_t value) {
    sqlite3_bind_int64(statement_, ++index_, value);
    return *this;
  }

 private:
  sqlite3_stmt* statement_;
  int index_ = 0;
};

std::string columnText(sqlite3_stmt* statement, int index) {
  const unsigned char* value = sqlite3_column_text(statement, index);
  return value ? std::string(reinterpret_cast<const char*>(value),
                             static_cast<size_t>(sqlite3_column_bytes(statement, index)))
               : std::string();
}

int64_t columnInt(sqlite3_stmt* statement, int index) {
  return sqlite3_column_int64(statement, index);
}

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " role TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL,"
    " ssh_keys TEXT NOT NULL DEFAULT '[]');"
    "CREATE TABLE IF NOT EXISTS delegate_tokens (token_hash TEXT PRIMARY KEY,"
    " created_at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS infra (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " gateway_domain TEXT NOT NULL, url_scheme TEXT NOT NULL, gateway_port INTEGER NOT NULL,"
    " runner_pool TEXT NOT NULL, delegate_selector TEXT NOT NULL,"
    " idle_timeout_s INTEGER NOT NULL, created_at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS delegates (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " version TEXT NOT NULL, selectors TEXT NOT NULL, registered_at_ms INTEGER NOT NULL,"
    " last_seen_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS gateway_reports (delegate TEXT NOT NULL, gateway TEXT NOT NULL,"
    " version TEXT NOT NULL, healthy INTEGER NOT NULL, reported_at_ms INTEGER NOT NULL,"
    " PRIMARY KEY (delegate, gateway));"
    "CREATE TABLE IF NOT EXISTS gitspaces (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " owner TEXT NOT NULL, repository TEXT NOT NULL, branch TEXT NOT NULL, ide TEXT NOT NULL,"
    " infra TEXT NOT NULL, state TEXT NOT NULL, state_reason TEXT NOT NULL,"
    " state_since_ms INTEGER NOT NULL, idle_timeout_s INTEGER NOT NULL,"
    " machine_id TEXT NOT NULL, address TEXT NOT NULL, agent_port INTEGER NOT NULL,"
    " ide_port INTEGER NOT NULL, ide_protocol TEXT NOT NULL, forwarded_ports TEXT NOT NULL,"
    " last_activity_ms INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
    " task_id TEXT NOT NULL, ssh_port INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
    " kind TEXT NOT NULL, gitspace TEXT NOT NULL, state TEXT NOT NULL, delegate TEXT NOT NULL,"
    " lease_until_ms INTEGER NOT NULL, attempt INTEGER NOT NULL, payload TEXT NOT NULL,"
    " result TEXT NOT NULL, error TEXT NOT NULL, waiting_noted INTEGER NOT NULL,"
    " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, seq);"
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " gitspace TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,"
    " at_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_by_gitspace ON events (gitspace, id);";

// Columns added after a table's first release, for databases made before
// them: CREATE TABLE IF NOT EXISTS leaves an existing table as it was.
struct AddedColumn {
  const char* table;
  const char* column;
  const char* definition;
};
constexpr AddedColumn kAddedColumns[] = {
    {"gitspaces", "ssh_port", "INTEGER NOT NULL DEFAULT 0"},
    {"users", "ssh_keys", "TEXT NOT NULL DEFAULT '[]'"},  // a JSON array of key lines
};

bool hasColumn(sqlite3* database, const char* table, const char* column) {
  sqlite3_stmt* query = nullptr;
  std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(database, sql.c_str(), -1, &query, nullptr) != SQLITE_OK) return false;
  bool found = false;
  while (!found && sqlite3_step(query) == SQLITE_ROW) {
    const unsigned char* name = sqlite3_column_text(query, 1);
    found = name && std::strcmp(reinterpret_cast<const char*>(name), column) == 0;
  }
  sqlite3_finalize(query);
  return found;
}

constexpr const char* kTaskColumns =
    "id, seq, kind, gitspace, state, delegate, lease_until_ms, attempt, payload, result, error,"
    " waiting_noted, created_at_ms, updated_at_ms";

bool readTask(sqlite3_stmt* query, TaskRecord& task) {
  task.id = columnText(query, 0);
  task.seq = columnInt(query, 1);
  bool ok = parseTaskKind(columnText(query, 2), task.kind);
  task.gitspace = columnText(query, 3);
  ok = parseTaskState(columnText(query, 4), task.state) && ok;
  task.delegate = columnText(query, 5);
  task.lease_until_ms = columnInt(query, 6);
  task.attempt = static_cast<int>(columnInt(query, 7));
  task.payload = columnText(query, 8);
  task.result = columnText(query, 9);
  task.error = columnText(query, 10);
  task.waiting_noted = columnInt(query, 11) != 0;
  task.created_at_ms = columnInt(query, 12);
  task.updated_at_ms = columnInt(query, 13);
  return ok;
}

}  // namespace

ControlStore::~ControlStore() {
  for (sqlite3_stmt* statement : statements_) sqlite3_finalize(statement);
  if (database_) sqlite3_close(database_);
}

bool ControlStore::execute(const char* sql, std::string& error) {
  char* message = nullptr;
  if (sqlite3_exec(database_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    error = message ? message : "sqlite error";
    sqlite3_free(message);
    return false;
  }
  return true;
}

bool ControlStore::prepare(const char* sql, sqlite3_stmt** statement, std::string& error) {
  if (sqlite3_prepare_v2(database_, sql, -1, statement, nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  statements_.push_back(*statement);
  return true;
}

bool ControlStore::finishStep(sqlite3_stmt* statement, std::string& error) {
  int step = sqlite3_step(statement);
  sqlite3_reset(statement);
  if (step != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    if (transaction_depth_ > 0) transaction_failed_ = true;
    return false;
  }
  return true;
}

bool ControlStore::addMissingColumns(std::string& error) {
  for (const AddedColumn& added : kAddedColumns) {
    if (hasColumn(database_, added.table, added.column)) continue;
    std::string sql = std::string("ALTER TABLE ") + added.table + " ADD COLUMN " + added.column +
                      " " + added.definition;
    if (!execute(sql.c_str(), error)) return false;
  }
  return true;
}

bool ControlStore::open(const std::string& path, std::string& error) {
  if (sqlite3_open_v2(path.c_str(), &database_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    error = path + ": " + (database_ ? sqlite3_errmsg(database_) : "cannot open");
    return false;
  }
  sqlite3_busy_timeout(database_, 5000);
  // WAL with synchronous=NORMAL: a committed transaction survives the
  // process being killed at any moment (only a power loss may drop the last
  // few), and writers do not wait for fsync.
  if (!execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", error) ||
      !execute(kSchema, error) || !addMissingColumns(error) ||
      !prepare("INSERT OR REPLACE INTO users (id, name, role, token_hash, created_at_ms,"
               " ssh_keys) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
               &save_user_, error) ||
      !prepare("INSERT OR IGNORE INTO delegate_tokens (token_hash, created_at_ms) VALUES (?1, ?2)",
               &add_delegate_token_, error) ||
      !prepare("INSERT OR REPLACE INTO infra (id, name, gateway_domain, url_scheme, gateway_port,"
               " runner_pool, delegate_selector, idle_timeout_s, created_at_ms)"
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
               &save_infra_, error) ||
      !prepare("INSERT OR REPLACE INTO delegates (id, name, version, selectors, registered_at_ms,"
               " last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
               &save_delegate_, error) ||
      !prepare("INSERT OR REPLACE INTO gateway_reports (delegate, gateway, version, healthy,"
               " reported_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
               &save_gateway_report_, error) ||
      !prepare("INSERT OR REPLACE INTO gitspaces (id, name, owner, repository, branch, ide, infra,"
               " state, state_reason, state_since_ms, idle_timeout_s, machine_id, address,"
               " agent_port, ide_port, ide_protocol, forwarded_ports, last_activity_ms,"
               " created_at_ms, task_id, ssh_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
               " ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
               &save_gitspace_, error) ||
      !prepare("INSERT OR REPLACE INTO tasks (id, seq, kind, gitspace, state, delegate,"
               " lease_until_ms, attempt, payload, result, error, waiting_noted, created_at_ms,"
               " updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
               " ?14)",
               &save_task_, error) ||
      !prepare((std::string("SELECT ") + kTaskColumns + " FROM tasks WHERE id = ?1").c_str(),
               &find_task_, error) ||
      !prepare("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)", &set_setting_,
               error) ||
      !prepare("INSERT INTO events (gitspace, type, message, data, at_ms)"
               " VALUES (?1, ?2, ?3, ?4, ?5)",
               &append_event_, error) ||
      !prepare("DELETE FROM events WHERE gitspace = ?1 AND id <= (SELECT id FROM events"
               " WHERE gitspace = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
               &prune_events_, error) ||
      !prepare("SELECT id, gitspace, type, message, data, at_ms FROM events"
               " WHERE gitspace = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
               &events_after_, error)) {
    error = path + ": " + error;
    return false;
  }
  return true;
}

void ControlStore::begin() {
  mutex_.lock();
  if (transaction_depth_++ == 0) {
    transaction_failed_ = false;
    std::string ignored;
    execute("BEGIN IMMEDIATE", ignored);
  }
}

bool ControlStore::commit(std::string& error) {
  bool ok = true;
  if (--transaction_depth_ == 0) {
    ok = execute("COMMIT", error);
    if (!ok) {
      std::string ignored;
      execute("ROLLBACK", ignored);
    } else if (transaction_failed_) {
      error = "a write in the transaction failed";
      ok = false;
    }
  }
  mutex_.unlock();
  return ok;
}

bool ControlStore::load(ControlSnapshot& snapshot, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  snapshot = ControlSnapshot{};
  auto each = [&](const char* sql, const std::function<void(sqlite3_stmt*)>& row) {
    sqlite3_stmt* query = nullptr;
    if (sqlite3_prepare_v2(database_, sql, -1, &query, nullptr) != SQLITE_OK) {
      error = sqlite3_errmsg(database_);
      return false;
    }
    int step;
    while ((step = sqlite3_step(query)) == SQLITE_ROW) row(query);
    sqlite3_finalize(query);
    if (step != SQLITE_DONE) {
      error = sqlite3_errmsg(database_);
      return false;
    }
    return true;
  };
  bool ok =
      each(
          "SELECT id, name, role, token_hash, created_at_ms, ssh_keys FROM users"
          " ORDER BY created_at_ms",
          [&](sqlite3_stmt* q) {
            UserRecord user{columnText(q, 0), columnText(q, 1), columnText(q, 2),
                            columnText(q, 3), columnInt(q, 4),  {}};
            nlohmann::json keys = nlohmann::json::parse(columnText(q, 5), nullptr, false);
            if (keys.is_array()) {
              for (const auto& key : keys) {
                if (key.is_string()) user.ssh_keys.push_back(key);
              }
            }
            snapshot.users.push_back(std::move(user));
          }) &&
      each("SELECT token_hash FROM delegate_tokens",
           [&](sqlite3_stmt* q) { snapshot.delegate_token_hashes.push_back(columnText(q, 0)); }) &&
      each(
          "SELECT id, name, gateway_domain, url_scheme, gateway_port, runner_pool,"
          " delegate_selector, idle_timeout_s, created_at_ms FROM infra ORDER BY created_at_ms",
          [&](sqlite3_stmt* q) {
            InfraRecord infra;
            infra.id = columnText(q, 0);
            infra.name = columnText(q, 1);
            infra.gateway_domain = columnText(q, 2);
            infra.url_scheme = columnText(q, 3);
            infra.gateway_port = static_cast<int>(columnInt(q, 4));
            infra.runner_pool = columnText(q, 5);
            infra.delegate_selector = columnText(q, 6);
            infra.idle_timeout_s = columnInt(q, 7);
            infra.created_at_ms = columnInt(q, 8);
            snapshot.infra.push_back(std::move(infra));
          }) &&
      each("SELECT id, name, version, selectors, registered_at_ms, last_seen_ms FROM delegates",
           [&](sqlite3_stmt* q) {
             DelegateRecord delegate;
             delegate.id = columnText(q, 0);
             delegate.name = columnText(q, 1);
             delegate.version = columnText(q, 2);
             nlohmann::json selectors = nlohmann::json::parse(columnText(q, 3), nullptr, false);
             if (selectors.is_array()) {
               for (const auto& selector : selectors) {
                 if (selector.is_string()) delegate.selectors.push_back(selector);
               }
             }
             delegate.registered_at_ms = columnInt(q, 4);
             delegate.last_seen_ms = columnInt(q, 5);
             snapshot.delegates.push_back(std::move(delegate));
           }) &&
      each("SELECT delegate, gateway, version, healthy, reported_at_ms FROM gateway_reports",
           [&](sqlite3_stmt* q) {
             snapshot.gateway_reports.push_back(
                 GatewayReport{columnText(q, 0), columnText(q, 1), columnText(q, 2),
                               columnInt(q, 3) != 0, columnInt(q, 4)});
           }) &&
      each(
          "SELECT id, name, owner, repository, branch, ide, infra, state, state_reason,"
          " state_since_ms, idle_timeout_s, machine_id, address, agent_port, ide_port,"
          " ide_protocol, forwarded_ports, last_activity_ms, created_at_ms, task_id, ssh_port"
          " FROM gitspaces ORDER BY created_at_ms, id",
          [&](sqlite3_stmt* q) {
            GitspaceRecord gitspace;
            gitspace.id = columnText(q, 0);
            gitspace.name = columnText(q, 1);
            gitspace.owner = columnText(q, 2);
            gitspace.repository = columnText(q, 3);
            gitspace.branch = columnText(q, 4);
            gitspace.ide = columnText(q, 5);
            gitspace.infra = columnText(q, 6);
            if (!parseGitspaceState(columnText(q, 7), gitspace.state)) {
              gitspace.state = GitspaceState::kError;
              gitspace.state_reason = "unknown state in the database: " + columnText(q, 7);
            } else {
              gitspace.state_reason = columnText(q, 8);
            }
            gitspace.state_since_ms = columnInt(q, 9);
            gitspace.idle_timeout_s = columnInt(q, 10);
            gitspace.machine_id = columnText(q, 11);
            gitspace.address = columnText(q, 12);
            gitspace.agent_port = static_cast<int>(columnInt(q, 13));
            gitspace.ide_port = static_cast<int>(columnInt(q, 14));
            gitspace.ide_protocol = columnText(q, 15);
            nlohmann::json ports = nlohmann::json::parse(columnText(q, 16), nullptr, false);
            if (ports.is_array()) {
              for (const auto& port : ports) {
                if (port.is_number_integer()) gitspace.forwarded_ports.push_back(port);
              }
            }
            gitspace.last_activity_ms = columnInt(q, 17);
            gitspace.created_at_ms = columnInt(q, 18);
            gitspace.task_id = columnText(q, 19);
            gitspace.ssh_port = static_cast<int>(columnInt(q, 20));
            snapshot.gitspaces.push_back(std::move(gitspace));
          }) &&
      each((std::string("SELECT ") + kTaskColumns +
            " FROM tasks WHERE state IN ('queued', 'leased') ORDER BY seq")
               .c_str(),
           [&](sqlite3_stmt* q) {
             TaskRecord task;
             if (readTask(q, task)) snapshot.live_tasks.push_back(std::move(task));
           }) &&
      each("SELECT COALESCE(MAX(seq), 0) FROM tasks",
           [&](sqlite3_stmt* q) { snapshot.task_seq = columnInt(q, 0); }) &&
      each("SELECT value FROM settings WHERE key = 'route_revision'",
           [&](sqlite3_stmt* q) { snapshot.route_revision = std::stoll("0" + columnText(q, 0)); });
  return ok;
}

bool ControlStore::saveUser(const UserRecord& user, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_user_)
      .text(user.id)
      .text(user.name)
      .text(user.role)
      .text(user.token_hash)
      .integer(user.created_at_ms)
      .text(nlohmann::json(user.ssh_keys).dump());
  return finishStep(save_user_, error);
}

bool ControlStore::addDelegateToken(const std::string& token_hash, int64_t now_ms,
                                    std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(add_delegate_token_).text(token_hash).integer(now_ms);
  return finishStep(add_delegate_token_, error);
}

bool ControlStore::saveInfra(const InfraRecord& infra, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_infra_)
      .text(infra.id)
      .text(infra.name)
      .text(infra.gateway_domain)
      .text(infra.url_scheme)
      .integer(infra.gateway_port)
      .text(infra.runner_pool)
      .text(infra.delegate_selector)
      .integer(infra.idle_timeout_s)
      .integer(infra.created_at_ms);
  return finishStep(save_infra_, error);
}

bool ControlStore::saveDelegate(const DelegateRecord& delegate, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_delegate_)
      .text(delegate.id)
      .text(delegate.name)
      .text(delegate.version)
      .text(nlohmann::json(delegate.selectors).dump())
      .integer(delegate.registered_at_ms)
      .integer(delegate.last_seen_ms);
  return finishStep(save_delegate_, error);
}

bool ControlStore::saveGatewayReport(const GatewayReport& report, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_gateway_report_)
      .text(report.delegate)
      .text(report.gateway)
      .text(report.version)
      .integer(report.healthy ? 1 : 0)
      .integer(report.reported_at_ms);
  return finishStep(save_gateway_report_, error);
}

bool ControlStore::saveGitspace(const GitspaceRecord& gitspace, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_gitspace_)
      .text(gitspace.id)
      .text(gitspace.name)
      .text(gitspace.owner)
      .text(gitspace.repository)
      .text(gitspace.branch)
      .text(gitspace.ide)
      .text(gitspace.infra)
      .text(gitspaceStateName(gitspace.state))
      .text(gitspace.state_reason)
      .integer(gitspace.state_since_ms)
      .integer(gitspace.idle_timeout_s)
      .text(gitspace.machine_id)
      .text(gitspace.address)
      .integer(gitspace.agent_port)
      .integer(gitspace.ide_port)
      .text(gitspace.ide_protocol)
      .text(nlohmann::json(gitspace.forwarded_ports).dump())
      .integer(gitspace.last_activity_ms)
      .integer(gitspace.created_at_ms)
      .text(gitspace.task_id)
      .integer(gitspace.ssh_port);
  return finishStep(save_gitspace_, error);
}

bool ControlStore::saveTask(const TaskRecord& task, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(save_task_)
      .text(task.id)
      .integer(task.seq)
      .text(taskKindName(task.kind))
      .text(task.gitspace)
      .text(taskStateName(task.state))
      .text(task.delegate)
      .integer(task.lease_until_ms)
      .integer(task.attempt)
      .text(task.payload)
      .text(task.result)
      .text(task.error)
      .integer(task.waiting_noted ? 1 : 0)
      .integer(task.created_at_ms)
      .integer(task.updated_at_ms);
  return finishStep(save_task_, error);
}

bool ControlStore::findTask(const std::string& id, TaskRecord& task, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(find_task_).text(id);
  int step = sqlite3_step(find_task_);
  bool found = step == SQLITE_ROW && readTask(find_task_, task);
  if (step != SQLITE_ROW && step != SQLITE_DONE) error = sqlite3_errmsg(database_);
  sqlite3_reset(find_task_);
  return found;
}

bool ControlStore::setRouteRevision(int64_t revision, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(set_setting_).text("route_revision").text(std::to_string(revision));
  return finishStep(set_setting_, error);
}

bool ControlStore::appendEvent(EventRecord& event, uint64_t keep, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(append_event_)
      .text(event.gitspace)
      .text(event.type)
      .text(event.message)
      .text(event.data.is_null()
                ? std::string()
                : event.data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
      .integer(event.at_ms);
  if (!finishStep(append_event_, error)) return false;
  event.id = sqlite3_last_insert_rowid(database_);
  Binder(prune_events_).text(event.gitspace).integer(static_cast<int64_t>(keep));
  return finishStep(prune_events_, error);
}

bool ControlStore::eventsAfter(const std::string& gitspace, int64_t after, size_t limit,
                               std::vector<EventRecord>& events, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  Binder(events_after_).text(gitspace).integer(after).integer(static_cast<int64_t>(limit));
  int step;
  while ((step = sqlite3_step(events_after_)) == SQLITE_ROW) {
    EventRecord event;
    event.id = columnInt(events_after_, 0);
    event.gitspace = columnText(events_after_, 1);
    event.type = columnText(events_after_, 2);
    event.message = columnText(events_after_, 3);
    std::string data = columnText(events_after_, 4);
    if (!data.empty()) event.data = nlohmann::json::parse(data, nullptr, false);
    if (event.data.is_discarded()) event.data = nullptr;
    event.at_ms = columnInt(events_after_, 5);
    events.push_back(std::move(event));
  }
  sqlite3_reset(events_after_);
  if (step != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

bool ControlStore::pruneFinishedTasks(int64_t before_ms, std::string& error) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  sqlite3_stmt* statement = nullptr;
  if (sqlite3_prepare_v2(database_,
                         "DELETE FROM tasks WHERE state IN ('done', 'failed') AND"
                         " updated_at_ms < ?1",
                         -1, &statement, nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  sqlite3_bind_int64(statement, 1, before_ms);
  int step = sqlite3_step(statement);
  sqlite3_finalize(statement);
  if (step != SQLITE_DONE) {
    error = sqlite3_errmsg(database_);
    return false;
  }
  return true;
}

}  // namespace spacegate
