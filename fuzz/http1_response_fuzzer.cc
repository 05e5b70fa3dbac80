// Fuzz target: an HTTP/1 response stream from an upstream into the gateway's
// client side, driven in-process as UpstreamConnection and ClientConnection
// drive it. The stream arrives in reads cut at fuzzer-chosen places: 1xx
// interim heads, then the final head, its body (content-length, chunked
// with trailers, or read until the upstream closes: finishAtEof), then the
// next response on the same keep-alive connection. Each head the client
// gets (writeClientResponseHead, or the interim head as passed on) and each
// body piece as re-framed is fed into a parser standing for the client,
// which must see the same status, the framing the gateway promised, the
// same body and trailers, and each message end exactly where the gateway's
// does. The gateway's own framing decision must also agree with llhttp's:
// a head that says "no body" while llhttp waits for one is a desync.
//
// Input: byte 0 seeds the read sizes (split_reader.h); byte 1 describes the
// request being answered (bits 0-1: GET, HEAD, CONNECT, POST; bit 2: the
// client speaks HTTP/1.0; bit 3: it asked for an upgrade; bit 4: the client
// connection closes after this response; bit 5: the request body is still
// unread; bit 6: 1 KiB header blocks; bit 7: 4 fields); the rest is the byte
// stream from the upstream.
#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "forwarded_body_check.h"
#include "http/header_rewrite.h"
#include "http/message.h"
#include "http1/message_parser.h"
#include "net/write_queue.h"
#include "split_reader.h"

