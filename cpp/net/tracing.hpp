// Tracing, router-wide: whether spans are made (Python turns it on for --otlp-traces-endpoint),
// the sampling ratio, and the bounded queue of finished spans that a Python thread drains as
// OTLP-encoded batches (core/otlp.hpp) for the OpenTelemetry exporter. Off, it costs a session
// one relaxed load per request. When the exporter falls behind, spans are dropped and counted,
// never waited for.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/otlp.hpp"

namespace vllm_router {

class Tracing {
public:
    static constexpr std::size_t kCapacity = 65536;

    bool on() const { return on_.load(std::memory_order_relaxed); }
    double ratio() const { return ratio_.load(std::memory_order_relaxed); }

    void enable(double ratio, SpanSource source);
    void disable() { on_.store(false, std::memory_order_relaxed); }

    void push(SpanRecord span);
    // Up to `max` of the oldest spans as one ExportTraceServiceRequest, and how many it holds
    // (0 and "" when none is waiting).
    std::pair<std::string, std::size_t> drain_encoded(std::size_t max);
    // What became of drained spans: sent, or given up by the exporter.
    void note_export(std::uint64_t exported, std::uint64_t failed);

    std::uint64_t exported() const { return exported_.load(); }
    std::uint64_t dropped_queue_full() const { return dropped_full_.load(); }
    std::uint64_t dropped_export_failed() const { return dropped_failed_.load(); }

private:
    std::atomic<bool> on_{false};
    std::atomic<double> ratio_{1.0};
    std::mutex mutex_;
    SpanSource source_;
    std::deque<SpanRecord> spans_;  // oldest first: drained from the front
    std::atomic<std::uint64_t> exported_{0}, dropped_full_{0}, dropped_failed_{0};
};

}  // namespace vllm_router
