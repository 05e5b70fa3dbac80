#include "control_api/route_store.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>
#include <cstdio>
#include <fstream>

namespace spacegate {
namespace {

nlohmann::json route(const std::string& id, const std::string& host,
                     const std::string& upstream = "127.0.0.1:1", const std::string& prefix = "/") {
  return {{"id", id},
          {"host", host},
          {"upstream", upstream},
          {"path_prefix", prefix},
          {"access", "public"}};
}

class RouteStoreTest : public ::testing::Test {
 protected:
  RouteTablePublisher publisher_;
  RouteStore store_{publisher_, 100};
  RouteWriteError error_;

  void put(uint64_t version, nlohmann::json routes) {
    ASSERT_TRUE(store_.replaceAll({{"version", version}, {"routes", routes}}, error_))
        << error_.error.field << ": " << error_.error.message;
  }
};

TEST_F(RouteStoreTest, PutReplacesAndPublishes) {
  put(1, {route("a", "a.test"), route("b", "b.test")});
  EXPECT_EQ(publisher_.current()->version(), 1u);
  EXPECT_EQ(publisher_.current()->size(), 2u);
  put(2, {route("c", "c.test")});
  EXPECT_EQ(publisher_.current()->size(), 1u);
  EXPECT_NE(publisher_.current()->findById("c"), nullptr);
}

TEST_F(RouteStoreTest, StaleVersionIs409AndChangesNothing) {
  put(5, {route("a", "a.test")});
  for (uint64_t version : {uint64_t{5}, uint64_t{4}}) {
    EXPECT_FALSE(
        store_.replaceAll({{"version", version}, {"routes", nlohmann::json::array()}}, error_));
    EXPECT_EQ(error_.status, 409);
    EXPECT_EQ(error_.error.field, "version");
  }
  EXPECT_EQ(publisher_.current()->size(), 1u);
  EXPECT_EQ(store_.writesRefused(), 2u);
}

TEST_F(RouteStoreTest, InvalidBatchChangesNothing) {
  put(1, {route("a", "a.test")});
  auto before = publisher_.current();
  nlohmann::json batch = {{"version", 2},
                          {"upsert", {route("b", "b.test"), route("c", "c.test", "nowhere")}}};
  EXPECT_FALSE(store_.patch(batch, error_));
  EXPECT_EQ(error_.status, 400);
  EXPECT_EQ(error_.error.field, "upsert[1].upstream");
  EXPECT_EQ(publisher_.current(), before) << "a refused write must not publish";
}

TEST_F(RouteStoreTest, PatchRules) {
  put(1, {route("a", "a.test"), route("b", "b.test")});
  // Unknown delete.
  EXPECT_FALSE(store_.patch({{"version", 2}, {"delete", {"zzz"}}}, error_));
  EXPECT_EQ(error_.error.field, "delete[0]");
  // Clash with an existing route's host and prefix.
  EXPECT_FALSE(store_.patch({{"version", 2}, {"upsert", {route("c", "a.test")}}}, error_));
  EXPECT_EQ(error_.error.field, "upsert[0].path_prefix");
  // No clash when the holder moves away in the same batch.
  EXPECT_TRUE(store_.patch(
      {{"version", 2}, {"upsert", {route("c", "a.test"), route("a", "a2.test")}}}, error_))
      << error_.error.field << ": " << error_.error.message;
  // Or is deleted in it.
  EXPECT_TRUE(
      store_.patch({{"version", 3}, {"upsert", {route("d", "b.test")}}, {"delete", {"b"}}}, error_))
      << error_.error.field << ": " << error_.error.message;
  // Delete and upsert of one id in one batch.
  EXPECT_FALSE(store_.patch({{"version", 4}, {"upsert", {route("d", "d.test")}}, {"delete", {"d"}}},
                            error_));
  EXPECT_EQ(error_.error.field, "delete[0]");
  // Same id twice.
  EXPECT_FALSE(store_.patch(
      {{"version", 4}, {"upsert", {route("e", "e.test"), route("e", "f.test")}}}, error_));
  EXPECT_EQ(error_.error.field, "upsert[1].id");
  EXPECT_FALSE(store_.patch({{"version", 4}, {"bogus", 1}}, error_));
  EXPECT_EQ(error_.error.field, "bogus");
}

TEST_F(RouteStoreTest, RouteLimitIs413) {
  RouteStore small(publisher_, 2);
  EXPECT_FALSE(small.replaceAll(
      {{"version", 1},
       {"routes", {route("a", "a.test"), route("b", "b.test"), route("c", "c.test")}}},
      error_));
  EXPECT_EQ(error_.status, 413);
  ASSERT_TRUE(small.replaceAll(
      {{"version", 1}, {"routes", {route("a", "a.test"), route("b", "b.test")}}}, error_));
  EXPECT_FALSE(small.patch({{"version", 2}, {"upsert", {route("c", "c.test")}}}, error_));
  EXPECT_EQ(error_.status, 413);
  // Replacing an existing id does not grow the table.
  EXPECT_TRUE(
      small.patch({{"version", 2}, {"upsert", {route("a", "a.test", "127.0.0.1:2")}}}, error_));
}

TEST_F(RouteStoreTest, RetiresDeletedAndMovedRoutesOnly) {
  std::vector<RetiredRoutes> seen;
  store_.setRetireCallback([&](const RetiredRoutes& retired) { seen.push_back(retired); });
  put(1, {route("a", "a.test"), route("b", "b.test"), route("c", "c.test")});
  EXPECT_TRUE(seen.empty());
  ASSERT_TRUE(store_.patch({{"version", 2},
                            {"upsert", {route("a", "a.test", "127.0.0.1:9"), route("b", "b.test")}},
                            {"delete", {"c"}}},
                           error_));
  ASSERT_EQ(seen.size(), 1u);
  std::vector<std::string> ids;
  for (const RoutePtr& retired : seen[0].routes) ids.push_back(retired->id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "c"}));
  // A whole-table PUT retires what it drops or moves.
  put(3, {route("a", "a.test", "127.0.0.1:9")});
  ASSERT_EQ(seen.size(), 2u);
  ASSERT_EQ(seen[1].routes.size(), 1u);
  EXPECT_EQ(seen[1].routes[0]->id, "b");
}