namespace spacegate::fuzz {
namespace {

constexpr int kMaxResponsesPerInput = 16;
constexpr int kMaxInterimPerResponse = 8;

struct Exchange {
  uint8_t method;
  bool client_http10;
  bool request_upgrade;
  bool client_closes;
  bool request_incomplete;
};

Exchange exchangeFor(uint8_t selector) {
  static constexpr uint8_t kMethods[] = {HTTP_GET, HTTP_HEAD, HTTP_CONNECT, HTTP_POST};
  return Exchange{kMethods[selector & 3], (selector & 4) != 0, (selector & 8) != 0,
                  (selector & 16) != 0, (selector & 32) != 0};
}

Limits limitsFor(uint8_t selector) {
  Limits limits;
  if (selector & 64) limits.header_block_size = 1024;
  if (selector & 128) limits.header_field_count = 4;
  return limits;
}

void checkParsedHead(const ResponseHead& head, const std::vector<char>& buffer) {
  const char* begin = buffer.data();
  const char* end = begin + buffer.size();
  auto inside = [&](std::string_view view) {
    return view.empty() || (view.data() >= begin && view.data() + view.size() <= end);
  };
  FUZZ_CHECK(inside(head.raw_first_line) && head.raw_first_line.starts_with("HTTP/") &&
                 head.raw_first_line.ends_with("\r\n"),
             "status line view");
  FUZZ_CHECK(head.status >= 100 && head.status <= 599, "status code range");
  FUZZ_CHECK(inside(head.reason) && head.reason.find_first_of("\r\n") == std::string_view::npos,
             "reason phrase");
  for (const HeaderField& field : head.headers) {
    FUZZ_CHECK(inside(field.raw_line) && field.raw_line.ends_with("\r\n"), "raw field line");
    FUZZ_CHECK(field.raw_line.starts_with(field.name) && !field.name.empty(), "field name");
    FUZZ_CHECK(field.name.find_first_of(": \t\r\n") == std::string_view::npos, "name bytes");
    FUZZ_CHECK(inside(field.value) && field.value.find_first_of("\r\n") == std::string_view::npos,
               "value bytes");
  }
  if (head.framing == BodyFraming::kUntilClose) FUZZ_CHECK(!head.keep_alive, "keep-alive EOF");
}

// Parses what the gateway writes to the client as one head, and returns it.
void clientReadsHead(Http1MessageParser& client, const std::string& bytes, ResponseHead& head) {
  auto status = client.parseHead(bytes.data(), bytes.size(), head);
  if (status != Http1MessageParser::HeadStatus::kComplete) {
    std::fprintf(stderr, "head sent to the client:\n%s\nreason: %s\n", bytes.c_str(),
                 client.errorReason());
  }
  FUZZ_CHECK(status == Http1MessageParser::HeadStatus::kComplete,
             "the client cannot parse the head the gateway sends");
  FUZZ_CHECK(client.headConsumed() == bytes.size(),
             "bytes after the head sent to the client (a second response in it)");
}

void runConnection(const uint8_t* data, size_t size, uint8_t split_seed, const Exchange& exchange,
                   const Limits& limits) {
  SplitReader reader(data, size, split_seed);
  InboundBytes inbound;
  Http1MessageParser upstream(Http1MessageParser::Type::kResponse, limits);
  static const Limits client_limits = roomyLimits();
  auto client =
      std::make_unique<Http1MessageParser>(Http1MessageParser::Type::kResponse, client_limits);

  for (int responses = 0; responses < kMaxResponsesPerInput; ++responses) {
    upstream.reset();
    upstream.setRequestMethod(exchange.method);
    client->reset();
    client->setRequestMethod(exchange.method);

    // Heads: interim ones are passed on, until the final one.
    InboundBytes::Window head_window;  // the head's views point into it
    ResponseHead head;
    int interim_heads = 0;
    bool need_more = false;
    while (true) {
      if (inbound.empty() || need_more) {
        if (reader.done()) return;  // upstream closed before a whole head: 502
        inbound.append(reader.next());
      }
      head_window = inbound.window();
      auto status = upstream.parseHead(head_window->data(), head_window->size(), head);
      need_more = status == Http1MessageParser::HeadStatus::kIncomplete;
      if (need_more) continue;
      if (status == Http1MessageParser::HeadStatus::kError) {
        FUZZ_CHECK(upstream.errorStatus() == 502, "upstream errors are 502");
        return;
      }
      checkParsedHead(head, *head_window);
      FUZZ_CHECK(upstream.expectsBody() == (head.framing != BodyFraming::kNone),
                 "the head's framing and llhttp disagree on whether a body follows");
      inbound.consume(upstream.headConsumed());
      bool interim = head.status >= 100 && head.status < 200 && head.status != 101;
      if (!interim) break;
      FUZZ_CHECK(head.framing == BodyFraming::kNone, "interim response with a body");
      if (!exchange.client_http10) {
        // Passed on as received (ClientConnection::onUpstreamResponseHead).
        OutboundWrite out;
        out.appendView(head.raw_first_line);
        for (const HeaderField& field : head.headers) out.appendView(field.raw_line);
        out.appendGenerated("\r\n");
        std::string bytes = out.flatten();
        ResponseHead seen;
        clientReadsHead(*client, bytes, seen);
        FUZZ_CHECK(seen.status == head.status, "interim status changed");
        FUZZ_CHECK(!client->expectsBody(), "the client expects a body after an interim head");
        client->reset();
      }
      if (++interim_heads > kMaxInterimPerResponse) return;
      upstream.reset();  // keeps the request method
    }

    if (head.status == 101) {
      // A tunnel when the client asked for one, else a 502; either way the
      // bytes that follow are not HTTP any more.
      if (exchange.request_upgrade) {
        OutboundWrite out;
        writeClientResponseHead(head, ClientResponseContext{}, out);
        ResponseHead seen;
        clientReadsHead(*client, out.flatten(), seen);
        FUZZ_CHECK(seen.status == 101 && seen.upgrade, "101 changed on the way");
      }
      return;
    }

    // The final head, framed for the client as onUpstreamResponseHead does.
    bool unknown_length =
        head.framing == BodyFraming::kChunked || head.framing == BodyFraming::kUntilClose;
    ClientResponseContext context;
    context.chunked_body = unknown_length && !exchange.client_http10;
    context.close_connection = exchange.client_closes || exchange.request_incomplete ||
                               (exchange.client_http10 && unknown_length) ||
                               exchange.request_upgrade;
    context.http10_keep_alive = exchange.client_http10 && !context.close_connection;
    OutboundWrite out;
    writeClientResponseHead(head, context, out);
    std::string head_bytes = out.flatten();
    ResponseHead seen;
    clientReadsHead(*client, head_bytes, seen);
    FUZZ_CHECK(seen.status == head.status, "status changed");
    BodyFraming promised = head.framing == BodyFraming::kNone ? BodyFraming::kNone
                           : context.chunked_body             ? BodyFraming::kChunked
                           : head.framing == BodyFraming::kContentLength
                               ? BodyFraming::kContentLength
                               : BodyFraming::kUntilClose;
    FUZZ_CHECK(seen.framing == promised, "the client reads another framing than sent");
    FUZZ_CHECK(
        promised != BodyFraming::kContentLength || seen.content_length == head.content_length,
        "Content-Length changed");
    FUZZ_CHECK(!context.close_connection || !seen.keep_alive,
               "closing, but the client was told to keep the connection");
    FUZZ_CHECK(promised != BodyFraming::kUntilClose || context.close_connection,
               "a close-delimited body on a connection kept open");

    if (upstream.expectsBody()) {
      ForwardedBodyCheck body(*client, context.chunked_body, promised == BodyFraming::kUntilClose);
      while (!body.complete()) {
        if (inbound.empty()) {
          if (!reader.done()) {
            inbound.append(reader.next());
            continue;
          }
          // The upstream closed: the end of a close-delimited body, else a
          // truncated response (the client connection is aborted).
          bool ended = upstream.finishAtEof(body);
          FUZZ_CHECK(ended == (head.framing == BodyFraming::kUntilClose),
                     "EOF ends a body that has a length, or fails one that has none");
          if (!ended) return;
          break;
        }
        auto window = inbound.window();
        auto result = upstream.parseBody(window->data(), window->size(), body);
        if (result.error) return;  // invalid response: aborted
        FUZZ_CHECK(result.consumed <= window->size(), "consumed more than given");
        FUZZ_CHECK(result.complete || result.consumed == window->size(),
                   "stopped inside the body without finishing");
        FUZZ_CHECK(result.complete == body.complete(), "completion reported two ways");
        inbound.consume(result.consumed);
      }
      if (head.framing == BodyFraming::kContentLength) {
        FUZZ_CHECK(body.body().size() == head.content_length, "body length");
      }
      body.verifyPeerAgrees();
    }

    // The upstream connection goes back to the pool only when both sides
    // allow it; the client connection carries on unless told to close.
    if (!head.keep_alive || exchange.request_incomplete) return;
    if (context.close_connection) {
      client =
          std::make_unique<Http1MessageParser>(Http1MessageParser::Type::kResponse, client_limits);
    }
  }
}

}  // namespace
}  // namespace spacegate::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  spacegate::fuzz::Exchange exchange = spacegate::fuzz::exchangeFor(data[1]);
  spacegate::Limits limits = spacegate::fuzz::limitsFor(data[1]);
  spacegate::fuzz::runConnection(data + 2, size - 2, data[0], exchange, limits);
  return 0;
}
