#include "http1/header_block_prescan.h"

#include <gtest/gtest.h>

#include <string>

namespace spacegate {
namespace {

using Result = HeaderBlockPrescan::Result;

Result scanRequest(const std::string& bytes, size_t max_size = 65536, size_t max_fields = 100) {
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, max_size, max_fields);
  return prescan.scan(bytes.data(), bytes.size());
}

TEST(HeaderBlockPrescanTest, AcceptsWellFormedRequest) {
  std::string request = "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, 65536, 100);
  ASSERT_EQ(prescan.scan(request.data(), request.size()), Result::kComplete);
  EXPECT_EQ(prescan.headBegin(), 0u);
  EXPECT_EQ(prescan.headEnd(), request.size());
  EXPECT_EQ(prescan.fieldCount(), 2u);
}

TEST(HeaderBlockPrescanTest, StopsAtEndOfHeadLeavingBody) {
  std::string request = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, 65536, 100);
  ASSERT_EQ(prescan.scan(request.data(), request.size()), Result::kComplete);
  EXPECT_EQ(prescan.headEnd(), request.size() - 4);
}

TEST(HeaderBlockPrescanTest, IncompleteUntilEmptyLine) {
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\n"), Result::kIncomplete);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\n\r"), Result::kIncomplete);
}

TEST(HeaderBlockPrescanTest, ByteAtATimeGivesSameResult) {
  std::string request = "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, 65536, 100);
  for (size_t size = 1; size < request.size(); ++size) {
    ASSERT_EQ(prescan.scan(request.data(), size), Result::kIncomplete) << size;
  }
  EXPECT_EQ(prescan.scan(request.data(), request.size()), Result::kComplete);
}

TEST(HeaderBlockPrescanTest, SkipsLeadingEmptyLines) {
  std::string request = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, 65536, 100);
  ASSERT_EQ(prescan.scan(request.data(), request.size()), Result::kComplete);
  EXPECT_EQ(prescan.headBegin(), 4u);
  EXPECT_EQ(scanRequest("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsObsFold) {
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\n\tTransfer-Encoding: chunked\r\n\r\n"),
            Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsBareCrInValue) {
  // The CVE-2023-30589 shape.
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\nX: \rTransfer-Encoding: chunked\r\n\r\n"),
            Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsBareLf) {
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\nHost: a\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost: a\r\n\n"), Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsNul) {
  EXPECT_EQ(scanRequest(std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26)), Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsHttp09) {
  EXPECT_EQ(scanRequest("GET /\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET /index.html\r\nHost: a\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/x\r\n\r\n"), Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsFieldWithoutColon) {
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nHost a\r\n\r\n"), Result::kMalformed);
}

TEST(HeaderBlockPrescanTest, RejectsBadNamesAndControlBytes) {
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nName : x\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\n: x\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"), Result::kMalformed);
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"), Result::kMalformed);
  // Tabs and obs-text are allowed in values.
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nX: a\tb\xc3\xa9\r\n\r\n"), Result::kComplete);
}

TEST(HeaderBlockPrescanTest, EnforcesSizeLimit) {
  std::string request = "GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n";
  EXPECT_EQ(scanRequest(request, 1024), Result::kTooLarge);
  EXPECT_EQ(scanRequest(request, 4096), Result::kComplete);
  // Without an end in sight, the limit still fires.
  EXPECT_EQ(scanRequest("GET / HTTP/1.1\r\nX: " + std::string(2000, 'a'), 1024), Result::kTooLarge);
}

TEST(HeaderBlockPrescanTest, EnforcesFieldCount) {
  std::string request = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 5; ++i) request += "X" + std::to_string(i) + ": v\r\n";
  request += "\r\n";
  EXPECT_EQ(scanRequest(request, 65536, 4), Result::kTooManyFields);
  EXPECT_EQ(scanRequest(request, 65536, 5), Result::kComplete);
}

TEST(HeaderBlockPrescanTest, ChecksStatusLine) {
  HeaderBlockPrescan good(HeaderBlockPrescan::Kind::kResponse, 65536, 100);
  std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  EXPECT_EQ(good.scan(response.data(), response.size()), Result::kComplete);
  HeaderBlockPrescan bad(HeaderBlockPrescan::Kind::kResponse, 65536, 100);
  std::string garbage = "ICY 200 OK\r\n\r\n";
  EXPECT_EQ(bad.scan(garbage.data(), garbage.size()), Result::kMalformed);
}

Result scanResponse(const std::string& bytes) {
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kResponse, 65536, 100);
  return prescan.scan(bytes.data(), bytes.size());
}

// Found by fuzz/http1_response_fuzzer (corpus: status-code-not-three-digits):
// llhttp read "HTTP/1.1 2 0 OK" as status 2, which the gateway then framed
// as a bodiless final response and passed on.
TEST(HeaderBlockPrescanTest, StatusCodeIsThreeDigitsFrom100To599) {
  for (const char* line :
       {"HTTP/1.1 2 0 OK", "HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 099 Low",
        "HTTP/1.1 600 High", "HTTP/1.1 20x OK", "HTTP/1.1 200OK"}) {
    EXPECT_EQ(scanResponse(std::string(line) + "\r\n\r\n"), Result::kMalformed) << line;
  }
  for (const char* line :
       {"HTTP/1.1 100 Continue", "HTTP/1.1 599 X", "HTTP/1.1 200 ", "HTTP/1.1 204"}) {
    EXPECT_EQ(scanResponse(std::string(line) + "\r\n\r\n"), Result::kComplete) << line;
  }
}

}  // namespace
}  // namespace spacegate
