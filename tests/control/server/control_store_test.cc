// ControlStore: every record type survives a close and a reopen (a restart),
// only live tasks come back as live, finished ones stay findable, event ids
// keep growing and old events are pruned per Gitspace, and the database runs
// in WAL mode.
#include "control/server/control_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

namespace spacegate {
namespace {

class ControlStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/control-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    path_ = folder_ + "/control.db";
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(folder_);
  }
  void reopen() {
    store_.reset();
    store_ = std::make_unique<ControlStore>();
    std::string error;
    ASSERT_TRUE(store_->open(path_, error)) << error;
  }
  ControlSnapshot load() {
    ControlSnapshot snapshot;
    std::string error;
    EXPECT_TRUE(store_->load(snapshot, error)) << error;
    return snapshot;
  }

  std::string folder_;
  std::string path_;
  std::unique_ptr<ControlStore> store_;
};

GitspaceRecord fullGitspace() {
  GitspaceRecord gitspace;
  gitspace.id = "gs-0123abcd";
  gitspace.name = "notebooks";
  gitspace.owner = "u-00000001";
  gitspace.repository = "https://example.com/repo.git";
  gitspace.branch = "feature/x";
  gitspace.ide = "jupyter";
  gitspace.infra = "inf-00000001";
  gitspace.state = GitspaceState::kRunning;
  gitspace.state_reason = "it's \"quoted\", ünïcode\nmultiline";
  gitspace.state_since_ms = 1'700'000'000'123;
  gitspace.idle_timeout_s = 1800;
  gitspace.machine_id = "m-42";
  gitspace.address = "10.213.0.7";
  gitspace.agent_port = 8090;
  gitspace.ide_port = 8888;
  gitspace.ssh_port = 2222;
  gitspace.ide_protocol = "http1";
  gitspace.forwarded_ports = {3000, 8000};
  gitspace.last_activity_ms = 9'007'199'254'740'993;  // beyond a double's exact range
  gitspace.created_at_ms = 1'600'000'000'000;
  gitspace.task_id = "t-00ff";
  return gitspace;
}

TEST_F(ControlStoreTest, EveryRecordSurvivesARestart) {
  std::string error;
  UserRecord user{"u-00000001", "alice", "user", std::string(64, 'a'), 11};
  InfraRecord infra;
  infra.id = "inf-00000001";
  infra.name = "default";
  infra.gateway_domain = "gs.example.com";
  infra.url_scheme = "https";
  infra.gateway_port = 443;
  infra.runner_pool = "gpu";
  infra.delegate_selector = "eu";
  infra.idle_timeout_s = 600;
  infra.created_at_ms = 12;
  DelegateRecord delegate{"dg-00000001", "d1", "1.2.3", {"eu", "default"}, 13, 14};
  GatewayReport report{"dg-00000001", "edge", "0.9", true, 15};
  GitspaceRecord gitspace = fullGitspace();
  TaskRecord task;
  task.id = "t-00ff";
  task.seq = 4;
  task.kind = TaskKind::kReset;
  task.gitspace = gitspace.id;
  task.state = TaskState::kLeased;
  task.delegate = "dg-00000001";
  task.lease_until_ms = 99;
  task.attempt = 3;
  task.payload = "{\"id\":\"t-00ff\"}";
  task.waiting_noted = true;
  task.created_at_ms = 16;
  task.updated_at_ms = 17;
  store_->begin();
  ASSERT_TRUE(store_->saveUser(user, error)) << error;
  ASSERT_TRUE(store_->addDelegateToken(std::string(64, 'd'), 1, error)) << error;
  ASSERT_TRUE(store_->saveInfra(infra, error)) << error;
  ASSERT_TRUE(store_->saveDelegate(delegate, error)) << error;
  ASSERT_TRUE(store_->saveGatewayReport(report, error)) << error;
  ASSERT_TRUE(store_->saveGitspace(gitspace, error)) << error;
  ASSERT_TRUE(store_->saveTask(task, error)) << error;
  ASSERT_TRUE(store_->setRouteRevision(1234, error)) << error;
  ASSERT_TRUE(store_->commit(error)) << error;

  reopen();
  ControlSnapshot snapshot = load();
  ASSERT_EQ(snapshot.users.size(), 1u);
  EXPECT_EQ(snapshot.users[0].name, "alice");
  EXPECT_EQ(snapshot.users[0].token_hash, std::string(64, 'a'));
  ASSERT_EQ(snapshot.delegate_token_hashes.size(), 1u);
  ASSERT_EQ(snapshot.infra.size(), 1u);
  EXPECT_EQ(snapshot.infra[0].gateway_domain, "gs.example.com");
  EXPECT_EQ(snapshot.infra[0].gateway_port, 443);
  EXPECT_EQ(snapshot.infra[0].delegate_selector, "eu");
  EXPECT_EQ(snapshot.infra[0].idle_timeout_s, 600);
  ASSERT_EQ(snapshot.delegates.size(), 1u);
  EXPECT_EQ(snapshot.delegates[0].selectors, (std::vector<std::string>{"eu", "default"}));
  ASSERT_EQ(snapshot.gateway_reports.size(), 1u);
  EXPECT_TRUE(snapshot.gateway_reports[0].healthy);
  EXPECT_EQ(snapshot.gateway_reports[0].reported_at_ms, 15);
  ASSERT_EQ(snapshot.gitspaces.size(), 1u);
  const GitspaceRecord& loaded = snapshot.gitspaces[0];
  EXPECT_EQ(loaded.state, GitspaceState::kRunning);
  EXPECT_EQ(loaded.state_reason, gitspace.state_reason);
  EXPECT_EQ(loaded.branch, "feature/x");
  EXPECT_EQ(loaded.forwarded_ports, (std::vector<int>{3000, 8000}));
  EXPECT_EQ(loaded.last_activity_ms, gitspace.last_activity_ms);
  EXPECT_EQ(loaded.agent_port, 8090);
  EXPECT_EQ(loaded.ide_port, 8888);
  EXPECT_EQ(loaded.ssh_port, 2222);
  EXPECT_EQ(loaded.machine_id, "m-42");
  EXPECT_EQ(loaded.task_id, "t-00ff");
  ASSERT_EQ(snapshot.live_tasks.size(), 1u);
  EXPECT_EQ(snapshot.live_tasks[0].kind, TaskKind::kReset);
  EXPECT_EQ(snapshot.live_tasks[0].state, TaskState::kLeased);
  EXPECT_EQ(snapshot.live_tasks[0].attempt, 3);
  EXPECT_EQ(snapshot.live_tasks[0].lease_until_ms, 99);
  EXPECT_TRUE(snapshot.live_tasks[0].waiting_noted);
  EXPECT_EQ(snapshot.task_seq, 4);
  EXPECT_EQ(snapshot.route_revision, 1234);
}

