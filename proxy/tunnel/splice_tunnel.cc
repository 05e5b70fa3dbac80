#include "tunnel/splice_tunnel.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace spacegate {

namespace {

constexpr size_t kSpliceChunk = 256 * 1024;

void setResetOnClose(int fd) {
  linger option{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof option);
}

}  // namespace

SpliceTunnel::SpliceTunnel(uv_loop_t* loop, PipePool& pipes, int client_fd, int upstream_fd,
                           Owner& owner)
    : loop_(loop), pipes_(pipes), owner_(&owner) {
  to_upstream_.from = client_fd;
  to_upstream_.to = upstream_fd;
  to_client_.from = upstream_fd;
  to_client_.to = client_fd;
}

bool SpliceTunnel::start(int& error) {
  error = uv_poll_init(loop_, &client_poll_, to_upstream_.from);
  if (error != 0) {
    close();  // nothing open yet: frees this object now
    return false;
  }
  client_poll_.data = this;
  ++open_handles_;
  error = uv_poll_init(loop_, &upstream_poll_, to_client_.from);
  if (error != 0) {
    // Not started, so nothing watches: closing frees this object later.
    close();
    return false;
  }
  upstream_poll_.data = this;
  ++open_handles_;
  updateWatches();
  return true;
}

void SpliceTunnel::close() {
  owner_ = nullptr;
  pipes_.release(to_upstream_.pipe, to_upstream_.in_pipe == 0);
  pipes_.release(to_client_.pipe, to_client_.in_pipe == 0);
  if (open_handles_ == 0) {
    delete this;
    return;
  }
  int handles = open_handles_;
  // uv_close stops the watchers now; the memory goes in onClosed.
  uv_close(reinterpret_cast<uv_handle_t*>(&client_poll_), &SpliceTunnel::onClosed);
  if (handles == 2) {
    uv_close(reinterpret_cast<uv_handle_t*>(&upstream_poll_), &SpliceTunnel::onClosed);
  }
}

void SpliceTunnel::onClosed(uv_handle_t* handle) {
  auto* self = static_cast<SpliceTunnel*>(handle->data);
  if (--self->open_handles_ == 0) delete self;
}

void SpliceTunnel::onPoll(uv_poll_t* handle, int status, int) {
  auto* self = static_cast<SpliceTunnel*>(handle->data);
  if (!self->owner_ || self->ended_) return;
  if (status < 0) {
    self->finish(End::kReset, "socket error in tunnel");
    return;
  }
  // Both directions get a turn whatever the event: a writable destination
  // unblocks one, a readable source feeds the other, and the calls are
  // cheap when there is nothing to do.
  uint64_t to_upstream = 0;
  uint64_t to_client = 0;
  if (!self->pump(self->to_upstream_, to_upstream)) return;
  if (!self->pump(self->to_client_, to_client)) return;
  if (to_upstream || to_client) {
    self->owner_->onSpliceProgress(to_upstream, to_client);
    if (!self->owner_ || self->ended_) return;
  }
  if (self->to_upstream_.done && self->to_client_.done) {
    self->finish(End::kFinished, "");
    return;
  }
  self->updateWatches();
}

bool SpliceTunnel::pump(Direction& direction, uint64_t& moved) {
  if (direction.done) return true;
  while (moved < kMovePerEvent) {
    if (direction.in_pipe > 0) {
      ssize_t written = ::splice(direction.pipe.read_end, nullptr, direction.to, nullptr,
                                 direction.in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (written > 0) {
        direction.in_pipe -= static_cast<size_t>(written);
        moved += static_cast<uint64_t>(written);
        direction.blocked = false;
        continue;
      }
      if (written < 0 && errno == EINTR) continue;
      if (written < 0 && errno == EAGAIN) {
        direction.blocked = true;
        return true;
      }
      finish(End::kReset, "write failed in tunnel");
      return false;
    }
    direction.blocked = false;
    if (direction.source_eof) {
      // Everything delivered: pass the half-close on.
      pipes_.release(direction.pipe, true);
      ::shutdown(direction.to, SHUT_WR);
      direction.done = true;
      return true;
    }
    if (!direction.pipe.valid()) {
      direction.pipe = pipes_.acquire();
      if (!direction.pipe.valid()) {
        finish(End::kReset, "no pipe for the tunnel (out of descriptors)");
        return false;
      }
    }
    ssize_t read = ::splice(direction.from, nullptr, direction.pipe.write_end, nullptr,
                            kSpliceChunk, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (read > 0) {
      direction.in_pipe += static_cast<size_t>(read);
      continue;
    }
    if (read == 0) {
      direction.source_eof = true;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // Nothing to read: an idle direction holds no pipe.
      pipes_.release(direction.pipe, true);
      return true;
    }
    finish(End::kReset, errno == ECONNRESET ? "peer reset the tunnel" : "read failed in tunnel");
    return false;
  }
  // Out of this event's share. Bytes left in the pipe must not wait for the
  // source to become readable again (it may have nothing more to say):
  // watching the destination for writability brings this direction back at
  // once.
  if (direction.in_pipe > 0) direction.blocked = true;
  return true;
}

void SpliceTunnel::updateWatches() {
  auto wants = [](const Direction& reading_side, const Direction& writing_side) {
    int events = 0;
    if (!reading_side.done && !reading_side.source_eof && !reading_side.blocked) {
      events |= UV_READABLE;
    }
    if (writing_side.blocked) events |= UV_WRITABLE;
    return events;
  };
  int client_events = wants(to_upstream_, to_client_);
  int upstream_events = wants(to_client_, to_upstream_);
  if (client_events != client_events_) {
    client_events_ = client_events;
    if (client_events) {
      uv_poll_start(&client_poll_, client_events, &SpliceTunnel::onPoll);
    } else {
      uv_poll_stop(&client_poll_);
    }
  }
  if (upstream_events != upstream_events_) {
    upstream_events_ = upstream_events;
    if (upstream_events) {
      uv_poll_start(&upstream_poll_, upstream_events, &SpliceTunnel::onPoll);
    } else {
      uv_poll_stop(&upstream_poll_);
    }
  }
}

void SpliceTunnel::finish(End end, const char* reason) {
  if (ended_) return;
  ended_ = true;
  uv_poll_stop(&client_poll_);
  uv_poll_stop(&upstream_poll_);
  if (end == End::kReset) {
    setResetOnClose(to_upstream_.from);
    setResetOnClose(to_client_.from);
  }
  Owner* owner = owner_;
  if (owner) owner->onSpliceEnd(end, reason);
}

}  // namespace spacegate
