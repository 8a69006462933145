#include "net/http_get.hpp"

#include <chrono>
#include <memory>
#include <optional>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/http_policy.hpp"
#include "core/text.hpp"

namespace vllm_router {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

class HttpGet : public std::enable_shared_from_this<HttpGet> {
public:
    HttpGet(asio::io_context& ioc, UrlParts server, std::string path, const std::string& api_key, double timeout,
            std::size_t max_body, std::function<void(HttpGetResult)> callback)
        : stream_(ioc), resolver_(ioc), server_(std::move(server)), timeout_(timeout), callback_(std::move(callback)) {
        req_.method(http::verb::get);
        req_.target(server_.base_path + path);
        req_.version(11);
        req_.set(http::field::host, host_field(server_));
        req_.set(http::field::user_agent, "vllm-router");
        req_.set(http::field::connection, "close");
        if (!api_key.empty()) req_.set(http::field::authorization, "Bearer " + api_key);
        parser_.body_limit(max_body);
    }

    void start() {
        started_ = std::chrono::steady_clock::now();
        stream_.expires_after(deadline());
        error_code ec;
        const auto address = asio::ip::make_address(server_.host, ec);
        if (!ec) {
            return stream_.async_connect(tcp::endpoint(address, server_.port),
                                         beast::bind_front_handler(&HttpGet::on_connect, shared_from_this()));
        }
        resolver_.async_resolve(server_.host, std::to_string(server_.port),
                                beast::bind_front_handler(&HttpGet::on_resolve, shared_from_this()));
    }

private:
    std::chrono::steady_clock::duration deadline() const { return to_duration(timeout_); }

    void on_resolve(error_code ec, tcp::resolver::results_type results) {
        if (ec) return finish(ec);
        stream_.async_connect(results, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
            self->on_connect(ec);
        });
    }

    void on_connect(error_code ec) {
        if (ec) return finish(ec);
        http::async_write(stream_, req_, beast::bind_front_handler(&HttpGet::on_write, shared_from_this()));
    }

    void on_write(error_code ec, std::size_t) {
        if (ec) return finish(ec);
        http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpGet::on_read, shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec) return finish(ec);
        HttpGetResult r;
        r.status = static_cast<int>(parser_.get().result_int());
        r.body = std::move(parser_.get().body());
        deliver(std::move(r));
    }

    void finish(error_code ec) {
        HttpGetResult r;
        r.error = ec;
        deliver(std::move(r));
    }

    void deliver(HttpGetResult r) {
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.close();
        auto cb = std::move(callback_);
        if (cb) cb(std::move(r));
    }

    beast::tcp_stream stream_;
    tcp::resolver resolver_;
    UrlParts server_;
    double timeout_;
    std::function<void(HttpGetResult)> callback_;
    http::request<http::empty_body> req_;
    http::response_parser<http::string_body> parser_;
    beast::flat_buffer buffer_;
    std::chrono::steady_clock::time_point started_;
};

}  // namespace

void http_get(asio::io_context& ioc, const UrlParts& server, std::string path, const std::string& api_key,
              double timeout_seconds, std::size_t max_body, std::function<void(HttpGetResult)> callback) {
    std::make_shared<HttpGet>(ioc, server, std::move(path), api_key, timeout_seconds, max_body, std::move(callback))
        ->start();
}

}  // namespace vllm_router
