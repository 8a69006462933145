#include "net/tls_client.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>

namespace vllm_router {
namespace {

std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

int slot_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// OpenSSL's "a server gave us a session" (after the handshake in TLS 1.2, with each ticket in
// TLS 1.3). Returning 1 takes the reference.
// A copy is kept: the connection's own session object stays its alone (OpenSSL may still mark
// it), and each cached one is handed to one new connection only (TLS 1.3 tickets are single-use).
int on_new_session(SSL* ssl, SSL_SESSION* session) {
    auto* slot = static_cast<TlsSessionSlot*>(SSL_get_ex_data(ssl, slot_index()));
    if (!slot || !slot->client) return 0;
    if (SSL_SESSION* copy = SSL_SESSION_dup(session)) slot->client->store(slot->key, copy);
    return 0;
}

// SNI, and the name or address the peer's certificate must carry when verifying.
bool check_peer(SSL* ssl, const std::string& host, bool verify);

// Encrypted keys are refused rather than prompted for on a terminal (which would block).
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

TlsClient::TlsClient() : ctx(boost::asio::ssl::context::tls_client) {
    SSL_CTX_set_session_cache_mode(ctx.native_handle(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.native_handle(), on_new_session);
}

TlsClient::~TlsClient() {
    for (auto& [key, session] : sessions_) SSL_SESSION_free(session);
}

void TlsClient::attach(SSL* ssl, TlsSessionSlot& slot) {
    slot.client = this;
    SSL_set_ex_data(ssl, slot_index(), &slot);
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(slot.key);
    if (it == sessions_.end()) return;
    SSL_set_session(ssl, it->second);  // takes its own reference
    SSL_SESSION_free(it->second);
    sessions_.erase(it);
}

void mark_tls_closed(SSL* ssl) {
    // The router closes TCP without a close_notify; told this, OpenSSL keeps the session
    // resumable instead of treating the end as an error.
    if (ssl) SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

void TlsClient::store(const std::string& key, SSL_SESSION* session) {
    std::lock_guard lock(mutex_);
    if (sessions_.size() >= 4096 && !sessions_.count(key)) {  // pods come and go: bounded
        for (auto& [k, s] : sessions_) SSL_SESSION_free(s);
        sessions_.clear();
    }
    auto [it, added] = sessions_.try_emplace(key, session);
    if (!added) {
        SSL_SESSION_free(it->second);
        it->second = session;
    }
}

std::shared_ptr<TlsClient> make_tls_client(const TlsClientSettings& settings, std::string* error) {
    auto fail = [&](std::string why) -> std::shared_ptr<TlsClient> {
        if (error) *error = std::move(why);
        return nullptr;
    };
    auto client = std::make_shared<TlsClient>();
    client->settings = settings;
    SSL_CTX* ctx = client->ctx.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    ERR_clear_error();
    if (settings.verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
        const int ok = settings.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                                                : SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr);
        if (ok != 1) {
            return fail(settings.ca_file.empty() ? "cannot load the system's CA store: " + openssl_errors()
                                                 : "tls_ca_file '" + settings.ca_file + "' holds no usable PEM certificate: " +
                                                       openssl_errors());
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    }
    if (!settings.cert_file.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx, settings.cert_file.c_str()) != 1)
            return fail("tls_cert_file '" + settings.cert_file + "' is not a PEM certificate: " + openssl_errors());
        if (SSL_CTX_use_PrivateKey_file(ctx, settings.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
            const unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
                ERR_clear_error();
                return fail("tls_key_file '" + settings.key_file + "' is not the key of tls_cert_file '" +
                            settings.cert_file + "'");
            }
            return fail("tls_key_file '" + settings.key_file + "' is not an unencrypted PEM private key: " +
                        openssl_errors());
        }
        if (SSL_CTX_check_private_key(ctx) != 1)
            return fail("tls_key_file '" + settings.key_file + "' is not the key of tls_cert_file '" +
                        settings.cert_file + "'");
    }
    return client;
}

bool TlsClient::prepare(SSL* ssl, const UrlParts& server, TlsSessionSlot& slot) {
    if (!check_peer(ssl, server.host, settings.verify)) return false;
    slot.key = server.host + ":" + std::to_string(server.port);
    attach(ssl, slot);
    return true;
}

namespace {

bool check_peer(SSL* ssl, const std::string& host, bool verify) {
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(host, ec);
    const bool is_ip = !ec;
    // SNI carries names only (RFC 6066 §3).
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1) return false;
    if (!verify) return true;
    if (is_ip) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, host.c_str()) == 1;
}

}  // namespace

std::string tls_failure_reason(const boost::system::error_code& ec, SSL* ssl) {
    if (!ec) return openssl_errors();  // a setup step OpenSSL refused
    // The chain's result is recorded even with verification off: it is the cause only when on.
    if (ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)) {
        const long result = SSL_get_verify_result(ssl);
        if (result != X509_V_OK) {
            std::string why = X509_verify_cert_error_string(result);
            if (result == X509_V_ERR_IP_ADDRESS_MISMATCH) why = "hostname mismatch (" + why + ")";
            return "certificate verify failed: " + why;
        }
    }
    if (ec == boost::asio::ssl::error::stream_truncated) return "the server closed the TLS connection";
    return ec.message();
}

}  // namespace vllm_router
