// The simulated engine. Three parts: SimState (options, counters and the FIFO scheduler shared
// by every connection), SimSession (one client connection: parse, answer, stream, detect the
// client leaving) and SimListener (accept loop). SimEngine owns the io_context and its threads.
#include "sim/sim_engine.hpp"

#include "core/json_util.hpp"
#include "core/text.hpp"

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>

namespace vllm_router {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = beast::error_code;
using steady = std::chrono::steady_clock;

constexpr std::uint64_t body_limit_bytes = 256ull << 20;
// Bytes a client may send ahead (pipelining) while its request runs; past this the session
// stops watching the socket and notices a departure on the next failed write instead.
constexpr std::size_t watch_buffer_cap = 64 * 1024;
constexpr int engine_count = 2;
constexpr int embedding_dims = 8;
constexpr std::size_t prefix_memory = 4096;
constexpr std::string_view server_name = "vllm-router-sim";

// ---------------------------------------------------------------------------------------------
// Text helpers


// Numbers as Python's prometheus_client prints them ("1.0"), as vLLM's /metrics has them.
std::string prom_number_dot(double v) { return prom_number(v, true); }

std::string_view error_type(int status) {
    switch (status) {
        case 400: return "BadRequestError";
        case 401: return "AuthenticationError";
        case 403: return "PermissionDeniedError";
        case 404: return "NotFoundError";
        case 408: return "RequestTimeoutError";
        case 413: return "RequestEntityTooLargeError";
        case 422: return "UnprocessableEntityError";
        case 429: return "RateLimitError";
        case 500: return "InternalServerError";
        case 501: return "NotImplementedError";
        case 502: return "BadGatewayError";
        case 503: return "ServiceUnavailableError";
        case 504: return "GatewayTimeoutError";
        default: return status >= 500 ? "InternalServerError" : "BadRequestError";
    }
}

std::string error_body(int status, std::string_view message, std::string_view param = {}) {
    std::string out = "{\"error\":{\"message\":";
    append_json_string(out, message);
    out += ",\"type\":";
    append_json_string(out, error_type(status));
    out += ",\"param\":";
    out += param.empty() ? std::string("null") : json_string(param);
    out += ",\"code\":" + std::to_string(status) + "}}";
    return out;
}

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// ---------------------------------------------------------------------------------------------
// Requests

enum class Endpoint { chat, completion, embedding };

// What the engine was asked to do, read from the request body.
struct Job {
    Endpoint endpoint = Endpoint::chat;
    bool stream = false;
    bool include_usage = false;
    int tokens = 0;                     // tokens the answer will have
    std::string_view finish = "stop";   // "length" when the request's own limit cut it
    std::uint64_t prompt_tokens = 1;
    std::uint64_t prompt_hash = kFnvOffset;
    std::vector<std::uint64_t> input_hashes;  // embeddings: one per input
    int engine = 0;
    std::string id;
    std::int64_t created = 0;
};

struct JobProblem {
    int status = 0;  // 0: the job is valid
    std::string message;
    std::string param;
};

// Prompt size and identity: about four characters per token, as a tokenizer would count English.
struct PromptMeter {
    std::uint64_t chars = 0;
    std::uint64_t ids = 0;
    std::uint64_t hash = kFnvOffset;

