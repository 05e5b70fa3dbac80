#include "http1/message_parser.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace spacegate {
namespace {

using HeadStatus = Http1MessageParser::HeadStatus;

class CollectingHandler : public Http1MessageParser::BodyHandler {
 public:
  void onBodyData(const char* data, size_t size) override { body.append(data, size); }
  void onMessageComplete(const std::vector<std::pair<std::string, std::string>>& fields) override {
    complete = true;
    trailers = fields;
  }
  std::string body;
  bool complete = false;
  std::vector<std::pair<std::string, std::string>> trailers;
};

struct ParsedRequest {
  std::shared_ptr<std::string> bytes;  // the head's views point into it
  HeadStatus status;
  int error_status = 0;
  RequestHead head;
};

ParsedRequest parseRequest(const std::string& bytes, Limits limits = {}) {
  static Limits stored;
  stored = limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, stored);
  ParsedRequest parsed;
  parsed.bytes = std::make_shared<std::string>(bytes);
  parsed.status = parser.parseHead(parsed.bytes->data(), parsed.bytes->size(), parsed.head);
  parsed.error_status = parser.errorStatus();
  return parsed;
}

TEST(MessageParserTest, ParsesRequestHeadInPlace) {
  std::string bytes =
      "GET /a/b?c=d HTTP/1.1\r\nHost: Example.test:8080\r\nX-Y:  spaced value  \r\n\r\n";
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead head;
  ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
  EXPECT_EQ(head.method_name, "GET");
  EXPECT_EQ(head.path, "/a/b?c=d");
  EXPECT_EQ(head.host, "Example.test:8080");
  ASSERT_EQ(head.headers.size(), 2u);
  EXPECT_EQ(head.headers[1].name, "X-Y");
  EXPECT_EQ(head.headers[1].value, "spaced value");
  EXPECT_EQ(head.headers[1].raw_line, "X-Y:  spaced value  \r\n");
  // Views point into the input: nothing was copied.
  EXPECT_GE(head.headers[0].name.data(), bytes.data());
  EXPECT_LT(head.headers[0].name.data(), bytes.data() + bytes.size());
  EXPECT_EQ(head.framing, BodyFraming::kNone);
  EXPECT_TRUE(head.keep_alive);
  EXPECT_EQ(parser.headConsumed(), bytes.size());
  EXPECT_FALSE(parser.expectsBody());
}

TEST(MessageParserTest, EmptyValueDoesNotSwallowNextField) {
  auto parsed = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Next: v\r\n\r\n");
  ASSERT_EQ(parsed.status, HeadStatus::kComplete);
  ASSERT_EQ(parsed.head.headers.size(), 3u);
  EXPECT_EQ(parsed.head.headers[1].name, "X-Empty");
  EXPECT_EQ(parsed.head.headers[1].value, "");
  EXPECT_EQ(parsed.head.headers[1].raw_line, "X-Empty:\r\n");
  EXPECT_EQ(parsed.head.headers[2].name, "X-Next");
  EXPECT_EQ(parsed.head.headers[2].raw_line, "X-Next: v\r\n");
}

TEST(MessageParserTest, ContentLengthBodyStopsAtMessageEnd) {
  std::string bytes =
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead head;
  ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
  EXPECT_EQ(head.framing, BodyFraming::kContentLength);
  EXPECT_EQ(head.content_length, 5u);
  CollectingHandler handler;
  size_t offset = parser.headConsumed();
  auto result = parser.parseBody(bytes.data() + offset, bytes.size() - offset, handler);
  EXPECT_TRUE(result.complete);
  EXPECT_EQ(result.consumed, 5u);
  EXPECT_EQ(handler.body, "hello");
}

