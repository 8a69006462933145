// vllm_router._core: the Python face of the compiled router. Only this folder includes pybind11.
// Each area binds itself in its own file (bind_config, ...) and is registered here.
#include <pybind11/pybind11.h>

#include "bindings/bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "vllm-router's compiled core: configuration, proxy, simulated engine";
    vllm_router::bind_config(m);
    vllm_router::bind_router(m);
    // [bindings: register new areas below this line]
    vllm_router::bind_sim(m);
}
