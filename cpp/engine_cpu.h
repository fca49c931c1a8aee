// CPU forward pass of MSR-net: tiling, f1 / f3 point-wise stages, and the
// sequence of 3x3 convolutions delegated to the SIMD kernels (kernels.h).
#pragma once

#include <memory>

#include "msrnet/model.h"

namespace msrnet {

// Name of the kernel set the CPU engine uses on this machine:
// "avx512", "avx2" or "generic".  MSRNET_SIMD=<name> forces a lower level.
const char* simd_level();

class CpuEngine {
public:
    CpuEngine(const ModelSpec& spec, const Weights& weights);
    ~CpuEngine();
    CpuEngine(const CpuEngine&) = delete;
    CpuEngine& operator=(const CpuEngine&) = delete;

    // in/out: H x W x 3 float32, C-contiguous.  tile >= 1 is the output tile edge;
    // threads = 0 uses every core.  progress runs on the calling thread after each
    // tile; returning false throws Cancelled.  Not reentrant (one run at a time).
    void run(const float* in, float* out, int H, int W, int tile, int threads,
             const ProgressFn& progress);

    int receptive_radius() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace msrnet
