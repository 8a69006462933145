#include "core/sse.hpp"

namespace vllm_router {
namespace {

constexpr std::string_view utf8_bom = "\xEF\xBB\xBF";

}  // namespace

SseFramer::SseFramer(std::size_t max_line) : max_line_(max_line) {}

std::size_t SseFramer::feed(std::string_view chunk) {
    if (!bom_settled_) {
        // The BOM itself may arrive split across pieces.
        while (!chunk.empty() && bom_matched_ < utf8_bom.size() &&
               chunk.front() == utf8_bom[bom_matched_]) {
            ++bom_matched_;
            chunk.remove_prefix(1);
        }
        if (bom_matched_ == utf8_bom.size()) {
            bom_settled_ = true;
        } else if (chunk.empty()) {
            return 0;
        } else {
            // Not a BOM after all: the bytes held back are the start of the first line.
            append_bounded(line_, utf8_bom.substr(0, bom_matched_), line_truncated_);
            bom_settled_ = true;
        }
    }

    std::size_t dispatched = 0;
    while (!chunk.empty()) {
        if (skip_lf_) {
            skip_lf_ = false;
            if (chunk.front() == '\n') {
                chunk.remove_prefix(1);
                continue;
            }
        }
        const std::size_t eol = chunk.find_first_of("\r\n");
        if (eol == std::string_view::npos) {
            append_bounded(line_, chunk, line_truncated_);
            break;
        }
        const std::string_view head = chunk.substr(0, eol);
        if (line_.empty() && !line_truncated_) {
            // The whole line is inside this piece: read it where it lies.
            const bool truncated = head.size() > max_line_;
            dispatched += process_line(truncated ? head.substr(0, max_line_) : head, truncated);
        } else {
            append_bounded(line_, head, line_truncated_);
            dispatched += process_line(line_, line_truncated_);
            line_.clear();
            line_truncated_ = false;
        }
        skip_lf_ = chunk[eol] == '\r';
        chunk.remove_prefix(eol + 1);
    }
    return dispatched;
}

bool SseFramer::at_event_boundary() const {
    const bool mid_bom = !bom_settled_ && bom_matched_ > 0;
    return !mid_bom && !skip_lf_ && line_.empty() && !line_truncated_ && !event_open_;
}

void SseFramer::reset() {
    bom_matched_ = 0;
    bom_settled_ = false;
    skip_lf_ = false;
    line_.clear();
    line_truncated_ = false;
    data_.clear();
    has_data_ = false;
    event_open_ = false;
    data_truncated_ = false;
    events_ = 0;
    data_events_ = 0;
    done_ = false;
    last_data_.clear();
}

std::size_t SseFramer::process_line(std::string_view line, bool truncated) {
    if (line.empty()) return dispatch();
    if (line.front() == ':') return 0;
    event_open_ = true;
    const std::size_t colon = line.find(':');
    if (line.substr(0, colon) != "data") return 0;
    std::string_view value;
    if (colon != std::string_view::npos) {
        value = line.substr(colon + 1);
        if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (has_data_) append_bounded(data_, "\n", data_truncated_);
    append_bounded(data_, value, data_truncated_);
    if (truncated) data_truncated_ = true;
    has_data_ = true;
    return 0;
}

std::size_t SseFramer::dispatch() {
    event_open_ = false;
    if (!has_data_) return 0;
    ++events_;
    if (!data_truncated_ && data_ == "[DONE]") {
        done_ = true;
    } else {
        ++data_events_;
    }
    last_data_.swap(data_);
    data_.clear();
    has_data_ = false;
    data_truncated_ = false;
    return 1;
}

void SseFramer::append_bounded(std::string& to, std::string_view bytes, bool& truncated) const {
    const std::size_t room = to.size() < max_line_ ? max_line_ - to.size() : 0;
    if (bytes.size() > room) {
        to.append(bytes.substr(0, room));
        truncated = true;
    } else {
        to.append(bytes);
    }
}

}  // namespace vllm_router
