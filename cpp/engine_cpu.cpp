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
// Per tile a thread holds (its Workspace): the f1 fusion map F (f1_width
// channels), X1 (3 channels in 8 slots), two ping-pong maps for H_m (width
// rounded up to 8), and the f2 fusion accumulator for the tile (3 floats /
// pixel); H_1..H_K are folded into that accumulator as soon as they are
// computed, never stored together.  Workspaces only grow, so they are reused
// across tiles and runs; memory is threads x one tile's workspace.  How threads
// share the tiles, and how the tile and thread count are chosen: "work split"
// below.  MSRNET_PROFILE=1 prints seconds per layer/stage of each run to stderr
// (benchmarks/profile_engine.py).
#include "engine_cpu.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

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

// Winograd tile for the width->width convs: MSRNET_WINOGRAD=0 (direct), 2, 4 or 6 (default).
int winograd_tile() {
    const char* env = std::getenv("MSRNET_WINOGRAD");
    const std::string v = env ? env : "6";
    return v == "0" ? 0 : v == "2" ? 2 : v == "4" ? 4 : 6;
}

int hardware_threads() {
#ifdef _OPENMP
    return std::max(1, omp_get_num_procs());
#else
    return 1;
#endif
}

int resolve_threads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : hardware_threads();
#else
    (void)threads;
    return 1;
#endif
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Profile stages of forward_tile (MSRNET_PROFILE=1 prints them per run to stderr);
// the kernels' own slots (kernels::ProfSlot) follow kStageKernels.
enum Stage { kStageSetup, kStageF1, kStageF1Conv, kStageConv0, kStageConvs, kStageF3, kStageKernels };
constexpr int kStages = kStageKernels + kernels::kProfSlots;
const char* const kStageNames[kStages] = {
    "setup (maps, border zeroing)", "f1 (logs + 1x1 fuse)", "f1.conv (direct 3x3, f1_width->3)",
    "f2 conv 0 (direct 3->width, +fuse)", "f2 convs 1..K-1 (Winograd, +fuse)", "f3 (+X1 - fuse)",
    "  kernel: direct 3x3 (+fuse)", "  kernel: Winograd input transform", "  kernel: Winograd GEMMs",
    "  kernel: Winograd output transform", "  kernel: 1x1 fuse accumulation"};