    void text(std::string_view s) {
        chars += s.size();
        hash = fnv1a(s, hash);
    }
    void token_id(std::int64_t id) {
        ++ids;
        hash = fnv1a(std::string_view(reinterpret_cast<const char*>(&id), sizeof id), hash);
    }
    std::uint64_t tokens() const { return std::max<std::uint64_t>(1, ids + (chars + 3) / 4); }
};

// One prompt: a string or a list of token ids.
bool read_one_prompt(simdjson::dom::element e, PromptMeter& meter) {
    using simdjson::dom::element_type;
    std::string_view text;
    if (!e.get_string().get(text)) {
        meter.text(text);
        return true;
    }
    simdjson::dom::array ids;
    if (e.get_array().get(ids) || ids.size() == 0) return false;
    for (auto id : ids) {
        std::int64_t v = 0;
        if (id.get_int64().get(v)) return false;
        meter.token_id(v);
    }
    return true;
}

// The prompt or input of the API: one prompt, or a non-empty list of them. `each` gets the hash
// of every single input (embeddings answer one vector per input).
template <typename Each>
bool read_prompts(simdjson::dom::element el, PromptMeter& meter, Each&& each) {
    using simdjson::dom::element_type;
    simdjson::dom::array list;
    bool many = !el.get_array().get(list) && list.size() > 0 &&
                ((*list.begin()).type() == element_type::STRING || (*list.begin()).type() == element_type::ARRAY);
    auto take = [&](simdjson::dom::element e) {
        PromptMeter one;
        if (!read_one_prompt(e, one)) return false;
        meter.chars += one.chars;
        meter.ids += one.ids;
        meter.hash = fnv1a(std::string_view(reinterpret_cast<const char*>(&one.hash), sizeof one.hash), meter.hash);
        each(one.hash);
        return true;
    };
    if (!many) return take(el);
    for (auto e : list)
        if (!take(e)) return false;
    return true;
}

bool read_chat_messages(simdjson::dom::element el, PromptMeter& meter) {
    using simdjson::dom::element_type;
    simdjson::dom::array messages;
    if (el.get_array().get(messages) || messages.size() == 0) return false;
    for (auto m : messages) {
        simdjson::dom::object msg;
        if (m.get_object().get(msg)) return false;
        simdjson::dom::element content;
        if (msg["content"].get(content)) continue;  // e.g. an assistant turn with tool calls only
        std::string_view text;
        simdjson::dom::array parts;
        if (!content.get_string().get(text)) {
            meter.text(text);
        } else if (!content.get_array().get(parts)) {
            for (auto part : parts)
                if (!part["text"].get_string().get(text)) meter.text(text);
        } else if (content.type() != element_type::NULL_VALUE) {
            return false;
        }
    }
    return true;
}

JobProblem parse_job(const std::string& body, Endpoint endpoint, const SimOptions& opt, Job& job) {
    using simdjson::dom::element_type;
    thread_local simdjson::dom::parser parser;
    job.endpoint = endpoint;

    simdjson::dom::element doc;
    simdjson::dom::object root;
    if (parser.parse(body).get(doc) || doc.get_object().get(root))
        return {400, "Invalid JSON: the request body must be a JSON object.", {}};

    simdjson::dom::element model;
    if (!root["model"].get(model) && model.type() != element_type::NULL_VALUE) {
        std::string_view name;
        if (model.get_string().get(name)) return {400, "model must be a string", "model"};
        if (name != opt.model)
            return {404, "The model `" + std::string(name) + "` does not exist.", "model"};
    }

    PromptMeter meter;
    simdjson::dom::element input;
    switch (endpoint) {
        case Endpoint::chat:
            if (root["messages"].get(input) || !read_chat_messages(input, meter))
                return {400, "messages must be a non-empty list of chat messages", "messages"};
            break;
        case Endpoint::completion:
            if (root["prompt"].get(input) || !read_prompts(input, meter, [](std::uint64_t) {}))
                return {400, "prompt must be a string, a list of token ids, or a list of either", "prompt"};
            break;
        case Endpoint::embedding:
            if (root["input"].get(input) ||
                !read_prompts(input, meter, [&](std::uint64_t h) { job.input_hashes.push_back(h); }))
                return {400, "input must be a string, a list of token ids, or a list of either", "input"};
            break;
    }
    job.prompt_tokens = meter.tokens();
    job.prompt_hash = meter.hash;

    if (endpoint == Endpoint::embedding) return {};

    simdjson::dom::element v;
    if (!root["stream"].get(v) && v.type() != element_type::NULL_VALUE) {
        if (v.get_bool().get(job.stream)) return {400, "stream must be a boolean", "stream"};
    }
    if (job.stream && !root["stream_options"].get(v) && v.type() == element_type::OBJECT) {
        simdjson::dom::element usage;
        if (!v["include_usage"].get(usage) && usage.get_bool().get(job.include_usage)) job.include_usage = false;
    }

    // max_completion_tokens supersedes max_tokens in the chat API.
    std::optional<std::int64_t> limit;
    for (const char* key : {"max_tokens", "max_completion_tokens"}) {
        if (root[key].get(v) || v.type() == element_type::NULL_VALUE) continue;
        std::int64_t n = 0;
        if (v.get_int64().get(n)) return {400, std::string(key) + " must be an integer", key};
        if (n < 1) return {400, std::string(key) + " must be at least 1, got " + std::to_string(n), key};
        limit = n;
    }
    job.tokens = opt.max_tokens;
    job.finish = "stop";
    if (limit && *limit <= opt.max_tokens) {
        job.tokens = static_cast<int>(*limit);
        job.finish = "length";
    }
    return {};
}

std::string usage_json(std::uint64_t prompt, std::uint64_t completion) {
    return "{\"prompt_tokens\":" + std::to_string(prompt) +
           ",\"total_tokens\":" + std::to_string(prompt + completion) +
           ",\"completion_tokens\":" + std::to_string(completion) + "}";
}

// Token i of every answer: "tok0", " tok1", ... so that the text is "tok0 tok1 ...".
std::string token_text(int i) { return (i == 0 ? "tok" : " tok") + std::to_string(i); }

std::string answer_text(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += token_text(i);
    return s;
}

std::string chunk_prefix(const Job& job, std::string_view object, const std::string& model) {
    return "{\"id\":" + json_string(job.id) + ",\"object\":\"" + std::string(object) +
           "\",\"created\":" + std::to_string(job.created) + ",\"model\":" + json_string(model);
}

std::string sse(const std::string& json) { return "data: " + json + "\n\n"; }

std::string stream_role_event(const Job& job, const std::string& model) {
    return sse(chunk_prefix(job, "chat.completion.chunk", model) +
               ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
               "\"logprobs\":null,\"finish_reason\":null}]}");
}

std::string stream_token_event(const Job& job, const std::string& model, int i) {
    if (job.endpoint == Endpoint::chat)
        return sse(chunk_prefix(job, "chat.completion.chunk", model) +
                   ",\"choices\":[{\"index\":0,\"delta\":{\"content\":" + json_string(token_text(i)) +
                   "},\"logprobs\":null,\"finish_reason\":null}]}");
    return sse(chunk_prefix(job, "text_completion", model) + ",\"choices\":[{\"index\":0,\"text\":" +
               json_string(token_text(i)) + ",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}]}");
}

std::string stream_finish_event(const Job& job, const std::string& model) {
    std::string reason = json_string(job.finish);
    if (job.endpoint == Endpoint::chat)
        return sse(chunk_prefix(job, "chat.completion.chunk", model) +
                   ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":" + reason +
                   ",\"stop_reason\":null}]}");
    return sse(chunk_prefix(job, "text_completion", model) +
               ",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":" + reason +
               ",\"stop_reason\":null}]}");
}

std::string stream_usage_event(const Job& job, const std::string& model) {
    auto object = job.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion";
    return sse(chunk_prefix(job, object, model) + ",\"choices\":[],\"usage\":" +
               usage_json(job.prompt_tokens, static_cast<std::uint64_t>(job.tokens)) + "}");
}

std::string full_answer(const Job& job, const std::string& model) {
    auto n = static_cast<std::uint64_t>(job.tokens);
    std::string reason = json_string(job.finish);
    if (job.endpoint == Endpoint::chat)
        return chunk_prefix(job, "chat.completion", model) +
               ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" +
               json_string(answer_text(job.tokens)) + ",\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":" +
               reason + ",\"stop_reason\":null}],\"usage\":" + usage_json(job.prompt_tokens, n) + "}";
    return chunk_prefix(job, "text_completion", model) + ",\"choices\":[{\"index\":0,\"text\":" +
           json_string(answer_text(job.tokens)) + ",\"logprobs\":null,\"finish_reason\":" + reason +
           ",\"stop_reason\":null}],\"usage\":" + usage_json(job.prompt_tokens, n) + "}";
}

// A unit vector derived from the input alone, so equal inputs embed equally.
std::string embedding_answer(const Job& job, const std::string& model) {
    std::string out = chunk_prefix(job, "list", model) + ",\"data\":[";
    for (std::size_t i = 0; i < job.input_hashes.size(); ++i) {
        std::uint64_t x = job.input_hashes[i] | 1;
        std::array<double, embedding_dims> v{};
        double norm = 0;
        for (auto& d : v) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            d = static_cast<double>(x >> 11) * 0x1.0p-53 * 2.0 - 1.0;
            norm += d * d;
        }
        norm = std::sqrt(norm);
        if (i) out += ',';
        out += "{\"index\":" + std::to_string(i) + ",\"object\":\"embedding\",\"embedding\":[";
        for (int k = 0; k < embedding_dims; ++k) {
            if (k) out += ',';
            out += prom_number_dot(norm > 0 ? v[k] / norm : 0.0);
        }
        out += "]}";
    }
    return out + "],\"usage\":" + usage_json(job.prompt_tokens, 0) + "}";
}

