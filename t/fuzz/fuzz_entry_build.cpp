// libFuzzer target: the writer side of the cache entry format.  What
// begin_entry() accepts, decode_entry() accepts, with the same fields, and
// it re-encodes to the same bytes; what begin_entry() accepts is exactly
// what the rules in cache_entry.hpp allow (a model of them below).
//
// Input (text, so that the seeds are readable):
//   line 1: flags status stored ttl age swr sie   (decimal, see parse_num)
//   then one header per line, "Name:value" (no ':' = a name, empty value),
//   "+N" repeats the previous header's value N more times, "*N" repeats
//   the previous header N more times (to reach the size and count limits);
//   an empty line ends the headers; the rest of the input is the body.
#include "fuzz.hpp"

#include "core/cache_entry.hpp"
#include "core/http_text.hpp"

using namespace fly::core;

namespace {

constexpr size_t kMaxInputHeaders = kEntryMaxHeaders + 8;
constexpr size_t kMaxValue = 2 * kEntryMaxHeaderBytes;

struct Input {
    EntryMeta meta;
    std::vector<std::string> names, values;
    std::string_view body;
};

Input parse_input(std::string_view s)
{
    Input in;
    size_t nl = s.find('\n');
    std::vector<std::string_view> w = fuzz::words(s.substr(0, nl));
    auto num = [&](size_t i) { return i < w.size() ? fuzz::parse_num(w[i]) : 0; };
    in.meta.flags = static_cast<uint8_t>(num(0));
    in.meta.status = static_cast<uint16_t>(num(1));
    in.meta.stored = num(2);
    in.meta.ttl = static_cast<uint32_t>(num(3));
    in.meta.age = static_cast<uint32_t>(num(4));
    in.meta.swr = static_cast<uint32_t>(num(5));
    in.meta.sie = static_cast<uint32_t>(num(6));
    s = nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1);

    while (!s.empty()) {
        nl = s.find('\n');
        std::string_view line = s.substr(0, nl);
        s = nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1);
        if (line.empty()) {
            break;
        }
        if ((line[0] == '+' || line[0] == '*') && line.size() > 1 &&
            fuzz::all_digits(line.substr(1)) && !in.names.empty()) {
            size_t n = static_cast<size_t>(fuzz::parse_num(line.substr(1).substr(0, 6)));
            if (line[0] == '+') {
                std::string unit = in.values.back();
                for (size_t i = 0; i < n && in.values.back().size() + unit.size() <= kMaxValue; i++) {
                    in.values.back() += unit;
                }
            } else {
                for (size_t i = 0; i < n && in.names.size() < kMaxInputHeaders; i++) {
                    in.names.push_back(in.names.back());
                    in.values.push_back(in.values.back());
                }
            }
            continue;
        }
        if (in.names.size() >= kMaxInputHeaders) {
            continue;
        }
        size_t colon = line.find(':');
        in.names.emplace_back(line.substr(0, colon));
        in.values.emplace_back(colon == std::string_view::npos ? std::string_view()
                                                                : line.substr(colon + 1));
    }
    in.body = s;
    return in;
}

// ---- the rules of cache_entry.hpp, written again ----

bool model_token(std::string_view s)
{
    if (s.empty()) return false;
    for (char c : s) {
        if (!is_tchar(c)) return false;
    }
    return true;
}

bool model_value(std::string_view s)
{
    return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool model_accepts(const EntryMeta &m, const EntryHeader *h, size_t n)
{
    bool marker = (m.flags & kEntryVaryMarker) != 0;
    if (n > kEntryMaxHeaders || (m.flags & ~kEntryVaryMarker) != 0 || m.stored < 0 ||
        m.stored >= (int64_t{1} << 40)) {
        return false;
    }
    if (!marker && (m.status < 100 || m.status > 599)) {
        return false;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += h[i].name.size() + h[i].value.size();
        if (!model_token(h[i].name) || !model_value(h[i].value)) {
            return false;
        }
    }
    if (total > kEntryMaxHeaderBytes) {
        return false;
    }
    if (marker) {
        // exactly one Vary that names something (holds a token byte)
        if (n != 1 || !iequals(h[0].name, "vary")) {
            return false;
        }
        bool names = false;
        for (char c : h[0].value) {
            names = names || is_tchar(c);
        }
        return names;
    }
    return true;
}

bool model_generation(std::string_view g)
{
    if (g.empty() || g.size() > kMaxGenerationLen) return false;
    for (char c : g) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Input in = parse_input(fuzz::as_view(data, size));
    std::vector<EntryHeader> headers;
    for (size_t i = 0; i < in.names.size(); i++) {
        headers.push_back({in.names[i], in.values[i]});
    }

    std::string out = "left over from an earlier entry";
    bool ok = begin_entry(in.meta, headers.data(), headers.size(), out);
    FUZZ_CHECK(ok == model_accepts(in.meta, headers.data(), headers.size()));
    if (!ok) {
        return 0;
    }
    FUZZ_CHECK(out.compare(0, 4, "FLYC") == 0);
    size_t prefix = out.size();
    out.append(in.body);
    FUZZ_CHECK(finish_entry(out, prefix));
    FUZZ_CHECK(!finish_entry(out, out.size() + 1));

    static EntryView v;
    DecodeError e = decode_entry(out, v);
    bool marker = (in.meta.flags & kEntryVaryMarker) != 0;
    if (marker && !model_generation(in.body)) {
        // the writer leaves the generation token to its caller
        FUZZ_CHECK(e == DecodeError::bad_header);
        return 0;
    }
    FUZZ_CHECK(e == DecodeError::none);
    FUZZ_CHECK(v.meta.flags == in.meta.flags && v.meta.status == in.meta.status &&
               v.meta.stored == in.meta.stored && v.meta.ttl == in.meta.ttl &&
               v.meta.age == in.meta.age && v.meta.swr == in.meta.swr &&
               v.meta.sie == in.meta.sie);
    FUZZ_CHECK(v.nheaders == headers.size());
    for (size_t i = 0; i < v.nheaders; i++) {
        FUZZ_CHECK(v.headers[i].name == headers[i].name);
        FUZZ_CHECK(v.headers[i].value == headers[i].value);
    }
    FUZZ_CHECK(v.body == in.body);

    std::string again;
    FUZZ_CHECK(begin_entry(v.meta, v.headers, v.nheaders, again));
    size_t p2 = again.size();
    again.append(v.body);
    FUZZ_CHECK(finish_entry(again, p2) && again == out);
    return 0;
}
