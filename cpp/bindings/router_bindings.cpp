// Binds the Router. Every call that can block (start, wait, shutdown, stop) releases the GIL,
// so that Python threads (logging, dashboard, callbacks) keep running meanwhile and a signal
// reaches Python's main thread, which then calls shutdown().
#include <algorithm>

#include <pybind11/stl.h>

#include "bindings/bindings.hpp"
#include "net/bridge.hpp"
#include "net/router.hpp"
#include "net/tls_client.hpp"

namespace py = pybind11;

namespace vllm_router {
namespace {

// Request paths and addresses come from clients: never let a bad byte lose a batch of events.
py::str text(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

}  // namespace

void bind_router(py::module_& m) {
    m.def("check_tls", [](const Config& config) {
        std::vector<std::string> errors;
        for (std::size_t i = 0; i < config.servers.size(); ++i) {
            const auto& s = config.servers[i];
            if (s.parts.scheme != "https") continue;
            std::string why;
            if (!make_tls_client(tls_client_settings(s, config.settings), &why))
                errors.push_back("servers[" + std::to_string(i) + "] (" + s.url + "): " + why);
        }
        return errors;
    }, py::arg("config"), "Loads the TLS files of every https server as the router will; returns the problems.");

    py::class_<CallbackJob, std::shared_ptr<CallbackJob>>(m, "CallbackJob")
        .def_property_readonly("kind", [](const CallbackJob& j) { return j.kind == CallbackJob::Kind::pre ? "pre" : "post"; })
        .def_readonly("method", &CallbackJob::method)
        .def_readonly("target", &CallbackJob::target)
        .def_readonly("client", &CallbackJob::client)
        .def_readonly("request_id", &CallbackJob::request_id)
        .def_readonly("headers", &CallbackJob::headers)
        .def_readonly("status", &CallbackJob::status)
        .def_property_readonly("body", [](const CallbackJob& j) { return py::bytes(j.body); })
        .def_property_readonly("response", [](const CallbackJob& j) { return py::bytes(j.response); })
        .def("reply", [](CallbackJob& j, int status, py::bytes body, std::vector<std::pair<std::string, std::string>> headers,
                         std::string content_type) {
                 CallbackReply r;
                 r.status = status;
                 r.body = std::string(body);
                 r.headers = std::move(headers);
                 r.content_type = std::move(content_type);
                 j.answer(std::move(r));
             },
             py::arg("status"), py::arg("body"), py::arg("headers"), py::arg("content_type"),
             "Answer the client with this response instead of proxying.")
        .def("proceed", [](CallbackJob& j) { j.answer(std::nullopt); }, "Let the request go on to a backend.");

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
        .def("update_config", [](Router& r, Config config, bool discovered) {
                 r.update_config(std::move(config), discovered ? ConfigChange::discovery : ConfigChange::reload);
             },
             py::arg("config"), py::arg("discovered") = false,
             "Apply a validated configuration without dropping a request; `discovered`: the server set "
             "changed because pods did (not counted as a reload of the file).")
        .def("set_discovery_status", [](Router& r, std::string mode, std::string ns, std::string label_selector,
                                        bool connected, std::string error, int pods, double since) {
                 r.set_discovery_status({std::move(mode), std::move(ns), std::move(label_selector), connected,
                                         std::move(error), pods, since});
             },
             py::arg("mode"), py::arg("namespace") = "", py::arg("label_selector") = "", py::arg("connected") = false,
             py::arg("error") = "", py::arg("pods") = 0, py::arg("since") = -1.0,
             "What discovery shows in /health and /metrics.")
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
        .def("drain_events", [](Router& r) {
            auto events = r.drain_events();
            py::list out;
            for (auto& e : events) {
                py::dict d;
                d["time"] = e.time;
                d["level"] = level_name(e.level);
                d["kind"] = e.access ? "access" : "event";
                d["message"] = text(e.message);
                if (!e.backend.empty() && !e.access) d["backend"] = text(e.backend);
                if (!e.access && !e.request_id.empty()) d["request_id"] = text(e.request_id);
                if (!e.access && !e.model.empty()) d["model"] = text(e.model);
                if (e.access) {
                    // Rendered in C++: Python's pump only hands the lines to the log files.
                    d["_json"] = text(render_access_json(e));
                    d["_text"] = text(render_access_text(e));
                }
                out.append(std::move(d));
            }
            return out;
        }, "Log events since the last call, oldest first (access events and control-plane news).")
        .def("enable_callbacks", &Router::enable_callbacks, py::arg("pre"), py::arg("post"))
        .def("set_access_events", &Router::set_access_events, py::arg("on"))
        .def("set_debug_events", &Router::set_debug_events, py::arg("on"))
        .def("enable_tracing", [](Router& r, double ratio, const py::dict& resource, const std::string& scope_version) {
            SpanSource source;
            for (const auto& [key, value] : resource) {
                const auto k = py::str(key).cast<std::string>();
                // bool before int: Python's bool is an int.
                if (py::isinstance<py::bool_>(value)) source.resource.emplace_back(k, value.cast<bool>());
                else if (py::isinstance<py::int_>(value)) source.resource.emplace_back(k, value.cast<std::int64_t>());
                else if (py::isinstance<py::float_>(value)) source.resource.emplace_back(k, value.cast<double>());
                else source.resource.emplace_back(k, py::str(value).cast<std::string>());
            }
            source.scope_version = scope_version;
            r.enable_tracing(ratio, std::move(source));
        }, py::arg("ratio"), py::arg("resource"), py::arg("scope_version") = "",
           "Make a span for each sampled request (ratio for new traces; the parent's decision otherwise).")
        .def("disable_tracing", &Router::disable_tracing)
        .def("drain_spans", [](Router& r, bool partial) {
            std::pair<std::string, std::size_t> batch;
            {
                py::gil_scoped_release release;
                batch = r.drain_spans(partial);
            }
            return py::make_tuple(py::bytes(batch.first), batch.second);
        }, py::arg("partial"),
           "(ExportTraceServiceRequest bytes, span count) of the oldest full chunk of spans, or with `partial` of "
           "the chunk being filled when none is full; (b'', 0) when there is none.")
        .def("note_span_export", &Router::note_span_export, py::arg("exported"), py::arg("failed"))
        .def("callback_pop", &Router::callback_pop, py::arg("seconds"), py::call_guard<py::gil_scoped_release>(),
             "The next callback job, or None after `seconds`.")
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
            d["body_memory"] = s.body_memory;
            d["body_spooled"] = s.body_spooled;
            d["spooled_bodies"] = s.spooled_bodies;
            d["refused_bodies"] = s.refused_bodies;
            return d;
        })
        .def("backends", [](const Router& r) {
            py::list out;
            // Held for the loop: `for (m : r.fleet()->members)` frees the snapshot at once (the
            // temporary shared_ptr dies before the loop body), and a health check or scrape that
            // publishes a new one meanwhile left the loop reading freed memory (the dashboard's
            // rare SIGSEGV on its first frame).
            const auto fleet = r.fleet();
            for (const auto& m : fleet->members) {
                py::dict d;
                d["url"] = m.config.url;
                d["name"] = m.config.name;
                d["healthy"] = m.healthy;
                d["state"] = m.health.state;
                d["models"] = m.models;
                d["capacity"] = m.config.max_concurrent_requests;
                d["weight"] = m.config.weight;
                d["running"] = m.running;
                d["waiting"] = m.waiting;
                d["kv_cache_usage"] = m.kv_cache_usage;
                d["scraped"] = m.scraped;
                d["engine_stats"] = m.engine_stats;
                d["prefix_cache_hit_rate"] = m.prefix_cache_hit_rate;
                d["in_flight"] = m.state->in_flight.load();
                d["requests"] = m.state->requests.load();
                d["failures"] = m.state->failures.load();
                out.append(d);
            }
            return out;
        }, "A snapshot of the fleet: one dict per server.");
}

}  // namespace vllm_router
