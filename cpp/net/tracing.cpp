#include "net/tracing.hpp"

#include <algorithm>
#include <iterator>

namespace vllm_router {

void Tracing::enable(double ratio, SpanSource source) {
    {
        std::lock_guard lock(mutex_);
        source_ = std::move(source);
    }
    ratio_.store(std::clamp(ratio, 0.0, 1.0), std::memory_order_relaxed);
    on_.store(true, std::memory_order_relaxed);
}

void Tracing::push(SpanRecord span) {
    std::lock_guard lock(mutex_);
    if (spans_.size() >= kCapacity) {
        dropped_full_.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    spans_.push_back(std::move(span));
}

std::pair<std::string, std::size_t> Tracing::drain_encoded(std::size_t max) {
    std::vector<SpanRecord> batch;
    SpanSource source;
    {
        std::lock_guard lock(mutex_);
        if (spans_.empty() || max == 0) return {};
        const std::size_t n = std::min(max, spans_.size());
        batch.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            batch.push_back(std::move(spans_.front()));
            spans_.pop_front();
        }
        source = source_;
    }
    // Encoded outside the lock: the I/O threads keep pushing meanwhile.
    return {encode_export_request(source, batch), batch.size()};
}

void Tracing::note_export(std::uint64_t exported, std::uint64_t failed) {
    exported_.fetch_add(exported, std::memory_order_relaxed);
    dropped_failed_.fetch_add(failed, std::memory_order_relaxed);
}

}  // namespace vllm_router
