// Prometheus text exposition parser: reads a vLLM server's /metrics answer (text format 0.0.4, as
// prometheus_client writes it) and extracts the few engine figures the router's load model uses.
// It runs against every server at every scrape interval, so it works on string_view slices of
// the scraped text, with no regex and no allocation per line; the callback API costs one
// indirect call per sample.
//
// What the parser accepts (a line at a time, lines end in "\n" or "\r\n", the last one may lack
// its end, blank lines and leading/trailing blanks are ignored):
//   - comments: any line whose first non-blank character is '#' (HELP, TYPE, OpenMetrics EOF);
//     their content is not checked, because nothing the router needs is in them;
//   - samples: name [blanks] ["{" labels "}"] blanks value [blanks timestamp] [blanks], where
//     name is [a-zA-Z_:][a-zA-Z0-9_:]*, labels are name="value" pairs separated by commas
//     (blanks allowed around every token, a trailing comma allowed), label names are
//     [a-zA-Z_][a-zA-Z0-9_]*, and label values may hold any byte but an unescaped '"';
//   - values: decimal floats and integers with optional sign and exponent, and NaN, Inf,
//     Infinity in any case with optional sign, as Go's ParseFloat reads them, hex floats aside;
//     a value beyond the range of a double (1e400, 1e-400) is malformed, no exporter writes one;
//   - timestamps: any number as above (integer milliseconds in this format); read, then ignored.
// Anything else on a line makes that line malformed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vllm_router {

struct PromSample {
    std::string_view name;    // metric name, e.g. "vllm:num_requests_running"
    std::string_view labels;  // raw text between the braces, still escaped; "" without braces
    double value = 0;
};

// Calls `on_sample` for every sample line, in order; the views point into `text`. Returns false
// on the first malformed line and sets *error to "line N: what" (N counts from 1), after
// reporting every sample before that line; clears *error on success. Returns true for an empty
// text.
bool parse_prometheus(std::string_view text,
                      const std::function<void(const PromSample&)>& on_sample,
                      std::string* error = nullptr);

// The value of the first label named `key` in a sample's raw label text, unescaped (\" \\ \n;
// any other backslash pair is kept as written, like Prometheus does); nullopt when the key is
// absent or the text is malformed before it.
std::optional<std::string> prom_label(std::string_view labels, std::string_view key);

// What the router needs from one vLLM server's /metrics.
//
// Names: the current names win whenever they carry a value, since vLLM exposes the current and
// the deprecated names side by side during a transition; the older names are read only as a
// fallback. Names match exactly (vllm:num_requests_running_foo is another metric).
//   running, waiting   vllm:num_requests_running / vllm:num_requests_waiting, summed over all
//                      series: vLLM writes one series per engine (engine="0", "1", ...).
//   kv_cache_usage     vllm:kv_cache_usage_perc, else vllm:gpu_cache_usage_perc: the MEAN over
//                      the series, because each engine reports a fraction of its own cache and
//                      two half-full engines are half full, not full. Taken as written (0..1).
//   prefix cache       summed queries and hits from the first of these pairs that has both:
//                      vllm:prefix_cache_{queries,hits}_total, vllm:prefix_cache_{queries,hits},
//                      vllm:gpu_prefix_cache_{queries,hits}_total,
//                      vllm:gpu_prefix_cache_{queries,hits} (counters without the _total suffix,
//                      as older clients expose them). Both figures always come from one pair.
// NaN and infinite sample values are skipped: a NaN gauge must not poison the load score. A
// metric counts as found (has_*) only when at least one of its samples is finite, so a metric
// that is all NaN falls back like an absent one. (Finite values whose sum overflows a double
// give an infinite figure, never NaN.)
struct EngineMetrics {
    double running = 0;
    double waiting = 0;
    double kv_cache_usage = 0;
    double prefix_cache_queries = 0;
    double prefix_cache_hits = 0;
    bool has_running = false;
    bool has_waiting = false;
    bool has_kv = false;
    bool has_prefix = false;

    // hits / queries clamped to 0..1 (a misbehaving server cannot show 300%); 0 when there
    // were no queries or a sum overflowed.
    double prefix_cache_hit_rate() const;
    // Any of the load gauges was found: an engine with --disable-log-stats exports none.
    bool has_load_series() const { return has_running || has_waiting || has_kv; }
};

// Every series name parse_engine_metrics reads ("vllm:num_requests_running", ...), current
// names first: for tests that check a vLLM release's exposition against what the router reads.
std::vector<std::string> engine_load_series();

// Parses a whole /metrics answer. A malformed line anywhere rejects the whole scrape (nullopt,
// *error as in parse_prometheus): the lines after it are unknown, and half a scrape could
// under-count a server's load and draw traffic onto it; the caller keeps the previous figures
// or treats the server as unscraped. An empty or metric-free text is valid and finds nothing.
std::optional<EngineMetrics> parse_engine_metrics(std::string_view text,
                                                  std::string* error = nullptr);

}  // namespace vllm_router
