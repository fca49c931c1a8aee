// CPU engine: weight packing, tiling with halo, and the per-tile forward pass.
//
// Tiling and halo.  The image is cut into output tiles of `tile` x `tile`
// (msrnet/tiling.h: TileGrid, for_each_tile, shared with the CUDA engine).
// Every 3x3 convolution needs one more pixel of context, and the network has
// R = 1 + depth of them (f1.conv and the K convs of f2), so a tile is computed
// from its "region": the tile grown by R pixels, clipped to the image.  Inside
// the region, 3x3 conv number l (l = 1..R) is evaluated only on the tile grown
// by R - l (clipped): values near a region side that is not an image side
// become wrong one pixel per layer, and this shrinking rectangle computes
// exactly the pixels that are still right.  On image sides the map's zero
// border ring plays PyTorch's zero padding.  The last conv covers the tile
// itself, so tiled output equals untiled output.  (Only float rounding may
// differ, by ~1e-7: the Winograd tile grid starts at each layer's rectangle.)
//
// Per tile the engine holds: the f1 fusion map F (f1_width channels), X1 (3
// channels in 8 slots), two ping-pong maps for H_m (width rounded up to 8), and
// the f2 fusion accumulator for the tile (3 floats / pixel); H_1..H_K are folded
// into that accumulator as soon as they are computed, never stored together.
// Scratch buffers only grow, so they are reused across tiles and runs.
#include "engine_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.h"
#include "msrnet/tiling.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace msrnet {
namespace {

using kernels::MapView;
using kernels::PackedConv;
using kernels::Rect;
using kernels::round_up;
constexpr int kBlock = kernels::kBlock;

// ------------------------------------------------------------- ISA selection
bool cpu_has_avx2() {
#if defined(MSRNET_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

bool cpu_has_avx512() {
#if defined(MSRNET_HAVE_AVX512) && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           cpu_has_avx2();
#else
    return false;
#endif
}

const kernels::KernelTable& select_kernels() {
    // MSRNET_SIMD=generic|avx2|avx512 caps the level (for tests and debugging).
    const char* env = std::getenv("MSRNET_SIMD");
    const std::string cap = env ? env : "avx512";
#if defined(MSRNET_HAVE_AVX512)
    if (cap == "avx512" && cpu_has_avx512()) return kernels::avx512::table();
#endif
#if defined(MSRNET_HAVE_AVX2)
    if ((cap == "avx512" || cap == "avx2") && cpu_has_avx2()) return kernels::avx2::table();
#endif
    return kernels::generic::table();
}

// Winograd tile for the width->width convs: MSRNET_WINOGRAD=0 (direct), 2 or 4 (default).
int winograd_tile() {
    const char* env = std::getenv("MSRNET_WINOGRAD");
    const std::string v = env ? env : "4";
    return v == "0" ? 0 : v == "2" ? 2 : 4;
}

int resolve_threads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : std::max(1, omp_get_num_procs());
#else
    (void)threads;
    return 1;
#endif
}

// --------------------------------------------------------------- weight packing
// PyTorch (cout, cin, 3, 3) -> direct [9][cin_slots][cout_p] (+ Winograd U).
PackedConv pack_conv(const std::vector<float>& w, const std::vector<float>& b, int cout, int cin,
                     int cin_slots, int wino_m) {
    PackedConv pc;
    pc.cin = cin_slots;
    pc.cout_p = round_up(cout, kBlock);
    pc.w.assign(static_cast<size_t>(9) * cin_slots * pc.cout_p, 0.0f);
    pc.b.assign(pc.cout_p, 0.0f);
    for (int co = 0; co < cout; ++co) {
        pc.b[co] = b[co];
        for (int ci = 0; ci < cin; ++ci)
            for (int t = 0; t < 9; ++t)
                pc.w[(static_cast<size_t>(t) * cin_slots + ci) * pc.cout_p + co] =
                    w[(static_cast<size_t>(co) * cin + ci) * 9 + t];
    }
    if (wino_m == 2 || wino_m == 4) {
        // U = G g G^T in double; G is (m+2) x 3.
        static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
        static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                        {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                        {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                        {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                        {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                        {0, 0, 1}};
        const int A = wino_m + 2;
        auto G = [&](int i, int j) { return wino_m == 2 ? G2[i][j] : G4[i][j]; };
        pc.wino_m = wino_m;
        pc.wino.assign(static_cast<size_t>(A * A) * cin_slots * pc.cout_p, 0.0f);
        for (int co = 0; co < cout; ++co)
            for (int ci = 0; ci < cin; ++ci) {
                const float* g = &w[(static_cast<size_t>(co) * cin + ci) * 9];
                double gt[6][3];  // G g
                for (int i = 0; i < A; ++i)
                    for (int j = 0; j < 3; ++j)
                        gt[i][j] = G(i, 0) * g[j] + G(i, 1) * g[3 + j] + G(i, 2) * g[6 + j];
                for (int i = 0; i < A; ++i)
                    for (int j = 0; j < A; ++j) {
                        const double u = gt[i][0] * G(j, 0) + gt[i][1] * G(j, 1) + gt[i][2] * G(j, 2);
                        pc.wino[(static_cast<size_t>(i * A + j) * cin_slots + ci) * pc.cout_p + co] =
                            static_cast<float>(u);
                    }
            }
    }
    return pc;
}

Rect shift(const Rect& r, int dy, int dx) { return Rect{r.y0 - dy, r.y1 - dy, r.x0 - dx, r.x1 - dx}; }

// Zero the border ring(s) of a map (see kernels.h for the layout).
void zero_border(const MapView& m) {
    const size_t rs = m.row_stride();
    std::memset(m.data, 0, rs * sizeof(float));                                   // row -1
    const int after = MapView::kPad - 1;                                          // rows h.., cols w..
    std::memset(m.data + static_cast<size_t>(m.h + 1) * rs, 0, after * rs * sizeof(float));
    for (int y = 0; y < m.h; ++y) {
        std::memset(m.at(y, -1), 0, m.cp * sizeof(float));
        std::memset(m.at(y, m.w), 0, after * m.cp * sizeof(float));
    }
}

MapView make_map(std::vector<float>& storage, int h, int w, int cp) {
    const size_t n = MapView::floats_for(h, w, cp);
    if (storage.size() < n) {
        storage.clear();
        storage.shrink_to_fit();
        storage.resize(n);
    }
    MapView m{storage.data(), h, w, cp};
    zero_border(m);
    return m;
}

}  // namespace

const char* simd_level() { return select_kernels().name; }

struct CpuEngine::Impl {
    ModelSpec spec;
    const kernels::KernelTable* k = nullptr;
    int wino_m = 4;  // Winograd tile of the width->width convs (0 = direct)
    int cp = 0;  // width rounded up to kBlock

    // f1
    std::vector<float> bases, inv_log;    // v_j and 1 / log1p(v_j)
    std::vector<float> f1_fuse_w, f1_fuse_b;
    PackedConv f1_conv;                   // f1_width -> 3 (8 slots)
    // f2
    std::vector<PackedConv> f2;           // conv m: (3 | cp) -> cp
    std::vector<std::vector<float>> fuse; // per conv m: [3][cp] slice of f2.fuse.weight
    std::vector<float> fuse_b;
    // f3
    std::vector<float> f3_w, f3_b;

    // scratch, reused across tiles
    std::vector<float> buf_f, buf_x1, buf_a, buf_b, acc;
    std::mutex mutex;

    void forward_tile(const float* in, float* out, int H, int W, const Tile& tile, int threads);
};

CpuEngine::CpuEngine(const ModelSpec& spec, const Weights& w) : impl_(new Impl) {
    validate(spec, w);
    Impl& s = *impl_;
    s.spec = spec;
    s.k = &select_kernels();
    s.wino_m = winograd_tile();
    const int c = kChannels, K = spec.depth, wd = spec.width;
    s.cp = round_up(wd, kBlock);

    for (float v : spec.log_bases) {
        s.bases.push_back(v);
        s.inv_log.push_back(1.0f / std::log1p(v));  // float, like the torch buffer
    }
    s.f1_fuse_w = w.f1_fuse_w;
    s.f1_fuse_b = w.f1_fuse_b;
    s.f1_conv = pack_conv(w.f1_conv_w, w.f1_conv_b, c, spec.f1_width, spec.f1_width, 0);
    for (int m = 0; m < K; ++m) {
        const bool first = m == 0;
        // width->width convs read all cp slots (padded ones are zero) so that the
        // Winograd path sees whole channel blocks.
        s.f2.push_back(pack_conv(w.f2_w[m], w.f2_b[m], wd, first ? c : wd, first ? c : s.cp,
                                 first ? 0 : s.wino_m));
        std::vector<float> fw(static_cast<size_t>(3) * s.cp, 0.0f);
        for (int k = 0; k < c; ++k)
            for (int ch = 0; ch < wd; ++ch)
                fw[static_cast<size_t>(k) * s.cp + ch] =
                    w.f2_fuse_w[static_cast<size_t>(k) * K * wd + static_cast<size_t>(m) * wd + ch];
        s.fuse.push_back(std::move(fw));
    }
    s.fuse_b = w.f2_fuse_b;
    s.f3_w = w.f3_w;
    s.f3_b = w.f3_b;
}

CpuEngine::~CpuEngine() = default;

int CpuEngine::receptive_radius() const { return impl_->spec.receptive_radius(); }

void CpuEngine::Impl::forward_tile(const float* in, float* out, int H, int W, const Tile& tile,
                                   int threads) {
    const int R = spec.receptive_radius(), n = spec.n_scales(), f = spec.f1_width;
    const Rect o = tile.out, g = tile.region;  // image coordinates; g = o grown by R, clipped
    const int hr = g.height(), wr = g.width();
    // Rectangle of 3x3 conv number l (1..R), in region coordinates.
    auto conv_rect = [&](int l) { return shift(grow_clip(o, R - l, H, W), g.y0, g.x0); };

    const MapView F = make_map(buf_f, hr, wr, f);
    const MapView X1 = make_map(buf_x1, hr, wr, kBlock);
    MapView A = make_map(buf_a, hr, wr, cp);
    MapView B = make_map(buf_b, hr, wr, cp);

    // f1: multi-scale log (scale-major), 1x1 fusion, ReLU, on the whole region.
    const kernels::F1Params f1p{bases.data(), inv_log.data(), n, f1_fuse_w.data(),
                                f1_fuse_b.data(), f};
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        std::vector<float> scratch(static_cast<size_t>(n) * kChannels * wr);
#pragma omp for schedule(static)
        for (int y = 0; y < hr; ++y) {
            const float* src = in + (static_cast<size_t>(g.y0 + y) * W + g.x0) * kChannels;
            k->f1_row(f1p, src, wr, F.at(y, 0), F.cp, scratch.data());
        }
    }

    k->conv3x3(f1_conv, F, X1, conv_rect(1), false, nullptr, false, threads);

    // f2, with H_m folded into the fusion accumulator of the tile.
    const int th = o.height(), tw = o.width();
    acc.assign(static_cast<size_t>(th) * tw * 3, 0.0f);
    kernels::FuseTarget ft;
    ft.acc = acc.data();
    ft.rect = shift(o, g.y0, g.x0);
    const MapView* src = &X1;
    for (int m = 0; m < spec.depth; ++m) {
        MapView& dst = (m % 2 == 0) ? A : B;
        ft.w = fuse[m].data();
        k->conv3x3(f2[m], *src, dst, conv_rect(m + 2), true, &ft, wino_m != 0, threads);
        src = &dst;
    }

    // X2 = X1 - (fuse_b + acc); Y = f3(X2), written to the output tile.
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int y = 0; y < th; ++y) {
        for (int x = 0; x < tw; ++x) {
            const float* x1 = X1.at(o.y0 - g.y0 + y, o.x0 - g.x0 + x);
            const float* a = &acc[(static_cast<size_t>(y) * tw + x) * 3];
            float x2[kChannels];
            for (int c = 0; c < kChannels; ++c) x2[c] = x1[c] - (fuse_b[c] + a[c]);
            float* dst = out + (static_cast<size_t>(o.y0 + y) * W + o.x0 + x) * kChannels;
            for (int c = 0; c < kChannels; ++c) {
                float v = f3_b[c];
                for (int i = 0; i < kChannels; ++i) v += f3_w[c * kChannels + i] * x2[i];
                dst[c] = v;
            }
        }
    }
}

void CpuEngine::run(const float* in, float* out, int H, int W, int tile, int threads,
                    const ProgressFn& progress) {
    if (tile < 1) throw std::invalid_argument("tile must be >= 1");
    if (threads < 0) throw std::invalid_argument("threads must be >= 0");
    const TileGrid grid(H, W, tile, impl_->spec.receptive_radius());  // checks H, W
    if (grid.count() == 0) return;
    std::lock_guard<std::mutex> lock(impl_->mutex);
    const int nthreads = resolve_threads(threads);
    for_each_tile(grid, progress, [&](const Tile& t) {
        impl_->forward_tile(in, out, H, W, t, nthreads);
    });
}

}  // namespace msrnet
