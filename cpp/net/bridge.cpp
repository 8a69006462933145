#include "net/bridge.hpp"

#include <chrono>

#include <boost/asio/post.hpp>

#include "net/session.hpp"

namespace vllm_router {

void EventQueue::push(LogEvent event) {
    std::lock_guard lock(mutex_);
    if (events_.size() >= kCapacity) {
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

void CallbackQueue::push(std::shared_ptr<CallbackJob> job) {
    {
        std::lock_guard lock(mutex_);
        if (closed_) return;  // dropping the job answers it: the request goes on
        jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
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
