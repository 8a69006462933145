#include "core/http_policy.hpp"

#include <algorithm>

namespace vllm_router {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Calls f(token) for each comma-separated, trimmed, non-empty token.
template <class F>
void for_each_token(std::string_view list, F&& f) {
    while (!list.empty()) {
        const auto comma = list.find(',');
        const std::string_view token = trim(list.substr(0, comma));
        if (!token.empty() && !f(token)) return;
        if (comma == std::string_view::npos) return;
        list.remove_prefix(comma + 1);
    }
}

bool is_dot(std::string_view seg) { return seg == "." || iequals_ascii(seg, "%2e"); }

bool is_dot_dot(std::string_view seg) {
    if (seg == "..") return true;
    // ".", "%2e" in any combination: ".%2e", "%2e.", "%2e%2e".
    std::size_t dots = 0;
    while (!seg.empty()) {
        if (seg.front() == '.') {
            seg.remove_prefix(1);
        } else if (seg.size() >= 3 && iequals_ascii(seg.substr(0, 3), "%2e")) {
            seg.remove_prefix(3);
        } else {
            return false;
        }
        ++dots;
    }
    return dots == 2;
}

}  // namespace

bool iequals_ascii(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

// ---------------------------------------------------------------- hop-by-hop

HopByHop::HopByHop(std::string_view connection) {
    for_each_token(connection, [&](std::string_view token) {
        // "close" names no field; "keep-alive" is in the fixed list anyway.
        if (iequals_ascii(token, "close") || iequals_ascii(token, "keep-alive")) return true;
        if (count_ == named_.size()) {
            overflow_ = connection;
            return false;
        }
        named_[count_++] = token;
        return true;
    });
}

bool HopByHop::always(std::string_view name) {
    // Dispatch on length first: most fields of a request are none of these.
    switch (name.size()) {
        case 2: return iequals_ascii(name, "te");
        case 7: return iequals_ascii(name, "trailer") || iequals_ascii(name, "upgrade");
        case 10: return iequals_ascii(name, "connection") || iequals_ascii(name, "keep-alive");
        case 16: return iequals_ascii(name, "proxy-connection");
        case 17: return iequals_ascii(name, "transfer-encoding");
        case 18: return iequals_ascii(name, "proxy-authenticate");
        case 19: return iequals_ascii(name, "proxy-authorization");
        default: return false;
    }
}

bool HopByHop::operator()(std::string_view name) const {
    if (always(name)) return true;
    for (std::size_t i = 0; i < count_; ++i)
        if (iequals_ascii(name, named_[i])) return true;
    if (!overflow_.empty()) {
        bool found = false;
        for_each_token(overflow_, [&](std::string_view token) {
            found = iequals_ascii(name, token);
            return !found;
        });
        return found;
    }
    return false;
}

// ---------------------------------------------------------------- targets

PathResult resolve_dot_segments(std::string_view target, std::string& out) {
    const auto q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q);
    // Fast path: no segment can be a dot segment without a '.' or a "%2e".
    bool suspect = false;
    for (std::size_t i = 0; i < path.size(); ++i) {
        if (path[i] == '.' || (path[i] == '%' && i + 2 < path.size() && path[i + 1] == '2' &&
                               lower(path[i + 2]) == 'e')) {
            suspect = true;
            break;
        }
    }
    if (!suspect || path.empty() || path.front() != '/') return PathResult::unchanged;

    std::vector<std::string_view> kept;
    bool changed = false;
    std::string_view rest = path.substr(1);
    bool trailing_slash = false;
    for (;;) {
        const auto slash = rest.find('/');
        const std::string_view seg = rest.substr(0, slash);
        const bool last = slash == std::string_view::npos;
        if (is_dot(seg)) {
            changed = true;
            trailing_slash = last;  // "/a/." is "/a/"
        } else if (is_dot_dot(seg)) {
            changed = true;
            if (kept.empty()) return PathResult::above_root;
            kept.pop_back();
            trailing_slash = last;
        } else {
            kept.push_back(seg);
            trailing_slash = false;
        }
        if (last) break;
        rest.remove_prefix(slash + 1);
    }
    if (!changed) return PathResult::unchanged;
    out.clear();
    for (auto seg : kept) {
        out += '/';
        out += seg;
    }
    if (trailing_slash || out.empty()) out += '/';
    out += query;
    return PathResult::resolved;
}

std::string host_field(const UrlParts& server) {
    std::string out;
    const bool v6 = server.host.find(':') != std::string::npos;
    if (v6) out += '[';
    out += server.host;
    if (v6) out += ']';
    if (server.port != (server.scheme == "https" ? 443 : 80)) {
        out += ':';
        out += std::to_string(server.port);
    }
    return out;
}

// ---------------------------------------------------------------- forwarded-for

void ForwardedFor::add(std::string_view value) {
    value = trim(value);
    if (value.empty()) return;
    if (!joined_.empty()) joined_ += ", ";
    joined_ += value;
}

std::string ForwardedFor::value(std::string_view client) const {
    std::string out = joined_;
    if (!client.empty()) {
        if (!out.empty()) out += ", ";
        out += client;
    }
    return out;
}

// ---------------------------------------------------------------- framing

bool is_chunked_only(std::string_view transfer_encoding) {
    int codings = 0;
    bool chunked = false;
    for_each_token(transfer_encoding, [&](std::string_view token) {
        ++codings;
        chunked = iequals_ascii(token, "chunked");
        return true;
    });
    return codings == 1 && chunked;
}

// ---------------------------------------------------------------- replies

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

bool is_safe_field_value(std::string_view s) {
    if (s.size() > kMaxFieldValue) return false;
    return std::none_of(s.begin(), s.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::optional<std::string> check_reply(int status, std::string_view content_type, std::string_view body,
                                       const std::vector<std::pair<std::string, std::string>>& fields) {
    if (status < 200 || status > 599) return "status " + std::to_string(status) + " is not in 200..599";
    if ((status == 204 || status == 304) && !body.empty())
        return "status " + std::to_string(status) + " cannot have a body";
    if (!is_safe_field_value(content_type)) return "the media type holds CR, LF or NUL, or is over 64 KiB";
    for (const auto& [name, value] : fields) {
        if (!is_token(name)) return "header name '" + name.substr(0, 64) + "' is not a token";
        if (iequals_ascii(name, "content-length") || iequals_ascii(name, "transfer-encoding") ||
            iequals_ascii(name, "connection"))
            return "header " + name + " is the router's to set";
        if (!is_safe_field_value(value)) return "the value of header " + name + " holds CR, LF or NUL, or is over 64 KiB";
    }
    return std::nullopt;
}

}  // namespace vllm_router
