#include "core/inspect.hpp"

#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include <simdjson.h>

namespace vllm_router {
namespace {

namespace od = simdjson::ondemand;

// simdjson sizes its index at about five bytes per body byte and keeps it between documents.
constexpr std::size_t kept_parser_capacity = std::size_t{4} << 20;

RequestInfo invalid(std::string message) {
    RequestInfo info;
    info.error = std::move(message);
    return info;
}

std::string json_error(simdjson::error_code code, const char* at, const char* base,
                       std::size_t size) {
    std::string reason = simdjson::error_message(code);
    while (!reason.empty() && (reason.back() == '.' || reason.back() == ' ')) reason.pop_back();
    std::string message = "request body is not valid JSON: " + reason;
    if (at != nullptr && at >= base && at <= base + size) {
        message += " at byte " + std::to_string(at - base);
    }
    return message;
}

std::string document_error(simdjson::error_code code, od::document& doc, const char* base,
                           std::size_t size) {
    // simdjson reports this before reading anything, pointing at the first byte: either the
    // body was cut short or something other than whitespace follows the object.
    if (code == simdjson::INCOMPLETE_ARRAY_OR_OBJECT) {
        return "request body is not valid JSON: it does not end with the closing brace of its "
               "object";
    }
    const char* at = nullptr;
    if (doc.current_location().get(at) != simdjson::SUCCESS) at = nullptr;
    return json_error(code, at, base, size);
}

bool is_null_literal(od::value& value, od::json_type type) {
    bool null = false;
    return type == od::json_type::null && value.is_null().get(null) == simdjson::SUCCESS && null;
}

RequestInfo inspect_document(od::parser& parser, const char* data, std::size_t size,
                             std::size_t capacity) {
    od::document doc;
    if (auto code = parser.iterate(data, size, capacity).get(doc)) {
        if (code == simdjson::EMPTY) return invalid("request body is empty");
        return invalid(json_error(code, nullptr, data, size));
    }
    od::json_type type{};
    if (auto code = doc.type().get(type)) return invalid(document_error(code, doc, data, size));
    if (type != od::json_type::object) return invalid("request body must be a JSON object");
    od::object object;
    if (auto code = doc.get_object().get(object)) {
        return invalid(document_error(code, doc, data, size));
    }

    RequestInfo info;
    for (auto field_result : object) {
        od::field field;
        if (auto code = std::move(field_result).get(field)) {
            return invalid(document_error(code, doc, data, size));
        }
        std::string_view key;
        if (auto code = field.unescaped_key().get(key)) {
            return invalid(document_error(code, doc, data, size));
        }
        const bool is_model = key == "model";
        const bool is_stream = key == "stream";
        const bool is_user = key == "user";
        if (!is_model && !is_stream && !is_user) continue;

        od::value& value = field.value();
        od::json_type value_type{};
        if (auto code = value.type().get(value_type)) {
            return invalid(document_error(code, doc, data, size));
        }
        if (is_model) {
            if (is_null_literal(value, value_type)) {
                info.has_model = false;
                info.model.clear();
                continue;
            }
            if (value_type != od::json_type::string) {
                return invalid("'model' must be a string");
            }
            std::string_view model;
            if (auto code = value.get_string().get(model)) {
                return invalid(document_error(code, doc, data, size));
            }
            info.model.assign(model);
            info.has_model = true;
        } else if (is_stream) {
            if (is_null_literal(value, value_type)) {
                info.stream = false;
                continue;
            }
            bool stream = false;
            if (value_type != od::json_type::boolean ||
                value.get_bool().get(stream) != simdjson::SUCCESS) {
                return invalid("'stream' must be a boolean");
            }
            info.stream = stream;
        } else {
            info.user.clear();
            if (value_type != od::json_type::string) continue;
            std::string_view user;
            if (auto code = value.get_string().get(user)) {
                return invalid(document_error(code, doc, data, size));
            }
            info.user.assign(user);
        }
    }

    // The object iteration stops at its closing brace; any token left after it is trailing data.
    const char* rest = nullptr;
    if (doc.current_location().get(rest) == simdjson::SUCCESS) {
        std::string message = "request body is not valid JSON: unexpected content after the object";
        if (rest >= data && rest <= data + size) {
            message += " at byte " + std::to_string(rest - data);
        }
        return invalid(std::move(message));
    }
    info.valid = true;
    return info;
}

RequestInfo inspect_padded(const char* data, std::size_t size, std::size_t capacity) {
    thread_local od::parser parser;
    RequestInfo info = inspect_document(parser, data, size, capacity);
    if (parser.capacity() > kept_parser_capacity) parser = od::parser{};
    return info;
}

RequestInfo inspect_copy(const char* data, std::size_t size) {
    const std::size_t padded = size + simdjson::SIMDJSON_PADDING;
    std::unique_ptr<char[]> copy(new (std::nothrow) char[padded]);
    if (!copy) return invalid("request body is too large to inspect");
    std::memcpy(copy.get(), data, size);
    std::memset(copy.get() + size, 0, simdjson::SIMDJSON_PADDING);
    return inspect_padded(copy.get(), size, padded);
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        char y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

// Reads the next `; name=value` parameter of a header value (value quoted or a token) and
// advances `rest` past it. Returns false when none is left or a quoted value is not closed.
bool next_param(std::string_view& rest, std::string_view& name, std::string& value) {
    std::size_t i = 0;
    while (i < rest.size() && (is_ows(rest[i]) || rest[i] == ';')) ++i;
    if (i == rest.size()) return false;
    const std::size_t name_start = i;
    while (i < rest.size() && rest[i] != '=' && rest[i] != ';') ++i;
    name = trim(rest.substr(name_start, i - name_start));
    value.clear();
    if (i < rest.size() && rest[i] == '=') {
        ++i;
        while (i < rest.size() && is_ows(rest[i])) ++i;
        if (i < rest.size() && rest[i] == '"') {
            ++i;
            bool closed = false;
            while (i < rest.size()) {
                const char c = rest[i++];
                if (c == '"') {
                    closed = true;
                    break;
                }
                if (c == '\\' && i < rest.size()) {
                    value += rest[i++];
                    continue;
                }
                value += c;
            }
            if (!closed) return false;
            while (i < rest.size() && rest[i] != ';') ++i;
        } else {
            const std::size_t value_start = i;
            while (i < rest.size() && rest[i] != ';') ++i;
            value.assign(trim(rest.substr(value_start, i - value_start)));
        }
    }
    rest.remove_prefix(i);
    return true;
}

// True when a Content-Disposition value names the form field `name` and is not a file.
bool disposition_is_field(std::string_view disposition, std::string_view name) {
    const std::size_t semi = disposition.find(';');
    if (!iequals(trim(disposition.substr(0, semi)), "form-data")) return false;
    if (semi == std::string_view::npos) return false;
    std::string_view rest = disposition.substr(semi);
    std::string_view param;
    std::string value;
    bool name_matches = false;
    while (next_param(rest, param, value)) {
        if (iequals(param, "name")) name_matches = value == name;
        if (iequals(param, "filename") || iequals(param, "filename*")) return false;
    }
    return name_matches;
}

// A delimiter "--boundary" counts only where it starts a line and is followed by "--" (the
// close delimiter) or by optional blanks and a line break; elsewhere it is content.
bool ends_delimiter(std::string_view body, std::size_t at) {
    if (body.substr(at, 2) == "--") return true;
    while (at < body.size() && is_ows(body[at])) ++at;
    return body.substr(at, 2) == "\r\n" || body.substr(at, 1) == "\n";
}

std::size_t find_delimiter(std::string_view body, std::string_view delimiter, std::size_t from) {
    while (true) {
        const std::size_t at = body.find(delimiter, from);
        if (at == std::string_view::npos) return at;
        const bool line_start = at == 0 || body[at - 1] == '\n';
        if (line_start && ends_delimiter(body, at + delimiter.size())) return at;
        from = at + 1;
    }
}

}  // namespace

RequestInfo inspect_json(const char* data, std::size_t size, std::size_t capacity) {
    if (size == 0) return invalid("request body is empty");
    if (capacity >= size && capacity - size >= simdjson::SIMDJSON_PADDING) {
        return inspect_padded(data, size, capacity);
    }
    return inspect_copy(data, size);
}

RequestInfo inspect_json(std::string_view body) {
    if (body.empty()) return invalid("request body is empty");
    return inspect_copy(body.data(), body.size());
}

std::optional<std::string> multipart_boundary(std::string_view content_type) {
    const std::size_t semi = content_type.find(';');
    if (!iequals(trim(content_type.substr(0, semi)), "multipart/form-data")) return std::nullopt;
    if (semi == std::string_view::npos) return std::nullopt;
    std::string_view rest = content_type.substr(semi);
    std::string_view name;
    std::string value;
    while (next_param(rest, name, value)) {
        if (!iequals(name, "boundary")) continue;
        if (value.empty()) return std::nullopt;
        return value;
    }
    return std::nullopt;
}

std::optional<std::string> multipart_field(std::string_view body, std::string_view boundary,
                                           std::string_view name) {
    if (boundary.empty()) return std::nullopt;
    std::string delimiter = "--";
    delimiter += boundary;

    std::optional<std::string> found;
    std::size_t at = find_delimiter(body, delimiter, 0);
    while (at != std::string_view::npos) {
        std::size_t pos = at + delimiter.size();
        if (body.substr(pos, 2) == "--") break;
        while (pos < body.size() && body[pos] != '\n') ++pos;
        ++pos;

        bool wanted = false;
        while (true) {
            const std::size_t eol = body.find('\n', pos);
            if (eol == std::string_view::npos) return found;
            std::string_view line = body.substr(pos, eol - pos);
            pos = eol + 1;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty()) break;
            const std::size_t colon = line.find(':');
            if (colon == std::string_view::npos) continue;
            if (iequals(trim(line.substr(0, colon)), "content-disposition")) {
                wanted = disposition_is_field(line.substr(colon + 1), name);
            }
        }

        const std::size_t next = find_delimiter(body, delimiter, pos);
        if (next == std::string_view::npos) return found;
        if (wanted) {
            // The line break before a delimiter belongs to the delimiter, not to the value.
            std::size_t end = next;
            if (end > pos && body[end - 1] == '\n') {
                --end;
                if (end > pos && body[end - 1] == '\r') --end;
            }
            found.emplace(body.substr(pos, end - pos));
        }
        at = next;
    }
    return found;
}

}  // namespace vllm_router
