# Security: what a client can send cannot poison the cache for another
# client, forge its way past the replay, or make a worker crash or
# allocate without bound.  README, "Security model".
#
#  - cache poisoning: request headers through which apps rebuild the URL
#    (X-Forwarded-Host and the like) are not in the key, so an answer made
#    with one is not stored, unless the app says Vary on it; what Fly's
#    proxy sets (X-Forwarded-Proto, -Port) the client cannot;
#  - the key's host: case, a trailing dot, the port and an absolute-form
#    request line with another Host all make the same entry ($host);
#  - never stored, never served to another client: a response with
#    Set-Cookie or `private` in any spelling, one to a request with
#    Authorization (unless the response says it is shareable);
#  - a client's fly-replay-src / fly-replay-failed cannot make a replica
#    region accept a write (it gets the documented 503), and changes nothing
#    for reads or in the primary;
#  - over-long Cookie, Vary, keys and fly-replay-src values are bounded.
#
# The fill sets ResponseFacts::request_forwarded from
# core::unkeyed_forwarding() of each request header (TEST 1), request_body
# (a GET with a body, TEST 15) and has_fly_replay (the app's fly-replay
# answer, TEST 16), and logs a Vary whose variant key cannot be built
# (TESTS 11, 12); the lookup logs at info a stored Vary marker whose
# variant key it cannot build for this request (TEST 11).
#
# "Not stored" is seen, not waited for: the next request on the same
# keep-alive connection reaches the same worker, whose Redis connection
# answers in order, so it is a HIT exactly when the first was stored.
use FlyEdge::Test;

# Redis timeouts only guard against a hang here: generous and scaled.
our $HTTP = sprintf(<<'EOF', (scaled(2) * 1000) x 2);
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PRIMARY_PORT}/0";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
large_client_header_buffers 4 80k;
proxy_buffer_size 64k;
proxy_buffers 4 64k;
proxy_busy_buffers_size 64k;
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

our $N = 0;    # makes every URI of the file its own

# GET straight to a region's nginx on the block's keep-alive connection.
sub get {
    my ($path, %h) = @_;
    my $r = delete $h{region} // 'scl';
    return send_request(path => $path, region => $r, direct => 1, headers => \%h);
}

# The app's request counter, read from the app itself.
sub app_count {
    my ($r) = @_;
    my $res = HTTP::Tiny->new(timeout => scaled(10))->get(topology()->app_url($r) . '/__count');
    return json_decode($res->{content})->{count};
}

