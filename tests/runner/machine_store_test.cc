// MachineStore: every stored field survives a save and a reopen, saves
// replace, removes remove, the database runs in WAL mode, and a state the
// runner does not know comes back as lost with a reason.
#include "runner/machine_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace spacegate {
namespace {

MachineRecord fullRecord(const std::string& id) {
  MachineRecord record;
  record.id = id;
  record.pool = "default";
  record.gitspace_id = "gs-42.a_b";
  record.state = MachineState::kInUse;
  record.slot = 17;
  record.address = "10.213.0.19";
  record.agent_port = 42068;
  record.ide_port = 42069;
  record.ssh_port = 42070;
  record.runner_secret = std::string(64, 'f');
  record.reason = "it's \"quoted\", ünïcode and\nmultiline";
  record.created_at_ms = 1'700'000'000'123;
  record.updated_at_ms = 9'007'199'254'740'993;  // beyond a double's exact range
  record.keep_storage_on_delete = true;
  return record;
}

void expectStoredFieldsEqual(const MachineRecord& actual, const MachineRecord& expected) {
  EXPECT_EQ(actual.id, expected.id);
  EXPECT_EQ(actual.pool, expected.pool);
  EXPECT_EQ(actual.gitspace_id, expected.gitspace_id);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.slot, expected.slot);
  EXPECT_EQ(actual.address, expected.address);
  EXPECT_EQ(actual.agent_port, expected.agent_port);
  EXPECT_EQ(actual.ide_port, expected.ide_port);
  EXPECT_EQ(actual.ssh_port, expected.ssh_port);
  EXPECT_EQ(actual.runner_secret, expected.runner_secret);
  EXPECT_EQ(actual.reason, expected.reason);
  EXPECT_EQ(actual.created_at_ms, expected.created_at_ms);
  EXPECT_EQ(actual.updated_at_ms, expected.updated_at_ms);
  EXPECT_EQ(actual.keep_storage_on_delete, expected.keep_storage_on_delete);
}

class MachineStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/machine-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    path_ = folder_ + "/runner.db";
  }
  void TearDown() override { std::filesystem::remove_all(folder_); }

  std::vector<MachineRecord> loadAll(MachineStore& store) {
    std::vector<MachineRecord> records;
    std::string error;
    EXPECT_TRUE(store.loadAll(records, error)) << error;
    return records;
  }

  // Runs one SQL statement on the file with a connection of its own; the
  // first column of the first row, if any.
  std::string sql(const std::string& statement) {
    sqlite3* database = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &database), SQLITE_OK);
    sqlite3_busy_timeout(database, 5000);
    sqlite3_stmt* query = nullptr;
    std::string result;
    EXPECT_EQ(sqlite3_prepare_v2(database, statement.c_str(), -1, &query, nullptr), SQLITE_OK)
        << sqlite3_errmsg(database);
    int step = sqlite3_step(query);
    if (step == SQLITE_ROW && sqlite3_column_text(query, 0)) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(query, 0));
    } else {
      EXPECT_EQ(step, SQLITE_DONE) << sqlite3_errmsg(database);
    }
    sqlite3_finalize(query);
    sqlite3_close(database);
    return result;
  }

  std::string folder_;
  std::string path_;
};

TEST_F(MachineStoreTest, RoundTripsEveryStoredField) {
  MachineStore store;
  std::string error;
  ASSERT_TRUE(store.open(path_, error)) << error;
  MachineRecord record = fullRecord("m-0000abcd");
  // Learnt at run time, never stored.
  record.healthy = true;
  record.ready = true;
  record.failed_checks = 2;
  record.busy = true;
  record.checking = true;
  record.checked_at_ms = 5;
  record.health_reason = "x";
  ASSERT_TRUE(store.save(record, error)) << error;
  auto records = loadAll(store);
  ASSERT_EQ(records.size(), 1u);
  expectStoredFieldsEqual(records[0], record);
  EXPECT_FALSE(records[0].healthy);
  EXPECT_FALSE(records[0].ready);
  EXPECT_FALSE(records[0].busy);
  EXPECT_FALSE(records[0].checking);
  EXPECT_EQ(records[0].failed_checks, 0);
  EXPECT_EQ(records[0].checked_at_ms, 0);
  EXPECT_EQ(records[0].health_reason, "");
}

TEST_F(MachineStoreTest, EveryStateRoundTrips) {
  MachineStore store;
  std::string error;
  ASSERT_TRUE(store.open(path_, error)) << error;
  const MachineState states[] = {MachineState::kProvisioning, MachineState::kWarm,
                                 MachineState::kInUse,        MachineState::kStopped,
                                 MachineState::kTerminating,  MachineState::kLost};
  int index = 0;
  for (MachineState state : states) {
    MachineRecord record = fullRecord("m-" + std::to_string(index));
    record.state = state;
    record.created_at_ms = index++;
    ASSERT_TRUE(store.save(record, error)) << error;
  }
  auto records = loadAll(store);
  ASSERT_EQ(records.size(), 6u);
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].state, states[i]) << machineStateName(states[i]);
  }
  EXPECT_EQ(sql("SELECT state FROM machines WHERE id = 'm-2'"), "in_use");
}