TEST(MessageParserTest, ChunkedBodyAcrossReadsWithTrailers) {
  std::string head_bytes = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string body = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n";
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead head;
  ASSERT_EQ(parser.parseHead(head_bytes.data(), head_bytes.size(), head), HeadStatus::kComplete);
  EXPECT_EQ(head.framing, BodyFraming::kChunked);
  CollectingHandler handler;
  for (char c : body) {  // one byte per read
    auto result = parser.parseBody(&c, 1, handler);
    ASSERT_FALSE(result.error);
  }
  EXPECT_TRUE(handler.complete);
  EXPECT_EQ(handler.body, "hello world");
  ASSERT_EQ(handler.trailers.size(), 1u);
  EXPECT_EQ(handler.trailers[0].first, "X-Checksum");
  EXPECT_EQ(handler.trailers[0].second, "abc");
}

TEST(MessageParserTest, RejectsBadChunkSize) {
  std::string head_bytes = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead head;
  ASSERT_EQ(parser.parseHead(head_bytes.data(), head_bytes.size(), head), HeadStatus::kComplete);
  CollectingHandler handler;
  std::string body = "zz\r\nhello\r\n0\r\n\r\n";
  EXPECT_TRUE(parser.parseBody(body.data(), body.size(), handler).error);
}

TEST(MessageParserTest, SmugglingShapesAreRejected) {
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n")
                .error_status,
            400);
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                         "Content-Length: 4\r\n\r\n")
                .error_status,
            400);
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: a\r\n"
                         "Transfer-Encoding: chunked, gzip\r\n\r\n")
                .error_status,
            400);
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: a\r\n"
                         "Transfer-Encoding: gzip, chunked\r\n\r\n")
                .error_status,
            501);
  EXPECT_EQ(parseRequest("POST / HTTP/1.0\r\nHost: a\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n")
                .error_status,
            400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX: \rTransfer-Encoding: chunked\r\n\r\n")
                .error_status,
            400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n").error_status, 400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").error_status, 400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a b\r\n\r\n").error_status, 400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\n\r\n").error_status, 400);  // no Host
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n").error_status,
            400);
  EXPECT_EQ(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n").error_status,
            400);
}

TEST(MessageParserTest, BodyLimitRejectsDeclaredLength) {
  Limits limits;
  limits.request_body_size = 10;
  EXPECT_EQ(
      parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits).error_status,
      413);
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", limits).status,
            HeadStatus::kComplete);
}

TEST(MessageParserTest, AbsoluteFormTargetGivesHostAndPath) {
  auto parsed = parseRequest("GET http://Gs-X.example/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
  ASSERT_EQ(parsed.status, HeadStatus::kComplete);
  EXPECT_EQ(parsed.head.host, "Gs-X.example");
  EXPECT_EQ(parsed.head.path, "/p?q");
}

TEST(MessageParserTest, UpgradeNeedsConnectionUpgrade) {
  auto upgrade = parseRequest(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
      "websocket\r\n\r\n");
  ASSERT_EQ(upgrade.status, HeadStatus::kComplete);
  EXPECT_TRUE(upgrade.head.upgrade);
  auto no_connection = parseRequest("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(no_connection.status, HeadStatus::kComplete);
  EXPECT_FALSE(no_connection.head.upgrade);
}

TEST(MessageParserTest, Http10DefaultsToClose) {
  auto parsed = parseRequest("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(parsed.status, HeadStatus::kComplete);
  EXPECT_FALSE(parsed.head.keep_alive);
  auto keep = parseRequest("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_TRUE(keep.head.keep_alive);
}

TEST(MessageParserTest, PipelinedRequestsParseOneAfterAnother) {
  std::string bytes = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead first;
  ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), first), HeadStatus::kComplete);
  EXPECT_EQ(first.path, "/1");
  size_t offset = parser.headConsumed();
  parser.reset();
  RequestHead second;
  ASSERT_EQ(parser.parseHead(bytes.data() + offset, bytes.size() - offset, second),
            HeadStatus::kComplete);
  EXPECT_EQ(second.path, "/2");
}

TEST(MessageParserTest, ResponseFramingRules) {
  Limits limits;
  {
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
    std::string bytes = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    ResponseHead head;
    ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.reason, "OK");
    EXPECT_EQ(head.framing, BodyFraming::kChunked);
  }
  {
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
    parser.setRequestMethod(HTTP_HEAD);
    std::string bytes = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    ResponseHead head;
    ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
    EXPECT_EQ(head.framing, BodyFraming::kNone);
    EXPECT_FALSE(parser.expectsBody());
  }
  {
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
    std::string bytes = "HTTP/1.0 200 OK\r\n\r\nuntil close";
    ResponseHead head;
    ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
    EXPECT_EQ(head.framing, BodyFraming::kUntilClose);
    EXPECT_FALSE(head.keep_alive);
    CollectingHandler handler;
    size_t offset = parser.headConsumed();
    auto result = parser.parseBody(bytes.data() + offset, bytes.size() - offset, handler);
    EXPECT_FALSE(result.complete);
    EXPECT_TRUE(parser.finishAtEof(handler));
    EXPECT_EQ(handler.body, "until close");
  }
  for (const char* status : {"204 No Content", "304 Not Modified"}) {
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
    std::string bytes = std::string("HTTP/1.1 ") + status + "\r\nContent-Length: 5\r\n\r\n";
    ResponseHead head;
    ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kComplete);
    EXPECT_EQ(head.framing, BodyFraming::kNone) << status;
  }
}

