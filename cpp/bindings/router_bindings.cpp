// Binds the Router. Every call that can block (start, wait, shutdown, stop) releases the GIL,
// so that Python threads (logging, dashboard, callbacks) keep running meanwhile and a signal
// reaches Python's main thread, which then calls shutdown().
#include <pybind11/stl.h>

#include "bindings/bindings.hpp"
#include "net/router.hpp"

namespace py = pybind11;

namespace vllm_router {

void bind_router(py::module_& m) {
    py::class_<Router>(m, "Router")
        .def(py::init([](Config config, std::string host, int port, int threads, std::string version) {
                 RouterOptions o;
                 o.host = std::move(host);
                 o.port = static_cast<std::uint16_t>(port);
                 o.threads = threads;
                 o.version = std::move(version);
                 return std::make_unique<Router>(std::move(config), std::move(o));
             }),
             py::arg("config"), py::arg("host") = "127.0.0.1", py::arg("port") = 0, py::arg("threads") = 1,
             py::arg("version") = "0")
        .def("start", &Router::start, py::call_guard<py::gil_scoped_release>(),
             "Discover models, bind and start the I/O threads; returns the port.")
        .def("wait", &Router::wait_for, py::arg("seconds"), py::call_guard<py::gil_scoped_release>(),
             "Block up to `seconds`; True once the router has stopped.")
        .def("shutdown", &Router::shutdown, py::arg("drain_seconds") = -1.0,
             py::call_guard<py::gil_scoped_release>(),
             "Graceful stop: stop accepting, finish in-flight requests up to the drain timeout. "
             "Returns how many requests were cut off.")
        .def("stop", &Router::stop, py::call_guard<py::gil_scoped_release>(), "Stop at once.")
        .def_property_readonly("port", &Router::port)
        .def("update_config", &Router::update_config, py::arg("config"),
             "Apply a validated configuration without dropping a request.")
        .def("note_reload_failure", &Router::note_reload_failure)
        .def("request_stats", [](const Router& r) {
            py::dict out;
            for (const auto& [url, s] : r.request_stats()) {
                py::dict d;
                d["qps"] = s.qps;
                d["requests"] = s.requests;
                d["error_rate"] = s.error_rate;
                d["avg_latency"] = s.avg_latency;
                d["avg_ttft"] = s.avg_ttft;
                d["avg_itl"] = s.avg_itl;
                out[py::str(url)] = d;
            }
            return out;
        }, "Per backend URL ('' for the router's own answers): qps, error_rate, avg_latency, avg_ttft, avg_itl.")
        .def("stats", [](const Router& r) {
            const RouterStats s = r.stats();
            py::dict d;
            d["requests"] = s.requests;
            d["local_responses"] = s.local_responses;
            d["retries"] = s.retries;
            d["client_aborts"] = s.client_aborts;
            d["upstream_errors"] = s.upstream_errors;
            d["active"] = s.active;
            d["connections"] = s.connections;
            return d;
        })
        .def("backends", [](const Router& r) {
            py::list out;
            for (const auto& m : r.fleet()->members) {
                py::dict d;
                d["url"] = m.config.url;
                d["healthy"] = m.healthy;
                d["state"] = m.health.state;
                d["models"] = m.models;
                d["capacity"] = m.config.max_concurrent_requests;
                d["weight"] = m.config.weight;
                d["running"] = m.running;
                d["waiting"] = m.waiting;
                d["kv_cache_usage"] = m.kv_cache_usage;
                d["scraped"] = m.scraped;
                d["in_flight"] = m.state->in_flight.load();
                d["requests"] = m.state->requests.load();
                d["failures"] = m.state->failures.load();
                out.append(d);
            }
            return out;
        }, "A snapshot of the fleet: one dict per server.");
}

}  // namespace vllm_router
