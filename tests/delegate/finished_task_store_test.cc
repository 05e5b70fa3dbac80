// The finished-task store: results survive a reload (a restarted
// delegate), the file is rewritten whole and valid, old entries and the
// oldest beyond the limit are dropped, and a corrupt file is moved aside.
#include "delegate/finished_task_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace spacegate {
namespace {

class FinishedTaskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/delegate-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    path_ = folder_ + "/sub/state.json";
  }
  void TearDown() override { std::filesystem::remove_all(folder_); }

  std::string read() const {
    std::ifstream stream(path_);
    std::stringstream text;
    text << stream.rdbuf();
    return text.str();
  }

  std::string folder_;
  std::string path_;
  int64_t now_ = 1'700'000'000'000;
};

TEST_F(FinishedTaskStoreTest, ResultsSurviveAReload) {
  FinishedTaskStore store(path_, 24 * 3600 * 1000, 100);
  store.setClock([this] { return now_; });
  std::string error;
  ASSERT_TRUE(store.load(error)) << error;  // the folder is made
  EXPECT_EQ(store.size(), 0u);
  nlohmann::json ok = {{"ok", true}, {"data", {{"machine_id", "m-1"}}}};
  nlohmann::json failed = {{"ok", false}, {"error", "no room"}};
  ASSERT_TRUE(store.record("t-1", "start", ok, error)) << error;
  ASSERT_TRUE(store.record("t-2", "stop", failed, error)) << error;

  nlohmann::json document = nlohmann::json::parse(read());
  EXPECT_EQ(document["tasks"]["t-1"]["result"], ok);
  EXPECT_EQ(document["tasks"]["t-1"]["kind"], "start");
  EXPECT_EQ(document["tasks"]["t-2"]["finished_at_ms"], now_);
  struct stat info {};
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  // No temp file is left beside it.
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder_ + "/sub")) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u);

  FinishedTaskStore again(path_, 24 * 3600 * 1000, 100);
  again.setClock([this] { return now_ + 1000; });
  ASSERT_TRUE(again.load(error)) << error;
  nlohmann::json result;
  ASSERT_TRUE(again.find("t-1", result));
  EXPECT_EQ(result, ok);
  ASSERT_TRUE(again.find("t-2", result));
  EXPECT_EQ(result, failed);
  EXPECT_FALSE(again.find("t-3", result));
}

TEST_F(FinishedTaskStoreTest, OldEntriesAreDropped) {
  FinishedTaskStore store(path_, 60'000, 100);
  store.setClock([this] { return now_; });
  std::string error;
  ASSERT_TRUE(store.load(error));
  ASSERT_TRUE(store.record("t-old", "start", {{"ok", true}}, error));
  now_ += 30'000;
  ASSERT_TRUE(store.record("t-new", "start", {{"ok", true}}, error));
  now_ += 40'000;  // t-old is 70 s old now, t-new 40 s
  nlohmann::json result;
  EXPECT_FALSE(store.find("t-old", result));
  EXPECT_TRUE(store.find("t-new", result));
  ASSERT_TRUE(store.record("t-next", "stop", {{"ok", true}}, error));
  EXPECT_EQ(store.size(), 2u);
  EXPECT_FALSE(nlohmann::json::parse(read())["tasks"].contains("t-old"));

  // A reload a day later drops everything (and rewrites the file).
  now_ += 24 * 3600 * 1000;
  FinishedTaskStore later(path_, 60'000, 100);
  later.setClock([this] { return now_; });
  ASSERT_TRUE(later.load(error));
  EXPECT_EQ(later.size(), 0u);
  EXPECT_TRUE(nlohmann::json::parse(read())["tasks"].empty());
}

TEST_F(FinishedTaskStoreTest, TheOldestGoBeyondTheLimit) {
  FinishedTaskStore store(path_, 24 * 3600 * 1000, 3);
  store.setClock([this] { return now_; });
  std::string error;
  ASSERT_TRUE(store.load(error));
  for (int i = 1; i <= 5; ++i) {
    now_ += 1000;
    ASSERT_TRUE(store.record("t-" + std::to_string(i), "start", {{"ok", true}}, error));
  }
  EXPECT_EQ(store.size(), 3u);
  nlohmann::json result;
  EXPECT_FALSE(store.find("t-1", result));
  EXPECT_FALSE(store.find("t-2", result));
  EXPECT_TRUE(store.find("t-3", result));
  EXPECT_TRUE(store.find("t-5", result));
}

TEST_F(FinishedTaskStoreTest, ACorruptFileIsMovedAside) {
  std::filesystem::create_directories(folder_ + "/sub");
  std::ofstream(path_) << "{\"tasks\": [not json";
  FinishedTaskStore store(path_, 24 * 3600 * 1000, 100);
  store.setClock([this] { return now_; });
  std::string error;
  ASSERT_TRUE(store.load(error)) << error;
  EXPECT_EQ(store.size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_TRUE(std::filesystem::exists(path_ + ".corrupt-" + std::to_string(now_)));
  ASSERT_TRUE(store.record("t-1", "start", {{"ok", true}}, error)) << error;
  EXPECT_TRUE(nlohmann::json::parse(read())["tasks"].contains("t-1"));
}

TEST_F(FinishedTaskStoreTest, AnUnwritableFolderIsReported) {
  FinishedTaskStore store(folder_ + "/file/state.json", 1000, 10);
  std::ofstream(folder_ + "/file") << "a file, not a folder";
  std::string error;
  EXPECT_FALSE(store.load(error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace spacegate
