// The CUDA driver API calls that cust 0.3.2 makes for cuda/src/driver.rs, emulated on the CPU: one
// device whose memory is host memory and whose kernel launches run the kernels' CUDA C compiled for the
// host (kernel_table.h). Every other driver symbol keeps the stub's CUDA_ERROR_NO_DEVICE (the stub's
// definitions are weak and linked in, see build.sh).
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernel_table.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : CUresult {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
  CUDA_ERROR_INVALID_PTX = 218,
};

namespace emulator {

std::vector<KernelEntry>& kernel_table() {
  static std::vector<KernelEntry> table;
  return table;
}

namespace {

constexpr int driver_version = 12000;
const char device_name[] = "CPU emulator of kernels/cu";

std::atomic<bool> initialised = false;

struct Context {
  bool primary;
};
// The primary context of device 0, retained by reference count; other contexts from cuCtxCreate.
Context primary_context{true};
int primary_refs = 0;
unsigned primary_flags = 0;
std::set<Context*> contexts{&primary_context};

struct Stream {};
struct Event {
  std::chrono::steady_clock::time_point at{};
  bool recorded = false;
};
struct Function {
  const KernelEntry* kernel;
  unsigned max_threads;  // the PTX's .maxntid (launch bounds), else 1024
};
struct Module {
  std::map<std::string, Function> functions;
};
std::set<Stream*> streams;
std::set<Event*> events;
std::set<Module*> modules;

// One lock for the driver's bookkeeping; a second for launches, which run whole grids under it (the
// kernels' __shared__ statics and the fiber scheduler are process-wide, so one grid at a time).
std::mutex state_lock;
std::mutex launch_lock;

thread_local Context* current = nullptr;
thread_local std::vector<Context*> pushed;

// Device memory is host memory with canary bytes on both sides of each allocation; a kernel that wrote
// outside its buffers is caught after its launch as a GPU would fault on an illegal address.
constexpr size_t canary_bytes = 256;
constexpr unsigned char canary = 0xCD;
struct Allocation {
  size_t bytes;
  unsigned char* base;  // canary, user bytes, canary
};
std::map<CUdeviceptr, Allocation> allocations;  // by user address

unsigned char* user_bytes(const Allocation& a) { return a.base + canary_bytes; }
size_t padded(size_t bytes) { return (bytes + canary_bytes - 1) / canary_bytes * canary_bytes; }

bool canaries_intact(const Allocation& a) {
  const unsigned char* after = user_bytes(a) + a.bytes;
  size_t tail = padded(a.bytes) - a.bytes + canary_bytes;
  for (size_t i = 0; i < canary_bytes; ++i)
    if (a.base[i] != canary) return false;
  for (size_t i = 0; i < tail; ++i)
    if (after[i] != canary) return false;
  return true;
}

// The live allocation holding [ptr, ptr + bytes), or null. Caller holds state_lock.
const Allocation* find_range(CUdeviceptr ptr, size_t bytes) {
  auto it = allocations.upper_bound(ptr);
  if (it == allocations.begin()) return nullptr;
  --it;
  CUdeviceptr start = it->first;
  if (ptr < start || ptr - start > it->second.bytes || it->second.bytes - (ptr - start) < bytes) return nullptr;
  return &it->second;
}

bool range_ok(CUdeviceptr ptr, size_t bytes) {
  std::lock_guard<std::mutex> g(state_lock);
  return find_range(ptr, bytes) != nullptr;
}

CUresult need_context() {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult check_stream(void* s) {
  if (!s) return CUDA_SUCCESS;
  std::lock_guard<std::mutex> g(state_lock);
  return streams.count(static_cast<Stream*>(s)) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// The `.entry` names of a PTX text, each with its `.maxntid` x (launch bounds) if it declares one.
bool parse_entries(const char* ptx, std::map<std::string, unsigned>& out) {
  std::string text(ptx);
  if (text.find(".version") == std::string::npos || text.find(".target") == std::string::npos) return false;
  size_t at = 0;
  while ((at = text.find(".entry ", at)) != std::string::npos) {
    size_t start = at + 7, end = start;
    while (end < text.size() && (isalnum((unsigned char)text[end]) || text[end] == '_' || text[end] == '$')) ++end;
    if (end == start) return false;
    std::string name = text.substr(start, end - start);
    size_t body = text.find('{', end);
    if (body == std::string::npos) return false;
    unsigned max_threads = 1024;
    size_t bound = text.find(".maxntid", end);
    if (bound != std::string::npos && bound < body) max_threads = (unsigned)std::strtoul(text.c_str() + bound + 8, nullptr, 10);
    out[name] = max_threads;
    at = body;
  }
  return true;
}

CUresult check_canaries_after(const char* kernel) {
  std::lock_guard<std::mutex> g(state_lock);
  CUresult r = CUDA_SUCCESS;
  for (auto& [ptr, a] : allocations)
    if (!canaries_intact(a)) {
      std::fprintf(stderr, "CUDA emulator: kernel %s wrote outside the %zu-byte allocation at 0x%llx\n", kernel, a.bytes, ptr);
      std::memset(a.base, canary, canary_bytes);
      std::memset(user_bytes(a) + a.bytes, canary, padded(a.bytes) - a.bytes + canary_bytes);
      r = CUDA_ERROR_ILLEGAL_ADDRESS;
    }
  return r;
}

int attribute(int a) {
  switch (a) {
    case 1: return 1024;          // max threads per block
    case 2: return 1024;          // max block dim x
    case 3: return 1024;          // max block dim y
    case 4: return 64;            // max block dim z
    case 5: return 2147483647;    // max grid dim x
    case 6: return 65535;         // max grid dim y
    case 7: return 65535;         // max grid dim z
    case 8: return 49152;         // max shared memory per block
    case 9: return 65536;         // total constant memory
    case 10: return 32;           // warp size
    case 11: return 2147483647;   // max pitch
    case 12: return 65536;        // max registers per block
    case 13: return 1410000;      // clock rate (kHz)
    case 14: return 512;          // texture alignment
    case 15: return 1;            // gpu overlap
    case 16: return 1;            // multiprocessor count: one CPU thread runs every block
    case 19: return 1;            // can map host memory
    case 30: return 512;          // surface alignment
    case 31: return 1;            // concurrent kernels
    case 36: return 1215000;      // memory clock rate (kHz)
    case 37: return 5120;         // global memory bus width
    case 38: return 41943040;     // L2 cache size
    case 39: return 2048;         // max threads per multiprocessor
    case 40: return 2;            // async engine count
    case 41: return 1;            // unified addressing
    case 75: return 8;            // compute capability major
    case 76: return 0;            // compute capability minor
    case 81: return 167936;       // max shared memory per multiprocessor
    case 82: return 65536;        // max registers per multiprocessor
    case 97: return 166912;       // max shared memory per block (opt-in)
    case 106: return 32;          // max blocks per multiprocessor
    default: return 0;
  }
}

const char* error_name(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
    default: return nullptr;
  }
}

const char* error_string(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS: return "no error";
    case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
    case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
    case 100: return "no CUDA-capable device is detected";
    case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
    case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
    case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
    case CUDA_ERROR_INVALID_PTX: return "a PTX JIT compilation failed";
    case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
    case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
    case CUDA_ERROR_NOT_READY: return "device not ready";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
    default: return nullptr;
  }
}

CUresult memcpy_checked(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return CUDA_SUCCESS;
}

template <class T>
CUresult memset_checked(CUdeviceptr dst, T value, size_t count) {
  if (CUresult r = need_context()) return r;
  if (dst % sizeof(T) != 0) return CUDA_ERROR_INVALID_VALUE;
  if (count == 0) return CUDA_SUCCESS;
  if (!range_ok(dst, count * sizeof(T))) return CUDA_ERROR_INVALID_VALUE;
  T* p = reinterpret_cast<T*>(dst);
  std::fill(p, p + count, value);
  return CUDA_SUCCESS;
}

}  // namespace

bool valid_device_pointer(const void* p) {
  std::lock_guard<std::mutex> g(state_lock);
  return find_range((CUdeviceptr)p, 0) != nullptr;
}
}  // namespace emulator

