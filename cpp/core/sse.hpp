// SSE framer: watches a streamed response body (already de-chunked) that the router relays to
// the client untouched, to see its events as they complete: time to first token, inter-token
// latency, and whether the stream ended with `data: [DONE]`. It follows the HTML event-stream
// rules (line endings CRLF, LF or CR, even when CR and LF arrive in different pieces; a leading
// UTF-8 BOM; `data:` with one optional space; data lines joined with '\n'; comments and the
// other fields ignored; an event dispatched by an empty line only when it has a data line).
//
// Memory stays bounded whatever the stream: the framer holds only the current incomplete line
// and the data of the current event. A line longer than `max_line` bytes keeps its first
// `max_line` bytes (enough to know its field) and drops the rest; an event's joined data is
// capped the same way. An event that lost bytes still counts, but never as [DONE].
// An event left incomplete when the stream ends is not counted, as the spec discards it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vllm_router {

class SseFramer {
public:
    static constexpr std::size_t default_max_line = std::size_t{1} << 20;

    explicit SseFramer(std::size_t max_line = default_max_line);

    // Feeds the next piece of the body. Returns how many complete events ended inside it.
    std::size_t feed(std::string_view chunk);

    std::size_t events() const { return events_; }            // events with a data line
    bool done() const { return done_; }                        // an event's data was "[DONE]"
    std::size_t data_events() const { return data_events_; }  // events other than [DONE]
    // Data of the most recent complete event, lines joined with '\n'.
    const std::string& last_data() const { return last_data_; }
    // No event is under way: no partial line, no field line of an undispatched event, so text
    // appended to the stream here (the error event the router writes when the upstream breaks)
    // starts a fresh event for the client's parser. A stream that ended on a bare CR answers
    // false: prepending a blank line is always safe, omitting it only when certain.
    bool at_event_boundary() const;

    void reset();

private:
    std::size_t process_line(std::string_view line, bool truncated);
    std::size_t dispatch();
    void append_bounded(std::string& to, std::string_view bytes, bool& truncated) const;

    std::size_t max_line_;
    std::size_t bom_matched_ = 0;
    bool bom_settled_ = false;
    bool skip_lf_ = false;  // the previous byte was a CR: an LF right after it ends nothing
    std::string line_;
    bool line_truncated_ = false;
    std::string data_;
    bool has_data_ = false;
    bool event_open_ = false;  // a field line of the current event has been seen
    bool data_truncated_ = false;

    std::size_t events_ = 0;
    std::size_t data_events_ = 0;
    bool done_ = false;
    std::string last_data_;
};

}  // namespace vllm_router
