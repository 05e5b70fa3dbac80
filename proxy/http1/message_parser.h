// Http1MessageParser: the one HTTP/1 codec of the project, for requests
// (server side) and responses (client side). Sans-IO: it is fed bytes and
// produces a MessageHead and body events, so it can be driven from a buffer
// by tests and fuzzers as well as from sockets.
//
// A message is parsed in two phases. parseHead() takes the bytes received so
// far for the head; HeaderBlockPrescan validates the raw block, then llhttp
// parses exactly the head bytes, so every name and value is a view into the
// caller's buffer (no copies). parseBody() then takes body bytes as they
// arrive and reports data spans, trailers, and the end of the message; it
// stops at the end of the message so that a pipelined next request waits in
// the buffer until the current exchange is done. A chunked body's framing is
// also checked on the raw bytes by ChunkedBodyPrescan, stricter than llhttp.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/limits.h"
#include "http/message.h"
#include "http1/chunked_body_prescan.h"
#include "http1/header_block_prescan.h"

namespace spacegate {

class Http1MessageParser {
 public:
  enum class Type { kRequest, kResponse };

  class BodyHandler {
   public:
    virtual ~BodyHandler() = default;
    // Body bytes (de-chunked), a view into the fed buffer.
    virtual void onBodyData(const char* data, size_t size) = 0;
    // The message ended; `trailers` holds trailer fields of a chunked body
    // (copied: they may arrive split across reads). Views are valid until the
    // next call into the parser.
    virtual void onMessageComplete(
        const std::vector<std::pair<std::string, std::string>>& trailers) = 0;
  };

  enum class HeadStatus {
    kIncomplete,  // feed more bytes
    kComplete,    // `head` is filled; headConsumed() bytes belong to the head
    kError,       // errorStatus()/errorReason() say why
  };

  struct BodyResult {
    size_t consumed = 0;    // bytes of the input used (up to the end of the message)
    bool complete = false;  // the message ended
    bool error = false;     // malformed body (bad chunk, trailers over limits)
  };

  Http1MessageParser(Type type, const Limits& limits);
  Http1MessageParser(const Http1MessageParser&) = delete;
  Http1MessageParser& operator=(const Http1MessageParser&) = delete;

  // For responses: the method of the request they answer (HEAD and CONNECT
  // change the body rules). Call before parseHead().
  void setRequestMethod(uint8_t method) { request_method_ = method; }

  // `data[0..size)` is every byte received so far for this head. On
  // kComplete, `head` views point into `data`; the caller sets head.storage.
  HeadStatus parseHead(const char* data, size_t size, RequestHead& head);
  HeadStatus parseHead(const char* data, size_t size, ResponseHead& head);
  size_t headConsumed() const { return head_consumed_; }
  int errorStatus() const { return error_status_; }
  const char* errorReason() const { return error_reason_; }

  // True when the message just parsed has a body to read with parseBody().
  bool expectsBody() const { return !message_complete_; }
  BodyResult parseBody(const char* data, size_t size, BodyHandler& handler);
  // End of input for a body delimited by the connection closing.
  bool finishAtEof(BodyHandler& handler);

  // Prepares for the next message on the same connection.
  void reset();

 private:
  static int onMessageBegin(llhttp_t* parser);
  static int onHeaderField(llhttp_t* parser, const char* at, size_t length);
  static int onHeaderValue(llhttp_t* parser, const char* at, size_t length);
  static int onHeaderFieldComplete(llhttp_t* parser);
  static int onHeadersComplete(llhttp_t* parser);
  static int onBody(llhttp_t* parser, const char* at, size_t length);
  static int onMessageComplete(llhttp_t* parser);
  static Http1MessageParser& self(llhttp_t* parser) {
    return *static_cast<Http1MessageParser*>(parser->data);
  }

  HeadStatus fail(int status, const char* reason);
  HeadStatus parseHeadCommon(const char* data, size_t size, MessageHead& head);
  bool finishFields(MessageHead& head);
  bool decideRequestFraming(RequestHead& head);
  bool decideResponseFraming(ResponseHead& head);

  Type type_;
  const Limits& limits_;
  llhttp_settings_t settings_;
  llhttp_t parser_;
  HeaderBlockPrescan prescan_;
  uint8_t request_method_ = HTTP_GET;

  // Head phase state.
  MessageHead* head_ = nullptr;
  const char* head_end_ = nullptr;
  bool in_name_ = false;  // inside a field name (llhttp may deliver it in pieces)
  bool in_value_ = false;
  bool headers_done_ = false;
  bool message_complete_ = false;
  size_t head_consumed_ = 0;
  int error_status_ = 0;
  const char* error_reason_ = "";

  // Body phase state.
  BodyHandler* body_handler_ = nullptr;
  bool body_error_ = false;
  bool chunked_body_ = false;  // the body is chunked: chunked_prescan_ checks its framing
  ChunkedBodyPrescan chunked_prescan_;
  std::vector<std::pair<std::string, std::string>> trailers_;
  size_t trailer_bytes_ = 0;
};

}  // namespace spacegate
