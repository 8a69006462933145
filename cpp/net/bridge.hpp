// Where the data plane meets Python without ever taking the GIL on an I/O thread:
//
//   EventQueue     log events (one access event per request, control-plane news) pushed by any
//                  thread, drained in batches by a Python thread. Bounded: when Python falls
//                  behind, events are dropped and counted, never waited for.
//   CallbackQueue  jobs for Python callback workers, bounded. A pre_request job parks its
//                  session until a Python worker answers (reply or proceed) or callback_timeout
//                  passes; the answer is posted back to the session's own I/O thread. post_request jobs carry the whole response and need
//                  no answer. Python workers block in pop() with the GIL released.
//
// A job may outlive the session and even the router (a Python thread can still hold it): it
// reaches its session only through a weak pointer and a gate that the worker closes when its
// io_context goes away.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

namespace vllm_router {

struct LogEvent {
    double time = 0;       // unix seconds
    int level = 20;        // Python logging levels: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR
    bool access = false;   // one-per-request access event
    std::string message;
    // Access fields (empty / negative when not applicable).
    std::string request_id, method, path, backend, model, client;
    std::string error;     // why an answer under way went wrong (a broken stream)
    int status = 0;
    double latency = -1, ttft = -1;
    bool stream = false;
    int attempts = 0;
};

// A control-plane or data-plane event (not an access event), stamped now.
LogEvent make_event(int level, std::string backend, std::string message);

// Python's name for a logging level: "DEBUG", "INFO", "WARNING", "ERROR".
const char* level_name(int level);

// An access event rendered once in C++, for the log files: the JSON line of the structured log
// (time, level, logger, message, request_id, backend, model, status, latency, ttft, then the
// rest) and the text after "LEVEL logger: " in the readable log. Rendering here instead of in
// Python keeps access logging cheap at tens of thousands of requests a second.
std::string render_access_json(const LogEvent& event);
std::string render_access_text(const LogEvent& event);

class EventQueue {
public:
    static constexpr std::size_t kCapacity = 200000;

    explicit EventQueue(std::size_t capacity = kCapacity) : capacity_(capacity) {}
    void push(LogEvent event);
    std::vector<LogEvent> drain();
    std::uint64_t dropped() const;

private:
    const std::size_t capacity_;
    mutable std::mutex mutex_;
    std::vector<LogEvent> events_;
    std::uint64_t dropped_ = 0;
};

// Closed by a worker when its io_context is about to go: late answers are then dropped.
struct WorkerGate {
    std::mutex mutex;
    boost::asio::io_context* ioc = nullptr;
};

struct CallbackReply {
    int status = 200;
    std::string body;
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
};

class Session;

struct CallbackJob {
    enum class Kind { pre, post } kind = Kind::pre;
    std::string method, target, client, request_id;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;           // the request body
    int status = 0;             // post: the status the client got
    std::string response;       // post: the whole response body, as relayed

    // pre only: delivers the answer to the session (once; later calls do nothing).
    void answer(std::optional<CallbackReply> reply);
    ~CallbackJob();             // an unanswered pre job lets its request go on

    std::weak_ptr<Session> session;
    std::shared_ptr<WorkerGate> gate;
    bool answered = false;
};

// Bounded: a job beyond kCapacity is refused (push returns false) and its request goes on
// without the callback, so that a slow Python handler cannot make the router hold requests and
// their bodies without limit.
class CallbackQueue {
public:
    static constexpr std::size_t kCapacity = 4096;

    bool push(std::shared_ptr<CallbackJob> job);
    // Waits up to `seconds`; null on timeout or once closed and empty.
    std::shared_ptr<CallbackJob> pop(double seconds);
    void close();
    std::size_t pending() const;

private:
    mutable std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::shared_ptr<CallbackJob>> jobs_;
    bool closed_ = false;
};

}  // namespace vllm_router
