// What a proxy does to HTTP/1.1 header fields and targets, as pure functions on strings (no
// Beast), each checked by table-driven tests. The session applies them; nothing here does I/O.
//
//   HopByHop            fields never forwarded: RFC 9110 §7.6.1's list plus those that the
//                       message's Connection field names
//   resolve_dot_segments  RFC 3986 §5.2.4 on the path of a request target (%2e counts as '.'),
//                       so that routing and the allow-list see the path a server will
//   host_field          the Host value for a server: IPv6 literals in brackets, no default port
//   ForwardedFor        X-Forwarded-For: every earlier hop, in order, then the client
//   is_chunked_only     RFC 9112 §6.3: a request's Transfer-Encoding must be exactly chunked
//   check_reply         what a Python callback may answer with: a status, a media type and
//                       header fields that cannot break the response or inject fields
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/config.hpp"

namespace vllm_router {

bool iequals_ascii(std::string_view a, std::string_view b);

// The names in the Connection field's values, split once per message; ask per field name.
class HopByHop {
public:
    // `connection`: the Connection field's value (several fields joined by ", " as RFC 9110
    // allows), "" without one.
    explicit HopByHop(std::string_view connection);
    bool operator()(std::string_view name) const;
    // RFC 9110 §7.6.1's fixed list (and Proxy-Connection, Keep-Alive), whatever Connection says.
    static bool always(std::string_view name);

private:
    std::array<std::string_view, 8> named_{};
    std::size_t count_ = 0;
    std::string_view overflow_;  // unusually many tokens: compared against the whole value
};

enum class PathResult { unchanged, resolved, above_root };

// Removes "." and ".." segments from the path of `target` (the query is kept as is; "%2e" and
// "%2E" are dots). unchanged: `out` is untouched and `target` stands; resolved: `out` holds the
// new target; above_root: a ".." would climb above "/" (the request is refused).
PathResult resolve_dot_segments(std::string_view target, std::string& out);

std::string host_field(const UrlParts& server);

// Builds one X-Forwarded-For value from the values of every such field a request carried.
class ForwardedFor {
public:
    void add(std::string_view value);
    // The joined earlier hops, then `client` ("" to add none).
    std::string value(std::string_view client) const;

private:
    std::string joined_;
};

// Is a request's Transfer-Encoding (all its fields joined) exactly "chunked"?
bool is_chunked_only(std::string_view transfer_encoding);

// A token (RFC 9110 §5.6.2): a valid field name.
bool is_token(std::string_view s);
// A field value that cannot end the field or the header: no CR, LF or NUL, at most 64 KiB.
bool is_safe_field_value(std::string_view s);
constexpr std::size_t kMaxFieldValue = 64 * 1024;

// Why a callback's reply cannot be sent, or nullopt when it can: status 200..599; no body with
// 204 or 304; a media type and fields that are safe values; field names that are tokens and
// not ones the router sets itself (Content-Length, Transfer-Encoding, Connection).
std::optional<std::string> check_reply(int status, std::string_view content_type, std::string_view body,
                                       const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace vllm_router
