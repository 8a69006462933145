// The simulated vLLM engine, driven over loopback by a small synchronous Beast client.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>

#include "sim/sim_engine.hpp"

namespace vllm_router {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

SimOptions fast_options() {
    SimOptions o;
    o.ttft = 0.005;
    o.token_delay = 0.005;
    o.max_tokens = 8;
    return o;
}

std::string chat_body(int max_tokens = 0, bool stream = false, std::string model = "sim-model") {
    std::string b = R"({"model":")" + model + R"(","messages":[{"role":"user","content":"hello there"}])";
    if (max_tokens) b += ",\"max_tokens\":" + std::to_string(max_tokens);
    if (stream) b += ",\"stream\":true";
    return b + "}";
}

// Waits until `ok` holds or `limit` passes; returns whether it held.
bool eventually(const std::function<bool()>& ok, std::chrono::milliseconds limit = 500ms) {
    auto until = steady::now() + limit;
    while (steady::now() < until) {
        if (ok()) return true;
        std::this_thread::sleep_for(2ms);
    }
    return ok();
}

struct StreamResult {
    unsigned status = 0;
    std::vector<std::string> events;           // each "data: ...", without the blank line
    std::vector<steady::time_point> event_at;  // when each event was complete
    int arrivals = 0;                          // reads that delivered body bytes
    bool complete = false;                     // the chunked body ended properly
};

class Client {
public:
    explicit Client(std::uint16_t port) {
        socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    }

    void send(http::verb verb, std::string target, std::string body = {}) {
        http::request<http::string_body> req{verb, target, 11};
        req.set(http::field::host, "127.0.0.1");
        if (!body.empty()) req.set(http::field::content_type, "application/json");
        req.body() = std::move(body);
        req.prepare_payload();
        http::write(socket_, req);
    }

    http::response<http::string_body> read(beast::error_code& ec) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(boost::none);
        http::read(socket_, buffer_, parser, ec);
        return parser.release();
    }

    http::response<http::string_body> request(http::verb verb, std::string target, std::string body = {}) {
        send(verb, std::move(target), std::move(body));
        beast::error_code ec;
        auto res = read(ec);
        EXPECT_FALSE(ec) << ec.message();
        return res;
    }

    // Reads a streamed answer as it comes; stops after `stop_after` data events when positive.
    StreamResult read_stream(int stop_after = 0) {
        StreamResult out;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        beast::error_code ec;
        http::read_header(socket_, buffer_, parser, ec);
        if (ec) return out;
        out.status = parser.get().result_int();
        std::string pending;
        while (!parser.is_done()) {
            char chunk[512];
            parser.get().body().data = chunk;
            parser.get().body().size = sizeof chunk;
            http::read_some(socket_, buffer_, parser, ec);
            if (ec == http::error::need_buffer) ec = {};
            std::size_t got = sizeof chunk - parser.get().body().size;
            if (got) {
                ++out.arrivals;
                pending.append(chunk, got);
                for (auto end = pending.find("\n\n"); end != std::string::npos; end = pending.find("\n\n")) {
                    out.events.push_back(pending.substr(0, end));
                    out.event_at.push_back(steady::now());
                    pending.erase(0, end + 2);
                }
                if (stop_after > 0 && static_cast<int>(out.events.size()) >= stop_after) return out;
            }
            if (ec) return out;
        }
        out.complete = true;
        return out;
    }

    void close() {
        beast::error_code ec;
        socket_.close(ec);
    }

    tcp::socket& socket() { return socket_; }

private:
    net::io_context ioc_;
    tcp::socket socket_{ioc_};
    beast::flat_buffer buffer_;
};

simdjson::dom::element parse(simdjson::dom::parser& parser, const std::string& text) {
    simdjson::dom::element doc;
    EXPECT_EQ(parser.parse(text).get(doc), simdjson::SUCCESS) << text;
    return doc;
}

