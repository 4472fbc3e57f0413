// fly-edge pure core: the versioned, self-describing cache entry format
// (layout in cache_entry.hpp).
#include "core/http_text.hpp"
#include "core/cache_entry.hpp"

#include <cstring>

namespace fly::core {

namespace {

constexpr char kMagic[4] = {'F', 'L', 'Y', 'C'};
constexpr uint8_t kKnownFlags = kEntryKnownFlags;

// magic, version, flags, status, stored, ttl, age, swr, sie, nhdr
constexpr size_t kFixedLen = 4 + 1 + 1 + 2 + 8 + 4 + 4 + 4 + 4 + 2;
static_assert(kFixedLen == kEntryEpochOffset, "the epoch follows nhdr");
constexpr size_t kEpochLen = 8;          // version 2
constexpr size_t kTagCountLen = 2;       // version 2
// hsum, blen
constexpr size_t kTrailerLen = 4 + 4;

// `stored` beyond this (year ~36800) or negative is garbage; bounding it
// keeps stored + ttl and now - stored far from int64 overflow.
constexpr int64_t kMaxStored = int64_t{1} << 40;

// FNV-1a, 32 bits
constexpr uint32_t kFnvBasis = 2166136261u;
constexpr uint32_t kFnvPrime = 16777619u;

uint32_t fnv1a(const char *p, size_t n)
{
    uint32_t h = kFnvBasis;
    for (size_t i = 0; i < n; i++) {
        h ^= static_cast<unsigned char>(p[i]);
        h *= kFnvPrime;
    }
    return h;
}

size_t min_len(uint8_t version)
{
    return kFixedLen + kTrailerLen + (version == 1 ? 0 : kEpochLen + kTagCountLen);
}

// Anything but CR, LF and NUL (which would split or end the header when
// it is sent: RFC 9110 5.5).
bool valid_value(std::string_view value)
{
    for (char c : value) {
        if (c == '\r' || c == '\n' || c == '\0') {
            return false;
        }
    }
    return true;
}

bool is_vary(std::string_view name)
{
    constexpr std::string_view kVary = "vary";
    if (name.size() != kVary.size()) {
        return false;
    }
    for (size_t i = 0; i < name.size(); i++) {
        if (ascii_lower(name[i]) != kVary[i]) {
            return false;
        }
    }
    return true;
}

// A Vary value naming at least one header has at least one token byte
// (" , ," names none, and would make the variant key the base key).
bool has_tchar(std::string_view s)
{
    for (char c : s) {
        if (is_tchar(c)) {
            return true;
        }
    }
    return false;
}

// What both the writer and the reader require of the fixed fields.
bool valid_meta(const EntryMeta &m)
{
    if ((m.flags & ~kKnownFlags) != 0 || m.stored < 0 || m.stored >= kMaxStored
        || (m.version == 1 && m.epoch != 0))
    {
        return false;
    }
    return (m.flags & kEntryVaryMarker) != 0 || (m.status >= 100 && m.status <= 599);
}

// The tag list of an entry: valid tags, no duplicates needed to be
// refused (the writer's callers dedupe), bounded; none in a marker.
bool valid_tags(const EntryMeta &m, const std::string_view *tags, size_t n)
{
    if (n == 0) {
        return true;
    }
    if (m.version == 1 || (m.flags & kEntryVaryMarker) != 0 || n > kMaxTags) {
        return false;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += tags[i].size();
        if (!valid_tag(tags[i]) || bytes > kMaxTagBytes) {
            return false;
        }
    }
    return true;
}

// A vary marker holds exactly one Vary header that names something (its body, the
// generation token, is checked by the reader).
bool valid_marker_headers(const EntryHeader *headers, size_t n)
{
    return n == 1 && is_vary(headers[0].name) && has_tchar(headers[0].value);
}

bool valid_generation(std::string_view g)
{
    if (g.empty() || g.size() > kMaxGenerationLen) {
        return false;
    }
    for (char c : g) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) {
            return false;
        }
    }
    return true;
}

// ---- writing ----

// Big-endian fields written at a cursor into room sized in advance.
char *put_u8(char *p, uint8_t v)
{
    *p = static_cast<char>(v);
    return p + 1;
}

char *put_u16(char *p, uint16_t v)
{
    p[0] = static_cast<char>(v >> 8);
    p[1] = static_cast<char>(v);
    return p + 2;
}

char *put_u32(char *p, uint32_t v)
{
    return put_u16(put_u16(p, static_cast<uint16_t>(v >> 16)), static_cast<uint16_t>(v));
}

char *put_u64(char *p, uint64_t v)
{
    return put_u32(put_u32(p, static_cast<uint32_t>(v >> 32)), static_cast<uint32_t>(v));
}

