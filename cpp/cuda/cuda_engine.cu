// CUDA inference engine for MSR-net (fp32; optional TF32 tensor cores). Semantics: src/msrnet_napari/training/model.py.
//
// Per tile (output tile + halo of receptive_radius pixels, clipped to the image):
//   d_in  (HWC, region)          --f1_fuse-->  F   (f1_width planes)
//   F     --conv3x3 (generic)--> X1 (3 planes, zero-padded to 8 on the fast path)
//   acc = 0;  for m in 1..K: H_m = ReLU(conv3x3(H_{m-1})), acc += fuse_w[:, m-block] . H_m
//   final: X2 = X1 - (acc + fuse_b); Y = f3(X2)  -> d_out (HWC, output tile only)
// Every map is computed over the whole region with zero padding at the region
// border; region borders inside the image are far enough (halo) from the output
// tile that this never reaches it, and region borders on the image border are
// exactly PyTorch's padding=1. So tiled == untiled, bit for bit.
//
// Planar layouts use the current region's plane size Hr*Wr. Buffers are allocated
// for the largest region and reused across tiles and calls.
//
// Fast path (width in {8,16,32,64}): conv3x3_fast_kernel, a direct convolution in
// which one block computes a 32x8 pixel tile for all `width` output channels; each
// thread owns 4 horizontally adjacent pixels x 8 output channels (32 fp32
// accumulators); input channels stream through shared memory 8 at a time together
// with their weights (layout [cin][3x3][cout], float4 broadcast loads). Its epilogue
// applies bias+ReLU, stores H_m (skipped for H_K) and adds this layer's share of the
// f2 1x1 fusion into `acc` (reduced across channel groups in shared memory), so the
// K maps are never stored together. Other widths use simple generic kernels.
// Precision::TF32 (widths 16 and 32, compute capability >= 8.0) swaps that kernel for
// conv3x3_tf32_kernel: the same layer on WMMA tensor-core fragments.
//
// With -DMSRNET_CUDA_EMULATE this file compiles as plain C++ against
// cuda_emulation.h (CPU check of the whole engine without a GPU).

#include "cuda_engine.h"
#include "msrnet/tiling.h"

#ifdef MSRNET_CUDA_EMULATE
#include "cuda_emulation.h"
#else
#include <cuda_runtime.h>
#include <mma.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace msrnet::cuda {
namespace {

// ---------------------------------------------------------------------------
// Error handling
// ---------------------------------------------------------------------------
[[noreturn]] void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
    std::string msg = "CUDA error: ";
    msg += cudaGetErrorString(e);
    msg += " (";
    msg += what;
    msg += " at ";
    msg += file;
    msg += ":";
    msg += std::to_string(line);
    msg += ")";
    throw std::runtime_error(msg);
}