// Sum of every series of `name` in a Prometheus text (one line per engine).
double metric_sum(const std::string& text, const std::string& name) {
    double sum = 0;
    std::size_t pos = 0;
    while ((pos = text.find("\n" + name + "{", pos)) != std::string::npos) {
        auto eol = text.find('\n', pos + 1);
        auto line = text.substr(pos + 1, eol - pos - 1);
        sum += std::stod(line.substr(line.rfind(' ') + 1));
        pos = eol;
    }
    return sum;
}

class SimEngineTest : public ::testing::Test {
protected:
    std::uint16_t start(SimOptions options = fast_options()) {
        engine_ = std::make_unique<SimEngine>(std::move(options));
        return port_ = engine_->start();
    }
    void TearDown() override {
        if (engine_) engine_->stop();
    }

    std::unique_ptr<SimEngine> engine_;
    std::uint16_t port_ = 0;
    simdjson::dom::parser json_;
};

TEST_F(SimEngineTest, HealthFollowsSetHealthStatus) {
    Client c(start());
    EXPECT_NE(port_, 0);
    EXPECT_EQ(engine_->port(), port_);
    auto res = c.request(http::verb::get, "/health");
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_TRUE(res.body().empty());
    engine_->set_health_status(503);
    EXPECT_EQ(c.request(http::verb::get, "/health").result_int(), 503);
    EXPECT_EQ(engine_->stats().health_checks, 2u);
}

TEST_F(SimEngineTest, ModelsListsTheServedModel) {
    Client c(start());
    auto res = c.request(http::verb::get, "/v1/models");
    ASSERT_EQ(res.result_int(), 200);
    auto doc = parse(json_, res.body());
    EXPECT_EQ(std::string_view(doc["object"]), "list");
    auto model = doc["data"].at(0);
    EXPECT_EQ(std::string_view(model["id"]), "sim-model");
    EXPECT_EQ(std::string_view(model["owned_by"]), "vllm");
    EXPECT_EQ(int64_t(model["max_model_len"]), 8192);
}

TEST_F(SimEngineTest, MetricsHaveOneSeriesPerEngine) {
    Client c(start());
    c.request(http::verb::post, "/v1/chat/completions", chat_body(3));
    auto res = c.request(http::verb::get, "/metrics");
    ASSERT_EQ(res.result_int(), 200);
    const auto& text = res.body();
    EXPECT_NE(text.find("# TYPE vllm:num_requests_running gauge"), std::string::npos);
    EXPECT_NE(text.find("# HELP vllm:kv_cache_usage_perc"), std::string::npos);
    for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                             "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                             "vllm:prompt_tokens_total", "vllm:generation_tokens_total"}) {
        for (const char* engine : {"0", "1"}) {
            auto series = std::string(name) + "{engine=\"" + engine + "\",model_name=\"sim-model\"} ";
            EXPECT_NE(text.find(series), std::string::npos) << series;
        }
    }
    EXPECT_EQ(metric_sum(text, "vllm:generation_tokens_total"), 3.0);
    EXPECT_EQ(metric_sum(text, "vllm:request_success_total"), 1.0);
    EXPECT_EQ(engine_->stats().metrics_scrapes, 1u);
}

TEST_F(SimEngineTest, NonStreamChatHasTheAskedTokens) {
    Client c(start());
    auto res = c.request(http::verb::post, "/v1/chat/completions", chat_body(4));
    ASSERT_EQ(res.result_int(), 200) << res.body();
    auto doc = parse(json_, res.body());
    EXPECT_EQ(std::string_view(doc["object"]), "chat.completion");
    auto choice = doc["choices"].at(0);
    EXPECT_EQ(std::string_view(choice["message"]["content"]), "tok0 tok1 tok2 tok3");
    EXPECT_EQ(std::string_view(choice["finish_reason"]), "length");
    EXPECT_EQ(int64_t(doc["usage"]["completion_tokens"]), 4);

    // Without a limit the answer has the engine's max_tokens and stops on its own.
    auto full = parse(json_, c.request(http::verb::post, "/v1/completions",
                                       R"({"model":"sim-model","prompt":"once upon"})").body());
    EXPECT_EQ(std::string_view(full["object"]), "text_completion");
    EXPECT_EQ(std::string_view(full["choices"].at(0)["text"]), "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7");
    EXPECT_EQ(std::string_view(full["choices"].at(0)["finish_reason"]), "stop");
    EXPECT_EQ(engine_->stats().completed, 2u);
}

