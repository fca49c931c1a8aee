// Standalone check of msrnet::cuda::CudaEngine against a naive double-precision CPU
// reference written here (no Python, no CPU engine needed).
//
// On a GPU machine:
//   nvcc -std=c++17 -O3 -arch=sm_90 -I cpp/include -I cpp/cuda
//        cpp/cuda/cuda_engine.cu cpp/cuda/standalone_test.cu -o /tmp/msrnet_cuda_test
//   /tmp/msrnet_cuda_test          # parity cases + timings; exit code 0 = all passed
// Without a GPU (CPU emulation of the kernels, see cuda_emulation.h):
//   g++ -std=c++17 -O1 -pthread -x c++ -DMSRNET_CUDA_EMULATE -I cpp/include -I cpp/cuda
//       cpp/cuda/cuda_engine.cu cpp/cuda/standalone_test.cu -o /tmp/msrnet_cuda_emu
//   /tmp/msrnet_cuda_emu
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_engine.h"

using msrnet::ModelSpec;
using msrnet::Weights;

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("[%s] %s\n", ok ? " OK " : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!ok) ++g_failures;
}

std::vector<float> randn(std::mt19937& rng, size_t n, float std) {
    std::normal_distribution<float> d(0.f, std);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

Weights random_weights(const ModelSpec& s, unsigned seed) {
    std::mt19937 rng(seed);
    const int n3 = 3 * s.n_scales(), F = s.f1_width, Wd = s.width, K = s.depth;
    Weights w;
    w.f1_fuse_w = randn(rng, static_cast<size_t>(F) * n3, std::sqrt(2.f / n3));
    w.f1_fuse_b = randn(rng, F, 0.01f);
    w.f1_conv_w = randn(rng, 3 * static_cast<size_t>(F) * 9, std::sqrt(2.f / (F * 9)));
    w.f1_conv_b = randn(rng, 3, 0.01f);
    for (int m = 0; m < K; ++m) {
        const int cin = m == 0 ? 3 : Wd;
        w.f2_w.push_back(randn(rng, static_cast<size_t>(Wd) * cin * 9, std::sqrt(2.f / (cin * 9))));
        w.f2_b.push_back(randn(rng, Wd, 0.01f));
    }
    w.f2_fuse_w = randn(rng, 3 * static_cast<size_t>(K) * Wd, 0.1f * std::sqrt(2.f / (K * Wd)));
    w.f2_fuse_b = randn(rng, 3, 0.01f);
    w.f3_w = randn(rng, 9, 0.3f);
    for (int i = 0; i < 3; ++i) w.f3_w[i * 4] += 1.f;
    w.f3_b = randn(rng, 3, 0.01f);
    return w;
}

std::vector<float> random_image(int H, int W, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(0.f, 1.f);
    std::vector<float> v(static_cast<size_t>(H) * W * 3);
    for (auto& x : v) x = d(rng);
    return v;
}

// planar double maps: [c][y][x]
using Map = std::vector<double>;

Map conv3x3(const Map& in, int Cin, int H, int W, const std::vector<float>& w,
            const std::vector<float>& b, int Cout, bool relu) {
    const size_t P = static_cast<size_t>(H) * W;
    Map out(Cout * P);
    for (int o = 0; o < Cout; ++o)
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x) {
                double s = b[o];
                for (int c = 0; c < Cin; ++c)
                    for (int ky = 0; ky < 3; ++ky) {
                        const int yy = y + ky - 1;
                        if (yy < 0 || yy >= H) continue;
                        for (int kx = 0; kx < 3; ++kx) {
                            const int xx = x + kx - 1;
                            if (xx < 0 || xx >= W) continue;
                            s += static_cast<double>(w[((static_cast<size_t>(o) * Cin + c) * 3 + ky) * 3 + kx]) *
                                 in[c * P + static_cast<size_t>(yy) * W + xx];
                        }
                    }
                out[o * P + static_cast<size_t>(y) * W + x] = relu ? std::max(s, 0.0) : s;
            }
    return out;
}

