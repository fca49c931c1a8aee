// pybind11 module msrnet_napari._core (API in docs/ARCHITECTURE.md, typed in
// src/msrnet_napari/_core.pyi).
//
// Python side: config dict (MSRNetConfig.engine_dict()) + PyTorch state-dict names
// -> ModelSpec / Weights through the tables of msrnet/model.h; images as float32
// H x W x 3 C-contiguous arrays.
// Compute runs with the GIL released; progress callbacks re-acquire it.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <climits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
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

// Upper limit of a config field: msrnet_napari.config.MAX_<NAME> (the one
// definition of the architecture limits), on an int field's value or a list
// field's length. Read once per field; the GIL is held (engine constructors).
std::string limit_name(const std::string& field) {
    std::string attr = "MAX_";
    for (char ch : field) attr += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return attr;
}

int arch_limit(const std::string& field) {
    static std::map<std::string, int> cache;
    const auto it = cache.find(field);
    if (it != cache.end()) return it->second;
    const int limit = py::module_::import("msrnet_napari.config")
                          .attr(limit_name(field).c_str())
                          .cast<int>();
    cache.emplace(field, limit);
    return limit;
}

// Reads one config field from the dict and checks it against its limit.
template <class T>
void read_field(const py::dict& cfg, const char* name, T& field) {
    if (!cfg.contains(name))
        throw py::value_error(std::string("missing MSR-net config key: ") + name);
    field = cfg[name].cast<T>();
    const int limit = arch_limit(name);
    const std::string source = " (msrnet_napari.config." + limit_name(name) + ")";
    if constexpr (std::is_same_v<T, int>) {
        if (field < 1 || field > limit)
            throw py::value_error(std::string(name) + " must lie in 1.." + std::to_string(limit) +
                                  source + ", got " + std::to_string(field));
    } else {
        if (field.empty() || field.size() > static_cast<size_t>(limit))
            throw py::value_error(std::string(name) + " must hold 1.." + std::to_string(limit) +
                                  " values" + source + ", got " + std::to_string(field.size()));
    }
}