TEST_F(MachineStoreTest, SaveReplacesAndRemoveRemoves) {
  MachineStore store;
  std::string error;
  ASSERT_TRUE(store.open(path_, error)) << error;
  MachineRecord first = fullRecord("m-00000001");
  first.created_at_ms = 1;
  MachineRecord second = fullRecord("m-00000002");
  second.created_at_ms = 2;
  ASSERT_TRUE(store.save(second, error)) << error;
  ASSERT_TRUE(store.save(first, error)) << error;

  first.state = MachineState::kWarm;
  first.gitspace_id = "";
  first.reason = "";
  first.keep_storage_on_delete = false;
  first.updated_at_ms = 77;
  ASSERT_TRUE(store.save(first, error)) << error;
  auto records = loadAll(store);
  ASSERT_EQ(records.size(), 2u);  // replaced, not added
  // Ordered by creation time.
  expectStoredFieldsEqual(records[0], first);
  expectStoredFieldsEqual(records[1], second);

  ASSERT_TRUE(store.remove("m-00000001", error)) << error;
  records = loadAll(store);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].id, "m-00000002");
  // Removing what is not there is not an error.
  EXPECT_TRUE(store.remove("m-00000001", error)) << error;
  EXPECT_TRUE(store.remove("never-existed", error)) << error;
  ASSERT_TRUE(store.remove("m-00000002", error)) << error;
  EXPECT_TRUE(loadAll(store).empty());
}

TEST_F(MachineStoreTest, PersistsAcrossReopen) {
  MachineRecord record = fullRecord("m-cafe0001");
  {
    MachineStore store;
    std::string error;
    ASSERT_TRUE(store.open(path_, error)) << error;
    ASSERT_TRUE(store.save(record, error)) << error;
    MachineRecord gone = fullRecord("m-cafe0002");
    ASSERT_TRUE(store.save(gone, error)) << error;
    ASSERT_TRUE(store.remove(gone.id, error)) << error;
  }
  MachineStore reopened;
  std::string error;
  ASSERT_TRUE(reopened.open(path_, error)) << error;
  auto records = loadAll(reopened);
  ASSERT_EQ(records.size(), 1u);
  expectStoredFieldsEqual(records[0], record);
}

TEST_F(MachineStoreTest, UsesWalMode) {
  MachineStore store;
  std::string error;
  ASSERT_TRUE(store.open(path_, error)) << error;
  ASSERT_TRUE(store.save(fullRecord("m-1"), error)) << error;
  // The journal mode is a property of the file: another connection sees it.
  EXPECT_EQ(sql("PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(std::filesystem::exists(path_ + "-wal"));
}

TEST_F(MachineStoreTest, UnknownStateBecomesLostWithAReason) {
  {
    MachineStore store;
    std::string error;
    ASSERT_TRUE(store.open(path_, error)) << error;
    MachineRecord record = fullRecord("m-0000beef");
    record.reason = "the old reason";
    ASSERT_TRUE(store.save(record, error)) << error;
  }
  sql("UPDATE machines SET state = 'hibernating' WHERE id = 'm-0000beef'");
  MachineStore store;
  std::string error;
  ASSERT_TRUE(store.open(path_, error)) << error;
  auto records = loadAll(store);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].state, MachineState::kLost);
  EXPECT_EQ(records[0].reason, "unknown state in the database: hibernating");
  EXPECT_EQ(records[0].gitspace_id, "gs-42.a_b");  // the rest is kept
}

TEST_F(MachineStoreTest, OpenFailsWithAReason) {
  MachineStore store;
  std::string error;
  std::string path = folder_ + "/missing/folder/runner.db";
  EXPECT_FALSE(store.open(path, error));
  EXPECT_NE(error.find(path), std::string::npos) << error;
}

TEST(MachineStateTest, NamesParseBack) {
  for (MachineState state :
       {MachineState::kProvisioning, MachineState::kWarm, MachineState::kInUse,
        MachineState::kStopped, MachineState::kTerminating, MachineState::kLost}) {
    MachineState parsed = MachineState::kLost;
    ASSERT_TRUE(parseMachineState(machineStateName(state), parsed)) << machineStateName(state);
    EXPECT_EQ(parsed, state);
  }
  MachineState parsed;
  EXPECT_FALSE(parseMachineState("", parsed));
  EXPECT_FALSE(parseMachineState("WARM", parsed));
  EXPECT_FALSE(parseMachineState("unknown", parsed));
}

}  // namespace
}  // namespace spacegate
