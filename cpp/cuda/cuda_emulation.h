// CPU emulation of the small subset of CUDA that cuda_engine.cu uses.
//
// Test-only: lets the whole CUDA engine (kernels + host orchestration) be compiled
// as plain C++ and checked on a machine without a GPU:
//   g++ -std=c++17 -O1 -pthread -x c++ -DMSRNET_CUDA_EMULATE -I cpp/include -I cpp/cuda
//       cpp/cuda/cuda_engine.cu cpp/cuda/standalone_test.cu -o /tmp/msrnet_cuda_emu
// Each block runs with one std::thread per CUDA thread (a real barrier implements
// __syncthreads), blocks one after another; __shared__ becomes a function-local
// static. Device allocations are filled with NaN so reads of uninitialised memory
// show up in the output. Never used in the real build.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#ifndef __restrict__
#define __restrict__
#endif

template <class T> inline T __ldg(const T* p) { return *p; }

namespace msrnet_emu {
struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    int n = 0, count = 0;
    long generation = 0;
    void wait() {
        std::unique_lock<std::mutex> lock(m);
        long gen = generation;
        if (++count == n) {
            count = 0;
            ++generation;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != gen; });
        }
    }
};
inline Barrier* g_barrier = nullptr;

// barrier=false: the kernel never calls __syncthreads, so its threads run one after
// another on the calling thread (much faster).
template <class F, class... A>
void launch(bool barrier, F kernel, dim3 grid, dim3 block, A... args) {
    const unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                auto body = [&](unsigned t) {
                    gridDim = grid;
                    blockDim = block;
                    blockIdx = dim3(bx, by, bz);
                    threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                    kernel(args...);
                };
                if (!barrier) {
                    for (unsigned t = 0; t < nt; ++t) body(t);
                    continue;
                }
                Barrier bar;
                bar.n = static_cast<int>(nt);
                g_barrier = &bar;
                std::vector<std::thread> threads;
                threads.reserve(nt);
                for (unsigned t = 0; t < nt; ++t) threads.emplace_back(body, t);
                for (auto& th : threads) th.join();
                g_barrier = nullptr;
            }
}
}  // namespace msrnet_emu

inline void __syncthreads() { msrnet_emu::g_barrier->wait(); }

// ---- runtime API subset ----------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
using cudaStream_t = struct CUstream_emu*;
using cudaEvent_t = struct CUevent_emu*;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0;

inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
    }
    return "unknown error";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = std::malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    std::memset(*p, 0xFF, bytes);  // NaN pattern: uninitialised reads become visible
    return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
    std::memcpy(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
    std::memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    *s = reinterpret_cast<cudaStream_t>(new char);
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<char*>(s); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
    *e = reinterpret_cast<cudaEvent_t>(new char);
    return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<char*>(e); return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }

enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
// The emulated device is an sm_90 (Hopper): the TF32 tensor-core path is available.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return cudaErrorInvalidValue;
    *value = attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
    return cudaSuccess;
}

// ---- WMMA subset (nvcuda::wmma, TF32 m16n16k8) ------------------------------
// A fragment here holds the WHOLE matrix (the real element-to-lane mapping is
// unspecified, so code that only uses load/store/mma/fill cannot tell the difference),
// kept by lane 0 of each warp: the operations are warp-collective, so lane 0 does a
// warp's work and the other lanes skip it (their fragments are never read: a stored
// tile comes from lane 0). Callers must __syncthreads before other threads read a
// stored tile - as they must on the GPU. The hardware's rules are checked for every
// lane: a 256-bit aligned pointer and ldm a multiple of 4 floats (16 bytes).
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
inline void check_ptr(const void* p, unsigned ldm, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || ldm % 4 != 0) {
        std::fprintf(stderr, "wmma emulation: %s needs a 32-byte aligned pointer and ldm %% 4 == 0 "
                             "(got %p, ldm %u)\n", what, p, ldm);
        std::abort();
    }
}
inline unsigned lane() {
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return t % 32;
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment;

template <class Layout>
struct fragment<matrix_a, 16, 16, 8, precision::tf32, Layout> {
    static constexpr int rows = 16, cols = 8, num_elements = 16 * 8;
    float x[num_elements];  // row-major 16 x 8
    static constexpr bool col = std::is_same<Layout, col_major>::value;
};
template <class Layout>
struct fragment<matrix_b, 16, 16, 8, precision::tf32, Layout> {
    static constexpr int rows = 8, cols = 16, num_elements = 8 * 16;
    float x[num_elements];  // row-major 8 x 16
    static constexpr bool col = std::is_same<Layout, col_major>::value;
};
template <>
struct fragment<accumulator, 16, 16, 8, float, void> {
    static constexpr int rows = 16, cols = 16, num_elements = 16 * 16;
    float x[num_elements];  // row-major 16 x 16
};

template <class Frag>
inline void load_matrix_sync(Frag& f, const float* p, unsigned ldm) {
    detail::check_ptr(p, ldm, "load_matrix_sync");
    if (detail::lane() != 0) return;
    for (int i = 0; i < Frag::rows; ++i)
        for (int j = 0; j < Frag::cols; ++j)
            f.x[i * Frag::cols + j] = Frag::col ? p[j * ldm + i] : p[i * ldm + j];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 8, float, void>& f,
                              unsigned ldm, layout_t layout) {
    detail::check_ptr(p, ldm, "store_matrix_sync");
    if (detail::lane() != 0) return;
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
            (layout == mem_col_major ? p[j * ldm + i] : p[i * ldm + j]) = f.x[i * 16 + j];
}

inline void fill_fragment(fragment<accumulator, 16, 16, 8, float, void>& f, float v) {
    for (float& e : f.x) e = v;
}

template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 8, float, void>& d,
                     const fragment<matrix_a, 16, 16, 8, precision::tf32, LA>& a,
                     const fragment<matrix_b, 16, 16, 8, precision::tf32, LB>& b,
                     const fragment<accumulator, 16, 16, 8, float, void>& c) {
    if (detail::lane() != 0) return;
    float r[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 8; ++k) s = std::fma(a.x[i * 8 + k], b.x[k * 16 + j], s);
            r[i * 16 + j] = s;
        }
    std::memcpy(d.x, r, sizeof r);
}

// cvt.rna.tf32.f32: round to nearest (ties away from zero) to 10 mantissa bits.
inline float __float_to_tf32(float v) {
    if (!std::isfinite(v)) return v;
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = (u + 0x1000u) & 0xFFFFE000u;
    std::memcpy(&v, &u, 4);
    return v;
}
}  // namespace wmma
}  // namespace nvcuda
