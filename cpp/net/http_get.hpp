// A one-shot asynchronous HTTP GET for the control plane (model discovery, health checks,
// metrics scrapes): new connection, one request, whole answer (bounded), callback. Never used
// on the request path, which has its own pooled connections.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include "core/config.hpp"

namespace vllm_router {

struct TlsClient;

struct HttpGetResult {
    boost::system::error_code error;  // transport error or timeout; status is 0 then
    std::string why;                  // the error in words (a TLS failure's own reason)
    int status = 0;
    std::string body;
    double seconds = 0;  // from start to the whole answer
};

// GETs base_path + `path` from the server, over TLS with `tls` (an https server; null for http).
// `callback` runs on `ioc`'s thread, exactly once.
void http_get(boost::asio::io_context& ioc, const UrlParts& server, const std::shared_ptr<TlsClient>& tls,
              std::string path, const std::string& api_key, double timeout_seconds, std::size_t max_body,
              std::function<void(HttpGetResult)> callback);

}  // namespace vllm_router
