// memfd segments. A store creates one memfd per segment (at most 4 GiB, the
// largest ArrayBuffer Node 20 can hold safely), seals its size so no client
// can shrink it under others (which would SIGBUS every mapper), and maps it
// read-write. Clients receive the fd over SCM_RIGHTS and map it once per
// process: read-only for readers, so a stray write to a sealed object faults.
#include "segment.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <v8.h>

#include <cstdint>
#include <memory>

#include "errno-error.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace trellis {
namespace {

constexpr uint64_t kMaxSegment = 4ull << 30;
constexpr uint64_t kHugePage = 2ull << 20;

uint64_t ToU64(const Napi::Value& v) {
  double d = v.As<Napi::Number>().DoubleValue();
  return d < 0 ? 0 : static_cast<uint64_t>(d);
}

// memfdCreate(name, size, hugePages = false) -> fd. With hugePages the memfd
// lives on hugetlbfs (2 MiB pages from the pool the machine reserved,
// vm.nr_hugepages): size must be a multiple of 2 MiB, and pages the pool
// cannot give fault as SIGBUS, so the caller allocates them all at once
// (reserve) before anyone maps it.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  uint64_t size = ToU64(info[1]);
  bool huge = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  if (size == 0 || size > kMaxSegment) throw Napi::RangeError::New(env, "segment size out of range");
  if (huge && size % kHugePage != 0) throw Napi::RangeError::New(env, "a huge-page segment is a multiple of 2 MiB");
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0u);
  int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) throw ErrnoError(env, "memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "ftruncate", err);
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "fcntl(F_ADD_SEALS)", err);
  }
  return Napi::Number::New(env, fd);
}

struct Mapping {
  void* addr;
  size_t len;
};

// A read-only mapping's finalizer (on the ArrayBuffer object).
void UnmapObject(napi_env /*env*/, void* data, void* /*hint*/) {
  auto* m = static_cast<Mapping*>(data);
  munmap(m->addr, m->len);
  delete m;
}

// A writable mapping's deleter (on its backing store, wherever it moved).
void UnmapStore(Napi::Env env, void* /*data*/, Mapping* m) {
  munmap(m->addr, m->len);
  // V8 takes the buffer's length off its external-memory count as it collects
  // it; give back what Map took off beforehand, so the count stays true. The
  // C call, whose failure is ignored: this runs as a worker thread's
  // environment is torn down too, where a C++ exception would abort the whole
  // process (seen in the inference pool's test).
  int64_t ignored;
  napi_adjust_external_memory(env, static_cast<int64_t>(m->len), &ignored);
  delete m;
}

// napi_value is a v8::Local under the hood (node's js_native_api_v8.h
// converts between them this way); N-API offers no call that makes the
// ArrayBuffer Map needs, so this one conversion goes through V8's API.
static_assert(sizeof(napi_value) == sizeof(v8::Local<v8::Value>), "napi_value is not a v8::Local");
napi_value ToNapi(v8::Local<v8::Value> local) { return reinterpret_cast<napi_value>(*local); }

// map(fd, size, writable, populate) -> ArrayBuffer over the whole segment.
// The mapping lives until the ArrayBuffer is collected.
//
// V8 counts an external ArrayBuffer's length as memory this process
// allocated, and a new mapping of 256 MiB or more starts a GC on the spot
// (2-3 ms in a fresh process; issue 12), even after taking the length off the
// count first: the count's low mark moves down with it, and the limit with the
// mark. A mapping of shared pages is no such allocation. V8 leaves out of the
// count exactly the backing stores whose deleter is BackingStore::EmptyDeleter,
// so a read-only mapping (what a reader's first get makes) gets that one, and
// its munmap rides on a finalizer of the ArrayBuffer object instead. That
// memory must then never move to another ArrayBuffer: src/native.ts marks it
// untransferable (postMessage and structuredClone copy it), and its detach key
// refuses the rest (Node aborts on a BYOB stream read into it, which would
// fault on the read-only pages anyway). A writable mapping (a producer's, the
// store's arena) can be handed to anything that moves buffers, so it keeps a
// deleter on its backing store, and the GC a producer pays once per segment.
Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t size = ToU64(info[1]);
  bool writable = info[2].As<Napi::Boolean>().Value();
  bool populate = info.Length() > 3 && info[3].As<Napi::Boolean>().Value();
  if (size == 0 || size > kMaxSegment) throw Napi::RangeError::New(env, "mapping size out of range");
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* addr = mmap(nullptr, size, prot, flags, fd, 0);
  if (addr == MAP_FAILED) throw ErrnoError(env, "mmap", errno);
  auto* m = new Mapping{addr, static_cast<size_t>(size)};
  if (writable) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(size));
    return Napi::ArrayBuffer::New(env, addr, size, UnmapStore, m);
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::shared_ptr<v8::BackingStore> store =
      v8::ArrayBuffer::NewBackingStore(addr, m->len, v8::BackingStore::EmptyDeleter, nullptr);
  v8::Local<v8::ArrayBuffer> ab = v8::ArrayBuffer::New(isolate, std::move(store));
  ab->SetDetachKey(v8::Object::New(isolate));
  napi_value value = ToNapi(ab);
  if (napi_add_finalizer(env, value, m, UnmapObject, nullptr, nullptr) != napi_ok) {
    munmap(addr, m->len);
    delete m;
    throw Napi::Error::New(env, "cannot attach the mapping's finalizer");
  }
  return Napi::Value(env, value);
}

