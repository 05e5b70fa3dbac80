#include "http/header_rewrite.h"

#include <gtest/gtest.h>

#include "http1/message_parser.h"

namespace spacegate {
namespace {

class HeaderRewriteTest : public ::testing::Test {
 protected:
  std::string upstreamHead(const std::string& request_bytes, UpstreamRequestContext context = {}) {
    bytes_ = request_bytes;
    Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits_);
    head_ = RequestHead{};
    EXPECT_EQ(parser.parseHead(bytes_.data(), bytes_.size(), head_),
              Http1MessageParser::HeadStatus::kComplete);
    if (context.client_ip.empty()) context.client_ip = "192.0.2.7";
    if (context.request_id.empty()) context.request_id = "rid-1";
    context.chunked_body = head_.framing == BodyFraming::kChunked;
    OutboundWrite write;
    writeUpstreamRequestHead(head_, context, write);
    segments_ = write.segmentCount();
    return write.flatten();
  }
  std::string clientHead(const std::string& response_bytes, ClientResponseContext context = {}) {
    bytes_ = response_bytes;
    Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits_);
    ResponseHead head;
    EXPECT_EQ(parser.parseHead(bytes_.data(), bytes_.size(), head),
              Http1MessageParser::HeadStatus::kComplete);
    OutboundWrite write;
    writeClientResponseHead(head, context, write);
    return write.flatten();
  }
  Limits limits_;
  std::string bytes_;
  RequestHead head_;
  size_t segments_ = 0;
};

TEST_F(HeaderRewriteTest, UnchangedLinesAreForwardedAsOneView) {
  std::string head =
      upstreamHead("GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nCookie: c=1\r\n\r\n");
  EXPECT_EQ(head,
            "GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nCookie: c=1\r\n"
            "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test\r\n"
            "X-Request-Id: rid-1\r\n\r\n");
  // Request line and three field lines coalesce into one iovec; one generated part.
  EXPECT_EQ(segments_, 2u);
}

TEST_F(HeaderRewriteTest, HopByHopFieldsAreRemoved) {
  std::string head = upstreamHead(
      "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
      "Proxy-Connection: x\r\nX-Secret: 1\r\nTE: gzip\r\nUpgrade: websocket\r\n"
      "Proxy-Authorization: Basic abc\r\nX-Kept: yes\r\n\r\n");
  EXPECT_EQ(head.find("Connection"), std::string::npos) << head;
  EXPECT_EQ(head.find("Keep-Alive"), std::string::npos);
  EXPECT_EQ(head.find("X-Secret"), std::string::npos);
  EXPECT_EQ(head.find("TE:"), std::string::npos);
  EXPECT_EQ(head.find("Upgrade"), std::string::npos);
  EXPECT_EQ(head.find("Proxy-Authorization"), std::string::npos);
  EXPECT_NE(head.find("X-Kept: yes\r\n"), std::string::npos);
}

TEST_F(HeaderRewriteTest, ConnectionCannotRemoveFramingOrHost) {
  std::string head = upstreamHead(
      "POST / HTTP/1.1\r\nHost: a.test\r\nConnection: Content-Length, Host\r\nContent-Length: "
      "3\r\n\r\n");
  EXPECT_NE(head.find("Content-Length: 3\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Host: a.test\r\n"), std::string::npos) << head;
}

TEST_F(HeaderRewriteTest, TeTrailersSurvives) {
  std::string head = upstreamHead("GET / HTTP/1.1\r\nHost: a\r\nTE: trailers, deflate\r\n\r\n");
  EXPECT_NE(head.find("TE: trailers\r\n"), std::string::npos) << head;
}

TEST_F(HeaderRewriteTest, ForwardedForIsAppendedAndProtoHostReplaced) {
  std::string head = upstreamHead(
      "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"
      "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n");
  EXPECT_NE(head.find("X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n"), std::string::npos)
      << head;
  EXPECT_EQ(head.find("https"), std::string::npos);
  EXPECT_EQ(head.find("evil"), std::string::npos);
}

TEST_F(HeaderRewriteTest, RequestIdKeptWhenSane) {
  upstreamHead("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n");
  EXPECT_EQ(acceptableRequestId(head_), "abc-123");
  upstreamHead("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: bad id\"\r\n\r\n");
  EXPECT_EQ(acceptableRequestId(head_), "");
  upstreamHead("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + std::string(200, 'a') + "\r\n\r\n");
  EXPECT_EQ(acceptableRequestId(head_), "");
}

TEST_F(HeaderRewriteTest, StrippedPathAndHttp10AreRewrittenRequestLines) {
  UpstreamRequestContext context;
  context.rewritten_path = "/rest";
  std::string head = upstreamHead("GET /gs/x/rest HTTP/1.1\r\nHost: a\r\n\r\n", context);
  EXPECT_TRUE(head.starts_with("GET /rest HTTP/1.1\r\n")) << head;
  head = upstreamHead("GET /p HTTP/1.0\r\nHost: a\r\n\r\n");
  EXPECT_TRUE(head.starts_with("GET /p HTTP/1.1\r\n")) << head;
}

TEST_F(HeaderRewriteTest, ChunkedRequestGetsGatewayFraming) {
  std::string head =
      upstreamHead("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
  EXPECT_EQ(head.find("Chunked"), std::string::npos) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
}

TEST_F(HeaderRewriteTest, UpgradeKeepsUpgradeField) {
  std::string head = upstreamHead(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: k\r\n\r\n");
  EXPECT_NE(head.find("Upgrade: websocket\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: upgrade\r\n"), std::string::npos);
}

TEST_F(HeaderRewriteTest, ConsumedCredentialsNeverGoUpstream) {
  UpstreamRequestContext context;
  context.drop_authorization = true;
  context.remove_cookie = "sg_token";
  std::string head = upstreamHead(
      "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer v1.x.y\r\nCookie: a=1; sg_token=v1.x.y;  "
      "b=2\r\n"
      "Cookie: sg_token=v1.x.y\r\nCookie: c=3\r\n\r\n",
      context);
  EXPECT_EQ(head.find("v1.x.y"), std::string::npos) << head;
  EXPECT_EQ(head.find("Authorization"), std::string::npos) << head;
  EXPECT_NE(head.find("Cookie: a=1; b=2\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Cookie: c=3\r\n"), std::string::npos) << head;
}

TEST_F(HeaderRewriteTest, ResponseHeadReframed) {
  ClientResponseContext context;
  context.chunked_body = true;
  std::string head = clientHead(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
      "Content-Type: text/plain\r\n\r\n",
      context);
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n");
  context = {};
  context.close_connection = true;
  head = clientHead("HTTP/1.0 404 Nope\r\nContent-Length: 0\r\n\r\n", context);
  EXPECT_EQ(head, "HTTP/1.1 404 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

TEST_F(HeaderRewriteTest, ErrorResponseIsShortText) {
  OutboundWrite write;
  writeErrorResponse(404, "no route", false, "rid", write);
  std::string text = write.flatten();
  EXPECT_TRUE(text.starts_with("HTTP/1.1 404 Not Found\r\n")) << text;
  EXPECT_NE(text.find("Content-Length: 24\r\n"), std::string::npos) << text;
  EXPECT_TRUE(text.ends_with("\r\n\r\n404 Not Found: no route\n")) << text;
}

TEST_F(HeaderRewriteTest, ChunkSizeLine) {
  OutboundWrite write;
  appendChunkSizeLine(write, 0x1a2b);
  EXPECT_EQ(write.flatten(), "1a2b\r\n");
}

}  // namespace
}  // namespace spacegate
