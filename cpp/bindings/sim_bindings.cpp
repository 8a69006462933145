// Binds the simulated vLLM engine, so that pytest, the demo and the benchmarks can start fake GPU
// servers in-process: _core.SimEngine(model=..., ttft=...).start() -> port.
#include <pybind11/pybind11.h>

#include "bindings/bindings.hpp"
#include "sim/sim_engine.hpp"

namespace py = pybind11;

namespace vllm_router {

void bind_sim(py::module_& m) {
    py::class_<SimEngine>(m, "SimEngine",
                          "A simulated vLLM OpenAI-compatible server on its own I/O threads.")
        .def(py::init([](std::string host, std::uint16_t port, std::string model, double ttft, double token_delay,
                         int max_tokens, int max_seqs, int fail_status, int die_after, int threads,
                         double keep_alive_timeout) {
                 SimOptions o;
                 o.host = std::move(host);
                 o.port = port;
                 o.model = std::move(model);
                 o.ttft = ttft;
                 o.token_delay = token_delay;
                 o.max_tokens = max_tokens;
                 o.max_seqs = max_seqs;
                 o.fail_status = fail_status;
                 o.die_after = die_after;
                 o.threads = threads;
                 o.keep_alive_timeout = keep_alive_timeout;
                 return std::make_unique<SimEngine>(std::move(o));
             }),
             py::arg("host") = "127.0.0.1", py::arg("port") = 0, py::arg("model") = "sim-model",
             py::arg("ttft") = 0.05, py::arg("token_delay") = 0.01, py::arg("max_tokens") = 16,
             py::arg("max_seqs") = 8, py::arg("fail_status") = 0, py::arg("die_after") = 0,
             py::arg("threads") = 1, py::arg("keep_alive_timeout") = 5.0)
        .def("start", &SimEngine::start, py::call_guard<py::gil_scoped_release>(),
             "Bind and serve in the background; returns the bound port.")
        .def("stop", &SimEngine::stop, py::call_guard<py::gil_scoped_release>(),
             "Close the listener and every connection; idempotent.")
        .def_property_readonly("port", &SimEngine::port)
        .def("stats", [](const SimEngine& e) {
            auto s = e.stats();
            py::dict d;
            d["requests"] = s.requests;
            d["completed"] = s.completed;
            d["aborted"] = s.aborted;
            d["running"] = s.running;
            d["waiting"] = s.waiting;
            d["health_checks"] = s.health_checks;
            d["metrics_scrapes"] = s.metrics_scrapes;
            return d;
        })
        .def("set_health_status", &SimEngine::set_health_status, py::arg("code"))
        .def("set_fail_status", &SimEngine::set_fail_status, py::arg("code"))
        .def("__enter__", [](SimEngine& e) -> SimEngine& {
            py::gil_scoped_release release;
            e.start();
            return e;
        }, py::return_value_policy::reference)
        .def("__exit__", [](SimEngine& e, py::args) {
            py::gil_scoped_release release;
            e.stop();
        })
        .def("__repr__", [](const SimEngine& e) {
            return "<SimEngine port=" + std::to_string(e.port()) + ">";
        });
}

}  // namespace vllm_router
