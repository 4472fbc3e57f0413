// fly-edge pure core: tombstones and the fill fence (tombstone.hpp).
#include "core/tombstone.hpp"

namespace fly::core {

namespace {

constexpr std::string_view kMagic = "FLYT";
constexpr char kVersion = '1';
constexpr uint8_t kHasLsn = 0x1;
constexpr int64_t kMaxTime = int64_t{1} << 53;

bool read_hex16(std::string_view s, uint64_t &out)
{
    out = 0;
    for (char c : s) {
        uint64_t d;
        if (c >= '0' && c <= '9') {
            d = static_cast<uint64_t>(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = static_cast<uint64_t>(c - 'a' + 10);
        } else {
            return false;
        }
        out = (out << 4) | d;
    }
    return s.size() == 16;
}

}  // namespace

std::string hex16(uint64_t v)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; i--) {
        s[static_cast<size_t>(i)] = digits[v & 0xf];
        v >>= 4;
    }
    return s;
}

bool is_tombstone(std::string_view value)
{
    return value.substr(0, kMagic.size()) == kMagic;
}

std::string encode_tombstone(const Tombstone &t)
{
    std::string s;
    s.reserve(kTombstoneLen);
    s.append(kMagic);
    s += kVersion;
    s += t.has_lsn ? '1' : '0';
    s.append(hex16(static_cast<uint64_t>(t.time_ms < 0 ? 0 : t.time_ms)));
    s.append(hex16(t.has_lsn ? t.lsn : 0));
    return s;
}

bool decode_tombstone(std::string_view value, Tombstone &out)
{
    out = Tombstone();
    if (value.size() != kTombstoneLen || !is_tombstone(value)
        || value[4] != kVersion || (value[5] != '0' && value[5] != '1'))
    {
        return false;
    }
    uint64_t time = 0, lsn = 0;
    if (!read_hex16(value.substr(6, 16), time) || time > kMaxTime
        || !read_hex16(value.substr(22, 16), lsn))
    {
        return false;
    }
    bool has_lsn = (static_cast<uint8_t>(value[5] - '0') & kHasLsn) != 0;
    if (!has_lsn && lsn != 0) {
        return false;
    }
    out.time_ms = static_cast<int64_t>(time);
    out.has_lsn = has_lsn;
    out.lsn = lsn;
    return true;
}

std::string fence_record_key(std::string_view base_key)
{
    std::string k(base_key);
    k.append("\x1fi");
    return k;
}

std::string fill_staging_key(std::string_view key, std::string_view token)
{
    std::string k;
    k.reserve(key.size() + 2 + token.size());
    k.append(key);
    k.append("\x1fs");
    k.append(token);
    return k;
}

bool fence_allows(const Tombstone &t, const FillFence &f)
{
    if (f.has_lsn && t.has_lsn) {
        return t.lsn <= f.replica_lsn;
    }
    return t.time_ms <= f.lookup_ms - f.fence_ms;
}

std::string fence_threshold_arg(const FillFence &f)
{
    int64_t thr = f.lookup_ms - f.fence_ms;
    return hex16(static_cast<uint64_t>(thr < 0 ? 0 : thr));
}

std::string fence_lsn_arg(const FillFence &f)
{
    return f.has_lsn ? hex16(f.replica_lsn) : std::string();
}

}  // namespace fly::core
