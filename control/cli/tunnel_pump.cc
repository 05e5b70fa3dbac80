#include "tunnel_pump.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace spacegate {

namespace {

// One read from either side; also the largest frame the pump sends.
constexpr size_t kReadSize = 64 * 1024;
// A direction stops reading while this much waits for the other side.
constexpr size_t kHighWater = 256 * 1024;
// Server frames are not buffered whole (payload goes to stdout piece by
// piece), so the limit only guards against nonsense lengths.
constexpr uint64_t kMaxGatewayFramePayload = uint64_t{1} << 32;

WebSocketFrameDecoder::Limits gatewayFrameLimits() {
  WebSocketFrameDecoder::Limits limits;
  limits.max_payload = kMaxGatewayFramePayload;
  limits.require_mask = false;
  limits.forbid_mask = true;  // RFC 6455 5.1: a server never masks
  return limits;
}

// Sets O_NONBLOCK and gives back the flags to restore.
int makeNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return flags;
}

void restoreFlags(int fd, int flags) {
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags);
}

bool wouldBlock(int error) {
  return error == EAGAIN || error == EWOULDBLOCK || error == EINTR;
}

}  // namespace

void PendingBytes::consume(size_t count) {
  head_ += count;
  if (head_ == bytes_.size()) {
    clear();
  } else if (head_ > kReadSize && head_ * 2 > bytes_.size()) {
    // Keep the copy rare: only once the consumed part is most of the buffer.
    bytes_.erase(0, head_);
    head_ = 0;
  }
}

TunnelPump::TunnelPump(int socket, Framing framing, int input, int output)
    : socket_(socket),
      framing_(framing),
      input_(input),
      output_(output),
      decoder_(gatewayFrameLimits()) {}

int TunnelPump::run(std::string_view early) {
  int socket_flags = makeNonBlocking(socket_);
  int input_flags = makeNonBlocking(input_);
  int output_flags = makeNonBlocking(output_);
  if (!early.empty()) {
    std::string copy(early);
    fromSocket(copy.data(), copy.size());
  }
  while (state_ == State::kOpen || (state_ == State::kFinished && !to_output_.empty())) {
    pollfd fds[3];
    nfds_t count = 0;
    int input_slot = -1;
    int socket_slot = -1;
    int output_slot = -1;
    bool socket_side_open = state_ == State::kOpen;
    if (socket_side_open && input_open_ && !close_sent_ && to_socket_.size() < kHighWater) {
      input_slot = static_cast<int>(count);
      fds[count++] = {input_, POLLIN, 0};
    }
    short socket_events = 0;
    if (socket_side_open && !socket_eof_ && to_output_.size() < kHighWater) socket_events |= POLLIN;
    if (socket_side_open && !to_socket_.empty()) socket_events |= POLLOUT;
    if (socket_events) {
      socket_slot = static_cast<int>(count);
      fds[count++] = {socket_, socket_events, 0};
    }
    if (!to_output_.empty()) {
      output_slot = static_cast<int>(count);
      fds[count++] = {output_, POLLOUT, 0};
    }
    if (count == 0) {
      // Nothing can move: only possible if both sides stopped without the
      // tunnel ending, which checkFinished() rules out; do not spin.
      fail("the tunnel stalled");
      break;
    }
    if (::poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      fail(std::string("poll: ") + std::strerror(errno));
      break;
    }
    if (output_slot >= 0 && fds[output_slot].revents) writeOutput();
    if (state_ == State::kFailed) break;
    if (socket_slot >= 0 && (fds[socket_slot].revents & (POLLOUT | POLLERR)) &&
        state_ == State::kOpen) {
      writeSocket();
    }
    if (socket_slot >= 0 && (fds[socket_slot].revents & (POLLIN | POLLHUP | POLLERR)) &&
        state_ == State::kOpen && !socket_eof_) {
      readSocket();
    }
    if (input_slot >= 0 && fds[input_slot].revents && state_ == State::kOpen) readInput();
  }
  restoreFlags(socket_, socket_flags);
  restoreFlags(input_, input_flags);
  restoreFlags(output_, output_flags);
  return state_ == State::kFailed ? 1 : 0;
}

