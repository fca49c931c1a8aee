// CUDA inference engine for MSR-net (optional; compiled only with MSRNET_WITH_CUDA).
//
// Plain C++ header: no CUDA headers here (pimpl), so cpp/bindings.cpp can include it
// with an ordinary C++ compiler. Semantics are those of the PyTorch reference
// src/msrnet_napari/training/model.py and of the CPU engine: fp32, zero padding at the image
// borders, tiles carry a halo of spec.receptive_radius() pixels so tiled == untiled,
// raw (unclipped) output.
#pragma once

#include <memory>

#include "msrnet/model.h"

namespace msrnet::cuda {

// Number of usable CUDA devices; 0 when there is no driver or GPU. Never throws.
int device_count();

// Arithmetic of the 32 -> 32 (and 16 -> 16) 3x3 convolutions of f2, the bulk of the work.
// FP32: plain fp32 FMAs (the default; agrees with the CPU engine to ~1e-6).
// TF32: tensor cores (WMMA, compute capability >= 8.0): the convolution's inputs and weights
// are rounded to TF32 (10-bit mantissa), products accumulate in fp32. Every other layer
// stays fp32. Where the device or the width cannot take it, the engine runs FP32
// (precision() says which ran). Accuracy bound: cpp/cuda/standalone_test.cu.
enum class Precision { FP32, TF32 };

class CudaEngine {
public:
    // Uploads the weights to `device`. Throws std::invalid_argument on a spec/weights
    // mismatch and std::runtime_error on CUDA errors (no device, out of memory, ...).
    CudaEngine(const ModelSpec& spec, const Weights& weights, int device = 0,
               Precision precision = Precision::FP32);
    ~CudaEngine();
    CudaEngine(const CudaEngine&) = delete;
    CudaEngine& operator=(const CudaEngine&) = delete;

    // in/out: host float32 H x W x 3, C-contiguous; they must not overlap.
    // tile <= 0 processes the whole image as one tile. progress(done, total) is
    // called from the calling thread after every finished tile; returning false
    // throws msrnet::Cancelled. Device buffers are kept between calls (grown as
    // needed). Calls on one engine are serialised internally.
    void run(const float* in, float* out, int H, int W, int tile, const ProgressFn& progress);

    int device() const;
    int receptive_radius() const;
    Precision precision() const;  // the one the engine uses (TF32 requested may give FP32)

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace msrnet::cuda
