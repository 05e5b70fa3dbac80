// ForwardedBodyCheck: the smuggling invariant for message bodies. It is the
// BodyHandler the fuzz targets give the gateway's parser; every body piece
// and the end of the message are framed exactly as the connections frame
// them on the way out (chunk size line from appendChunkSizeLine(), the data,
// CRLF; "0\r\n", the trailers and CRLF at the end; or the bytes unchanged),
// and fed at once into `peer`, a second Http1MessageParser standing for the
// receiving side, which has already parsed the forwarded head. The peer must
// decode the same bytes and trailers and see the message end exactly where
// the gateway's does: a byte more or less is a desync, and abort()s.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "http/header_rewrite.h"
#include "http1/header_block_prescan.h"
#include "http1/message_parser.h"
#include "net/write_queue.h"
#include "split_reader.h"

namespace spacegate::fuzz {

// Limits for the parser that reads back what the gateway writes: the
// gateway's added fields may push a head that just fit over the limits the
// gateway itself read it under.
inline Limits roomyLimits() {
  Limits limits;
  limits.header_block_size = 1 << 20;
  limits.header_field_count = 1 << 16;
  return limits;
}

using Trailers = std::vector<std::pair<std::string, std::string>>;

// The trailer block as ClientConnection writes it.
inline void appendTrailersAsGatewayDoes(OutboundWrite& out, const Trailers& trailers) {
  appendTrailerFields(out, trailers);
}

class ForwardedBodyCheck : public Http1MessageParser::BodyHandler {
 public:
  // `rechunk`: the gateway sends the body with its own chunked framing.
  // `peer_reads_until_close`: the forwarded head has neither length nor
  // chunking, so the peer learns the end from the connection closing.
  ForwardedBodyCheck(Http1MessageParser& peer, bool rechunk, bool peer_reads_until_close)
      : peer_(peer), rechunk_(rechunk), peer_reads_until_close_(peer_reads_until_close) {}

  void onBodyData(const char* data, size_t size) override {
    FUZZ_CHECK(!complete_, "body data after the end of the message");
    original_body_.append(data, size);
    OutboundWrite out;
    if (rechunk_) appendChunkSizeLine(out, size);
    out.appendView(data, size);
    if (rechunk_) out.appendGenerated("\r\n");
    feedPeer(out.flatten());
  }

  void onMessageComplete(const Trailers& trailers) override {
    FUZZ_CHECK(!complete_, "message completed twice");
    complete_ = true;
    original_trailers_ = trailers;
    if (!rechunk_) return;
    OutboundWrite out;
    out.appendGenerated("0\r\n");
    appendTrailersAsGatewayDoes(out, trailers);
    out.appendGenerated("\r\n");
    std::string bytes = out.flatten();
    // The peer is llhttp too, as lenient as the gateway's parser; hold what
    // the gateway writes to the strict rules of the prescan instead.
    HeaderBlockPrescan strict(HeaderBlockPrescan::Kind::kTrailers, 1 << 20, 1 << 16);
    auto verdict = strict.scan(bytes.data() + 3, bytes.size() - 3);
    if (verdict != HeaderBlockPrescan::Result::kComplete) {
      std::fprintf(stderr, "trailer block: %s\n", strict.reason());
    }
    FUZZ_CHECK(
        verdict == HeaderBlockPrescan::Result::kComplete && strict.headEnd() == bytes.size() - 3,
        "the gateway writes trailer lines that are not valid field lines");
    feedPeer(bytes);
  }

  bool complete() const { return complete_; }
  const std::string& body() const { return original_body_; }

  // Once the gateway's side has completed: the peer must have completed
  // too (or complete at the close), with the same body and trailers.
  void verifyPeerAgrees() {
    FUZZ_CHECK(complete_, "verifyPeerAgrees() before the message completed");
    if (!peer_complete_ && peer_reads_until_close_) {
      FUZZ_CHECK(peer_.finishAtEof(peer_collector_), "peer refused the close-delimited end");
      peer_complete_ = true;
    }
    FUZZ_CHECK(peer_complete_, "the peer still waits for body bytes the gateway never sends");
    FUZZ_CHECK(peer_collector_.body == original_body_, "the peer decoded a different body");
    if (rechunk_) {
      FUZZ_CHECK(peer_collector_.trailers == original_trailers_,
                 "the peer read different trailers");
    }
  }

 private:
  struct Collector : Http1MessageParser::BodyHandler {
    void onBodyData(const char* data, size_t size) override { body.append(data, size); }
    void onMessageComplete(const Trailers& fields) override {
      complete = true;
      trailers = fields;
    }
    std::string body;
    Trailers trailers;
    bool complete = false;
  };

  void feedPeer(const std::string& bytes) {
    if (bytes.empty()) return;
    FUZZ_CHECK(!peer_complete_, "the gateway forwards bytes after the peer's message end");
    std::vector<char> copy(bytes.begin(), bytes.end());
    auto result = peer_.parseBody(copy.data(), copy.size(), peer_collector_);
    FUZZ_CHECK(!result.error, "the peer rejects the body the gateway forwards");
    FUZZ_CHECK(result.consumed == copy.size(),
               "the peer's message ends inside forwarded bytes (desync)");
    if (result.complete) peer_complete_ = true;
  }

  Http1MessageParser& peer_;
  bool rechunk_;
  bool peer_reads_until_close_;
  bool complete_ = false;
  bool peer_complete_ = false;
  std::string original_body_;
  Trailers original_trailers_;
  Collector peer_collector_;
};

}  // namespace spacegate::fuzz
