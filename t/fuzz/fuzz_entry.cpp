// libFuzzer target: decode_entry() on arbitrary bytes (a value read from
// Redis, which anyone who can write to the regional Redis controls).
//
// Each input is decoded twice: as it is, and "resealed" (its header
// checksum recomputed where the layout puts it), so that mutations reach
// the checks behind the checksum instead of stopping at bad_checksum.
//
// Properties (decode_known_entry() too: no allocation, no overread, it
// accepts what decode_entry() accepts): decode_entry() never allocates (nor reads outside the
// input: ASan, on an exact-size copy); for every entry it accepts:
//   - every field obeys the documented rules (status, stored, header
//     syntax, vary marker shape, generation token), every view lies in
//     the input and the body ends where the input ends;
//   - begin_entry() + body + finish_entry() re-encode it to the same bytes;
//   - the same bytes one shorter or one longer are refused.
#include "fuzz.hpp"

#include <cstring>

#include <sanitizer/allocator_interface.h>

#include "core/cache_entry.hpp"
#include "core/http_text.hpp"

using namespace fly::core;

// ---- allocation counter: decode_entry() must not allocate ----
// The sanitizer's allocation hook sees every malloc and operator new.

static thread_local size_t g_allocations = 0;

static void count_malloc(const volatile void *, size_t) { g_allocations++; }
static void count_free(const volatile void *) {}

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
    __sanitizer_install_malloc_and_free_hooks(count_malloc, count_free);
    return 0;
}

namespace {

constexpr size_t kFixedLen = 34;     // magic .. nhdr
constexpr size_t kTrailerLen = 8;    // hsum, blen

uint64_t be(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | static_cast<unsigned char>(p[i]);
    }
    return v;
}

uint32_t fnv1a(std::string_view s)
{
    uint32_t h = 2166136261u;
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 16777619u;
    }
    return h;
}

// Walks the documented layout (with bounds checks of its own) and writes
// the right checksum where hsum belongs.  False when the walk runs out of
// bytes (nothing to reseal).
bool reseal(std::string &e)
{
    if (e.size() < kFixedLen + kTrailerLen) {
        return false;
    }
    size_t n = be(&e[32], 2);
    if (n > kEntryMaxHeaders) {
        n = kEntryMaxHeaders;   // decode stops before the headers anyway
    }
    bool v2 = e[4] == 2;        // version 2: an epoch, then a tag list
    size_t p = kFixedLen;
    if (v2) {
        if (e.size() - p < 8) return false;
        p += 8;
    }
    for (size_t i = 0; i < n; i++) {
        if (e.size() - p < 2) return false;
        size_t nlen = be(&e[p], 2);
        p += 2;
        if (e.size() - p < nlen + 4) return false;
        p += nlen;
        size_t vlen = be(&e[p], 4);
        p += 4;
        if (e.size() - p < vlen) return false;
        p += vlen;
    }
    if (v2) {
        if (e.size() - p < 2) return false;
        size_t nt = be(&e[p], 2);
        p += 2;
        for (size_t i = 0; i < nt && i < kMaxTags; i++) {
            if (e.size() - p < 2) return false;
            size_t len = be(&e[p], 2);
            p += 2;
            if (e.size() - p < len) return false;
            p += len;
        }
    }
    if (e.size() - p < 4) {
        return false;
    }
    uint32_t h = fnv1a(std::string_view(e).substr(0, p));
    for (int k = 0; k < 4; k++) {
        e[p + k] = static_cast<char>(h >> (8 * (3 - k)));
    }
    return true;
}

bool token(std::string_view s)
{
    if (s.empty()) return false;
    for (char c : s) {
        if (!is_tchar(c)) return false;
    }
    return true;
}

void check_accepted(std::string_view data, const EntryView &v)
{
    const EntryMeta &m = v.meta;
    bool marker = (m.flags & kEntryVaryMarker) != 0;
    FUZZ_CHECK((m.flags & ~kEntryKnownFlags) == 0);
    FUZZ_CHECK(m.stored >= 0 && m.stored < (int64_t{1} << 40));
    FUZZ_CHECK(marker || (m.status >= 100 && m.status <= 599));
    FUZZ_CHECK(v.nheaders <= kEntryMaxHeaders);

    size_t total = 0;
    for (size_t i = 0; i < v.nheaders; i++) {
        const EntryHeader &h = v.headers[i];
        FUZZ_CHECK(fuzz::inside(h.name, data) && fuzz::inside(h.value, data));
        FUZZ_CHECK(token(h.name));
        FUZZ_CHECK(h.value.find_first_of(std::string_view("\r\n\0", 3)) ==
                   std::string_view::npos);
        total += h.name.size() + h.value.size();
    }
    FUZZ_CHECK(total <= kEntryMaxHeaderBytes);
    FUZZ_CHECK(v.ntags <= kMaxTags && (v.ntags == 0 || m.version == 2));
    for (size_t i = 0; i < v.ntags; i++) {
        FUZZ_CHECK(fuzz::inside(v.tags[i], data) && valid_tag(v.tags[i]));
    }
    FUZZ_CHECK(fuzz::inside(v.body, data));
    FUZZ_CHECK(v.body.data() + v.body.size() == data.data() + data.size());

    if (marker) {
        FUZZ_CHECK(v.nheaders == 1 && iequals(v.headers[0].name, "vary"));
        FUZZ_CHECK(!v.body.empty() && v.body.size() <= kMaxGenerationLen);
        for (char c : v.body) {
            FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'));
        }
    }

    // the reverse of the round trip: a decoded entry re-encodes identically
    std::string again;
    FUZZ_CHECK(begin_entry(m, v.headers, v.nheaders, again, v.tags, v.ntags));
    size_t prefix = again.size();
    again.append(v.body);
    FUZZ_CHECK(finish_entry(again, prefix));
    FUZZ_CHECK(again == data);

    // the body length is exact: one byte less or more is refused
    EntryView w;
    FUZZ_CHECK(decode_entry(data.substr(0, data.size() - 1), w) != DecodeError::none);
    std::string longer(data);
    longer += 'x';
    FUZZ_CHECK(decode_entry(longer, w) == DecodeError::trailing_bytes);
}

void decode_one(std::string_view data)
{
    // an exact-size heap copy: ASan sees any read past the end
    char *copy = static_cast<char *>(std::malloc(data.size() + 1));
    if (data.size() != 0) {
        std::memcpy(copy, data.data(), data.size());
    }
    std::string_view exact(copy, data.size());

    EntryView v;
    size_t before = g_allocations;
    DecodeError e = decode_entry(exact, v);
    FUZZ_CHECK(g_allocations == before);
    FUZZ_CHECK(decode_error_name(e) != "unknown");
    if (e == DecodeError::none) {
        check_accepted(exact, v);
    }
    // the near cache's decoding of known bytes: never reads outside
    // either, and accepts whatever decode_entry() does, with the same body
    EntryView k;
    before = g_allocations;
    DecodeError ke = decode_known_entry(exact, k);
    FUZZ_CHECK(g_allocations == before);
    if (e == DecodeError::none) {
        FUZZ_CHECK(ke == DecodeError::none && k.body == v.body && k.nheaders == v.nheaders);
    }
    std::free(copy);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view in = fuzz::as_view(data, size);
    decode_one(in);
    std::string sealed(in);
    if (reseal(sealed) && sealed != in) {
        decode_one(sealed);
    }
    return 0;
}