#define MSR_CUDA(call)                                                   \
    do {                                                                 \
        cudaError_t msr_err_ = (call);                                   \
        if (msr_err_ != cudaSuccess) cuda_fail(msr_err_, #call, __FILE__, __LINE__); \
    } while (0)

#ifdef MSRNET_CUDA_EMULATE
#define MSR_LAUNCH(kernel, grid, block, stream, ...) \
    msrnet_emu::launch(true, kernel, grid, block, __VA_ARGS__)
#define MSR_LAUNCH_NOSYNC(kernel, grid, block, stream, ...) \
    msrnet_emu::launch(false, kernel, grid, block, __VA_ARGS__)
#else
#define MSR_LAUNCH(kernel, grid, block, stream, ...)          \
    do {                                                      \
        kernel<<<grid, block, 0, stream>>>(__VA_ARGS__);      \
        MSR_CUDA(cudaGetLastError());                         \
    } while (0)
#define MSR_LAUNCH_NOSYNC MSR_LAUNCH
#endif

constexpr int kThreads1D = 256;

inline unsigned blocks_for(long long n, int per_block) {
    return static_cast<unsigned>((n + per_block - 1) / per_block);
}

// ---------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------

// f1 front: per pixel M_j = log1p(v_j x) * inv_log_j (scale-major, 3n features),
// F = ReLU(fuse_w . M + fuse_b). in: HWC (npix x 3); F: planar (f1w x npix).
__global__ void f1_fuse_kernel(const float* __restrict__ in, long long npix,
                               const float* __restrict__ bases, const float* __restrict__ inv_log,
                               int n_scales, const float* __restrict__ fw,
                               const float* __restrict__ fb, int f1w, float* __restrict__ F) {
    const long long p = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    const float x[3] = {in[3 * p], in[3 * p + 1], in[3 * p + 2]};
    const int nf = 3 * n_scales;
    for (int o0 = 0; o0 < f1w; o0 += 8) {
        float acc[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = (o0 + i < f1w) ? __ldg(fb + o0 + i) : 0.f;
        for (int j = 0; j < n_scales; ++j) {
            const float v = __ldg(bases + j), s = __ldg(inv_log + j);
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                const float m = log1pf(v * x[c]) * s;
                const int k = 3 * j + c;
#pragma unroll
                for (int i = 0; i < 8; ++i)
                    if (o0 + i < f1w) acc[i] = fmaf(__ldg(fw + (o0 + i) * nf + k), m, acc[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < 8; ++i)
            if (o0 + i < f1w) F[(o0 + i) * npix + p] = fmaxf(acc[i], 0.f);
    }
}

// Generic 3x3 conv, zero padding at the region border. in: Cin planes; w: OIHW.
// One thread = one pixel x 8 output channels (blockIdx.y picks the group).
// Channels Cout..Cout_store-1 are written as zeros (padding for the fast path).
__global__ void conv3x3_generic_kernel(const float* __restrict__ in, int Cin, int Hr, int Wr,
                                       const float* __restrict__ w, const float* __restrict__ b,
                                       int Cout, int Cout_store, float* __restrict__ out, int relu) {
    const long long plane = static_cast<long long>(Hr) * Wr;
    const long long p = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    const int y = static_cast<int>(p / Wr), x = static_cast<int>(p % Wr);
    const int oc0 = blockIdx.y * 8;
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = (oc0 + i < Cout) ? __ldg(b + oc0 + i) : 0.f;
    for (int c = 0; c < Cin; ++c) {
        const float* ip = in + c * plane;
        for (int ky = 0; ky < 3; ++ky) {
            const int yy = y + ky - 1;
            if (yy < 0 || yy >= Hr) continue;
            for (int kx = 0; kx < 3; ++kx) {
                const int xx = x + kx - 1;
                if (xx < 0 || xx >= Wr) continue;
                const float v = ip[static_cast<long long>(yy) * Wr + xx];
                const int k = ky * 3 + kx;
#pragma unroll
                for (int i = 0; i < 8; ++i)
                    if (oc0 + i < Cout)
                        acc[i] = fmaf(v, __ldg(w + (static_cast<long long>(oc0 + i) * Cin + c) * 9 + k),
                                      acc[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int oc = oc0 + i;
        if (oc < Cout_store)
            out[oc * plane + p] = (oc < Cout) ? (relu ? fmaxf(acc[i], 0.f) : acc[i]) : 0.f;
    }
}

// acc[o] += sum_c fw[o*ldf + c] * H[c]   (generic path's share of the f2 1x1 fusion)
__global__ void fuse_acc_kernel(const float* __restrict__ H, int width, long long plane,
                                const float* __restrict__ fw, int ldf, float* __restrict__ acc) {
    const long long p = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    float s[3] = {0.f, 0.f, 0.f};
    for (int c = 0; c < width; ++c) {
        const float h = H[c * plane + p];
#pragma unroll
        for (int o = 0; o < 3; ++o) s[o] = fmaf(__ldg(fw + o * ldf + c), h, s[o]);
    }
#pragma unroll
    for (int o = 0; o < 3; ++o) acc[o * plane + p] += s[o];
}

// Tail: X2 = X1 - (acc + fuse_b); Y = f3_w . X2 + f3_b, for the output tile only.
// X1/acc planar over the region; out: HWC (Th x Tw x 3).
__global__ void final_kernel(const float* __restrict__ X1, const float* __restrict__ acc,
                             long long plane, int Wr, int oy, int ox, int Th, int Tw,
                             const float* __restrict__ fb, const float* __restrict__ f3w,
                             const float* __restrict__ f3b, float* __restrict__ out) {
    const long long q = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (q >= static_cast<long long>(Th) * Tw) return;
    const int ty = static_cast<int>(q / Tw), tx = static_cast<int>(q % Tw);
    const long long p = static_cast<long long>(oy + ty) * Wr + (ox + tx);
    float x2[3];
#pragma unroll
    for (int c = 0; c < 3; ++c) x2[c] = X1[c * plane + p] - (acc[c * plane + p] + __ldg(fb + c));
#pragma unroll
    for (int o = 0; o < 3; ++o) {
        float y = __ldg(f3b + o);
#pragma unroll
        for (int c = 0; c < 3; ++c) y = fmaf(__ldg(f3w + o * 3 + c), x2[c], y);
        out[3 * q + o] = y;
    }
}

// ---- fast direct 3x3 conv, width -> width ----------------------------------
constexpr int kPX = 4;                 // adjacent pixels per thread (x)
constexpr int kTX = 8;                 // threads along x
constexpr int kTY = 8;                 // threads (rows) along y
constexpr int kBW = kTX * kPX;         // 32 pixels per block along x
constexpr int kBH = kTY;               // 8 rows per block
constexpr int kCC = 8;                 // input channels per shared-memory chunk
constexpr int kInRows = kBH + 2;       // 10
constexpr int kInCols = kBW + 2;       // 34
constexpr int kInPitch = 35;           // odd pitch: conflict-free row loads
constexpr int kInPlane = kInRows * kInPitch;  // 350
constexpr int kSIn = kCC * kInPlane;          // 2800 floats (multiple of 4)

template <int WIDTH>
constexpr int fast_threads() { return kTX * kTY * (WIDTH / 8); }

// in: Cin planes (Cin % 8 == 0); wt: [Cin][9][WIDTH]; b: WIDTH; out: WIDTH planes or
// nullptr (not stored); fw: f2 fuse weights already offset to this layer's column
// block, row stride ldf; acc: 3 planes, += this layer's contribution.
template <int WIDTH>
__global__ void __launch_bounds__(fast_threads<WIDTH>(), (fast_threads<WIDTH>() <= 256 ? 3 : 1))
conv3x3_fast_kernel(const float* __restrict__ in, int Cin, int Hr, int Wr,
                    const float* __restrict__ wt, const float* __restrict__ b,
                    float* __restrict__ out, const float* __restrict__ fw, int ldf,
                    float* __restrict__ acc_g) {
    constexpr int G = WIDTH / 8;              // output-channel groups (threadIdx.z)
    constexpr int NT = kTX * kTY * G;
    constexpr int kSW = kCC * 9 * WIDTH;
    constexpr int kPix = kBW * kBH;           // 256
    constexpr int kSRed = G * 3 * kPix;
    constexpr int kSmem = (kSIn + kSW) > kSRed ? (kSIn + kSW) : kSRed;
    __shared__ __align__(16) float smem[kSmem];
    float* s_in = smem;
    float* s_w = smem + kSIn;

    const int tx = threadIdx.x, ty = threadIdx.y, g = threadIdx.z;
    const int tid = tx + kTX * (ty + kTY * g);
    const int x0 = blockIdx.x * kBW, y0 = blockIdx.y * kBH;
    const long long plane = static_cast<long long>(Hr) * Wr;

    float acc[kPX][8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float bi = __ldg(b + g * 8 + i);
#pragma unroll
        for (int p = 0; p < kPX; ++p) acc[p][i] = bi;
    }

    for (int c0 = 0; c0 < Cin; c0 += kCC) {
        __syncthreads();  // everyone is done with the previous chunk
        for (int idx = tid; idx < kCC * kInRows * kInCols; idx += NT) {
            const int c = idx / (kInRows * kInCols);
            const int rem = idx - c * (kInRows * kInCols);
            const int r = rem / kInCols, col = rem - r * kInCols;
            const int gy = y0 - 1 + r, gx = x0 - 1 + col;
            float v = 0.f;
            if (gy >= 0 && gy < Hr && gx >= 0 && gx < Wr)
                v = in[(c0 + c) * plane + static_cast<long long>(gy) * Wr + gx];
            s_in[c * kInPlane + r * kInPitch + col] = v;
        }
        {
            const float4* src = reinterpret_cast<const float4*>(wt + static_cast<long long>(c0) * 9 * WIDTH);
            float4* dst = reinterpret_cast<float4*>(s_w);
            for (int idx = tid; idx < kSW / 4; idx += NT) dst[idx] = __ldg(src + idx);
        }
        __syncthreads();

#pragma unroll 2
        for (int c = 0; c < kCC; ++c) {
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const float* row = s_in + c * kInPlane + (ty + ky) * kInPitch + tx * kPX;
                float v[kPX + 2];
#pragma unroll
                for (int j = 0; j < kPX + 2; ++j) v[j] = row[j];
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const float4* wp =
                        reinterpret_cast<const float4*>(s_w + (c * 9 + ky * 3 + kx) * WIDTH + g * 8);
                    const float4 wa = wp[0], wb = wp[1];
#pragma unroll
                    for (int p = 0; p < kPX; ++p) {
                        const float a = v[p + kx];
                        acc[p][0] = fmaf(a, wa.x, acc[p][0]);
                        acc[p][1] = fmaf(a, wa.y, acc[p][1]);
                        acc[p][2] = fmaf(a, wa.z, acc[p][2]);
                        acc[p][3] = fmaf(a, wa.w, acc[p][3]);
                        acc[p][4] = fmaf(a, wb.x, acc[p][4]);
                        acc[p][5] = fmaf(a, wb.y, acc[p][5]);
                        acc[p][6] = fmaf(a, wb.z, acc[p][6]);
                        acc[p][7] = fmaf(a, wb.w, acc[p][7]);
                    }
                }
            }
        }
    }

    // ---- epilogue: ReLU, store H_m, fused 1x1 contribution ----
#pragma unroll
    for (int p = 0; p < kPX; ++p)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[p][i] = fmaxf(acc[p][i], 0.f);

    const int y = y0 + ty;
    const int xb = x0 + tx * kPX;
    if (out != nullptr && y < Hr) {
        const bool vec = ((Wr & 3) == 0) && (xb + kPX <= Wr);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            float* o = out + (g * 8 + i) * plane + static_cast<long long>(y) * Wr + xb;
            if (vec) {
                *reinterpret_cast<float4*>(o) = make_float4(acc[0][i], acc[1][i], acc[2][i], acc[3][i]);
            } else {
#pragma unroll
                for (int p = 0; p < kPX; ++p)
                    if (xb + p < Wr) o[p] = acc[p][i];
            }
        }
    }

    float part[3][kPX];
#pragma unroll
    for (int o = 0; o < 3; ++o) {
        float f[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = __ldg(fw + o * ldf + g * 8 + i);
#pragma unroll
        for (int p = 0; p < kPX; ++p) {
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) s = fmaf(f[i], acc[p][i], s);
            part[o][p] = s;
        }
    }
    __syncthreads();  // s_in / s_w no longer needed: reuse smem for the reduction
    float* s_red = smem;
    const int lp = ty * kBW + tx * kPX;
#pragma unroll
    for (int o = 0; o < 3; ++o)
#pragma unroll
        for (int p = 0; p < kPX; ++p) s_red[(g * 3 + o) * kPix + lp + p] = part[o][p];
    __syncthreads();
    for (int idx = tid; idx < 3 * kPix; idx += NT) {
        const int o = idx / kPix, px = idx - o * kPix;
        const int gy = y0 + px / kBW, gx = x0 + px % kBW;
        if (gy < Hr && gx < Wr) {
            float s = 0.f;
#pragma unroll
            for (int gg = 0; gg < G; ++gg) s += s_red[(gg * 3 + o) * kPix + px];
            acc_g[o * plane + static_cast<long long>(gy) * Wr + gx] += s;
        }
    }
}

// ---- TF32 tensor-core 3x3 conv (sm_80+), width 16 or 32 -> width -----------
// The same layer as conv3x3_fast_kernel (same block tile of 8 rows x 32 pixels, same
// weight layout, same epilogue), as an implicit GEMM on WMMA m16n16k8 TF32 fragments:
// M = pixels (warp w owns row w of the block tile: two M-tiles of 16 pixels), N = the
// WIDTH output channels (WIDTH / 16 N-tiles), K = 9 taps x chunks of 8 input channels.
// The input chunk is staged pixel-major ([row][col][8 channels]), so a tap's A operand
// (16 consecutive pixels x 8 channels) is a row-major matrix with ldm 8 whose start is
// always 32-byte aligned; B is the [cin][tap][WIDTH] weight block, row-major, ldm
// 9 * WIDTH. Inputs and weights are rounded to TF32 (10-bit mantissa, round to nearest)
// as they are staged; products accumulate in FP32. The accumulators are staged
// channel-major in shared memory (column stride 264, conflict-free reads) and each
// thread finishes one pixel: bias, ReLU, the H_m store, this layer's share of the f2
// 1x1 fusion. Accuracy bound: see cpp/cuda/standalone_test.cu (tf32 cases).
namespace wmma = nvcuda::wmma;
constexpr int kTcThreads = 32 * kBH;  // 8 warps, one per block row

constexpr bool tf32_width_supported(int width) { return width == 16 || width == 32; }

template <int WIDTH>
__global__ void __launch_bounds__(kTcThreads, 2)  // <= 128 registers: two blocks per SM
conv3x3_tf32_kernel(const float* __restrict__ in, int Cin, int Hr, int Wr,
                    const float* __restrict__ wt, const float* __restrict__ b,
                    float* __restrict__ out, const float* __restrict__ fw, int ldf,
                    float* __restrict__ acc_g) {
#if defined(MSRNET_CUDA_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
    static_assert(WIDTH % 16 == 0, "N-tiles of 16 channels");
    constexpr int kTcInPix = kInRows * kInCols;  // 340 staged input pixels
    constexpr int kTcSIn = kTcInPix * kCC;       // 2720 floats (10880 bytes, 32-byte multiple)
    constexpr int kTcLd = kBW * kBH + 8;         // 264: staged accumulator column stride
    constexpr int NF = WIDTH / 16;
    constexpr int kSW = kCC * 9 * WIDTH;
    constexpr int kStage = WIDTH * kTcLd;
    constexpr int kSmem = (kTcSIn + kSW) > kStage ? (kTcSIn + kSW) : kStage;
    __shared__ __align__(32) float smem[kSmem];
    float* s_in = smem;           // [kInRows][kInCols][kCC]
    float* s_w = smem + kTcSIn;   // [kCC][9][WIDTH]

    const int tid = threadIdx.x, warp = tid / 32;
    const int x0 = blockIdx.x * kBW, y0 = blockIdx.y * kBH;
    const long long plane = static_cast<long long>(Hr) * Wr;

    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][NF];
#pragma unroll
    for (int mf = 0; mf < 2; ++mf)
#pragma unroll
        for (int nf = 0; nf < NF; ++nf) wmma::fill_fragment(acc[mf][nf], 0.f);

    for (int c0 = 0; c0 < Cin; c0 += kCC) {
        __syncthreads();  // everyone is done with the previous chunk
        for (int idx = tid; idx < kCC * kTcInPix; idx += kTcThreads) {
            const int c = idx / kTcInPix, pix = idx - c * kTcInPix;  // coalesced global reads
            const int r = pix / kInCols, col = pix - r * kInCols;
            const int gy = y0 - 1 + r, gx = x0 - 1 + col;
            float v = 0.f;
            if (gy >= 0 && gy < Hr && gx >= 0 && gx < Wr)
                v = in[(c0 + c) * plane + static_cast<long long>(gy) * Wr + gx];
            s_in[pix * kCC + c] = wmma::__float_to_tf32(v);
        }
        const float* wsrc = wt + static_cast<long long>(c0) * 9 * WIDTH;
        for (int idx = tid; idx < kSW; idx += kTcThreads) s_w[idx] = wmma::__float_to_tf32(__ldg(wsrc + idx));
        __syncthreads();

#pragma unroll
        for (int tap = 0; tap < 9; ++tap) {
            const int ky = tap / 3, kx = tap % 3;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf[NF];
#pragma unroll
            for (int nf = 0; nf < NF; ++nf)
                wmma::load_matrix_sync(bf[nf], s_w + tap * WIDTH + nf * 16, 9 * WIDTH);
#pragma unroll
            for (int mf = 0; mf < 2; ++mf) {
                wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> af;
                wmma::load_matrix_sync(af, s_in + ((warp + ky) * kInCols + mf * 16 + kx) * kCC, kCC);
#pragma unroll
                for (int nf = 0; nf < NF; ++nf) wmma::mma_sync(acc[mf][nf], af, bf[nf], acc[mf][nf]);
            }
        }
    }

    __syncthreads();  // s_in / s_w no longer needed: stage the accumulators
    float* s_acc = smem;  // [WIDTH][kTcLd], pixel index = row * kBW + col
#pragma unroll
    for (int mf = 0; mf < 2; ++mf)
#pragma unroll
        for (int nf = 0; nf < NF; ++nf)
            wmma::store_matrix_sync(s_acc + nf * 16 * kTcLd + warp * kBW + mf * 16, acc[mf][nf], kTcLd,
                                    wmma::mem_col_major);
    __syncthreads();

    const int y = y0 + tid / kBW, x = x0 + tid % kBW;
    if (y < Hr && x < Wr) {
        const long long q = static_cast<long long>(y) * Wr + x;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f;
#pragma unroll 8
        for (int c = 0; c < WIDTH; ++c) {
            const float v = fmaxf(s_acc[c * kTcLd + tid] + __ldg(b + c), 0.f);
            if (out != nullptr) out[c * plane + q] = v;
            s0 = fmaf(__ldg(fw + c), v, s0);
            s1 = fmaf(__ldg(fw + ldf + c), v, s1);
            s2 = fmaf(__ldg(fw + 2 * ldf + c), v, s2);
        }
        acc_g[q] += s0;
        acc_g[plane + q] += s1;
        acc_g[2 * plane + q] += s2;
    }
#else
    // never launched: the host selects this kernel only on devices of compute capability >= 8.0
    (void)in; (void)Cin; (void)Hr; (void)Wr; (void)wt; (void)b; (void)out; (void)fw; (void)ldf;
    (void)acc_g;
    __trap();
#endif
}

// One f2 layer on the fast path: the FP32 kernel, or the TF32 one (widths 16, 32). Both
// cover the region with blocks of kBH rows x kBW pixels.
template <int WIDTH>
void launch_fast(bool tf32, cudaStream_t stream, const float* in, int Cin, int Hr, int Wr,
                 const float* wt, const float* b, float* out, const float* fw, int ldf, float* acc) {
    const dim3 grid(blocks_for(Wr, kBW), blocks_for(Hr, kBH));
    (void)stream;  // unused by the CPU emulation
    if constexpr (tf32_width_supported(WIDTH)) {
        if (tf32) {
            MSR_LAUNCH(conv3x3_tf32_kernel<WIDTH>, grid, dim3(kTcThreads), stream, in, Cin, Hr, Wr, wt,
                       b, out, fw, ldf, acc);
            return;
        }
    }
    if (tf32) throw std::logic_error("msrnet cuda: no tf32 kernel for this width");
    MSR_LAUNCH(conv3x3_fast_kernel<WIDTH>, grid, dim3(kTX, kTY, WIDTH / 8), stream, in, Cin, Hr, Wr,
               wt, b, out, fw, ldf, acc);
}

bool fast_width_supported(int width) {
    return width == 8 || width == 16 || width == 32 || width == 64;
}

// Allocator policies of Buffer: device memory and pinned (page-locked) host memory.
struct DeviceAlloc {
    static cudaError_t allocate(float** p, size_t bytes) {
        return cudaMalloc(reinterpret_cast<void**>(p), bytes);
    }
    static void release(float* p) noexcept { cudaFree(p); }
};

struct PinnedHostAlloc {
    static cudaError_t allocate(float** p, size_t bytes) {
        return cudaHostAlloc(reinterpret_cast<void**>(p), bytes, cudaHostAllocDefault);
    }
    static void release(float* p) noexcept { cudaFreeHost(p); }
};

// A float buffer that only grows (ensure), freed on destruction; not copyable.
template <class Alloc>
class Buffer {
public:
    float* ptr = nullptr;

    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }

    void release() noexcept {
        if (ptr) Alloc::release(ptr);
        ptr = nullptr;
        cap_ = 0;
    }
    void ensure(size_t n) {  // n floats
        if (n <= cap_) return;
        release();
        MSR_CUDA(Alloc::allocate(&ptr, n * sizeof(float)));
        cap_ = n;
    }

private:
    size_t cap_ = 0;  // floats
};

using DeviceBuffer = Buffer<DeviceAlloc>;
using HostBuffer = Buffer<PinnedHostAlloc>;

// Copies rows [0, rows) with copy_rows(r0, r1), split over a few CPU threads when
// the copy is large (host <-> pinned staging is otherwise the bottleneck for big
// single tiles: one thread's memcpy runs at ~10 GB/s).
template <class F>
void parallel_rows(int rows, size_t bytes_per_row, const F& copy_rows) {
    const size_t total = static_cast<size_t>(rows) * bytes_per_row;
    unsigned nt = std::min(8u, std::max(1u, std::thread::hardware_concurrency()));
    nt = std::min<unsigned>(nt, static_cast<unsigned>(std::max(1, rows)));
    if (total < (size_t(8) << 20) || nt <= 1) {
        copy_rows(0, rows);
        return;
    }
    std::vector<std::thread> pool;
    const int chunk = (rows + static_cast<int>(nt) - 1) / static_cast<int>(nt);
    int main_end = rows;  // this thread copies [0, main_end)
    try {
        for (unsigned t = 1; t < nt; ++t) {
            const int r0 = rows - static_cast<int>(t) * chunk;
            if (r0 <= 0) break;
            pool.emplace_back(copy_rows, r0, r0 + chunk);
            main_end = r0;
        }
    } catch (...) {  // could not start a thread: the rest is copied here
    }
    copy_rows(0, main_end);
    for (auto& th : pool) th.join();
}

}  // namespace

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------
struct CudaEngine::Impl {
    ModelSpec spec;
    int device = 0;
    bool fast = false;
    bool tf32 = false;  // f2's convolutions on the tensor cores (implies fast)
    int x1_planes = 3;  // X1 channels stored (8 on the fast path: zero padded)
    cudaStream_t stream = nullptr;
    cudaEvent_t events[2] = {nullptr, nullptr};
    std::mutex mutex;

    // weights, one allocation; offsets in floats
    DeviceBuffer wbuf;
    size_t o_bases = 0, o_invlog = 0, o_f1fw = 0, o_f1fb = 0, o_f1cw = 0, o_f1cb = 0;
    std::vector<size_t> o_f2w, o_f2b;
    size_t o_fusew = 0, o_fuseb = 0, o_f3w = 0, o_f3b = 0;

    // activations (capacity in region pixels / tile pixels)
    DeviceBuffer d_in, d_F, d_X1, d_hA, d_hB, d_acc, d_out;
    HostBuffer h_in[2], h_out[2];

    const float* W(size_t off) const { return wbuf.ptr + off; }

    ~Impl() {
        // Never throws: errors during teardown are ignored. The buffers free
        // themselves afterwards (member destructors).
        if (stream) cudaStreamSynchronize(stream);
        for (cudaEvent_t e : events)
            if (e) cudaEventDestroy(e);
        if (stream) cudaStreamDestroy(stream);
    }

    void upload(const Weights& w) {
        std::vector<float> blob;
        auto put = [&](const float* p, size_t n) {
            blob.resize((blob.size() + 63) / 64 * 64, 0.f);  // 256-byte aligned offsets
            const size_t off = blob.size();
            blob.insert(blob.end(), p, p + n);
            return off;
        };
        auto putv = [&](const std::vector<float>& v) { return put(v.data(), v.size()); };
        const int n = spec.n_scales();
        std::vector<float> inv(n);
        for (int j = 0; j < n; ++j) inv[j] = 1.0f / std::log1p(spec.log_bases[j]);  // fp32, as torch
        o_bases = putv(spec.log_bases);
        o_invlog = putv(inv);
        o_f1fw = putv(w.f1_fuse_w);
        o_f1fb = putv(w.f1_fuse_b);
        o_f1cw = putv(w.f1_conv_w);
        o_f1cb = putv(w.f1_conv_b);
        const int Wd = spec.width;
        o_f2w.resize(spec.depth);
        o_f2b.resize(spec.depth);
        for (int m = 0; m < spec.depth; ++m) {
            if (fast) {
                // [cin_pad][9][Wd] from OIHW; layer 0 has 3 inputs padded to kCC.
                const int cin = (m == 0) ? 3 : Wd;
                const int cin_pad = (m == 0) ? kCC : Wd;
                std::vector<float> t(static_cast<size_t>(cin_pad) * 9 * Wd, 0.f);
                for (int oc = 0; oc < Wd; ++oc)
                    for (int c = 0; c < cin; ++c)
                        for (int k = 0; k < 9; ++k)
                            t[(static_cast<size_t>(c) * 9 + k) * Wd + oc] =
                                w.f2_w[m][(static_cast<size_t>(oc) * cin + c) * 9 + k];
                o_f2w[m] = putv(t);
            } else {
                o_f2w[m] = putv(w.f2_w[m]);
            }
            o_f2b[m] = putv(w.f2_b[m]);
        }
        o_fusew = putv(w.f2_fuse_w);
        o_fuseb = putv(w.f2_fuse_b);
        o_f3w = putv(w.f3_w);
        o_f3b = putv(w.f3_b);
        blob.resize((blob.size() + 63) / 64 * 64, 0.f);
        wbuf.ensure(blob.size());
        MSR_CUDA(cudaMemcpyAsync(wbuf.ptr, blob.data(), blob.size() * sizeof(float),
                                 cudaMemcpyHostToDevice, stream));
        MSR_CUDA(cudaStreamSynchronize(stream));
    }

    void ensure_buffers(size_t region_px, size_t tile_px, int nsets) {
        d_in.ensure(3 * region_px);
        d_F.ensure(static_cast<size_t>(spec.f1_width) * region_px);
        d_X1.ensure(static_cast<size_t>(x1_planes) * region_px);
        d_hA.ensure(static_cast<size_t>(spec.width) * region_px);
        if (spec.depth > 1 || !fast) d_hB.ensure(static_cast<size_t>(spec.width) * region_px);
        d_acc.ensure(3 * region_px);
        d_out.ensure(3 * tile_px);
        for (int s = 0; s < nsets; ++s) {
            h_in[s].ensure(3 * region_px);
            h_out[s].ensure(3 * tile_px);
        }
    }

    // Enqueue the whole forward pass of one tile (d_in -> d_out) on `stream`.
    void enqueue_tile(const Tile& t) {
        const int Hr = t.region.height(), Wr = t.region.width();
        const long long plane = static_cast<long long>(Hr) * Wr;
        const unsigned gpix = blocks_for(plane, kThreads1D);
        const int Wd = spec.width, K = spec.depth, F = spec.f1_width;
        const int ldf = K * Wd;

        MSR_LAUNCH_NOSYNC(f1_fuse_kernel, dim3(gpix), dim3(kThreads1D), stream,
                          static_cast<const float*>(d_in.ptr), plane, W(o_bases), W(o_invlog),
                          spec.n_scales(), W(o_f1fw), W(o_f1fb), F, d_F.ptr);
        MSR_LAUNCH_NOSYNC(conv3x3_generic_kernel, dim3(gpix, (x1_planes + 7) / 8), dim3(kThreads1D),
                          stream, static_cast<const float*>(d_F.ptr), F, Hr, Wr, W(o_f1cw), W(o_f1cb),
                          3, x1_planes, d_X1.ptr, 0);
        MSR_CUDA(cudaMemsetAsync(d_acc.ptr, 0, 3 * static_cast<size_t>(plane) * sizeof(float), stream));

        const float* prev = d_X1.ptr;
        int cin = fast ? kCC : 3;
        for (int m = 0; m < K; ++m) {
            float* cur = (m % 2 == 0) ? d_hA.ptr : d_hB.ptr;
            const float* fw = W(o_fusew) + static_cast<size_t>(m) * Wd;
            if (fast) {
                float* dst = (m == K - 1) ? nullptr : cur;  // H_K is only needed by the fusion
                switch (Wd) {
                    case 8: launch_fast<8>(tf32, stream, prev, cin, Hr, Wr, W(o_f2w[m]), W(o_f2b[m]), dst, fw, ldf, d_acc.ptr); break;
                    case 16: launch_fast<16>(tf32, stream, prev, cin, Hr, Wr, W(o_f2w[m]), W(o_f2b[m]), dst, fw, ldf, d_acc.ptr); break;
                    case 32: launch_fast<32>(tf32, stream, prev, cin, Hr, Wr, W(o_f2w[m]), W(o_f2b[m]), dst, fw, ldf, d_acc.ptr); break;
                    case 64: launch_fast<64>(tf32, stream, prev, cin, Hr, Wr, W(o_f2w[m]), W(o_f2b[m]), dst, fw, ldf, d_acc.ptr); break;
                    default: throw std::logic_error("msrnet cuda: unsupported fast width");
                }
            } else {
                MSR_LAUNCH_NOSYNC(conv3x3_generic_kernel, dim3(gpix, (Wd + 7) / 8), dim3(kThreads1D),
                                  stream, prev, cin, Hr, Wr, W(o_f2w[m]), W(o_f2b[m]), Wd, Wd, cur, 1);
                MSR_LAUNCH_NOSYNC(fuse_acc_kernel, dim3(gpix), dim3(kThreads1D), stream,
                                  static_cast<const float*>(cur), Wd, plane, fw, ldf, d_acc.ptr);
            }
            prev = cur;
            cin = Wd;
        }

        const int th = t.out.height(), tw = t.out.width();
        const long long tpix = static_cast<long long>(th) * tw;
        MSR_LAUNCH_NOSYNC(final_kernel, dim3(blocks_for(tpix, kThreads1D)), dim3(kThreads1D), stream,
                          static_cast<const float*>(d_X1.ptr), static_cast<const float*>(d_acc.ptr),
                          plane, Wr, t.out.y0 - t.region.y0, t.out.x0 - t.region.x0, th, tw,
                          W(o_fuseb), W(o_f3w), W(o_f3b), d_out.ptr);
    }
};

int device_count() {
    try {
        int n = 0;
        const cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();  // clear the (non-sticky) error
            return 0;
        }
        return n > 0 ? n : 0;
    } catch (...) {
        return 0;
    }
}

CudaEngine::CudaEngine(const ModelSpec& spec, const Weights& weights, int device,
                       Precision precision)
    : impl_(std::make_unique<Impl>()) {
    validate(spec, weights);
    const int n = device_count();
    if (n == 0) throw std::runtime_error("msrnet CUDA engine: no CUDA device (or driver) available");
    if (device < 0 || device >= n)
        throw std::invalid_argument("msrnet CUDA engine: device " + std::to_string(device) +
                                    " out of range (" + std::to_string(n) + " devices)");
    Impl& m = *impl_;
    m.spec = spec;
    m.device = device;
    const char* force_generic = std::getenv("MSRNET_CUDA_GENERIC");
    m.fast = fast_width_supported(spec.width) && !(force_generic && *force_generic && *force_generic != '0');
    m.x1_planes = m.fast ? kCC : 3;
    MSR_CUDA(cudaSetDevice(device));
    if (precision == Precision::TF32 && m.fast && tf32_width_supported(spec.width)) {
        int major = 0;
        MSR_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        m.tf32 = major >= 8;  // tensor-core TF32 arrived with Ampere
    }
    MSR_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
    for (auto& e : m.events) MSR_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    m.upload(weights);
}

CudaEngine::~CudaEngine() = default;

int CudaEngine::device() const { return impl_->device; }
int CudaEngine::receptive_radius() const { return impl_->spec.receptive_radius(); }
Precision CudaEngine::precision() const { return impl_->tf32 ? Precision::TF32 : Precision::FP32; }

void CudaEngine::run(const float* in, float* out, int H, int W, int tile, const ProgressFn& progress) {
    if (H < 0 || W < 0) throw std::invalid_argument("msrnet CUDA engine: negative image size");
    if (H == 0 || W == 0) return;
    if (!in || !out) throw std::invalid_argument("msrnet CUDA engine: null image pointer");
    Impl& m = *impl_;
    std::lock_guard<std::mutex> lock(m.mutex);
    MSR_CUDA(cudaSetDevice(m.device));

    const TileGrid grid(H, W, tile, m.spec.receptive_radius());
    const int nsets = grid.count() > 1 ? 2 : 1;
    m.ensure_buffers(grid.max_region_pixels(), grid.max_tile_pixels(), nsets);

    // Pipeline (lookahead 1): the CPU stages tile i+1's input and unstages tile
    // i-1's output while the GPU computes tile i (two pinned staging sets, one stream).
    auto begin = [&](const Tile& t) {
        const int s = t.index % nsets;
        const Rect& r = t.region;
        float* st = m.h_in[s].ptr;
        const size_t row_bytes = static_cast<size_t>(r.width()) * 3 * sizeof(float);
        parallel_rows(r.height(), row_bytes, [&](int r0, int r1) {
            for (int y = r0; y < r1; ++y)
                std::memcpy(st + static_cast<size_t>(y) * r.width() * 3,
                            in + (static_cast<size_t>(r.y0 + y) * W + r.x0) * 3, row_bytes);
        });
        MSR_CUDA(cudaMemcpyAsync(m.d_in.ptr, st,
                                 static_cast<size_t>(r.height()) * r.width() * 3 * sizeof(float),
                                 cudaMemcpyHostToDevice, m.stream));
        m.enqueue_tile(t);
        MSR_CUDA(cudaMemcpyAsync(m.h_out[s].ptr, m.d_out.ptr,
                                 static_cast<size_t>(t.out.height()) * t.out.width() * 3 * sizeof(float),
                                 cudaMemcpyDeviceToHost, m.stream));
        MSR_CUDA(cudaEventRecord(m.events[s], m.stream));
    };
    auto end = [&](const Tile& t) {
        const int s = t.index % nsets;
        MSR_CUDA(cudaEventSynchronize(m.events[s]));
        const Rect& o = t.out;
        const float* src = m.h_out[s].ptr;
        const size_t row_bytes = static_cast<size_t>(o.width()) * 3 * sizeof(float);
        parallel_rows(o.height(), row_bytes, [&](int r0, int r1) {
            for (int y = r0; y < r1; ++y)
                std::memcpy(out + (static_cast<size_t>(o.y0 + y) * W + o.x0) * 3,
                            src + static_cast<size_t>(y) * o.width() * 3, row_bytes);
        });
    };
    try {
        for_each_tile(grid, progress, /*lookahead=*/nsets - 1, begin, end);
    } catch (...) {
        cudaStreamSynchronize(m.stream);  // leave nothing in flight on our buffers
        throw;
    }
}

}  // namespace msrnet::cuda