// ---------------------------------------------------------------------------------------------
// Engine state

class SimSession;

struct EngineCounters {
    std::atomic<std::uint64_t> success_stop{0};
    std::atomic<std::uint64_t> success_length{0};
    std::atomic<std::uint64_t> prompt_tokens{0};
    std::atomic<std::uint64_t> generation_tokens{0};
    std::atomic<std::uint64_t> prefix_queries{0};
    std::atomic<std::uint64_t> prefix_hits{0};
};

struct SimState {
    explicit SimState(SimOptions o)
        : opt(std::move(o)), started_at(unix_now()), fail_status(opt.fail_status),
          id_salt(std::random_device{}() * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(started_at)) {}

    const SimOptions opt;
    const std::int64_t started_at;
    std::atomic<int> health_status{200};
    std::atomic<int> fail_status;
    std::atomic<std::uint64_t> requests{0}, completed{0}, aborted{0}, health_checks{0}, metrics_scrapes{0};
    std::atomic<std::uint64_t> running_now{0}, waiting_now{0};
    std::atomic<std::uint64_t> sequence{0};
    const std::uint64_t id_salt;
    std::array<EngineCounters, engine_count> engines;

    // The scheduler: true when a slot was free and is now held by the caller; otherwise the
    // session is queued and gets on_admitted() posted to its strand when its turn comes.
    bool admit(const std::shared_ptr<SimSession>& session);
    // Removes a queued session; false when it was already granted a slot (which it now holds).
    bool withdraw(const SimSession* session);
    void release();
    void clear();
    // Remembers prompts like a prefix cache: true when this prompt was seen recently.
    bool prefix_seen(std::uint64_t hash);
    std::string metrics_text();

private:
    void publish() {
        running_now = static_cast<std::uint64_t>(running_);
        waiting_now = waiting_.size();
    }

