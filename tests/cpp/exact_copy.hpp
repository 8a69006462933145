// Test helper shared by the parser tests.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string_view>

namespace vllm_router::testing_util {

// A copy of `s` in a heap block of exactly its size: a sanitizer build then sees any read past
// the end, which the spare capacity of a std::string would hide.
class ExactCopy {
public:
    explicit ExactCopy(std::string_view s) : data_(new char[s.size()]), size_(s.size()) {
        std::copy(s.begin(), s.end(), data_.get());
    }
    std::string_view view() const { return {data_.get(), size_}; }

private:
    std::unique_ptr<char[]> data_;
    std::size_t size_;
};

}  // namespace vllm_router::testing_util