sub show {
    my ($res) = @_;
    diag("-> $res->{status} X-Cache " . ($res->{headers}{'x-cache'} // '-') . ' X-Origin-Count '
         . ($res->{headers}{'x-origin-count'} // '-') . ' body: ' . substr($res->{content} // '', 0, 200));
}

# The answer came from the app (not from the cache): X-Cache is not HIT.
sub from_app {
    my ($res, $label) = @_;
    my $ok = is($res->{status}, 200, "$label: 200") && isnt($res->{headers}{'x-cache'} // '', 'HIT', "$label: not a HIT");
    show($res) unless $ok;
    return $ok;
}

our $TODO;

# Waits for a line of the block's error log of region $r.
sub logged {
    my ($r, $re) = @_;
    return topology()->wait_until(sub { block_error_log($r) =~ $re }, scaled(3));
}

run_tests(pg => 0);

__DATA__

=== TEST 1: an answer made with X-Forwarded-Host (or another header that rewrites the URL or method) is not stored for everyone
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my %evil = ('X-Original-URL' => '/admin', 'X-Original-URI' => '/admin', 'X-Rewrite-URL' => '/admin',
            'X-Forwarded-Prefix' => '/evil', 'X-Forwarded-Uri' => '/admin', Forwarded => 'host=evil.example',
            'X-Forwarded-Scheme' => 'evil', 'X-Forwarded-SSL' => 'evil', 'Front-End-Https' => 'evil',
            'X-HTTP-Method-Override' => 'EVILDELETE', 'X-HTTP-Method' => 'EVILDELETE', 'X-Method-Override' => 'EVILDELETE');
for my $name (qw(X-Forwarded-Host X-Forwarded-Server X-Host X-Original-Host X-HTTP-Host-Override
                 Forwarded X-Original-URL X-Original-URI X-Rewrite-URL X-Forwarded-Prefix X-Forwarded-Uri
                 X-Forwarded-Scheme X-Forwarded-SSL Front-End-Https
                 X-HTTP-Method-Override X-HTTP-Method X-Method-Override)) {
    my $p = "/hdr?echo=$name&Cache-Control=max-age%3D60&n=" . ++$main::N;
    my $evil = $evil{$name} // 'evil.example';
    my $a = main::get($p, $name => $evil);
    like($a->{content}, qr/\Q$name: $evil\E/, "$name: the app reflects it");
    # another client, without the header
    my $b = main::get($p);
    main::from_app($b, "$name: the next client");
    unlike($b->{content}, qr/\Q$evil\E/, "$name: never gets the first client's answer");
    my $c = main::get($p);
    is($c->{headers}{'x-cache'}, 'HIT', "$name: its own answer is stored");
    unlike($c->{content}, qr/\Q$evil\E/, "$name: and is clean");
    # the header in any case is the same header
    my $p2 = "/hdr?echo=$name&Cache-Control=max-age%3D60&n=" . ++$main::N;
    main::get($p2, lc($name) => $evil);
    main::from_app(main::get($p2), "$name in lower case: the next client");
}
ok(main::logged('scl', qr/not storing: forwarded-header/), 'the reason in the debug log');


=== TEST 2: with Vary on it the header is keyed, and the answer stored per value
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = "/hdr?echo=X-Forwarded-Host&Vary=X-Forwarded-Host&Cache-Control=max-age%3D60&n=" . ++$main::N;
my $a = main::get($p, 'X-Forwarded-Host' => 'a.example');
is($a->{headers}{'x-cache'}, 'MISS', 'first with a.example: MISS');
my $a2 = main::get($p, 'X-Forwarded-Host' => 'a.example');
is($a2->{headers}{'x-cache'}, 'HIT', 'again with a.example: HIT');
like($a2->{content}, qr/a\.example/, 'its own variant');
my $none = main::get($p);
main::from_app($none, 'without the header');
unlike($none->{content}, qr/a\.example/, 'another variant');
my $b = main::get($p, 'X-Forwarded-Host' => 'b.example');
main::from_app($b, 'with b.example');
like($b->{content}, qr/b\.example/, 'its own answer');


=== TEST 3: X-Forwarded-Proto and X-Forwarded-Port are Fly's: a client's own never reach the app
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = "/hdr?echo=X-Forwarded-Proto&echo=X-Forwarded-Port&Cache-Control=max-age%3D60&n=" . ++$main::N;
my $a = send_request(path => $p, region => 'scl', headers => { 'X-Forwarded-Proto' => 'https', 'X-Forwarded-Port' => '666' });
is($a->{status}, 200, 'through the emulator (Fly\'s proxy)');
like($a->{content}, qr/X-Forwarded-Proto: http\n/, 'the proxy\'s X-Forwarded-Proto, not the client\'s');
unlike($a->{content}, qr/666/, 'the proxy\'s X-Forwarded-Port, not the client\'s');


=== TEST 4: Host: case, a trailing dot, a port and an absolute-form request line make one entry
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
use IO::Socket::INET;
my $p = "/hdr?echo=Host&Cache-Control=max-age%3D60&n=" . ++$main::N;
my $first = main::get($p, Host => 'Sec.Example');
is($first->{headers}{'x-cache'}, 'MISS', 'Sec.Example: MISS');
is($first->{content}, "Host: sec.example\n", 'the app sees the host as the key has it ($host)');
for my $h ('sec.example', 'SEC.EXAMPLE', 'sec.example.', 'sec.example:8080', 'Sec.Example.:1') {
    my $r = main::get($p, Host => $h);
    is($r->{headers}{'x-cache'}, 'HIT', "Host: $h is the same entry");
    is($r->{content}, $first->{content}, "Host: $h gets the same answer");
}
# RFC 9112 3.2.2: an absolute-form request line wins over Host
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('scl'), Timeout => scaled(5))
    or die "connect: $!";
print $s "GET http://sec.example$p HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
local $/;
my $raw = <$s> // '';
like($raw, qr/^X-Cache: HIT\r$/m, 'absolute-form with another Host: the entry of the request line\'s host');
like($raw, qr/\r\n\r\nHost: sec\.example\n\z/, 'with its answer') or diag($raw);
my $other = main::get($p, Host => 'other.example');
is($other->{headers}{'x-cache'}, 'MISS', 'another host is another entry');
is($other->{content}, "Host: other.example\n", 'with its own answer');
ok(scalar($t->redis_cli('scl', 'EXISTS', "fly:httpsec.example$p")), 'the key: scheme, lower-case host without dot or port, URI');


=== TEST 5: a response with Set-Cookie is not stored; with fly_cache_ignore_set_cookie it is, without the cookie
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $c ('Set-Cookie=sid%3Dalice', 'set-cookie=sid%3Dalice', 'Set-Cookie=a%3D1&Set-Cookie=sid%3Dalice') {
    my $p = "/hdr?$c&body=alice&Cache-Control=public%2C%20max-age%3D60&n=" . ++$main::N;
    my $a = main::get($p);
    my $sc = $a->{headers}{'set-cookie'} // '';
    like(ref $sc ? "@$sc" : $sc, qr/sid=alice/, "$c: the first client gets its cookie");
    main::from_app(main::get($p), "$c: the next client");
}


=== TEST 6: with fly_cache_ignore_set_cookie it is stored, without the cookie
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_ignore_set_cookie on;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my $p = "/hdr?Set-Cookie=sid%3Dalice&body=page&Cache-Control=max-age%3D60&n=" . ++$main::N;
like(main::get($p)->{headers}{'set-cookie'} // '', qr/sid=alice/, 'the first client gets its cookie');
my $h = main::get($p);
is($h->{headers}{'x-cache'}, 'HIT', 'stored');
ok(!defined $h->{headers}{'set-cookie'}, 'and the HIT carries no Set-Cookie');


=== TEST 7: private in any spelling is never stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $cc ('Cache-Control=private%2C%20max-age%3D60', 'Cache-Control=PRIVATE%2C%20MAX-AGE%3D60',
            'Cache-Control=private%3D%22X-User%22%2C%20max-age%3D60', 'Cache-Control=max-age%3D60&Cache-Control=private',
            'Cache-Control=public%2C%20s-maxage%3D60%2C%20private', 'Cache-Control=max-age%3D60%2C%20Private') {
    my $p = "/hdr?$cc&body=mine&n=" . ++$main::N;
    main::get($p, Cookie => 'sid=alice');
    main::from_app(main::get($p), "$cc: the next client");
}


=== TEST 8: a response to a request with Authorization is not stored unless it says it is shareable
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $name ('Authorization', 'authorization') {
    my $p = "/hdr?echo=Authorization&Cache-Control=max-age%3D60&n=" . ++$main::N;
    my $a = main::get($p, $name => 'Basic YWxpY2U6c2VjcmV0');
    like($a->{content}, qr/YWxpY2U6c2VjcmV0/, "$name: the app answers alice");
    my $b = main::get($p);
    main::from_app($b, "$name: the next client");
    unlike($b->{content}, qr/YWxp/, "$name: never gets alice's answer");
}
# RFC 9111 3.5: public, s-maxage and must-revalidate make it shareable
for my $cc ('public%2C%20max-age%3D60', 's-maxage%3D60', 'max-age%3D60%2C%20must-revalidate') {
    my $p = "/hdr?body=shared&Cache-Control=$cc&n=" . ++$main::N;
    main::get($p, Authorization => 'Basic YWxpY2U6c2VjcmV0');
    is(main::get($p)->{headers}{'x-cache'}, 'HIT', "$cc: stored, as the response says it may be");
}


=== TEST 9: a client's fly-replay-src or fly-replay-failed cannot make a replica region take a write
--- http_config eval: $main::HTTP
--- config
fly_replay on;
location / {
    proxy_pass http://app;
}
--- test
for my $h (['fly-replay-src', 'instance=x;region=scl;t=1'], ['fly-replay-src', 'region=ord;t=1700000000000000;state=method'],
           ['FLY-REPLAY-SRC', 'region=scl;t=1'], ['fly-replay-failed', 'reason=timeout'], ['fly-replay-failed', '']) {
    my $label = "$h->[0]: $h->[1]";
    my $before = main::app_count('atl');
    my $w = send_request(method => 'POST', path => '/echo', body => '{"x":1}', region => 'atl',
                         headers => { 'Content-Type' => 'application/json', $h->[0] => $h->[1] });
    is($w->{status}, 503, "$label: a write in atl gets the 503 of the README");
    is($w->{headers}{'fly-emulator-region'}, 'atl', "$label: from atl");
    ok(!defined $w->{headers}{'x-app-region'}, "$label: not the app's answer");
    is(main::app_count('atl'), $before, "$label: the atl app was not reached");
    # reads are not touched by it
    my $r = send_request(path => '/echo', region => 'atl', headers => { $h->[0] => $h->[1] });
    is($r->{status}, 200, "$label: a read in atl passes");
    is($r->{headers}{'x-app-region'}, 'atl', "$label: answered by the atl app");
    # nor anything in the primary
    my $p = send_request(method => 'POST', path => '/echo', body => '{"x":1}', region => 'scl',
                         headers => { 'Content-Type' => 'application/json', $h->[0] => $h->[1] });
    is($p->{status}, 200, "$label: a write in scl passes");
    is($p->{headers}{'x-app-region'}, 'scl', "$label: answered by the scl app");
}
# malformed: counts as absent, so the write is replayed as any other
for my $v ('garbage', 'region=scl', 'region=scl;t=abc', 'region=scl;t=1;t=2', 'region=;t=1', 'region=scl;t=1; x=1') {
    my $w = send_request(method => 'POST', path => '/echo', body => '{"x":1}', region => 'atl',
                         headers => { 'Content-Type' => 'application/json', 'fly-replay-src' => $v });
    is($w->{status}, 200, "malformed fly-replay-src '$v': the write succeeds");
    is($w->{headers}{'x-app-region'}, 'scl', "malformed fly-replay-src '$v': replayed to scl");
}
--- error_log_atl
fly_replay: ignoring malformed fly-replay-src "garbage"
qr/request replayed from region "scl" to region "atl", which is not the primary/


=== TEST 10: a forged sticky cookie sends only its own client to the primary
--- http_config eval: $main::HTTP
--- config
fly_replay on;
fly_replay_sticky 5s;
location / {
    proxy_pass http://app;
}
--- test
my $a = send_request(path => '/echo', region => 'atl', headers => { Cookie => 'fly-replay-until=999999999999' });
is($a->{status}, 200, 'the forged cookie: 200');
is($a->{headers}{'x-app-region'}, 'scl', 'its own requests run in the primary');
my $b = send_request(path => '/echo', region => 'atl');
is($b->{headers}{'x-app-region'}, 'atl', 'another client is answered in atl');
for my $v ('9999999999999', 'abc', '', '-1', '1e12') {
    my $c = send_request(path => '/echo', region => 'atl', headers => { Cookie => "fly-replay-until=$v" });
    is($c->{headers}{'x-app-region'}, 'atl', "fly-replay-until=$v is ignored");
}


=== TEST 11: a 60 KB Cookie is read through, and a key built from it is bounded
--- http_config eval: $main::HTTP
--- config
fly_replay on;
fly_replay_sticky 5s;
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
# 60 KB: under the 64 KB line limit of the emulator and the app (Python)
my $cookie = join '; ', map { "c$_=" . ('v' x 20) } 1 .. 2200;
$cookie .= '; pad=' . ('p' x (61000 - length $cookie));
ok(length($cookie) >= 61000, 'a Cookie of ' . length($cookie) . ' bytes');
my $p = "/hdr?body=x&Cache-Control=max-age%3D60&n=" . ++$main::N;
my $a = send_request(path => $p, region => 'atl', headers => { Cookie => $cookie });
is($a->{status}, 200, 'served');
is($a->{headers}{'x-app-region'}, 'atl', 'in its region');
my $b = send_request(path => $p, region => 'atl', headers => { Cookie => "$cookie; fly-replay-until=999999999999" });
is($b->{headers}{'x-app-region'}, 'scl', 'the sticky cookie after 60 KB of others is found');
# Vary: Cookie makes it part of the key: over 2048 bytes, never stored
my $v = "/hdr?body=y&Vary=Cookie&Cache-Control=max-age%3D60&n=" . ++$main::N;
for (1 .. 2) {
    my $r = send_request(path => $v, region => 'atl', direct => 1, headers => { Cookie => $cookie });
    is($r->{status}, 200, 'Vary: Cookie with it: served');
    isnt($r->{headers}{'x-cache'} // '', 'HIT', 'and never a HIT');
}
is(scalar(() = $t->redis_cli('atl', 'KEYS', "*n=$main::N")), 0, 'nothing of it in Redis');
# once a small cookie stored the Vary marker, the lookup cannot build it either
send_request(path => $v, region => 'atl', direct => 1, headers => { Cookie => 'a=1' });
is(send_request(path => $v, region => 'atl', direct => 1, headers => { Cookie => 'a=1' })->{headers}{'x-cache'},
   'HIT', 'a small cookie: its variant stored');
my $big = send_request(path => $v, region => 'atl', direct => 1, headers => { Cookie => $cookie });
is($big->{status}, 200, 'the 60 KB one after it: served');
is($big->{headers}{'x-cache'}, 'BYPASS', 'BYPASS: no variant key for it');
ok(main::logged('atl', qr/fly_cache: Vary .* not stored/), 'logged by the fill');
ok(main::logged('atl', qr/fly_cache: the stored Vary .* not cached/), 'logged by the lookup');


=== TEST 12: Vary with thousands of names, or more than 16, is not stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $n (17, 3000) {
    my $vary = join '%2C', map { "h$_" } 1 .. $n;
    my $p = "/hdr?body=v&Vary=$vary&Cache-Control=max-age%3D60&n=" . ++$main::N;
    my $a = main::get($p);
    is($a->{status}, 200, "Vary of $n names: served");
    main::from_app(main::get($p), "Vary of $n names: the next request");
}
ok(main::logged('scl', qr/fly_cache: Vary .* not stored/), 'logged');


=== TEST 13: a key over 2048 bytes is not cached, and logged
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = "/hdr?body=k&Cache-Control=max-age%3D60&n=" . ++$main::N . '&pad=' . ('x' x 2100);
for (1 .. 2) {
    my $r = main::get($p);
    is($r->{status}, 200, 'served');
    is($r->{headers}{'x-cache'}, 'BYPASS', 'BYPASS');
}
--- error_log
qr/fly_cache: key of 2\d\d\d bytes not cached/


=== TEST 14: an 8 KB fly-replay-src and 200 request headers of one name change nothing
--- http_config eval: $main::HTTP
--- config
fly_replay on;
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_set_header X-Many "";
    proxy_pass http://app;
}
--- test
my $src = 'instance=' . ('i' x 8000) . ';region=scl;t=1';
my $w = send_request(method => 'POST', path => '/echo', body => '{}', region => 'atl',
                     headers => { 'Content-Type' => 'application/json', 'fly-replay-src' => $src });
is($w->{status}, 503, 'a long well-formed fly-replay-src: the 503');
my @many = map { ("X-Many", "v" . ("x" x 20) . $_) } 1 .. 200;
my $p = "/hdr?body=m&Vary=X-Many&Cache-Control=max-age%3D60&n=" . ++$main::N;
for (1 .. 2) {
    my $r = send_request(path => $p, region => 'scl', direct => 1, headers => \@many);
    is($r->{status}, 200, '200 request headers of one name (6 KB joined), varied on: served');
    isnt($r->{headers}{'x-cache'} // '', 'HIT', 'never stored (the key would be too long)');
}


=== TEST 15: the answer to a GET with a body ("fat GET") is not stored: the key does not hold the body
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_valid 200 60s;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my $p = "/echo?n=" . ++$main::N;
my $a = send_request(method => 'GET', path => $p, body => 'evil=1', region => 'scl', direct => 1);
is(json_decode($a->{content})->{body}, 'evil=1', 'the app reads the body of the GET');
my $b = main::get($p);
main::from_app($b, 'the next client, without a body');
is(json_decode($b->{content})->{body_length}, 0, 'gets its own answer');
is(main::get($p)->{headers}{'x-cache'}, 'HIT', 'which is stored');


=== TEST 16: an answer of the app with fly-replay is never stored (it is for one request)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $r ('atl', 'scl') {
    my $p = "/hdr?fly-replay=region%3Dscl&Cache-Control=public%2C%20max-age%3D60&n=" . ++$main::N;
    my $a = main::get($p, region => $r);
    is($a->{headers}{'fly-replay'}, 'region=scl', "$r: the app's replay answer passes");
    main::from_app(main::get($p, region => $r), "$r: the next client");
}
