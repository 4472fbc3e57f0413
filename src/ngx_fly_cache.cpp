// fly-edge nginx shell: the regional Redis cache (work in progress).
#include "ngx_fly.hpp"

namespace fly {

ngx_int_t cache_init(ngx_conf_t *)
{
    return NGX_OK;
}

}  // namespace fly
