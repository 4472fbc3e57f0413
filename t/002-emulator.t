# The replay emulator standing in for Fly's proxy: routing to regions, Fly's
# request headers, replays driven by the fly-replay header (body included),
# its limits and errors (PA01, PA02, PA03), fallback, and relaying answers.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);

our $BIN = join '', map { chr(($_ * 7 + ($_ >> 8)) % 256) } 0 .. 300_000;

run_tests(pg => 0);

__DATA__

=== TEST 1: a POST is replayed to the region named in fly-replay, with method, path, headers and body intact
--- http_config
client_max_body_size 10m;
--- config_atl
location / {
    add_header fly-replay "region=scl;state=test_state" always;
    return 409 "atl does not take writes\n";
}
--- request eval
[{ method => 'POST', path => '/echo?x=1&y=%41', body => $main::BIN, raw_body => 1,
   headers => { 'Content-Type' => 'application/octet-stream', 'X-Test-Header' => 'kept as is' } }]
--- region: atl
--- error_code: 200
--- answered_by: scl
--- response_headers
X-App-Region: scl
fly-emulator-replays: 1
fly-emulator-route: atl>scl
!fly-replay
--- test
my $echo = json_decode($res->{content});
is($echo->{method}, 'POST', 'scl saw a POST');
is($echo->{path}, '/echo?x=1&y=%41', 'scl saw the same path and query');
is($echo->{body_length}, length $main::BIN, 'scl got the whole body');
is($echo->{body_sha256}, sha256_hex($main::BIN), 'scl got the same body bytes');
is($echo->{headers}{'x-test-header'}, 'kept as is', 'scl got the client header');
is($echo->{headers}{'content-type'}, 'application/octet-stream', 'and its Content-Type');
like($echo->{headers}{'fly-replay-src'},
     qr/^instance=${\ $t->machine_id('atl')};region=atl;t=\d{16};state=test_state$/,
     'the replayed request carries fly-replay-src naming atl');
my ($us) = $echo->{headers}{'fly-replay-src'} =~ /;t=(\d+)/;
cmp_ok(abs($us / 1e6 - time), '<', 60, 'fly-replay-src t= is microseconds since the epoch');
is($echo->{headers}{'fly-region'}, 'atl', 'Fly-Region stays the edge region');
open my $fh, '<', $t->access_log_path('atl') or die;
my $access = do { local $/; <$fh> };
like($access, qr/"POST \/echo\?x=1&y=%41 HTTP\/1\.1" 409/, 'atl answered 409 first');


=== TEST 2: a body of exactly 1 MiB is replayed; one byte more cannot be (PA01)
--- http_config
client_max_body_size 10m;
--- config_atl
location / {
    add_header fly-replay "region=scl" always;
    return 409;
}
--- request eval
[ { method => 'PUT', path => '/echo', body => 'a' x 1048576 },
  { method => 'PUT', path => '/echo', body => 'a' x 1048577 } ]
--- region: atl
--- error_code eval
[200, 502]
--- answered_by eval
['scl', 'atl']
--- response_headers eval
[ "!fly-emulator-error", "fly-emulator-error: PA01" ]
--- response_body_like eval
[ qr/"body_length": 1048576,/, qr/PA01: request body of 1048577 bytes is over the 1048576 bytes/ ]