void TunnelPump::readInput() {
  char buffer[kReadSize];
  ssize_t got = ::read(input_, buffer, sizeof buffer);
  if (got < 0 && wouldBlock(errno)) return;
  if (got <= 0) {
    // An error on stdin ends our sending as an EOF would: the gateway's
    // direction may still have bytes for ssh.
    inputEnded();
    return;
  }
  if (framing_ == Framing::kRaw) {
    to_socket_.append(std::string_view(buffer, static_cast<size_t>(got)));
  } else {
    sendFrame(WebSocketOpcode::kBinary, std::string_view(buffer, static_cast<size_t>(got)));
  }
  writeSocket();
}

void TunnelPump::inputEnded() {
  input_open_ = false;
  if (framing_ == Framing::kWebSocket) {
    // The close frame half-closes the Gitspace port; its bytes keep coming
    // until the gateway's own close frame.
    if (!close_sent_) sendClose(kWebSocketCloseNormal, "");
    writeSocket();
    return;
  }
  writeSocket();  // shuts the write side down once the queue is empty
}

void TunnelPump::writeSocket() {
  while (!to_socket_.empty()) {
    std::string_view pending = to_socket_.front();
    ssize_t sent = ::send(socket_, pending.data(), pending.size(), MSG_NOSIGNAL);
    if (sent < 0) {
      if (wouldBlock(errno)) return;
      if (framing_ == Framing::kWebSocket && close_received_) {
        // The gateway closed after its close frame: our close had nowhere to go.
        to_socket_.clear();
        checkFinished();
        return;
      }
      fail(std::string("the tunnel broke: ") + std::strerror(errno));
      return;
    }
    to_socket_.consume(static_cast<size_t>(sent));
  }
  if (framing_ == Framing::kRaw && !input_open_ && !socket_write_shut_) {
    ::shutdown(socket_, SHUT_WR);
    socket_write_shut_ = true;
  }
  checkFinished();
}

void TunnelPump::readSocket() {
  char buffer[kReadSize];
  ssize_t got = ::recv(socket_, buffer, sizeof buffer, 0);
  if (got < 0 && wouldBlock(errno)) return;
  if (got < 0) {
    fail(std::string("the tunnel broke: ") + std::strerror(errno));
    return;
  }
  if (got == 0) {
    socketEnded();
    return;
  }
  fromSocket(buffer, static_cast<size_t>(got));
}

void TunnelPump::socketEnded() {
  socket_eof_ = true;
  if (framing_ == Framing::kRaw) {
    // The Gitspace port is done sending: the tunnel is over once ssh has
    // what came before (ssh ends its session on this EOF).
    state_ = State::kFinished;
    return;
  }
  if (!close_received_) {
    fail("the gateway closed the tunnel without a close frame");
    return;
  }
  checkFinished();
}

void TunnelPump::fromSocket(char* data, size_t size) {
  if (framing_ == Framing::kRaw) {
    to_output_.append(std::string_view(data, size));
  } else {
    fromGatewayFrame(data, size);
  }
  if (state_ != State::kFailed) writeOutput();
}