char *put_bytes(char *p, std::string_view v)
{
    if (!v.empty()) {
        std::memcpy(p, v.data(), v.size());
    }
    return p + v.size();
}

void patch_u32(std::string &out, size_t at, uint32_t v)
{
    out[at] = static_cast<char>(v >> 24);
    out[at + 1] = static_cast<char>(v >> 16);
    out[at + 2] = static_cast<char>(v >> 8);
    out[at + 3] = static_cast<char>(v);
}

// ---- reading ----

// A bounds-checked cursor: every read states how many bytes it needs and
// fails, without touching memory, when fewer are left.
struct Reader {
    const char *p;
    size_t len;
    size_t pos = 0;

    size_t left() const { return len - pos; }

    bool bytes(size_t n, std::string_view &out)
    {
        if (left() < n) {
            return false;
        }
        out = std::string_view(p + pos, n);
        pos += n;
        return true;
    }

    template <typename T>
    bool uint(T &out)
    {
        if (left() < sizeof(T)) {
            return false;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < sizeof(T); i++) {
            v = (v << 8) | static_cast<unsigned char>(p[pos + i]);
        }
        pos += sizeof(T);
        out = static_cast<T>(v);
        return true;
    }
};

// The caller checked that the data holds at least the fixed fields and
// the trailer, so these reads cannot run short.
DecodeError read_fixed(Reader &r, EntryMeta &m, uint16_t &nhdr)
{
    std::string_view magic;
    uint8_t version = 0;
    r.bytes(4, magic);
    if (magic != std::string_view(kMagic, 4)) {
        return DecodeError::bad_magic;
    }
    r.uint(version);
    if (version != 1 && version != 2) {
        return DecodeError::bad_version;
    }
    m.version = version;
    uint64_t stored = 0;
    r.uint(m.flags);
    r.uint(m.status);
    r.uint(stored);
    r.uint(m.ttl);
    r.uint(m.age);
    r.uint(m.swr);
    r.uint(m.sie);
    r.uint(nhdr);
    m.stored = static_cast<int64_t>(stored);
    m.epoch = 0;
    if ((m.flags & ~kKnownFlags) != 0) {
        return DecodeError::bad_version;   // a feature this version lacks
    }
    if (nhdr > kEntryMaxHeaders) {
        return DecodeError::too_many_headers;
    }
    return valid_meta(m) ? DecodeError::none : DecodeError::bad_header;
}

DecodeError read_headers(Reader &r, uint16_t nhdr, EntryView &out, bool verify)
{
    size_t total = 0;
    for (size_t i = 0; i < nhdr; i++) {
        uint16_t nlen = 0;
        uint32_t vlen = 0;
        EntryHeader &h = out.headers[i];
        if (!r.uint(nlen) || !r.bytes(nlen, h.name) || !r.uint(vlen) ||
            !r.bytes(vlen, h.value)) {
            return DecodeError::truncated;
        }
        total += nlen + static_cast<size_t>(vlen);
        if (total > kEntryMaxHeaderBytes
            || (verify && (!is_token(h.name) || !valid_value(h.value)))) {
            return DecodeError::bad_header;
        }
    }
    out.nheaders = nhdr;
    return DecodeError::none;
}

DecodeError read_tags(Reader &r, EntryView &out)
{
    uint16_t ntag = 0;
    if (!r.uint(ntag)) {
        return DecodeError::truncated;
    }
    if (ntag > kMaxTags) {
        return DecodeError::too_many_headers;
    }
    for (size_t i = 0; i < ntag; i++) {
        uint16_t len = 0;
        if (!r.uint(len) || !r.bytes(len, out.tags[i])) {
            return DecodeError::truncated;
        }
    }
    out.ntags = ntag;
    return valid_tags(out.meta, out.tags, ntag) ? DecodeError::none
                                               : DecodeError::bad_header;
}

}  // namespace

