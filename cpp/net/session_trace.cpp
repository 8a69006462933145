// The tracing of a session (net/tracing.hpp): the request's trace context when it arrives, and
// its span when it is answered (its attributes: core/otlp.hpp).
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
    SpanFields span;
    span.trace_id = trace_id_;
    span.span_id = span_id_;
    span.parent_id = trace_parent_;
    span.has_parent = trace_has_parent_;
    span.trace_state = trace_state_;
    span.start_ns = static_cast<std::uint64_t>(request_start_unix_ * 1e9);
    span.end_ns = static_cast<std::uint64_t>(unix_seconds() * 1e9);
    span.method = parser_ && parser_->is_header_done() ? std::string_view(parser_->get().method_string()) : "-";
    span.path = path_of(client_target_).substr(0, 1024);
    span.status = status;
    span.client = client_ip_;
    span.request_id = request_id_;
    span.model = model_;
    span.backend = exchange_backend();
    span.error = error;
    span.retries = attempts_ > 1 ? attempts_ - 1 : 0;
    if (in_exchange_ && first_event_ >= 0) {
        span.ttft = first_event_ - exchange_start_;
        span.tokens = static_cast<std::int64_t>(itl_count_ + 1);
    }
    shared_.tracing.push(span);
}

}  // namespace vllm_router
