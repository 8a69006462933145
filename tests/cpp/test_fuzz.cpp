// Bounded, deterministic fuzzing of the parsers that read bytes from the network: the Prometheus
// parser (scraped /metrics) and the request inspector (client bodies). A fixed-seed mt19937
// mutates a small seed corpus (byte flips, insertions of bytes that matter to the grammar,
// deletions, duplications, truncation, splicing of lines from other seeds), so every run feeds
// the same inputs and a failure reproduces. The checks assert no crash (run under ASan/UBSan
// to catch out-of-bounds reads) and self-consistency of each answer, never exact results.
// Each test stays well under a second in a Release build.
#include "core/inspect.hpp"
#include "core/prometheus.hpp"

#include "vllm_metrics_text.hpp"

#include <gtest/gtest.h>

#include "exact_copy.hpp"
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace vllm_router {
namespace {

constexpr std::uint32_t fuzz_seed = 20240611;

using testing_util::ExactCopy;

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t eol = text.find('\n', pos);
        eol = eol == std::string::npos ? text.size() : eol + 1;
        lines.push_back(text.substr(pos, eol - pos));
        pos = eol;
    }
    return lines;
}

class Mutator {
public:
    Mutator(std::vector<std::string> seeds, std::string_view alphabet)
        : seeds_(std::move(seeds)), alphabet_(alphabet) {
        for (const auto& seed : seeds_) {
            for (auto& line : lines_of(seed)) lines_.push_back(std::move(line));
        }
    }

    std::size_t below(std::size_t n) { return n == 0 ? 0 : rng_() % n; }

    // A window of whole lines of a seed, or the whole seed, so that inputs stay short enough
    // for many of them to run in little time while long seeds are still covered.
    std::string pick() {
        const std::string& seed = seeds_[below(seeds_.size())];
        if (seed.size() < 512 || below(8) == 0) return seed;
        const auto lines = lines_of(seed);
        const std::size_t first = below(lines.size());
        const std::size_t count = 1 + below(12);
        std::string out;
        for (std::size_t i = first; i < lines.size() && i < first + count; ++i) out += lines[i];
        return out;
    }

    char some_byte() {
        if (below(3) == 0) return static_cast<char>(rng_() & 0xFF);
        return alphabet_[below(alphabet_.size())];
    }

    std::string next() {
        std::string s = pick();
        const std::size_t steps = 1 + below(4);
        for (std::size_t step = 0; step < steps; ++step) mutate(s);
        return s;
    }

private:
    void mutate(std::string& s) {
        const std::size_t at = below(s.size() + 1);
        switch (below(7)) {
        case 0:  // flip one bit
            if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1u << below(8));
            break;
        case 1:  // overwrite a byte
            if (!s.empty()) s[below(s.size())] = some_byte();
            break;
        case 2:  // insert a few bytes
            s.insert(at, 1 + below(3), some_byte());
            break;
        case 3:  // delete a range
            s.erase(at, 1 + below(16));
            break;
        case 4:  // truncate
            s.resize(at);
            break;
        case 5: {  // duplicate a range
            const std::string piece = s.substr(at, 1 + below(32));
            s.insert(below(s.size() + 1), piece);
            break;
        }
        default: {  // splice in a line of any seed, at a line start when there is one
            const std::size_t line_start = s.rfind('\n', at);
            const std::size_t where = line_start == std::string::npos ? 0 : line_start + 1;
            s.insert(where, lines_[below(lines_.size())]);
            break;
        }
        }
    }

    std::mt19937 rng_{fuzz_seed};
    std::vector<std::string> seeds_;
    std::string alphabet_;
    std::vector<std::string> lines_;
};

