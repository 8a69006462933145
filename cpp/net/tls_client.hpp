// TLS towards https:// servers: one OpenSSL client context per distinct TlsClientSettings (CA
// file or the system's store, verification on or off, an optional client certificate), the
// per-connection setup (SNI and the host name or IP the certificate must name), and the reason
// of a failed handshake in words an operator acts on ("certificate verify failed: self-signed
// certificate"). The data plane, the health checks, the scrapes and model discovery all use it,
// so they never disagree about a server.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <boost/asio/ssl.hpp>

#include "core/config.hpp"

namespace vllm_router {

struct TlsClient;

// Where a connection's new TLS session goes: its context's cache, under the server's address.
// Lives as long as the connection's SSL object (declared before it in its owner).
struct TlsSessionSlot {
    TlsClient* client = nullptr;
    std::string key;  // "host:port"
};

// One OpenSSL client context, and the last session each server gave it (resumption: a new
// connection to a server skips the full handshake). Shared by threads: the cache has a lock,
// taken once per new connection.
struct TlsClient {
    TlsClient();
    ~TlsClient();
    TlsClient(const TlsClient&) = delete;
    TlsClient& operator=(const TlsClient&) = delete;

    boost::asio::ssl::context ctx;
    TlsClientSettings settings;

    // Before a handshake on `ssl` to `server`: SNI (names only, never for an IP), the name or
    // address the certificate must carry when verifying, and the session `server` last gave
    // (filing the next one in `slot`). False when OpenSSL refuses them (its queue says why).
    bool prepare(SSL* ssl, const UrlParts& server, TlsSessionSlot& slot);
    void store(const std::string& key, SSL_SESSION* session);  // takes ownership

private:
    void attach(SSL* ssl, TlsSessionSlot& slot);

    std::mutex mutex_;
    std::unordered_map<std::string, SSL_SESSION*> sessions_;
};

// A context for `settings`; nullptr with `error` set when a file cannot be used (not PEM, a key
// that does not match its certificate).
std::shared_ptr<TlsClient> make_tls_client(const TlsClientSettings& settings, std::string* error);

// Before an established TLS connection is freed without a close_notify (the router closes TCP):
// keeps its session resumable.
void mark_tls_closed(SSL* ssl);

// Why a handshake (or a read or write on TLS) failed: the certificate check's own words when
// that was the cause, else OpenSSL's or the system's error; with no error code, OpenSSL's queue
// (a setup step it refused).
std::string tls_failure_reason(const boost::system::error_code& ec, SSL* ssl);

}  // namespace vllm_router
