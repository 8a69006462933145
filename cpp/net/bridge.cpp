#include "net/bridge.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include <boost/asio/post.hpp>

#include "core/json_util.hpp"
#include "core/text.hpp"
#include "net/session.hpp"

namespace vllm_router {
namespace {

// Client-controlled text must not forge lines in the readable log.
void append_one_line(std::string& out, std::string_view s) {
    for (char c : s) {
        if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else out += c;
    }
}

}  // namespace

const char* level_name(int level) {
    return level >= 40 ? "ERROR" : level >= 30 ? "WARNING" : level >= 20 ? "INFO" : "DEBUG";
}

LogEvent make_event(int level, std::string backend, std::string message) {
    LogEvent e;
    e.time = unix_seconds();
    e.level = level;
    e.backend = std::move(backend);
    e.message = std::move(message);
    return e;
}

std::string render_access_json(const LogEvent& e) {
    const auto ms = static_cast<std::int64_t>(e.time * 1000.0);
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char stamp[40];
    const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(ms % 1000));
    std::string out;
    out.reserve(384);
    out += "{\"time\":\"";
    out += stamp;
    out += "\",\"level\":\"";
    out += level_name(e.level);
    out += "\",\"logger\":\"vllm_router.access\",\"message\":";
    append_json_string(out, e.message);
    out += ",\"request_id\":";
    append_json_string(out, e.request_id);
    if (!e.backend.empty()) {
        out += ",\"backend\":";
        append_json_string(out, e.backend);
    }
    if (!e.model.empty()) {
        out += ",\"model\":";
        append_json_string(out, e.model);
    }
    out += ",\"status\":" + std::to_string(e.status);
    if (e.latency >= 0) out += ",\"latency\":" + json_number(e.latency, 6);
    if (e.ttft >= 0) out += ",\"ttft\":" + json_number(e.ttft, 6);
    out += ",\"method\":";
    append_json_string(out, e.method);
    out += ",\"path\":";
    append_json_string(out, e.path);
    out += ",\"client\":";
    append_json_string(out, e.client);
    out += ",\"stream\":";
    out += e.stream ? "true" : "false";
    out += ",\"attempts\":" + std::to_string(e.attempts);
    if (!e.error.empty()) {
        out += ",\"error\":";
        append_json_string(out, e.error);
    }
    out += '}';
    return out;
}

std::string render_access_text(const LogEvent& e) {
    std::string out;
    out.reserve(256);
    append_one_line(out, e.message);
    if (!e.backend.empty()) {
        out += " backend=";
        append_one_line(out, e.backend);
    }
    if (!e.model.empty()) {
        out += " model=";
        append_one_line(out, e.model);
    }
    out += " request_id=";
    append_one_line(out, e.request_id);
    return out;
}

void EventQueue::push(LogEvent event) {
    std::lock_guard lock(mutex_);
    if (events_.size() >= capacity_) {
        ++dropped_;
        return;
    }
    events_.push_back(std::move(event));
}

std::vector<LogEvent> EventQueue::drain() {
    std::vector<LogEvent> out;
    std::lock_guard lock(mutex_);
    out.swap(events_);
    return out;
}

std::uint64_t EventQueue::dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
}

void CallbackJob::answer(std::optional<CallbackReply> reply) {
    if (kind != Kind::pre || answered) return;
    answered = true;
    if (!gate) return;
    std::lock_guard lock(gate->mutex);
    if (!gate->ioc) return;  // the router is gone
    boost::asio::post(*gate->ioc, [weak = session, reply = std::move(reply)]() mutable {
        if (auto s = weak.lock()) s->on_pre_reply(std::move(reply));
    });
}

CallbackJob::~CallbackJob() {
    // A worker that dropped the job (or never got to it) must not strand the request.
    answer(std::nullopt);
}

bool CallbackQueue::push(std::shared_ptr<CallbackJob> job) {
    {
        std::lock_guard lock(mutex_);
        if (closed_ || jobs_.size() >= kCapacity) return false;
        jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
    return true;
}

std::shared_ptr<CallbackJob> CallbackQueue::pop(double seconds) {
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return closed_ || !jobs_.empty(); });
    if (jobs_.empty()) return nullptr;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    return job;
}

void CallbackQueue::close() {
    std::deque<std::shared_ptr<CallbackJob>> left;
    {
        std::lock_guard lock(mutex_);
        closed_ = true;
        left.swap(jobs_);
    }
    ready_.notify_all();
    // `left` goes here, outside the lock: unanswered pre jobs let their requests go on.
}

std::size_t CallbackQueue::pending() const {
    std::lock_guard lock(mutex_);
    return jobs_.size();
}

}  // namespace vllm_router
