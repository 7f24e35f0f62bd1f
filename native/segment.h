// Shared-memory segments: memfd arenas mapped into external ArrayBuffers.
#pragma once
#include <napi.h>

namespace trellis {
void InitSegment(Napi::Env env, Napi::Object exports);
void InitFdPassing(Napi::Env env, Napi::Object exports);
void InitRowGather(Napi::Env env, Napi::Object exports);
}  // namespace trellis
