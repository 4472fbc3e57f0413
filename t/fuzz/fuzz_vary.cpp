// libFuzzer target: the Vary machinery: build_key(), vary_names() and
// build_variant_key() (the Vary list comes from the origin, the values
// from any client's request headers).
//
// Input: line 1 the configured key (fly_cache_key's value, which holds
// request data such as the URI), line 2 the Vary list, then the request's
// value of each listed header, in the sorted order of the names.
//
// Properties:
//   - build_key() refuses exactly: an empty key, one with the separator
//     byte 0x1f, one over kMaxKeyLen with its prefix;
//   - vary_names() agrees with a model: names lower-cased, sorted, unique,
//     at most 16, every element a token other than "*";
//   - the variant key is the base key followed by one "\x1f" name "="
//     value part per name, in order, and nothing else: it holds exactly n
//     separators (no value can forge one), no control byte or DEL, every
//     '%' starts a %XX escape, and decoding each part gives back the
//     name and the normalized value (elements trimmed, empty ones
//     dropped, joined with ','): distinct requests get distinct keys;
//   - it is refused exactly when it would be over kMaxKeyLen.
#include "fuzz.hpp"

#include <set>

#include "core/cache_rules.hpp"
#include "core/http_text.hpp"

using namespace fly::core;

namespace {

constexpr char kSep = '\x1f';

bool model_names(std::string_view vary, std::vector<std::string> &names)
{
    std::set<std::string> set;
    for (std::string_view e : fuzz::list_elements(vary)) {
        if (e == "*") return false;
        std::string n;
        for (char c : e) {
            if (!is_tchar(c)) return false;
            n += ascii_lower(c);
        }
        set.insert(n);
        if (set.size() > 16) return false;
    }
    names.assign(set.begin(), set.end());
    return true;
}

std::string normalized(std::string_view value)
{
    std::string out;
    for (std::string_view e : fuzz::list_elements(value)) {
        if (!out.empty()) out += ',';
        out.append(e);
    }
    return out;
}

int hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Undoes the %XX escapes; false when a '%' starts none.
bool unescape(std::string_view s, std::string &out)
{
    out.clear();
    for (size_t i = 0; i < s.size(); i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) return false;
        if (c != '%') {
            out += s[i];
            continue;
        }
        if (s.size() - i < 3 || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) return false;
        out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
        i += 2;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size), 2 + 17);
    std::string_view configured = l[0], vary = l[1];

    std::string base = "left over";
    bool key_ok = build_key(configured, base);
    FUZZ_CHECK(key_ok == (!configured.empty() &&
                          configured.find(kSep) == std::string_view::npos &&
                          kKeyPrefix.size() + configured.size() <= kMaxKeyLen));
    if (key_ok) {
        FUZZ_CHECK(base.size() <= kMaxKeyLen && base == std::string(kKeyPrefix) + std::string(configured));
    } else {
        base = "fly:/";
    }

    std::string names[16];
    size_t n = 99;
    std::vector<std::string> want;
    bool names_ok = vary_names(vary, names, 16, n);
    FUZZ_CHECK(names_ok == model_names(vary, want));
    if (!names_ok) {
        std::string key;
        FUZZ_CHECK(!build_variant_key(base, vary, [](std::string_view) { return std::string_view(); }, key));
        return 0;
    }
    FUZZ_CHECK(n == want.size());
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(names[i] == want[i]);
    }

    std::vector<std::string> asked;   // copies: the names live in build_variant_key()
    auto lookup = [&](std::string_view name) {
        asked.emplace_back(name);
        size_t i = asked.size() - 1;
        return i < n ? l[2 + i] : std::string_view("beyond the names");
    };
    std::string key = "left over";
    bool ok = build_variant_key(base, vary, lookup, key);
    FUZZ_CHECK(asked.size() == n);

    FUZZ_CHECK(key.compare(0, base.size(), base) == 0);
    std::string_view rest = std::string_view(key).substr(base.size());
    size_t expected_len = base.size();
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(asked[i] == want[i]);
        FUZZ_CHECK(!rest.empty() && rest[0] == kSep);
        rest.remove_prefix(1);
        size_t next = rest.find(kSep);
        std::string_view part = rest.substr(0, next);
        rest = next == std::string_view::npos ? std::string_view() : rest.substr(next);
        FUZZ_CHECK(part.size() > want[i].size() && part.compare(0, want[i].size(), want[i]) == 0 &&
                   part[want[i].size()] == '=');
        std::string value;
        FUZZ_CHECK(unescape(part.substr(want[i].size() + 1), value));
        FUZZ_CHECK(value == normalized(l[2 + i]));
        expected_len += 1 + part.size();
    }
    FUZZ_CHECK(rest.empty() && key.size() == expected_len);
    FUZZ_CHECK(ok == (key.size() <= kMaxKeyLen));
    return 0;
}