std::string printable(std::string_view s) {
    std::string out;
    for (const unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '\\') {
            out += static_cast<char>(c);
        } else {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

bool within(std::string_view part, std::string_view whole) {
    return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool is_metric_name(std::string_view s) {
    if (s.empty()) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                        c == ':' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

std::size_t line_count(std::string_view s) {
    std::size_t n = 1;
    for (const char c : s) n += c == '\n';
    return n;
}

// ---- Prometheus ----

const std::vector<std::string> prometheus_seeds = {
    test::vllm_v1_metrics,
    "# HELP vllm:num_requests_running Number of requests.\r\n"
    "# TYPE vllm:num_requests_running gauge\r\n"
    "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\r\n"
    "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} NaN\r\n",
    "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.25 1718039123000\n"
    "vllm:gpu_prefix_cache_queries_total{engine=\"0\"} 100\n"
    "vllm:gpu_prefix_cache_hits_total{engine=\"0\"} 40\n"
    "vllm:gpu_prefix_cache_queries 1e3\nvllm:gpu_prefix_cache_hits +Inf\n",
    "x{a=\"q\\\"} 1,\\\\\",b=\"l\\nm\", c = \"}\" ,} -Inf -5\n  y {} .5e-3\t\n\n# EOF",
    "vllm:kv_cache_usage_perc 1e308\nvllm:kv_cache_usage_perc 1e308\n"
    "vllm:prefix_cache_queries_total -0\nvllm:prefix_cache_hits_total 7",
};

constexpr std::string_view prometheus_alphabet = "\"\\{}=, \t\r\n#:_.eE+-0123456789NaInfvllm";

void check_prometheus(const std::string& text) {
    const ExactCopy exact(text);
    const std::string_view input = exact.view();
    struct Seen {
        std::string name;
        double value;
    };
    std::vector<Seen> seen;
    std::string error = "untouched";
    const bool ok = parse_prometheus(
        input,
        [&](const PromSample& s) {
            EXPECT_TRUE(within(s.name, input));
            EXPECT_TRUE(s.labels.empty() || within(s.labels, input));
            EXPECT_TRUE(is_metric_name(s.name)) << printable(s.name);
            // Label text the parser accepted must be readable by prom_label: its first label
            // is always found.
            std::size_t i = 0;
            while (i < s.labels.size() && (s.labels[i] == ' ' || s.labels[i] == '\t')) ++i;
            std::size_t j = i;
            while (j < s.labels.size() &&
                   (std::isalnum(static_cast<unsigned char>(s.labels[j])) || s.labels[j] == '_')) {
                ++j;
            }
            if (j > i) {
                EXPECT_TRUE(prom_label(s.labels, s.labels.substr(i, j - i)).has_value());
            }
            (void)prom_label(s.labels, "engine");
            seen.push_back({std::string(s.name), s.value});
        },
        &error);
    EXPECT_EQ(ok, error.empty()) << error;
    if (!ok) {
        ASSERT_EQ(error.rfind("line ", 0), 0u) << error;
        const std::size_t n = std::stoul(error.substr(5));
        EXPECT_GE(n, 1u);
        EXPECT_LE(n, line_count(input));
        EXPECT_NE(error.find(": ", 5), std::string::npos);
    }

    std::string engine_error = "untouched";
    const auto m = parse_engine_metrics(input, &engine_error);
    EXPECT_EQ(m.has_value(), ok);
    EXPECT_EQ(engine_error, error);
    if (!m) return;
    // An oracle for the simplest figures: the same samples, summed in the same order.
    double running = 0;
    bool has_running = false;
    for (const auto& s : seen) {
        if (s.name == "vllm:num_requests_running" && std::isfinite(s.value)) {
            running += s.value;
            has_running = true;
        }
    }
    EXPECT_EQ(m->has_running, has_running);
    EXPECT_EQ(m->running, running);
    for (const double v : {m->running, m->waiting, m->kv_cache_usage, m->prefix_cache_queries,
                           m->prefix_cache_hits}) {
        EXPECT_FALSE(std::isnan(v));
    }
    if (!m->has_running) { EXPECT_EQ(m->running, 0); }
    if (!m->has_waiting) { EXPECT_EQ(m->waiting, 0); }
    if (!m->has_kv) { EXPECT_EQ(m->kv_cache_usage, 0); }
    if (!m->has_prefix) { EXPECT_EQ(m->prefix_cache_queries + m->prefix_cache_hits, 0); }
    const double rate = m->prefix_cache_hit_rate();
    EXPECT_TRUE(rate >= 0 && rate <= 1) << rate;
}

TEST(Fuzz, Prometheus) {
    Mutator mutator(prometheus_seeds, prometheus_alphabet);
    for (const auto& seed : prometheus_seeds) check_prometheus(seed);
    for (int n = 0; n < 20000; ++n) {
        const std::string input = mutator.next();
        check_prometheus(input);
        if (HasFailure()) {
            ADD_FAILURE() << "input " << n << ": \"" << printable(input) << "\"";
            return;
        }
    }
}

// ---- request inspection ----

const std::vector<std::string> json_seeds = {
    R"({"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system",)"
    R"("content":"You are helpful."},{"role":"user","content":"Hi \"there\" \u00e9\n"}],)"
    R"("stream":true,"max_tokens":128,"temperature":0.7,"stream_options":{"include_usage":true},)"
    R"("user":"alice"})",
    R"({"model":"m","prompt":["a","b"],"stream":false,"logprobs":null,"n":2,"stop":["\n"]})",
    " {\r\n \"mod\\u0065l\" : null , \"stream\" : null, \"user\": 7, \"extra\": {\"model\": "
    "\"deep\", \"a\": [1, -2.5e3, true, false, null, {}]}}\n",
    R"({"model":"a\\b\"c","model":"second","tools":[{"type":"function","function":{"name":"f",)"
    R"("parameters":{"type":"object","properties":{}}}}]})",
    "{}",
};

constexpr std::string_view json_alphabet = "{}[]:,\"\\ \t\r\n0123456789.eE+-truefalsnu";

void check_request_info(const RequestInfo& info) {
    EXPECT_EQ(info.valid, info.error.empty()) << info.error;
    if (!info.valid) {
        EXPECT_FALSE(info.has_model);
        EXPECT_TRUE(info.model.empty());
        EXPECT_FALSE(info.stream);
        EXPECT_TRUE(info.user.empty());
    }
    if (!info.has_model) { EXPECT_TRUE(info.model.empty()); }
}

// The error text is left out: simdjson may look at the padding after a broken document, so
// the message (not the verdict) can depend on what the padding bytes happen to be.
bool same_info(const RequestInfo& a, const RequestInfo& b) {
    return a.valid == b.valid && a.model == b.model && a.has_model == b.has_model &&
           a.stream == b.stream && a.user == b.user;
}

void check_json(const std::string& input, char filler) {
    const RequestInfo copied = inspect_json(input);
    check_request_info(copied);
    // The in-place path (padding available, whatever its bytes) must agree with the copying one.
    std::string padded = input;
    padded.append(simdjson::SIMDJSON_PADDING, filler);
    const RequestInfo in_place = inspect_json(padded.data(), input.size(), padded.size());
    check_request_info(in_place);
    EXPECT_TRUE(same_info(copied, in_place)) << copied.error << " / " << in_place.error;
    // Bodies are also what a misconfigured server might answer on /metrics.
    std::string error;
    const bool ok = parse_prometheus(input, nullptr, &error);
    EXPECT_EQ(ok, error.empty()) << error;
}

std::string multipart_part(std::string_view boundary, std::string_view headers,
                           std::string_view content) {
    return "--" + std::string(boundary) + "\r\n" + std::string(headers) + "\r\n\r\n" +
           std::string(content) + "\r\n";
}

const std::string fuzz_boundary = "------------------------d74496d66958873e";

const std::vector<std::string> multipart_seeds = {
    multipart_part(fuzz_boundary,
                   "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                   "Content-Type: audio/wav",
                   std::string("RIFF\0\0\0\0WAVEfmt \r\n--not\xFF", 20)) +
        multipart_part(fuzz_boundary, "Content-Disposition: form-data; name=\"model\"",
                       "whisper-1") +
        multipart_part(fuzz_boundary, "content-disposition: form-data; name=language", "en") +
        "--" + fuzz_boundary + "--\r\n",
    "preamble\n--" + fuzz_boundary + "\nContent-Disposition: form-data; name=\"model\"\n\nm\n--" +
        fuzz_boundary + "--\n",
};

constexpr std::string_view multipart_alphabet = "-\r\n:;=\" dfmoel";

const std::vector<std::string> content_type_seeds = {
    "multipart/form-data; boundary=" + fuzz_boundary,
    "multipart/form-data; charset=utf-8; boundary=\"a b:c\\\"d\"",
    "Multipart/Form-Data;boundary=x ; other=y",
    "application/json",
};

constexpr std::string_view content_type_alphabet = ";=\" \t\\/-mpartfoBOUNDARY";

void check_multipart(const std::string& text) {
    const ExactCopy exact(text);
    const std::string_view body = exact.view();
    for (const std::string_view field : {"model", "language", "file", ""}) {
        const auto value = multipart_field(body, fuzz_boundary, field);
        // A field's value is a slice of the body.
        if (value) { EXPECT_NE(body.find(*value), std::string::npos) << printable(*value); }
    }
    check_request_info(inspect_json(body));
}

void check_content_type(const std::string& content_type) {
    const auto boundary = multipart_boundary(content_type);
    if (boundary) {
        EXPECT_FALSE(boundary->empty());
        EXPECT_LE(boundary->size(), content_type.size());
    }
}

TEST(Fuzz, RequestInspection) {
    Mutator json(json_seeds, json_alphabet);
    Mutator multipart(multipart_seeds, multipart_alphabet);
    Mutator content_types(content_type_seeds, content_type_alphabet);
    constexpr std::string_view fillers("}]\" \0x", 6);
    for (const auto& seed : json_seeds) check_json(seed, '}');
    for (const auto& seed : multipart_seeds) check_multipart(seed);
    for (const auto& seed : content_type_seeds) check_content_type(seed);
    for (int n = 0; n < 20000; ++n) {
        std::string input;
        switch (n % 4) {
        case 0:
        case 1:
            input = json.next();
            check_json(input, fillers[(n / 4) % fillers.size()]);
            break;
        case 2:
            input = multipart.next();
            check_multipart(input);
            break;
        default:
            input = content_types.next();
            check_content_type(input);
            break;
        }
        if (HasFailure()) {
            ADD_FAILURE() << "input " << n << ": \"" << printable(input) << "\"";
            return;
        }
    }
}

}  // namespace
}  // namespace vllm_router
