#include "core/prometheus.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <system_error>

namespace vllm_router {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_label_start(char c) { return is_alpha(c) || c == '_'; }
bool is_label_char(char c) { return is_label_start(c) || is_digit(c); }
bool is_name_start(char c) { return is_label_start(c) || c == ':'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

std::size_t skip_blanks(std::string_view s, std::size_t i) {
    while (i < s.size() && is_blank(s[i])) ++i;
    return i;
}

std::size_t skip_token(std::string_view s, std::size_t i) {
    while (i < s.size() && !is_blank(s[i])) ++i;
    return i;
}

// Reads label pairs from s[i..] until a '}' (left unread, *closed set) or the end of `s`, calling
// on_pair(name, raw_value) for each; on_pair returns false to stop there. Returns what is wrong,
// or nullptr.
template <class OnPair>
const char* scan_labels(std::string_view s, std::size_t& i, bool& closed, OnPair&& on_pair) {
    closed = false;
    for (;;) {
        i = skip_blanks(s, i);
        if (i == s.size()) return nullptr;
        if (s[i] == '}') {
            closed = true;
            return nullptr;
        }
        if (!is_label_start(s[i])) return "expected a label name";
        const std::size_t name_start = i;
        while (i < s.size() && is_label_char(s[i])) ++i;
        const std::string_view name = s.substr(name_start, i - name_start);
        i = skip_blanks(s, i);
        if (i == s.size() || s[i] != '=') return "expected '=' after a label name";
        i = skip_blanks(s, i + 1);
        if (i == s.size() || s[i] != '"') return "expected a quoted label value";
        const std::size_t value_start = ++i;
        for (;;) {
            while (i < s.size() && s[i] != '"' && s[i] != '\\') ++i;
            if (i == s.size() || (s[i] == '\\' && i + 1 == s.size())) {
                i = s.size();
                return "unterminated label value";
            }
            if (s[i] == '"') break;
            i += 2;  // an escape pair: its second byte can be a quote
        }
        const std::string_view raw = s.substr(value_start, i - value_start);
        ++i;
        if (!on_pair(name, raw)) return nullptr;
        i = skip_blanks(s, i);
        if (i == s.size()) return nullptr;
        if (s[i] == '}') {
            closed = true;
            return nullptr;
        }
        if (s[i] != ',') return "expected ',' or '}' after a label";
        ++i;
    }
}

const char* parse_number(std::string_view token, double& out) {
    // from_chars takes no leading '+' (Go's ParseFloat does) and reads C's "nan(...)" (Go doesn't).
    if (!token.empty() && token.front() == '+') {
        token.remove_prefix(1);
        if (!token.empty() && (token.front() == '+' || token.front() == '-')) return "not a number";
    }
    if (token.find('(') != std::string_view::npos) return "not a number";
    const char* const end = token.data() + token.size();
    const auto [ptr, ec] = std::from_chars(token.data(), end, out);
    if (ec == std::errc::result_out_of_range) return "out of range";
    if (ec != std::errc{} || ptr != end) return "not a number";
    return nullptr;
}

struct LineError {
    const char* what = nullptr;
    const char* detail = nullptr;  // appended after ": " when set
};

// Parses one line without its end. Sets `is_sample` when the line is a sample.
LineError parse_line(std::string_view line, PromSample& sample, bool& is_sample) {
    is_sample = false;
    std::size_t i = skip_blanks(line, 0);
    if (i == line.size() || line[i] == '#') return {};
    if (!is_name_start(line[i])) return {"expected a metric name"};
    const std::size_t name_start = i;
    while (i < line.size() && is_name_char(line[i])) ++i;
    const std::size_t name_end = i;
    sample.name = line.substr(name_start, name_end - name_start);
    sample.labels = {};

    i = skip_blanks(line, i);
    if (i < line.size() && line[i] == '{') {
        const std::size_t open = i++;
        bool closed = false;
        if (const char* what = scan_labels(line, i, closed, [](auto, auto) { return true; })) {
            return {what};
        }
        if (!closed) return {"missing '}' after the labels"};
        sample.labels = line.substr(open + 1, i - open - 1);
        i = skip_blanks(line, i + 1);
    } else if (i == name_end && i < line.size()) {
        return {"invalid character in the metric name"};
    }
    if (i == line.size()) return {"missing value"};

    const std::size_t value_end = skip_token(line, i);
    if (const char* what = parse_number(line.substr(i, value_end - i), sample.value)) {
        return {"value", what};
    }
    i = skip_blanks(line, value_end);
    if (i < line.size()) {
        const std::size_t stamp_end = skip_token(line, i);
        double ignored = 0;
        if (const char* what = parse_number(line.substr(i, stamp_end - i), ignored)) {
            return {"timestamp", what};
        }
        if (skip_blanks(line, stamp_end) < line.size()) {
            return {"unexpected text after the timestamp"};
        }
    }
    is_sample = true;
    return {};
}

// The loop behind both public parsers; a template so that parse_engine_metrics's callback is
// inlined rather than called through std::function.
template <class OnSample>
bool parse_text(std::string_view text, OnSample&& on_sample, std::string* error) {
    std::size_t line_no = 0;
    std::size_t pos = 0;
    PromSample sample;
    while (pos < text.size()) {
        ++line_no;
        const std::size_t eol = text.find('\n', pos);
        const std::size_t end = eol == std::string_view::npos ? text.size() : eol;
        std::string_view line = text.substr(pos, end - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        pos = eol == std::string_view::npos ? text.size() : eol + 1;

        bool is_sample = false;
        const LineError e = parse_line(line, sample, is_sample);
        if (e.what != nullptr) {
            if (error != nullptr) {
                *error = "line " + std::to_string(line_no) + ": " + e.what;
                if (e.detail != nullptr) *error += std::string(" ") + e.detail;
            }
            return false;
        }
        if (is_sample) on_sample(sample);
    }
    if (error != nullptr) error->clear();
    return true;
}

std::string unescape_label(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] != '\\' || i + 1 == raw.size()) {
            out += raw[i];
            continue;
        }
        const char next = raw[++i];
        if (next == 'n') {
            out += '\n';
        } else if (next == '\\' || next == '"') {
            out += next;
        } else {
            out += '\\';
            out += next;
        }
    }
    return out;
}

