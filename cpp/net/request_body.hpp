// A request body as the session receives it, kept so that a retry can send it again: in memory
// while it is small and the router-wide memory budget allows, else spooled to an unlinked
// temporary file as it arrives (as nginx buffers large bodies to disk). The memory budget
// bounds what all request bodies together hold in RAM, whatever clients send (twenty 60 MiB
// uploads take a few hundred KiB of buffers, not 1.2 GB); the disk holds the rest.
//
//   body_buffer_mb           the memory budget, for all sessions together
//   body_spool_threshold_mb  larger bodies (by Content-Length, or as they grow) go to disk
//   body_spool_dir           where (default: $TMPDIR, else /tmp)
//
// A body that fits neither (the folder cannot be written, the disk is full) makes the session
// answer 503 with Retry-After. A spooled body is inspected as it streams by (JsonScanner for
// JSON; the first 64 KiB for a multipart form's "model" field), never read back whole except
// for a Python callback that asks for it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "core/json_scan.hpp"

namespace vllm_router {

// Bytes of request bodies held now, router-wide.
struct BodyBudget {
    std::atomic<std::int64_t> memory{0};
    std::atomic<std::int64_t> spooled{0};
    std::atomic<std::uint64_t> spool_files{0};   // bodies that went to disk, ever
    std::atomic<std::uint64_t> refused{0};       // bodies that fit nowhere
};

class RequestBody {
public:
    static constexpr std::size_t kHeadKept = 64 * 1024;   // of a spooled body, for multipart

    explicit RequestBody(BodyBudget& budget) : budget_(budget) {}
    ~RequestBody() { release(); }
    RequestBody(const RequestBody&) = delete;
    RequestBody& operator=(const RequestBody&) = delete;

    // A new body: `length` from Content-Length (nullopt: chunked), `json` whether to scan it as
    // JSON when spooled. False when it cannot be held anywhere; error() says why.
    bool begin(std::optional<std::uint64_t> length, bool json, const Settings& settings);
    // Where the next decoded bytes go; at least 1 byte, at most 64 KiB.
    std::pair<char*, std::size_t> room();
    // `n` bytes were written into room(). False when they could not be kept (error()).
    bool commit(std::size_t n);

    std::uint64_t size() const { return size_; }
    bool spooled() const { return fd_ >= 0; }
    const std::string& error() const { return error_; }
    // In memory: the body, with simdjson's padding in its capacity.
    const std::string& memory() const { return memory_; }
    // Spooled: the first kHeadKept bytes, and what scanning it as JSON found.
    const std::string& head() const { return head_; }
    RequestInfo scanned() { return scanner_.finish(); }
    // Spooled: up to `n` bytes from `offset`; -1 on an I/O error.
    long read_at(std::uint64_t offset, char* dst, std::size_t n) const;
    // The whole body in memory (reads a spooled one back: for Python callbacks only).
    std::string copy() const;

    // Gives the memory, the file and their budget back.
    void release();

private:
    bool reserve_memory(std::uint64_t total);
    bool spool();  // moves what is in memory to a new temporary file
    bool write_all(const char* data, std::size_t n);

    BodyBudget& budget_;
    const Settings* settings_ = nullptr;
    std::string memory_;
    std::int64_t memory_held_ = 0;   // counted in budget_.memory
    std::uint64_t size_ = 0;
    int fd_ = -1;
    std::unique_ptr<char[]> scratch_;
    std::string head_;
    bool json_ = false;
    JsonScanner scanner_;
    std::string error_;
};

}  // namespace vllm_router
