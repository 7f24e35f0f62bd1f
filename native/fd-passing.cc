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

// One request and its answer on a UNIX socket this file owns end to end:
// connect, send `request`, receive one frame (u32 little-endian length, then
// that many bytes) with any fds riding on it. It reads exactly the frame and
// nothing after it, so the socket can go on to someone else (a handshake
// hands it to libuv) with no byte of the next message swallowed here.
// Failures leave the call and errno in the result, for the JS side to type.
struct Exchange {
  std::string path;
  std::vector<uint8_t> request;
  int timeoutMs = 0;
  bool keepOpen = false;

  int sock = -1;
  std::vector<int> fds;
  std::vector<uint8_t> answer;
  const char* failedCall = nullptr;
  int failedErrno = 0;

  bool Fail(const char* call, int err) {
    failedCall = call;
    failedErrno = err;
    if (sock >= 0) close(sock);
    sock = -1;
    for (int fd : fds) close(fd);
    fds.clear();
    return false;
  }

  // Reads exactly `len` bytes into `out`, collecting fds.
  bool ReadExactly(uint8_t* out, size_t len) {
    size_t got = 0;
    while (got < len) {
      struct iovec iov = {out + got, len - got};
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
        return Fail("recvmsg", (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno);
      }
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
          for (size_t i = 0; i < count; i++) fds.push_back(p[i]);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) return Fail("recvmsg(MSG_CTRUNC)", EMSGSIZE);
      if (n == 0) return Fail("recvmsg(closed early)", ECONNRESET);
      got += static_cast<size_t>(n);
    }
    return true;
  }

  // Connects and sends the request.
  bool Start() {
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return Fail("socket", errno);
    struct timeval tv;
    tv.tv_sec = timeoutMs / 1000;
    tv.tv_usec = (timeoutMs % 1000) * 1000;
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return Fail("connect", ENAMETOOLONG);
    std::memcpy(addr.sun_path, path.data(), path.size());
    if (connect(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) return Fail("connect", errno);
    size_t off = 0;
    while (off < request.size()) {
      ssize_t n = send(sock, request.data() + off, request.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Fail("send", (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno);
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Whether the answer's first bytes are there within `ms` (0: now).
  bool AnswerWithin(int ms) const {
    struct pollfd p = {sock, POLLIN, 0};
    for (;;) {
      int n = poll(&p, 1, ms);
      if (n < 0 && errno == EINTR) continue;
      return n != 0;  // an error shows up again in Receive
    }
  }

  // Receives the answer frame.
  bool Receive() {
    uint8_t prefix[4];
    if (!ReadExactly(prefix, sizeof prefix)) return false;
    uint32_t want = static_cast<uint32_t>(prefix[0]) | (static_cast<uint32_t>(prefix[1]) << 8) |
                    (static_cast<uint32_t>(prefix[2]) << 16) | (static_cast<uint32_t>(prefix[3]) << 24);
    if (want > kMaxAnswer) return Fail("recvmsg(answer too large)", EMSGSIZE);
    answer.resize(want);
    if (want > 0 && !ReadExactly(answer.data(), want)) return false;
    if (!keepOpen) {
      close(sock);
      sock = -1;
      return true;
    }
    // The socket goes on to libuv, which makes it non-blocking; no timeouts stay on it.
    struct timeval none = {0, 0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return true;
  }

  // { data, fds, socket? }; on failure the thrown error.
  // A handshake's answer must be one frame with a JSON header and no payload;
  // its header goes back as text (one JSON.parse on the JS side, no Buffer).
  bool CheckHeaderOnly() {
    if (answer.size() < 4) return Fail("recvmsg(not a frame)", EBADMSG);
    uint32_t hlen = static_cast<uint32_t>(answer[0]) | (static_cast<uint32_t>(answer[1]) << 8) |
                    (static_cast<uint32_t>(answer[2]) << 16) | (static_cast<uint32_t>(answer[3]) << 24);
    if (hlen != answer.size() - 4) return Fail("recvmsg(not a frame)", EBADMSG);
    return true;
  }

  Napi::Object Result(Napi::Env env) const {
    Napi::Object out = Napi::Object::New(env);
    if (keepOpen) {
      out.Set("header", Napi::String::New(env, reinterpret_cast<const char*>(answer.data()) + 4, answer.size() - 4));
    } else {
      out.Set("data", Napi::Buffer<uint8_t>::Copy(env, answer.data(), answer.size()));
    }
    Napi::Array list = Napi::Array::New(env, fds.size());
    for (size_t i = 0; i < fds.size(); i++) list.Set(i, Napi::Number::New(env, fds[i]));
    out.Set("fds", list);
    if (keepOpen) out.Set("socket", Napi::Number::New(env, sock));
    return out;
  }

  // Everything this exchange received goes back to the OS.
  void Discard() {
    if (sock >= 0) close(sock);
    sock = -1;
    for (int fd : fds) close(fd);
    fds.clear();
  }
};

Exchange ExchangeFrom(const Napi::CallbackInfo& info, bool keepOpen) {
  Exchange x;
  x.path = info[0].As<Napi::String>().Utf8Value();
  if (keepOpen) {
    // A handshake's request comes as its JSON header; the frame is made here.
    std::string header = info[1].As<Napi::String>().Utf8Value();
    uint32_t hlen = static_cast<uint32_t>(header.size());
    uint32_t flen = hlen + 4;
    x.request.resize(8 + header.size());
    for (int i = 0; i < 4; i++) {
      x.request[i] = static_cast<uint8_t>(flen >> (8 * i));
      x.request[4 + i] = static_cast<uint8_t>(hlen >> (8 * i));
    }
    std::memcpy(x.request.data() + 8, header.data(), header.size());
  } else {
    Napi::Buffer<uint8_t> req = info[1].As<Napi::Buffer<uint8_t>>();
    x.request.assign(req.Data(), req.Data() + req.Length());
  }
  x.timeoutMs = info[2].As<Napi::Number>().Int32Value();
  x.keepOpen = keepOpen;
  return x;
}

class ExchangeWorker : public Napi::AsyncWorker {
 public:
  // `started`: connected and sent already; the worker only receives.
  ExchangeWorker(Napi::Env env, Exchange x, bool started)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), x_(std::move(x)), started_(started) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    if ((!started_ && !x_.Start()) || !x_.Receive() || (x_.keepOpen && !x_.CheckHeaderOnly())) SetError(x_.failedCall);
  }

  // Completion runs on the JS thread. If that thread is a worker being
  // terminated, every N-API call fails; a C++ exception escaping here would
  // abort the whole process, so failures only close the fds we hold.
  void OnOK() override {
    try {
      deferred_.Resolve(x_.Result(Env()));
    } catch (const Napi::Error&) {
      x_.Discard();
    }
  }

  void OnError(const Napi::Error& /*e*/) override {
    try {
      deferred_.Reject(ErrnoError(Env(), x_.failedCall, x_.failedErrno).Value());
    } catch (const Napi::Error&) {
      // the JS side is going away; nothing to tell it
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Exchange x_;
  bool started_;
};

Napi::Value Queue(Napi::Env env, Exchange x, bool started) {
  auto* w = new ExchangeWorker(env, std::move(x), started);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// requestFds(socketPath, request, timeoutMs) -> Promise<{ data: Buffer, fds: number[] }>
// The fd channel: on a worker thread, so a store in this thread keeps serving.
Napi::Value RequestFds(const Napi::CallbackInfo& info) { return Queue(info.Env(), ExchangeFrom(info, false), false); }

// handshake(socketPath, headerJson, timeoutMs, waitMs) -> { header, fds, socket }
// or a Promise of it: the hello of a request connection. It connects and
// sends on this thread, then waits up to waitMs, blocking the thread, for the
// answer: a fresh process attaches in a few hundred microseconds this way,
// where net's connect and first read cost milliseconds of cold code. An
// answer not there by then is received on a worker thread (the promise): the
// store may be one this thread serves, which cannot answer while it waits.
Napi::Value Handshake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Exchange x = ExchangeFrom(info, true);
  int waitMs = info[3].As<Napi::Number>().Int32Value();
  if (!x.Start()) throw ErrnoError(env, x.failedCall, x.failedErrno);
  if (!x.AnswerWithin(waitMs)) return Queue(env, std::move(x), true);
  if (!x.Receive() || !x.CheckHeaderOnly()) throw ErrnoError(env, x.failedCall, x.failedErrno);
  try {
    return x.Result(env);
  } catch (...) {
    x.Discard();
    throw;
  }
}

}  // namespace

void InitFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("sendFds", Napi::Function::New(env, SendFds));
  exports.Set("requestFds", Napi::Function::New(env, RequestFds));
  exports.Set("handshake", Napi::Function::New(env, Handshake));
}

}  // namespace trellis
