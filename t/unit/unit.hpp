// Shared includes for the cmocka unit tests of the pure core.
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <csetjmp>
#include <string>
#include <string_view>

extern "C" {
#include <cmocka.h>
}

// assert two string_views are equal, printing both when they differ
#define assert_sv_equal(a, b) \
    assert_string_equal(std::string(a).c_str(), std::string(b).c_str())
