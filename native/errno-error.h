#pragma once
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace trellis {
// Builds (the caller throws it or rejects with it) a plain Error carrying
// `errno` and `syscall`, its message the failing call and strerror's text;
// src/native.ts turns it into a TrellisError (ERR_NATIVE, or
// ERR_OUT_OF_MEMORY for ENOSPC).
inline Napi::Error ErrnoError(Napi::Env env, const char* what, int err) {
  std::string msg = std::string(what) + ": " + std::strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}
}  // namespace trellis
