#include "net/buffer.h"

#include <gtest/gtest.h>

#include <cstring>

#include "net/inbound_buffer.h"
#include "net/write_queue.h"

namespace spacegate {
namespace {

TEST(BufferPoolTest, SlabsReturnWhenLastReferenceDrops) {
  BufferPool pool(65536 + 4096);
  {
    SlabRef first = pool.acquireStandard();
    SlabRef copy = first;
    EXPECT_EQ(pool.slabsInUse(), 1u);
    first.reset();
    EXPECT_EQ(pool.slabsInUse(), 1u);
  }
  EXPECT_EQ(pool.slabsInUse(), 0u);
  EXPECT_EQ(pool.slabsCached(), 1u);
  SlabRef again = pool.acquireStandard();
  EXPECT_EQ(pool.slabsCached(), 0u);
  EXPECT_EQ(pool.acquireLarge().capacity(), 65536u + 4096);
}

TEST(InboundBufferTest, KeepsUnparsedBytesAndNeverOverwritesSlices) {
  BufferPool pool(65536);
  InboundBuffer inbound(pool);
  uv_buf_t space = inbound.prepareRead();
  std::memcpy(space.base, "hello world", 11);
  inbound.commit(11);
  BufferSlice body = inbound.slice(inbound.data(), 5);  // "hello" goes out as a slice
  inbound.consume(6);
  // The rest stays; a new read appends after it and does not touch "hello".
  space = inbound.prepareRead();
  std::memcpy(space.base, "!", 1);
  inbound.commit(1);
  EXPECT_EQ(std::string(inbound.data(), inbound.size()), "world!");
  EXPECT_EQ(std::string(body.data, body.size), "hello");
  inbound.consume(inbound.size());
  inbound.releaseIfEmpty();
  EXPECT_FALSE(inbound.slab());
  EXPECT_EQ(pool.slabsInUse(), 1u);  // only the slice holds it now
  body.slab.reset();
  EXPECT_EQ(pool.slabsInUse(), 0u);
}

TEST(OutboundWriteTest, AdjacentViewsCoalesce) {
  std::string bytes = "abcdef";
  OutboundWrite write;
  write.appendView(bytes.data(), 2);
  write.appendView(bytes.data() + 2, 2);
  write.appendGenerated("X");
  write.appendGenerated("Y");
  write.appendView(bytes.data() + 4, 2);
  EXPECT_EQ(write.segmentCount(), 3u);
  EXPECT_EQ(write.flatten(), "abcdXYef");
  EXPECT_EQ(write.size(), 8u);
}

}  // namespace
}  // namespace spacegate
