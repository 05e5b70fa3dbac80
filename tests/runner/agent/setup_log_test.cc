// SetupLog: timestamped lines, offsets, the size bound with its one note,
// clear(), watchers, and appends from several threads at once.
#include "runner/agent/setup_log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

namespace spacegate {
namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) out.push_back(line);
  return out;
}

TEST(SetupLogTest, LinesAreTimestamped) {
  SetupLog log;
  log.note("cloning");
  log.note("two\nlines\n");
  log.output("git", "Cloning into 'app'...\r\ndone.");
  std::vector<std::string> all = lines(log.read(0));
  ASSERT_EQ(all.size(), 5u);
  std::regex stamped(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (.*)$)");
  std::smatch match;
  ASSERT_TRUE(std::regex_match(all[0], match, stamped)) << all[0];
  EXPECT_EQ(match[1], "cloning");
  ASSERT_TRUE(std::regex_match(all[2], match, stamped));
  EXPECT_EQ(match[1], "lines");
  ASSERT_TRUE(std::regex_match(all[3], match, stamped));
  EXPECT_EQ(match[1], "[git] Cloning into 'app'...");  // the CR is gone
  ASSERT_TRUE(std::regex_match(all[4], match, stamped));
  EXPECT_EQ(match[1], "[git] done.");
}

TEST(SetupLogTest, ReadFromOffset) {
  SetupLog log;
  log.note("first");
  size_t first = log.size();
  log.note("second");
  EXPECT_EQ(log.read(0).size(), log.size());
  std::string rest = log.read(first);
  EXPECT_NE(rest.find("second"), std::string::npos);
  EXPECT_EQ(rest.find("first"), std::string::npos);
  EXPECT_EQ(log.read(log.size()), "");
  EXPECT_EQ(log.read(log.size() + 100), "");
  EXPECT_EQ(log.read(0, 4).size(), 4u);
}

TEST(SetupLogTest, BoundedWithOneNote) {
  SetupLog log(1000);
  for (int i = 0; i < 100; ++i) log.note("line number " + std::to_string(i));
  EXPECT_LE(log.size(), 1000u);
  std::string text = log.read(0);
  size_t note = text.find("size limit");
  ASSERT_NE(note, std::string::npos);
  EXPECT_EQ(text.find("size limit", note + 1), std::string::npos);  // once
  EXPECT_NE(text.find("line number 0\n"), std::string::npos);       // the start is kept
  EXPECT_EQ(text.find("line number 99"), std::string::npos);
  size_t full = log.size();
  log.note("more");
  EXPECT_EQ(log.size(), full);
}

TEST(SetupLogTest, TailStartsAtALine) {
  SetupLog log;
  for (int i = 0; i < 50; ++i) log.note("line " + std::to_string(i));
  std::string tail = log.tail(100);
  EXPECT_LE(tail.size(), 100u);
  EXPECT_NE(tail.find("line 49"), std::string::npos);
  EXPECT_EQ(tail.substr(0, 2), "20");  // a timestamp: the start of a line
}

TEST(SetupLogTest, ClearStartsANewGeneration) {
  SetupLog log(200);
  for (int i = 0; i < 20; ++i) log.note("filling the log up");
  uint64_t generation = log.generation();
  log.clear();
  EXPECT_EQ(log.size(), 0u);
  EXPECT_NE(log.generation(), generation);
  log.note("fresh");  // no longer full
  EXPECT_NE(log.read(0).find("fresh"), std::string::npos);
}

TEST(SetupLogTest, WatchersSeeAppendsAndNotifications) {
  SetupLog log;
  std::atomic<int> calls{0};
  SetupLog::WatchId id = log.watch([&] { ++calls; });
  log.note("a");
  log.output("x", "b\nc");  // one call for one append
  EXPECT_EQ(calls.load(), 2);
  log.notifyWatchers();
  EXPECT_EQ(calls.load(), 3);
  log.clear();
  EXPECT_EQ(calls.load(), 4);
  log.unwatch(id);
  log.note("d");
  EXPECT_EQ(calls.load(), 4);
}

TEST(SetupLogTest, WatcherMayReadAndUnwatchItself) {
  SetupLog log;
  std::string seen;
  SetupLog::WatchId id = 0;
  id = log.watch([&] {
    seen = log.read(0);
    log.unwatch(id);
  });
  log.note("hello");
  log.note("again");
  EXPECT_NE(seen.find("hello"), std::string::npos);
  EXPECT_EQ(seen.find("again"), std::string::npos);
}

TEST(SetupLogTest, ConcurrentAppendsKeepWholeLines) {
  SetupLog log;
  std::atomic<int> notified{0};
  log.watch([&] { ++notified; });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&log, t] {
      for (int i = 0; i < 500; ++i)
        log.output("t" + std::to_string(t), "line " + std::to_string(i));
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<std::string> all = lines(log.read(0));
  EXPECT_EQ(all.size(), 2000u);
  EXPECT_EQ(notified.load(), 2000);
  for (const std::string& line : all) {
    EXPECT_NE(line.find("] line "), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace spacegate