using namespace emulator;

// ---- initialisation, device ----

API CUresult cuInit(unsigned flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  initialised = true;
  return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version) {
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  *version = driver_version;
  return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int* count) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  *count = 1;
  return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(name, (size_t)len, "%s", device_name);
  return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!bytes) return CUDA_ERROR_INVALID_VALUE;
  *bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGE_SIZE);
  return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* value, int attrib, CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  // CUDA 12.0 defines attributes 1..=132 (some numbers retired); others are invalid.
  if (!value || attrib < 1 || attrib > 132) return CUDA_ERROR_INVALID_VALUE;
  *value = attribute(attrib);
  return CUDA_SUCCESS;
}

API CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
  *major = attribute(75);
  *minor = attribute(76);
  return CUDA_SUCCESS;
}

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
  if (CUresult r = need_context()) return r;
  if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
  *total = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGE_SIZE);
  *free_bytes = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)sysconf(_SC_PAGE_SIZE);
  return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult error, const char** out) {
  if (!out) return CUDA_ERROR_INVALID_VALUE;
  *out = error_name(error);
  return *out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult error, const char** out) {
  if (!out) return CUDA_ERROR_INVALID_VALUE;
  *out = error_string(error);
  return *out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---- contexts ----

API CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> g(state_lock);
  ++primary_refs;
  *ctx = &primary_context;
  return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard<std::mutex> g(state_lock);
  if (primary_refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  --primary_refs;
  return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice device, unsigned flags) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard<std::mutex> g(state_lock);
  primary_flags = flags;
  return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxGetState(CUdevice device, unsigned* flags, int* active) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> g(state_lock);
  *flags = primary_flags;
  *active = primary_refs > 0;
  return CUDA_SUCCESS;
}

