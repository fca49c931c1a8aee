// pybind11 module msrnet_napari._core (API in docs/ARCHITECTURE.md).
//
// Python side: config dict (MSRNetConfig.to_dict()) + PyTorch state-dict names
// -> ModelSpec / Weights; images as float32 H x W x 3 C-contiguous arrays.
// Compute runs with the GIL released; progress callbacks re-acquire it.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <map>
#include <string>
#include <vector>

#include "engine_cpu.h"
#include "msrnet/model.h"

#ifdef MSRNET_WITH_CUDA
#include "cuda/cuda_engine.h"
#endif

namespace py = pybind11;
using namespace msrnet;

namespace {

// Upper bound of the `threads` argument: more OpenMP threads than this is a
// caller bug (and libgomp aborts the process when it cannot create them).
constexpr int kMaxThreads = 1024;

// Architecture limits: the one definition is msrnet_napari.config (MAX_DEPTH,
// MAX_WIDTH, MAX_F1_WIDTH, MAX_LOG_BASES); read once, with these fallbacks if
// the module cannot be imported (the extension used on its own).
struct ArchLimits {
    int depth = 64, width = 256, f1_width = 64, log_bases = 16;
};

const ArchLimits& arch_limits() {
    static const ArchLimits limits = [] {
        ArchLimits l;
        try {
            py::module_ cfg = py::module_::import("msrnet_napari.config");
            l.depth = cfg.attr("MAX_DEPTH").cast<int>();
            l.width = cfg.attr("MAX_WIDTH").cast<int>();
            l.f1_width = cfg.attr("MAX_F1_WIDTH").cast<int>();
            l.log_bases = cfg.attr("MAX_LOG_BASES").cast<int>();
        } catch (const std::exception&) {
            PyErr_Clear();
            l = ArchLimits();
        }
        return l;
    }();
    return limits;
}

ModelSpec spec_from_dict(const py::dict& cfg) {
    ModelSpec spec;
    for (auto item : cfg) {
        const std::string key = py::str(item.first);
        // exposure_target is a whole-image input gain that the caller applies
        // (msrnet_napari.enhance); the engine computes the network itself.
        if (key != "log_bases" && key != "depth" && key != "width" && key != "f1_width" &&
            key != "exposure_target")
            throw py::value_error("unknown MSR-net config key: " + key);
    }
    if (cfg.contains("log_bases")) spec.log_bases = cfg["log_bases"].cast<std::vector<float>>();
    else spec.log_bases = {1.0f, 10.0f, 100.0f, 300.0f};
    if (cfg.contains("depth")) spec.depth = cfg["depth"].cast<int>();
    if (cfg.contains("width")) spec.width = cfg["width"].cast<int>();
    if (cfg.contains("f1_width")) spec.f1_width = cfg["f1_width"].cast<int>();
    const ArchLimits& lim = arch_limits();
    if (spec.log_bases.empty() || spec.log_bases.size() > static_cast<size_t>(lim.log_bases))
        throw py::value_error("log_bases must hold 1.." + std::to_string(lim.log_bases) +
                              " scales");
    if (spec.depth < 1 || spec.width < 1 || spec.f1_width < 1 || spec.depth > lim.depth ||
        spec.width > lim.width || spec.f1_width > lim.f1_width)
        throw py::value_error("depth, width and f1_width must lie in 1.." +
                              std::to_string(lim.depth) + ", 1.." + std::to_string(lim.width) +
                              " and 1.." + std::to_string(lim.f1_width) +
                              " (msrnet_napari.config.MAX_*)");
    for (float v : spec.log_bases)
        if (!(v > 0.0f)) throw py::value_error("log_bases must all be > 0");
    return spec;
}

std::string shape_str(const std::vector<py::ssize_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + (s.size() == 1 ? ",)" : ")");
}

// Copies one state-dict entry after checking its shape. The array handle is
// dropped before any error is thrown: throwing while it was alive crashed the
// interpreter on one toolchain (gcc 13, Python 3.12), though not on ours.
std::vector<float> take(const py::dict& weights, const std::string& name,
                        std::vector<py::ssize_t> shape) {
    if (!weights.contains(name)) throw py::value_error("missing weight '" + name + "'");
    std::vector<py::ssize_t> got;
    std::vector<float> values;
    bool numeric = false;
    {
        auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(
            weights[name.c_str()]);
        if (a) {
            numeric = true;
            got.assign(a.shape(), a.shape() + a.ndim());
            if (got == shape) values.assign(a.data(), a.data() + a.size());
        }
    }
    if (!numeric) throw py::type_error("weight '" + name + "' is not a numeric array");
    if (got != shape)
        throw py::value_error("weight '" + name + "' has shape " + shape_str(got) +
                              ", the config expects " + shape_str(shape));
    return values;
}

Weights weights_from_dict(const ModelSpec& spec, const py::dict& d) {
    const py::ssize_t c = kChannels, n3 = c * spec.n_scales(), f = spec.f1_width;
    const py::ssize_t wd = spec.width, k = spec.depth;
    Weights w;
    size_t used = 0;
    auto get = [&](const std::string& name, std::vector<py::ssize_t> shape) {
        ++used;
        return take(d, name, std::move(shape));
    };
    w.f1_fuse_w = get("f1.fuse.weight", {f, n3, 1, 1});
    w.f1_fuse_b = get("f1.fuse.bias", {f});
    w.f1_conv_w = get("f1.conv.weight", {c, f, 3, 3});
    w.f1_conv_b = get("f1.conv.bias", {c});
    for (py::ssize_t m = 0; m < k; ++m) {
        const std::string p = "f2.convs." + std::to_string(m);
        w.f2_w.push_back(get(p + ".weight", {wd, m == 0 ? c : wd, 3, 3}));
        w.f2_b.push_back(get(p + ".bias", {wd}));
    }
    w.f2_fuse_w = get("f2.fuse.weight", {c, k * wd, 1, 1});
    w.f2_fuse_b = get("f2.fuse.bias", {c});
    w.f3_w = get("f3.weight", {c, c, 1, 1});
    w.f3_b = get("f3.bias", {c});
    if (py::len(d) != used) {
        std::string extra;
        for (auto item : d) {
            const std::string key = py::str(item.first);
            bool known = key.rfind("f1.", 0) == 0 || key.rfind("f3.", 0) == 0 ||
                         key == "f2.fuse.weight" || key == "f2.fuse.bias";
            if (key.rfind("f2.convs.", 0) == 0) {
                const std::string rest = key.substr(9);
                const size_t dot = rest.find('.');
                try {
                    known = dot != std::string::npos && std::stoi(rest.substr(0, dot)) < k;
                } catch (...) {
                    known = false;
                }
            }
            if (!known) extra += (extra.empty() ? "" : ", ") + key;
        }
        throw py::value_error("unexpected weights for this config: " +
                              (extra.empty() ? std::string("(duplicate names)") : extra));
    }
    validate(spec, w);
    return w;
}

// Checks the image and returns (H, W).
std::pair<int, int> check_image(const py::array& image) {
    if (!py::isinstance<py::array_t<float>>(image))
        throw py::type_error("image must be a float32 array, got dtype " +
                             std::string(py::str(image.dtype())));
    if (image.ndim() != 3 || image.shape(2) != kChannels)
        throw py::value_error("image must have shape (H, W, 3)");
    if (!(image.flags() & py::array::c_style))
        throw py::value_error("image must be C-contiguous (use np.ascontiguousarray)");
    if (image.shape(0) > INT_MAX / 4 || image.shape(1) > INT_MAX / 4)
        throw py::value_error("image is too large");
    return {static_cast<int>(image.shape(0)), static_cast<int>(image.shape(1))};
}

// Wraps a Python progress callable: GIL held during the call; None keeps going,
// a falsy value cancels; Python exceptions propagate as error_already_set.
ProgressFn wrap_progress(const py::object& progress) {
    if (progress.is_none()) return nullptr;
    return [&progress](int done, int total) -> bool {
        py::gil_scoped_acquire gil;
        py::object r = progress(done, total);
        return r.is_none() || PyObject_IsTrue(r.ptr()) == 1;
    };
}

template <class RunFn>
py::array_t<float> run_image(const py::array& image, int tile, int threads,
                             const py::object& progress, RunFn&& fn) {
    if (tile < 1) throw py::value_error("tile must be >= 1");
    if (threads < 0 || threads > kMaxThreads)
        throw py::value_error("threads must lie in 0.." + std::to_string(kMaxThreads) +
                              " (0 = all cores), got " + std::to_string(threads));
    if (!progress.is_none() && !PyCallable_Check(progress.ptr()))
        throw py::type_error("progress must be callable or None");
    const auto [H, W] = check_image(image);
    py::array_t<float> out({static_cast<py::ssize_t>(H), static_cast<py::ssize_t>(W),
                            static_cast<py::ssize_t>(kChannels)});
    const float* in = static_cast<const float*>(image.data());
    float* o = out.mutable_data();
    const ProgressFn cb = wrap_progress(progress);
    {
        py::gil_scoped_release release;
        fn(in, o, H, W, tile, threads, cb);
    }
    return out;
}

struct PyCpuEngine {
    ModelSpec spec;
    std::unique_ptr<CpuEngine> engine;
    PyCpuEngine(const py::dict& config, const py::dict& weights) : spec(spec_from_dict(config)) {
        const Weights w = weights_from_dict(spec, weights);
        engine = std::make_unique<CpuEngine>(spec, w);
    }
};

#ifdef MSRNET_WITH_CUDA
struct PyCudaEngine {
    ModelSpec spec;
    std::unique_ptr<cuda::CudaEngine> engine;
    PyCudaEngine(const py::dict& config, const py::dict& weights, int device)
        : spec(spec_from_dict(config)) {
        const Weights w = weights_from_dict(spec, weights);
        engine = std::make_unique<cuda::CudaEngine>(spec, w, device);
    }
};
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "MSR-net inference engines (C++ CPU with SIMD + OpenMP, optional CUDA)";
    py::register_exception<Cancelled>(m, "Cancelled");