    std::mutex mu_;
    int running_ = 0;
    std::deque<std::shared_ptr<SimSession>> waiting_;
    std::unordered_set<std::uint64_t> seen_prompts_;
};

// ---------------------------------------------------------------------------------------------
// One client connection.

class SimSession : public std::enable_shared_from_this<SimSession> {
public:
    SimSession(tcp::socket&& socket, std::shared_ptr<SimState> state)
        : stream_(std::move(socket)), timer_(stream_.get_executor()), state_(std::move(state)) {}

    void run() {
        error_code ec;
        stream_.socket().set_option(tcp::no_delay(true), ec);
        net::dispatch(stream_.get_executor(), beast::bind_front_handler(&SimSession::do_read, shared_from_this()));
    }

    auto executor() { return stream_.get_executor(); }

    // Posted by the scheduler when a slot was granted to this queued request.
    void on_admitted() {
        if (phase_ != Phase::queued || closed_) return;  // withdrawn meanwhile: the slot was released
        phase_ = Phase::running;
        holding_slot_ = true;
        start_prefill();
    }

private:
    enum class Phase { idle, queued, running, answering };

    // A queued write: raw bytes (the stream's header), one chunk, or the last chunk.
    struct Out {
        enum Kind { raw, chunk, last } kind;
        std::string data;
    };

    bool active() const { return phase_ != Phase::idle; }

    // ---- reading requests

    void do_read() {
        if (closed_) return;
        parser_.emplace();
        parser_->body_limit(body_limit_bytes);
        if (state_->opt.keep_alive_timeout > 0)
            stream_.expires_after(std::chrono::duration_cast<steady::duration>(
                std::chrono::duration<double>(state_->opt.keep_alive_timeout)));
        else
            stream_.expires_never();
        http::async_read_header(stream_, buffer_, *parser_,
                                beast::bind_front_handler(&SimSession::on_read_header, shared_from_this()));
    }

    void on_read_header(error_code ec, std::size_t) {
        if (closed_) return;
        stream_.expires_never();
        if (ec) return on_read_error(ec);
        auto expect = parser_->get()[http::field::expect];
        if (beast::iequals(expect, "100-continue")) {
            static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
            net::async_write(stream_, net::buffer(cont.data(), cont.size()),
                             beast::bind_front_handler(&SimSession::on_continue, shared_from_this()));
            return;
        }
        do_read_body();
    }

    void on_continue(error_code ec, std::size_t) {
        if (closed_) return;
        if (ec) return close(false);
        do_read_body();
    }

