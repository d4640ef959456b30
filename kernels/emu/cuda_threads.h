// A CUDA shim that runs the kernels of kernels/cu/ on the CPU, shared by kernels/check.sh
// (emulate_blocks.cpp) and the emulated driver library (cuda/emulator/). A block's CUDA threads are
// cooperative fibers (ucontext) on the calling OS thread: each runs until it reaches __syncthreads or a
// warp exchange (__shfl_xor_sync, the emulated mma.sync), then yields; a barrier opens once every fiber
// of the block (or warp) has arrived. __shared__ is one static per kernel, shared by the block's fibers,
// so one grid runs at a time per process (callers serialise launches). Kernels that never synchronise
// can run without fibers (emu::run_grid with cooperative = false); reaching a barrier there aborts,
// naming the kernel, because a plain loop cannot honour it.
#pragma once
#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define KERNELS_CPU_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct EmuDim3 {
  unsigned x, y, z;
};
// Set by the scheduler before each fiber (or plain thread) runs.
inline EmuDim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

// Fibers never run in parallel, so a plain read-modify-write is atomic here.
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}

// f16 / bf16 bits to float (exact), for the emulated mma and the f16 casts.
inline float emu_half_to_float(unsigned short h, bool bf16) {
  if (bf16) return __uint_as_float((unsigned)h << 16);
  unsigned sign = (h >> 15) & 1, exp = (h >> 10) & 31, man = h & 1023;
  float v = exp == 0 ? std::ldexp((float)man, -24) : exp == 31 ? (man ? NAN : INFINITY) : std::ldexp((float)(man | 1024), (int)exp - 25);
  return sign ? -v : v;
}

