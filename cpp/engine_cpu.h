// CPU forward pass of MSR-net: tiling, f1 / f3 point-wise stages, and the
// sequence of 3x3 convolutions delegated to the SIMD kernels (kernels.h).
#pragma once

#include <memory>

#include "msrnet/model.h"

namespace msrnet {

// Name of the kernel set the CPU engine uses on this machine:
// "avx512", "avx2" or "generic".  MSRNET_SIMD=<name> forces a lower level.
const char* simd_level();

// How run() splits an image (engine_cpu.cpp, "work split"): the tile edge it
// uses (<= the requested one), the tile count and the threads it starts.
struct RunPlan {
    int tile = 0, tiles = 0, threads = 1;
};
// threads >= 1 (resolved), cores = the machine's.  Does not depend on threads
// except for RunPlan::threads.
RunPlan plan_run(int H, int W, int tile, int threads, int halo, int cores);
// Processors the engine may use (omp_get_num_procs; 1 without OpenMP).
int cpu_count();

class CpuEngine {
public:
    CpuEngine(const ModelSpec& spec, const Weights& weights);
    ~CpuEngine();
    CpuEngine(const CpuEngine&) = delete;
    CpuEngine& operator=(const CpuEngine&) = delete;

    // in/out: H x W x 3 float32, C-contiguous.  tile >= 1 is the largest output
    // tile edge (plan_run may cut it smaller); threads = 0 uses every core, and
    // plan_run may use fewer.  progress runs on the calling thread, once per
    // finished tile (done = 1..total, in order); returning false stops starting
    // tiles and throws Cancelled; its exceptions propagate once the threads are
    // done.  Output is bit-identical for any `threads`.  One run at a time.
    void run(const float* in, float* out, int H, int W, int tile, int threads,
             const ProgressFn& progress);

    int receptive_radius() const;
    // The tile edge for this net on this machine (cache sizes; engine_cpu.cpp).
    int default_tile() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace msrnet