    m.def("simd_level", &simd_level, "Kernel set used by the CPU engine: avx512, avx2 or generic");

    py::class_<PyCpuEngine>(m, "Engine")
        .def(py::init<const py::dict&, const py::dict&>(), py::arg("config"), py::arg("weights"))
        .def(
            "run",
            [](PyCpuEngine& self, const py::array& image, int tile, int threads,
               const py::object& progress) {
                return run_image(image, tile, threads, progress,
                                 [&](const float* in, float* out, int H, int W, int t, int th,
                                     const ProgressFn& cb) {
                                     self.engine->run(in, out, H, W, t, th, cb);
                                 });
            },
            py::arg("image"), py::arg("tile") = 256, py::arg("threads") = 0,
            py::arg("progress") = py::none())
        .def_property_readonly("receptive_radius",
                               [](const PyCpuEngine& self) { return self.spec.receptive_radius(); });

#ifdef MSRNET_WITH_CUDA
    m.attr("has_cuda") = true;
    m.def("cuda_device_count", [] { return cuda::device_count(); });
    py::class_<PyCudaEngine>(m, "CudaEngine")
        .def(py::init<const py::dict&, const py::dict&, int>(), py::arg("config"),
             py::arg("weights"), py::arg("device") = 0)
        .def(
            "run",
            [](PyCudaEngine& self, const py::array& image, int tile, int threads,
               const py::object& progress) {
                (void)threads;  // the GPU engine has no CPU thread pool
                return run_image(image, tile, threads, progress,
                                 [&](const float* in, float* out, int H, int W, int t, int,
                                     const ProgressFn& cb) {
                                     self.engine->run(in, out, H, W, t, cb);
                                 });
            },
            py::arg("image"), py::arg("tile") = 256, py::arg("threads") = 0,
            py::arg("progress") = py::none())
        .def_property_readonly("receptive_radius",
                               [](const PyCudaEngine& self) { return self.spec.receptive_radius(); });
#else
    m.attr("has_cuda") = false;
    m.def("cuda_device_count", [] { return 0; });
#endif
}
