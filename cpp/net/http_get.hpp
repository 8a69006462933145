// A one-shot asynchronous HTTP GET for the control plane (model discovery, health checks,
// metrics scrapes): new connection, one request, whole answer (bounded), callback. Never used
// on the request path, which has its own pooled connections.
#pragma once

#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include "core/config.hpp"

namespace vllm_router {

struct HttpGetResult {
    boost::system::error_code error;  // transport error or timeout; status is 0 then
    int status = 0;
    std::string body;
    double seconds = 0;  // from start to the whole answer
};

// GETs base_path + `path` from the server. `callback` runs on `ioc`'s thread, exactly once.
void http_get(boost::asio::io_context& ioc, const UrlParts& server, std::string path, const std::string& api_key,
              double timeout_seconds, std::size_t max_body, std::function<void(HttpGetResult)> callback);

}  // namespace vllm_router
