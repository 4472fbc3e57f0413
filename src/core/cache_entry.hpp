// fly-edge pure core: the versioned, self-describing cache entry format.
// No nginx header here: this file is unit-tested with cmocka.
//
// Layout (all integers big-endian):
//   magic    "FLYC"                         4
//   version  2 (1: the format before tags)  1
//   flags    bit 0: vary marker, 1-3 stale  1
//            rules (kEntryNoStale ...)
//   status   HTTP status                    2
//   stored   unix seconds at store time     8
//   ttl      seconds fresh after `stored`   4
//   age      origin's Age at store time     4
//   swr      stale-while-revalidate secs    4
//   sie      stale-if-error secs            4
//   nhdr     number of headers              2
//   epoch    tag epoch read by the lookup   8   (version 2 only; offset 34)
//   nhdr x { u16 name length, name, u32 value length, value }
//   ntag     number of tags                 2   (version 2 only)
//   ntag x { u16 length, tag }                  (version 2 only)
//   hsum     FNV-1a 32 of every byte above  4
//   blen     body length                    4
//   body     blen bytes, up to the end of the value exactly
//
// Version 1 entries (no epoch, no tags) still decode, as an epoch of 0
// and no tags, and re-encode to the same bytes (meta.version says which
// layout begin_entry() writes).  The epoch is the tag epoch
// (cache_tags.hpp) the lookup before the fill read, at a fixed offset (a
// refresh in place would rewrite it and hsum).  Tags are the response's own
// (fly_cache_tags_header); the implicit tag of the base key is not
// stored (the lookup derives it).
//
// A vary marker is stored at the base key when the response has Vary:
// its only header is "Vary: <names>", its body is the generation token
// (1..kMaxGenerationLen of [0-9a-z]) that the variant keys include, and
// the responses themselves are stored under the variant keys.  A new
// marker after an invalidation has a new token, so the variants stored
// before it can no longer be reached.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cache_tags.hpp"

namespace fly::core {

constexpr uint8_t kEntryVersion = 2;
constexpr size_t kEntryEpochOffset = 34;
constexpr uint8_t kEntryVaryMarker = 0x01;
// What the response's Cache-Control forbids once the entry is stale
// (freshness.hpp): no stale use at all (must-revalidate, proxy-revalidate,
// no-cache), a 504 when the app cannot be reached (must-revalidate,
// proxy-revalidate), stale only by the response's own stale-if-error
// (s-maxage).  Entries written before them have none: stale as allowed.
constexpr uint8_t kEntryNoStale = 0x02;
constexpr uint8_t kEntryMustRevalidate = 0x04;
constexpr uint8_t kEntrySharedMaxAge = 0x08;
// Every flag this version knows; an entry with another is bad_version.
constexpr uint8_t kEntryKnownFlags = kEntryVaryMarker | kEntryNoStale
                                     | kEntryMustRevalidate | kEntrySharedMaxAge;
constexpr size_t kEntryMaxHeaders = 100;
constexpr size_t kEntryMaxHeaderBytes = 64 * 1024;   // names + values
constexpr size_t kMaxGenerationLen = 64;             // vary marker body

struct EntryHeader {
    std::string_view name;
    std::string_view value;
};

struct EntryMeta {
    uint8_t version = kEntryVersion;    // 1 or 2: the layout written/read
    uint8_t flags = 0;
    uint16_t status = 0;
    int64_t stored = 0;
    uint32_t ttl = 0;
    uint32_t age = 0;
    uint32_t swr = 0;
    uint32_t sie = 0;
    uint64_t epoch = 0;                 // version 2 only (0 in version 1)
};

// Writes the entry's prefix (everything up to and including blen) into
// `out` (replacing its content) with blen = 0; the caller appends the body
// bytes and then calls finish_entry().  Returns false (and `out` is
// unusable) when there are more than kEntryMaxHeaders headers, more than
// kEntryMaxHeaderBytes of them, or a name/value is not storable (a name
// that is not an HTTP token, a value with CR, LF or NUL); also when the
// meta is not storable: unknown flag bits, `stored` outside 0..2^40-1, a
// status outside 100..599 (any status is allowed for a vary marker), or a
// vary marker whose headers are not exactly one Vary naming a header.
// `tags` (version 2 only; none for a vary marker) must each be valid
// cache tags (cache_tags.hpp: valid_tag), at most kMaxTags of them and
// kMaxTagBytes in all; a version 1 meta must have epoch 0 and no tags;
// other versions are refused.  Whatever begin_entry() accepts,
// decode_entry() accepts (and the reverse: a decoded entry re-encodes to
// the same bytes, given its tags).
bool begin_entry(const EntryMeta &meta, const EntryHeader *headers, size_t n,
                 std::string &out, const std::string_view *tags = nullptr,
                 size_t ntags = 0);

// Patches blen once the body is complete: `prefix_len` is out.size()
// right after begin_entry().  False when the body is over 4 GiB.
bool finish_entry(std::string &out, size_t prefix_len);

// A decoded entry: views into the buffer given to decode_entry(), which
// must outlive it.  No allocation.
struct EntryView {
    EntryMeta meta;
    EntryHeader headers[kEntryMaxHeaders];
    size_t nheaders = 0;
    std::string_view tags[kMaxTags];
    size_t ntags = 0;
    std::string_view body;
};

enum class DecodeError : uint8_t {
    none, too_short, bad_magic, bad_version, truncated, bad_header,
    bad_checksum, trailing_bytes, too_many_headers,
};

// Validates everything (magic, version, every length, header syntax,
// checksum, body length equal to what is left), plus the rules of
// begin_entry() above: unknown flag bits are bad_version; a bad status,
// `stored`, tag or vary marker (whose body must be a generation token) is
// bad_header; more than kMaxTags tags is too_many_headers.  The checksum covers the header section only: the body is
// bounded by its exact length.  On failure returns the reason and leaves
// `out` unspecified.  Never allocates, never reads outside `data`.
DecodeError decode_entry(std::string_view data, EntryView &out);

// The same for bytes that decode_entry() accepted before and that nothing
// outside this nginx can have changed since (the near cache's copy of a
// Redis value, in shared memory only this nginx's workers write): every
// length and bound is still checked, so it never reads outside `data`
// whatever the bytes, but the checksum and the per-byte syntax of header
// names and values are not (on a HIT from the zone they were most of the
// decoding's cost).  Never for bytes read from Redis.
DecodeError decode_known_entry(std::string_view data, EntryView &out);

std::string_view decode_error_name(DecodeError e);

// Seconds since stored, plus the origin's Age (RFC 9111 4.2.3, simple).
inline int64_t entry_age(const EntryMeta &m, int64_t now)
{
    int64_t resident = now > m.stored ? now - m.stored : 0;
    return resident + m.age;
}

// Fresh when now < stored + ttl.
inline bool entry_fresh(const EntryMeta &m, int64_t now)
{
    return now < m.stored + static_cast<int64_t>(m.ttl);
}

}  // namespace fly::core
