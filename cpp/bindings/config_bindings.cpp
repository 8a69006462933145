// Binds the configuration: parsing, validation and the typed structs, so that the CLI can show,
// override and re-check what C++ read.
#include <pybind11/stl.h>

#include "bindings/bindings.hpp"
#include "core/config.hpp"
#include "core/prometheus.hpp"

namespace py = pybind11;

namespace vllm_router {

void bind_config(py::module_& m) {
    py::class_<UrlParts>(m, "UrlParts")
        .def_readonly("scheme", &UrlParts::scheme)
        .def_readonly("host", &UrlParts::host)
        .def_readonly("port", &UrlParts::port)
        .def_readonly("base_path", &UrlParts::base_path);

    py::class_<ServerConfig>(m, "ServerConfig")
        .def(py::init([](std::string url, int max_concurrent_requests, std::vector<std::string> models,
                         double weight, std::string api_key, std::string name) {
                 ServerConfig s;
                 s.url = std::move(url);
                 if (auto parts = parse_url(s.url)) s.parts = *parts;
                 s.max_concurrent_requests = max_concurrent_requests;
                 s.models = std::move(models);
                 s.weight = weight;
                 s.api_key = std::move(api_key);
                 s.name = std::move(name);
                 return s;
             }),
             py::arg("url"), py::arg("max_concurrent_requests") = 3,
             py::arg("models") = std::vector<std::string>{}, py::arg("weight") = 1.0,
             py::arg("api_key") = "", py::arg("name") = "")
        .def_readonly("url", &ServerConfig::url)
        .def_readonly("parts", &ServerConfig::parts)
        .def_readwrite("max_concurrent_requests", &ServerConfig::max_concurrent_requests)
        .def_readwrite("models", &ServerConfig::models)
        .def_readwrite("weight", &ServerConfig::weight)
        .def_readwrite("api_key", &ServerConfig::api_key)
        .def_readwrite("name", &ServerConfig::name)
        .def_readwrite("tls_ca_file", &ServerConfig::tls_ca_file)
        .def_readwrite("tls_verify", &ServerConfig::tls_verify)
        .def_readwrite("tls_cert_file", &ServerConfig::tls_cert_file)
        .def_readwrite("tls_key_file", &ServerConfig::tls_key_file)
        .def_readonly("line", &ServerConfig::line)
        .def("__repr__", [](const ServerConfig& s) { return "<ServerConfig " + s.url + ">"; });

#define VLLM_ROUTER_SETTING(name) .def_readwrite(#name, &Settings::name)
    py::class_<Settings>(m, "Settings")
        .def(py::init<>())
        VLLM_ROUTER_SETTING(health_check_interval)
        VLLM_ROUTER_SETTING(health_check_timeout)
        VLLM_ROUTER_SETTING(health_check_min_success_rate)
        VLLM_ROUTER_SETTING(health_check_max_response_time)
        VLLM_ROUTER_SETTING(health_check_window_size)
        VLLM_ROUTER_SETTING(health_check_consecutive_failures)
        VLLM_ROUTER_SETTING(enable_active_health_check)
        VLLM_ROUTER_SETTING(failure_threshold)
        VLLM_ROUTER_SETTING(auto_recovery_threshold)
        VLLM_ROUTER_SETTING(config_reload_interval)
        VLLM_ROUTER_SETTING(request_timeout)
        VLLM_ROUTER_SETTING(stream_idle_timeout)
        VLLM_ROUTER_SETTING(drain_timeout)
        VLLM_ROUTER_SETTING(max_retries)
        VLLM_ROUTER_SETTING(retry_delay)
        VLLM_ROUTER_SETTING(engine_stats_interval)
        VLLM_ROUTER_SETTING(request_stats_window)
        VLLM_ROUTER_SETTING(routing_logic)
        VLLM_ROUTER_SETTING(session_key)
        VLLM_ROUTER_SETTING(max_request_body_mb)
        VLLM_ROUTER_SETTING(callback_timeout)
        VLLM_ROUTER_SETTING(client_header_timeout)
        VLLM_ROUTER_SETTING(client_body_timeout)
        VLLM_ROUTER_SETTING(body_buffer_mb)
        VLLM_ROUTER_SETTING(body_spool_threshold_mb)
        VLLM_ROUTER_SETTING(body_spool_dir)
        VLLM_ROUTER_SETTING(service_discovery)
        VLLM_ROUTER_SETTING(k8s_namespace)
        VLLM_ROUTER_SETTING(k8s_label_selector)
        VLLM_ROUTER_SETTING(k8s_port)
        VLLM_ROUTER_SETTING(k8s_api_key)
        VLLM_ROUTER_SETTING(tls_ca_file)
        VLLM_ROUTER_SETTING(tls_verify)
        VLLM_ROUTER_SETTING(tls_cert_file)
        VLLM_ROUTER_SETTING(tls_key_file)
        .def("value", [](const Settings& s, std::string_view name) { return setting_value(s, name); },
             "The setting rendered for display.");
#undef VLLM_ROUTER_SETTING

    py::class_<Config>(m, "Config")
        .def(py::init<>())
        .def_readwrite("servers", &Config::servers)
        .def_readwrite("settings", &Config::settings);

    py::class_<ConfigError>(m, "ConfigError")
        .def_readonly("source", &ConfigError::source)
        .def_readonly("line", &ConfigError::line)
        .def_readonly("column", &ConfigError::column)
        .def_readonly("key", &ConfigError::key)
        .def_readonly("message", &ConfigError::message)
        .def("__str__", &ConfigError::to_string)
        .def("__repr__", [](const ConfigError& e) { return "<ConfigError " + e.to_string() + ">"; });

    m.def("parse_config",
          [](std::string_view text, std::string_view source) {
              auto r = parse_config(text, source);
              return py::make_tuple(std::move(r.config), std::move(r.errors));
          },
          py::arg("text"), py::arg("source") = "<string>",
          "Parse TOML text: returns (Config, [ConfigError]).");
    m.def("load_config",
          [](const std::string& path) {
              auto r = load_config_file(path);
              return py::make_tuple(std::move(r.config), std::move(r.errors));
          },
          py::arg("path"), "Read a TOML file: returns (Config, [ConfigError]).");
    m.def("validate_config", &validate_config, py::arg("config"), py::arg("require_servers") = true,
          py::arg("source") = "effective configuration",
          "Check an assembled Config against every rule; returns [ConfigError].");
    m.def("setting_specs", [] {
        py::list out;
        for (const auto& s : setting_specs()) {
            const char* type = s.type == SettingType::number    ? "number"
                               : s.type == SettingType::integer ? "integer"
                               : s.type == SettingType::boolean ? "boolean"
                                                                : "string";
            out.append(py::make_tuple(std::string(s.name), type, std::string(s.rule)));
        }
        return out;
    }, "[(name, type, rule)] for every [config] key, in documentation order.");
    m.def("engine_load_series", &engine_load_series,
          "The vllm: series names the router reads from each server's /metrics.");
    m.def("routing_logics", [] {
        std::vector<std::string> out(routing_logics().begin(), routing_logics().end());
        return out;
    });
    m.def("tls_client_settings", [](const ServerConfig& server, const Settings& settings) {
              const auto t = tls_client_settings(server, settings);
              py::dict d;
              d["ca_file"] = t.ca_file;
              d["verify"] = t.verify;
              d["cert_file"] = t.cert_file;
              d["key_file"] = t.key_file;
              return d;
          },
          py::arg("server"), py::arg("settings"),
          "The TLS an https server gets (its own keys, else [config]'s): ca_file, verify, cert_file, key_file.");
    m.def("check_capacity", &check_capacity, py::arg("value"),
          "None when max_concurrent_requests may be `value`, else why not.");
    m.def("check_weight", &check_weight, py::arg("value"), "None when weight may be `value`, else why not.");
    m.def("closest_match", [](std::string_view word, const std::vector<std::string>& candidates) {
        std::vector<std::string_view> views(candidates.begin(), candidates.end());
        return closest_match(word, views);
    });
}

}  // namespace vllm_router