// punchHole(fd, offset, length): give the pages of a freed range back to the OS.
Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t off = ToU64(info[1]);
  uint64_t len = ToU64(info[2]);
  if (len == 0) return env.Undefined();
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0)
    throw ErrnoError(env, "fallocate(PUNCH_HOLE)", errno);
  return env.Undefined();
}

// reserve(fd, offset, length): allocate the pages of a range up front, so the
// first write to them does not pay the page-allocation cost.
Napi::Value Reserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t off = ToU64(info[1]);
  uint64_t len = ToU64(info[2]);
  if (len == 0) return env.Undefined();
  if (fallocate(fd, 0, off, len) != 0) throw ErrnoError(env, "fallocate", errno);
  return env.Undefined();
}

// populate(arrayBuffer, offset, length, write) -> boolean: fill this process's
// page tables for a range of a mapping so later accesses take no faults.
// Returns false where the kernel lacks MADV_POPULATE_*.
Napi::Value Populate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  uint64_t off = ToU64(info[1]);
  uint64_t len = ToU64(info[2]);
  bool write = info[3].As<Napi::Boolean>().Value();
  if (off + len > ab.ByteLength()) throw Napi::RangeError::New(env, "populate range outside the mapping");
  if (len == 0) return Napi::Boolean::New(env, true);
  uintptr_t base = reinterpret_cast<uintptr_t>(ab.Data());
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = (base + off) & ~static_cast<uintptr_t>(page - 1);
  uintptr_t end = base + off + len;
  if (madvise(reinterpret_cast<void*>(start), end - start, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) != 0) {
    if (errno == EINVAL) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, "madvise(POPULATE)", errno);
  }
  return Napi::Boolean::New(env, true);
}

class PopulateWorker : public Napi::AsyncWorker {
 public:
  PopulateWorker(Napi::Env env, Napi::ArrayBuffer ab, uintptr_t start, size_t len)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), start_(start), len_(len) {
    // Keep the mapping alive while the worker thread touches it.
    ref_ = Napi::Persistent(ab);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    if (madvise(reinterpret_cast<void*>(start_), len_, MADV_POPULATE_READ) != 0 && errno != EINVAL) err_ = errno;
  }
  void OnOK() override {
    // See RequestFdsWorker: never let an exception out of a completion.
    try {
      if (err_ != 0) {
        deferred_.Reject(ErrnoError(Env(), "madvise(POPULATE_READ)", err_).Value());
      } else {
        deferred_.Resolve(Env().Undefined());
      }
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::ArrayBuffer> ref_;
  uintptr_t start_;
  size_t len_;
  int err_ = 0;
};

// populateAsync(arrayBuffer, offset, length) -> Promise: maps a range's pages
// into this process on a worker thread. Read mode on purpose: on a shared
// memfd mapping a read fault maps up to 16 pages at once, and the entries it
// makes are already writable, so a producer's later writes take no faults;
// MADV_POPULATE_WRITE faults one page at a time and measured barely faster
// than no populate at all.
Napi::Value PopulateAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  uint64_t off = ToU64(info[1]);
  uint64_t len = ToU64(info[2]);
  if (off + len > ab.ByteLength()) throw Napi::RangeError::New(env, "populate range outside the mapping");
  uintptr_t base = reinterpret_cast<uintptr_t>(ab.Data());
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = (base + off) & ~static_cast<uintptr_t>(page - 1);
  uintptr_t end = base + off + len;
  auto* w = new PopulateWorker(env, ab, start, len == 0 ? 0 : end - start);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// residentBytes(fd): bytes of memory the memfd holds (st_blocks), which falls
// when holes are punched.
Napi::Value ResidentBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct stat st;
  if (fstat(fd, &st) != 0) throw ErrnoError(env, "fstat", errno);
  return Napi::Number::New(env, static_cast<double>(st.st_blocks) * 512.0);
}

// fdSize(fd): the size of a received segment, checked against what the store said.
Napi::Value FdSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct stat st;
  if (fstat(fd, &st) != 0) throw ErrnoError(env, "fstat", errno);
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (close(fd) != 0) throw ErrnoError(env, "close", errno);
  return env.Undefined();
}

// address(arrayBuffer) -> bigint: only for tests and diagnostics.
Napi::Value Address(const Napi::CallbackInfo& info) {
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ab.Data())));
}

}  // namespace

void InitSegment(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("map", Napi::Function::New(env, Map));
  exports.Set("punchHole", Napi::Function::New(env, PunchHole));
  exports.Set("reserve", Napi::Function::New(env, Reserve));
  exports.Set("populate", Napi::Function::New(env, Populate));
  exports.Set("populateAsync", Napi::Function::New(env, PopulateAsync));
  exports.Set("residentBytes", Napi::Function::New(env, ResidentBytes));
  exports.Set("fdSize", Napi::Function::New(env, FdSize));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("address", Napi::Function::New(env, Address));
}

}  // namespace trellis