=== TEST 3: a body without Content-Length passes through, but cannot be replayed (PA01)
--- config_atl
location /replay { add_header fly-replay "region=scl" always; return 409; }
location / { proxy_pass http://app; }
--- request eval
[ { method => 'POST', path => '/echo', body => "chunk" x 1000, chunked => 1 },
  { method => 'POST', path => '/replay', body => "chunk" x 1000, chunked => 1 } ]
--- region: atl
--- error_code eval
[200, 502]
--- response_headers eval
[ "X-App-Region: atl", "fly-emulator-error: PA01" ]
--- response_body_like eval
[ qr/"body_sha256": "${\ Digest::SHA::sha256_hex('chunk' x 1000)}"/, qr/without Content-Length cannot be replayed/ ]


=== TEST 4: more than 10 replays of one request fail (PA02)
--- config_scl
location / { add_header fly-replay "region=atl" always; return 409; }
--- config_atl
location / { add_header fly-replay "region=scl" always; return 409; }
--- request
POST /posts
{}
--- region: atl
--- error_code: 502
--- response_headers
fly-emulator-error: PA02
fly-emulator-replays: 10
--- response_body_like: PA02: more than 10 replays


=== TEST 5: a malformed fly-replay header fails the request (PA03)
--- http_config
map $uri $bad_replay {
    /unknown-key   "region=scl;bogus=1";
    /space         "region= scl";
    /no-target     "state=only";
    /unquoted-list "region=scl,ord";
    /bad-timeout   "region=scl;timeout=soon";
    /bad-fallback  "region=scl;fallback=maybe";
    /empty-part    "region=scl;;state=x";
    default        "region=scl";
}
--- config_atl
location / { add_header fly-replay $bad_replay always; return 409; }
--- request eval
[ map { "GET /$_" } qw(unknown-key space no-target unquoted-list bad-timeout bad-fallback empty-part) ]
--- region: atl
--- error_code: 502
--- answered_by: atl
--- response_headers
fly-emulator-error: PA03
--- response_body_like eval
[ qr/unknown key 'bogus'/, qr/whitespace/, qr/no target/, qr/must be quoted/, qr/bad timeout/,
  qr/fallback must be/, qr/is not key=value/ ]


=== TEST 6: replay targets: instance, elsewhere, a quoted region list, any status, no state
--- http_config
map $uri $replay_to {
    /instance  "instance=%%MACHINE_ID_ORD%%";
    /elsewhere "elsewhere=true";
    /list      "region=\"xyz,ord\";state=listed";
    /redirect  "region=ord";
    default    "";
}
--- config_atl
location /redirect { add_header fly-replay $replay_to always; return 307 "/somewhere"; }
location / { add_header fly-replay $replay_to always; return 204; }
--- config_ord
location / { proxy_pass http://app; rewrite ^ /echo break; }
--- config_scl
location / { proxy_pass http://app; rewrite ^ /echo break; }
--- request eval
[ "GET /instance", "GET /elsewhere", "GET /list", "GET /redirect" ]
--- region: atl
--- error_code: 200
--- answered_by eval
[ 'ord', 'scl', 'ord', 'ord' ]
--- response_body_like eval
[ qr/"fly-replay-src": "instance=[0-9a-f]{14};region=atl;t=\d+"/,
  qr/"fly-replay-src": "instance=[0-9a-f]{14};region=atl;t=\d+"/,
  qr/"fly-replay-src": "instance=[0-9a-f]{14};region=atl;t=\d+;state=listed"/,
  qr/"method": "GET"/ ]


=== TEST 7: an unreachable target: error, or with fallback the request goes back with fly-replay-failed
--- http_config
map $http_fly_replay_failed $replay_unless_failed { "" $arg_replay; default ""; }
--- config_atl
location / {
    if ($http_fly_replay_failed) {
        return 200 "fell back: $http_fly_replay_failed src=[$http_fly_replay_src]\n";
    }
    add_header fly-replay $replay_unless_failed always;
    return 409;
}
--- config_scl
location / { proxy_pass http://app; }
--- region: atl
--- test
my $atl = $t->machine_id('atl');
my $r = send_request(path => '/?replay=region=xyz;fallback=prefer_self', region => 'atl');
is($r->{status}, 200, 'unknown region with fallback: back to atl');
like($r->{content}, qr/^fell back: instance=;app=fly-edge-test;region=xyz;replay_source=$atl;reason=no_candidate;elapsed_ms=\d+ src=\[\]$/,
     'fly-replay-failed says no_candidate');
$r = send_request(path => '/?replay=region=xyz', region => 'atl');
is($r->{status}, 502, 'unknown region without fallback: 502');
is($r->{headers}{'fly-emulator-error'}, 'PR04', 'PR04');

# the replay's timeout is 300 ms; scl's app answers after 5 times the bound
# the answer must come within (the emulator closes the hop that timed out,
# so scl's nginx drops that request at once)
my $bound = scaled(2);
my $slow = int(5000 * $bound);
$r = send_request(path => "/slow?ms=$slow&replay=region=scl;timeout=300ms;fallback=prefer_self", region => 'atl');
is($r->{status}, 200, 'timeout with fallback: back to atl');
like($r->{content}, qr/region=scl;replay_source=$atl;reason=timeout;elapsed_ms=\d+/, 'reason=timeout');
cmp_ok($r->{elapsed}, '<', $bound, "without waiting for the slow region (within $bound s; it answers after ${slow} ms)");
$r = send_request(path => "/slow?ms=$slow&replay=region=scl;timeout=300ms", region => 'atl');
is($r->{status}, 504, 'timeout without fallback: 504');

$t->stop_nginx('scl');
$r = send_request(path => '/?replay=region=scl;fallback=force_self', region => 'atl');
like($r->{content}, qr/instance=${\ $t->machine_id('scl')};app=fly-edge-test;region=scl;replay_source=$atl;reason=retries_exhausted;/,
     'scl down, with fallback: reason=retries_exhausted');
$r = send_request(path => '/?replay=region=scl', region => 'atl');
is($r->{status}, 502, 'scl down, without fallback: 502');
like($r->{content}, qr/cannot connect to scl/, 'naming the region');
$t->start_nginx('scl');
$r = send_request(path => '/?replay=region=scl', region => 'atl');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'scl answers again once started');


=== TEST 8: routing a client to a region: ports, fly-prefer-region, fly-force-region
--- config
location / { return 200 "%%REGION%%\n"; }
--- test
my $ua = HTTP::Tiny->new(max_redirect => 0);
my $main = $t->emulator_url;
is($ua->get("$main/")->{content}, "scl\n", 'the main port goes to the primary region');
is($ua->get("$main/", { headers => { 'fly-prefer-region' => 'ord' } })->{content}, "ord\n", 'fly-prefer-region');
is($ua->get("$main/", { headers => { 'fly-prefer-region' => 'xyz,atl' } })->{content}, "atl\n", 'first known of a preferred list');
is($ua->get("$main/", { headers => { 'fly-prefer-region' => 'xyz' } })->{content}, "scl\n", 'unknown preference falls back');
is($ua->get("$main/", { headers => { 'fly-force-region' => 'atl' } })->{content}, "atl\n", 'fly-force-region');
is($ua->get("$main/", { headers => { 'fly-force-region' => 'xyz' } })->{status}, 503, 'forcing an unknown region fails');
for my $r ($t->regions) {
    is($ua->get($t->emulator_url($r) . '/')->{content}, "$r\n", "the $r port goes to $r");
    is(send_request(path => '/', region => $r, route => 'header')->{content}, "$r\n", "route => header reaches $r");
}


=== TEST 9: Fly's request headers reach the app
--- request
GET /echo
--- more_headers
X-Forwarded-For: 192.0.2.7
--- region: ord
--- test
my $h = json_decode($res->{content})->{headers};
is($h->{'fly-region'}, 'ord', 'Fly-Region');
is($h->{'fly-client-ip'}, '127.0.0.1', 'Fly-Client-IP');
is($h->{'x-forwarded-for'}, '192.0.2.7, 127.0.0.1', 'X-Forwarded-For appended');
is($h->{'x-forwarded-proto'}, 'http', 'X-Forwarded-Proto');
is($h->{'x-forwarded-port'}, $t->emulator_port('ord'), 'X-Forwarded-Port');
like($h->{'fly-request-id'}, qr/\S/, 'Fly-Request-Id');
like($h->{via}, qr/1\.1 fly\.io/, 'Via');
ok(!exists $h->{'fly-replay-src'}, 'no fly-replay-src on a request that was not replayed');


=== TEST 10: answers are relayed intact: Set-Cookie, chunked, gzip, large, HEAD, 204
--- request eval
[ "GET /hdr?Set-Cookie=a%3D1%3B%20Path%3D%2F&Set-Cookie=b%3D2&X-Custom=yes",
  "GET /chunked?size=200000&chunk=1000",
  "GET /gzip?size=100000",
  "GET /big?size=5000000",
  "HEAD /bin?size=12345",
  "DELETE /hdr?status=204" ]
--- region: atl
--- error_code eval
[200, 200, 200, 200, 200, 204]
--- response_headers eval
[ "X-Custom: yes", "X-App-Region: atl", "Content-Encoding: gzip", "Content-Length: 5000000", "Content-Length: 12345", "X-App-Region: atl" ]
--- test
is_deeply($responses->[0]{headers}{'set-cookie'}, ['a=1; Path=/', 'b=2'], 'both Set-Cookie headers, in order');
for my $i (1, 2, 3) {
    my $r = $responses->[$i];
    is(Digest::SHA::sha256_hex($r->{content}), $r->{headers}{'x-body-sha256'}, "body of $r->{request}{path} intact");
}
is(length $responses->[1]{content}, 200000, 'chunked body complete');
is($responses->[4]{content} // '', '', 'HEAD has no body');
is($responses->[5]{content} // '', '', '204 has no body');


=== TEST 11: WebSocket upgrades are tunnelled (after a replay too)
--- http_config
map $http_upgrade $connection_upgrade { default upgrade; '' close; }
--- config
location / {
    proxy_pass http://app;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
}
--- config_atl
location / { add_header fly-replay "region=scl;state=ws" always; return 409; }
--- test
for my $r (qw(ord atl)) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->emulator_port($r), Timeout => scaled(5)) or die;
    print $s "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    my $head = '';
    while (my $l = <$s>) { $head .= $l; last if $l eq "\r\n" }
    like($head, qr{^HTTP/1\.1 101 }, "$r: 101 Switching Protocols");
    like($head, qr/Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i, "$r: the app's handshake");
    like($head, qr/fly-emulator-region: ${\ ($r eq 'atl' ? 'scl' : 'ord')}/i, "$r: answered by the right region");
    print $s "ping over the tunnel";
    my $got = '';
    while (length $got < 20) { my $n = sysread($s, $got, 20 - length $got, length $got) or last }
    is($got, 'ping over the tunnel', "$r: bytes go both ways");
    close $s;
}


=== TEST 12: straight to a region (--- direct) there is no emulator: the client sees fly-replay
--- config_atl
location / { add_header fly-replay "region=scl" always; return 409; }
--- request
POST /posts
{}
--- region: atl
--- direct
--- error_code: 409
--- response_headers
fly-replay: region=scl
!fly-emulator-region


=== TEST 13: a request may set its own Host; /hdr echoes request headers for Vary tests
--- config
location = /host { return 200 "host=$host\n"; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/host', headers => { Host => 'example.org' } },
  { path => '/hdr?Vary=Accept-Language&echo=Accept-Language&body=lang%3D', headers => { 'Accept-Language' => 'fr' } } ]
--- region: ord
--- error_code: 200
--- response_body eval
[ "host=example.org\n", "lang=Accept-Language: fr\n" ]
--- response_headers eval
[ undef, "Vary: Accept-Language" ]
