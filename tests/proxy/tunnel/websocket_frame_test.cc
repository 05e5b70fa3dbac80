#include "tunnel/websocket_frame.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace spacegate {
namespace {

using Event = WebSocketFrameDecoder::Event;

constexpr uint8_t kMask[4] = {0x37, 0xfa, 0x21, 0x3d};

// A frame as a client sends it: header plus payload masked with `mask`.
std::string frame(bool fin, WebSocketOpcode opcode, std::string_view payload,
                  const uint8_t* mask = kMask) {
  char header[kMaxWebSocketFrameHeader];
  size_t header_size = encodeWebSocketFrameHeader(header, fin, opcode, payload.size(), mask);
  std::string bytes(header, header_size);
  std::string body(payload);
  if (mask) maskPayload(body.data(), body.size(), mask, 0);
  return bytes + body;
}

// What the decoder made of a byte stream: one entry per frame, plus the
// error if there was one.
struct Decoded {
  struct Frame {
    WebSocketFrameHeader header;
    std::string payload;
    size_t pieces = 0;
    bool ended = false;
  };
  std::vector<Frame> frames;
  bool failed = false;
  uint16_t error_code = 0;
  std::string error_reason;
};

// Feeds `bytes` in reads of at most `read_size` bytes, each read in its own
// buffer (as a socket would deliver them).
Decoded decode(const std::string& bytes, size_t read_size,
               WebSocketFrameDecoder::Limits limits = {}) {
  WebSocketFrameDecoder decoder(limits);
  Decoded decoded;
  for (size_t start = 0; start < bytes.size(); start += read_size) {
    std::string read = bytes.substr(start, read_size);
    size_t offset = 0;
    while (true) {
      size_t consumed = 0;
      std::string_view payload;
      Event event = decoder.next(read.data() + offset, read.size() - offset, consumed, payload);
      EXPECT_LE(consumed, read.size() - offset);
      offset += consumed;
      if (event == Event::kNeedMore) {
        EXPECT_EQ(offset, read.size());
        break;
      }
      if (event == Event::kError) {
        decoded.failed = true;
        decoded.error_code = decoder.errorCode();
        decoded.error_reason = decoder.errorReason();
        return decoded;
      }
      if (event == Event::kHeader) {
        decoded.frames.push_back({decoder.header(), "", 0, false});
      } else if (event == Event::kPayload) {
        EXPECT_EQ(consumed, payload.size());
        EXPECT_EQ(payload.data(), read.data() + offset - consumed) << "payload not in place";
        decoded.frames.back().payload.append(payload);
        decoded.frames.back().pieces++;
      } else if (event == Event::kFrameEnd) {
        EXPECT_EQ(consumed, 0u);
        decoded.frames.back().ended = true;
      }
    }
  }
  return decoded;
}

WebSocketFrameDecoder::Limits serverLimits() {
  return {};
}

WebSocketFrameDecoder::Limits clientLimits() {
  WebSocketFrameDecoder::Limits limits;
  limits.require_mask = false;
  limits.forbid_mask = true;
  return limits;
}

Decoded decodeOneRead(const std::string& bytes, WebSocketFrameDecoder::Limits limits = {}) {
  return decode(bytes, bytes.size(), limits);
}

std::string bytesOf(std::initializer_list<int> values) {
  std::string bytes;
  for (int value : values) bytes.push_back(static_cast<char>(value));
  return bytes;
}

TEST(WebSocketAcceptValueTest, Rfc6455Example) {
  // RFC 6455 section 1.3.
  EXPECT_EQ(webSocketAcceptValue("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  // RFC 6455 section 4.2.2's other key (checked with Python's hashlib).
  EXPECT_EQ(webSocketAcceptValue("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

TEST(WebSocketFrameEncodeTest, Rfc6455Examples) {
  // RFC 6455 section 5.7: an unmasked "Hello" and a masked one.
  char header[kMaxWebSocketFrameHeader];
  size_t size = encodeWebSocketFrameHeader(header, true, WebSocketOpcode::kText, 5, nullptr);
  EXPECT_EQ(std::string(header, size), bytesOf({0x81, 0x05}));

  const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  std::string masked = frame(true, WebSocketOpcode::kText, "Hello", mask);
  EXPECT_EQ(masked, bytesOf({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}));

  // 256 bytes: 16-bit length; 65536 bytes: 64-bit length.
  size = encodeWebSocketFrameHeader(header, true, WebSocketOpcode::kBinary, 256, nullptr);
  EXPECT_EQ(std::string(header, size), bytesOf({0x82, 0x7e, 0x01, 0x00}));
  size = encodeWebSocketFrameHeader(header, true, WebSocketOpcode::kBinary, 65536, nullptr);
  EXPECT_EQ(std::string(header, size), bytesOf({0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}));
}

TEST(WebSocketFrameEncodeTest, LengthEncodingBoundaries) {
  char header[kMaxWebSocketFrameHeader];
  struct Case {
    uint64_t length;
    size_t unmasked_size;
  };
  for (Case c : {Case{0, 2}, Case{125, 2}, Case{126, 4}, Case{65535, 4}, Case{65536, 10},
                 Case{(uint64_t{1} << 63) - 1, 10}}) {
    EXPECT_EQ(encodeWebSocketFrameHeader(header, true, WebSocketOpcode::kBinary, c.length, nullptr),
              c.unmasked_size)
        << c.length;
    EXPECT_EQ(encodeWebSocketFrameHeader(header, false, WebSocketOpcode::kBinary, c.length, kMask),
              c.unmasked_size + 4)
        << c.length;
  }
  // Decoding what was encoded gives the same header (without the payload).
  WebSocketFrameDecoder::Limits limits;
  limits.max_payload = uint64_t{1} << 62;
  for (uint64_t length : {0ull, 125ull, 126ull, 65535ull, 65536ull, 1ull << 40}) {
    size_t size =
        encodeWebSocketFrameHeader(header, false, WebSocketOpcode::kBinary, length, kMask);
    WebSocketFrameDecoder decoder(limits);
    size_t consumed = 0;
    std::string_view payload;
    ASSERT_EQ(decoder.next(header, size, consumed, payload), Event::kHeader);
    EXPECT_EQ(consumed, size);
    EXPECT_EQ(decoder.header().payload_length, length);
    EXPECT_EQ(decoder.header().header_length, size);
    EXPECT_FALSE(decoder.header().fin);
    EXPECT_TRUE(decoder.header().masked);
    EXPECT_EQ(0, std::memcmp(decoder.header().mask, kMask, 4));
  }
}

TEST(WebSocketMaskTest, MaskingTwiceRestoresAndPiecesMatchWhole) {
  std::string original;
  for (int i = 0; i < 100; ++i) original.push_back(static_cast<char>(i * 7));
  std::string whole = original;
  maskPayload(whole.data(), whole.size(), kMask, 0);
  EXPECT_NE(whole, original);
  // Masked piece by piece at every split point and offset phase: same bytes.
  for (size_t cut = 0; cut <= original.size(); ++cut) {
    std::string pieces = original;
    maskPayload(pieces.data(), cut, kMask, 0);
    maskPayload(pieces.data() + cut, pieces.size() - cut, kMask, cut);
    ASSERT_EQ(pieces, whole) << "cut at " << cut;
  }
  maskPayload(whole.data(), whole.size(), kMask, 0);
  EXPECT_EQ(whole, original);
}

TEST(WebSocketFrameDecoderTest, MaskedFrameInOneRead) {
  Decoded decoded = decodeOneRead(frame(true, WebSocketOpcode::kBinary, "hello tunnel"));
  ASSERT_FALSE(decoded.failed) << decoded.error_reason;
  ASSERT_EQ(decoded.frames.size(), 1u);
  EXPECT_TRUE(decoded.frames[0].header.fin);
  EXPECT_EQ(decoded.frames[0].header.opcode, WebSocketOpcode::kBinary);
  EXPECT_TRUE(decoded.frames[0].header.masked);
  EXPECT_EQ(decoded.frames[0].header.header_length, 6u);
  EXPECT_EQ(decoded.frames[0].payload, "hello tunnel");
  EXPECT_EQ(decoded.frames[0].pieces, 1u);
  EXPECT_TRUE(decoded.frames[0].ended);
}

TEST(WebSocketFrameDecoderTest, EveryReadSizeGivesTheSameFrames) {
  // Frames of every length encoding, fragments with a ping between them,
  // and empty frames; fed in reads of every size from 1 byte up, so masks
  // and headers are cut at every place.
  std::string big(70000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  std::string medium(300, 'm');
  const uint8_t other_mask[4] = {0x01, 0x80, 0xff, 0x00};
  std::string stream = frame(false, WebSocketOpcode::kBinary, "first ") +
                       frame(true, WebSocketOpcode::kPing, "ping!", other_mask) +
                       frame(true, WebSocketOpcode::kContinuation, "second") +
                       frame(true, WebSocketOpcode::kBinary, "") +
                       frame(true, WebSocketOpcode::kBinary, medium, other_mask) +
                       frame(true, WebSocketOpcode::kBinary, big) +
                       frame(true, WebSocketOpcode::kClose, webSocketClosePayload(1000, "bye"));
  std::vector<std::string> expected = {
      "first ", "ping!", "second", "", medium, big, webSocketClosePayload(1000, "bye")};
  for (size_t read_size : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{7}, size_t{13},
                           size_t{14}, size_t{64}, size_t{4096}, stream.size()}) {
    Decoded decoded = decode(stream, read_size);
    ASSERT_FALSE(decoded.failed) << read_size << ": " << decoded.error_reason;
    ASSERT_EQ(decoded.frames.size(), expected.size()) << read_size;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(decoded.frames[i].payload, expected[i])
          << "read size " << read_size << " frame " << i;
      EXPECT_TRUE(decoded.frames[i].ended);
      EXPECT_EQ(decoded.frames[i].header.payload_length, expected[i].size());
    }
    EXPECT_FALSE(decoded.frames[0].header.fin);
    EXPECT_EQ(decoded.frames[1].header.opcode, WebSocketOpcode::kPing);
    EXPECT_EQ(decoded.frames[2].header.opcode, WebSocketOpcode::kContinuation);
    EXPECT_EQ(decoded.frames[6].header.opcode, WebSocketOpcode::kClose);
  }
}

TEST(WebSocketFrameDecoderTest, PayloadPiecesFollowTheReads) {
  std::string bytes = frame(true, WebSocketOpcode::kBinary, "0123456789");
  Decoded decoded = decode(bytes, 4);
  ASSERT_FALSE(decoded.failed);
  ASSERT_EQ(decoded.frames.size(), 1u);
  EXPECT_EQ(decoded.frames[0].payload, "0123456789");
  // Header (6 bytes) ends in the second read; payload comes in the rest of
  // it (2 bytes) and then 4 + 4.
  EXPECT_EQ(decoded.frames[0].pieces, 3u);
}

TEST(WebSocketFrameDecoderTest, StopsAtTheFrameEndAndLeavesTheRest) {
  // A frame and the first byte of the next.
  std::string bytes = frame(true, WebSocketOpcode::kBinary, "ab") + "\x82";
  WebSocketFrameDecoder decoder;
  size_t consumed = 0;
  std::string_view payload;
  ASSERT_EQ(decoder.next(bytes.data(), bytes.size(), consumed, payload), Event::kHeader);
  size_t offset = consumed;
  EXPECT_EQ(decoder.payloadRemaining(), 2u);
  ASSERT_EQ(decoder.next(bytes.data() + offset, bytes.size() - offset, consumed, payload),
            Event::kPayload);
  EXPECT_EQ(payload, "ab");
  EXPECT_EQ(consumed, 2u);
  offset += consumed;
  // kFrameEnd needs no bytes.
  ASSERT_EQ(decoder.next(nullptr, 0, consumed, payload), Event::kFrameEnd);
  EXPECT_EQ(consumed, 0u);
  // The next header is incomplete: kNeedMore, the bytes are kept inside.
  ASSERT_EQ(decoder.next(bytes.data() + offset, 1, consumed, payload), Event::kNeedMore);
  EXPECT_EQ(consumed, 1u);
  EXPECT_EQ(decoder.next(nullptr, 0, consumed, payload), Event::kNeedMore);
}

TEST(WebSocketFrameDecoderTest, EmptyFrameReportsHeaderThenEnd) {
  std::string bytes = frame(true, WebSocketOpcode::kPong, "");
  WebSocketFrameDecoder decoder;
  size_t consumed = 0;
  std::string_view payload;
  ASSERT_EQ(decoder.next(bytes.data(), bytes.size(), consumed, payload), Event::kHeader);
  EXPECT_EQ(decoder.header().payload_length, 0u);
  EXPECT_EQ(decoder.next(nullptr, 0, consumed, payload), Event::kFrameEnd);
  EXPECT_EQ(decoder.next(nullptr, 0, consumed, payload), Event::kNeedMore);
}

TEST(WebSocketFrameDecoderTest, ClientSideReadsUnmaskedServerFrames) {
  std::string bytes = frame(true, WebSocketOpcode::kBinary, "from server", nullptr);
  Decoded decoded = decodeOneRead(bytes, clientLimits());
  ASSERT_FALSE(decoded.failed) << decoded.error_reason;
  EXPECT_EQ(decoded.frames[0].payload, "from server");
  EXPECT_FALSE(decoded.frames[0].header.masked);
}

TEST(WebSocketFrameDecoderTest, NonMinimalLengthEncodingsAreAccepted) {
  // 5 bytes announced with a 16-bit and with a 64-bit length.
  std::string sixteen = bytesOf({0x82, 0xfe, 0x00, 0x05}) + std::string(kMask, kMask + 4);
  std::string sixty_four =
      bytesOf({0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 5}) + std::string(kMask, kMask + 4);
  std::string body = "abcde";
  maskPayload(body.data(), body.size(), kMask, 0);
  for (const std::string& head : {sixteen, sixty_four}) {
    Decoded decoded = decodeOneRead(head + body);
    ASSERT_FALSE(decoded.failed) << decoded.error_reason;
    EXPECT_EQ(decoded.frames[0].payload, "abcde");
  }
}

// Each protocol error: the close code and the reason, in one read and byte
// by byte (the error comes at the first bad byte).
struct ErrorCase {
  const char* name;
  std::string bytes;
  uint16_t code;
  const char* reason;
  WebSocketFrameDecoder::Limits limits = serverLimits();
};

std::vector<ErrorCase> errorCases() {
  std::string mask(kMask, kMask + 4);
  WebSocketFrameDecoder::Limits small;
  small.max_payload = 10;
  return {
      {"rsv1", bytesOf({0xc2, 0x80}) + mask, 1002, "reserved bits set"},
      {"rsv2", bytesOf({0xa2, 0x80}) + mask, 1002, "reserved bits set"},
      {"rsv3", bytesOf({0x92, 0x80}) + mask, 1002, "reserved bits set"},
      {"opcode 3", bytesOf({0x83, 0x80}) + mask, 1002, "unknown opcode"},
      {"opcode 7", bytesOf({0x87, 0x80}) + mask, 1002, "unknown opcode"},
      {"opcode 11", bytesOf({0x8b, 0x80}) + mask, 1002, "unknown opcode"},
      {"opcode 15", bytesOf({0x8f, 0x80}) + mask, 1002, "unknown opcode"},
      {"fragmented ping", bytesOf({0x09, 0x80}) + mask, 1002, "fragmented control frame"},
      {"fragmented close", bytesOf({0x08, 0x80}) + mask, 1002, "fragmented control frame"},
      {"ping over 125", bytesOf({0x89, 0xfe, 0x00, 0x7e}) + mask, 1002,
       "control frame payload over 125 bytes"},
      {"close with 64-bit length", bytesOf({0x88, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}) + mask, 1002,
       "control frame payload over 125 bytes"},
      {"pong of 126 bytes", bytesOf({0x8a, 0xfe}), 1002, "control frame payload over 125 bytes"},
      {"top bit of 64-bit length", bytesOf({0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}) + mask, 1002,
       "64-bit length with the top bit set"},
      {"unmasked client frame", bytesOf({0x82, 0x01, 'x'}), 1002, "unmasked client frame"},
      {"masked server frame", bytesOf({0x82, 0x81}) + mask + "x", 1002, "masked server frame",
       clientLimits()},
      {"continuation first", bytesOf({0x80, 0x80}) + mask, 1002,
       "continuation frame without a started message"},
      {"continuation after a finished message",
       frame(true, WebSocketOpcode::kBinary, "done") + bytesOf({0x80, 0x80}) + mask, 1002,
       "continuation frame without a started message"},
      {"binary inside a fragmented message",
       frame(false, WebSocketOpcode::kBinary, "part") + bytesOf({0x82, 0x80}) + mask, 1002,
       "new data frame inside a fragmented message"},
      {"text inside a fragmented message",
       frame(false, WebSocketOpcode::kText, "part") + frame(true, WebSocketOpcode::kPing, "") +
           bytesOf({0x01, 0x80}) + mask,
       1002, "new data frame inside a fragmented message"},
      {"over max_payload", bytesOf({0x82, 0x8b}) + mask + "01234567890", 1009, "frame too big",
       small},
      {"over the default 1 MiB", bytesOf({0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 1}) + mask, 1009,
       "frame too big"},
  };
}

TEST(WebSocketFrameDecoderTest, EveryProtocolError) {
  for (const ErrorCase& c : errorCases()) {
    for (size_t read_size : {c.bytes.size(), size_t{1}}) {
      Decoded decoded = decode(c.bytes, read_size, c.limits);
      EXPECT_TRUE(decoded.failed) << c.name;
      EXPECT_EQ(decoded.error_code, c.code) << c.name;
      EXPECT_EQ(decoded.error_reason, c.reason) << c.name;
    }
  }
}

TEST(WebSocketFrameDecoderTest, ErrorIsFinal) {
  std::string bytes = bytesOf({0xc2, 0x80});
  WebSocketFrameDecoder decoder;
  size_t consumed = 0;
  std::string_view payload;
  ASSERT_EQ(decoder.next(bytes.data(), bytes.size(), consumed, payload), Event::kError);
  std::string good = frame(true, WebSocketOpcode::kBinary, "ok");
  EXPECT_EQ(decoder.next(good.data(), good.size(), consumed, payload), Event::kError);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(decoder.errorCode(), 1002);
}

TEST(WebSocketFrameDecoderTest, MaxPayloadIsInclusive) {
  WebSocketFrameDecoder::Limits limits;
  limits.max_payload = 10;
  Decoded decoded = decodeOneRead(frame(true, WebSocketOpcode::kBinary, "0123456789"), limits);
  EXPECT_FALSE(decoded.failed);
  EXPECT_EQ(decoded.frames[0].payload, "0123456789");
}

TEST(WebSocketClosePayloadTest, RoundTripAndBadCodes) {
  uint16_t code = 0;
  std::string_view reason;
  std::string payload = webSocketClosePayload(1009, "frame too big");
  EXPECT_EQ(payload.substr(0, 2), bytesOf({0x03, 0xf1}));
  ASSERT_TRUE(parseWebSocketClosePayload(payload, code, reason));
  EXPECT_EQ(code, 1009);
  EXPECT_EQ(reason, "frame too big");

  EXPECT_EQ(webSocketClosePayload(0, "ignored"), "");
  ASSERT_TRUE(parseWebSocketClosePayload("", code, reason));
  EXPECT_EQ(code, 1005);
  // The reason is cut to fit a control frame.
  EXPECT_EQ(webSocketClosePayload(1000, std::string(200, 'r')).size(), 125u);

  EXPECT_FALSE(parseWebSocketClosePayload(bytesOf({0x03}), code, reason));
  for (int bad : {1, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000}) {
    EXPECT_FALSE(parseWebSocketClosePayload(webSocketClosePayload(bad, ""), code, reason)) << bad;
  }
  for (int good : {1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999}) {
    EXPECT_TRUE(parseWebSocketClosePayload(webSocketClosePayload(good, ""), code, reason)) << good;
  }
}

}  // namespace
}  // namespace spacegate
