// libFuzzer target: parse_age() (the Age header, RFC 9111 5.1).
//
// Input: up to four Age header lines, separated by '\n'.
//
// Properties:
//   - seconds is -1 or 0..2^31, and invalid() is "present and -1";
//   - the lines form one list: parsing them one by one equals parsing
//     them joined with commas;
//   - only the first member counts: a line added after the first member
//     was read changes nothing;
//   - a valid result is the first non-empty element of the list, all
//     digits (an independent reading with fuzz::list_elements).
#include "fuzz.hpp"

#include "core/cache_control.hpp"

using namespace fly::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size), 4);

    AgeField a;
    std::string joined;
    for (size_t i = 0; i < l.size(); i++) {
        parse_age(l[i], a);
        if (i) {
            joined += ',';
        }
        joined.append(l[i]);
    }
    FUZZ_CHECK(a.seconds == -1 || (a.seconds >= 0 && a.seconds <= (int64_t{1} << 31)));
    FUZZ_CHECK(a.present);
    FUZZ_CHECK(a.invalid() == (a.seconds < 0));

    AgeField j;
    parse_age(joined, j);
    FUZZ_CHECK(j.seconds == a.seconds && j.first_seen == a.first_seen);

    if (a.first_seen) {
        AgeField more = a;
        parse_age("12345", more);
        FUZZ_CHECK(more.seconds == a.seconds);
    }

    std::vector<std::string_view> members = fuzz::list_elements(joined);
    FUZZ_CHECK(a.first_seen == !members.empty());
    if (!members.empty()) {
        FUZZ_CHECK((a.seconds >= 0) == fuzz::all_digits(members[0]));
    }
    return 0;
}