TEST(MessageParserTest, InterimResponseThenFinal) {
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
  std::string bytes =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  ResponseHead interim;
  ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), interim), HeadStatus::kComplete);
  EXPECT_EQ(interim.status, 100);
  size_t offset = parser.headConsumed();
  parser.reset();
  ResponseHead final_head;
  ASSERT_EQ(parser.parseHead(bytes.data() + offset, bytes.size() - offset, final_head),
            HeadStatus::kComplete);
  EXPECT_EQ(final_head.status, 201);
  offset += parser.headConsumed();
  CollectingHandler handler;
  auto result = parser.parseBody(bytes.data() + offset, bytes.size() - offset, handler);
  EXPECT_TRUE(result.complete);
  EXPECT_EQ(handler.body, "ok");
}

TEST(MessageParserTest, UpstreamTransferEncodingNotChunkedIsRefused) {
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
  std::string bytes = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
  ResponseHead head;
  EXPECT_EQ(parser.parseHead(bytes.data(), bytes.size(), head), HeadStatus::kError);
  EXPECT_EQ(parser.errorStatus(), 502);
}

// Found by fuzz/http1_response_fuzzer (corpus: 304-with-content-length and
// its siblings): a 1xx, 204 or 304 response with Content-Length or chunked
// coding was framed as bodiless for the client while llhttp went on to read
// a body, so the upstream's next bytes reached the client as this
// response's body. tests/integration/no_body_status_desync_test.py pins the
// end-to-end effect.
TEST(MessageParserTest, NoBodyStatusWithLengthFieldsReadsNoBody) {
  Limits limits;
  for (std::string head : {"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
                           "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                           "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                           "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n",
                           "HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n"}) {
    SCOPED_TRACE(head);
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
    std::string bytes = head + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    ResponseHead first;
    ASSERT_EQ(parser.parseHead(bytes.data(), bytes.size(), first), HeadStatus::kComplete);
    EXPECT_EQ(first.framing, BodyFraming::kNone);
    EXPECT_FALSE(parser.expectsBody());
    size_t offset = parser.headConsumed();
    EXPECT_EQ(offset, head.size());
    parser.reset();
    ResponseHead next;
    ASSERT_EQ(parser.parseHead(bytes.data() + offset, bytes.size() - offset, next),
              HeadStatus::kComplete);
    EXPECT_EQ(next.status, 200);
    offset += parser.headConsumed();
    CollectingHandler handler;
    auto result = parser.parseBody(bytes.data() + offset, bytes.size() - offset, handler);
    EXPECT_TRUE(result.complete);
    EXPECT_EQ(handler.body, "ok");
  }
}

