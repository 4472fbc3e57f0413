# The regional cache: MISS goes to the app and fills the region's Redis,
# the next request is a HIT answered from Redis with the same status,
# headers and body bytes, without reaching the app.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);

# The region's Redis; its timeouts only guard against a hang here (none of
# these tests is about a slow Redis), so they are generous and scaled: a
# busy machine never turns a healthy lookup into an ERROR.
our $HTTP = sprintf(<<'EOF', (scaled(2) * 1000) x 2);
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    add_header X-Status-Var "[$fly_cache_status]" always;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

# MISS then HIT for one URL, in one region, straight to its nginx;
# returns the two responses.
sub miss_then_hit {
    my ($path, %o) = @_;
    my $r = $o{region} // 'scl';
    my $m = send_request(path => $path, region => $r, direct => 1, headers => $o{headers});
    my $h = send_request(path => $path, region => $r, direct => 1, headers => $o{headers});
    is($m->{headers}{'x-cache'}, 'MISS', "$path: first request is a MISS");
    is($h->{headers}{'x-cache'}, 'HIT', "$path: second request is a HIT");
    is($h->{status}, $m->{status}, "$path: same status");
    is($h->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$path: the HIT did not reach the app");
    ok($m->{content} eq $h->{content}, "$path: byte-identical body (" . length($h->{content}) . " bytes)");
    return ($m, $h);
}

run_tests();

__DATA__

=== TEST 1: text, binary, gzip and chunked bodies come back byte-identical, headers preserved
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $cc = 'Cache-Control=public%2C%20max-age%3D60';
for my $p ("/big?size=3000&t=1&$cc", "/bin?size=5000&t=1&$cc", "/gzip?size=20000&t=1&$cc",
           "/chunked?size=40000&chunk=1000&t=1&$cc", "/bin?size=1&t=1&$cc", "/bin?size=0&t=1&$cc") {
    my ($m, $h) = main::miss_then_hit($p);
    is(sha256_hex($h->{content}), $m->{headers}{'x-body-sha256'}, "$p: the body the app sent");
    for my $name (qw(content-type cache-control content-encoding x-body-sha256)) {
        is($h->{headers}{$name}, $m->{headers}{$name}, "$p: $name preserved");
    }
    is($h->{headers}{'content-length'}, length $m->{content}, "$p: Content-Length on the HIT");
    like($h->{headers}{age} // '', qr/^\d+$/, "$p: the HIT carries Age");
    ok(!defined $m->{headers}{age}, "$p: the MISS has no Age of ours");
    is($m->{headers}{'x-status-var'}, '[MISS]', '$fly_cache_status on the MISS');
    is($h->{headers}{'x-status-var'}, '[HIT]', '$fly_cache_status on the HIT');
}
my $gz = send_request(path => "/gzip?size=20000&t=1&$cc", region => 'scl', direct => 1);
is($gz->{headers}{'content-encoding'}, 'gzip', 'a gzip body stays gzip-encoded');


=== TEST 2: a HEAD is answered from the GET entry, without a body
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/big?size=1234&t=2&Cache-Control=max-age%3D60';
my ($m, $h) = main::miss_then_hit($p);
my $head = send_request(method => 'HEAD', path => $p, region => 'scl', direct => 1);
is($head->{status}, 200, 'HEAD 200');
is($head->{headers}{'x-cache'}, 'HIT', 'HEAD is a HIT');
is($head->{headers}{'content-length'}, 1234, 'with the GET Content-Length');
is($head->{content}, '', 'and no body');
is($head->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'the app was not reached');


=== TEST 3: Age grows and the entry expires with its freshness
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
# max-age 3 s (more on a slow machine: the polls below must fit in a second)
my $life = 2 + int(scaled(1) + 0.999);
my $p = "/big?size=100&t=3&Cache-Control=max-age%3D$life";
main::miss_then_hit($p);
my @seen;
my $get = sub {
    my $r = send_request(path => $p, region => 'scl', direct => 1);
    push @seen, ($r->{headers}{'x-cache'} // '-') . ' Age ' . ($r->{headers}{age} // '-');
    return $r;
};
# HITs while fresh, until Age reaches max-age - 1 (the last fresh second)
my $later = $t->wait_until(sub {
    my $r = $get->();
    return { fail => $r } if ($r->{headers}{'x-cache'} // '') ne 'HIT';
    return ($r->{headers}{age} // 0) >= $life - 1 ? $r : undef;
}, scaled(5) + $life);
ok($later && !$later->{fail}, "still fresh (HIT) with Age " . ($life - 1) . " of max-age $life") or diag("seen: @seen");
# then, once the lifetime is over, gone
my $gone = $t->wait_until(sub { my $r = $get->(); ($r->{headers}{'x-cache'} // '') ne 'HIT' ? $r : undef },
                          scaled(5) + $life);
like($gone ? $gone->{headers}{'x-cache'} // '' : 'still a HIT', qr/^(MISS|EXPIRED)$/, 'gone after max-age')
    or diag("seen: @seen");
my $again = send_request(path => $p, region => 'scl', direct => 1);
is($again->{headers}{'x-cache'}, 'HIT', 'and filled again');


=== TEST 4: the default key includes the host: two hosts, two entries
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&Cache-Control=max-age%3D60&echo=Host';
main::miss_then_hit($p, headers => { Host => 'a.example' });
my ($m, $h) = main::miss_then_hit($p, headers => { Host => 'b.example' });
like($h->{content}, qr/b\.example/, 'b.example got its own answer');
my @keys = sort grep { /t=4/ } @{[ $t->redis_cli('scl', 'KEYS', 'fly:*') ]};
is(scalar(@keys), 2, "two keys") or diag(join " ", @keys);
like($keys[0], qr{^fly:httpa\.example/hdr\?t=4}, 'key has scheme, host and URI');


=== TEST 5: fly_cache_key with variables
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_key "$uri|$arg_v";
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my $a = send_request(path => '/big?size=10&v=1&junk=1&Cache-Control=max-age%3D60', region => 'scl', direct => 1);
my $b = send_request(path => '/big?size=10&v=1&junk=2&Cache-Control=max-age%3D60', region => 'scl', direct => 1);
is($a->{headers}{'x-cache'}, 'MISS', 'first is a MISS');
is($b->{headers}{'x-cache'}, 'HIT', 'another query with the same key parts is a HIT');
is(($t->redis_cli('scl', 'EXISTS', 'fly:/big|1'))[0], 1, 'the configured key is the Redis key');


=== TEST 6: a large response that spills to a temporary file, and an unbuffered one, are stored whole
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_max_size 4m;
    fly_cache_status_header X-Cache;
    proxy_buffers 4 4k;
    proxy_max_temp_file_size 10m;
    proxy_pass http://app;
}
location /unbuffered/ {
    fly_cache on;
    fly_cache_max_size 4m;
    fly_cache_status_header X-Cache;
    proxy_buffering off;
    proxy_pass http://app/;
}
--- test
for my $p ('/big?size=300000&t=6&Cache-Control=max-age%3D60', '/bin?size=2000000&t=6&Cache-Control=max-age%3D60',
           '/unbuffered/bin?size=500000&t=6&Cache-Control=max-age%3D60') {
    my ($m, $h) = main::miss_then_hit($p);
    is(sha256_hex($h->{content}), $m->{headers}{'x-body-sha256'}, "$p: whole body");
}


=== TEST 7: access checks still guard cached pages (the lookup runs after the access phase)
--- http_config eval: $main::HTTP
--- config
location /open/ {
    fly_cache on;
    fly_cache_key "shared$arg_k";
    fly_cache_status_header X-Cache;
    proxy_pass http://app/;
}
location /guarded/ {
    fly_cache on;
    fly_cache_key "shared$arg_k";
    fly_cache_status_header X-Cache;
    deny all;
    proxy_pass http://app/;
}
--- request eval
[ "GET /open/big?size=10&k=7&Cache-Control=max-age%3D60", "GET /open/big?size=10&k=7&Cache-Control=max-age%3D60",
  "GET /guarded/big?size=10&k=7&Cache-Control=max-age%3D60" ]
--- direct
--- error_code eval
[ 200, 200, 403 ]
--- response_headers eval
[ 'X-Cache: MISS', 'X-Cache: HIT', '!X-Cache' ]


=== TEST 8: writes and other methods are never answered from the cache; POST goes to the app
--- http_config eval: $main::HTTP . "fly_cache_fence 0;\n"
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=8&Cache-Control=max-age%3D60&body=cached';
main::miss_then_hit($p);
my $post = send_request(method => 'POST', path => $p, region => 'scl', direct => 1, body => 'x');
is($post->{status}, 200, 'POST answered');
ok(!defined $post->{headers}{'x-cache'}, 'POST does not use the cache');
cmp_ok($post->{headers}{'x-origin-count'}, '>', 0, 'POST reached the app');
my $after = send_request(path => $p, region => 'scl', direct => 1);
is($after->{headers}{'x-cache'}, 'MISS', 'the successful POST invalidated the GET entry (t/206)');
my $opt = send_request(method => 'OPTIONS', path => $p, region => 'scl', direct => 1);
ok(!defined $opt->{headers}{'x-cache'}, 'OPTIONS does not use the cache');
is(send_request(path => $p, region => 'scl', direct => 1)->{headers}{'x-cache'}, 'HIT', 'and OPTIONS invalidates nothing');


=== TEST 9: a fill in atl stays in atl; a fill in scl reaches every region
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/big?size=50&t=9&Cache-Control=max-age%3D60';
main::miss_then_hit($p, region => 'atl');
my $key = (grep { /t=9/ } $t->redis_cli('atl', 'KEYS', 'fly:*'))[0];
ok($key, "atl's Redis has the entry: $key");
# a marker written on the primary afterwards: once a replica has it, it is caught up
my $marker = "marker-t9-" . time;
$t->redis('scl')->set($marker, 1);
for my $r (qw(ord atl)) {
    ok($t->wait_until(sub { $t->redis($r)->get($marker) }, scaled(5)), "$r caught up with the primary");
}
is(($t->redis_cli($_, 'EXISTS', $key))[0], 0, "not on $_") for qw(scl ord);
my $q = '/big?size=60&t=9b&Cache-Control=max-age%3D60';
main::miss_then_hit($q, region => 'scl');
my $k2 = (grep { /t=9b/ } $t->redis_cli('scl', 'KEYS', 'fly:*'))[0];
for my $r (qw(ord atl)) {
    ok($t->wait_until(sub { ($t->redis_cli($r, 'EXISTS', $k2))[0] }, scaled(5)), "the scl fill replicated to $r");
}
my $ord = send_request(path => $q, region => 'ord', direct => 1);
is($ord->{headers}{'x-cache'}, 'HIT', 'and ord answers it as a HIT without its app');
is($ord->{headers}{'x-app-region'}, 'scl', 'the stored response came from scl');


=== TEST 10: many concurrent HITs on keepalive connections, both workers, all correct
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @paths = map { "/bin?size=" . (1000 * $_) . "&t=10&Cache-Control=max-age%3D60" } 1 .. 8;
my %want;
for my $p (@paths) { my ($m) = main::miss_then_hit($p); $want{$p} = sha256_hex($m->{content}) }
my @kids;
for my $k (1 .. 8) {
    my $pid = fork // die;
    if (!$pid) {
        my $bad = 0;
        my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => scaled(10));
        for my $i (1 .. 50) {
            my $p = $paths[($i + $k) % @paths];
            my $res = $ua->get($t->nginx_url('scl') . $p);
            $bad++ unless $res->{status} == 200 && ($res->{headers}{'x-cache'} // '') eq 'HIT'
                && sha256_hex($res->{content}) eq $want{$p};
        }
        POSIX::_exit($bad ? 1 : 0);
    }
    push @kids, $pid;
}
my $failed = 0;
for (@kids) { waitpid($_, 0); $failed++ if $? }
is($failed, 0, '400 concurrent HITs, all with the right bodies');