TEST_F(ControlStoreTest, FinishedTasksAreNotLiveButFindable) {
  std::string error;
  TaskRecord task;
  task.id = "t-1";
  task.seq = 1;
  task.gitspace = "gs-0123abcd";
  task.state = TaskState::kDone;
  task.result = "{\"machine_id\":\"m\"}";
  ASSERT_TRUE(store_->saveTask(task, error));
  reopen();
  EXPECT_TRUE(load().live_tasks.empty());
  TaskRecord found;
  ASSERT_TRUE(store_->findTask("t-1", found, error));
  EXPECT_EQ(found.state, TaskState::kDone);
  EXPECT_EQ(found.result, task.result);
  EXPECT_FALSE(store_->findTask("t-2", found, error));
  EXPECT_TRUE(error.empty());
}

TEST_F(ControlStoreTest, EventsGrowAcrossRestartsAndArePrunedPerGitspace) {
  std::string error;
  int64_t last = 0;
  for (int i = 0; i < 30; ++i) {
    EventRecord event;
    event.gitspace = i % 2 ? "gs-b" : "gs-a";
    event.type = "agent_setup_log";
    event.message = "line " + std::to_string(i);
    event.data = {{"i", i}};
    event.at_ms = 100 + i;
    ASSERT_TRUE(store_->appendEvent(event, 10, error)) << error;
    EXPECT_GT(event.id, last);
    last = event.id;
  }
  std::vector<EventRecord> events;
  ASSERT_TRUE(store_->eventsAfter("gs-a", 0, 1000, events, error));
  ASSERT_EQ(events.size(), 10u);  // 15 written, the newest 10 kept
  EXPECT_EQ(events.front().message, "line 10");
  EXPECT_EQ(events.back().message, "line 28");
  EXPECT_EQ(events.back().data["i"], 28);
  // Resume after an id: only the later ones.
  std::vector<EventRecord> later;
  ASSERT_TRUE(store_->eventsAfter("gs-a", events[7].id, 1000, later, error));
  ASSERT_EQ(later.size(), 2u);
  reopen();
  EventRecord after_restart;
  after_restart.gitspace = "gs-a";
  after_restart.type = "state_changed";
  ASSERT_TRUE(store_->appendEvent(after_restart, 10, error));
  EXPECT_GT(after_restart.id, last);  // ids are never reused
}