API CUresult cuCtxCreate_v2(void** ctx, unsigned flags, CUdevice device) {
  (void)flags;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  auto* c = new Context{false};
  {
    std::lock_guard<std::mutex> g(state_lock);
    contexts.insert(c);
  }
  // A new context is pushed onto the calling thread's stack.
  if (current) pushed.push_back(current);
  current = c;
  *ctx = c;
  return CUDA_SUCCESS;
}

API CUresult cuCtxDestroy_v2(void* ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* c = static_cast<Context*>(ctx);
  {
    std::lock_guard<std::mutex> g(state_lock);
    if (!c || c->primary || !contexts.count(c)) return CUDA_ERROR_INVALID_CONTEXT;
    contexts.erase(c);
  }
  if (current == c) current = nullptr;
  std::erase(pushed, c);
  delete c;
  return CUDA_SUCCESS;
}

static bool live_context(Context* c) {
  std::lock_guard<std::mutex> g(state_lock);
  return contexts.count(c) > 0;
}

API CUresult cuCtxSetCurrent(void* ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* c = static_cast<Context*>(ctx);
  if (c && !live_context(c)) return CUDA_ERROR_INVALID_CONTEXT;
  current = c;
  return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(void** ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  *ctx = current;
  return CUDA_SUCCESS;
}

API CUresult cuCtxPushCurrent_v2(void* ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* c = static_cast<Context*>(ctx);
  if (!c || !live_context(c)) return CUDA_ERROR_INVALID_CONTEXT;
  if (current) pushed.push_back(current);
  current = c;
  return CUDA_SUCCESS;
}

API CUresult cuCtxPopCurrent_v2(void** ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  if (ctx) *ctx = current;
  if (pushed.empty()) {
    current = nullptr;
  } else {
    current = pushed.back();
    pushed.pop_back();
  }
  return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice* device) {
  if (CUresult r = need_context()) return r;
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  *device = 0;
  return CUDA_SUCCESS;
}

API CUresult cuCtxGetApiVersion(void* ctx, unsigned* version) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* c = ctx ? static_cast<Context*>(ctx) : current;
  if (!c || !live_context(c)) return CUDA_ERROR_INVALID_CONTEXT;
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  *version = driver_version;
  return CUDA_SUCCESS;
}

// Launches run to completion when called, so there is never outstanding work to wait for.
API CUresult cuCtxSynchronize() { return need_context(); }

// ---- streams and events ----

