#include "control_api/route_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "common/log.h"
#include "control_api/snapshot_writer.h"
#include "route/route_json.h"

namespace spacegate {

namespace {

const std::vector<double> kLatencyBounds = {
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};

bool checkKnownKeys(const nlohmann::json& body, std::initializer_list<const char*> known,
                    ValidationError& error) {
  if (!body.is_object()) {
    error = {"", "the body must be a JSON object"};
    return false;
  }
  for (const auto& [key, value] : body.items()) {
    bool found = false;
    for (const char* name : known) found = found || key == name;
    if (!found) {
      error = {key, "unknown field"};
      return false;
    }
  }
  return true;
}

bool readVersion(const nlohmann::json& body, uint64_t& version, ValidationError& error) {
  auto found = body.find("version");
  if (found == body.end()) {
    error = {"version", "is required"};
    return false;
  }
  // Integers arrive signed (built in code, or from YAML) or unsigned (parsed JSON).
  if (!found->is_number_integer() ||
      (found->is_number_unsigned() ? found->get<uint64_t>() == 0 : found->get<int64_t>() <= 0)) {
    error = {"version", "must be a whole number above 0"};
    return false;
  }
  version = found->get<uint64_t>();
  return true;
}

}  // namespace

bool parseRouteTableDocument(const nlohmann::json& body, uint64_t& version,
                             std::vector<Route>& routes, ValidationError& error) {
  if (!checkKnownKeys(body, {"version", "routes"}, error)) return false;
  if (!readVersion(body, version, error)) return false;
  auto list = body.find("routes");
  if (list == body.end()) {
    error = {"routes", "is required"};
    return false;
  }
  return parseRouteList(*list, "routes", routes, error) &&
         checkRoutesServable(routes, "routes", error);
}

RouteStore::RouteStore(RouteTablePublisher& publisher, size_t route_limit)
    : publisher_(publisher),
      route_limit_(route_limit),
      latency_buckets_(kLatencyBounds.size() + 1) {}

RouteStore::~RouteStore() = default;

void RouteStore::enableSnapshots(const std::string& path) {
  snapshots_ = std::make_unique<SnapshotWriter>(path);
}

uint64_t RouteStore::persistedVersion() const {
  uint64_t written = snapshots_ ? snapshots_->persistedVersion() : 0;
  return std::max(written, loaded_version_);
}

void RouteStore::flushSnapshot() {
  if (snapshots_) snapshots_->flush();
}

const std::vector<double>& RouteStore::applyLatencyBucketBounds() const {
  return kLatencyBounds;
}

bool RouteStore::loadSnapshot(const std::string& path) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  std::ifstream stream(path);
  if (!stream) return false;  // no snapshot yet
  std::stringstream contents;
  contents << stream.rdbuf();
  std::string reason;
  uint64_t version = 0;
  std::vector<Route> routes;
  try {
    nlohmann::json document = nlohmann::json::parse(contents.str());
    ValidationError error;
    if (parseRouteTableDocument(document, version, routes, error)) {
      if (routes.size() > route_limit_) {
        reason = "more routes than the route limit";
      } else {
        publisher_.publish(std::make_shared<const RouteTable>(std::move(routes), version));
        loaded_version_ = version;
        logEvent(LogLevel::kInfo, "routes restored from snapshot")
            .with("file", path)
            .with("version", version)
            .with("routes", static_cast<uint64_t>(current()->size()))
            .emit();
        return true;
      }
    } else {
      reason = error.field + ": " + error.message;
    }
  } catch (const nlohmann::json::exception& exception) {
    reason = exception.what();
  }
  // A corrupt snapshot must not keep the gateway down: keep it for a human
  // to look at and start without it.
  std::string aside = path + ".corrupt-" + std::to_string(::time(nullptr));
  ::rename(path.c_str(), aside.c_str());
  logEvent(LogLevel::kError, "route snapshot is corrupt; moved aside, starting without it")
      .with("file", path)
      .with("moved_to", aside)
      .with("reason", reason)
      .emit();
  return false;
}

void RouteStore::replaceFromConfig(std::vector<Route> routes) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  uint64_t next_version = version() + 1;
  RouteWriteError ignored;
  commit(std::move(routes), {}, next_version, /*replace_all=*/true, ignored, "routes");
}

bool RouteStore::refuse(RouteWriteError& error, int status, std::string field,
                        std::string message) {
  error.status = status;
  error.error = {std::move(field), std::move(message)};
  ++writes_refused_;
  return false;
}