TEST_F(ControlStoreTest, RunsInWalMode) {
  sqlite3* database = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &database), SQLITE_OK);
  sqlite3_stmt* query = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(database, "PRAGMA journal_mode", -1, &query, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(query), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(query, 0)), "wal");
  sqlite3_finalize(query);
  sqlite3_close(database);
}

TEST_F(ControlStoreTest, UnknownStateComesBackAsErrorWithAReason) {
  std::string error;
  GitspaceRecord gitspace = fullGitspace();
  ASSERT_TRUE(store_->saveGitspace(gitspace, error));
  sqlite3* database = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &database), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(database, "UPDATE gitspaces SET state = 'flying'", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(database);
  reopen();
  ControlSnapshot snapshot = load();
  ASSERT_EQ(snapshot.gitspaces.size(), 1u);
  EXPECT_EQ(snapshot.gitspaces[0].state, GitspaceState::kError);
  EXPECT_NE(snapshot.gitspaces[0].state_reason.find("flying"), std::string::npos);
}

// A database made before gitspaces had ssh_port: it gains the column (0
// for the rows it has) and keeps every Gitspace.
TEST_F(ControlStoreTest, AnOlderDatabaseGainsTheSshPortColumn) {
  store_.reset();
  std::filesystem::remove(path_);
  sqlite3* database = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &database), SQLITE_OK);
  const char* older =
      "CREATE TABLE gitspaces (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
      " owner TEXT NOT NULL, repository TEXT NOT NULL, branch TEXT NOT NULL, ide TEXT NOT NULL,"
      " infra TEXT NOT NULL, state TEXT NOT NULL, state_reason TEXT NOT NULL,"
      " state_since_ms INTEGER NOT NULL, idle_timeout_s INTEGER NOT NULL,"
      " machine_id TEXT NOT NULL, address TEXT NOT NULL, agent_port INTEGER NOT NULL,"
      " ide_port INTEGER NOT NULL, ide_protocol TEXT NOT NULL, forwarded_ports TEXT NOT NULL,"
      " last_activity_ms INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
      " task_id TEXT NOT NULL);"
      "INSERT INTO gitspaces VALUES ('gs-00000001', 'old', 'u-1', 'r', '', 'ssh', 'inf-1',"
      " 'running', '', 1, 0, 'm-1', '10.0.0.5', 8090, 2200, 'tcp', '[]', 0, 1, '');";
  ASSERT_EQ(sqlite3_exec(database, older, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(database);

  reopen();
  ControlSnapshot snapshot = load();
  ASSERT_EQ(snapshot.gitspaces.size(), 1u);
  EXPECT_EQ(snapshot.gitspaces[0].ide_port, 2200);
  EXPECT_EQ(snapshot.gitspaces[0].ssh_port, 0);
  std::string error;
  GitspaceRecord gitspace = snapshot.gitspaces[0];
  gitspace.ssh_port = 22;
  ASSERT_TRUE(store_->saveGitspace(gitspace, error)) << error;
  reopen();  // the column is there now: nothing to add a second time
  EXPECT_EQ(load().gitspaces[0].ssh_port, 22);
}

// A database made before users had ssh_keys: it gains the column (no keys
// for the users it has), and keys saved afterwards come back.
TEST_F(ControlStoreTest, AnOlderDatabaseGainsTheUsersSshKeysColumn) {
  store_.reset();
  std::filesystem::remove(path_);
  sqlite3* database = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &database), SQLITE_OK);
  const char* older =
      "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
      " role TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL);"
      "INSERT INTO users VALUES ('u-00000001', 'admin', 'admin', 'abc', 1);";
  ASSERT_EQ(sqlite3_exec(database, older, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(database);

  reopen();
  ControlSnapshot snapshot = load();
  ASSERT_EQ(snapshot.users.size(), 1u);
  EXPECT_EQ(snapshot.users[0].token_hash, "abc");
  EXPECT_TRUE(snapshot.users[0].ssh_keys.empty());
  UserRecord user = snapshot.users[0];
  user.ssh_keys = {"ssh-ed25519 AAAA one", "ssh-ed25519 BBBB"};
  std::string error;
  ASSERT_TRUE(store_->saveUser(user, error)) << error;
  reopen();
  EXPECT_EQ(load().users[0].ssh_keys, user.ssh_keys);
}

}  // namespace
}  // namespace spacegate