TEST_F(RouteStoreTest, SingleRouteWrites) {
  EXPECT_TRUE(store_.upsertOne("a", route("a", "a.test"), 0, error_));
  EXPECT_EQ(store_.version(), 1u);
  EXPECT_FALSE(store_.upsertOne("a", route("b", "b.test"), 0, error_));
  EXPECT_EQ(error_.error.field, "route.id");
  EXPECT_FALSE(store_.upsertOne("a", route("a", "a.test"), 1, error_));
  EXPECT_EQ(error_.status, 409);
  EXPECT_FALSE(store_.deleteOne("zzz", 0, error_));
  EXPECT_EQ(error_.status, 404);
  EXPECT_TRUE(store_.deleteOne("a", 7, error_));
  EXPECT_EQ(store_.version(), 7u);
}

TEST(RouteStoreSnapshotTest, PersistsAndRestoresAndSetsAsideCorruptFiles) {
  char folder[] = "/tmp/spacegate-store-test-XXXXXX";
  ASSERT_NE(mkdtemp(folder), nullptr);
  std::string path = std::string(folder) + "/routes.json";
  {
    RouteTablePublisher publisher;
    RouteStore store(publisher, 100);
    store.enableSnapshots(path);
    RouteWriteError error;
    ASSERT_TRUE(store.replaceAll({{"version", 3}, {"routes", {route("a", "a.test")}}}, error));
    store.flushSnapshot();
    EXPECT_EQ(store.persistedVersion(), 3u);
    struct stat info {};
    ASSERT_EQ(stat(path.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
  }
  {
    RouteTablePublisher publisher;
    RouteStore store(publisher, 100);
    ASSERT_TRUE(store.loadSnapshot(path));
    EXPECT_EQ(store.version(), 3u);
    EXPECT_NE(store.current()->findById("a"), nullptr);
  }
  std::ofstream(path) << "{\"version\": 3, \"routes\": [{\"id\": \"A\"}";
  {
    RouteTablePublisher publisher;
    RouteStore store(publisher, 100);
    EXPECT_FALSE(store.loadSnapshot(path));
    EXPECT_EQ(store.current()->size(), 0u);
    EXPECT_NE(access(path.c_str(), F_OK), 0) << "the corrupt file is moved aside";
  }
  std::string command = std::string("rm -rf ") + folder;
  ASSERT_EQ(std::system(command.c_str()), 0);
}

}  // namespace
}  // namespace spacegate
