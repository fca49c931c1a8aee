// msrnet::validate: check a Weights struct against its ModelSpec (sizes only).
#include <cmath>
#include <string>

#include "msrnet/model.h"

namespace msrnet {
namespace {

void expect(const std::vector<float>& v, size_t n, const std::string& name) {
    if (v.size() != n) {
        throw std::invalid_argument("weight " + name + " has " + std::to_string(v.size()) +
                                    " values, expected " + std::to_string(n));
    }
}

}  // namespace

void validate(const ModelSpec& spec, const Weights& w) {
    if (spec.n_scales() < 1) throw std::invalid_argument("log_bases must not be empty");
    for (float v : spec.log_bases) {
        if (!(v > 0.0f) || !std::isfinite(v))
            throw std::invalid_argument("log_bases must all be finite and > 0");
    }
    if (spec.depth < 1 || spec.width < 1 || spec.f1_width < 1)
        throw std::invalid_argument("depth, width and f1_width must be positive");

    const size_t c = kChannels, n3 = c * spec.n_scales(), f = spec.f1_width;
    const size_t wd = spec.width, k = spec.depth;
    expect(w.f1_fuse_w, f * n3, "f1.fuse.weight");
    expect(w.f1_fuse_b, f, "f1.fuse.bias");
    expect(w.f1_conv_w, c * f * 9, "f1.conv.weight");
    expect(w.f1_conv_b, c, "f1.conv.bias");
    if (w.f2_w.size() != k || w.f2_b.size() != k)
        throw std::invalid_argument("f2.convs: expected " + std::to_string(k) + " layers");
    for (size_t m = 0; m < k; ++m) {
        const std::string p = "f2.convs." + std::to_string(m);
        expect(w.f2_w[m], wd * (m == 0 ? c : wd) * 9, p + ".weight");
        expect(w.f2_b[m], wd, p + ".bias");
    }
    expect(w.f2_fuse_w, c * k * wd, "f2.fuse.weight");
    expect(w.f2_fuse_b, c, "f2.fuse.bias");
    expect(w.f3_w, c * c, "f3.weight");
    expect(w.f3_b, c, "f3.bias");
}

}  // namespace msrnet