bool profiling() {
    const char* env = std::getenv("MSRNET_PROFILE");
    return env && *env && std::string(env) != "0";
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
    if (wino_m == 2 || wino_m == 4 || wino_m == 6) {
        // U = G g G^T in double; G is (m+2) x 3.
        static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
        static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                        {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                        {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                        {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                        {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                        {0, 0, 1}};
        static const double G6[8][3] = {{1, 0, 0},
                                        {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                        {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                        {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                        {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                        {1.0 / 45, 1.0 / 90, 1.0 / 180},
                                        {1.0 / 45, -1.0 / 90, 1.0 / 180},
                                        {0, 0, 1}};
        const int A = wino_m + 2;
        const double(*G)[3] = wino_m == 2 ? G2 : wino_m == 4 ? G4 : G6;
        pc.wino_m = wino_m;
        pc.wino.assign(static_cast<size_t>(A * A) * cin_slots * pc.cout_p, 0.0f);
        for (int co = 0; co < cout; ++co)
            for (int ci = 0; ci < cin; ++ci) {
                const float* g = &w[(static_cast<size_t>(co) * cin + ci) * 9];
                double gt[8][3];  // G g
                for (int i = 0; i < A; ++i)
                    for (int j = 0; j < 3; ++j)
                        gt[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
                for (int i = 0; i < A; ++i)
                    for (int j = 0; j < A; ++j) {
                        const double u = gt[i][0] * G[j][0] + gt[i][1] * G[j][1] + gt[i][2] * G[j][2];
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

// One thread's buffers for one tile at a time (see the header comment): reused
// across tiles and runs, grown to the largest tile seen, never shared.
struct Workspace {
    std::vector<float> buf_f, buf_x1, buf_a, buf_b, acc, f1_scratch, conv_scratch;
    double prof[kStages] = {};  // seconds per Stage (MSRNET_PROFILE=1 only)
};

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

    std::vector<Workspace> workspaces;  // one per thread of the last run (threads x tile)
    std::mutex mutex;                   // one run at a time

    void forward_tile(const float* in, float* out, int H, int W, const Tile& tile,
                      Workspace& ws, bool profile) const;
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
                                   Workspace& ws, bool profile) const {
    const int R = spec.receptive_radius(), n = spec.n_scales(), f = spec.f1_width;
    const Rect o = tile.out, g = tile.region;  // image coordinates; g = o grown by R, clipped
    const int hr = g.height(), wr = g.width();
    // Rectangle of 3x3 conv number l (1..R), in region coordinates.
    auto conv_rect = [&](int l) { return shift(grow_clip(o, R - l, H, W), g.y0, g.x0); };
    double* prof = profile ? ws.prof : nullptr;
    double t = profile ? now_s() : 0.0;
    auto lap = [&](int stage) {
        if (!profile) return;
        const double t1 = now_s();
        prof[stage] += t1 - t;
        t = t1;
    };

    const MapView F = make_map(ws.buf_f, hr, wr, f);
    const MapView X1 = make_map(ws.buf_x1, hr, wr, kBlock);
    MapView A = make_map(ws.buf_a, hr, wr, cp);
    MapView B = make_map(ws.buf_b, hr, wr, cp);
    const size_t scratch_floats = kernels::conv_scratch_floats(cp, cp);
    if (ws.conv_scratch.size() < scratch_floats) ws.conv_scratch.resize(scratch_floats);
    if (ws.f1_scratch.size() < static_cast<size_t>(n) * kChannels * wr)
        ws.f1_scratch.resize(static_cast<size_t>(n) * kChannels * wr);
    const kernels::Scratch scratch{ws.conv_scratch.data(), prof ? prof + kStageKernels : nullptr};
    lap(kStageSetup);

    // f1: multi-scale log (scale-major), 1x1 fusion, ReLU, on the whole region.
    const kernels::F1Params f1p{bases.data(), inv_log.data(), n, f1_fuse_w.data(),
                                f1_fuse_b.data(), f};
    for (int y = 0; y < hr; ++y) {
        const float* src = in + (static_cast<size_t>(g.y0 + y) * W + g.x0) * kChannels;
        k->f1_row(f1p, src, wr, F.at(y, 0), F.cp, ws.f1_scratch.data());
    }
    lap(kStageF1);

    k->conv3x3(f1_conv, F, X1, conv_rect(1), false, nullptr, false, kernels::Scratch{});
    lap(kStageF1Conv);

    // f2, with H_m folded into the fusion accumulator of the tile.
    const int th = o.height(), tw = o.width();
    ws.acc.assign(static_cast<size_t>(th) * tw * 3, 0.0f);
    kernels::FuseTarget ft;
    ft.acc = ws.acc.data();
    ft.rect = shift(o, g.y0, g.x0);
    const MapView* src = &X1;
    for (int m = 0; m < spec.depth; ++m) {
        MapView& dst = (m % 2 == 0) ? A : B;
        ft.w = fuse[m].data();
        k->conv3x3(f2[m], *src, dst, conv_rect(m + 2), true, &ft, wino_m != 0, scratch);
        src = &dst;
        lap(m == 0 ? kStageConv0 : kStageConvs);
    }

    // X2 = X1 - (fuse_b + acc); Y = f3(X2), written to the output tile.
    for (int y = 0; y < th; ++y) {
        for (int x = 0; x < tw; ++x) {
            const float* x1 = X1.at(o.y0 - g.y0 + y, o.x0 - g.x0 + x);
            const float* a = &ws.acc[static_cast<size_t>(y) * tw + x];  // planar, plane th * tw
            float x2[kChannels];
            for (int c = 0; c < kChannels; ++c)
                x2[c] = x1[c] - (fuse_b[c] + a[static_cast<size_t>(c) * th * tw]);
            float* dst = out + (static_cast<size_t>(o.y0 + y) * W + o.x0 + x) * kChannels;
            for (int c = 0; c < kChannels; ++c) {
                float v = f3_b[c];
                for (int i = 0; i < kChannels; ++i) v += f3_w[c * kChannels + i] * x2[i];
                dst[c] = v;
            }
        }
    }
    lap(kStageF3);
}

// ------------------------------------------------------------------ work split
//
// One parallel region per run: each thread takes whole tiles from an atomic
// counter (dynamic scheduling), runs them single-threaded in its own Workspace,
// and never waits for another thread until the region ends.  Memory is threads
// x one tile's workspace.  Each tile is computed the same way whatever thread
// runs it, so the output is bit-identical for any thread count.
//
// plan_run has two rules:
//  * Tile: the requested tile, cut smaller (into the image's height or width
//    over k = 2 .. 2 x cores, >= kMinSplitTile) only when that shortens the
//    estimated run on the machine's cores (as many as the thread rule below
//    would start) by >= 10 %: small images, or fewer (or lopsided) tiles than
//    cores.  It depends on the image,
//    the tile and the machine, never on `threads`, so bit-identity holds.
//  * Threads: min(requested, tiles, work / kMinWorkPerThread): a thread is
//    only started when it gets enough work to outweigh waiting for it on a busy
//    machine, so thin and tiny images (a 1 x 2000 strip) run on one thread.
// Work of a tile = its region's area, rounded up to a grid of 4 pixels (a cost model of
// the Winograd tiles' waste, not the kernels' exact F(6x6) grid).
namespace {

constexpr int kMinSplitTile = 64;
constexpr double kMinWorkPerThread = 128.0 * 128.0;

double tile_work(const Tile& t) {
    return static_cast<double>(round_up(t.region.height(), 4)) * round_up(t.region.width(), 4);
}

double total_work(const TileGrid& grid) {
    double w = 0.0;
    for (int i = 0; i < grid.count(); ++i) w += tile_work(grid[i]);
    return w;
}

// Finishing time of `grid` on p threads that take tiles in order (the
// engine's dynamic schedule), in work units.
double makespan(const TileGrid& grid, int p) {
    std::vector<double> busy(static_cast<size_t>(std::max(1, p)), 0.0);
    for (int i = 0; i < grid.count(); ++i)
        *std::min_element(busy.begin(), busy.end()) += tile_work(grid[i]);
    return *std::max_element(busy.begin(), busy.end());
}

// The thread rule: at most `threads`, one per tile, one per kMinWorkPerThread.
int useful_threads(const TileGrid& grid, int threads) {
    const int by_work = static_cast<int>(total_work(grid) / kMinWorkPerThread);
    return std::max(1, std::min({threads, grid.count(), by_work}));
}

}  // namespace

int cpu_count() { return hardware_threads(); }

RunPlan plan_run(int H, int W, int tile, int threads, int halo, int cores) {
    if (tile < 1) throw std::invalid_argument("tile must be >= 1");
    RunPlan plan;
    plan.tile = tile;
    cores = std::max(1, cores);
    const TileGrid grid(H, W, tile, halo);
    if (grid.count() == 0) return plan;
    {  // candidates exist only when H or W < 2 * cores * tile
        const double base = makespan(grid, useful_threads(grid, cores));
        double best = base;
        // candidate edges: the image's height or width cut into k equal parts
        for (int k = 2; k <= 2 * cores; ++k)
            for (int edge : {(H + k - 1) / k, (W + k - 1) / k}) {
                if (edge >= tile || edge < kMinSplitTile) continue;
                const TileGrid cut(H, W, edge, halo);
                const double t = makespan(cut, useful_threads(cut, cores));
                if (t < best && t <= 0.9 * base) {
                    best = t;
                    plan.tile = edge;
                }
            }
    }
    const TileGrid used(H, W, plan.tile, halo);
    plan.tiles = used.count();
    plan.threads = useful_threads(used, threads);
    return plan;
}

// Default tile edge: the largest multiple of 32 whose per-thread workspace
// ((tile + 2 * halo)^2 region pixels, bytes_per_pixel each) fits the thread's
// share of the last-level cache: L3 / cores, at least L2.  Cache sizes come from
// sysfs (Linux), else sysconf; unknown ones count as L2 = 1 MiB, L3 = 32 MiB.  Clamped
// to 128..512.
int default_tile_for(size_t bytes_per_pixel, int halo) {
    auto sysfs = [](int index) -> long {
        std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
        long v = 0;
        char unit = 0;
        if (!(f >> v)) return 0;
        if (f >> unit) v *= unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
        return v;
    };
    // sysfs first: under a hypervisor glibc's sysconf (CPUID) can report a host's L3
    long l2 = sysfs(2), l3 = sysfs(3);
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    if (l2 <= 0) l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l3 <= 0) l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (l2 <= 0) l2 = 1L << 20;
    if (l3 <= 0 || l3 > (1L << 30)) l3 = 32L << 20;
    const double share =
        std::max(static_cast<double>(l2), static_cast<double>(l3) / hardware_threads());
    const double region = std::sqrt(share / static_cast<double>(bytes_per_pixel));
    const int tile = static_cast<int>((region - 2.0 * halo) / 32.0) * 32;
    return std::clamp(tile, 128, 512);
}

int CpuEngine::default_tile() const {
    const size_t floats = static_cast<size_t>(impl_->spec.f1_width) + kBlock + 2 * impl_->cp + 3;
    return default_tile_for(floats * sizeof(float), impl_->spec.receptive_radius());
}

void CpuEngine::run(const float* in, float* out, int H, int W, int tile, int threads,
                    const ProgressFn& progress) {
    if (tile < 1) throw std::invalid_argument("tile must be >= 1");
    if (threads < 0) throw std::invalid_argument("threads must be >= 0");
    Impl& s = *impl_;
    const int R = s.spec.receptive_radius();
    const RunPlan plan = plan_run(H, W, tile, resolve_threads(threads), R, hardware_threads());
    const TileGrid grid(H, W, plan.tile, R);  // checks H, W
    const int total = grid.count();
    if (total == 0) return;
    std::lock_guard<std::mutex> lock(s.mutex);
    const int nt = plan.threads;
    if (static_cast<int>(s.workspaces.size()) < nt) s.workspaces.resize(nt);
    const bool profile = profiling();
    if (profile)
        for (Workspace& ws : s.workspaces) std::fill(std::begin(ws.prof), std::end(ws.prof), 0.0);
    const double t_start = profile ? now_s() : 0.0;

    std::atomic<int> next{0}, finished{0};
    std::atomic<bool> stop{false};
    std::mutex error_mutex;
    std::exception_ptr error;
    bool cancelled = false;
    int reported = 0;
    auto fail = [&](std::exception_ptr e) {
        std::lock_guard<std::mutex> g(error_mutex);
        if (!error) error = e;
        stop.store(true);
    };
    // Progress runs on the calling thread only (the bindings take the GIL there,
    // and Python's re-entrancy guard is per thread): one call per tile, for every
    // tile any thread has finished so far, in order 1..total.
    auto report = [&] {
        const int f = finished.load(std::memory_order_acquire);
        while (reported < f && !stop.load()) {
            ++reported;
            try {
                if (!progress(reported, total)) {
                    cancelled = true;
                    stop.store(true);
                }
            } catch (...) {
                fail(std::current_exception());
            }
        }
    };
    std::vector<double> busy_s(nt, 0.0);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int me = omp_get_thread_num();
#else
        const int me = 0;
#endif
        Workspace& ws = s.workspaces[me];
        const double t0 = profile ? now_s() : 0.0;
        while (!stop.load(std::memory_order_relaxed)) {
            const int i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= total) break;
            try {
                s.forward_tile(in, out, H, W, grid[i], ws, profile);
            } catch (...) {
                fail(std::current_exception());
                break;
            }
            finished.fetch_add(1, std::memory_order_release);
            if (me == 0 && progress) report();
        }
        if (profile) busy_s[me] = now_s() - t0;
    }
    if (progress && !error && !cancelled) report();  // tiles the other threads finished last

    if (profile) {
        double sum[kStages] = {};
        for (int t = 0; t < nt; ++t)
            for (int i = 0; i < kStages; ++i) sum[i] += s.workspaces[t].prof[i];
        double cpu = 0.0;
        for (double b : busy_s) cpu += b;
        std::fprintf(stderr,
                     "msrnet profile: %dx%d tile %d (asked %d), %d tiles, %d threads, "
                     "wall %.4f s, thread-seconds %.4f\n",
                     H, W, plan.tile, tile, total, nt, now_s() - t_start, cpu);
        for (int i = 0; i < kStages; ++i)
            std::fprintf(stderr, "msrnet profile:   %-52s %9.4f s %5.1f %%\n", kStageNames[i],
                         sum[i], cpu > 0 ? 100.0 * sum[i] / cpu : 0.0);
    }
    if (error) std::rethrow_exception(error);
    if (cancelled) throw Cancelled();
}

}  // namespace msrnet
