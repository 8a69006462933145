// The router's own statistics: what each I/O thread records when a request ends, and the
// Prometheus exposition that adds the threads' figures together (/metrics, names vllm_router_*).
#include <chrono>
#include <cmath>
#include <cstdio>

#include <boost/version.hpp>

#include "core/json_util.hpp"
#include "core/process_stats.hpp"
#include "net/router_impl.hpp"

namespace vllm_router {
namespace {

void append_label_value(std::string& out, std::string_view v) {
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void sample(std::string& out, std::string_view name, std::string_view labels, double value) {
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    out += ' ';
    out += prom_number(value);
    out += '\n';
}

std::string backend_label(std::string_view url) {
    std::string out = "backend=\"";
    append_label_value(out, url.empty() ? std::string_view("none") : url);
    out += '"';
    return out;
}

void histogram(std::string& out, std::string_view name, const std::string& labels, const Histogram& h) {
    std::uint64_t cumulative = 0;
    const std::string bucket = std::string(name) + "_bucket";
    for (std::size_t i = 0; i < h.bounds().size(); ++i) {
        cumulative += h.counts()[i];
        sample(out, bucket, labels + ",le=\"" + prom_number(h.bounds()[i]) + "\"", static_cast<double>(cumulative));
    }
    sample(out, bucket, labels + ",le=\"+Inf\"", static_cast<double>(h.count()));
    sample(out, std::string(name) + "_sum", labels, h.sum());
    sample(out, std::string(name) + "_count", labels, static_cast<double>(h.count()));
}

// The standard process_* series, as Prometheus client libraries name them; figures the system
// would not give are left out rather than shown as zero.
void append_process_metrics(std::string& out) {
    const ProcessStats p = read_process_stats();
    const struct {
        std::string_view name, type, help;
        double value;
    } series[] = {
        {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpu_seconds},
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes},
        {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtual_bytes},
        {"process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds},
        {"process_max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds},
        {"process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p.start_time},
    };
    for (const auto& s : series) {
        if (s.value < 0) continue;
        header(out, s.name, s.type, s.help);
        sample(out, s.name, "", s.value);
    }
}

// Everything the threads recorded, added together per backend.
struct Merged {
    Histogram duration{buckets::request_duration};
    Histogram ttft{buckets::time_to_first_token};
    Histogram itl{buckets::inter_token_latency};
    ModelStatusCounts by_model_status;
};

std::map<std::string, Merged> merge_workers(const RouterShared& shared) {
    std::map<std::string, Merged> merged;
    for (Worker* w : shared.workers) {
        std::lock_guard lock(w->stats.mutex);
        for (const auto& [url, c] : w->stats.backends) {
            auto& m = merged[url];
            m.duration.merge(c.duration);
            m.ttft.merge(c.ttft);
            m.itl.merge(c.itl);
            for (const auto& [key, n] : c.by_model_status) m.by_model_status[key] += n;
        }
    }
    return merged;
}

}  // namespace

void Worker::record(const FinishedRequest& done) {
    std::lock_guard lock(stats.mutex);
    auto it = stats.backends.find(done.backend);
    if (it == stats.backends.end()) {
        const double window = shared.fleet.get()->settings.request_stats_window;
        it = stats.backends.emplace(std::string(done.backend), BackendCounters(window)).first;
    }
    BackendCounters& c = it->second;
    c.window.record(monotonic_seconds(), done.sample);
    c.duration.observe(done.sample.latency);
    if (done.sample.ttft >= 0) c.ttft.observe(done.sample.ttft);
    if (done.sample.itl_count > 0) c.itl.observe(done.sample.itl_sum / static_cast<double>(done.sample.itl_count));
    const std::pair<std::string_view, int> key{done.model, done.status};
    auto count = c.by_model_status.find(key);
    if (count == c.by_model_status.end()) count = c.by_model_status.emplace(std::pair<std::string, int>(key), 0).first;
    ++count->second;
}

std::string render_metrics(const RouterShared& shared) {
    const auto fleet = shared.fleet.get();
    const auto merged = merge_workers(shared);
    std::string out;
    out.reserve(16 * 1024);

    header(out, "vllm_router_requests_total", "counter", "Requests finished, by backend, model and HTTP status (499: client left).");
    for (const auto& [url, m] : merged) {
        for (const auto& [key, n] : m.by_model_status) {
            std::string labels = backend_label(url) + ",model=\"";
            append_label_value(labels, key.first);
            labels += "\",status=\"" + std::to_string(key.second) + "\"";
            sample(out, "vllm_router_requests_total", labels, static_cast<double>(n));
        }
    }
    header(out, "vllm_router_request_duration_seconds", "histogram", "Time from request to last byte, by backend.");
    for (const auto& [url, m] : merged) histogram(out, "vllm_router_request_duration_seconds", backend_label(url), m.duration);
    header(out, "vllm_router_time_to_first_token_seconds", "histogram", "Time to the first streamed event, by backend.");
    for (const auto& [url, m] : merged) histogram(out, "vllm_router_time_to_first_token_seconds", backend_label(url), m.ttft);
    header(out, "vllm_router_inter_token_latency_seconds", "histogram", "Mean gap between streamed events of a request, by backend.");
    for (const auto& [url, m] : merged) histogram(out, "vllm_router_inter_token_latency_seconds", backend_label(url), m.itl);

    header(out, "vllm_router_in_flight_requests", "gauge", "Requests the router has in flight to each backend.");
    for (const auto& m : fleet->members)
        sample(out, "vllm_router_in_flight_requests", backend_label(m.config.url), m.state->in_flight.load());
    header(out, "vllm_router_backend_capacity", "gauge", "The backend's max_concurrent_requests.");
    for (const auto& m : fleet->members)
        sample(out, "vllm_router_backend_capacity", backend_label(m.config.url), m.config.max_concurrent_requests);
    header(out, "vllm_router_backend_healthy", "gauge", "1 when the backend takes traffic.");
    for (const auto& m : fleet->members) sample(out, "vllm_router_backend_healthy", backend_label(m.config.url), m.healthy ? 1 : 0);
    header(out, "vllm_router_backend_circuit_open", "gauge", "1 while the backend's circuit breaker is open.");
    for (const auto& m : fleet->members)
        sample(out, "vllm_router_backend_circuit_open", backend_label(m.config.url), m.health.circuit_open ? 1 : 0);
    header(out, "vllm_router_backend_running_requests", "gauge", "vllm:num_requests_running as last scraped.");
    for (const auto& m : fleet->members) sample(out, "vllm_router_backend_running_requests", backend_label(m.config.url), m.running);
    header(out, "vllm_router_backend_waiting_requests", "gauge", "vllm:num_requests_waiting as last scraped.");
    for (const auto& m : fleet->members) sample(out, "vllm_router_backend_waiting_requests", backend_label(m.config.url), m.waiting);
    header(out, "vllm_router_backend_kv_cache_usage", "gauge", "vllm:kv_cache_usage_perc as last scraped (1: full).");
    for (const auto& m : fleet->members) sample(out, "vllm_router_backend_kv_cache_usage", backend_label(m.config.url), m.kv_cache_usage);
    header(out, "vllm_router_backend_scrape_errors_total", "counter", "Failed scrapes of the backend's /metrics.");
    for (const auto& m : fleet->members)
        sample(out, "vllm_router_backend_scrape_errors_total", backend_label(m.config.url), static_cast<double>(m.state->scrape_errors.load()));

    header(out, "vllm_router_retries_total", "counter", "Attempts repeated on another backend.");
    sample(out, "vllm_router_retries_total", "", static_cast<double>(shared.retries.load()));
    header(out, "vllm_router_upstream_errors_total", "counter", "Failed upstream attempts, by kind.");
    static constexpr std::string_view kinds[] = {"connect", "timeout", "status", "broken"};
    for (std::size_t i = 0; i < 4; ++i)
        sample(out, "vllm_router_upstream_errors_total", "kind=\"" + std::string(kinds[i]) + "\"",
               static_cast<double>(shared.upstream_errors_by_kind[i].load()));
    header(out, "vllm_router_client_aborts_total", "counter", "Clients that left before their answer ended.");
    sample(out, "vllm_router_client_aborts_total", "", static_cast<double>(shared.client_aborts.load()));
    header(out, "vllm_router_config_reloads_total", "counter", "Configuration reloads, by result.");
    sample(out, "vllm_router_config_reloads_total", "result=\"ok\"", static_cast<double>(shared.reloads_ok.load()));
    sample(out, "vllm_router_config_reloads_total", "result=\"error\"", static_cast<double>(shared.reloads_failed.load()));
    {
        const DiscoveryStatus d = shared.discovery_status();
        if (d.mode != "static") {
            header(out, "vllm_router_discovery_connected", "gauge",
                   "1 while the last list or watch of pods reached the API server, else 0 (the last known pods serve).");
            sample(out, "vllm_router_discovery_connected", "", d.connected ? 1 : 0);
            header(out, "vllm_router_discovery_pods", "gauge", "Discovered pods in service (Running, Ready, with an IP).");
            sample(out, "vllm_router_discovery_pods", "", d.pods);
            header(out, "vllm_router_discovery_updates_total", "counter", "Server sets applied from discovery.");
            sample(out, "vllm_router_discovery_updates_total", "", static_cast<double>(shared.discovery_updates.load()));
        }
    }
    header(out, "vllm_router_accept_errors_total", "counter", "Client connections the router could not accept (out of descriptors, mostly).");
    sample(out, "vllm_router_accept_errors_total", "", static_cast<double>(shared.accept_errors.load()));
    header(out, "vllm_router_fd_exhausted_total", "counter", "Connects, checks and scrapes that found no file descriptor left (the router's own shortage).");
    sample(out, "vllm_router_fd_exhausted_total", "", static_cast<double>(shared.fd_exhausted.load()));
    header(out, "vllm_router_callbacks_skipped_total", "counter", "Python callbacks not run as asked, by reason.");
    sample(out, "vllm_router_callbacks_skipped_total", "reason=\"queue_full\"", static_cast<double>(shared.callbacks_skipped.load()));
    sample(out, "vllm_router_callbacks_skipped_total", "reason=\"timeout\"", static_cast<double>(shared.callback_timeouts.load()));
    sample(out, "vllm_router_callbacks_skipped_total", "reason=\"invalid_reply\"", static_cast<double>(shared.callback_errors.load()));
    header(out, "vllm_router_request_body_bytes", "gauge", "Bytes of request bodies the router holds now, by where.");
    sample(out, "vllm_router_request_body_bytes", "where=\"memory\"", static_cast<double>(shared.bodies.memory.load()));
    sample(out, "vllm_router_request_body_bytes", "where=\"disk\"", static_cast<double>(shared.bodies.spooled.load()));
    header(out, "vllm_router_spooled_bodies_total", "counter", "Request bodies spooled to a temporary file.");
    sample(out, "vllm_router_spooled_bodies_total", "", static_cast<double>(shared.bodies.spool_files.load()));
    header(out, "vllm_router_refused_bodies_total", "counter", "Request bodies that fit neither the memory budget nor the spool folder (503).");
    sample(out, "vllm_router_refused_bodies_total", "", static_cast<double>(shared.bodies.refused.load()));
    header(out, "vllm_router_log_events_dropped_total", "counter",
           "Log and access events dropped because the queue to Python was full.");
    sample(out, "vllm_router_log_events_dropped_total", "", static_cast<double>(shared.events.dropped()));
    header(out, "vllm_router_trace_spans_total", "counter", "Spans of sampled requests, by what became of them.");
    sample(out, "vllm_router_trace_spans_total", "result=\"exported\"", static_cast<double>(shared.tracing.exported()));
    sample(out, "vllm_router_trace_spans_total", "result=\"queue_full\"",
           static_cast<double>(shared.tracing.dropped_queue_full()));
    sample(out, "vllm_router_trace_spans_total", "result=\"export_failed\"",
           static_cast<double>(shared.tracing.dropped_export_failed()));
    header(out, "vllm_router_active_requests", "gauge", "Requests being proxied now.");
    sample(out, "vllm_router_active_requests", "", shared.active.load());
    header(out, "vllm_router_client_connections", "gauge", "Open client connections.");
    sample(out, "vllm_router_client_connections", "", shared.connections.load());

    header(out, "vllm_router_build_info", "gauge", "Always 1; the labels say which build answers.");
    std::string build = "version=\"";
    append_label_value(build, shared.options.version);
    build += "\",boost=\"" BOOST_LIB_VERSION "\",compiler=\"";
    append_label_value(build, __VERSION__);
    build += '"';
    sample(out, "vllm_router_build_info", build, 1);
    append_process_metrics(out);
    return out;
}

}  // namespace vllm_router