enum Slot : std::size_t {
    running,
    waiting,
    kv_current,
    kv_deprecated,
    // Prefix cache pairs, queries then hits, in order of precedence.
    prefix_first,
    slot_count = prefix_first + 8,
};

struct Tracked {
    std::string_view name;  // after "vllm:"
    std::size_t slot;
};

constexpr std::string_view vllm_prefix = "vllm:";

constexpr std::array<Tracked, slot_count> tracked = {{
    {"num_requests_running", running},
    {"num_requests_waiting", waiting},
    {"kv_cache_usage_perc", kv_current},
    {"gpu_cache_usage_perc", kv_deprecated},
    {"prefix_cache_queries_total", prefix_first + 0},
    {"prefix_cache_hits_total", prefix_first + 1},
    {"prefix_cache_queries", prefix_first + 2},
    {"prefix_cache_hits", prefix_first + 3},
    {"gpu_prefix_cache_queries_total", prefix_first + 4},
    {"gpu_prefix_cache_hits_total", prefix_first + 5},
    {"gpu_prefix_cache_queries", prefix_first + 6},
    {"gpu_prefix_cache_hits", prefix_first + 7},
}};

struct Accumulator {
    double sum = 0;
    std::size_t finite = 0;  // samples summed
};

}  // namespace

bool parse_prometheus(std::string_view text,
                      const std::function<void(const PromSample&)>& on_sample,
                      std::string* error) {
    return parse_text(
        text, [&](const PromSample& s) { if (on_sample) on_sample(s); }, error);
}

std::optional<std::string> prom_label(std::string_view labels, std::string_view key) {
    std::optional<std::string> found;
    std::size_t i = 0;
    bool closed = false;
    scan_labels(labels, i, closed, [&](std::string_view name, std::string_view raw) {
        if (name != key) return true;
        found = unescape_label(raw);
        return false;
    });
    return found;
}

std::vector<std::string> engine_load_series() {
    std::vector<std::string> names;
    for (const auto& t : tracked) names.push_back(std::string(vllm_prefix) + std::string(t.name));
    return names;
}

double EngineMetrics::prefix_cache_hit_rate() const {
    if (!(prefix_cache_queries > 0) || !std::isfinite(prefix_cache_queries) ||
        !std::isfinite(prefix_cache_hits)) {
        return 0.0;
    }
    return std::clamp(prefix_cache_hits / prefix_cache_queries, 0.0, 1.0);
}

std::optional<EngineMetrics> parse_engine_metrics(std::string_view text, std::string* error) {
    std::array<Accumulator, slot_count> acc{};
    const bool ok = parse_text(
        text,
        [&](const PromSample& s) {
            // Most lines are other metrics and histogram buckets: out after a length check
            // and one short compare, or a few more compares for other vllm: names.
            if (s.name.size() <= vllm_prefix.size() || !s.name.starts_with(vllm_prefix)) return;
            const std::string_view rest = s.name.substr(vllm_prefix.size());
            for (const auto& t : tracked) {
                if (rest != t.name) continue;
                if (std::isfinite(s.value)) {
                    acc[t.slot].sum += s.value;
                    ++acc[t.slot].finite;
                }
                return;
            }
        },
        error);
    if (!ok) return std::nullopt;

    EngineMetrics m;
    m.has_running = acc[running].finite > 0;
    m.running = acc[running].sum;
    m.has_waiting = acc[waiting].finite > 0;
    m.waiting = acc[waiting].sum;
    for (const std::size_t slot : {kv_current, kv_deprecated}) {
        if (acc[slot].finite == 0) continue;
        m.has_kv = true;
        m.kv_cache_usage = acc[slot].sum / static_cast<double>(acc[slot].finite);
        break;
    }
    for (std::size_t pair = prefix_first; pair < slot_count; pair += 2) {
        if (acc[pair].finite == 0 || acc[pair + 1].finite == 0) continue;
        m.has_prefix = true;
        m.prefix_cache_queries = acc[pair].sum;
        m.prefix_cache_hits = acc[pair + 1].sum;
        break;
    }
    return m;
}

}  // namespace vllm_router