API CUresult cuStreamCreate(void** stream, unsigned flags) {
  (void)flags;
  if (CUresult r = need_context()) return r;
  if (!stream) return CUDA_ERROR_INVALID_VALUE;
  auto* s = new Stream;
  std::lock_guard<std::mutex> g(state_lock);
  streams.insert(s);
  *stream = s;
  return CUDA_SUCCESS;
}

API CUresult cuStreamCreateWithPriority(void** stream, unsigned flags, int priority) {
  (void)priority;
  return cuStreamCreate(stream, flags);
}

API CUresult cuStreamDestroy_v2(void* stream) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* s = static_cast<Stream*>(stream);
  std::lock_guard<std::mutex> g(state_lock);
  if (!s || !streams.erase(s)) return CUDA_ERROR_INVALID_HANDLE;
  delete s;
  return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(void* stream) {
  if (CUresult r = need_context()) return r;
  return check_stream(stream);
}

API CUresult cuStreamQuery(void* stream) {
  if (CUresult r = need_context()) return r;
  return check_stream(stream);
}

API CUresult cuEventCreate(void** event, unsigned flags) {
  (void)flags;
  if (CUresult r = need_context()) return r;
  if (!event) return CUDA_ERROR_INVALID_VALUE;
  auto* e = new Event;
  std::lock_guard<std::mutex> g(state_lock);
  events.insert(e);
  *event = e;
  return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(void* event) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* e = static_cast<Event*>(event);
  std::lock_guard<std::mutex> g(state_lock);
  if (!e || !events.erase(e)) return CUDA_ERROR_INVALID_HANDLE;
  delete e;
  return CUDA_SUCCESS;
}

static Event* live_event(void* event) {
  std::lock_guard<std::mutex> g(state_lock);
  auto* e = static_cast<Event*>(event);
  return e && events.count(e) ? e : nullptr;
}

API CUresult cuEventRecord(void* event, void* stream) {
  if (CUresult r = need_context()) return r;
  if (CUresult r = check_stream(stream)) return r;
  Event* e = live_event(event);
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(void* event) { return live_event(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
API CUresult cuEventQuery(void* event) { return live_event(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }

API CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
  Event *a = live_event(start), *b = live_event(end);
  if (!a || !b) return CUDA_ERROR_INVALID_HANDLE;
  if (!ms) return CUDA_ERROR_INVALID_VALUE;
  if (!a->recorded || !b->recorded) return CUDA_ERROR_NOT_READY;
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return CUDA_SUCCESS;
}

// ---- modules ----

API CUresult cuModuleLoadData(void** module, const void* image) {
  if (CUresult r = need_context()) return r;
  if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
  std::map<std::string, unsigned> entries;
  if (!parse_entries(static_cast<const char*>(image), entries)) return CUDA_ERROR_INVALID_PTX;
  auto* m = new Module;
  for (auto& [name, max_threads] : entries) {
    // An entry the emulator has no host build of stays unresolvable (cuModuleGetFunction: NOT_FOUND).
    for (const auto& k : kernel_table())
      if (name == k.name) m->functions.emplace(name, Function{&k, max_threads});
  }
  std::lock_guard<std::mutex> g(state_lock);
  modules.insert(m);
  *module = m;
  return CUDA_SUCCESS;
}

API CUresult cuModuleLoadDataEx(void** module, const void* image, unsigned num_options, void* options, void** values) {
  (void)num_options, (void)options, (void)values;  // JIT options change nothing here
  return cuModuleLoadData(module, image);
}

API CUresult cuModuleUnload(void* module) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  auto* m = static_cast<Module*>(module);
  std::lock_guard<std::mutex> g(state_lock);
  if (!m || !modules.erase(m)) return CUDA_ERROR_INVALID_HANDLE;
  delete m;
  return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(void** function, void* module, const char* name) {
  if (CUresult r = need_context()) return r;
  if (!function || !name) return CUDA_ERROR_INVALID_VALUE;
  auto* m = static_cast<Module*>(module);
  std::lock_guard<std::mutex> g(state_lock);
  if (!m || !modules.count(m)) return CUDA_ERROR_INVALID_HANDLE;
  auto it = m->functions.find(name);
  if (it == m->functions.end()) return CUDA_ERROR_NOT_FOUND;
  *function = &it->second;
  return CUDA_SUCCESS;
}

// ---- memory ----

API CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
  if (CUresult r = need_context()) return r;
  if (!ptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  size_t total = canary_bytes + padded(bytes) + canary_bytes;
  auto* base = static_cast<unsigned char*>(std::aligned_alloc(canary_bytes, total));
  if (!base) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
  std::memset(base, canary, total);
  Allocation a{bytes, base};
  *ptr = (CUdeviceptr)user_bytes(a);
  std::lock_guard<std::mutex> g(state_lock);
  allocations.emplace(*ptr, a);
  return CUDA_SUCCESS;
}

API CUresult cuMemFree_v2(CUdeviceptr ptr) {
  if (CUresult r = need_context()) return r;
  std::lock_guard<std::mutex> g(state_lock);
  auto it = allocations.find(ptr);
  if (it == allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  std::free(it->second.base);
  allocations.erase(it);
  return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
  if (CUresult r = need_context()) return r;
  if (bytes && (!src || !range_ok(dst, bytes))) return CUDA_ERROR_INVALID_VALUE;
  return memcpy_checked(reinterpret_cast<void*>(dst), src, bytes);
}

API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
  if (CUresult r = need_context()) return r;
  if (bytes && (!dst || !range_ok(src, bytes))) return CUDA_ERROR_INVALID_VALUE;
  return memcpy_checked(dst, reinterpret_cast<const void*>(src), bytes);
}

API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  if (CUresult r = need_context()) return r;
  if (bytes && (!range_ok(dst, bytes) || !range_ok(src, bytes))) return CUDA_ERROR_INVALID_VALUE;
  if (bytes) std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
  return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return cuMemcpyHtoD_v2(dst, src, bytes);
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return cuMemcpyDtoH_v2(dst, src, bytes);
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return cuMemcpyDtoD_v2(dst, src, bytes);
}

API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t count) { return memset_checked(dst, value, count); }
API CUresult cuMemsetD16_v2(CUdeviceptr dst, unsigned short value, size_t count) { return memset_checked(dst, value, count); }
API CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned value, size_t count) { return memset_checked(dst, value, count); }

