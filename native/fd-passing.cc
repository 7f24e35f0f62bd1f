// File-descriptor passing over UNIX sockets (SCM_RIGHTS).
//
// The receiving side never shares a socket with libuv: if libuv reads the
// bytes that carry an SCM_RIGHTS message, the kernel discards the fds
// silently. So a client asks for fds on a short-lived socket that this file
// owns end to end (connect, send the request, recvmsg the answer, close), and
// it does so on a worker thread so a store running in the same process keeps
// serving. The store answers with sendFds on the fd of an accepted net.Socket
// that it has paused and only ever writes to through this call.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "errno-error.h"
#include "segment.h"

namespace trellis {
namespace {

constexpr size_t kMaxFds = 64;
constexpr uint32_t kMaxAnswer = 1u << 20;

// sendFds(socketFd, payload, fds): one sendmsg carrying payload and fds.
// The socket is non-blocking (libuv's); the answer is small, so a short poll
// on EAGAIN is enough.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> payload = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Array arr = info[2].As<Napi::Array>();
  size_t nfds = arr.Length();
  if (nfds > kMaxFds) throw Napi::RangeError::New(env, "too many fds");
  if (payload.Length() == 0) throw Napi::RangeError::New(env, "empty payload");
  std::vector<int> fds(nfds);
  for (size_t i = 0; i < nfds; i++) fds[i] = arr.Get(i).As<Napi::Number>().Int32Value();

  size_t sent = 0;
  bool fdsSent = false;
  while (sent < payload.Length()) {
    struct iovec iov;
    iov.iov_base = payload.Data() + sent;
    iov.iov_len = payload.Length() - sent;
    struct msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (!fdsSent && nfds > 0) {
      control.assign(CMSG_SPACE(sizeof(int) * nfds), 0);
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {sock, POLLOUT, 0};
        if (poll(&p, 1, 1000) <= 0) throw ErrnoError(env, "sendmsg(poll)", ETIMEDOUT);
        continue;
      }
      throw ErrnoError(env, "sendmsg", errno);
    }
    fdsSent = true;
    sent += static_cast<size_t>(n);
  }
  return env.Undefined();
}

class RequestFdsWorker : public Napi::AsyncWorker {
 public:
  RequestFdsWorker(Napi::Env env, std::string path, std::vector<uint8_t> request, int timeoutMs)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        request_(std::move(request)),
        timeoutMs_(timeoutMs) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return Fail("socket", errno);
    struct timeval tv;
    tv.tv_sec = timeoutMs_ / 1000;
    tv.tv_usec = (timeoutMs_ % 1000) * 1000;
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) {
      close(sock);
      return Fail("connect", ENAMETOOLONG);
    }
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    if (connect(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
      int err = errno;
      close(sock);
      return Fail("connect", err);
    }
    size_t off = 0;
    while (off < request_.size()) {
      ssize_t n = send(sock, request_.data() + off, request_.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        close(sock);
        return Fail("send", err);
      }
      off += static_cast<size_t>(n);
    }
    // Answer: u32 little-endian length, then that many bytes; fds ride on
    // whichever recvmsg sees them.
    std::vector<uint8_t> buf;
    uint32_t want = 0;
    bool haveLen = false;
    uint8_t chunk[65536];
    for (;;) {
      struct iovec iov = {chunk, sizeof chunk};
      char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
      struct msghdr msg;
      std::memset(&msg, 0, sizeof msg);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno;
        close(sock);
        return Fail("recvmsg", err);
      }
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
          for (size_t i = 0; i < count; i++) fds_.push_back(p[i]);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) {
        close(sock);
        return Fail("recvmsg(MSG_CTRUNC)", EMSGSIZE);
      }
      if (n == 0) {
        close(sock);
        return Fail("recvmsg(closed early)", ECONNRESET);
      }
      buf.insert(buf.end(), chunk, chunk + n);
      if (!haveLen && buf.size() >= 4) {
        want = static_cast<uint32_t>(buf[0]) | (static_cast<uint32_t>(buf[1]) << 8) |
               (static_cast<uint32_t>(buf[2]) << 16) | (static_cast<uint32_t>(buf[3]) << 24);
        haveLen = true;
        if (want > kMaxAnswer) {
          close(sock);
          return Fail("recvmsg(answer too large)", EMSGSIZE);
        }
      }
      if (haveLen && buf.size() >= 4 + static_cast<size_t>(want)) break;
    }
    close(sock);
    answer_.assign(buf.begin() + 4, buf.begin() + 4 + want);
  }

  // Completion runs on the JS thread. If that thread is a worker being
  // terminated, every N-API call fails; a C++ exception escaping here would
  // abort the whole process, so failures only close the fds we hold.
  void OnOK() override {
    try {
      Napi::Env env = Env();
      Napi::Object out = Napi::Object::New(env);
      out.Set("data", Napi::Buffer<uint8_t>::Copy(env, answer_.data(), answer_.size()));
      Napi::Array fds = Napi::Array::New(env, fds_.size());
      for (size_t i = 0; i < fds_.size(); i++) fds.Set(i, Napi::Number::New(env, fds_[i]));
      out.Set("fds", fds);
      deferred_.Resolve(out);
    } catch (const Napi::Error&) {
      for (int fd : fds_) close(fd);
    }
  }

  void OnError(const Napi::Error& /*e*/) override {
    for (int fd : fds_) close(fd);
    try {
      deferred_.Reject(ErrnoError(Env(), failedCall_.c_str(), failedErrno_).Value());
    } catch (const Napi::Error&) {
      // the JS side is going away; nothing to tell it
    }
  }

 private:
  void Fail(const char* call, int err) {
    failedCall_ = call;
    failedErrno_ = err;
    SetError(call);
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  std::vector<uint8_t> request_;
  int timeoutMs_;
  std::vector<int> fds_;
  std::vector<uint8_t> answer_;
  std::string failedCall_;
  int failedErrno_ = 0;
};

// requestFds(socketPath, request, timeoutMs) -> Promise<{ data: Buffer, fds: number[] }>
Napi::Value RequestFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Buffer<uint8_t> req = info[1].As<Napi::Buffer<uint8_t>>();
  int timeoutMs = info[2].As<Napi::Number>().Int32Value();
  std::vector<uint8_t> request(req.Data(), req.Data() + req.Length());
  auto* w = new RequestFdsWorker(env, std::move(path), std::move(request), timeoutMs);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("sendFds", Napi::Function::New(env, SendFds));
  exports.Set("requestFds", Napi::Function::New(env, RequestFds));
}

}  // namespace trellis