std::vector<float> reference(const ModelSpec& s, const Weights& w, const std::vector<float>& img, int H, int W) {
    const size_t P = static_cast<size_t>(H) * W;
    const int n = s.n_scales(), n3 = 3 * n, F = s.f1_width, Wd = s.width, K = s.depth;
    Map Fm(F * P);
    for (size_t p = 0; p < P; ++p) {
        std::vector<double> feat(n3);
        for (int j = 0; j < n; ++j) {
            const float inv = 1.0f / std::log1p(s.log_bases[j]);  // fp32 like torch
            for (int c = 0; c < 3; ++c)
                feat[3 * j + c] = std::log1p(static_cast<double>(s.log_bases[j] * img[3 * p + c])) * inv;
        }
        for (int f = 0; f < F; ++f) {
            double a = w.f1_fuse_b[f];
            for (int k = 0; k < n3; ++k) a += static_cast<double>(w.f1_fuse_w[f * n3 + k]) * feat[k];
            Fm[f * P + p] = std::max(a, 0.0);
        }
    }
    const Map X1 = conv3x3(Fm, F, H, W, w.f1_conv_w, w.f1_conv_b, 3, false);
    Map acc(3 * P, 0.0), h = X1;
    for (int m = 0; m < K; ++m) {
        h = conv3x3(h, m == 0 ? 3 : Wd, H, W, w.f2_w[m], w.f2_b[m], Wd, true);
        for (int o = 0; o < 3; ++o)
            for (int c = 0; c < Wd; ++c) {
                const double fw = w.f2_fuse_w[static_cast<size_t>(o) * K * Wd + m * Wd + c];
                for (size_t p = 0; p < P; ++p) acc[o * P + p] += fw * h[c * P + p];
            }
    }
    std::vector<float> out(3 * P);
    for (size_t p = 0; p < P; ++p) {
        double x2[3];
        for (int c = 0; c < 3; ++c) x2[c] = X1[c * P + p] - (acc[c * P + p] + w.f2_fuse_b[c]);
        for (int o = 0; o < 3; ++o) {
            double y = w.f3_b[o];
            for (int c = 0; c < 3; ++c) y += static_cast<double>(w.f3_w[o * 3 + c]) * x2[c];
            out[3 * p + o] = static_cast<float>(y);
        }
    }
    return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
        if (!(d <= m)) m = d;  // NaN-propagating max
    }
    return m;
}

ModelSpec make_spec(std::vector<float> bases, int depth, int width, int f1w) {
    ModelSpec s;
    s.log_bases = std::move(bases);
    s.depth = depth;
    s.width = width;
    s.f1_width = f1w;
    return s;
}

std::string spec_str(const ModelSpec& s) {
    return "n=" + std::to_string(s.n_scales()) + " K=" + std::to_string(s.depth) +
           " width=" + std::to_string(s.width) + " f1w=" + std::to_string(s.f1_width);
}

using msrnet::cuda::Precision;

// Accuracy bound of the TF32 path: inputs and weights of f2's convolutions rounded to a
// 10-bit mantissa (relative error <= 2^-11 each), fp32 accumulation; against the double
// reference, max |error| <= kTf32Bound x (1 + max |reference|), about 4 TF32 rounding
// steps of the output's scale. Measured in the CPU emulation (round to nearest, exact
// fp32 accumulation): 6e-5 to 8e-5 x (1 + max |reference|) on these random networks, a
// 25th of the bound; the GPU's own accumulation order and rounding may differ.
constexpr double kTf32Bound = 2e-3;

double max_abs(const std::vector<float>& a) {
    double m = 0;
    for (float v : a) m = std::max(m, static_cast<double>(std::fabs(v)));
    return m;
}

