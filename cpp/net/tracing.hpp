// Tracing, router-wide: whether spans are made (Python turns it on for --otlp-traces-endpoint),
// the sampling ratio, and the spans themselves. A session encodes its span the moment its
// request is answered (core/otlp.hpp: no copy of its strings, no allocation) and appends the
// bytes here, under a lock held for a memcpy; a Python thread drains them as ExportTraceService
// requests for the OpenTelemetry exporter, a full chunk at a time while they come fast. Off, it
// costs a session one relaxed load per request. Past kMaxBytes queued, spans are dropped and
// counted, never waited for.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>

#include "core/otlp.hpp"

namespace vllm_router {

class Tracing {
public:
    // An export request carries one chunk: about 11,000 spans of ~380 bytes (receivers accept
    // requests of this size: the OpenTelemetry Collector's default limit is 20 MiB).
    static constexpr std::size_t kChunkBytes = 4u << 20;
    static constexpr std::size_t kMaxBytes = 64u << 20;

    bool on() const { return on_.load(std::memory_order_relaxed); }
    double ratio() const { return ratio_.load(std::memory_order_relaxed); }

    void enable(double ratio, SpanSource source);
    void disable() { on_.store(false, std::memory_order_relaxed); }

    void push(const SpanFields& span);
    // The oldest full chunk as one ExportTraceServiceRequest, and how many spans it holds; with
    // `partial`, the chunk being filled when none is full. ("", 0) when there is nothing.
    std::pair<std::string, std::size_t> drain(bool partial);
    // What became of drained spans: sent, or given up by the exporter.
    void note_export(std::uint64_t exported, std::uint64_t failed);

    std::uint64_t exported() const { return exported_.load(); }
    std::uint64_t dropped_queue_full() const { return dropped_full_.load(); }
    std::uint64_t dropped_export_failed() const { return dropped_failed_.load(); }

private:
    struct Chunk {
        std::string bytes;  // spans framed as ScopeSpans fields (append_span)
        std::size_t count = 0;
    };

    std::atomic<bool> on_{false};
    std::atomic<double> ratio_{1.0};
    std::mutex mutex_;
    SpanSource source_;
    Chunk filling_;
    std::deque<Chunk> full_;
    std::size_t queued_bytes_ = 0;
    std::atomic<std::uint64_t> exported_{0}, dropped_full_{0}, dropped_failed_{0};
};

}  // namespace vllm_router
