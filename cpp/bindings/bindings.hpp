// Declarations of the per-area binding functions that module.cpp calls.
#pragma once

#include <pybind11/pybind11.h>

namespace vllm_router {

void bind_config(pybind11::module_& m);
void bind_router(pybind11::module_& m);
// [bindings: declare new areas below this line]
void bind_sim(pybind11::module_& m);

}  // namespace vllm_router
