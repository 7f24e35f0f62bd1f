// The one entry point of the native core. Everything here is deliberately
// small: TypeScript validates arguments before calling in (src/native.ts), C++
// keeps only cheap guards and turns errno into errors with a stable code.
#include <napi.h>

#include "segment.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  trellis::InitSegment(env, exports);
  trellis::InitFdPassing(env, exports);
  trellis::InitRowGather(env, exports);
  return exports;
}

NODE_API_MODULE(trellis_native, Init)
