// 3x3 convolution kernels (direct and Winograd F(2x2,3x3) / F(4x4,3x3) / F(6x6,3x3)) on HWC maps.
//
// This file is compiled several times with different instruction-set flags;
// MSRNET_KERNEL_NS names the namespace of each copy (see kernels.h for the map
// layout).  All arithmetic goes through the 8-float vector type `v8`: GCC/Clang
// vector extensions lower it to one AVX register, two SSE/NEON registers, or
// (with AVX-512VL) a ymm register out of 32, so the same source serves all ISAs.
// Inner loops vectorise over output channels (a block of 8) and register-block
// P pixels x NB channel blocks of accumulators.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef MSRNET_KERNEL_NS
#error "compile kernels.cpp with -DMSRNET_KERNEL_NS=<isa name>"
#endif

namespace msrnet::kernels::MSRNET_KERNEL_NS {
namespace {

// ----------------------------------------------------------------- vector type
#if defined(__GNUC__) || defined(__clang__)
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned access
inline v8 load(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void store(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }
inline v8 relu(v8 a) {
#if defined(__AVX__)
    return (v8)_mm256_max_ps((__m256)a, _mm256_setzero_ps());
#else
    v8 r;
    for (int i = 0; i < 8; ++i) r[i] = a[i] > 0.0f ? a[i] : 0.0f;
    return r;
#endif
}
#else  // MSVC and others: plain struct, left to the auto-vectoriser
struct v8 {
    float v[8];
    float& operator[](int i) { return v[i]; }
    float operator[](int i) const { return v[i]; }
};
inline v8 operator+(v8 a, v8 b) { for (int i = 0; i < 8; ++i) a.v[i] += b.v[i]; return a; }
inline v8 operator-(v8 a, v8 b) { for (int i = 0; i < 8; ++i) a.v[i] -= b.v[i]; return a; }
inline v8 operator*(v8 a, v8 b) { for (int i = 0; i < 8; ++i) a.v[i] *= b.v[i]; return a; }
inline v8& operator+=(v8& a, v8 b) { a = a + b; return a; }
inline v8 load(const float* p) { v8 r; std::memcpy(r.v, p, sizeof r.v); return r; }
inline void store(float* p, v8 v) { std::memcpy(p, v.v, sizeof v.v); }
inline v8 splat(float x) { v8 r; for (int i = 0; i < 8; ++i) r.v[i] = x; return r; }
inline v8 relu(v8 a) { for (int i = 0; i < 8; ++i) a.v[i] = a.v[i] > 0.0f ? a.v[i] : 0.0f; return a; }
#endif

inline v8 vload(const float* p, v8) { return load(p); }
inline void vstore(float* p, v8 v) { store(p, v); }

#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
// AVX-512: 16-float (zmm) vectors for the Winograd transforms and GEMMs.  Every
// lane does the same operations in the same order as the 8-wide code, so the
// results are bit-identical to the avx2 / generic kernels.
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
inline v16 load16(const float* p) { return *reinterpret_cast<const v16u*>(p); }
inline void store16(float* p, v16 v) { *reinterpret_cast<v16u*>(p) = v; }
inline v16 relu(v16 a) { return (v16)_mm512_max_ps((__m512)a, _mm512_setzero_ps()); }
inline v16 vload(const float* p, v16) { return load16(p); }
inline void vstore(float* p, v16 v) { store16(p, v); }
constexpr bool kWide = true;
#else
constexpr bool kWide = false;
#endif
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
using WideVec = v16;
#else
using WideVec = v8;  // unused (kWide is false)
#endif

// log1p(y) on 8 lanes: Cephes logf on u = 1 + y, plus the first-order
// correction (y - (u - 1)) / u that restores log1p's accuracy for small y.
// Lanes outside the polynomial's safe range (u not in [1e-30, 1e30], NaN)
// are recomputed with std::log1p by the caller (returns false).
#if defined(__GNUC__) || defined(__clang__)
typedef int v8i __attribute__((vector_size(32)));
inline bool log1p8(v8 y, v8& out) {
    const v8 u = y + 1.0f;
    for (int i = 0; i < 8; ++i)
        if (!(u[i] >= 1e-30f && u[i] <= 1e30f)) return false;
    const v8i bits = (v8i)u;
    v8 e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, v8);
    v8 m = (v8)((bits & 0x807fffff) | 0x3f000000);  // mantissa in [0.5, 1)
    const v8i small = m < 0.707106781186547524f;
    e = e - (v8)((v8i)splat(1.0f) & small);            // e -= 1 where small
    m = m + (v8)((v8i)m & small) - 1.0f;                // m = 2m - 1 or m - 1
    const v8 z = m * m;
    v8 p = splat(7.0376836292e-2f);
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    v8 r = p * m * z;
    r = r - 2.12194440e-4f * e;
    r = r - 0.5f * z;
    r = m + r + 0.693359375f * e;
    out = r + (y - (u - 1.0f)) / u;
    return true;
}
#else
inline bool log1p8(v8, v8&) { return false; }
#endif

// Profiling clock (only read when Scratch::prof is set).
inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline float hsum(v8 a) {
    float s = 0.0f;
    for (int i = 0; i < 8; ++i) s += a[i];
    return s;
}

// Pixels per register block for NB output-channel blocks: accumulators P*NB
// must leave room for the weights and a broadcast (16 vector registers on
// AVX2/SSE, 32 with AVX-512VL).
#if defined(__AVX512F__)
constexpr int kRegs = 32;
#else
constexpr int kRegs = 16;
#endif
template <int NB>
constexpr int pixels_per_block() {
    return NB == 4 ? (kRegs == 32 ? 6 : 3) : NB == 3 ? (kRegs == 32 ? 8 : 4) : NB == 2 ? (kRegs == 32 ? 12 : 6) : 8;
}

// ---------------------------------------------------------------- 1x1 fusion
// The sum over a pixel's channels runs lane-wise (one v8 per k, channel blocks
// in order), then across the 8 lanes as ((0+1)+(2+3)) + ((4+5)+(6+7)) on AVX.
// fuse_row reduces 8 pixels at once with a transposing hadd tree that keeps that
// order, so a pixel's sum does not depend on where it sits in the row.  (Maps of
// more than 32 channels sum per run of 32 channels.)
#if defined(__AVX__)
// r[p] = the horizontal sum of s[p], p < 8.
inline v8 hsum8x8(const v8* s) {
    const __m256 ab = _mm256_hadd_ps((__m256)s[0], (__m256)s[1]);
    const __m256 cd = _mm256_hadd_ps((__m256)s[2], (__m256)s[3]);
    const __m256 ef = _mm256_hadd_ps((__m256)s[4], (__m256)s[5]);
    const __m256 gh = _mm256_hadd_ps((__m256)s[6], (__m256)s[7]);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);  // [a0123 b0123 c0123 d0123 | a4567 ...]
    const __m256 efgh = _mm256_hadd_ps(ef, gh);
    const __m256 lo = _mm256_permute2f128_ps(abcd, efgh, 0x20);
    const __m256 hi = _mm256_permute2f128_ps(abcd, efgh, 0x31);
    return (v8)_mm256_add_ps(lo, hi);
}
inline float hsum_tree(v8 a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
#else
inline v8 hsum8x8(const v8* s) {
    v8 r;
    for (int p = 0; p < 8; ++p) r[p] = hsum(s[p]);
    return r;
}
inline float hsum_tree(v8 a) { return hsum(a); }
#endif

// Lane-wise sum_c fw[c] * h[c] of one pixel (NB blocks of 8 channels; fw in registers).
template <int NB>
inline v8 fuse_lanes(const float* h, const v8* fw) {
    v8 s = splat(0.0f);
    for (int nb = 0; nb < NB; ++nb) s += load(h + nb * kBlock) * fw[nb];
    return s;
}

// acc[k][pixel] += sum_c fw[k][c] * h[c] for the pixels x0..x1 of row y, channels
// c0 .. c0 + 8 NB (the caller splits wider maps into runs of at most 4 blocks).
template <int NB>
void fuse_row_blocks(const FuseTarget& f, const MapView& out, int cout_p, int c0, int y, int x0,
                     int x1, float* row, size_t plane) {
    for (int k = 0; k < 3; ++k) {
        v8 fw[NB];
        for (int nb = 0; nb < NB; ++nb) fw[nb] = load(f.w + k * cout_p + c0 + nb * kBlock);
        float* a = row + k * plane;
        int x = x0;
        for (; x + 8 <= x1; x += 8) {
            v8 s[8];
            for (int p = 0; p < 8; ++p) s[p] = fuse_lanes<NB>(out.at(y, x + p) + c0, fw);
            store(a + x, load(a + x) + hsum8x8(s));
        }
        for (; x < x1; ++x) a[x] += hsum_tree(fuse_lanes<NB>(out.at(y, x) + c0, fw));
    }
}

// acc[k][pixel] += sum_c fw[k][c] * h[c] for the pixels of row y inside fuse->rect.
// (Maps wider than 32 channels add their runs of 32 one after the other.)
void fuse_row(const FuseTarget& f, const MapView& out, int cout_p, int y, int x0, int x1) {
    if (y < f.rect.y0 || y >= f.rect.y1) return;
    x0 = std::max(x0, f.rect.x0);
    x1 = std::min(x1, f.rect.x1);
    const size_t plane = static_cast<size_t>(f.rect.height()) * f.rect.width();
    float* row = f.acc + static_cast<size_t>(y - f.rect.y0) * f.rect.width() - f.rect.x0;
    for (int c0 = 0; c0 < cout_p; c0 += 4 * kBlock) {
        switch (std::min(4, (cout_p - c0) / kBlock)) {
            case 4: fuse_row_blocks<4>(f, out, cout_p, c0, y, x0, x1, row, plane); break;
            case 3: fuse_row_blocks<3>(f, out, cout_p, c0, y, x0, x1, row, plane); break;
            case 2: fuse_row_blocks<2>(f, out, cout_p, c0, y, x0, x1, row, plane); break;
            default: fuse_row_blocks<1>(f, out, cout_p, c0, y, x0, x1, row, plane); break;
        }
    }
}

// ------------------------------------------------------------ direct 3x3 conv
// P consecutive output pixels x NB*8 output channels starting at channel co0.
// `in` points at the top-left tap of the first pixel, i.e. input (y-1, x-1).
template <int P, int NB>
inline void direct_block(const float* in, size_t rs, int cpi, int cin, const float* w,
                         int cout_p, const float* bias, float* out, int cpo, bool do_relu) {
    v8 acc[P][NB];
    for (int nb = 0; nb < NB; ++nb) {
        const v8 b = load(bias + nb * kBlock);
        for (int p = 0; p < P; ++p) acc[p][nb] = b;
    }
    for (int t = 0; t < 9; ++t) {
        const float* ip = in + (t / 3) * rs + (t % 3) * cpi;
        const float* wp = w + static_cast<size_t>(t) * cin * cout_p;
        for (int ci = 0; ci < cin; ++ci) {
            v8 wv[NB];
            for (int nb = 0; nb < NB; ++nb) wv[nb] = load(wp + ci * cout_p + nb * kBlock);
            for (int p = 0; p < P; ++p) {
                const v8 a = splat(ip[p * cpi + ci]);
                for (int nb = 0; nb < NB; ++nb) acc[p][nb] += a * wv[nb];
            }
        }
    }
    for (int p = 0; p < P; ++p)
        for (int nb = 0; nb < NB; ++nb)
            store(out + p * cpo + nb * kBlock, do_relu ? relu(acc[p][nb]) : acc[p][nb]);
}

#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
// direct_block<P, 4> with 16-float vectors: the same sums in the same order per lane.
template <int P>
inline void direct_block32(const float* in, size_t rs, int cpi, int cin, const float* w,
                           int cout_p, const float* bias, float* out, int cpo, bool do_relu) {
    v16 acc[P][2];
    const v16 b0 = load16(bias), b1 = load16(bias + 16);
    for (int p = 0; p < P; ++p) {
        acc[p][0] = b0;
        acc[p][1] = b1;
    }
    for (int t = 0; t < 9; ++t) {
        const float* ip = in + (t / 3) * rs + (t % 3) * cpi;
        const float* wp = w + static_cast<size_t>(t) * cin * cout_p;
        for (int ci = 0; ci < cin; ++ci) {
            const v16 w0 = load16(wp + ci * cout_p), w1 = load16(wp + ci * cout_p + 16);
            for (int p = 0; p < P; ++p) {
                const v16 a = v16{} + ip[p * cpi + ci];
                acc[p][0] += a * w0;
                acc[p][1] += a * w1;
            }
        }
    }
    for (int p = 0; p < P; ++p) {
        store16(out + p * cpo, do_relu ? relu(acc[p][0]) : acc[p][0]);
        store16(out + p * cpo + 16, do_relu ? relu(acc[p][1]) : acc[p][1]);
    }
}
#endif

template <int NB>
void direct_row(const PackedConv& cv, const MapView& in, const MapView& out, int y, int x0,
                int x1, int co0, bool do_relu) {
    constexpr int P = pixels_per_block<NB>();
    const size_t rs = in.row_stride();
    const float* w = cv.w.data() + co0;
    const float* b = cv.b.data() + co0;
    int x = x0;
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
    if constexpr (NB == 4) {  // 32 output channels: 12 pixels x 2 zmm accumulators
        for (; x + 12 <= x1; x += 12)
            direct_block32<12>(in.at(y - 1, x - 1), rs, in.cp, cv.cin, w, cv.cout_p, b,
                               out.at(y, x) + co0, out.cp, do_relu);
        for (; x + 4 <= x1; x += 4)
            direct_block32<4>(in.at(y - 1, x - 1), rs, in.cp, cv.cin, w, cv.cout_p, b,
                              out.at(y, x) + co0, out.cp, do_relu);
    }
#endif
    for (; x + P <= x1; x += P)
        direct_block<P, NB>(in.at(y - 1, x - 1), rs, in.cp, cv.cin, w, cv.cout_p, b,
                            out.at(y, x) + co0, out.cp, do_relu);
    for (; x < x1; ++x)
        direct_block<1, NB>(in.at(y - 1, x - 1), rs, in.cp, cv.cin, w, cv.cout_p, b,
                            out.at(y, x) + co0, out.cp, do_relu);
}

void conv_direct(const PackedConv& cv, const MapView& in, const MapView& out, Rect r,
                 bool do_relu, const FuseTarget* fuse, double* prof) {
    const double t0 = prof ? now_s() : 0.0;
    for (int y = r.y0; y < r.y1; ++y) {
        for (int co0 = 0; co0 < cv.cout_p; co0 += 4 * kBlock) {
            switch (std::min(4, (cv.cout_p - co0) / kBlock)) {
                case 4: direct_row<4>(cv, in, out, y, r.x0, r.x1, co0, do_relu); break;
                case 3: direct_row<3>(cv, in, out, y, r.x0, r.x1, co0, do_relu); break;
                case 2: direct_row<2>(cv, in, out, y, r.x0, r.x1, co0, do_relu); break;
                default: direct_row<1>(cv, in, out, y, r.x0, r.x1, co0, do_relu); break;
            }
        }
        if (fuse) fuse_row(*fuse, out, cv.cout_p, y, r.x0, r.x1);
    }
    if (prof) prof[kProfDirect] += now_s() - t0;
}

// ------------------------------------------------ Winograd F(m x m, 3x3) conv
// Output tiles of m x m pixels read (m+2) x (m+2) input patches starting at
// (y-1, x-1).  Work item = one row of tiles (m output rows) x Tiles tiles:
//   V[xi][t][ci] = (B^T d B)[xi]                       input transform
//   M[xi][t][co] = sum_ci V[xi][t][ci] U[xi][ci][co]   (m+2)^2 small GEMMs
//   out          = A^T M A + bias, ReLU                output transform
// U = G g G^T is packed by the engine.  V, M and U of one item stay in L2.
// The 1-D transforms below are applied to columns, then to rows.
template <int M> struct Wino;

template <> struct Wino<2> {  // B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
    static constexpr int kA = 4, kTiles = 24;
    template <class V>
    static void in(const V* d, V* t) {
        t[0] = d[0] - d[2];
        t[1] = d[1] + d[2];
        t[2] = d[2] - d[1];
        t[3] = d[1] - d[3];
    }
    template <class V>
    static void out(const V* m, V* y) {  // A^T = [1 1 1 0; 0 1 -1 -1]
        y[0] = m[0] + m[1] + m[2];
        y[1] = m[1] - m[2] - m[3];
    }
};

template <> struct Wino<4> {  // Lavin & Gray's F(4x4, 3x3)
    static constexpr int kA = 6, kTiles = 12;
    template <class V>
    static void in(const V* d, V* t) {
        t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
        t[1] = d[3] + d[4] - 4.0f * (d[1] + d[2]);
        t[2] = d[4] - d[3] + 4.0f * (d[1] - d[2]);
        t[3] = d[4] - d[2] + 2.0f * (d[3] - d[1]);
        t[4] = d[4] - d[2] - 2.0f * (d[3] - d[1]);
        t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
    }
    template <class V>
    static void out(const V* m, V* y) {
        const V s12 = m[1] + m[2], d12 = m[1] - m[2];
        const V s34 = m[3] + m[4], d34 = m[3] - m[4];
        y[0] = m[0] + s12 + s34;
        y[1] = d12 + 2.0f * d34;
        y[2] = s12 + 4.0f * s34;
        y[3] = d12 + 8.0f * d34 + m[5];
    }
};

template <> struct Wino<6> {  // F(6x6, 3x3), points 0, +-1, +-2, +-1/2 (as ncnn's winograd63)
    static constexpr int kA = 8, kTiles = 12;
    template <class V>
    static void in(const V* d, V* t) {  // B^T rows, factored (B^T: ncnn's itm matrix)
        t[0] = d[0] - d[6] + 5.25f * (d[4] - d[2]);
        t[7] = d[7] - d[1] + 5.25f * (d[3] - d[5]);
        const V a12 = d[2] + d[6] - 4.25f * d[4], b12 = d[1] + d[5] - 4.25f * d[3];
        t[1] = a12 + b12;
        t[2] = a12 - b12;
        const V a34 = d[6] + 0.25f * d[2] - 1.25f * d[4];
        const V b34 = 0.5f * d[1] - 2.5f * d[3] + 2.0f * d[5];
        t[3] = a34 + b34;
        t[4] = a34 - b34;
        const V a56 = d[6] + 4.0f * (d[2] - 1.25f * d[4]);
        const V b56 = 2.0f * d[1] - 2.5f * d[3] + 0.5f * d[5];
        t[5] = a56 + b56;
        t[6] = a56 - b56;
    }
    template <class V>
    static void out(const V* m, V* y) {  // A^T = [1 1 1 1 1 32 32 0; 0 1 -1 2 -2 16 -16 0; ...]
        const V s12 = m[1] + m[2], d12 = m[1] - m[2];
        const V s34 = m[3] + m[4], d34 = m[3] - m[4];
        const V s56 = m[5] + m[6], d56 = m[5] - m[6];
        y[0] = m[0] + s12 + s34 + 32.0f * s56;
        y[1] = d12 + 2.0f * d34 + 16.0f * d56;
        y[2] = s12 + 4.0f * s34 + 8.0f * s56;
        y[3] = d12 + 8.0f * d34 + 4.0f * d56;
        y[4] = s12 + 16.0f * s34 + 2.0f * s56;
        y[5] = d12 + 32.0f * d34 + d56 + m[7];
    }
};

template <int P, int NB>
inline void wino_gemm_block(const float* v, int cin, const float* u, int cout_p, float* m) {
    v8 acc[P][NB];
    for (int p = 0; p < P; ++p)
        for (int nb = 0; nb < NB; ++nb) acc[p][nb] = splat(0.0f);
    for (int ci = 0; ci < cin; ++ci) {
        v8 wv[NB];
        for (int nb = 0; nb < NB; ++nb) wv[nb] = load(u + ci * cout_p + nb * kBlock);
        for (int p = 0; p < P; ++p) {
            const v8 a = splat(v[p * cin + ci]);
            for (int nb = 0; nb < NB; ++nb) acc[p][nb] += a * wv[nb];
        }
    }
    for (int p = 0; p < P; ++p)
        for (int nb = 0; nb < NB; ++nb) store(m + p * cout_p + nb * kBlock, acc[p][nb]);
}

template <int NB>
void wino_gemm(const float* v, int nt, int cin, const float* u, int cout_p, int co0, float* m) {
    constexpr int P = pixels_per_block<NB>();
    int t = 0;
    for (; t + P <= nt; t += P)
        wino_gemm_block<P, NB>(v + t * cin, cin, u + co0, cout_p, m + t * cout_p + co0);
    for (; t < nt; ++t)
        wino_gemm_block<1, NB>(v + t * cin, cin, u + co0, cout_p, m + t * cout_p + co0);
}

#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
// NB = 1 or 2 blocks of 16 output channels, P tiles.
template <int P, int NB>
inline void wino_gemm16_block(const float* v, int cin, const float* u, int cout_p, float* m) {
    v16 acc[P][NB];
    for (int p = 0; p < P; ++p)
        for (int nb = 0; nb < NB; ++nb) acc[p][nb] = v16{};
    for (int ci = 0; ci < cin; ++ci) {
        v16 w[NB];
        for (int nb = 0; nb < NB; ++nb) w[nb] = load16(u + ci * cout_p + 16 * nb);
        for (int p = 0; p < P; ++p) {
            const float a = v[p * cin + ci];
            const v16 av = v16{} + a;
            for (int nb = 0; nb < NB; ++nb) acc[p][nb] += av * w[nb];
        }
    }
    for (int p = 0; p < P; ++p)
        for (int nb = 0; nb < NB; ++nb) store16(m + p * cout_p + 16 * nb, acc[p][nb]);
}

// wino_gemm16_block<n, NB> for the n = 1 .. P given at run time.
template <int P, int NB>
inline void wino_gemm16_upto(int n, const float* v, int cin, const float* u, int cout_p, float* m) {
    if (n == P)
        wino_gemm16_block<P, NB>(v, cin, u, cout_p, m);
    else if constexpr (P > 1)
        wino_gemm16_upto<P - 1, NB>(n, v, cin, u, cout_p, m);
}

// 48 (NB = 3), 32 (NB = 2) or 16 (NB = 1) output channels from co0.  nt <= 12 tiles
// (one work item) in a single register block of nt tiles (8 for NB = 3: 24
// accumulators + 3 weight vectors of the 32 zmm registers), so the accumulators of a
// short item still hide the FMA latency (a tile's sums are the same whatever the
// block size).
template <int NB>
inline void wino_gemm_wide(const float* v, int nt, int cin, const float* u, int cout_p, int co0,
                           float* m) {
    constexpr int kMaxP = NB >= 3 ? 8 : 12;
    u += co0;
    m += co0;
    for (int t = 0; t < nt; t += kMaxP)
        wino_gemm16_upto<kMaxP, NB>(std::min(kMaxP, nt - t), v + t * cin, cin, u, cout_p,
                                    m + t * cout_p);
}
#else
template <int NB>
inline void wino_gemm_wide(const float*, int, int, const float*, int, int, float*) {}
#endif

// Input transform of one patch, one vector of channels: V[xi] = (B^T d B)[xi]
// (stored at vp + xi * vs), d read from base (row stride rs, pixel stride cpi).
template <int Mt, class Vec>
inline void wino_in_block(const float* base, size_t rs, int cpi, float* vp0, int, size_t vs) {
    using W = Wino<Mt>;
    constexpr int A = W::kA;
    Vec d[A][A], bt[A][A];
    for (int j = 0; j < A; ++j) {  // columns: bt[.][j] = B^T d[.][j]
        Vec col[A], tcol[A];
        for (int i = 0; i < A; ++i) col[i] = vload(base + i * rs + j * cpi, Vec{});
        W::in(col, tcol);
        for (int i = 0; i < A; ++i) bt[i][j] = tcol[i];
    }
    for (int i = 0; i < A; ++i) {  // rows: d[i] = bt[i] B
        W::in(bt[i], d[i]);
        float* vp = vp0 + static_cast<size_t>(i * A) * vs;
        for (int j = 0; j < A; ++j) vstore(vp + j * vs, d[i][j]);
    }
}

// Output transform of one tile, one vector of channels: out = A^T M A + bias
// [ReLU] on rows x cols pixels (mp: M of this tile, stride ms between xi).
template <int Mt, class Vec>
inline void wino_out_block(const float* mp, size_t ms, const float* bias, float* o, size_t rs,
                           int cpo, int rows, int cols, bool do_relu) {
    using W = Wino<Mt>;
    constexpr int A = W::kA;
    Vec at[Mt][A];
    for (int j = 0; j < A; ++j) {  // columns: at[.][j] = A^T m[.][j]
        Vec col[A], ycol[Mt];
        for (int i = 0; i < A; ++i) col[i] = vload(mp + (i * A + j) * ms, Vec{});
        W::out(col, ycol);
        for (int i = 0; i < Mt; ++i) at[i][j] = ycol[i];
    }
    const Vec b = vload(bias, Vec{});
    for (int i = 0; i < rows; ++i) {  // rows: y = at[i] A
        Vec yr[Mt];
        W::out(at[i], yr);
        for (int j = 0; j < cols; ++j) {
            const Vec val = yr[j] + b;
            vstore(o + i * rs + j * cpo, do_relu ? relu(val) : val);
        }
    }
}

template <int Mt>
void wino_item(const PackedConv& cv, const MapView& in, const MapView& out, Rect r, bool do_relu,
               const FuseTarget* fuse, int y, int xt0, int nt, float* V, float* Mb, double* prof) {
    using W = Wino<Mt>;
    const double t0 = prof ? now_s() : 0.0;
    constexpr int A = W::kA, T = W::kTiles;
    const int cin = cv.cin, cpo = cv.cout_p;
    const size_t rs = in.row_stride();
    const int cpi = in.cp;
    // input transform
    const size_t vs = static_cast<size_t>(T) * cin;  // stride between xi
    for (int t = 0; t < nt; ++t) {
        const float* base = in.at(y - 1, r.x0 + Mt * (xt0 + t) - 1);
#if defined(__GNUC__) || defined(__clang__)
        // The input map is larger than L2: prefetch the pixels that tile t + 2
        // adds to its patch (columns 2m+2 .. 3m+1 relative to this patch).
        if (t + 2 < nt) {
            for (int i = 0; i < A; ++i) {
                const float* pf = base + i * rs + (2 * Mt + 2) * cpi;
                for (int off = 0; off < Mt * cpi; off += 16) __builtin_prefetch(pf + off);
            }
        }
#endif
        int c = 0;
        if constexpr (kWide)
            for (; c + 16 <= cin; c += 16)
                wino_in_block<Mt, WideVec>(base + c, rs, cpi, V + static_cast<size_t>(t) * cin + c, T * cin, vs);
        for (; c < cin; c += kBlock)
            wino_in_block<Mt, v8>(base + c, rs, cpi, V + static_cast<size_t>(t) * cin + c, T * cin, vs);
    }
    const double t1 = prof ? now_s() : 0.0;
    // (m+2)^2 GEMMs
    for (int xi = 0; xi < A * A; ++xi) {
        const float* v = V + xi * vs;
        const float* u = cv.wino.data() + static_cast<size_t>(xi) * cin * cpo;
        float* m = Mb + static_cast<size_t>(xi) * T * cpo;
        // output channels in blocks: 48 (exactly 48 left), 32 and then 16 at a time on
        // AVX-512 (16-float vectors), else up to 4 x 8
        for (int co0 = 0; co0 < cpo;) {
            const int left = cpo - co0;
            if (kWide && left == 6 * kBlock) {
                wino_gemm_wide<3>(v, nt, cin, u, cpo, co0, m);
                co0 += 6 * kBlock;
                continue;
            }
            if (kWide && left >= 4 * kBlock) {
                wino_gemm_wide<2>(v, nt, cin, u, cpo, co0, m);
                co0 += 4 * kBlock;
                continue;
            }
            if (kWide && left >= 2 * kBlock) {
                wino_gemm_wide<1>(v, nt, cin, u, cpo, co0, m);
                co0 += 2 * kBlock;
                continue;
            }
            const int nb = std::min(4, left / kBlock);
            switch (nb) {
                case 4: wino_gemm<4>(v, nt, cin, u, cpo, co0, m); break;
                case 3: wino_gemm<3>(v, nt, cin, u, cpo, co0, m); break;
                case 2: wino_gemm<2>(v, nt, cin, u, cpo, co0, m); break;
                default: wino_gemm<1>(v, nt, cin, u, cpo, co0, m); break;
            }
            co0 += nb * kBlock;
        }
    }
    const double t2 = prof ? now_s() : 0.0;
    // output transform (+ bias, ReLU).  The 1x1 fuse of these rows runs after
    // (fuse_row, output still in L1/L2): fusing it here, with 4 x 4 x 3 per-pixel
    // accumulators held across the channel blocks, spilled registers and was
    // ~5 % slower (measured on the 2-core AVX-512 machine, 1024^2, tile 192).
    const size_t ms = static_cast<size_t>(T) * cpo;  // stride between xi
    const int rows = std::min(Mt, r.y1 - y);
    for (int t = 0; t < nt; ++t) {
        const int x = r.x0 + Mt * (xt0 + t);
        const int cols = std::min(Mt, r.x1 - x);
        int c = 0;
        if constexpr (kWide)
            for (; c + 16 <= cpo; c += 16)
                wino_out_block<Mt, WideVec>(Mb + static_cast<size_t>(t) * cpo + c, ms,
                                            cv.b.data() + c, out.at(y, x) + c, out.row_stride(),
                                            out.cp, rows, cols, do_relu);
        for (; c < cpo; c += kBlock)
            wino_out_block<Mt, v8>(Mb + static_cast<size_t>(t) * cpo + c, ms, cv.b.data() + c,
                                   out.at(y, x) + c, out.row_stride(), out.cp, rows, cols, do_relu);
    }
    const double t3 = prof ? now_s() : 0.0;
    if (fuse) {
        const int x0 = r.x0 + Mt * xt0, x1 = std::min(r.x1, x0 + Mt * nt);
        for (int i = 0; i < rows; ++i) fuse_row(*fuse, out, cpo, y + i, x0, x1);
    }
    if (prof) {
        prof[kProfWinoIn] += t1 - t0;
        prof[kProfWinoGemm] += t2 - t1;
        prof[kProfWinoOut] += t3 - t2;
        prof[kProfFuse] += now_s() - t3;
    }
}

template <int Mt>
void conv_winograd(const PackedConv& cv, const MapView& in, const MapView& out, Rect r,
                   bool do_relu, const FuseTarget* fuse, const Scratch& scratch) {
    constexpr int A = Wino<Mt>::kA, T = Wino<Mt>::kTiles;
    const int ntx = (r.width() + Mt - 1) / Mt, nty = (r.height() + Mt - 1) / Mt;
    // The last tiles of a row / column read up to Mt - 1 pixels past the input's
    // valid rectangle (r grown by 1).  Exact arithmetic cancels them, float
    // rounding does not quite, so make them zeros rather than stale values from
    // an earlier layer or tile: results then do not depend on buffer history.
    for (int y = r.y1 + 1; y <= r.y1 + Mt - 1; ++y)
        std::memset(in.at(y, r.x0 - 1), 0, static_cast<size_t>(r.width() + Mt + 1) * in.cp * sizeof(float));
    for (int y = r.y0 - 1; y <= r.y1; ++y)
        std::memset(in.at(y, r.x1 + 1), 0, static_cast<size_t>(Mt - 1) * in.cp * sizeof(float));
    float* V = scratch.data;
    float* M = V + static_cast<size_t>(A * A) * T * cv.cin;
    double* prof = scratch.prof;
    for (int ty = 0; ty < nty; ++ty) {
        const int y = r.y0 + Mt * ty;
        // the row's tiles in equal work items of at most T (53 -> 11, 11, 11, 10, 10)
        const int items = (ntx + T - 1) / T, per = ntx / items, extra = ntx % items;
        for (int it = 0, xt0 = 0; it < items; ++it) {
            const int nt = per + (it < extra ? 1 : 0);
            wino_item<Mt>(cv, in, out, r, do_relu, fuse, y, xt0, nt, V, M, prof);
            xt0 += nt;
        }
    }
}

void conv3x3(const PackedConv& cv, const MapView& in, const MapView& out, Rect r, bool do_relu,
             const FuseTarget* fuse, bool winograd, const Scratch& scratch) {
    if (r.empty()) return;
    const bool wino = winograd && !cv.wino.empty() && cv.cin % kBlock == 0;
    if (wino && cv.wino_m == 6)
        conv_winograd<6>(cv, in, out, r, do_relu, fuse, scratch);
    else if (wino && cv.wino_m == 4)
        conv_winograd<4>(cv, in, out, r, do_relu, fuse, scratch);
    else if (wino && cv.wino_m == 2)
        conv_winograd<2>(cv, in, out, r, do_relu, fuse, scratch);
    else
        conv_direct(cv, in, out, r, do_relu, fuse, scratch.prof);
}
// f1 on one row, planar: the row's pixels are split into channel planes, the logs
// computed plane by plane, and the 1x1 fusion vectorised over 8 pixels (one
// fused multiply-add per input in a fixed order, the same in the scalar tail).
void f1_row(const F1Params& p, const float* px, int w, float* dst, int dst_cp, float* scratch) {
    const int n3 = 3 * p.n, len = 3 * w;
    // scratch[j * len + ch * w + x] = log1p(v_j * px[x][ch]) * inv_log_j; the planar
    // copy of the pixels goes into the last scale's slot, overwritten in place last.
    float* planar = scratch + static_cast<size_t>(p.n - 1) * len;
    for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < 3; ++ch) planar[ch * w + x] = px[3 * x + ch];
    for (int j = 0; j < p.n; ++j) {
        const float v = p.bases[j], s = p.inv_log[j];
        float* lj = scratch + static_cast<size_t>(j) * len;
        int i = 0;
        for (; i + kBlock <= len; i += kBlock) {
            v8 r;
            if (log1p8(load(planar + i) * v, r)) {
                store(lj + i, r * s);
            } else {
                for (int q = 0; q < kBlock; ++q) lj[i + q] = std::log1p(v * planar[i + q]) * s;
            }
        }
        for (; i < len; ++i) lj[i] = std::log1p(v * planar[i]) * s;
    }
    auto logs = [&](int i) { return scratch + static_cast<size_t>(i / 3) * len + (i % 3) * w; };
    int x = 0;
    for (; x + kBlock <= w; x += kBlock) {
        for (int q = 0; q < p.f; ++q) {
            const float* wq = p.fuse_w + static_cast<size_t>(q) * n3;
            v8 acc = splat(p.fuse_b[q]);
            for (int i = 0; i < n3; ++i) acc += splat(wq[i]) * load(logs(i) + x);
            acc = relu(acc);
            for (int e = 0; e < kBlock; ++e) dst[static_cast<size_t>(x + e) * dst_cp + q] = acc[e];
        }
    }
    for (; x < w; ++x) {
        for (int q = 0; q < p.f; ++q) {
            const float* wq = p.fuse_w + static_cast<size_t>(q) * n3;
            float acc = p.fuse_b[q];
            for (int i = 0; i < n3; ++i) acc += wq[i] * logs(i)[x];
            dst[static_cast<size_t>(x) * dst_cp + q] = acc > 0.0f ? acc : 0.0f;
        }
    }
}

#define MSRNET_STR2(x) #x
#define MSRNET_STR(x) MSRNET_STR2(x)

}  // namespace

const KernelTable& table() {
    static const KernelTable t{MSRNET_STR(MSRNET_KERNEL_NS), &f1_row, &conv3x3};
    return t;
}

}  // namespace msrnet::kernels::MSRNET_KERNEL_NS