bool RouteStore::checkVersion(const nlohmann::json& body, uint64_t& version,
                              RouteWriteError& error) {
  if (!readVersion(body, version, error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  if (version <= this->version()) {
    return refuse(error, 409, "version",
                  "must be above the current version " + std::to_string(this->version()));
  }
  return true;
}

bool RouteStore::replaceAll(const nlohmann::json& body, RouteWriteError& error) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  auto start = std::chrono::steady_clock::now();
  if (!checkKnownKeys(body, {"version", "routes"}, error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  uint64_t version = 0;
  if (!checkVersion(body, version, error)) return false;
  auto list = body.find("routes");
  if (list == body.end()) return refuse(error, 400, "routes", "is required");
  if (list->is_array() && list->size() > route_limit_) {
    return refuse(error, 413, "routes",
                  "more than the route limit of " + std::to_string(route_limit_));
  }
  std::vector<Route> routes;
  if (!parseRouteList(*list, "routes", routes, error.error) ||
      !checkRoutesServable(routes, "routes", error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  if (!commit(std::move(routes), {}, version, true, error, "routes")) return false;
  recordLatency(start);
  ++writes_accepted_;
  return true;
}

bool RouteStore::patch(const nlohmann::json& body, RouteWriteError& error) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  auto start = std::chrono::steady_clock::now();
  if (!checkKnownKeys(body, {"version", "upsert", "delete"}, error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  uint64_t version = 0;
  if (!checkVersion(body, version, error)) return false;
  std::vector<Route> upserts;
  if (auto list = body.find("upsert"); list != body.end()) {
    if (!list->is_array()) return refuse(error, 400, "upsert", "must be a list of route objects");
    upserts.reserve(list->size());
    for (size_t i = 0; i < list->size(); ++i) {
      Route route;
      if (!parseRoute((*list)[i], "upsert[" + std::to_string(i) + "]", route, error.error)) {
        error.status = 400;
        ++writes_refused_;
        return false;
      }
      upserts.push_back(std::move(route));
    }
    if (!checkRoutesServable(upserts, "upsert", error.error)) {
      error.status = 400;
      ++writes_refused_;
      return false;
    }
  }
  std::vector<std::string> deletes;
  if (auto list = body.find("delete"); list != body.end()) {
    if (!list->is_array()) return refuse(error, 400, "delete", "must be a list of route ids");
    for (size_t i = 0; i < list->size(); ++i) {
      if (!(*list)[i].is_string()) {
        return refuse(error, 400, "delete[" + std::to_string(i) + "]", "must be a route id");
      }
      deletes.push_back((*list)[i].get<std::string>());
    }
  }
  if (!commit(std::move(upserts), std::move(deletes), version, false, error, "upsert")) {
    return false;
  }
  recordLatency(start);
  ++writes_accepted_;
  return true;
}

bool RouteStore::upsertOne(const std::string& id, const nlohmann::json& body, uint64_t version,
                           RouteWriteError& error) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  auto start = std::chrono::steady_clock::now();
  if (version == 0) version = this->version() + 1;
  if (version <= this->version()) {
    return refuse(error, 409, "version",
                  "must be above the current version " + std::to_string(this->version()));
  }
  Route route;
  if (!parseRoute(body, "route", route, error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  if (route.id != id) return refuse(error, 400, "route.id", "must match the id in the path");
  std::vector<Route> upserts;
  upserts.push_back(std::move(route));
  if (!checkRouteServable(upserts.front(), "route", error.error)) {
    error.status = 400;
    ++writes_refused_;
    return false;
  }
  if (!commit(std::move(upserts), {}, version, false, error, "route")) return false;
  recordLatency(start);
  ++writes_accepted_;
  return true;
}

bool RouteStore::deleteOne(const std::string& id, uint64_t version, RouteWriteError& error) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  auto start = std::chrono::steady_clock::now();
  if (!current()->findById(id)) return refuse(error, 404, "id", "no route with this id");
  if (version == 0) version = this->version() + 1;
  if (version <= this->version()) {
    return refuse(error, 409, "version",
                  "must be above the current version " + std::to_string(this->version()));
  }
  if (!commit({}, {id}, version, false, error, "route")) return false;
  recordLatency(start);
  ++writes_accepted_;
  return true;
}

bool RouteStore::commit(std::vector<Route> upserts, std::vector<std::string> deletes,
                        uint64_t version, bool replace_all, RouteWriteError& error,
                        const char* upsert_field) {
  RouteTableSnapshot old_table = current();
  RouteTableSnapshot next;
  RetiredRoutes retired;
  if (replace_all) {
    // Applied as a diff against the current table: routes that stay the same
    // keep their object (connections on them are matched by identity and
    // must never be taken for retired), and a big table with a few changes
    // copies only the shards those touch.
    std::unordered_map<std::string, const Route*> by_id;
    for (const Route& route : upserts) by_id.emplace(route.id, &route);
    std::vector<std::string> removed;
    old_table->forEach([&](const Route& old) {
      auto found = by_id.find(old.id);
      if (found == by_id.end()) {
        removed.push_back(old.id);
      }
      if (found == by_id.end() || found->second->poolKey() != old.poolKey()) {
        retired.routes.push_back(old_table->findPointerById(old.id));
        retired.upstreams.push_back(old.poolKey());
      }
    });
    std::vector<Route> changed;
    for (Route& route : upserts) {
      const Route* old = old_table->findById(route.id);
      if (!old || !old->sameDefinition(route)) changed.push_back(std::move(route));
    }
    next = old_table->withChanges(std::move(changed), removed, version);
  } else {
    // Validate the batch against the current table before touching anything.
    std::unordered_map<std::string, size_t> upsert_index;
    std::unordered_set<std::string> batch_keys;
    for (size_t i = 0; i < upserts.size(); ++i) {
      std::string field =
          std::string(upsert_field) +
          (std::string(upsert_field) == "route" ? "" : "[" + std::to_string(i) + "]");
      if (!upsert_index.emplace(upserts[i].id, i).second) {
        return refuse(error, 400, field + ".id", "route id appears twice in the batch");
      }
      if (!batch_keys.insert(upserts[i].host + " " + upserts[i].path_prefix).second) {
        return refuse(error, 400, field + ".path_prefix",
                      "another route in the batch has the same host and path_prefix");
      }
    }
    std::unordered_set<std::string> deleted;
    for (size_t i = 0; i < deletes.size(); ++i) {
      std::string field = "delete[" + std::to_string(i) + "]";
      if (!old_table->findById(deletes[i]))
        return refuse(error, 400, field, "no route with this id");
      if (!deleted.insert(deletes[i]).second) return refuse(error, 400, field, "listed twice");
      if (upsert_index.count(deletes[i])) {
        return refuse(error, 400, field, "the batch both deletes and upserts this route");
      }
    }
    for (size_t i = 0; i < upserts.size(); ++i) {
      const Route& route = upserts[i];
      const Route* holder = old_table->findByHostAndPrefix(route.host, route.path_prefix);
      if (!holder || holder->id == route.id || deleted.count(holder->id)) continue;
      auto moving = upsert_index.find(holder->id);
      if (moving != upsert_index.end()) {
        const Route& moved = upserts[moving->second];
        if (moved.host != holder->host || moved.path_prefix != holder->path_prefix) continue;
      }
      std::string field =
          std::string(upsert_field) +
          (std::string(upsert_field) == "route" ? "" : "[" + std::to_string(i) + "]");
      return refuse(error, 400, field + ".path_prefix",
                    "route \"" + holder->id + "\" already has this host and path_prefix");
    }
    size_t resulting = old_table->size() - deletes.size();
    for (const Route& route : upserts) {
      if (!old_table->findById(route.id)) ++resulting;
    }
    if (resulting > route_limit_) {
      return refuse(error, 413, std::string(upsert_field),
                    "the table would exceed the route limit of " + std::to_string(route_limit_));
    }
    for (const std::string& id : deletes) {
      retired.routes.push_back(old_table->findPointerById(id));
      retired.upstreams.push_back(old_table->findById(id)->poolKey());
    }
    for (const Route& route : upserts) {
      const Route* old = old_table->findById(route.id);
      if (old && old->poolKey() != route.poolKey()) {
        retired.routes.push_back(old_table->findPointerById(route.id));
        retired.upstreams.push_back(old->poolKey());
      }
    }
    // A route upserted exactly as it is keeps its object (see above).
    std::vector<Route> changed;
    for (Route& route : upserts) {
      const Route* old = old_table->findById(route.id);
      if (!old || !old->sameDefinition(route)) changed.push_back(std::move(route));
    }
    next = old_table->withChanges(std::move(changed), deletes, version);
  }
  publisher_.publish(next);
  if (!retired.empty() && on_retire_) on_retire_(retired);
  if (snapshots_) snapshots_->schedule(next);
  return true;
}

void RouteStore::recordLatency(std::chrono::steady_clock::time_point start) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  latency_sum_ += seconds;
  size_t bucket = 0;
  while (bucket < kLatencyBounds.size() && seconds > kLatencyBounds[bucket]) ++bucket;
  ++latency_buckets_[bucket];
}

}  // namespace spacegate
