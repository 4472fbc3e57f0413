// fly-edge pure core: WAL positions and the fly-lsn cookie (lsn.hpp).
#include "core/lsn.hpp"
#include "core/http_text.hpp"

namespace fly::core {

namespace {

// 1..8 hex digits.
bool parse_half(std::string_view s, uint32_t &out)
{
    if (s.empty() || s.size() > 8) {
        return false;
    }
    uint32_t v = 0;
    for (char c : s) {
        int d = hex_value(c);
        if (d < 0) {
            return false;
        }
        v = (v << 4) | static_cast<uint32_t>(d);
    }
    out = v;
    return true;
}

bool power_of_two(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

// XLogPageHeaderData and XLogLongPageHeaderData, MAXALIGNed (8 bytes).
constexpr uint64_t kShortPageHeader = 24;
constexpr uint64_t kLongPageHeader = 40;

}  // namespace

bool parse_lsn(std::string_view text, uint64_t &out)
{
    size_t slash = text.find('/');
    if (slash == std::string_view::npos) {
        return false;
    }
    uint32_t hi, lo;
    if (!parse_half(text.substr(0, slash), hi)
        || !parse_half(text.substr(slash + 1), lo))
    {
        return false;
    }
    out = (static_cast<uint64_t>(hi) << 32) | lo;
    return true;
}

size_t format_lsn(uint64_t lsn, char *out)
{
    static constexpr char digits[] = "0123456789ABCDEF";
    size_t n = 0;
    auto half = [&](uint32_t v) {
        char tmp[8];
        size_t k = 0;
        do {
            tmp[k++] = digits[v & 0xf];
            v >>= 4;
        } while (v != 0);
        while (k > 0) {
            out[n++] = tmp[--k];
        }
    };
    half(static_cast<uint32_t>(lsn >> 32));
    out[n++] = '/';
    half(static_cast<uint32_t>(lsn));
    return n;
}

std::string lsn_text(uint64_t lsn)
{
    char buf[kLsnTextMax];
    return std::string(buf, format_lsn(lsn, buf));
}

bool parse_decimal(std::string_view text, uint64_t &out)
{
    if (text.empty() || text.size() > 19) {
        return false;
    }
    uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    out = v;
    return true;
}

uint64_t record_end_lsn(uint64_t insert_lsn, uint64_t block_size,
                        uint64_t segment_size)
{
    if (!power_of_two(block_size) || block_size < 1024 || block_size > 32768
        || !power_of_two(segment_size) || segment_size < (1u << 20)
        || segment_size > (uint64_t{1} << 30))
    {
        return insert_lsn;
    }
    if (insert_lsn % segment_size == kLongPageHeader) {
        return insert_lsn - kLongPageHeader;
    }
    if (insert_lsn % block_size == kShortPageHeader
        && insert_lsn % segment_size != kShortPageHeader)
    {
        return insert_lsn - kShortPageHeader;
    }
    return insert_lsn;
}

std::string lsn_cookie(uint64_t lsn)
{
    std::string c(kLsnCookie);
    c.append("=").append(lsn_text(lsn));
    c.append("; Max-Age=").append(std::to_string(kLsnCookieMaxAge));
    c.append("; Path=/; HttpOnly; SameSite=Lax");
    return c;
}

}  // namespace fly::core
