// The tracing of a session (net/tracing.hpp): the request's trace context when it arrives, and
// its span when it is answered. Attribute names follow OpenTelemetry's HTTP and GenAI semantic
// conventions where one fits (http.request.method, url.path, http.response.status_code,
// client.address, gen_ai.request.model); the router's own are under vllm_router.*.
#include <algorithm>

#include "core/http_policy.hpp"
#include "net/session.hpp"
#include "net/session_internal.hpp"

namespace vllm_router {
using namespace session_detail;

namespace {

template <std::size_t N>
void fill_random(std::array<std::uint8_t, N>& out, std::mt19937_64& rng) {
    for (std::size_t i = 0; i < N; i += 8) {
        std::uint64_t r = rng();
        for (std::size_t j = i; j < std::min(N, i + 8); ++j, r >>= 8) out[j] = static_cast<std::uint8_t>(r);
    }
}

template <std::size_t N>
void fill_nonzero(std::array<std::uint8_t, N>& out, std::mt19937_64& rng) {
    do fill_random(out, rng);
    while (std::all_of(out.begin(), out.end(), [](std::uint8_t b) { return b == 0; }));
}

}  // namespace

// Continues the client's trace when its traceparent is valid, else starts one; the sampling
// decision is the parent's, or the ratio's for a new trace.
void Session::start_trace() {
    request_start_unix_ = unix_seconds();
    std::string_view parent, state;
    for (const auto& f : parser_->get()) {
        if (f.name() != http::field::unknown) continue;
        if (parent.empty() && iequals_ascii(f.name_string(), "traceparent")) parent = f.value();
        else if (state.empty() && iequals_ascii(f.name_string(), "tracestate")) state = f.value();
    }
    const auto incoming = parse_traceparent(parent);
    trace_has_parent_ = incoming.has_value();
    trace_state_.clear();
    if (incoming) {
        trace_id_ = incoming->trace_id;
        trace_parent_ = incoming->parent_id;
        trace_flags_ = incoming->flags & 1;
        if (state.size() <= 512) trace_state_.assign(state);  // the spec's limit; longer ones are dropped
    } else {
        fill_nonzero(trace_id_, worker_.rng);
        trace_flags_ = sampled_by_ratio(trace_id_, shared_.tracing.ratio()) ? 1 : 0;
    }
    fill_nonzero(span_id_, worker_.rng);
    traced_ = trace_flags_ & 1;
}

void Session::record_span(int status, std::string_view error) {
    traced_ = false;  // one span per request, whatever calls come after
    const bool parsed = parser_ && parser_->is_header_done();
    const std::string method = parsed ? std::string(parser_->get().method_string()) : std::string("-");
    const std::string_view path = path_of(client_target_);
    SpanRecord span;
    span.trace_id = trace_id_;
    span.span_id = span_id_;
    span.parent_id = trace_parent_;
    span.has_parent = trace_has_parent_;
    span.trace_state = trace_state_;
    span.name = method + " " + std::string(path.substr(0, 128));
    const double now = unix_seconds();
    span.start_ns = static_cast<std::uint64_t>(request_start_unix_ * 1e9);
    span.end_ns = static_cast<std::uint64_t>(now * 1e9);
    span.error = status >= 500 || !error.empty();
    if (span.error) span.status_message = !error.empty() ? std::string(error) : "HTTP " + std::to_string(status);

    Attributes& a = span.attributes;
    a.reserve(10);
    a.emplace_back("http.request.method", method);
    a.emplace_back("url.path", std::string(path));
    a.emplace_back("http.response.status_code", std::int64_t{status});
    a.emplace_back("client.address", client_ip_);
    a.emplace_back("vllm_router.request_id", request_id_);
    if (!model_.empty()) a.emplace_back("gen_ai.request.model", model_);
    if (const std::string_view backend = exchange_backend(); !backend.empty())
        a.emplace_back("vllm_router.backend", std::string(backend));
    if (attempts_ > 1) a.emplace_back("vllm_router.retries", std::int64_t{attempts_ - 1});
    if (in_exchange_ && first_event_ >= 0) {
        a.emplace_back("vllm_router.ttft_seconds", first_event_ - exchange_start_);
        // One event per token as vLLM streams by default.
        a.emplace_back("vllm_router.tokens_streamed", static_cast<std::int64_t>(itl_count_ + 1));
    }
    shared_.tracing.push(std::move(span));
}

}  // namespace vllm_router