// The PTX cvt.f32.f16 / cvt.rn.f16.f32 that common.cuh uses on the GPU; GCC's _Float16 conversion
// rounds to nearest even, as cvt.rn does.
inline float f16_to_f32(unsigned short h) { return emu_half_to_float(h, false); }
inline unsigned short f32_to_f16(float f) {
  _Float16 h = (_Float16)f;
  unsigned short bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

namespace emu {
constexpr unsigned max_threads = 1024;
// Per fiber; the deepest kernel frame (the GEMMs' 64-float accumulators) uses a few KiB.
constexpr size_t stack_bytes = 128 * 1024, guard_bytes = 4096;

enum class State : unsigned char { ready, at_block_barrier, at_warp_barrier, done };

// Context switch. glibc's swapcontext makes a sigprocmask system call per switch, which dominated the run
// time (a row softmax switches ~25 times per thread), so x86-64 saves and restores the callee-saved
// registers by hand; other targets fall back to ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
extern "C" void emu_fiber_trampoline();
// Weak so that every translation unit including this header may carry the same definition.
asm(R"(
  .text
  .weak emu_switch_stack
  .hidden emu_switch_stack
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack

  .weak emu_fiber_trampoline
  .hidden emu_fiber_trampoline
  .type emu_fiber_trampoline, @function
emu_fiber_trampoline:
  call *%r12
  ud2
  .size emu_fiber_trampoline, .-emu_fiber_trampoline
)");
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { emu_switch_stack(&from.sp, to.sp); }
// A fresh fiber: a frame that emu_switch_stack pops (r12 = entry) and returns into the trampoline from.
inline void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15);
  void** frame = reinterpret_cast<void**>(top) - 7;  // r15 r14 r13 r12 rbx rbp return-address
  for (int i = 0; i < 7; ++i) frame[i] = nullptr;
  frame[3] = reinterpret_cast<void*>(entry);
  frame[6] = reinterpret_cast<void*>(&emu_fiber_trampoline);
  c.sp = frame;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Scheduler {
  Context main;
  Context fibers[max_threads];
  State state[max_threads];
  unsigned parity[max_threads];  // per thread: which half of the double-buffered warp exchange is next
  char* stacks = nullptr;        // max_threads stacks, each above a PROT_NONE guard page
  bool in_fiber = false;
  const char* kernel = "";
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  // Schedule: false runs every ready fiber once per round, so the warps move in near lockstep; true lets
  // each warp run on through its warp exchanges until it waits at __syncthreads (or ends) before the
  // next warp moves. Both are schedules the hardware may produce; the second exposes a warp that
  // overwrites shared data another warp still reads before the barrier that should separate them.
  bool warp_run_ahead = false;
};
inline Scheduler sched;

// Per thread: cp.async copies not yet committed, and the committed groups, oldest first.
struct CpAsync {
  unsigned char* dst;
  const unsigned char* src;
  unsigned bytes;
};
inline std::vector<CpAsync> cp_open[max_threads];
inline std::vector<std::vector<CpAsync>> cp_groups[max_threads];
inline void cp_reset(unsigned t) {
  cp_open[t].clear();
  cp_groups[t].clear();
}

[[noreturn]] inline void fail(const char* why) {
  std::fprintf(stderr, "CUDA emulation of kernel %s: %s\n", sched.kernel, why);
  std::fflush(stderr);
  std::abort();
}

inline void yield(State s) {
  if (!sched.in_fiber) fail("reached a barrier (__syncthreads / warp exchange) but is marked non-cooperative");
  unsigned t = threadIdx.x;
  sched.state[t] = s;
  switch_to(sched.fibers[t], sched.main);
}

// Never returns: a finished fiber switches back to the scheduler for good.
inline void fiber_main() {
  sched.body(sched.body_arg);
  unsigned t = threadIdx.x;
  sched.state[t] = State::done;
  switch_to(sched.fibers[t], sched.main);
  fail("a finished fiber was resumed");
}

inline void make_stacks() {
  if (sched.stacks) return;
  size_t slot = stack_bytes + guard_bytes, total = slot * max_threads;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fail("cannot map fiber stacks");
  sched.stacks = static_cast<char*>(p);
  // A fiber overflowing its stack faults on the guard page instead of corrupting its neighbour.
  for (unsigned t = 0; t < max_threads; ++t) mprotect(sched.stacks + t * slot, guard_bytes, PROT_NONE);
}

// Runs one block (blockIdx, blockDim already set) as blockDim.x fibers until all have returned.
inline void run_block_fibers() {
  unsigned n = blockDim.x;
  size_t slot = stack_bytes + guard_bytes;
  for (unsigned t = 0; t < n; ++t) {
    start_context(sched.fibers[t], sched.stacks + t * slot + guard_bytes, stack_bytes, fiber_main);
    sched.state[t] = State::ready;
    sched.parity[t] = 0;
    cp_reset(t);  // copies a previous block left pending never land
  }
  sched.in_fiber = true;
  for (;;) {
    for (unsigned t = 0; t < n; ++t)
      if (sched.state[t] == State::ready) {
        threadIdx = {t, 0, 0};
        switch_to(sched.main, sched.fibers[t]);
      }
    if (sched.warp_run_ahead)
      for (unsigned lo = 0; lo < n; lo += 32) {
        unsigned hi = lo + 32 < n ? lo + 32 : n;
        for (;;) {
          unsigned waiting = 0;
          for (unsigned t = lo; t < hi; ++t) waiting += sched.state[t] == State::at_warp_barrier;
          if (waiting != hi - lo) break;
          for (unsigned t = lo; t < hi; ++t) sched.state[t] = State::ready;
          for (unsigned t = lo; t < hi; ++t) {
            threadIdx = {t, 0, 0};
            switch_to(sched.main, sched.fibers[t]);
          }
        }
      }
    // Every fiber now waits at a barrier or has returned: open the barriers that everyone reached.
    unsigned done = 0, at_block = 0;
    bool opened = false;
    for (unsigned t = 0; t < n; ++t) {
      done += sched.state[t] == State::done;
      at_block += sched.state[t] == State::at_block_barrier;
    }
    if (done == n) break;
    for (unsigned w = 0; w * 32 < n; ++w) {
      unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0;
      for (unsigned t = lo; t < hi; ++t) waiting += sched.state[t] == State::at_warp_barrier;
      if (waiting == hi - lo) {
        for (unsigned t = lo; t < hi; ++t) sched.state[t] = State::ready;
        opened = true;
      }
    }
    // Threads that have exited no longer count towards __syncthreads, as on the hardware.
    if (!opened && at_block > 0 && at_block + done == n) {
      for (unsigned t = 0; t < n; ++t)
        if (sched.state[t] == State::at_block_barrier) sched.state[t] = State::ready;
      opened = true;
    }
    if (!opened) {
      sched.in_fiber = false;
      fail("deadlock: a warp exchange or __syncthreads that not every thread of the warp / block reaches");
    }
  }
  sched.in_fiber = false;
}

// Runs `body(arg)` for every thread of grid `grid` x `threads` (1-D blocks), one block after another.
inline void run_grid(const char* kernel, EmuDim3 grid, unsigned threads, bool cooperative, void (*body)(void*), void* arg) {
  if (threads == 0 || threads > max_threads) fail("block size outside 1..1024");
  sched.kernel = kernel;
  sched.body = body;
  sched.body_arg = arg;
  gridDim = grid;
  blockDim = {threads, 1, 1};
  if (cooperative) make_stacks();
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        if (cooperative) {
          run_block_fibers();
        } else {
          for (unsigned t = 0; t < threads; ++t) {
            threadIdx = {t, 0, 0};
            body(arg);
          }
        }
      }
}

