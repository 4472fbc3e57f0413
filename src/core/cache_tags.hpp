// fly-edge pure core: cache tags and the tag epoch (design-cache.md,
// "Revision 1").  No nginx header here: this file is unit-tested with
// cmocka.
//
// Redis keys of the data model (all under kKeyPrefix "fly:"; 0x1f cannot
// occur in a configured key, see build_key, so none of these collides
// with an entry):
//   fly:<key>              entry, Vary marker or tombstone (tombstone.hpp)
//   fly:<key>\x1fg<gen>... a Vary variant (cache_rules.hpp)
//   fly:<key>\x1fi         fence record: the last tombstone of the key
//   fly:\x1fepoch          the tag epoch: a counter INCRed on the primary
//                          by every tag purge and soft purge
//   fly:\x1ft<tag>         a tag record: "<hard>:<soft>", the epochs of
//                          the tag's last hard and soft purge
//
// An entry stores the epoch its lookup read before the app was asked.  A
// HIT whose entry epoch equals the current epoch is valid (no purge since
// the fill); otherwise the records of its tags decide: a record whose hard
// epoch is greater than the entry's means purged (absent), a soft epoch
// greater means stale.  Every entry also carries the implicit tag of its
// base key (implicit_tag), not stored in it: a soft purge of a URL is a
// soft purge of that tag, so it reaches every Vary variant and every
// region.  Tag records and the epoch have no TTL; the regional Redis must
// evict only keys with one (volatile-lru), or a purge could be forgotten.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fly::core {

constexpr size_t kMaxTags = 128;        // per response / purge
constexpr size_t kMaxTagLen = 256;
constexpr size_t kMaxTagBytes = 8192;   // all tags of one response

constexpr std::string_view kEpochKey = "fly:\x1f" "epoch";
constexpr std::string_view kTagKeyPrefix = "fly:\x1ft";

// A tag: 1..kMaxTagLen visible ASCII bytes (0x21..0x7e) but ','.
bool valid_tag(std::string_view tag);

// Splits a tags header value (Cache-Tag: comma-separated; Surrogate-Key:
// space-separated; both accepted, mixed too) into `out[0..n)`, views into
// `list`, duplicates dropped, order kept.  Returns false (a malformed
// list, which the shell never stores under) when a tag is not valid_tag,
// or there are more than `max` distinct tags or kMaxTagBytes of them.
// An empty list gives n == 0.
bool parse_tags(std::string_view list, std::string_view out[], size_t max,
                size_t &n);

// The epoch as stored: a decimal counter.  A missing key (nil) is 0.
// False (and `out` 0) for anything else than 1..20 digits fitting 64 bits.
bool parse_epoch(std::string_view value, uint64_t &out);

// The tag record of `tag` (a valid_tag, or an implicit tag).
std::string tag_record_key(std::string_view tag);

// The implicit tag of an entry whose base Redis key is `base_key`
// ("fly:" + configured key): "\x1fu" + the configured key.
std::string implicit_tag(std::string_view base_key);

// A tag record: "<hard>:<soft>", two decimal epochs.  False when malformed.
bool parse_tag_record(std::string_view value, uint64_t &hard, uint64_t &soft);

enum class TagVerdict : uint8_t { valid, stale, purged };

// A tag record as read: absent (never purged) or its value.
struct TagRecord {
    bool present = false;
    std::string_view value;
};

// What the records of an entry's tags say of an entry stored at
// `entry_epoch`.  A malformed record counts as a hard purge (never serve
// what may have been purged); purged wins over stale.  `malformed` is set
// when one was seen (for the log).
TagVerdict tag_verdict(uint64_t entry_epoch, const TagRecord *records,
                       size_t n, bool &malformed);

}  // namespace fly::core
