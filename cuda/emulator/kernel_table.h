// The emulator's kernel table: each kernels/cu module is compiled for the host in its own translation
// unit (kernels/<module>.cpp, so the modules' macros cannot collide) and registers its kernels here.
// A launch unpacks the driver's `void** kernelParams` by the kernel's own C parameter types, deduced
// from its function pointer, so the parameter list is never written down twice.
#pragma once
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../kernels/emu/cuda_threads.h"

namespace emulator {

struct KernelEntry {
  const char* name;
  // Whether the kernel synchronises its block (__syncthreads, warp shuffles, mma.sync): such kernels
  // run each block as fibers; the others run every thread as a plain call (and abort at a barrier).
  bool cooperative;
  // False (and nothing run) when a pointer argument is not inside a live allocation.
  bool (*launch)(const KernelEntry& self, void** params, EmuDim3 grid, unsigned threads);
};

// Whether a non-null pointer argument points into a live device allocation (set by driver.cpp).
bool valid_device_pointer(const void* p);

std::vector<KernelEntry>& kernel_table();

template <auto F>
struct Launch;

template <class... A, void (*F)(A...)>
struct Launch<F> {
  using Args = std::tuple<std::remove_cvref_t<A>...>;

  template <std::size_t... I>
  static void unpack(Args& args, void** params, std::index_sequence<I...>) {
    // memcpy: the driver API gives no alignment promise for the argument storage.
    (std::memcpy(&std::get<I>(args), params[I], sizeof(std::get<I>(args))), ...);
  }

  template <class T>
  static bool pointer_ok(const T& arg) {
    if constexpr (std::is_pointer_v<T>) return arg == nullptr || valid_device_pointer(arg);
    else return true;
  }

  static bool run(const KernelEntry& self, void** params, EmuDim3 grid, unsigned threads) {
    Args args;
    unpack(args, params, std::index_sequence_for<A...>{});
    // A stale or foreign pointer would fault on the GPU; here it would scribble over host memory.
    if (!std::apply([](const auto&... a) { return (pointer_ok(a) && ...); }, args)) return false;
    emu::run_grid(self.name, grid, threads, self.cooperative, [](void* p) { std::apply(F, *static_cast<Args*>(p)); }, &args);
    return true;
  }
};

struct Register {
  Register(std::initializer_list<KernelEntry> entries) {
    for (const auto& e : entries) kernel_table().push_back(e);
  }
};

}  // namespace emulator

#define EMU_KERNEL(fn, cooperative) \
  emulator::KernelEntry { #fn, cooperative, &emulator::Launch<&fn>::run }
#define GRID_STRIDE_KERNEL(fn) EMU_KERNEL(fn, false)
#define BLOCK_KERNEL(fn) EMU_KERNEL(fn, true)
