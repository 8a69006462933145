#include "net/request_body.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <simdjson.h>

namespace vllm_router {
namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::uint64_t kMiB = 1024 * 1024;

std::string spool_dir(const Settings& s) {
    if (!s.body_spool_dir.empty()) return s.body_spool_dir;
    const char* tmp = std::getenv("TMPDIR");
    return tmp && *tmp ? tmp : "/tmp";
}

// An unlinked file in `dir`: gone from the disk when closed, whatever happens to the process.
int open_spool_file(const std::string& dir) {
#ifdef O_TMPFILE
    const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
#endif
    std::string path = dir + "/vllm-router-body-XXXXXX";
    const int named = ::mkostemp(path.data(), O_CLOEXEC);
    if (named >= 0) ::unlink(path.c_str());
    return named;
}

}  // namespace

bool RequestBody::begin(std::optional<std::uint64_t> length, bool json, const Settings& settings) {
    release();
    settings_ = &settings;
    json_ = json;
    scanner_ = JsonScanner();
    head_.clear();
    error_.clear();
    size_ = 0;
    if (!length || *length == 0) return true;  // chunked: held in memory while it is small
    const auto threshold = static_cast<std::uint64_t>(settings.body_spool_threshold_mb * kMiB);
    if (*length <= threshold && reserve_memory(*length + simdjson::SIMDJSON_PADDING)) {
        memory_.reserve(*length + simdjson::SIMDJSON_PADDING);
        return true;
    }
    return spool();
}

bool RequestBody::reserve_memory(std::uint64_t total) {
    const auto want = static_cast<std::int64_t>(total);
    const std::int64_t delta = want - memory_held_;
    if (delta <= 0) return true;
    const auto limit = static_cast<std::int64_t>(settings_->body_buffer_mb * kMiB);
    if (budget_.memory.fetch_add(delta, std::memory_order_relaxed) + delta > limit) {
        budget_.memory.fetch_sub(delta, std::memory_order_relaxed);
        return false;
    }
    memory_held_ = want;
    return true;
}

std::pair<char*, std::size_t> RequestBody::room() {
    if (spooled()) {
        if (!scratch_) scratch_ = std::make_unique<char[]>(kChunk);
        return {scratch_.get(), kChunk};
    }
    constexpr std::size_t pad = simdjson::SIMDJSON_PADDING;
    const std::size_t at = memory_.size();
    std::size_t usable = memory_held_ > static_cast<std::int64_t>(pad) ? static_cast<std::size_t>(memory_held_) - pad : 0;
    if (at >= usable) {
        // Full: grown by doubling while under the threshold and the budget, else to disk.
        const auto threshold = static_cast<std::size_t>(settings_->body_spool_threshold_mb * kMiB);
        const std::size_t grown = std::min(std::max<std::size_t>(2 * usable, 16 * 1024), threshold);
        if (at >= threshold || !reserve_memory(grown + pad)) {
            if (!spool()) return {nullptr, 0};
            return room();
        }
        usable = grown;
    }
    if (memory_.capacity() < usable + pad) memory_.reserve(usable + pad);
    const std::size_t n = std::min(kChunk, usable - at);
    memory_.resize(at + n);
    return {memory_.data() + at, n};
}

bool RequestBody::commit(std::size_t n) {
    if (!spooled()) {
        size_ += n;
        memory_.resize(static_cast<std::size_t>(size_));
        return true;
    }
    if (!write_all(scratch_.get(), n)) return false;
    if (json_) scanner_.feed({scratch_.get(), n});
    if (head_.size() < kHeadKept) head_.append(scratch_.get(), std::min(n, kHeadKept - head_.size()));
    size_ += n;
    budget_.spooled.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    return true;
}

bool RequestBody::write_all(const char* data, std::size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd_, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            error_ = std::string("cannot spool the request body to disk: ") + std::strerror(errno);
            budget_.refused.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        data += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

bool RequestBody::spool() {
    const std::string dir = spool_dir(*settings_);
    fd_ = open_spool_file(dir);
    if (fd_ < 0) {
        error_ = "cannot spool the request body to " + dir + ": " + std::strerror(errno);
        budget_.refused.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    budget_.spool_files.fetch_add(1, std::memory_order_relaxed);
    // What arrived so far moves to the file, and the memory goes back to the budget.
    const std::string_view held(memory_.data(), static_cast<std::size_t>(size_));
    if (!held.empty()) {
        if (!write_all(held.data(), held.size())) return false;
        if (json_) scanner_.feed(held);
        head_.assign(held.substr(0, kHeadKept));
        budget_.spooled.fetch_add(static_cast<std::int64_t>(held.size()), std::memory_order_relaxed);
    }
    std::string().swap(memory_);
    budget_.memory.fetch_sub(memory_held_, std::memory_order_relaxed);
    memory_held_ = 0;
    return true;
}

long RequestBody::read_at(std::uint64_t offset, char* dst, std::size_t n) const {
    for (;;) {
        const ssize_t r = ::pread(fd_, dst, n, static_cast<off_t>(offset));
        if (r < 0 && errno == EINTR) continue;
        return static_cast<long>(r);
    }
}

std::string RequestBody::copy() const {
    if (!spooled()) return memory_;
    std::string out(static_cast<std::size_t>(size_), '\0');
    std::uint64_t at = 0;
    while (at < size_) {
        const long r = read_at(at, out.data() + at, static_cast<std::size_t>(size_ - at));
        if (r <= 0) break;
        at += static_cast<std::uint64_t>(r);
    }
    out.resize(static_cast<std::size_t>(at));
    return out;
}

void RequestBody::release() {
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
        budget_.spooled.fetch_sub(static_cast<std::int64_t>(size_), std::memory_order_relaxed);
    }
    if (memory_held_ > 0) {
        budget_.memory.fetch_sub(memory_held_, std::memory_order_relaxed);
        memory_held_ = 0;
    }
    // A large body's memory goes back to the system; a small one's stays for the next request.
    if (memory_.capacity() > 16 * 1024) std::string().swap(memory_);
    else memory_.clear();
    scratch_.reset();
    head_.clear();
    size_ = 0;
}

}  // namespace vllm_router
