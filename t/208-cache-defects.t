# Defects found in the landed cache and replay code (issue 7), each shown
# against real nginx, Redis and the demo app: a HIT goes through gzip, ssi,
# sub_filter and charset like its MISS; a response produced after an
# internal redirect is not stored under the key of the location that looked
# up; a conditional request cannot store its 412 as the entry; the sticky
# cookie holds at least the configured time; a response spilled to a proxy
# temporary file is read back by nginx's copy filter (aio), not by a
# blocking read of ours.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use HTTP::Tiny;
use Time::HiRes qw(time);

our $HTTP = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
EOF

sub qs { HTTP::Tiny->new->www_form_urlencode([@_]) }

# The requests go on one keep-alive connection, so one worker answers them
# and a MISS's fill (written as the response ends) reaches Redis before the
# next lookup: on connections of their own the other worker's GET could
# come first.  nginx closes the connection after a 412 its not_modified
# filter makes (for static files too); HTTP::Tiny then opens a new one.
our $UA = FlyEdge::Test::UA->new(keep_alive => 1, max_redirect => 0, timeout => 60);
sub get {
    my ($path, %h) = @_;
    return send_request(path => $path, region => 'scl', direct => 1, headers => \%h, ua => $UA);
}

sub gunzipped {
    my ($bytes) = @_;
    my $out;
    gunzip(\$bytes => \$out) or return "gunzip failed: $GunzipError";
    return $out;
}

run_tests(pg => 0);

__DATA__

=== TEST 1: gzip, ssi and sub_filter (all on) transform a HIT as they transform its MISS
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    gzip on;
    gzip_min_length 1;
    gzip_types text/html;
    ssi on;
    sub_filter 'SUBME' 'sub-ok';
    proxy_pass http://app;
}
--- test
my $html = '<p>status <!--# echo var="fly_cache_status" --> SUBME</p>' . ("<p>filler line</p>\n" x 50);
for my $gzip (0, 1) {
    my $p = '/hdr?' . main::qs('t' => "1-$gzip", 'Content-Type' => 'text/html; charset=utf-8',
                              'Cache-Control' => 'max-age=60', body => $html);
    my %h = $gzip ? ('Accept-Encoding' => 'gzip') : ();
    my $how = $gzip ? 'with Accept-Encoding: gzip' : 'without Accept-Encoding';
    my $m = main::get($p, %h);
    my $h = main::get($p, %h);
    is($m->{headers}{'x-cache'}, 'MISS', "$how: first is a MISS");
    is($h->{headers}{'x-cache'}, 'HIT', "$how: second is a HIT");
    is($h->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$how: the HIT did not reach the app");
    is($h->{headers}{'content-type'}, $m->{headers}{'content-type'}, "$how: same Content-Type");
    is($m->{headers}{'content-type'}, 'text/html; charset=utf-8', "$how: the app's Content-Type");
    for my $res ($m, $h) {
        my $what = "$how, $res->{headers}{'x-cache'}";
        if ($gzip) {
            is($res->{headers}{'content-encoding'}, 'gzip', "$what: gzip-compressed");
        } else {
            ok(!defined $res->{headers}{'content-encoding'}, "$what: not compressed");
        }
        my $body = $gzip ? main::gunzipped($res->{content}) : $res->{content};
        my $status = $res->{headers}{'x-cache'};
        like($body, qr{^<p>status \Q$status\E sub-ok</p>}, "$what: ssi evaluated and sub_filter applied");
        unlike($body, qr/<!--#|SUBME/, "$what: no raw ssi command or unreplaced text left");
    }
}


=== TEST 2: charset recodes a HIT as it recodes its MISS
--- http_config eval: $main::HTTP . "charset_map koi8-r utf-8 { C1 D0B0; }\n"
--- config
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    charset koi8-r;
    override_charset on;
    proxy_pass http://app;
}
--- test
my $p = '/hdr?' . main::qs(t => 2, 'Content-Type' => 'text/html; charset=utf-8', 'Cache-Control' => 'max-age=60',
                          body => "x\x{430}y");
my $m = main::get($p);
my $h = main::get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'first is a MISS');
is($h->{headers}{'x-cache'}, 'HIT', 'second is a HIT');
for my $res ($m, $h) {
    my $what = $res->{headers}{'x-cache'};
    is($res->{headers}{'content-type'}, 'text/html; charset=koi8-r', "$what: the charset is the destination one");
    is($res->{content}, "x\xC1y", "$what: the body is recoded from utf-8 to koi8-r");
}