TEST_F(SimEngineTest, StreamArrivesEventByEvent) {
    auto o = fast_options();
    o.token_delay = 0.02;
    Client c(start(o));
    c.send(http::verb::post, "/v1/chat/completions", chat_body(0, true));
    auto s = c.read_stream();
    ASSERT_EQ(s.status, 200u);
    ASSERT_TRUE(s.complete);
    ASSERT_EQ(s.events.size(), 11u);  // role, 8 tokens, finish, [DONE]
    EXPECT_NE(s.events[0].find(R"("role":"assistant")"), std::string::npos);
    EXPECT_NE(s.events[1].find(R"("content":"tok0")"), std::string::npos);
    EXPECT_NE(s.events[9].find(R"("finish_reason":"stop")"), std::string::npos);
    EXPECT_EQ(s.events[10], "data: [DONE]");
    // 8 tokens 20 ms apart: the first one was there well before the last was produced.
    EXPECT_GE(s.event_at[10] - s.event_at[1], 100ms);
    EXPECT_GE(s.arrivals, 8);
    EXPECT_TRUE(eventually([&] { return engine_->stats().completed == 1; }));
}

TEST_F(SimEngineTest, CompletionStreamWithUsage) {
    Client c(start());
    c.send(http::verb::post, "/v1/completions",
           R"({"prompt":"hi","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}})");
    auto s = c.read_stream();
    ASSERT_TRUE(s.complete);
    ASSERT_EQ(s.events.size(), 5u);  // 2 tokens, finish, usage, [DONE]
    EXPECT_NE(s.events[1].find(R"("text":" tok1")"), std::string::npos);
    EXPECT_NE(s.events[2].find(R"("finish_reason":"length")"), std::string::npos);
    EXPECT_NE(s.events[3].find(R"("completion_tokens":2)"), std::string::npos);
    // The connection stays usable.
    EXPECT_EQ(c.request(http::verb::get, "/health").result_int(), 200);
}

TEST_F(SimEngineTest, MaxSeqsQueuesTheRest) {
    auto o = fast_options();
    o.max_seqs = 1;
    o.ttft = 0.3;
    start(o);
    Client first(port_), second(port_), observer(port_);
    first.send(http::verb::post, "/v1/chat/completions", chat_body(1));
    ASSERT_TRUE(eventually([&] { return engine_->stats().running == 1; }));
    second.send(http::verb::post, "/v1/chat/completions", chat_body(1));
    ASSERT_TRUE(eventually([&] { return engine_->stats().waiting == 1; }));
    auto metrics = observer.request(http::verb::get, "/metrics").body();
    EXPECT_EQ(metric_sum(metrics, "vllm:num_requests_running"), 1.0);
    EXPECT_EQ(metric_sum(metrics, "vllm:num_requests_waiting"), 1.0);
    EXPECT_GT(metric_sum(metrics, "vllm:kv_cache_usage_perc"), 0.0);

    beast::error_code ec;
    EXPECT_EQ(first.read(ec).result_int(), 200);
    EXPECT_EQ(engine_->stats().running, 1u);  // the second one took the slot
    EXPECT_EQ(engine_->stats().waiting, 0u);
    EXPECT_EQ(second.read(ec).result_int(), 200);
    EXPECT_EQ(engine_->stats().completed, 2u);
}