void parity_case(const ModelSpec& s, unsigned seed, int H, int W, const std::vector<int>& tiles,
                 bool force_generic = false, Precision precision = Precision::FP32) {
    if (force_generic) setenv("MSRNET_CUDA_GENERIC", "1", 1);
    const Weights w = random_weights(s, seed);
    msrnet::cuda::CudaEngine eng(s, w, 0, precision);
    if (force_generic) unsetenv("MSRNET_CUDA_GENERIC");
    const bool tf32 = eng.precision() == Precision::TF32;
    const auto img = random_image(H, W, seed + 1);
    const auto ref = reference(s, w, img, H, W);
    std::vector<float> first;
    for (int tile : tiles) {
        std::vector<float> out(img.size(), std::nanf(""));
        eng.run(img.data(), out.data(), H, W, tile, nullptr);
        const double d = max_abs_diff(out, ref);
        char buf[256];
        const double bound = tf32 ? kTf32Bound * (1.0 + max_abs(ref)) : 1e-3;
        std::snprintf(buf, sizeof buf, "%s%s%s %dx%d tile=%d: max|cuda-ref| = %.3g (bound %.3g)",
                      spec_str(s).c_str(), force_generic ? " (generic)" : "", tf32 ? " (tf32)" : "",
                      H, W, tile, d, bound);
        check(d <= bound, buf);
        if (first.empty()) {
            first = out;
        } else {
            const double dt = max_abs_diff(out, first);
            std::snprintf(buf, sizeof buf, "   tiled(%d) vs tile=%d: max diff %.3g", tile, tiles[0], dt);
            check(dt <= 1e-5, buf);
        }
    }
}

// The TF32 path against the FP32 path on the same weights and image, and which
// precision an engine reports for widths the tensor-core kernel does not take.
void tf32_cases() {
    const ModelSpec def = make_spec({1, 10, 100, 300}, 4, 32, 3);
    const Weights w = random_weights(def, 31);
    msrnet::cuda::CudaEngine e32(def, w, 0, Precision::FP32), etc(def, w, 0, Precision::TF32);
    check(e32.precision() == Precision::FP32, "FP32 requested -> FP32");
    if (etc.precision() != Precision::TF32) {
        std::printf("[SKIP] device below compute capability 8.0: no TF32 tensor cores\n");
        return;
    }
    const int H = 45, W = 70;
    const auto img = random_image(H, W, 32);
    std::vector<float> a(img.size()), b(img.size());
    e32.run(img.data(), a.data(), H, W, 0, nullptr);
    etc.run(img.data(), b.data(), H, W, 0, nullptr);
    const double d = max_abs_diff(a, b), bound = kTf32Bound * (1.0 + max_abs(a));
    char buf[200];
    std::snprintf(buf, sizeof buf, "tf32 vs fp32 %dx%d: max diff %.3g (bound %.3g), max |out| %.3g", H, W,
                  d, bound, max_abs(a));
    check(d <= bound && d > 0, buf);  // > 0: the tensor-core kernel really ran
    for (int width : {8, 64}) {
        const ModelSpec sw = make_spec({1, 10}, 1, width, 3);
        msrnet::cuda::CudaEngine e(sw, random_weights(sw, 33), 0, Precision::TF32);
        check(e.precision() == Precision::FP32,
              "TF32 requested, width " + std::to_string(width) + " -> FP32 (no tensor-core kernel)");
    }
}

void progress_cases() {
    const ModelSpec s = make_spec({1, 10, 100, 300}, 2, 32, 3);
    const Weights w = random_weights(s, 7);
    msrnet::cuda::CudaEngine eng(s, w, 0);
    const int H = 40, W = 37;
    const auto img = random_image(H, W, 8);
    std::vector<float> full(img.size()), out(img.size());
    eng.run(img.data(), full.data(), H, W, 0, nullptr);

    std::vector<std::pair<int, int>> calls;
    eng.run(img.data(), out.data(), H, W, 16, [&](int d, int t) {
        calls.emplace_back(d, t);
        return true;
    });
    bool seq = calls.size() == 9;
    for (size_t i = 0; i < calls.size(); ++i) seq = seq && calls[i].first == int(i) + 1 && calls[i].second == 9;
    check(seq, "progress called (1..9, 9) once per tile, in order");
    check(max_abs_diff(out, full) <= 1e-5, "tiled with progress == untiled");

    int n = 0;
    bool cancelled = false;
    try {
        eng.run(img.data(), out.data(), H, W, 16, [&](int, int) { return ++n < 3; });
    } catch (const msrnet::Cancelled&) {
        cancelled = true;
    }
    check(cancelled && n == 3, "progress returning false throws Cancelled after that tile");

    bool propagated = false;
    try {
        eng.run(img.data(), out.data(), H, W, 16, [&](int d, int) -> bool {
            if (d == 2) throw std::runtime_error("boom");
            return true;
        });
    } catch (const std::runtime_error& e) {
        propagated = std::string(e.what()) == "boom";
    }
    check(propagated, "exception from progress propagates");

    std::vector<float> again(img.size());
    eng.run(img.data(), again.data(), H, W, 16, nullptr);
    check(max_abs_diff(again, full) <= 1e-5, "engine still usable after cancel");

    bool bad = false;
    try {
        Weights w2 = w;
        w2.f2_w[1].pop_back();
        msrnet::cuda::CudaEngine e2(s, w2, 0);
    } catch (const std::invalid_argument&) {
        bad = true;
    }
    check(bad, "wrong weight size -> std::invalid_argument");
}

