// RouteStore: the authority over the live route table. Every write (a whole
// table, a batch, one route) is validated whole against the current table
// before anything changes; an accepted write builds the next table (sharing
// untouched shards), publishes it to the workers, tells them which routes
// were retired (deleted, or moved to another upstream) so they can close
// those routes' connections, and hands the table to the snapshot writer.
// Writes are serialised by a mutex (the control API's loop, and the main
// thread on SIGHUP); readers never take it.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/validation_error.h"
#include "route/route_publisher.h"
#include "route/route_table.h"

namespace spacegate {

class SnapshotWriter;

// Why a write was refused, as the control API reports it.
struct RouteWriteError {
  int status = 400;  // 400 invalid, 404 unknown id, 409 stale version, 413 too many routes
  ValidationError error;
};

// Routes whose connections must go: the retired route objects (connections
// are matched by identity, so those opened on a route's new version stay),
// and the upstreams they pointed to.
struct RetiredRoutes {
  std::vector<RoutePtr> routes;
  std::vector<std::string> upstreams;
  bool empty() const { return routes.empty(); }
};

class RouteStore {
 public:
  using RetireCallback = std::function<void(const RetiredRoutes&)>;

  RouteStore(RouteTablePublisher& publisher, size_t route_limit);
  ~RouteStore();

  void setRetireCallback(RetireCallback callback) { on_retire_ = std::move(callback); }
  // Persist every applied table to `path` (temp file, fsync, rename).
  void enableSnapshots(const std::string& path);

  // Loads the snapshot file at start. Returns true if a table was loaded.
  // A corrupt file is moved aside (logged) and false returned.
  bool loadSnapshot(const std::string& path);
  // Replaces the table with the config file's routes (start, SIGHUP).
  void replaceFromConfig(std::vector<Route> routes);

  // PUT /routes: {"version": N, "routes": [...]}
  bool replaceAll(const nlohmann::json& body, RouteWriteError& error);
  // PATCH /routes: {"version": N, "upsert": [...], "delete": ["id", ...]}
  bool patch(const nlohmann::json& body, RouteWriteError& error);
  // PUT /routes/{id}: a route object; DELETE /routes/{id}. `version` 0: next.
  bool upsertOne(const std::string& id, const nlohmann::json& body, uint64_t version,
                 RouteWriteError& error);
  bool deleteOne(const std::string& id, uint64_t version, RouteWriteError& error);

  RouteTableSnapshot current() const { return publisher_.current(); }
  uint64_t version() const { return current()->version(); }
  uint64_t persistedVersion() const;
  void flushSnapshot();

  // A write refused before it reached the store (unreadable body, bad query).
  void countRefusedWrite() { ++writes_refused_; }
  // Counters for /stats and /metrics.
  uint64_t writesAccepted() const { return writes_accepted_; }
  uint64_t writesRefused() const { return writes_refused_; }
  // Seconds from a write's arrival to the new table being published.
  const std::vector<double>& applyLatencyBucketBounds() const;
  const std::vector<uint64_t>& applyLatencyBuckets() const { return latency_buckets_; }
  double applyLatencySum() const { return latency_sum_; }

 private:
  bool refuse(RouteWriteError& error, int status, std::string field, std::string message);
  bool checkVersion(const nlohmann::json& body, uint64_t& version, RouteWriteError& error);
  bool commit(std::vector<Route> upserts, std::vector<std::string> deletes, uint64_t version,
              bool replace_all, RouteWriteError& error, const char* upsert_field);
  void recordLatency(std::chrono::steady_clock::time_point start);

  RouteTablePublisher& publisher_;
  size_t route_limit_;
  std::mutex write_mutex_;
  RetireCallback on_retire_;
  std::unique_ptr<SnapshotWriter> snapshots_;
  uint64_t loaded_version_ = 0;  // the version restored from the snapshot file
  uint64_t writes_accepted_ = 0;
  uint64_t writes_refused_ = 0;
  std::vector<uint64_t> latency_buckets_;
  double latency_sum_ = 0;
};

// Parses a snapshot or PUT body's routes without the version rules (tests, fuzzing).
bool parseRouteTableDocument(const nlohmann::json& body, uint64_t& version,
                             std::vector<Route>& routes, ValidationError& error);

}  // namespace spacegate