=== TEST 3: error_page: the maintenance page of a location with fly_cache off is not stored under the failing URI's key
--- http_config eval: $main::HTTP
--- config
fly_cache_valid 200 60s;
fly_cache_status_header X-Cache;
location /err/ {
    fly_cache on;
    fly_cache_key $scheme$host$uri;
    proxy_intercept_errors on;
    error_page 502 =200 /maint.html;
    proxy_pass http://app/;
}
location = /maint.html {
    fly_cache off;
    return 200 "maintenance page\n";
}
--- test
my $down = main::get('/err/hdr?status=502&body=real');
is($down->{status}, 200, 'the origin fails: the error page answers ...');
is($down->{content}, "maintenance page\n", '... with the maintenance page');
is($down->{headers}{'x-cache'}, 'MISS', '$fly_cache_status survives the redirect');
my $up = main::get('/err/hdr?status=200&body=real');
is($up->{headers}{'x-cache'}, 'MISS', 'the origin is back: the next request is a MISS, not the stored maintenance page');
is($up->{content}, 'real', 'the origin answers');
my $again = main::get('/err/hdr?status=200&body=real');
is($again->{headers}{'x-cache'}, 'HIT', 'the real page is stored ...');
is($again->{content}, 'real', '... and served');
--- error_log
fly cache: not storing: internal redirect since the lookup


=== TEST 4: try_files to a named location with fly_cache off: its response is not stored
--- http_config eval: $main::HTTP
--- config
fly_cache_status_header X-Cache;
location /tf/ {
    fly_cache on;
    root %%HTML_DIR%%;
    try_files $uri @app;
}
location @app {
    fly_cache off;
    rewrite ^/tf(/.*)$ $1 break;
    proxy_pass http://app;
}
--- test
my $p = '/tf/hdr?t=4&Cache-Control=max-age%3D60&body=personal';
my $a = main::get($p);
my $b = main::get($p);
is($a->{content}, 'personal', 'the app answers through @app');
is($a->{headers}{'x-cache'}, 'MISS', 'a MISS');
is($b->{headers}{'x-cache'}, 'MISS', 'the next request is a MISS again ...');
cmp_ok($b->{headers}{'x-origin-count'}, '>', $a->{headers}{'x-origin-count'}, '... answered by the app');
--- error_log
fly cache: not storing: internal redirect since the lookup


=== TEST 5: X-Accel-Redirect: the file the app points at is not stored under the app's URI (the app decides per request)
--- http_config eval: $main::HTTP
--- config
fly_cache_valid 200 60s;
fly_cache_status_header X-Cache;
location /xa/ {
    fly_cache on;
    proxy_pass http://app/;
}
location /files/ {
    internal;
    add_header X-Origin-Count $upstream_http_x_origin_count;
    return 200 "protected file $uri\n";
}
--- test
my $p = '/xa/hdr?t=5&Cache-Control=max-age%3D60&X-Accel-Redirect=%2Ffiles%2Fa.txt';
my $a = main::get($p);
my $b = main::get($p);
is($a->{content}, "protected file /files/a.txt\n", 'the app sends the file through X-Accel-Redirect');
is($b->{content}, "protected file /files/a.txt\n", 'again');
is($b->{headers}{'x-cache'}, 'MISS', 'the second request is a MISS ...');
cmp_ok($b->{headers}{'x-origin-count'} // 0, '>', $a->{headers}{'x-origin-count'} // 0, '... the app decided it too');
--- error_log
fly cache: not storing: internal redirect since the lookup


=== TEST 6: conditional requests: an origin's 412 is not stored, the next client gets the real page
--- http_config eval: $main::HTTP
--- config
location /origin/ {
    add_header Cache-Control "max-age=60" always;
    add_header ETag '"v1"';
    return 200 "the real page\n";
}
location /cond/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_pass http://127.0.0.1:%%NGINX_PORT%%/origin/;
}
--- test
for my $c (['If-Match' => '"nope"'], ['If-Unmodified-Since' => 'Thu, 01 Jan 1970 00:00:01 GMT']) {
    my ($name, $value) = @$c;
    my $p = "/cond/$name";
    my $cond = main::get($p, $name => $value);
    is($cond->{status}, 412, "$name: the origin answers 412");
    is($cond->{headers}{'cache-control'}, 'max-age=60', "$name: ... and calls it cacheable");
    my $plain = main::get($p);
    is($plain->{status}, 200, "$name: the next plain request gets 200 ...");
    is($plain->{content}, "the real page\n", "$name: ... the real page");
    is($plain->{headers}{'x-cache'}, 'MISS', "$name: ... from the origin");
    is(main::get($p)->{headers}{'x-cache'}, 'HIT', "$name: which is stored");
}
# a 200 that answers a conditional request fully is the page everyone gets
my $inm = main::get('/cond/inm', 'If-None-Match' => '"other"');
is($inm->{status}, 200, 'If-None-Match that does not match: the origin sends the page');
my $next = main::get('/cond/inm');
is($next->{headers}{'x-cache'}, 'HIT', 'that 200 was stored');
is($next->{content}, "the real page\n", 'the page');
# on a HIT nginx answers the preconditions from the entry, which stays
my $hit412 = main::get('/cond/inm', 'If-Match' => '"nope"');
is($hit412->{status}, 412, 'If-Match on a HIT: 412 from the entry');
my $hit304 = main::get('/cond/inm', 'If-None-Match' => '"v1"');
is($hit304->{status}, 304, 'If-None-Match with its ETag on a HIT: 304');
my $after = main::get('/cond/inm');
is($after->{status}, 200, 'the entry is untouched by them');
is($after->{headers}{'x-cache'}, 'HIT', 'still a HIT');


