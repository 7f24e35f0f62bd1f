#pragma once
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace trellis {
// Throws an Error whose `code` is ERR_NATIVE_<errno name> and whose message
// names the failing call, so src/native.ts can map it to a TrellisError.
inline Napi::Error ErrnoError(Napi::Env env, const char* what, int err) {
  std::string msg = std::string(what) + ": " + std::strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}
}  // namespace trellis