API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t count, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return memset_checked(dst, value, count);
}
API CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short value, size_t count, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return memset_checked(dst, value, count);
}
API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned value, size_t count, void* stream) {
  if (CUresult r = check_stream(stream)) return r;
  return memset_checked(dst, value, count);
}

// ---- launch ----

API CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared_bytes, void* stream, void** params, void** extra) {
  if (CUresult r = need_context()) return r;
  if (CUresult r = check_stream(stream)) return r;
  auto* fn = static_cast<const Function*>(f);
  if (!fn) return CUDA_ERROR_INVALID_HANDLE;
  // Our launchers use 1-D blocks, only static shared memory and kernelParams (never `extra`).
  if (extra || !params || shared_bytes != 0) return CUDA_ERROR_INVALID_VALUE;
  if (by != 1 || bz != 1 || bx == 0 || bx > 1024) return CUDA_ERROR_INVALID_VALUE;
  if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > 2147483647u) return CUDA_ERROR_INVALID_VALUE;
  // More threads than the kernel's __launch_bounds__ fails on the GPU too.
  if (bx > fn->max_threads) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
  std::lock_guard<std::mutex> g(launch_lock);
  if (!fn->kernel->launch(*fn->kernel, params, EmuDim3{gx, gy, gz}, bx)) {
    std::fprintf(stderr, "CUDA emulator: kernel %s got a pointer outside every live allocation\n", fn->kernel->name);
    return CUDA_ERROR_ILLEGAL_ADDRESS;
  }
  return check_canaries_after(fn->kernel->name);
}

// The kernel table, for the test that it names exactly kernels::signatures::ALL: a newline-separated
// list (not part of the CUDA driver API).
API const char* cuEmulatorKernelNames() {
  static std::string names = [] {
    std::vector<std::string> v;
    for (const auto& k : kernel_table()) v.push_back(k.name);
    std::sort(v.begin(), v.end());
    std::string s;
    for (const auto& n : v) s += n + "\n";
    return s;
  }();
  return names.c_str();
}
