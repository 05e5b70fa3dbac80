// SnapshotWriter: writes the applied route table to the state directory on
// its own thread, so a burst of updates never waits on the disk. Writes
// coalesce (only the newest pending table is written) and each one is made
// durable: temp file, fsync, rename over the old file, fsync the folder. A
// crash leaves either the previous snapshot or the new one, never a torn one.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "route/route_table.h"

namespace spacegate {

class SnapshotWriter {
 public:
  explicit SnapshotWriter(std::string path);
  ~SnapshotWriter();

  void schedule(RouteTableSnapshot table);
  // Blocks until everything scheduled so far is on disk.
  void flush();
  uint64_t persistedVersion() const { return persisted_version_.load(std::memory_order_acquire); }

  // Serialises a table as the snapshot / PUT body document.
  static std::string serialise(const RouteTable& table);
  // Writes `contents` to `path` durably. Returns false with a reason.
  static bool writeDurably(const std::string& path, const std::string& contents,
                           std::string& error);

 private:
  void run();

  std::string path_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  RouteTableSnapshot pending_;
  bool writing_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> persisted_version_{0};
  std::thread thread_;
};

}  // namespace spacegate