// Double-buffered warp exchanges: a lane writes one half, waits for its warp, reads, and its next
// exchange uses the other half. No lane can reach that next exchange's barrier before every lane has
// passed this one, so the half being read is never overwritten early and one barrier per exchange does.
inline float exchange[2][max_threads];
inline unsigned mma_a[2][max_threads][4], mma_b[2][max_threads][2];
inline unsigned next_half() { return sched.parity[threadIdx.x]++ & 1; }
inline const unsigned char* ldmatrix_rows[2][max_threads];
// ldmatrix phases (one 8x8 matrix each) whose 8 row addresses share a 16-byte bank group, i.e. that the
// hardware would split into several shared-memory wavefronts: a speed defect, counted for the tests.
inline unsigned long ldmatrix_bank_conflicts = 0;

}  // namespace emu

inline void __syncthreads() { emu::yield(emu::State::at_block_barrier); }

// Every lane of the calling warp must call this (as on hardware with a full mask).
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  unsigned t = threadIdx.x, h = emu::next_half();
  emu::exchange[h][t] = v;
  emu::yield(emu::State::at_warp_barrier);
  return emu::exchange[h][t ^ (unsigned)lane_mask];
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16} for the calling lane, from the PTX ISA's fragment
// tables (g = lane / 4, t = lane % 4; each 32-bit register holds two elements, the lower k in the low
// half): A register r holds (row g + 8 (r % 2), k 2t + 8 (r / 2) + {0, 1}); B register r holds
// (k 2t + 8 r + {0, 1}, col g); D element r is (row g + 8 (r / 2), col 2t + r % 2). Every lane of the
// warp must call it.
inline void emu_mma_m16n8k16(float* d, const unsigned* a, const unsigned* b, bool bf16) {
  unsigned t = threadIdx.x, base = t / 32 * 32, lane = t % 32, h = emu::next_half();
  for (int r = 0; r < 4; ++r) emu::mma_a[h][t][r] = a[r];
  for (int r = 0; r < 2; ++r) emu::mma_b[h][t][r] = b[r];
  emu::yield(emu::State::at_warp_barrier);
  auto elem = [&](unsigned word, unsigned k) { return emu_half_to_float((unsigned short)(word >> (16 * (k & 1))), bf16); };
  auto a_at = [&](unsigned row, unsigned k) {
    unsigned src = base + (row % 8) * 4 + (k % 8) / 2, reg = (row >= 8) + 2 * (k >= 8);
    return elem(emu::mma_a[h][src][reg], k);
  };
  auto b_at = [&](unsigned k, unsigned col) {
    unsigned src = base + col * 4 + (k % 8) / 2, reg = k >= 8;
    return elem(emu::mma_b[h][src][reg], k);
  };
  for (unsigned r = 0; r < 4; ++r) {
    unsigned row = lane / 4 + 8 * (r / 2), col = 2 * (lane % 4) + r % 2;
    float s = 0.0f;
    for (unsigned k = 0; k < 16; ++k) s += a_at(row, k) * b_at(k, col);
    d[r] += s;
  }
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes: copies src_bytes (< 16: the rest of the 16 is
// zero-filled; 0 reads nothing from src) into shared dst, both 16-byte aligned. The copy is asynchronous:
// it is complete only once a later cp.async.wait_group of the same thread covers its group. To catch a
// kernel that reads (or lets another warp read) a stage before waiting, or refills a stage another warp
// may still be reading, dst is poisoned with NaN bits (0x7fff in every 16-bit lane, NaN in bf16 and f16)
// at issue and the data lands only at the covering wait: both are timings the hardware may produce.
inline void emu_cp_async_16(void* dst, const void* src, unsigned src_bytes) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (src_bytes && reinterpret_cast<uintptr_t>(src) % 16))
    emu::fail("cp.async with an address that is not 16-byte aligned");
  if (src_bytes > 16) emu::fail("cp.async src-size above cp-size 16");
  auto* d = static_cast<unsigned char*>(dst);
  for (int i = 0; i < 16; i += 2) {
    d[i] = 0xff;
    d[i + 1] = 0x7f;
  }
  emu::cp_open[threadIdx.x].push_back({d, static_cast<const unsigned char*>(src), src_bytes});
}

