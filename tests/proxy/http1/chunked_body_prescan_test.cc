// ChunkedBodyPrescan: the strict chunked framing checked beside llhttp.
// Added after fuzz/http1_request_fuzzer's probes showed llhttp 8.1 taking
// any two bytes after chunk data and a bare LF ending the body.
#include "http1/chunked_body_prescan.h"

#include <gtest/gtest.h>

#include <string>

namespace spacegate {
namespace {

using Result = ChunkedBodyPrescan::Result;

Result scanWhole(const std::string& body, size_t* consumed = nullptr) {
  ChunkedBodyPrescan prescan;
  size_t used = 0;
  Result result = prescan.scan(body.data(), body.size(), used);
  if (consumed) *consumed = used;
  return result;
}

TEST(ChunkedBodyPrescanTest, AcceptsWellFramedBodies) {
  size_t consumed = 0;
  std::string body = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n";
  EXPECT_EQ(scanWhole(body + "GET / HTTP/1.1\r\n", &consumed), Result::kComplete);
  EXPECT_EQ(consumed, body.size());
  EXPECT_EQ(scanWhole("A\r\n0123456789\r\n0\r\n\r\n"), Result::kComplete);
  EXPECT_EQ(scanWhole("0\r\n\r\n"), Result::kComplete);
  EXPECT_EQ(scanWhole("5\r\nhel"), Result::kIncomplete);
}

TEST(ChunkedBodyPrescanTest, ByteAtATimeGivesSameResult) {
  std::string body = "5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nNEXT";
  ChunkedBodyPrescan prescan;
  size_t total = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    size_t consumed = 0;
    Result result = prescan.scan(body.data() + i, 1, consumed);
    total += consumed;
    if (result == Result::kComplete) break;
    ASSERT_EQ(result, Result::kIncomplete) << i;
  }
  EXPECT_EQ(total, body.size() - 4);
}

// llhttp skips any two bytes after chunk data ("chunk spill").
TEST(ChunkedBodyPrescanTest, ChunkDataMustBeFollowedByCrlf) {
  EXPECT_EQ(scanWhole("5\r\nhelloXX0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("3\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("5\r\nhello\n0\r\n\r\n"), Result::kMalformed);
}

// llhttp takes a bare LF as the end of the body.
TEST(ChunkedBodyPrescanTest, EveryLineEndsInCrlf) {
  EXPECT_EQ(scanWhole("0\r\n\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("5\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("0\r\nX: a\nY: b\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("0\r\nX: a\r\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("0\r\n\rX"), Result::kMalformed);
}

TEST(ChunkedBodyPrescanTest, ChunkSizeLine) {
  EXPECT_EQ(scanWhole("zz\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("-5\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("5 \r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("\r\n5\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("5;a=\x01\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  std::string with_nul = "5";
  with_nul += '\0';
  EXPECT_EQ(scanWhole(with_nul + "\r\nhello\r\n0\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanWhole("0\r\n X: folded\r\n\r\n"), Result::kMalformed);
}

TEST(ChunkedBodyPrescanTest, StaysFailedAndResets) {
  ChunkedBodyPrescan prescan;
  size_t consumed = 0;
  std::string bad = "5\nhello";
  EXPECT_EQ(prescan.scan(bad.data(), bad.size(), consumed), Result::kMalformed);
  std::string good = "0\r\n\r\n";
  EXPECT_EQ(prescan.scan(good.data(), good.size(), consumed), Result::kMalformed);
  prescan.reset();
  EXPECT_EQ(prescan.scan(good.data(), good.size(), consumed), Result::kComplete);
}

}  // namespace
}  // namespace spacegate