void timing(const ModelSpec& s, int N, int tile, int reps, Precision precision = Precision::FP32) {
    const Weights w = random_weights(s, 3);
    msrnet::cuda::CudaEngine eng(s, w, 0, precision);
    const auto img = random_image(N, N, 4);
    std::vector<float> out(img.size());
    eng.run(img.data(), out.data(), N, N, tile, nullptr);  // warm-up (allocations)
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        eng.run(img.data(), out.data(), N, N, tile, nullptr);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    const double med = t[t.size() / 2];
    const double gflop = 2.0 * N * N *
                         (9.0 * 3 * s.width + (s.depth - 1) * 9.0 * s.width * s.width + s.depth * 3.0 * s.width) /
                         1e9;
    std::printf("timing %s %s %dx%d tile=%d: %.4f s median of %d (%.0f GFLOP/s on the f2 convs, "
                "%.3f Gpx/s, host->host)\n",
                spec_str(s).c_str(), eng.precision() == Precision::TF32 ? "tf32" : "fp32", N, N, tile,
                med, reps, gflop / med, 1e-9 * N * N / med);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    const int ndev = msrnet::cuda::device_count();
    std::printf("msrnet CUDA standalone test: %d device(s)\n", ndev);
    if (ndev == 0) {
        std::printf("no CUDA device: nothing to test\n");
        return 2;
    }
    try {
        const ModelSpec paper = make_spec({1, 10, 100, 300}, 3, 32, 3);
        parity_case(paper, 11, 1, 1, {0, 1});
        parity_case(paper, 12, 7, 13, {0, 4, 5});
        parity_case(paper, 13, 37, 70, {0, 16, 33});
        parity_case(paper, 13, 37, 70, {0, 16}, /*force_generic=*/true);
        parity_case(make_spec({2, 50}, 2, 12, 5), 14, 23, 41, {0, 9});           // generic path
        parity_case(make_spec({1, 10, 100}, 1, 16, 10), 15, 19, 33, {0, 8});     // K=1, f1w > 8
        parity_case(make_spec({1, 10, 100, 300}, 2, 8, 3), 16, 21, 36, {0, 7});  // fast, width 8
        parity_case(make_spec({5}, 2, 64, 4), 17, 17, 40, {0, 6});                // fast, width 64
        // > 8 MB per tile: exercises the multi-threaded host staging copies
        parity_case(make_spec({1, 10}, 1, 12, 3), 18, 1100, 1000, {0, 700});
        parity_case(paper, 13, 37, 70, {0, 16, 33}, false, Precision::TF32);
        parity_case(make_spec({1, 10, 100}, 2, 16, 3), 19, 29, 50, {0, 13}, false, Precision::TF32);
        tf32_cases();
        progress_cases();
        if (!quick) {
            const ModelSpec def = make_spec({1, 10, 100, 300}, 10, 32, 3);
            parity_case(def, 21, 257, 511, {0, 100, 256});
            parity_case(def, 22, 64, 96, {0, 30}, /*force_generic=*/true);
            parity_case(def, 23, 257, 511, {0, 100, 256}, false, Precision::TF32);
            timing(def, 1024, 0, 5);
            timing(def, 2048, 0, 5);
            timing(def, 2048, 256, 3);
            timing(def, 4096, 0, 3);
            timing(def, 4096, 2048, 3);
            timing(def, 2048, 0, 5, Precision::TF32);
            timing(def, 4096, 0, 3, Precision::TF32);
            timing(def, 4096, 2048, 3, Precision::TF32);
        }
    } catch (const std::exception& e) {
        std::printf("[FAIL] exception: %s\n", e.what());
        ++g_failures;
    }
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
    return g_failures ? 1 : 0;
}