// cp.async.commit_group: the thread's uncommitted copies become one group (possibly empty).
inline void emu_cp_async_commit() {
  unsigned t = threadIdx.x;
  emu::cp_groups[t].push_back(std::move(emu::cp_open[t]));
  emu::cp_open[t].clear();
}

// cp.async.wait_group n: waits until at most n of the thread's committed groups are pending (the most
// recent ones); uncommitted copies are not waited for.
inline void emu_cp_async_wait(unsigned n) {
  auto& groups = emu::cp_groups[threadIdx.x];
  while (groups.size() > n) {
    for (const auto& c : groups.front()) {
      std::memcpy(c.dst, c.src, c.bytes);
      std::memset(c.dst + c.bytes, 0, 16 - c.bytes);
    }
    groups.erase(groups.begin());
  }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 for the calling lane (PTX ISA): lane 8q + i supplies
// the address of row i (8 contiguous 16-bit elements, 16-byte aligned) of matrix q = 0..3; register q of
// lane l receives elements (row l/4, cols 2(l%4) and 2(l%4)+1) of matrix q, the lower column in the low
// half; with .trans it receives (rows 2(l%4) and 2(l%4)+1, col l/4), the same fragment of the transposed
// matrix. Every lane of the warp must call it.
inline void emu_ldmatrix_x4(unsigned* r, const void* row_address, bool trans) {
  unsigned t = threadIdx.x, base = t / 32 * 32, lane = t % 32, h = emu::next_half();
  if (reinterpret_cast<uintptr_t>(row_address) % 16) emu::fail("ldmatrix row address not 16-byte aligned");
  emu::ldmatrix_rows[h][t] = static_cast<const unsigned char*>(row_address);
  emu::yield(emu::State::at_warp_barrier);
  if (lane == 0)
    for (unsigned q = 0; q < 4; ++q) {
      unsigned groups = 0;
      for (unsigned i = 0; i < 8; ++i) groups |= 1u << (reinterpret_cast<uintptr_t>(emu::ldmatrix_rows[h][base + 8 * q + i]) / 16 % 8);
      emu::ldmatrix_bank_conflicts += groups != 0xffu;
    }
  auto elem = [&](unsigned q, unsigned row, unsigned col) {
    unsigned short v;
    std::memcpy(&v, emu::ldmatrix_rows[h][base + 8 * q + row] + 2 * col, 2);
    return (unsigned)v;
  };
  for (unsigned q = 0; q < 4; ++q) {
    unsigned lo, hi;
    if (trans) {
      lo = elem(q, 2 * (lane % 4), lane / 4);
      hi = elem(q, 2 * (lane % 4) + 1, lane / 4);
    } else {
      lo = elem(q, lane / 4, 2 * (lane % 4));
      hi = elem(q, lane / 4, 2 * (lane % 4) + 1);
    }
    r[q] = lo | hi << 16;
  }
}

// Runs `kernel()` over grid (gx, gy, gz) with `threads` (at most 1024) per block, cooperatively.
template <class F>
void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned threads, F kernel) {
  emu::run_grid("(emu_launch)", {gx, gy, gz}, threads, true, [](void* f) { (*static_cast<F*>(f))(); }, &kernel);
}
