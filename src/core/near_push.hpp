// fly-edge pure core: what a Redis connection subscribed to the client
// tracking channel receives (RESP2 pub/sub; issue 11).  No nginx header
// here: unit-tested with cmocka (t/unit/test_near_push.cpp).
//
// On a connection in subscribed mode, Redis sends (verified on 7.0.15):
//   *3 $9 subscribe $<n> <channel> :<count>        SUBSCRIBE's answer
//   *3 $7 message $20 __redis__:invalidate *<k> $.. <key> ...
//                                                  keys that changed (one
//                                                  message per key, or a
//                                                  few together)
//   *3 $7 message $20 __redis__:invalidate $-1     FLUSHALL / FLUSHDB on
//                                                  this Redis or on its
//                                                  primary, a full resync
//   *2 $4 pong $<n> <payload>                      PING's answer
#pragma once

#include "core/resp.hpp"

#include <cstddef>
#include <string_view>

namespace fly::core {

constexpr std::string_view kTrackingChannel = "__redis__:invalidate";

enum class PushKind : uint8_t {
    subscribed,      // SUBSCRIBE confirmed (count in `count`)
    invalidate,      // keys[0..nkeys) changed; every element is a string
    flush,           // every key changed (null invalidation), or a
                     // message on the channel that cannot be read: the
                     // only safe reading is "everything"
    pong,            // payload
    other,           // anything else: not what this connection expects
};

struct PushMessage {
    PushKind kind = PushKind::other;
    const RespReply *keys = nullptr;     // invalidate (elements of the reply)
    size_t nkeys = 0;
    std::string_view payload;            // pong
    long long count = 0;                 // subscribed
    bool malformed = false;              // flush: it was unreadable
};

// Sorts out one reply of a connection subscribed to `channel`.  Views
// point into `r`.
PushMessage classify_push(const RespReply &r,
                          std::string_view channel = kTrackingChannel) noexcept;

}  // namespace fly::core