// config.MSRNetConfig.engine_dict() -> ModelSpec: exactly the fields of
// msrnet::for_each_config_field, each within 1..config.MAX_<NAME>.
ModelSpec spec_from_dict(const py::dict& cfg) {
    ModelSpec spec;
    std::set<std::string> fields;
    for_each_config_field(spec, [&](const char* name, auto&) { fields.insert(name); });
    for (auto item : cfg) {
        const std::string key = py::str(item.first);
        if (!fields.count(key)) throw py::value_error("unknown MSR-net config key: " + key);
    }
    for_each_config_field(spec, [&](const char* name, auto& field) { read_field(cfg, name, field); });
    validate(spec);
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

// The state dict -> Weights, by the layer table (msrnet::for_each_parameter):
// every entry it names, with its shape, and nothing else.
Weights weights_from_dict(const ModelSpec& spec, const py::dict& d) {
    Weights w;
    std::set<std::string> names;
    for_each_parameter(spec, w, [&](const std::string& name, const Shape& shape,
                                    std::vector<float>& values) {
        names.insert(name);
        values = take(d, name, std::vector<py::ssize_t>(shape.begin(), shape.end()));
    });
    if (py::len(d) != names.size()) {
        std::string extra;
        for (auto item : d) {
            const std::string key = py::str(item.first);
            if (!names.count(key)) extra += (extra.empty() ? "" : ", ") + key;
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
    PyCudaEngine(const py::dict& config, const py::dict& weights, int device,
                 const std::string& precision)
        : spec(spec_from_dict(config)) {
        if (precision != "fp32" && precision != "tf32")
            throw py::value_error("precision must be 'fp32' or 'tf32', got '" + precision + "'");
        const Weights w = weights_from_dict(spec, weights);
        engine = std::make_unique<cuda::CudaEngine>(
            spec, w, device, precision == "tf32" ? cuda::Precision::TF32 : cuda::Precision::FP32);
    }
};
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "MSR-net inference engines (C++ CPU with SIMD + OpenMP, optional CUDA)";
    py::register_exception<Cancelled>(m, "Cancelled");

#ifdef MSRNET_VERSION
    m.attr("__version__") = MSRNET_VERSION;  // CMake: the package version (one place)
#endif
    m.def("simd_level", &simd_level, "Kernel set used by the CPU engine: avx512, avx2 or generic");
    m.def(
        "parameter_shapes",
        [](const py::dict& config) {
            py::dict out;
            for (const auto& [name, shape] : parameter_shapes(spec_from_dict(config)))
                out[py::str(name)] = py::tuple(py::cast(shape));
            return out;
        },
        py::arg("config"),
        "State-dict name -> shape of every weight the engine expects for this config, in "
        "forward order (the C++ layer table; equals msrnet_napari.config.parameter_shapes)");

    py::class_<PyCpuEngine>(m, "Engine")
        .def(py::init<const py::dict&, const py::dict&>(), py::arg("config"), py::arg("weights"))
        .def(
            "run",
            [](PyCpuEngine& self, const py::array& image, std::optional<int> tile, int threads,
               const py::object& progress) {
                return run_image(image, tile.value_or(self.engine->default_tile()), threads, progress,
                                 [&](const float* in, float* out, int H, int W, int t, int th,
                                     const ProgressFn& cb) {
                                     self.engine->run(in, out, H, W, t, th, cb);
                                 });
            },
            py::arg("image"), py::arg("tile") = py::none(), py::arg("threads") = 0,
            py::arg("progress") = py::none())
        .def_property_readonly("receptive_radius",
                               [](const PyCpuEngine& self) { return self.spec.receptive_radius(); })
        .def_property_readonly(
            "default_tile", [](const PyCpuEngine& self) { return self.engine->default_tile(); },
            "Tile edge that fits one thread's workspace in its share of the cache")
        .def(
            "plan",
            [](const PyCpuEngine& self, int height, int width, std::optional<int> tile_arg,
               int threads) {
                const int tile = tile_arg.value_or(self.engine->default_tile());
                if (height < 0 || width < 0) throw py::value_error("image size must be >= 0");
                if (tile < 1) throw py::value_error("tile must be >= 1");
                if (threads < 0 || threads > kMaxThreads)
                    throw py::value_error("threads must lie in 0.." + std::to_string(kMaxThreads));
                const RunPlan p = plan_run(height, width, tile, threads > 0 ? threads : cpu_count(),
                                           self.spec.receptive_radius(), cpu_count());
                return py::make_tuple(p.tile, p.tiles, p.threads);
            },
            py::arg("height"), py::arg("width"), py::arg("tile") = py::none(), py::arg("threads") = 0,
            "(tile, tiles, threads) that run() uses for an image of this size");

#ifdef MSRNET_WITH_CUDA
    m.attr("has_cuda") = true;
    m.def("cuda_device_count", [] { return cuda::device_count(); });
    py::class_<PyCudaEngine>(m, "CudaEngine")
        .def(py::init<const py::dict&, const py::dict&, int, const std::string&>(),
             py::arg("config"), py::arg("weights"), py::arg("device") = 0,
             py::arg("precision") = "fp32")
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
                               [](const PyCudaEngine& self) { return self.spec.receptive_radius(); })
        .def_property_readonly(
            "precision",
            [](const PyCudaEngine& self) {
                return std::string(self.engine->precision() == cuda::Precision::TF32 ? "tf32" : "fp32");
            },
            "Arithmetic of f2's convolutions actually used: 'tf32' only where requested and the "
            "device (compute capability >= 8.0) and width (16 or 32) allow it");
#else
    m.attr("has_cuda") = false;
    m.def("cuda_device_count", [] { return 0; });
#endif
}
