// Shared description of an MSR-net (config + weights) for the CPU and CUDA engines.
// Weights are float32 in PyTorch layout: conv weight (out, in, kh, kw), bias (out).
// Names and shapes mirror src/msrnet_napari/config.py::parameter_shapes.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace msrnet {

constexpr int kChannels = 3;

struct ModelSpec {
    std::vector<float> log_bases;  // v_j, n = size()
    int depth = 10;                // K
    int width = 32;                // filters per f2 conv
    int f1_width = 3;              // channels after f1's 1x1 fusion
    int n_scales() const { return static_cast<int>(log_bases.size()); }
    int receptive_radius() const { return 1 + depth; }
};

struct Weights {
    std::vector<float> f1_fuse_w, f1_fuse_b;  // (f1_width, 3n, 1, 1), (f1_width)
    std::vector<float> f1_conv_w, f1_conv_b;  // (3, f1_width, 3, 3), (3)
    std::vector<std::vector<float>> f2_w;     // depth x (width, 3|width, 3, 3)
    std::vector<std::vector<float>> f2_b;     // depth x (width)
    std::vector<float> f2_fuse_w, f2_fuse_b;  // (3, depth*width, 1, 1), (3)
    std::vector<float> f3_w, f3_b;            // (3, 3, 1, 1), (3)
};

// Called after each finished tile with (done, total); return false to cancel.
using ProgressFn = std::function<bool(int done, int total)>;

// Thrown by an engine when the progress callback asked to stop.
struct Cancelled : std::runtime_error {
    Cancelled() : std::runtime_error("enhancement cancelled") {}
};

// Throws std::invalid_argument when a weight vector's size does not match the spec.
void validate(const ModelSpec& spec, const Weights& w);

}  // namespace msrnet
