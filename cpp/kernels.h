// Convolution kernels of the CPU engine, shared interface of the per-ISA builds.
//
// Feature-map layout ("HWC with border"): a map of h x w pixels and `cp` channel
// slots stores pixel (y, x), channel c at
//     data[((y + 1) * (w + 7) + (x + 1)) * cp + c]
// i.e. one extra pixel above / left and six below / right.  The ring one pixel
// outside the image is kept at zero, which is exactly PyTorch's padding=1; the
// extra rings on the bottom/right (zeroed too) only let the Winograd path read
// whole (m+2) x (m+2) patches at the last, partial tile of a row.  Output maps have cp a multiple
// of 8 (kBlock) so a pixel's channels are whole SIMD vectors; padded channels
// have zero weights and bias, so they stay zero.
//
// kernels.cpp is compiled once per instruction set (generic, avx2, avx512),
// each into namespace msrnet::kernels::<isa>; engine_cpu.cpp picks one table.
#pragma once

#include <cstddef>
#include <vector>

#include "msrnet/tiling.h"

namespace msrnet::kernels {

constexpr int kBlock = 8;  // channels per SIMD block (one AVX2 register)

inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

using msrnet::Rect;  // msrnet/tiling.h; here in map coordinates

struct MapView {
    static constexpr int kPad = 7;  // border pixels per row/column: 1 before, 6 after
    float* data = nullptr;
    int h = 0, w = 0, cp = 0;
    size_t row_stride() const { return static_cast<size_t>(w + kPad) * cp; }
    float* at(int y, int x) const {
        return data + (static_cast<size_t>(y + 1) * (w + kPad) + (x + 1)) * cp;
    }
    static size_t floats_for(int h, int w, int cp) {
        return static_cast<size_t>(h + kPad) * (w + kPad) * cp;
    }
};

// A 3x3 convolution (stride 1, padding 1) packed for the kernels.
struct PackedConv {
    int cin = 0;              // real input channels (read from an input map with cp >= cin)
    int cout_p = 0;           // output channel slots, multiple of kBlock
    std::vector<float> w;     // direct: [9 taps][cin][cout_p]
    std::vector<float> b;     // [cout_p]
    int wino_m = 0;           // Winograd output tile edge: 2, 4 or 6 = F(m x m, 3x3), 0 = none
    std::vector<float> wino;  // U = G g G^T: [(m+2)^2][cin][cout_p]
};

// Optional 1x1 "fuse" accumulation done while the conv output is hot in cache:
//   acc[k][(y - rect.y0) * rect.width() + (x - rect.x0)] += sum_c w[k * cout_p + c] * out(y, x, c)
// for k < 3 and every (y, x) in rect (which must lie inside the conv's rect); acc is
// planar (k-major) so that 8 neighbouring pixels are added as one vector.
struct FuseTarget {
    const float* w = nullptr;  // [3][cout_p]
    float* acc = nullptr;      // [3][rect.height() * rect.width()]
    Rect rect;
};

// f1 on one row of pixels: multi-scale logs (scale-major), 1x1 fusion, ReLU.
//   logs[j*3 + ch] = log1p(bases[j] * px[ch]) * inv_log[j]
//   dst[x * dst_cp + q] = relu(fuse_b[q] + sum_i fuse_w[q * 3n + i] * logs[i])
// scratch must hold n * 3 * w floats.
struct F1Params {
    const float* bases;
    const float* inv_log;
    int n;                 // scales
    const float* fuse_w;   // [f][3n]
    const float* fuse_b;   // [f]
    int f;                 // f1_width
};

// Per-call scratch of conv3x3, owned by the calling thread (the kernels are
// single-threaded and allocate nothing): `data` holds conv_scratch_floats(cin,
// cout_p) floats (the Winograd V and M of one work item).  `prof`, when set,
// accumulates seconds per ProfSlot (MSRNET_PROFILE=1, see engine_cpu.cpp).
enum ProfSlot { kProfDirect, kProfWinoIn, kProfWinoGemm, kProfWinoOut, kProfFuse, kProfSlots };
struct Scratch {
    float* data = nullptr;
    double* prof = nullptr;
};
inline size_t conv_scratch_floats(int cin, int cout_p) {
    // max over F(2x2) (16 transforms x 24 tiles), F(4x4) (36 x 12) and F(6x6) (64 x 12)
    return static_cast<size_t>(768) * static_cast<size_t>(cin + cout_p);
}

struct KernelTable {
    const char* name;
    void (*f1_row)(const F1Params& p, const float* px, int w, float* dst, int dst_cp,
                   float* scratch);
    // out(y, x) = [relu](b + sum w * in(neighbourhood)) for (y, x) in r.
    // Reads `in` on r grown by one pixel; the Winograd path (winograd && conv.wino_m)
    // also reads, and zeroes, up to m - 1 more rows / columns below / right of that.
    // Single-threaded: the engine runs whole tiles per thread.
    void (*conv3x3)(const PackedConv& conv, const MapView& in, const MapView& out, Rect r,
                    bool relu, const FuseTarget* fuse, bool winograd, const Scratch& scratch);
};

namespace generic { const KernelTable& table(); }
namespace avx2 { const KernelTable& table(); }
namespace avx512 { const KernelTable& table(); }

}  // namespace msrnet::kernels
