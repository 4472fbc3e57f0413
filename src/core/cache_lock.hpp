// fly-edge pure core: the fill lock (issue 10, fly_cache_lock).  While one
// request fills a key, the others of the region wait for that fill.  The
// lock is `SET <lock key> <token> NX PX <ttl>` in the regional Redis; its
// TTL is twice fly_cache_lock_timeout, so a holder that died (a SIGKILLed
// worker) wedges the key for two timeouts at most, and the waiters, who
// give up after one, never wait for a lock that cannot end.  The lock
// outlives their wait: a waiter began waiting after the holder's SET, so a
// lock with the waiters' own timeout as TTL would expire first, and a
// waiter's poll that saw it gone would look up again, miss and store its
// own response, when its wait was over and it should store nothing.
// The waiters of a key in one worker share one poll of the lock (a GET
// every lock_poll_ms()); when it is gone they look the key up again.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fly::core {

// The lock of the entry under Redis key `key` ("fly:<key>\x1fl"; 0x1f
// cannot occur in a configured key, so it never collides with an entry).
std::string lock_key(std::string_view key);

// A holder's token: unique per request in the region (worker pid, a
// random number, the time), so that a holder whose lock expired and was
// taken by another request cannot delete the new holder's lock.
std::string lock_token(uint32_t pid, uint64_t random, int64_t now_ms);

// The interval of the worker's poll of a waited lock for a lock timeout
// of `timeout_ms`: a twentieth of it, between 5 and 25 ms.
uint64_t lock_poll_ms(uint64_t timeout_ms);

// The lock's TTL (PX) for a lock timeout of `timeout_ms`: twice it (at
// least 1 ms: PX 0 is an error in Redis).
uint64_t lock_ttl_ms(uint64_t timeout_ms);

}  // namespace fly::core
