// The one C++ description of an MSR-net, used by the bindings, the CPU engine and
// the CUDA engine (header-only, so cpp/cuda/standalone_test.cu needs nothing else).
//
//   for_each_config_field  the config fields the engine reads (ModelSpec), by name
//   for_each_parameter     the layer table: every weight's state-dict name and shape
//                          (a function of the ModelSpec) and where it lives in Weights
//   validate               spec and weight sizes against that table
//
// The Python side of the same rule is src/msrnet_napari/config.py
// (ARCHITECTURE_KEYS, parameter_shapes); tests/test_engine.py checks that the two
// tables agree through _core.parameter_shapes. Adding a layer or a config field
// touches config.py and this file.
//
// Weights are float32 in PyTorch layout: conv weight (out, in, kh, kw), bias (out).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace msrnet {

constexpr int kChannels = 3;

// The architecture (config.ARCHITECTURE_KEYS). No defaults: every field comes
// from the caller's config (the defaults live in config.MSRNetConfig).
struct ModelSpec {
    std::vector<float> log_bases;  // v_j, n = size()
    int depth = 0;                 // K, 3x3 convolutions in f2
    int width = 0;                 // filters per f2 conv
    int f1_width = 0;              // channels after f1's 1x1 fusion
    int n_scales() const { return static_cast<int>(log_bases.size()); }
    int receptive_radius() const { return 1 + depth; }
};

// Visits the config fields of `spec` (ModelSpec or const ModelSpec) in
// config.ARCHITECTURE_KEYS order: fn(name, field), field an int& or a
// std::vector<float>&. Python's limit of a field is config.MAX_<NAME>, on the
// value of an int field and on the length of a list field.
template <class SpecT, class Fn>
void for_each_config_field(SpecT& spec, Fn&& fn) {
    static_assert(std::is_same_v<std::remove_const_t<SpecT>, ModelSpec>);
    fn("log_bases", spec.log_bases);
    fn("depth", spec.depth);
    fn("width", spec.width);
    fn("f1_width", spec.f1_width);
}

struct Weights {
    std::vector<float> f1_fuse_w, f1_fuse_b;
    std::vector<float> f1_conv_w, f1_conv_b;
    std::vector<std::vector<float>> f2_w, f2_b;  // depth entries each
    std::vector<float> f2_fuse_w, f2_fuse_b;
    std::vector<float> f3_w, f3_b;
};

using Shape = std::vector<int64_t>;

inline size_t element_count(const Shape& shape) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
}

// The layer table. Visits every parameter of the net with this spec in forward
// (state-dict) order: fn(name, shape, values), values the std::vector<float> of
// `w` (Weights or const Weights) that holds it. A mutable Weights gets its f2
// lists sized to spec.depth first; a const one must have them (validate checks).
template <class WeightsT, class Fn>
void for_each_parameter(const ModelSpec& spec, WeightsT& w, Fn&& fn) {
    static_assert(std::is_same_v<std::remove_const_t<WeightsT>, Weights>);
    if constexpr (!std::is_const_v<WeightsT>) {
        w.f2_w.resize(spec.depth);
        w.f2_b.resize(spec.depth);
    }
    const int64_t c = kChannels, n3 = c * spec.n_scales(), f = spec.f1_width;
    const int64_t wd = spec.width, k = spec.depth;
    fn(std::string("f1.fuse.weight"), Shape{f, n3, 1, 1}, w.f1_fuse_w);
    fn(std::string("f1.fuse.bias"), Shape{f}, w.f1_fuse_b);
    fn(std::string("f1.conv.weight"), Shape{c, f, 3, 3}, w.f1_conv_w);
    fn(std::string("f1.conv.bias"), Shape{c}, w.f1_conv_b);
    for (int64_t m = 0; m < k; ++m) {
        const std::string p = "f2.convs." + std::to_string(m);
        fn(p + ".weight", Shape{wd, m == 0 ? c : wd, 3, 3}, w.f2_w[m]);
        fn(p + ".bias", Shape{wd}, w.f2_b[m]);
    }
    fn(std::string("f2.fuse.weight"), Shape{c, k * wd, 1, 1}, w.f2_fuse_w);
    fn(std::string("f2.fuse.bias"), Shape{c}, w.f2_fuse_b);
    fn(std::string("f3.weight"), Shape{c, c, 1, 1}, w.f3_w);
    fn(std::string("f3.bias"), Shape{c}, w.f3_b);
}

// (name, shape) of every parameter, in state-dict order (config.parameter_shapes).
inline std::vector<std::pair<std::string, Shape>> parameter_shapes(const ModelSpec& spec) {
    std::vector<std::pair<std::string, Shape>> out;
    Weights scratch;
    for_each_parameter(spec, scratch, [&](const std::string& name, const Shape& shape,
                                          std::vector<float>&) { out.emplace_back(name, shape); });
    return out;
}

// Throws std::invalid_argument unless the spec describes a net (log_bases
// non-empty, finite and > 0; depth, width, f1_width >= 1). Upper limits are the
// caller's (the bindings take them from msrnet_napari.config.MAX_*).
inline void validate(const ModelSpec& spec) {
    if (spec.n_scales() < 1) throw std::invalid_argument("log_bases must not be empty");
    for (float v : spec.log_bases)
        if (!(v > 0.0f) || !std::isfinite(v))
            throw std::invalid_argument("log_bases must all be finite and > 0");
    if (spec.depth < 1 || spec.width < 1 || spec.f1_width < 1)
        throw std::invalid_argument("depth, width and f1_width must be positive");
}

// validate(spec), then every weight's size against the layer table.
inline void validate(const ModelSpec& spec, const Weights& w) {
    validate(spec);
    if (w.f2_w.size() != static_cast<size_t>(spec.depth) ||
        w.f2_b.size() != static_cast<size_t>(spec.depth))
        throw std::invalid_argument("f2.convs: expected " + std::to_string(spec.depth) +
                                    " layers, got " + std::to_string(w.f2_w.size()) +
                                    " weights and " + std::to_string(w.f2_b.size()) + " biases");
    for_each_parameter(spec, w, [](const std::string& name, const Shape& shape,
                                   const std::vector<float>& values) {
        const size_t n = element_count(shape);
        if (values.size() != n)
            throw std::invalid_argument("weight " + name + " has " +
                                        std::to_string(values.size()) + " values, expected " +
                                        std::to_string(n));
    });
}

// Called after each finished tile with (done, total); return false to cancel.
using ProgressFn = std::function<bool(int done, int total)>;

// Thrown by an engine when the progress callback asked to stop.
struct Cancelled : std::runtime_error {
    Cancelled() : std::runtime_error("enhancement cancelled") {}
};

}  // namespace msrnet
