#include "net/tracing.hpp"

#include <algorithm>

namespace vllm_router {

void Tracing::enable(double ratio, SpanSource source) {
    {
        std::lock_guard lock(mutex_);
        source_ = std::move(source);
    }
    ratio_.store(std::clamp(ratio, 0.0, 1.0), std::memory_order_relaxed);
    on_.store(true, std::memory_order_relaxed);
}

void Tracing::push(const SpanFields& span) {
    thread_local std::string encoded;  // encoded outside the lock; grows once per thread
    encoded.clear();
    append_span(encoded, span);
    std::lock_guard lock(mutex_);
    if (queued_bytes_ + encoded.size() > kMaxBytes) {
        dropped_full_.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    if (filling_.bytes.capacity() == 0) filling_.bytes.reserve(kChunkBytes + 4096);
    filling_.bytes += encoded;
    ++filling_.count;
    queued_bytes_ += encoded.size();
    if (filling_.bytes.size() >= kChunkBytes) {
        full_.push_back(std::move(filling_));
        filling_ = Chunk{};
    }
}

std::pair<std::string, std::size_t> Tracing::drain(bool partial) {
    Chunk chunk;
    SpanSource source;
    {
        std::lock_guard lock(mutex_);
        if (!full_.empty()) {
            chunk = std::move(full_.front());
            full_.pop_front();
        } else if (partial && filling_.count > 0) {
            chunk = std::move(filling_);
            filling_ = Chunk{};
        } else {
            return {};
        }
        queued_bytes_ -= chunk.bytes.size();
        source = source_;
    }
    // Wrapped outside the lock: the I/O threads keep pushing meanwhile.
    return {wrap_spans(source, chunk.bytes), chunk.count};
}

void Tracing::note_export(std::uint64_t exported, std::uint64_t failed) {
    exported_.fetch_add(exported, std::memory_order_relaxed);
    dropped_failed_.fetch_add(failed, std::memory_order_relaxed);
}

}  // namespace vllm_router