// Found by fuzz/http1_request_fuzzer (corpus: request-line-extra-spaces,
// request-target-form-feed): llhttp accepts "GET /x  HTTP/1.1" and, outside
// strict mode, HTAB and FF inside the URL; the target the gateway routed on
// and forwarded kept them ("/x ", "/i\fdex.html").
TEST(MessageParserTest, WhitespaceInOrAroundTheTargetIsRejected) {
  for (const char* line : {"GET /x  HTTP/1.1", "GET  /x HTTP/1.1", "GET /x \tHTTP/1.1",
                           "GET /gs/gs-x/ HTTP/1.1 HTTP/1.1", "GET /i\fdex.html HTTP/1.1",
                           "GET /a\tb HTTP/1.1", "GET /a\x7f HTTP/1.1", "GET /a\x01 HTTP/1.1"}) {
    SCOPED_TRACE(line);
    auto parsed = parseRequest(std::string(line) + "\r\nHost: a\r\n\r\n");
    EXPECT_EQ(parsed.status, HeadStatus::kError);
    EXPECT_EQ(parsed.error_status, 400);
  }
  auto parsed = parseRequest("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(parsed.status, HeadStatus::kComplete);
  EXPECT_EQ(parsed.head.target, "/x");
}

// llhttp 8.1 (outside strict mode) skips any two bytes after chunk data and
// ends a body at a bare LF: both are refused now, in requests and responses
// alike (corpus: smuggling-chunk-spill, smuggling-bare-lf-ending-chunked-body).
TEST(MessageParserTest, ChunkSpillAndBareLfEndingAreRejected) {
  Limits limits;
  for (auto type : {Http1MessageParser::Type::kRequest, Http1MessageParser::Type::kResponse}) {
    for (std::string body :
         {"5\r\nhelloXX0\r\n\r\n", "5\r\nhello\r\n0\r\n\n", "5\r\nhello\r\n0\r\nX: a\n\r\n"}) {
      SCOPED_TRACE(body);
      Http1MessageParser parser(type, limits);
      std::string head_bytes = type == Http1MessageParser::Type::kRequest
                                   ? "POST / HTTP/1.1\r\nHost: a\r\n"
                                   : "HTTP/1.1 200 OK\r\n";
      head_bytes += "Transfer-Encoding: chunked\r\n\r\n";
      CollectingHandler handler;
      if (type == Http1MessageParser::Type::kRequest) {
        RequestHead head;
        ASSERT_EQ(parser.parseHead(head_bytes.data(), head_bytes.size(), head),
                  HeadStatus::kComplete);
      } else {
        ResponseHead head;
        ASSERT_EQ(parser.parseHead(head_bytes.data(), head_bytes.size(), head),
                  HeadStatus::kComplete);
      }
      bool error = false;
      for (char c : body) {  // one byte per read: the end is found across reads too
        auto result = parser.parseBody(&c, 1, handler);
        if (result.error) {
          error = true;
          break;
        }
      }
      EXPECT_TRUE(error);
      EXPECT_FALSE(handler.complete);
    }
  }
}

// Found by fuzz/http1_request_fuzzer's strict check of the trailer lines the
// gateway writes (corpus: trailer-name-with-space): llhttp accepts "X Y" and
// an empty name in a trailer section, and the gateway forwarded them as
// "X Y: 1" and ": a", lines no strict peer accepts.
TEST(MessageParserTest, TrailersThatAreNotValidFieldLinesAreRejected) {
  std::string head_bytes = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  Limits limits;
  for (std::string trailer : {"X Y: 1\r\n", ": a\r\n", "X\x7fY: 1\r\n",
                              "X: a\x01"
                              "b\r\n"}) {
    SCOPED_TRACE(trailer);
    Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
    RequestHead head;
    ASSERT_EQ(parser.parseHead(head_bytes.data(), head_bytes.size(), head), HeadStatus::kComplete);
    CollectingHandler handler;
    std::string body = "3\r\nabc\r\n0\r\n" + trailer + "\r\n";
    auto result = parser.parseBody(body.data(), body.size(), handler);
    EXPECT_TRUE(result.error);
    EXPECT_FALSE(handler.complete);
  }
}

}  // namespace
}  // namespace spacegate
