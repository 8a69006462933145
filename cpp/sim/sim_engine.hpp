// A simulated vLLM OpenAI-compatible server: stands in for a GPU engine in tests, the demo and
// benchmarks. From the outside it looks like vLLM: /health, /v1/models, a v1-style /metrics with
// one series per engine, chat/completions/embeddings answered after a prefill delay, tokens
// streamed one SSE event at a time, at most max_seqs requests generating while the rest queue
// FIFO, and generation aborted as soon as the client disconnects. Faults can be injected: an
// HTTP error on every inference request, a sick /health, or a crash after N streamed tokens.
// Everything runs on the engine's own I/O threads; the public calls are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace vllm_router {

struct SimOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;            // 0: pick a free port
    std::string model = "sim-model";   // the one served model name
    double ttft = 0.05;                // s of prefill before the first token
    double token_delay = 0.01;         // s between tokens
    int max_tokens = 16;               // tokens per answer unless the request asks for fewer
    int max_seqs = 8;                  // requests generating at once; the rest wait FIFO
    int fail_status = 0;               // nonzero: every inference request gets this HTTP status
    int die_after = 0;                 // nonzero: a request reaching this many tokens kills its socket
    int threads = 1;
    // Like uvicorn under vLLM (5 s): an idle keep-alive connection is closed by the server, which
    // is what makes pooled upstream connections go stale. 0: never.
    double keep_alive_timeout = 5.0;
};

class SimEngine {
public:
    explicit SimEngine(SimOptions options);
    ~SimEngine();
    SimEngine(const SimEngine&) = delete;
    SimEngine& operator=(const SimEngine&) = delete;

    // Binds, starts the I/O thread(s) and returns the bound port. Throws std::system_error when
    // the address cannot be bound. A second call returns the same port.
    std::uint16_t start();
    // Closes the listener and every connection and joins the threads. Idempotent; must not be
    // called from one of the engine's own threads.
    void stop();
    std::uint16_t port() const;

    struct Stats {
        std::uint64_t requests;        // inference requests received (chat, completions, embeddings)
        std::uint64_t completed;       // answers delivered in full
        std::uint64_t aborted;         // the client left while its request waited or was answered
        std::uint64_t running;         // requests holding a generation slot now
        std::uint64_t waiting;         // requests queued for a slot now
        std::uint64_t health_checks;   // GET /health received
        std::uint64_t metrics_scrapes; // GET /metrics received
    };
    Stats stats() const;

    void set_health_status(int code);  // what GET /health answers (200 by default)
    void set_fail_status(int code);    // 0: healthy behaviour

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vllm_router