bool begin_entry(const EntryMeta &meta, const EntryHeader *headers, size_t n,
                 std::string &out, const std::string_view *tags, size_t ntags)
{
    if ((meta.version != 1 && meta.version != 2) || n > kEntryMaxHeaders
        || !valid_meta(meta) || !valid_tags(meta, tags, ntags)
        || ((meta.flags & kEntryVaryMarker) != 0 && !valid_marker_headers(headers, n))) {
        return false;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const EntryHeader &h = headers[i];
        if (h.name.size() > kEntryMaxHeaderBytes || h.value.size() > kEntryMaxHeaderBytes) {
            return false;
        }
        total += h.name.size() + h.value.size();
        if (total > kEntryMaxHeaderBytes || !is_token(h.name) || !valid_value(h.value)) {
            return false;
        }
    }

    size_t tag_bytes = 0;
    for (size_t i = 0; i < ntags; i++) {
        tag_bytes += 2 + tags[i].size();
    }

    // The exact size, then one cursor over it (no per-byte appends).
    size_t size = kFixedLen + (meta.version == 2 ? 8 : 0) + n * 6 + total
                  + (meta.version == 2 ? 2 + tag_bytes : 0) + kTrailerLen;
    out.clear();
    out.resize(size);
    char *p = out.data();
    p = put_bytes(p, {kMagic, 4});
    p = put_u8(p, meta.version);
    p = put_u8(p, meta.flags);
    p = put_u16(p, meta.status);
    p = put_u64(p, static_cast<uint64_t>(meta.stored));
    p = put_u32(p, meta.ttl);
    p = put_u32(p, meta.age);
    p = put_u32(p, meta.swr);
    p = put_u32(p, meta.sie);
    p = put_u16(p, static_cast<uint16_t>(n));
    if (meta.version == 2) {
        p = put_u64(p, meta.epoch);
    }
    for (size_t i = 0; i < n; i++) {
        p = put_u16(p, static_cast<uint16_t>(headers[i].name.size()));
        p = put_bytes(p, headers[i].name);
        p = put_u32(p, static_cast<uint32_t>(headers[i].value.size()));
        p = put_bytes(p, headers[i].value);
    }
    if (meta.version == 2) {
        p = put_u16(p, static_cast<uint16_t>(ntags));
        for (size_t i = 0; i < ntags; i++) {
            p = put_u16(p, static_cast<uint16_t>(tags[i].size()));
            p = put_bytes(p, tags[i]);
        }
    }
    p = put_u32(p, fnv1a(out.data(), static_cast<size_t>(p - out.data())));
    p = put_u32(p, 0);   // blen, patched by finish_entry()
    out.resize(static_cast<size_t>(p - out.data()));   // == size
    return true;
}

bool finish_entry(std::string &out, size_t prefix_len)
{
    if (prefix_len < kFixedLen + kTrailerLen || prefix_len > out.size()) {
        return false;
    }
    size_t body = out.size() - prefix_len;
    if (body > UINT32_MAX) {
        return false;
    }
    patch_u32(out, prefix_len - 4, static_cast<uint32_t>(body));
    return true;
}

namespace {

DecodeError decode(std::string_view data, EntryView &out, bool verify)
{
    if (data.size() < kFixedLen + kTrailerLen) {
        return DecodeError::too_short;
    }
    Reader r{data.data(), data.size()};
    uint16_t nhdr = 0;
    out.nheaders = 0;
    out.ntags = 0;
    DecodeError e = read_fixed(r, out.meta, nhdr);
    if (e == DecodeError::none && out.meta.version == 2) {
        if (data.size() < min_len(2)) {
            return DecodeError::too_short;
        }
        r.uint(out.meta.epoch);
    }
    if (e == DecodeError::none) {
        e = read_headers(r, nhdr, out, verify);
    }
    if (e == DecodeError::none && out.meta.version == 2) {
        e = read_tags(r, out);
    }
    if (e != DecodeError::none) {
        return e;
    }

    size_t hashed = r.pos;
    uint32_t hsum = 0;
    uint32_t blen = 0;
    if (!r.uint(hsum) || !r.uint(blen)) {
        return DecodeError::truncated;
    }
    if (verify && hsum != fnv1a(data.data(), hashed)) {
        return DecodeError::bad_checksum;
    }
    if (blen > r.left()) {
        return DecodeError::truncated;
    }
    if (blen < r.left()) {
        return DecodeError::trailing_bytes;
    }
    r.bytes(blen, out.body);

    if ((out.meta.flags & kEntryVaryMarker) != 0 &&
        (!valid_marker_headers(out.headers, out.nheaders) || !valid_generation(out.body))) {
        return DecodeError::bad_header;
    }
    return DecodeError::none;
}

}  // namespace

DecodeError decode_entry(std::string_view data, EntryView &out)
{
    return decode(data, out, true);
}

DecodeError decode_known_entry(std::string_view data, EntryView &out)
{
    return decode(data, out, false);
}

std::string_view decode_error_name(DecodeError e)
{
    switch (e) {
    case DecodeError::none:             return "none";
    case DecodeError::too_short:        return "too short";
    case DecodeError::bad_magic:        return "bad magic";
    case DecodeError::bad_version:      return "bad version";
    case DecodeError::truncated:        return "truncated";
    case DecodeError::bad_header:       return "bad header";
    case DecodeError::bad_checksum:     return "bad checksum";
    case DecodeError::trailing_bytes:   return "trailing bytes";
    case DecodeError::too_many_headers: return "too many headers";
    }
    return "unknown";
}

}  // namespace fly::core