=== TEST 7: fly_replay_sticky 5s: the cookie holds at least 5 s after the write was answered, and a replica honours it
--- http_config
fly_replay on;
fly_replay_sticky 5s;
--- test
# A write answered early in a second shows a cookie that ends with whole
# seconds truncated (up to 1 s early); each write starts at another point
# of its second.
for my $frac (0.1, 0.4, 0.7) {
    $t->wait_until(sub { my $f = time - int(time); $f >= $frac && $f < $frac + 0.2 }, 2);
    my $t0 = time;
    my $w = send_request(method => 'POST', path => '/echo', region => 'scl', direct => 1, body => 'x');
    is($w->{status}, 200, "write at .$frac s: answered");
    my ($until, $max_age) = ($w->{headers}{'set-cookie'} // '') =~ /^fly-replay-until=(\d+); Max-Age=(\d+);/;
    ok(defined $until, "write at .$frac s: the sticky cookie is set") or diag($w->{headers}{'set-cookie'});
    cmp_ok($until // 0, '>=', $t0 + 5, "write at .$frac s: the cookie's time is at least 5 s after the write was sent");
    cmp_ok($until // 0, '<', time + 6, "write at .$frac s: and less than 6 s after it was answered");
    is($max_age, 5, "write at .$frac s: Max-Age is the configured time");
}
my $c = 'fly-replay-until=' . (int(time) + 3);
my $r = send_request(path => '/echo', region => 'atl', direct => 1, headers => { Cookie => $c });
is($r->{headers}{'fly-replay'}, 'region=scl;state=sticky', 'a replica replays a read carrying a live cookie');
$r = send_request(path => '/echo', region => 'atl', direct => 1, headers => { Cookie => 'fly-replay-until=' . (int(time) - 2) });
ok(!defined $r->{headers}{'fly-replay'}, 'and not one whose time has passed');


=== TEST 8: a response spilled to a temporary file is read back by the copy filter (aio threads), not by a blocking read
--- http_config eval: $main::HTTP . "map \$fly_cache_status \$spill_rate { HIT 0; default 64k; }\n"
--- config
location /spill/ {
    fly_cache on;
    fly_cache_max_size 4m;
    fly_cache_status_header X-Cache;
    sendfile on;
    aio threads;
    proxy_buffers 4 4k;
    proxy_max_temp_file_size 10m;
    # a slow client: the response outruns it and spills to a temporary file
    limit_rate $spill_rate;
    proxy_pass http://app/;
}
--- test
my $p = '/spill/bin?size=200000&t=8&Cache-Control=max-age%3D60';
my $m = main::get($p);
is($m->{status}, 200, 'the MISS is answered');
is(sha256_hex($m->{content}), $m->{headers}{'x-body-sha256'}, 'with the whole body');
my $h = main::get($p);
is($h->{headers}{'x-cache'}, 'HIT', 'the entry was stored');
is(sha256_hex($h->{content}), $m->{headers}{'x-body-sha256'}, 'whole');
--- error_log
qr{hashed path: \S+/tmp/proxy/}
qr/\*\d+ thread read: \d+, /
--- no_error_log
qr/\*\d+ read: \d+, /
