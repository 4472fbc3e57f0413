// fly-edge pure core: replies on a tracking subscriber connection (see
// near_push.hpp).
#include "core/near_push.hpp"

namespace fly::core {

namespace {

bool is_string(const RespReply &r) noexcept
{
    return r.type == RespType::string && r.str != nullptr;
}

std::string_view text(const RespReply &r) noexcept
{
    return {r.str, r.len};
}

bool word_is(const RespReply &r, std::string_view w) noexcept
{
    if (!is_string(r) || r.len != w.size()) {
        return false;
    }
    for (size_t i = 0; i < w.size(); i++) {
        char c = r.str[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != w[i]) {
            return false;
        }
    }
    return true;
}

}  // namespace

PushMessage classify_push(const RespReply &r, std::string_view channel) noexcept
{
    PushMessage m;
    if (r.type != RespType::array || r.elements < 2 || r.element == nullptr) {
        return m;
    }
    const RespReply &kind = r.element[0];

    if (word_is(kind, "pong") && r.elements == 2 && is_string(r.element[1])) {
        m.kind = PushKind::pong;
        m.payload = text(r.element[1]);
        return m;
    }
    if (r.elements != 3 || !is_string(r.element[1])
        || text(r.element[1]) != channel)
    {
        return m;
    }
    if (word_is(kind, "subscribe")) {
        if (r.element[2].type == RespType::integer) {
            m.kind = PushKind::subscribed;
            m.count = r.element[2].integer;
        }
        return m;
    }
    if (!word_is(kind, "message")) {
        return m;
    }

    const RespReply &body = r.element[2];
    if (body.type == RespType::nil) {
        m.kind = PushKind::flush;
        return m;
    }
    if (body.type == RespType::array && body.elements > 0
        && body.element != nullptr)
    {
        bool ok = true;
        for (size_t i = 0; i < body.elements && ok; i++) {
            ok = is_string(body.element[i]);
        }
        if (ok) {
            m.kind = PushKind::invalidate;
            m.keys = body.element;
            m.nkeys = body.elements;
            return m;
        }
    }
    // A message on the tracking channel that says nothing readable: some
    // key changed, which one is unknown.
    m.kind = PushKind::flush;
    m.malformed = true;
    return m;
}

}  // namespace fly::core
