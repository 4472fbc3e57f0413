# nginx -t and the cache's configuration: malformed Redis URLs, unset
# ${VAR}s, directives in the wrong context, bad times, sizes, statuses,
# methods and header names fail naming the file and line; the documented
# forms ({region}, IPv6 literals, fly_redis_primary, user/password) pass.
use FlyEdge::Test;

run_tests(start => 0);    # nginx -t only

# Runs nginx -t on a spec in a region; returns (rc, output).
sub nginx_t_ok {
    my ($t, $spec, $name, %opt) = @_;
    my ($rc, $out) = $t->nginx_t($spec, region => $opt{region} // 'scl', env => $opt{env} // {});
    is($rc, 0, "$name: nginx -t passes") or diag($out);
    like($out, qr/test is successful/, "$name: nginx says so");
    return $out;
}

our $LOC = <<'EOF';
location / {
    fly_cache on;
    proxy_pass http://app;
}
EOF

__DATA__

=== TEST 1: a fly_redis URL without a scheme
--- http_config
fly_redis "127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: the redis URL lacks its scheme/
qr{/conf/http\.conf:1$}m


=== TEST 2: an unsupported scheme
--- http_config
fly_redis "http://127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: unsupported scheme "http"/
qr{/conf/http\.conf:1$}m


=== TEST 3: rediss:// (TLS) is refused
--- http_config
fly_redis "rediss://127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: .*rediss/
qr{/conf/http\.conf:1$}m


=== TEST 4: a port that is not a number
--- http_config
# the regional Redis
fly_redis "redis://x:pw@127.0.0.1:63a9/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: invalid port "63a9"/
qr{/conf/http\.conf:2$}m


=== TEST 5: a port out of range, and port 0
--- test
for my $port (qw(65536 0 99999999999999999999)) {
    my ($rc, $out) = $t->nginx_t({ http_config => qq{fly_redis "redis://127.0.0.1:$port/0";\n} });
    isnt($rc, 0, "port $port fails nginx -t");
    like($out, qr/invalid port "\Q$port\E"/, "port $port is named");
    like($out, qr{/conf/http\.conf:1$}m, "port $port: file and line");
}


=== TEST 6: an empty port
--- http_config
fly_redis "redis://127.0.0.1:/0";
--- must_die
--- error_log
qr/invalid port ""/
qr{/conf/http\.conf:1$}m


=== TEST 7: a database that is not a number
--- http_config
fly_redis "redis://127.0.0.1:6379/zero";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: invalid database "zero"/
qr{/conf/http\.conf:1$}m


=== TEST 8: a negative database
--- http_config
fly_redis "redis://127.0.0.1:6379/-1";
--- must_die
--- error_log
qr/invalid database "-1"/
qr{/conf/http\.conf:1$}m


=== TEST 9: an unterminated [ in an IPv6 host
--- http_config
fly_redis "redis://x:pw@[::1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL: unterminated '\[' in the redis URL host/
qr{/conf/http\.conf:1$}m


=== TEST 10: an IPv6 address without brackets
--- http_config
fly_redis "redis://::1:6379/0";
--- must_die
--- error_log
qr/IPv6 address in a redis URL must be written in brackets/
qr{/conf/http\.conf:1$}m


=== TEST 11: a bracketed host that is not an IPv6 address
--- http_config
fly_redis "redis://[not-v6]:6379/0";
--- must_die
--- error_log
qr/invalid IPv6 address "not-v6"/
qr{/conf/http\.conf:1$}m


=== TEST 12: an empty host
--- http_config
fly_redis "redis://x:pw@:6379/0";
--- must_die
--- error_log
qr/empty host in the redis URL/
qr{/conf/http\.conf:1$}m


=== TEST 13: trailing garbage after the database
--- http_config
fly_redis "redis://127.0.0.1:6379/0?timeout=5";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": invalid Redis URL/
qr{/conf/http\.conf:1$}m


=== TEST 14: a malformed fly_redis_primary fails at its own line
--- http_config
fly_redis "redis://127.0.0.1:6379/0";
fly_redis_primary "redis://127.0.0.1:port/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis_primary": invalid Redis URL: invalid port "port"/
qr{/conf/http\.conf:2$}m


=== TEST 15: an unset ${VAR} in fly_redis names the variable, the file and the line
--- http_config
resolver 127.0.0.1;
fly_redis "redis://x:${FLY_TEST_NO_SUCH_VAR}@127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": environment variable "FLY_TEST_NO_SUCH_VAR" is not set/
qr{/conf/http\.conf:2$}m


=== TEST 16: an unset ${VAR} in fly_redis_primary
--- http_config
fly_redis "redis://127.0.0.1:6379/0";
fly_redis_primary "redis://${FLY_TEST_NO_PRIMARY_HOST}:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis_primary": environment variable "FLY_TEST_NO_PRIMARY_HOST" is not set/
qr{/conf/http\.conf:2$}m


=== TEST 17: an unterminated ${ fails
--- http_config
fly_redis "redis://x:${REDIS_PASSWORD@127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis": unterminated "\$\{"/
qr{/conf/http\.conf:1$}m


=== TEST 18: errors about a URL never show a literal password
--- test
for my $case (
    [ 'unset variable', qq{fly_redis "redis://x:Sup3rS3cret\@\${FLY_TEST_NO_SUCH_HOST}:6379/0";\n} ],
    [ 'bad port',       qq{fly_redis "redis://x:Sup3rS3cret\@127.0.0.1:70000/0";\n} ],
    [ 'bad database',   qq{fly_redis "redis://x:Sup3rS3cret\@127.0.0.1:6379/db";\n} ],
    [ 'bad host',       qq{fly_redis "redis://x:Sup3rS3cret\@bad_host!:6379/0";\n} ],
    [ 'no scheme',      qq{fly_redis "x:Sup3rS3cret\@127.0.0.1:6379/0";\n} ],
    [ 'unterminated ${', 'fly_redis "redis://x:Sup3rS3cret@${REDIS_HOST:6379/0";' . "\n" ],
    [ 'bad variable name', 'fly_redis "redis://x:Sup3rS3cret@${1HOST}:6379/0";' . "\n" ],
) {
    my ($name, $http) = @$case;
    my ($rc, $out) = $t->nginx_t({ http_config => $http });
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr{/conf/http\.conf:1$}m, "$name: file and line");
    unlike($out, qr/Sup3rS3cret/, "$name: the password is not in the output") or diag($out);
}


=== TEST 19: fly_redis is http-only: not in a server block
--- config
fly_redis "redis://127.0.0.1:6379/0";
--- must_die
--- error_log
qr/\[emerg\] "fly_redis" directive is not allowed here in .*\/conf\/server\.conf:1$/m


=== TEST 20: fly_redis is http-only: not in a location
--- config
location / {
    fly_redis "redis://127.0.0.1:6379/0";
}
--- must_die
--- error_log
qr/"fly_redis" directive is not allowed here in .*\/conf\/server\.conf:2$/m


=== TEST 21: fly_redis_primary, fly_redis_timeout and fly_redis_connect_timeout are http-only too
--- test
for my $d ('fly_redis_primary "redis://127.0.0.1:6379/0"', 'fly_redis_timeout 50ms',
           'fly_redis_connect_timeout 50ms') {
    my ($name) = $d =~ /^(\S+)/;
    my ($rc, $out) = $t->nginx_t({ config => "location / {\n    $d;\n}\n" });
    isnt($rc, 0, "$name in a location fails");
    like($out, qr/"$name" directive is not allowed here in .*\/conf\/server\.conf:2$/m, "$name: not allowed, file and line");
}


=== TEST 22: a duplicate fly_redis
--- http_config
fly_redis "redis://127.0.0.1:6379/0";
fly_redis "redis://127.0.0.1:6380/0";
--- must_die
--- error_log
qr/"fly_redis" directive is duplicate in .*\/conf\/http\.conf:2$/m


=== TEST 23: fly_cache on without fly_redis names where fly_cache is
--- config
location / {
    proxy_pass http://app;
}
location /posts {
    fly_cache on;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache on" needs "fly_redis" \(fly_cache in .*\/conf\/server\.conf:5\)/


=== TEST 24: fly_cache on in the http block without fly_redis
--- http_config
# cache everything
fly_cache on;
--- must_die
--- error_log
qr/"fly_cache on" needs "fly_redis" \(fly_cache in .*\/conf\/http\.conf:2\)/


=== TEST 25: fly_cache off needs no fly_redis, and neither do the other cache directives
--- test
main::nginx_t_ok($t, { config => <<'EOF' }, 'fly_cache off');
location / {
    fly_cache off;
    fly_cache_valid 200 10s;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
EOF


=== TEST 26: fly_cache with a bad flag
--- config
location / { fly_cache yes; }
--- must_die
--- error_log
qr/\[emerg\] invalid value "yes" in "fly_cache" directive, it must be "on" or "off" in .*\/conf\/server\.conf:1$/m


=== TEST 27: fly_cache_valid with a bad time
--- http_config
fly_redis "redis://127.0.0.1:6379/0";
--- config
location / {
    fly_cache on;
    fly_cache_valid 200 10parsecs;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_valid": invalid time "10parsecs" in .*\/conf\/server\.conf:3$/m


=== TEST 28: fly_cache_valid with a status that is not a code
--- config
location / { fly_cache_valid 200 ok 10s; }
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_valid": invalid status "ok" in .*\/conf\/server\.conf:1$/m


=== TEST 29: fly_cache_valid with statuses out of range
--- test
for my $s (qw(99 600 2000 -1)) {
    my ($rc, $out) = $t->nginx_t({ config => "location / {\n    fly_cache_valid $s 10s;\n}\n" });
    isnt($rc, 0, "status $s fails");
    like($out, qr/"fly_cache_valid": invalid status "\Q$s\E" in .*\/conf\/server\.conf:2$/m, "status $s named, file and line");
}


=== TEST 30: fly_cache_valid with a negative time
--- config
location / { fly_cache_valid 200 -5s; }
--- must_die
--- error_log
qr/"fly_cache_valid": invalid time "-5s" in .*\/conf\/server\.conf:1$/m


=== TEST 31: fly_cache_max_size with a bad size
--- config
location / { fly_cache_max_size 1q; }
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_max_size" directive invalid value in .*\/conf\/server\.conf:1$/m


=== TEST 32: fly_cache_max_size with a negative size
--- config
location / {
    fly_cache_max_size -1k;
}
--- must_die
--- error_log
qr/"fly_cache_max_size" directive invalid value in .*\/conf\/server\.conf:2$/m


=== TEST 33: fly_redis_timeout with a bad time
--- http_config
fly_redis "redis://127.0.0.1:6379/0";
fly_redis_timeout 100 ms;
--- must_die
--- error_log
qr/\[emerg\] invalid number of arguments in "fly_redis_timeout" directive in .*\/conf\/http\.conf:2$/m


=== TEST 34: fly_redis_timeout and fly_redis_connect_timeout with bad units
--- test
for my $d (qw(fly_redis_timeout fly_redis_connect_timeout)) {
    my ($rc, $out) = $t->nginx_t({ http_config => qq{fly_redis "redis://127.0.0.1:6379/0";\n$d 100lightyears;\n} });
    isnt($rc, 0, "$d 100lightyears fails");
    like($out, qr/"$d" directive invalid value in .*\/conf\/http\.conf:2$/m, "$d: invalid value, file and line");
}


=== TEST 35: fly_cache_methods POST: only GET and HEAD are cacheable
--- config
location / {
    fly_cache_methods GET POST;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_methods": invalid method "POST" in .*\/conf\/server\.conf:2$/m


=== TEST 36: fly_cache_methods with other methods and lower case
--- test
for my $m (qw(PUT DELETE OPTIONS get FETCH)) {
    my ($rc, $out) = $t->nginx_t({ config => "fly_cache_methods $m;\n" });
    isnt($rc, 0, "fly_cache_methods $m fails");
    like($out, qr/"fly_cache_methods": invalid method "$m" in .*\/conf\/server\.conf:1$/m, "$m named, file and line");
}


=== TEST 37: fly_cache_min_ttl greater than fly_cache_max_ttl in one location
--- config
location / {
    fly_cache_min_ttl 10m;
    fly_cache_max_ttl 1m;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_min_ttl" is greater than "fly_cache_max_ttl"/
qr{/conf/server\.conf:[23]$}m


=== TEST 38: fly_cache_min_ttl inherited from http above a location's fly_cache_max_ttl
--- http_config
fly_cache_min_ttl 1h;
--- config
location /a {
    proxy_pass http://app;
}
location /b {
    fly_cache_max_ttl 30s;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_min_ttl" is greater than "fly_cache_max_ttl"/
qr{/conf/(server\.conf:5|http\.conf:1)$}m


=== TEST 39: fly_cache_min_ttl and fly_cache_max_ttl with bad times
--- test
for my $d (qw(fly_cache_min_ttl fly_cache_max_ttl)) {
    my ($rc, $out) = $t->nginx_t({ config => "location / {\n    $d 5fortnights;\n}\n" });
    isnt($rc, 0, "$d 5fortnights fails");
    like($out, qr/"$d" directive invalid value in .*\/conf\/server\.conf:2$/m, "$d: invalid value, file and line");
}


=== TEST 40: fly_cache_status_header with a name that is not a header name
--- config
location / {
    fly_cache_status_header "X Cache";
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_status_header": invalid header name "X Cache" in .*\/conf\/server\.conf:2$/m


=== TEST 41: fly_cache_status_header names with a colon or an empty name
--- test
for my $h ('"X-Cache:"', '""', '"X-Cache\r\nX-Injected: 1"') {
    my ($rc, $out) = $t->nginx_t({ config => "location / {\n    fly_cache_status_header $h;\n}\n" });
    isnt($rc, 0, "fly_cache_status_header $h fails") or diag($out);
    like($out, qr/"fly_cache_status_header": invalid header name [\s\S]* in .*\/conf\/server\.conf:2$/m, "$h: invalid header name, file and line");
}


=== TEST 42: fly_cache_ignore_set_cookie takes on or off
--- config
location / { fly_cache_ignore_set_cookie always; }
--- must_die
--- error_log
qr/invalid value "always" in "fly_cache_ignore_set_cookie" directive, it must be "on" or "off" in .*\/conf\/server\.conf:1$/m


=== TEST 43: fly_cache_key with a bad variable, and with no argument
--- test
my ($rc, $out) = $t->nginx_t({ config => "location / {\n    fly_cache_key \$no_such_variable_here;\n}\n" });
isnt($rc, 0, 'an unknown variable fails');
like($out, qr/unknown "no_such_variable_here" variable/, 'nginx names the variable');
($rc, $out) = $t->nginx_t({ config => "location / {\n    fly_cache_key;\n}\n" });
isnt($rc, 0, 'no argument fails');
like($out, qr/invalid number of arguments in "fly_cache_key" directive in .*\/conf\/server\.conf:2$/m, 'file and line');


=== TEST 44: fly_cache_bypass and fly_cache_no_store need an argument
--- test
for my $d (qw(fly_cache_bypass fly_cache_no_store)) {
    my ($rc, $out) = $t->nginx_t({ config => "location / {\n    $d;\n}\n" });
    isnt($rc, 0, "$d without values fails");
    like($out, qr/invalid number of arguments in "$d" directive in .*\/conf\/server\.conf:2$/m, "$d: file and line");
}


=== TEST 45: duplicate cache directives in one location
--- test
for my $d ('fly_cache_status_header X-Cache', 'fly_cache_methods GET', 'fly_cache_max_size 1m', 'fly_cache on') {
    my ($name) = $d =~ /^(\S+)/;
    my ($rc, $out) = $t->nginx_t({ http_config => qq{fly_redis "redis://127.0.0.1:6379/0";\n},
                                   config => "location / {\n    $d;\n    $d;\n}\n" });
    isnt($rc, 0, "a duplicate $name fails");
    like($out, qr/"$name" directive is duplicate in .*\/conf\/server\.conf:3$/m, "$name: duplicate, file and line");
}


=== TEST 46: {region} in a quoted URL becomes the region (regional and primary Redis)
--- test
my $http = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@{region}.fly-edge-test.internal:6379/0";
EOF
for my $r (qw(ord atl scl)) {
    my $out = main::nginx_t_ok($t, { http_config => $http, config => $main::LOC }, "{region} in $r", region => $r);
    # no resolver: the host is resolved at load time, and not found here
    like($out, qr/regional Redis host "$r\.fly-edge-test\.internal" not found/, "$r: the regional Redis is in $r");
    like($out, qr/primary Redis host "scl\.fly-edge-test\.internal" not found/, "$r: the primary Redis is in scl");
}


=== TEST 47: {region} with fly_region from a directive, and an explicit fly_redis_primary
--- test
my $out = main::nginx_t_ok($t, {
    http_config => <<'EOF',
fly_region mia;
fly_primary_region ord;
fly_redis "redis://x:${REDIS_PASSWORD}@{region}.fly-edge-test.internal:6379/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PRIMARY_PORT}/0";
EOF
    config => $main::LOC }, 'fly_region + fly_redis_primary');
like($out, qr/regional Redis host "mia\.fly-edge-test\.internal"/, 'the regional Redis is in mia');
unlike($out, qr/primary Redis host/, 'the explicit primary is a literal: nothing to resolve');


=== TEST 48: {region} without a known region fails
--- env
!FLY_REGION
--- http_config
fly_redis "redis://x:pw@{region}.fly-edge-test.internal:6379/0";
--- must_die
--- error_log
qr/"fly_redis" uses \{region\}, but this region is unknown/


=== TEST 49: {region} with the primary region unknown and no fly_redis_primary fails
--- env
!PRIMARY_REGION
--- http_config
fly_redis "redis://x:pw@{region}.fly-edge-test.internal:6379/0";
--- must_die
--- error_log
qr/"fly_redis" uses \{region\}, but the primary region is unknown/


=== TEST 50: {region} with the primary region unknown passes with an explicit fly_redis_primary
--- test
main::nginx_t_ok($t, { http_config => <<'EOF', config => $main::LOC }, 'with fly_redis_primary', env => { PRIMARY_REGION => undef });
fly_redis "redis://x:pw@{region}.fly-edge-test.internal:6379/0";
fly_redis_primary "redis://x:pw@127.0.0.1:6379/0";
EOF


=== TEST 51: IPv6 literals, host names, ports and databases that pass
--- test
for my $url ('redis://x:pw@[::1]:6379/0', 'redis://[::1]', 'redis://[fdaa:0:1:a7b::2]:6379/15',
             'redis://[::ffff:127.0.0.1]:6380/2', 'redis://127.0.0.1', 'redis://127.0.0.1/',
             'redis://localhost:6379/3', 'REDIS://127.0.0.1:1/2147483647', 'redis://127.0.0.1:65535/0') {
    main::nginx_t_ok($t, { http_config => qq{fly_redis "$url";\n}, config => $main::LOC }, $url);
}


=== TEST 52: user and password forms pass (empty user, x, default, an ACL user, escapes, a password with @ / :)
--- test
for my $url ('redis://:pw@127.0.0.1:6379/0', 'redis://x:pw@127.0.0.1:6379/0',
             'redis://default:pw@127.0.0.1:6379/0', 'redis://cache-user:pw@127.0.0.1:6379/0',
             'redis://cache-user:p%40ss%3Aw%2Fd@127.0.0.1:6379/0', 'redis://x:p@ss:w/d@127.0.0.1:6379/0',
             'redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0', 'redis://onlyuser@127.0.0.1:6379') {
    main::nginx_t_ok($t, { http_config => qq{fly_redis "$url";\n}, config => $main::LOC }, $url);
}


=== TEST 53: a bad percent-escape in the password fails without showing it
--- http_config
fly_redis "redis://x:Sup3r%zzS3cret@127.0.0.1:6379/0";
--- must_die
--- error_log
qr/bad percent-escape in the password of the redis URL/
qr{/conf/http\.conf:1$}m
--- no_error_log
Sup3r


=== TEST 54: every cache directive at every level passes and inherits
--- test
main::nginx_t_ok($t, {
    http_config => <<'EOF',
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PRIMARY_PORT}/0";
fly_redis_connect_timeout 250ms;
fly_redis_timeout 1s;
fly_cache_valid 200 301 10s;
fly_cache_valid 404 1s;
fly_cache_valid any 2s;
fly_cache_max_size 512k;
fly_cache_min_ttl 1s;
fly_cache_max_ttl 1h;
fly_cache_status_header X-Cache;
EOF
    config => <<'EOF' }, 'all the directives');
fly_cache on;
fly_cache_key $scheme$host$request_uri;
fly_cache_methods GET HEAD;
fly_cache_bypass $cookie_session $arg_nocache;
fly_cache_no_store $http_authorization;
fly_cache_ignore_set_cookie off;
location / {
    proxy_pass http://app;
}
location /static {
    fly_cache_key "$host$uri";
    fly_cache_methods GET;
    fly_cache_valid 1d;
    fly_cache_max_size 10m;
    fly_cache_min_ttl 0;
    fly_cache_max_ttl 1d;
    fly_cache_ignore_set_cookie on;
    fly_cache_status_header off;
    proxy_pass http://app;
}
location /nocache {
    fly_cache off;
    proxy_pass http://app;
}
EOF