void TunnelPump::fromGatewayFrame(char* data, size_t size) {
  size_t offset = 0;
  while (state_ == State::kOpen) {
    size_t consumed = 0;
    std::string_view payload;
    WebSocketFrameDecoder::Event event =
        decoder_.next(data + offset, size - offset, consumed, payload);
    offset += consumed;
    switch (event) {
      case WebSocketFrameDecoder::Event::kNeedMore: return;
      case WebSocketFrameDecoder::Event::kError:
        sendClose(decoder_.errorCode(), decoder_.errorReason());
        writeSocket();
        fail(std::string("the gateway sent a bad WebSocket frame: ") + decoder_.errorReason());
        return;
      case WebSocketFrameDecoder::Event::kHeader:
        frame_opcode_ = decoder_.header().opcode;
        control_payload_.clear();
        if (frame_opcode_ == WebSocketOpcode::kText) {
          sendClose(kWebSocketCloseUnsupportedData, "text frame in a byte tunnel");
          writeSocket();
          fail("the gateway sent a text frame (a tunnel carries binary frames)");
          return;
        }
        break;
      case WebSocketFrameDecoder::Event::kPayload:
        if (isWebSocketControlOpcode(frame_opcode_)) {
          control_payload_.append(payload);
        } else if (!close_received_) {
          to_output_.append(payload);
        }
        break;
      case WebSocketFrameDecoder::Event::kFrameEnd:
        if (isWebSocketControlOpcode(frame_opcode_)) finishControlFrame();
        break;
    }
  }
}

void TunnelPump::finishControlFrame() {
  if (frame_opcode_ == WebSocketOpcode::kPing) {
    if (!close_sent_) sendFrame(WebSocketOpcode::kPong, control_payload_);
    writeSocket();
    return;
  }
  if (frame_opcode_ != WebSocketOpcode::kClose) return;  // pong: nothing to do
  close_received_ = true;
  uint16_t code = 0;
  std::string_view reason;
  bool valid = parseWebSocketClosePayload(control_payload_, code, reason);
  if (!close_sent_) sendClose(valid ? code : kWebSocketCloseProtocolError, "");
  writeSocket();
  if (state_ != State::kOpen) return;
  // 1000: the Gitspace port finished sending; 1005: a close without a code.
  if (!valid || (code != kWebSocketCloseNormal && code != 1005)) {
    std::string text = "the gateway closed the tunnel: " + std::to_string(code);
    if (!reason.empty()) text += " " + std::string(reason);
    fail(text);
    return;
  }
  checkFinished();
}

void TunnelPump::sendFrame(WebSocketOpcode opcode, std::string_view payload) {
  // A fresh key per frame (RFC 6455 5.3): from BoringSSL's CSPRNG, so a
  // frame's bytes on the wire cannot be chosen by whoever chose its payload.
  uint8_t mask[4];
  RAND_bytes(mask, sizeof mask);
  char header[kMaxWebSocketFrameHeader];
  size_t header_size = encodeWebSocketFrameHeader(header, true, opcode, payload.size(), mask);
  to_socket_.append(std::string_view(header, header_size));
  std::string masked(payload);
  maskPayload(masked.data(), masked.size(), mask, 0);
  to_socket_.append(masked);
}

void TunnelPump::sendClose(uint16_t code, std::string_view reason) {
  if (close_sent_) return;
  sendFrame(WebSocketOpcode::kClose, webSocketClosePayload(code, reason));
  close_sent_ = true;
}

void TunnelPump::writeOutput() {
  while (!to_output_.empty()) {
    std::string_view pending = to_output_.front();
    ssize_t written = ::write(output_, pending.data(), pending.size());
    if (written < 0) {
      if (wouldBlock(errno)) return;
      // ssh closed our stdout: it is done with the session, and so are we.
      to_output_.clear();
      if (state_ == State::kOpen) state_ = State::kFinished;
      return;
    }
    to_output_.consume(static_cast<size_t>(written));
  }
}

void TunnelPump::checkFinished() {
  if (state_ != State::kOpen) return;
  if (framing_ == Framing::kRaw) {
    if (socket_eof_) state_ = State::kFinished;
    return;
  }
  // Both close frames exchanged and ours on the wire.
  if (close_received_ && close_sent_ && to_socket_.empty()) state_ = State::kFinished;
}

void TunnelPump::fail(std::string reason) {
  if (state_ == State::kFailed) return;
  state_ = State::kFailed;
  std::fprintf(stderr, "spacegatectl: %s\n", reason.c_str());
}

}  // namespace spacegate