TEST_F(SimEngineTest, ClientClosingMidStreamAborts) {
    auto o = fast_options();
    o.max_tokens = 200;
    o.token_delay = 0.02;
    Client c(start(o));
    c.send(http::verb::post, "/v1/chat/completions", chat_body(0, true));
    auto s = c.read_stream(3);
    ASSERT_EQ(s.events.size(), 3u);
    c.close();
    EXPECT_TRUE(eventually([&] { return engine_->stats().aborted == 1; }));
    EXPECT_EQ(engine_->stats().running, 0u);
    EXPECT_EQ(engine_->stats().completed, 0u);
}

TEST_F(SimEngineTest, ClientClosingDuringNonStreamOrQueueAborts) {
    auto o = fast_options();
    o.max_seqs = 1;
    o.ttft = 5;
    start(o);
    Client running(port_), queued(port_);
    running.send(http::verb::post, "/v1/chat/completions", chat_body());
    ASSERT_TRUE(eventually([&] { return engine_->stats().running == 1; }));
    queued.send(http::verb::post, "/v1/chat/completions", chat_body());
    ASSERT_TRUE(eventually([&] { return engine_->stats().waiting == 1; }));

    queued.close();
    EXPECT_TRUE(eventually([&] { return engine_->stats().aborted == 1; }));
    EXPECT_EQ(engine_->stats().waiting, 0u);
    running.close();
    EXPECT_TRUE(eventually([&] { return engine_->stats().aborted == 2; }));
    EXPECT_EQ(engine_->stats().running, 0u);
}

