// fly-edge pure core: PostgreSQL WAL positions (LSNs) and the fly-lsn
// cookie that carries one from a write to the reads that follow it.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fly::core {

// An LSN as PostgreSQL writes a pg_lsn: the high and the low 32 bits in
// hex, "X/Y", each 1..8 digits of either case ("16/B374D848").  Nothing
// else is accepted: no sign, no space, no "0x", no empty half (the rules
// of pg_lsn's own input function).
bool parse_lsn(std::string_view text, uint64_t &out);

// The longest text of an LSN: "FFFFFFFF/FFFFFFFF".
constexpr size_t kLsnTextMax = 17;

// Writes `lsn` as PostgreSQL does (upper-case hex, no leading zeros) into
// `out`, which has room for kLsnTextMax bytes; returns the length.
size_t format_lsn(uint64_t lsn, char *out);
std::string lsn_text(uint64_t lsn);

// A decimal number of 1..19 digits, as PostgreSQL prints bigint settings
// (wal_block_size, pg_size_bytes(wal_segment_size)).
bool parse_decimal(std::string_view text, uint64_t &out);

// pg_current_wal_insert_lsn() covers every commit made before it was
// read, including asynchronous ones whose WAL is not written yet (which
// pg_current_wal_lsn() may not cover).  But where the last record ended
// exactly at a page boundary, it points past the next page's header
// (24 bytes; 40 on the first page of a segment), a place no record ends
// at, which a caught-up replica's pg_last_wal_replay_lsn() (the end of
// the last record replayed) would never reach while the primary is idle.
// This moves such a position back to the boundary.  `block_size` is the
// server's wal_block_size, `segment_size` its wal_segment_size in bytes;
// when either is not a power of two of a size PostgreSQL allows, the
// position is returned as it is (still safe: never earlier than the
// commits it covers).
uint64_t record_end_lsn(uint64_t insert_lsn, uint64_t block_size,
                        uint64_t segment_size);

// ---- the fly-lsn cookie ---------------------------------------------------

constexpr std::string_view kLsnCookie = "fly-lsn";

// How long a client keeps the cookie (seconds).  It only matters until
// the region's replica has replayed the position; a replica region's
// answer clears it as soon as its replica has.
constexpr int64_t kLsnCookieMaxAge = 60;

// Set-Cookie value carrying `lsn`:
// "fly-lsn=0/3000148; Max-Age=60; Path=/; HttpOnly; SameSite=Lax".
std::string lsn_cookie(uint64_t lsn);

// Set-Cookie value that removes the cookie.
constexpr std::string_view kLsnCookieClear =
    "fly-lsn=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax";

}  // namespace fly::core