    void do_read_body() {
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&SimSession::on_read_body, shared_from_this()));
    }

    void on_read_body(error_code ec, std::size_t) {
        if (closed_) return;
        if (ec) return on_read_error(ec);
        handle_request(parser_->release());
    }

    void on_read_error(error_code ec) {
        keep_alive_ = false;
        if (ec == http::error::body_limit)
            return send_json(http::status::payload_too_large, error_body(413, "Request body too large."));
        if (ec == http::error::header_limit)
            return send_json(http::status::request_header_fields_too_large,
                             error_body(431, "Request header fields too large."));
        if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message)
            return send_json(http::status::bad_request, error_body(400, "Invalid HTTP request."));
        close(false);  // the client left, or went idle past the keep-alive timeout
    }

    // ---- routing

    void handle_request(http::request<http::string_body>&& req) {
        keep_alive_ = req.keep_alive();
        std::string_view target = req.target();
        auto path = target.substr(0, target.find('?'));
        bool get = req.method() == http::verb::get;
        bool post = req.method() == http::verb::post;

        if (path == "/health" && get) {
            ++state_->health_checks;
            return send(static_cast<http::status>(state_->health_status.load()), {}, {});
        }
        if (path == "/v1/models" && get) return send_json(http::status::ok, models_body());
        if (path == "/metrics" && get) {
            ++state_->metrics_scrapes;
            return send(http::status::ok, state_->metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
        }
        if (path == "/v1/chat/completions" && post) return handle_inference(Endpoint::chat, req.body());
        if (path == "/v1/completions" && post) return handle_inference(Endpoint::completion, req.body());
        if (path == "/v1/embeddings" && post) return handle_inference(Endpoint::embedding, req.body());

        bool known = path == "/health" || path == "/v1/models" || path == "/metrics" ||
                     path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/embeddings";
        if (known) return send_json(http::status::method_not_allowed, "{\"detail\":\"Method Not Allowed\"}");
        send_json(http::status::not_found, "{\"detail\":\"Not Found\"}");
    }

    std::string models_body() const {
        const auto& m = state_->opt.model;
        return "{\"object\":\"list\",\"data\":[{\"id\":" + json_string(m) +
               ",\"object\":\"model\",\"created\":" + std::to_string(state_->started_at) +
               ",\"owned_by\":\"vllm\",\"root\":" + json_string(m) +
               ",\"parent\":null,\"max_model_len\":8192,\"permission\":[]}]}";
    }

    void handle_inference(Endpoint endpoint, const std::string& body) {
        ++state_->requests;
        if (int fail = state_->fail_status.load(); fail != 0)
            return send_json(static_cast<http::status>(fail), error_body(fail, "Simulated engine failure."));

        Job job;
        auto problem = parse_job(body, endpoint, state_->opt, job);
        if (problem.status)
            return send_json(static_cast<http::status>(problem.status),
                             error_body(problem.status, problem.message, problem.param));

        auto seq = state_->sequence++;
        job.engine = static_cast<int>(seq % engine_count);
        job.created = unix_now();
        job.id = std::string(endpoint == Endpoint::chat         ? "chatcmpl-"
                             : endpoint == Endpoint::completion ? "cmpl-"
                                                                : "embd-") +
                 hex64(state_->id_salt) + hex64(seq);
        job_ = std::move(job);
        produced_ = 0;
        dying_ = false;
        counted_ = false;
        outbox_.clear();
        phase_ = Phase::queued;

        // vLLM's streaming response sends its header at once, even while the request queues.
        if (job_.stream) {
            std::string head = "HTTP/1.1 200 OK\r\nserver: " + std::string(server_name) +
                               "\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                               "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n";
            if (!keep_alive_) head += "connection: close\r\n";
            outbox_.push_back({Out::raw, head + "\r\n"});
            do_write();
        }
        do_watch();
        if (state_->admit(shared_from_this())) on_admitted();
    }

    // ---- generation

    void start_prefill() {
        auto& counters = state_->engines[job_.engine];
        counters.prompt_tokens += job_.prompt_tokens;
        counters.prefix_queries += job_.prompt_tokens;
        if (state_->prefix_seen(job_.prompt_hash)) counters.prefix_hits += job_.prompt_tokens;

        started_ = steady::now();
        const auto& opt = state_->opt;
        int last = job_.tokens;  // the token after which the answer is complete
        if (opt.die_after > 0) last = std::min(last, opt.die_after);
        if (job_.endpoint == Endpoint::embedding) last = 1;
        // Streams wake for every token; other answers only once, when they are complete.
        arm_timer(job_.stream ? 0 : last - 1);
    }

    // Token i (0-based) is produced at ttft + i * token_delay after the request got its slot.
    void arm_timer(int token) {
        const auto& opt = state_->opt;
        auto at = started_ + std::chrono::duration_cast<steady::duration>(
                                 std::chrono::duration<double>(opt.ttft + token * opt.token_delay));
        timer_.expires_at(at);
        timer_.async_wait(beast::bind_front_handler(&SimSession::on_timer, shared_from_this()));
    }

    void on_timer(error_code ec) {
        if (ec || closed_ || phase_ != Phase::running) return;
        if (job_.stream) return produce_stream_token();

        const auto& opt = state_->opt;
        bool embedding = job_.endpoint == Endpoint::embedding;
        bool dies = opt.die_after > 0 && (embedding || opt.die_after <= job_.tokens);
        int produced = embedding ? 0 : dies ? opt.die_after : job_.tokens;
        state_->engines[job_.engine].generation_tokens += static_cast<std::uint64_t>(produced);
        end_generation();
        if (dies) return crash();

        phase_ = Phase::answering;
        count_success(true);
        send_json(http::status::ok, job_.endpoint == Endpoint::embedding ? embedding_answer(job_, opt.model)
                                                                        : full_answer(job_, opt.model));
    }

    void produce_stream_token() {
        const auto& opt = state_->opt;
        if (produced_ == 0 && job_.endpoint == Endpoint::chat)
            outbox_.push_back({Out::chunk, stream_role_event(job_, opt.model)});
        outbox_.push_back({Out::chunk, stream_token_event(job_, opt.model, produced_)});
        ++produced_;
        ++state_->engines[job_.engine].generation_tokens;

        if (opt.die_after > 0 && produced_ >= opt.die_after) {
            // The engine "crashes" once the tokens produced so far have left.
            dying_ = true;
            end_generation();
        } else if (produced_ >= job_.tokens) {
            outbox_.push_back({Out::chunk, stream_finish_event(job_, opt.model)});
            if (job_.include_usage) outbox_.push_back({Out::chunk, stream_usage_event(job_, opt.model)});
            outbox_.push_back({Out::chunk, "data: [DONE]\n\n"});
            outbox_.push_back({Out::last, {}});
            end_generation();
            phase_ = Phase::answering;
        } else {
            arm_timer(produced_);
        }
        do_write();
    }

    void end_generation() {
        if (!holding_slot_) return;
        holding_slot_ = false;
        state_->release();
    }

    // ---- writing a stream, one event per write so that each leaves at once

    void do_write() {
        if (writing_ || closed_ || outbox_.empty()) return;
        writing_ = true;
        auto handler = beast::bind_front_handler(&SimSession::on_write, shared_from_this());
        auto& out = outbox_.front();
        switch (out.kind) {
            case Out::raw:
                net::async_write(stream_, net::buffer(out.data), std::move(handler));
                break;
            case Out::chunk:
                net::async_write(stream_, http::make_chunk(net::buffer(out.data)), std::move(handler));
                break;
            case Out::last:
                count_success(true);
                net::async_write(stream_, http::make_chunk_last(), std::move(handler));
                break;
        }
    }

    void on_write(error_code ec, std::size_t) {
        writing_ = false;
        if (closed_) return;
        if (ec) return active() ? abort_request() : close(false);
        outbox_.pop_front();
        if (!outbox_.empty()) return do_write();
        if (dying_) return crash();
        if (phase_ == Phase::answering) finish_response();
    }

    // ---- whole responses

    void send_json(http::status status, std::string body) { send(status, std::move(body), "application/json"); }

    void send(http::status status, std::string body, std::string_view content_type) {
        res_ = http::response<http::string_body>{};
        res_.version(11);
        res_.result(status);
        res_.set(http::field::server, server_name);
        if (!content_type.empty()) res_.set(http::field::content_type, content_type);
        res_.keep_alive(keep_alive_);
        res_.body() = std::move(body);
        res_.prepare_payload();
        http::async_write(stream_, res_, beast::bind_front_handler(&SimSession::on_sent, shared_from_this()));
    }

    void on_sent(error_code ec, std::size_t) {
        if (closed_) return;
        if (ec) return active() ? abort_request() : close(false);
        if (phase_ == Phase::answering) return finish_response();
        next_request();
    }

    // A request counts as completed once its last bytes are handed to the socket, so that a
    // client that has read the answer always sees it counted; a failed last write takes it back.
    void count_success(bool yes) {
        if (counted_ == yes) return;
        counted_ = yes;
        auto& counters = state_->engines[job_.engine];
        auto& success = job_.finish == "length" ? counters.success_length : counters.success_stop;
        if (yes) {
            ++state_->completed;
            ++success;
        } else {
            --state_->completed;
            --success;
        }
    }

    void finish_response() {
        phase_ = Phase::idle;
        next_request();
    }

    void next_request() {
        if (!keep_alive_) return close(true);
        if (watching_) {
            stream_.socket().cancel();  // on_watch resumes with the next request
            return;
        }
        do_read();
    }

    // ---- noticing the client leave

    // While a request is queued or generating, a read stays posted on the socket so that a
    // client's close is seen at once even when nothing is being written (non-stream answers).
    void do_watch() {
        if (watching_ || closed_ || buffer_.size() >= watch_buffer_cap) return;
        watching_ = true;
        stream_.async_read_some(buffer_.prepare(4096),
                                beast::bind_front_handler(&SimSession::on_watch, shared_from_this()));
    }

    void on_watch(error_code ec, std::size_t n) {
        watching_ = false;
        if (closed_) return;
        if (ec) {
            // Once the answer is complete and leaving, a client that has read it may close first:
            // the pending write decides whether it got everything.
            if (phase_ == Phase::answering && ec != net::error::operation_aborted) {
                keep_alive_ = false;
                return;
            }
            if (active()) return abort_request();
            if (ec == net::error::operation_aborted) return do_read();
            return close(false);
        }
        buffer_.commit(n);  // a pipelined next request: kept for do_read
        if (active()) return do_watch();
        do_read();
    }

    void abort_request() {
        count_success(false);
        if (phase_ == Phase::queued && !state_->withdraw(this)) holding_slot_ = true;
        end_generation();
        if (active()) ++state_->aborted;
        phase_ = Phase::idle;
        close(false);
    }

    // Simulates the engine process dying: no final chunk, the socket just goes.
    void crash() {
        end_generation();
        phase_ = Phase::idle;
        close(false);
    }

    void close(bool graceful) {
        if (closed_) return;
        closed_ = true;
        timer_.cancel();
        error_code ec;
        if (graceful) stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream_.socket().close(ec);
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> res_;
    net::steady_timer timer_;
    std::shared_ptr<SimState> state_;

    Job job_;
    Phase phase_ = Phase::idle;
    steady::time_point started_;
    int produced_ = 0;
    std::deque<Out> outbox_;
    bool keep_alive_ = true;
    bool holding_slot_ = false;
    bool writing_ = false;
    bool watching_ = false;
    bool dying_ = false;
    bool counted_ = false;
    bool closed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Scheduler and metrics (they need SimSession complete)

bool SimState::admit(const std::shared_ptr<SimSession>& session) {
    std::lock_guard lock(mu_);
    bool granted = waiting_.empty() && running_ < std::max(1, opt.max_seqs);
    if (granted)
        ++running_;
    else
        waiting_.push_back(session);
    publish();
    return granted;
}

bool SimState::withdraw(const SimSession* session) {
    std::lock_guard lock(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (it->get() == session) {
            waiting_.erase(it);
            publish();
            return true;
        }
    }
    return false;
}

void SimState::release() {
    std::vector<std::shared_ptr<SimSession>> granted;
    {
        std::lock_guard lock(mu_);
        if (running_ > 0) --running_;
        while (!waiting_.empty() && running_ < std::max(1, opt.max_seqs)) {
            granted.push_back(std::move(waiting_.front()));
            waiting_.pop_front();
            ++running_;
        }
        publish();
    }
    for (auto& s : granted) {
        auto ex = s->executor();
        net::post(ex, beast::bind_front_handler(&SimSession::on_admitted, std::move(s)));
    }
}

void SimState::clear() {
    std::deque<std::shared_ptr<SimSession>> dropped;
    {
        std::lock_guard lock(mu_);
        dropped.swap(waiting_);
        running_ = 0;
        publish();
    }
}

bool SimState::prefix_seen(std::uint64_t hash) {
    std::lock_guard lock(mu_);
    if (seen_prompts_.count(hash)) return true;
    if (seen_prompts_.size() >= prefix_memory) seen_prompts_.clear();
    seen_prompts_.insert(hash);
    return false;
}

std::string SimState::metrics_text() {
    std::uint64_t running = 0, waiting = 0;
    {
        std::lock_guard lock(mu_);
        running = static_cast<std::uint64_t>(running_);
        waiting = waiting_.size();
    }
    // Two engines (data parallel) share the load so that the sum of their series is the truth;
    // each engine's KV usage is its share of the whole, so the sum is running / max_seqs too.
    std::array<std::uint64_t, engine_count> run{(running + 1) / 2, running / 2};
    std::array<std::uint64_t, engine_count> wait{(waiting + 1) / 2, waiting / 2};
    const double seqs = std::max(1, opt.max_seqs);

    std::string out;
    auto labels = [&](int e) { return "{engine=\"" + std::to_string(e) + "\",model_name=" + json_string(opt.model); };
    auto family = [&](std::string_view name, std::string_view type, std::string_view help, auto value) {
        out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
        out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
        for (int e = 0; e < engine_count; ++e)
            out += std::string(name) + labels(e) + "} " + prom_number_dot(value(e)) + "\n";
    };
    auto load = [](const std::atomic<std::uint64_t>& a) { return static_cast<double>(a.load()); };

    family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
           [&](int e) { return static_cast<double>(run[e]); });
    family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           [&](int e) { return static_cast<double>(wait[e]); });
    family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           [&](int e) { return static_cast<double>(run[e]) / seqs; });
    family("vllm:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.",
           [&](int e) { return load(engines[e].prefix_queries); });
    family("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.",
           [&](int e) { return load(engines[e].prefix_hits); });
    family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
           [&](int e) { return load(engines[e].prompt_tokens); });
    family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
           [&](int e) { return load(engines[e].generation_tokens); });

    out += "# HELP vllm:request_success_total Count of successfully processed requests.\n"
           "# TYPE vllm:request_success_total counter\n";
    for (int e = 0; e < engine_count; ++e) {
        for (std::string_view reason : {"length", "stop"}) {
            auto& n = reason == "length" ? engines[e].success_length : engines[e].success_stop;
            out += "vllm:request_success_total{engine=\"" + std::to_string(e) + "\",finished_reason=\"" +
                   std::string(reason) + "\",model_name=" + json_string(opt.model) + "} " + prom_number_dot(load(n)) +
                   "\n";
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Accept loop

class SimListener : public std::enable_shared_from_this<SimListener> {
public:
    SimListener(net::io_context& ioc, tcp::endpoint endpoint, std::shared_ptr<SimState> state)
        : ioc_(ioc), acceptor_(net::make_strand(ioc)), state_(std::move(state)) {
        acceptor_.open(endpoint.protocol());
        acceptor_.set_option(net::socket_base::reuse_address(true));
        acceptor_.bind(endpoint);
        acceptor_.listen(net::socket_base::max_listen_connections);
    }

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

    void do_accept() {
        acceptor_.async_accept(net::make_strand(ioc_),
                               beast::bind_front_handler(&SimListener::on_accept, shared_from_this()));
    }

private:
    void on_accept(error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
        if (!ec) std::make_shared<SimSession>(std::move(socket), state_)->run();
        do_accept();  // a failed accept (e.g. out of descriptors) must not stop the listener
    }

    net::io_context& ioc_;
    tcp::acceptor acceptor_;
    std::shared_ptr<SimState> state_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct SimEngine::Impl {
    explicit Impl(SimOptions options) : state(std::make_shared<SimState>(std::move(options))) {}

    std::shared_ptr<SimState> state;
    std::mutex mu;  // start/stop
    std::unique_ptr<net::io_context> ioc;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
    std::shared_ptr<SimListener> listener;
    std::vector<std::thread> threads;
    std::atomic<std::uint16_t> port{0};
};

namespace {
SimOptions sanitized(SimOptions o) {
    o.max_tokens = std::max(1, o.max_tokens);
    o.max_seqs = std::max(1, o.max_seqs);
    o.threads = std::max(1, o.threads);
    o.die_after = std::max(0, o.die_after);
    o.ttft = std::max(0.0, o.ttft);
    o.token_delay = std::max(0.0, o.token_delay);
    return o;
}
}  // namespace

SimEngine::SimEngine(SimOptions options) : impl_(std::make_unique<Impl>(sanitized(std::move(options)))) {}

SimEngine::~SimEngine() { stop(); }

std::uint16_t SimEngine::start() {
    std::lock_guard lock(impl_->mu);
    if (impl_->ioc) return impl_->port;
    const auto& opt = impl_->state->opt;
    auto ioc = std::make_unique<net::io_context>(opt.threads);
    tcp::endpoint endpoint(net::ip::make_address(opt.host), opt.port);
    auto listener = std::make_shared<SimListener>(*ioc, endpoint, impl_->state);
    impl_->port = listener->port();
    listener->do_accept();
    impl_->work.emplace(ioc->get_executor());
    impl_->listener = std::move(listener);
    impl_->ioc = std::move(ioc);
    for (int i = 0; i < opt.threads; ++i) {
        impl_->threads.emplace_back([ioc = impl_->ioc.get()] {
            for (;;) {
                try {
                    ioc->run();
                    return;
                } catch (...) {
                    // A handler is not supposed to throw; keep serving if one does.
                }
            }
        });
    }
    return impl_->port;
}

void SimEngine::stop() {
    std::lock_guard lock(impl_->mu);
    if (!impl_->ioc) return;
    impl_->work.reset();
    impl_->ioc->stop();
    for (auto& t : impl_->threads) t.join();
    impl_->threads.clear();
    // Queued sessions are referenced by the scheduler; drop them before their io_context goes.
    impl_->state->clear();
    impl_->listener.reset();
    // Destroying the io_context destroys every pending handler, hence every session and socket.
    impl_->ioc.reset();
}

std::uint16_t SimEngine::port() const { return impl_->port; }

SimEngine::Stats SimEngine::stats() const {
    const auto& s = *impl_->state;
    return {s.requests.load(), s.completed.load(),   s.aborted.load(),         s.running_now.load(),
            s.waiting_now.load(), s.health_checks.load(), s.metrics_scrapes.load()};
}

void SimEngine::set_health_status(int code) { impl_->state->health_status = code; }

void SimEngine::set_fail_status(int code) { impl_->state->fail_status = code; }

}  // namespace vllm_router