TEST_F(SimEngineTest, ManyStreamsOnTwoThreadsAllFinish) {
    auto o = fast_options();
    o.threads = 2;
    o.max_seqs = 4;
    start(o);
    std::vector<std::thread> clients;
    std::atomic<int> complete{0};
    for (int i = 0; i < 24; ++i) {
        clients.emplace_back([&, i] {
            Client c(port_);
            c.send(http::verb::post, "/v1/chat/completions", chat_body(0, true));
            if (i % 6 == 5) return c.close();  // some leave at once
            auto s = c.read_stream();
            if (s.complete && s.events.size() == 11u) ++complete;
        });
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(complete.load(), 20);
    EXPECT_TRUE(eventually([&] {
        auto st = engine_->stats();
        return st.completed == 20u && st.aborted == 4u && st.running == 0u && st.waiting == 0u;
    })) << engine_->stats().completed << " completed, " << engine_->stats().aborted << " aborted, "
        << engine_->stats().running << " running, " << engine_->stats().waiting << " waiting";
}

TEST_F(SimEngineTest, FailStatusAnswersOpenAiErrors) {
    auto o = fast_options();
    o.fail_status = 503;
    Client c(start(o));
    auto res = c.request(http::verb::post, "/v1/chat/completions", chat_body());
    ASSERT_EQ(res.result_int(), 503);
    auto doc = parse(json_, res.body());
    EXPECT_EQ(int64_t(doc["error"]["code"]), 503);
    EXPECT_EQ(std::string_view(doc["error"]["type"]), "ServiceUnavailableError");
    EXPECT_EQ(c.request(http::verb::get, "/health").result_int(), 200);
    engine_->set_fail_status(0);
    EXPECT_EQ(c.request(http::verb::post, "/v1/chat/completions", chat_body()).result_int(), 200);
    EXPECT_EQ(engine_->stats().requests, 2u);
}

TEST_F(SimEngineTest, DieAfterCutsTheStream) {
    auto o = fast_options();
    o.die_after = 3;
    start(o);
    Client c(port_);
    c.send(http::verb::post, "/v1/chat/completions", chat_body(0, true));
    auto s = c.read_stream();
    EXPECT_EQ(s.status, 200u);
    EXPECT_FALSE(s.complete);
    ASSERT_EQ(s.events.size(), 4u);  // role and 3 tokens, then the socket goes
    EXPECT_NE(s.events[3].find("tok2"), std::string::npos);

    Client d(port_);
    d.send(http::verb::post, "/v1/completions", R"({"prompt":"x"})");
    beast::error_code ec;
    d.read(ec);
    EXPECT_TRUE(ec);
    EXPECT_EQ(engine_->stats().completed, 0u);
    EXPECT_EQ(engine_->stats().running, 0u);
}

TEST_F(SimEngineTest, BadRequestsGetVllmErrors) {
    Client c(start());
    auto unknown = c.request(http::verb::post, "/v1/chat/completions", chat_body(0, false, "gpt-4"));
    EXPECT_EQ(unknown.result_int(), 404);
    EXPECT_EQ(std::string_view(parse(json_, unknown.body())["error"]["type"]), "NotFoundError");
    auto invalid = c.request(http::verb::post, "/v1/chat/completions", "{not json");
    EXPECT_EQ(invalid.result_int(), 400);
    EXPECT_EQ(int64_t(parse(json_, invalid.body())["error"]["code"]), 400);
    EXPECT_EQ(c.request(http::verb::post, "/v1/chat/completions", R"({"messages":[]})").result_int(), 400);
    EXPECT_EQ(c.request(http::verb::post, "/v1/completions", R"({"prompt":"x","max_tokens":0})").result_int(),
              400);
    EXPECT_EQ(c.request(http::verb::get, "/nowhere").result_int(), 404);
    EXPECT_EQ(c.request(http::verb::get, "/v1/chat/completions").result_int(), 405);
}

TEST_F(SimEngineTest, EmbeddingsAreDeterministic) {
    Client c(start());
    auto res = c.request(http::verb::post, "/v1/embeddings", R"({"input":["a","b","a"]})");
    ASSERT_EQ(res.result_int(), 200) << res.body();
    auto doc = parse(json_, res.body());
    auto data = doc["data"];
    ASSERT_EQ(simdjson::dom::array(data).size(), 3u);
    auto vec = [&](std::size_t i) {
        std::vector<double> v;
        for (auto x : data.at(i)["embedding"].get_array()) v.push_back(double(x));
        return v;
    };
    EXPECT_EQ(vec(0).size(), 8u);
    EXPECT_EQ(vec(0), vec(2));
    EXPECT_NE(vec(0), vec(1));
}

TEST_F(SimEngineTest, LargePromptAndPipelinedRequests) {
    Client c(start());
    std::string prompt(21 << 20, 'x');
    auto res = c.request(http::verb::post, "/v1/completions", R"({"max_tokens":1,"prompt":")" + prompt + "\"}");
    ASSERT_EQ(res.result_int(), 200);
    EXPECT_GT(int64_t(parse(json_, res.body())["usage"]["prompt_tokens"]), 5000000);

    // Two requests written back to back on one connection are answered in order.
    c.send(http::verb::post, "/v1/chat/completions", chat_body(1));
    c.send(http::verb::post, "/v1/chat/completions", chat_body(2));
    beast::error_code ec;
    auto one = c.read(ec);
    auto two = c.read(ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_NE(one.body().find("\"tok0\""), std::string::npos);
    EXPECT_NE(two.body().find("\"tok0 tok1\""), std::string::npos);
}

TEST_F(SimEngineTest, IdleKeepAliveIsClosedAndStopClosesEverything) {
    auto o = fast_options();
    o.keep_alive_timeout = 0.1;
    start(o);
    Client idle(port_);
    EXPECT_EQ(idle.request(http::verb::get, "/health").result_int(), 200);
    std::this_thread::sleep_for(250ms);
    beast::error_code ec;
    char byte;
    idle.socket().read_some(net::buffer(&byte, 1), ec);
    EXPECT_EQ(ec, net::error::eof);  // the server closed the idle connection

    Client open(port_);
    EXPECT_EQ(open.request(http::verb::get, "/health").result_int(), 200);
    engine_->stop();
    engine_->stop();
    open.socket().read_some(net::buffer(&byte, 1), ec);
    EXPECT_TRUE(ec);
    tcp::socket refused(open.socket().get_executor());
    refused.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_), ec);
    EXPECT_TRUE(ec);
}

}  // namespace
}  // namespace vllm_router
