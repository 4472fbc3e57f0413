# fly_replay_on_status: in a replica region, an answer of the app with a
# listed status is replaced, before any byte of it is sent, by a replay to
# the primary (state=captured).  The real case: a GET that writes fails in
# atl against the read-only replica (the demo app's /track answers 500)
# and succeeds in scl.  Also: what is never captured (nginx's own errors,
# cache HITs, subrequests, replayed requests, the app's own fly-replay,
# bodies Fly cannot replay), and that the app's body is read to its end
# so the upstream keepalive connection stays sound.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);

sub app_count {
    my ($r) = @_;
    return json_decode(send_request(path => '/__count', region => $r, direct => 1,
                                    ua => HTTP::Tiny->new(timeout => 10))->{content})->{count};
}

# "free keepalive peer: saving connection" lines in a region's log since $from.
sub saved_connections {
    my ($r, $from) = @_;
    my @l = main::topology()->error_log_since($r, $from) =~ /free keepalive peer: saving connection/g;
    return scalar @l;
}

run_tests();

__DATA__

=== TEST 1: a GET that writes, sent to atl and ord, fails there against the replica and is replayed to scl, where it succeeds
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- test
for my $r (qw(atl ord)) {
    my $before = main::app_count($r);
    my $got = send_request(path => "/track?page=$r-page", region => $r);
    is($got->{status}, 200, "GET /track in $r succeeds");
    is($got->{headers}{'fly-emulator-route'}, "$r>scl", "it was replayed from $r to scl");
    is($got->{headers}{'x-app-region'}, 'scl', 'answered by the scl app');
    my $visit = json_decode($got->{content});
    is($visit->{region}, 'scl', 'the visit row was written in scl');
    my ($page) = $t->dbh('scl')->selectrow_array('SELECT page FROM visits WHERE id = ?', undef, $visit->{id});
    is($page, "$r-page", 'and is on the primary database');
    is(main::app_count($r), $before + 1, "the $r app was asked once (and failed)");
}


=== TEST 2: without fly_replay_on_status the same GET fails in atl (the test above is not trivially true)
--- http_config
fly_replay on;
--- request
GET /track?page=no-capture
--- region: atl
--- error_code: 500
--- answered_by: atl
--- response_body_like: read-only transaction


=== TEST 3: the captured answer: fly_replay_status, fly-replay state=captured, no body, none of the app's headers, $fly_replay is "captured", logged at info
--- http_config
fly_replay on;
fly_replay_on_status 500 409;
fly_replay_status 307;
--- config
location / {
    add_header X-Fly-Replay "[$fly_replay]" always;
    proxy_pass http://app;
}
--- request eval
[ { path => '/hdr?status=500&body=oops&X-From-App=1&Cache-Control=max-age%3D60&Set-Cookie=a%3D1', region => 'atl', direct => 1 },
  { path => '/hdr?status=409&body=conflict', region => 'atl', direct => 1 },
  { path => '/hdr?status=404&body=missing', region => 'atl', direct => 1 },
  { path => '/hdr?status=500&body=oops', region => 'scl', direct => 1 } ]
--- error_code eval
[ 307, 307, 404, 500 ]
--- response_headers eval
[ "fly-replay: region=scl;state=captured\nX-Fly-Replay: [captured]\nContent-Length: 0\n!X-From-App\n!X-App-Region\n!X-Origin-Count\n!Cache-Control\n!Set-Cookie\n!Content-Type",
  "fly-replay: region=scl;state=captured\nContent-Length: 0",
  "!fly-replay\nX-Fly-Replay: []\nX-App-Region: atl",
  "!fly-replay\nX-App-Region: scl" ]
--- response_body eval
[ '', '', 'missing', 'oops' ]
--- error_log_atl
qr/\[info\] .*fly_replay_on_status: the app answered 500 in region "atl": replaying to the primary region "scl"/
qr/\[info\] .*fly_replay_on_status: the app answered 409 in region "atl"/


=== TEST 4: large app bodies are read to their end and dropped (buffered, with small buffers, unbuffered); the keepalive connections to the app stay sound
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- config
location /buffered/ {
    proxy_pass http://app/;
}
location /small/ {
    proxy_buffer_size 4k;
    proxy_buffers 2 4k;
    proxy_busy_buffers_size 4k;
    proxy_pass http://app/;
}
location /unbuffered/ {
    proxy_buffering off;
    proxy_pass http://app/;
}
location / { proxy_pass http://app; }
--- test
my $ua = FlyEdge::Test::UA->new(timeout => 20, keep_alive => 1);    # one client connection
for my $where (qw(buffered small unbuffered)) {
    my $from = $t->error_log_size('atl');
    my @captured;
    for my $i (1 .. 3) {
        my $got = send_request(path => "/$where/big?status=500&size=300000&i=$i", region => 'atl', direct => 1, ua => $ua);
        push @captured, $got->{status} == 409 && $got->{content} eq ''
                        && ($got->{headers}{'fly-replay'} // '') eq 'region=scl;state=captured';
    }
    is(scalar(grep { $_ } @captured), 3, "$where: three 300 kB 500 answers were captured, no body sent");
    # the client stays: every upstream connection is read to the end of the
    # app's body and kept
    ok($t->wait_until(sub { main::saved_connections('atl', $from) >= 3 }, scaled(5)),
       "$where: each connection to the app went back to the keepalive pool")
        or diag(main::saved_connections('atl', $from) . ' saved');
    # a client that leaves as soon as it has the replay answer: nginx closes
    # that upstream connection, as for any answer a client abandons
    my $gone = send_request(path => "/$where/big?status=500&size=300000&i=gone", region => 'atl', direct => 1,
                            ua => HTTP::Tiny->new(timeout => 20));
    is($gone->{status}, 409, "$where: captured for a client that leaves at once");
    # requests on those connections get their own answers (a connection with
    # the rest of a body left in it would answer them with garbage)
    my @ok = grep { my $e = send_request(path => "/echo?n=$_", region => 'atl', direct => 1,
                                         ua => HTTP::Tiny->new(timeout => 10));
                    $e->{status} == 200 && json_decode($e->{content})->{path} eq "/echo?n=$_" } 1 .. 6;
    is(scalar @ok, 6, "$where: the next requests to the app are answered correctly");
}
like(block_error_log('atl'), qr/get keepalive peer: using connection/, 'kept connections were used again');
unlike(block_error_log('atl'), qr/upstream prematurely closed|upstream sent invalid/, 'no upstream errors');


=== TEST 5: HEAD is captured too; a HEAD /track through the emulator runs in scl
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- request eval
[ { method => 'HEAD', path => '/hdr?status=500', region => 'atl', direct => 1 },
  { method => 'HEAD', path => '/track?page=head', region => 'atl' } ]
--- error_code eval
[ 409, 200 ]
--- response_headers eval
[ "fly-replay: region=scl;state=captured", "X-App-Region: scl\nfly-emulator-route: atl>scl" ]


=== TEST 6: never for a request already replayed (fly-replay-src) nor one Fly failed to replay: the app's answer passes as is; a malformed fly-replay-src counts as absent
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- request eval
[ { path => '/hdr?status=500&body=as-is', region => 'atl', direct => 1,
    headers => { 'fly-replay-src' => 'instance=abc;region=ord;t=1700000000000000;state=captured' } },
  { path => '/hdr?status=500&body=as-is', region => 'atl', direct => 1,
    headers => { 'fly-replay-failed' => 'instance=x;app=a;region=scl;replay_source=y;reason=timeout;elapsed_ms=5' } },
  { path => '/hdr?status=500&body=as-is', region => 'atl', direct => 1,
    headers => { 'fly-replay-src' => 'region=;t=x' } } ]
--- error_code eval
[ 500, 500, 409 ]
--- response_body eval
[ 'as-is', 'as-is', '' ]
--- response_headers eval
[ "X-App-Region: atl\n!fly-replay", "X-App-Region: atl\n!fly-replay", "fly-replay: region=scl;state=captured" ]


=== TEST 7: only the app's own status: nginx's 502 for an app it cannot reach and a `return 500` pass; the app's own 502 is captured
--- http_config
fly_replay on;
fly_replay_on_status 500 502;
--- config
location /down { proxy_pass http://127.0.0.1:1; }
location /ret { return 500 "made by nginx\n"; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/down', region => 'ord', direct => 1 },
  { path => '/ret', region => 'ord', direct => 1 },
  { path => '/hdr?status=502', region => 'ord', direct => 1 } ]
--- error_code eval
[ 502, 500, 409 ]
--- response_headers eval
[ '!fly-replay', '!fly-replay', 'fly-replay: region=scl;state=captured' ]


=== TEST 8: the app's own fly-replay is left alone, and this nginx's own answers (replay, 503) are not captured again
--- http_config
fly_replay on;
fly_replay_on_status 409 503;
fly_replay_status 409;
--- request eval
[ { path => '/hdr?status=409&fly-replay=region%3Dord%3Bstate%3Dmine', region => 'atl', direct => 1 },
  { method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'x' },
  { method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'x',
    headers => { 'fly-replay-src' => 'instance=abc;region=ord;t=1700000000000000;state=method' } } ]
--- error_code eval
[ 409, 409, 503 ]
--- response_headers eval
[ "fly-replay: region=ord;state=mine\nX-App-Region: atl", "fly-replay: region=scl;state=method", "!fly-replay\nRetry-After: 1" ]
--- response_body_like eval
[ qr/^$/, qr/^$/, qr/already replayed/ ]


=== TEST 9: a write the location does not replay, captured with its body: Fly replays it whole and scl creates the post
--- http_config
fly_replay on;
fly_replay_methods DELETE;
fly_replay_on_status 500;
--- test
my $got = send_request(method => 'POST', path => '/posts', region => 'atl',
                       headers => { 'Content-Type' => 'application/json' }, body => '{"title":"captured write"}');
is($got->{status}, 201, 'the POST succeeds');
is($got->{headers}{'fly-emulator-route'}, 'atl>scl', 'after a replay from atl to scl');
my $id = json_decode($got->{content})->{id};
my ($title) = $t->dbh('scl')->selectrow_array('SELECT title FROM posts WHERE id = ?', undef, $id);
is($title, 'captured write', 'the body reached scl intact');


=== TEST 10: a body Fly cannot replay (chunked, over fly_replay_max_body): the app's answer passes, and the reason is logged
--- http_config
fly_replay on;
fly_replay_methods DELETE;
fly_replay_max_body 16k;
fly_replay_on_status 500;
--- request eval
[ { method => 'POST', path => '/hdr?status=500&body=app-error', region => 'atl', direct => 1, body => 'c' x 1000, chunked => 1 },
  { method => 'POST', path => '/hdr?status=500&body=app-error', region => 'atl', direct => 1, body => 'b' x 20000 },
  { method => 'POST', path => '/hdr?status=500&body=app-error', region => 'atl', direct => 1, body => 'b' x 16384 } ]
--- error_code eval
[ 500, 500, 409 ]
--- response_body eval
[ 'app-error', 'app-error', '' ]
--- error_log_atl
qr/\[info\] .*fly_replay_on_status: the app answered 500, but this request's body has no Content-Length, so Fly cannot replay it: the app's answer is sent/
qr/\[info\] .*fly_replay_on_status: the app answered 500, but this request's body is over fly_replay_max_body, so Fly cannot replay it: the app's answer is sent/


=== TEST 11: not in the primary, not where fly_replay is off, not with fly_replay_bypass, not with fly_replay_forward ... always, and off cancels an inherited list
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- config
location /off/ { fly_replay off; proxy_pass http://app/; }
location /none/ { fly_replay_on_status off; proxy_pass http://app/; }
location /bypass/ { fly_replay_bypass 1; proxy_pass http://app/; }
location /fwd/ { fly_replay_forward @primary always; proxy_pass http://app/; }
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/hdr?status=500', region => 'scl', direct => 1 },
  { path => '/off/hdr?status=500', region => 'atl', direct => 1 },
  { path => '/none/hdr?status=500', region => 'atl', direct => 1 },
  { path => '/bypass/hdr?status=500', region => 'atl', direct => 1 },
  { path => '/fwd/hdr?status=500', region => 'atl', direct => 1 },
  { method => 'POST', path => '/fwd/hdr?status=500', region => 'atl', direct => 1, body => 'x' },
  { path => '/hdr?status=500', region => 'atl', direct => 1 } ]
--- error_code eval
[ 500, 500, 500, 500, 500, 500, 409 ]
--- response_headers eval
[ "X-App-Region: scl", "X-App-Region: atl", "X-App-Region: atl", "X-App-Region: atl", "X-App-Region: atl",
  "X-App-Region: scl", "fly-replay: region=scl;state=captured" ]


=== TEST 12: after an internal redirect (try_files to a named location; error_page of the app's 500) the answer is captured; a subrequest's 500 (SSI) never is
--- http_config
fly_replay on;
fly_replay_on_status 500;
--- config
location /tf/ { try_files /nonexistent @app; }
location @app { rewrite ^/tf(/.*)$ $1 break; proxy_pass http://app; }
location /ep/ {
    proxy_intercept_errors on;
    error_page 500 /oops.html;
    proxy_pass http://app/;
}
location = /oops.html { root %%HTML_DIR%%; sendfile on; }
location = /page.html { ssi on; root %%HTML_DIR%%; }
location /app/ { proxy_pass http://app/; }
location / { proxy_pass http://app; }
--- test
my $html = $t->nginx_prefix('atl') . '/html';
open my $f, '>', "$html/oops.html" or die; print $f "a nice error page\n"; close $f;
open my $g, '>', "$html/page.html" or die;
print $g "before <!--# include virtual=\"/app/hdr?status=500&body=inner\" --> after\n"; close $g;
my $a = send_request(path => '/tf/hdr?status=500', region => 'atl', direct => 1);
is($a->{status}, 409, 'try_files to @app: captured');
is($a->{headers}{'fly-replay'}, 'region=scl;state=captured', 'state=captured');
my $b = send_request(path => '/ep/hdr?status=500', region => 'atl', direct => 1);
is($b->{status}, 409, "error_page for the app's 500: captured");
is($b->{content}, '', 'without the error page');
my $c = send_request(path => '/page.html', region => 'atl', direct => 1);
is($c->{status}, 200, 'a page including a subrequest that answered 500');
is($c->{content}, "before inner after\n", "keeps the subrequest's body: subrequests are never captured");
my @captures = block_error_log('atl') =~ /fly_replay_on_status: the app answered 500/g;
is(scalar @captures, 2, 'two answers were captured, not the subrequest');


=== TEST 13: a cache HIT is never captured, and a captured answer is never stored
--- http_config
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_replay on;
fly_replay_on_status 500;
--- config
location / {
    fly_cache on;
    fly_cache_key $request_uri;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my $p = '/hdr?status=500&body=cached-error&Cache-Control=max-age%3D60';
my $src = { 'fly-replay-src' => 'instance=abc;region=scl;t=1700000000000000;state=x' };
# a captured answer (with and without a body), then (same connection, same
# worker, same Redis connection) a request whose 500 is stored: once that
# entry is there, anything the captured ones could have written is there too
my $empty = '/hdr?status=500&Cache-Control=max-age%3D60&k=0';
my $cap0 = send_request(path => $empty, region => 'atl', direct => 1);
is($cap0->{status}, 409, 'a storable 500 of the app with no body is captured');
my $cap = send_request(path => "$p&k=1", region => 'atl', direct => 1);
is($cap->{status}, 409, 'a storable 500 of the app is captured');
ok(!defined $cap->{headers}{'x-cache'}, 'the captured answer carries no cache status');
my $stored = send_request(path => "$p&k=2", region => 'atl', direct => 1, headers => $src);
is($stored->{status}, 500, 'with fly-replay-src the same answer passes');
is($stored->{headers}{'x-cache'}, 'MISS', 'as a MISS');
ok($t->wait_until(sub { defined $t->redis('atl')->get("fly:$p&k=2") }, scaled(5)), 'and it is stored');
ok(!defined $t->redis('atl')->get("fly:$p&k=1"), 'the captured answer was not stored');
ok(!defined $t->redis('atl')->get("fly:$empty"), 'nor the one without a body');
unlike(block_error_log('atl'), qr/incomplete response not stored/, 'the cache did not even try');
my $before = main::app_count('atl');
my $hit = send_request(path => "$p&k=2", region => 'atl', direct => 1);
is($hit->{status}, 500, 'a HIT of a stored 500 ...');
is($hit->{headers}{'x-cache'}, 'HIT', '... (a HIT) ...');
is($hit->{content}, 'cached-error', '... is sent as stored, not captured');
is(main::app_count('atl'), $before, 'without reaching the app');


=== TEST 14: the same with proxy_cache: a captured answer is not stored, a proxy_cache HIT is not captured
--- http_config
fly_replay on;
fly_replay_on_status 500;
proxy_cache_path %%PREFIX%%/tmp/pcache keys_zone=pcache:1m;
--- config
location / {
    proxy_cache pcache;
    proxy_cache_valid 500 1m;
    add_header X-Proxy-Cache "$upstream_cache_status" always;
    proxy_pass http://app;
}
--- test
my $p = '/hdr?status=500&body=proxy-cached';
my $src = { 'fly-replay-src' => 'instance=abc;region=scl;t=1700000000000000;state=x' };
my $before = main::app_count('atl');
for my $i (1, 2) {
    my $got = send_request(path => "$p&k=1", region => 'atl', direct => 1);
    is($got->{status}, 409, "request $i for a URI whose answer is captured: captured");
    is($got->{headers}{'x-proxy-cache'}, 'MISS', "request $i: a MISS, nothing was stored");
}
is(main::app_count('atl'), $before + 2, 'both reached the app');
my $stored = send_request(path => "$p&k=2", region => 'atl', direct => 1, headers => $src);
is($stored->{status}, 500, 'with fly-replay-src the 500 passes ...');
is($stored->{headers}{'x-proxy-cache'}, 'MISS', '... and is stored');
my $hit = send_request(path => "$p&k=2", region => 'atl', direct => 1);
is($hit->{headers}{'x-proxy-cache'}, 'HIT', 'then a proxy_cache HIT ...');
is($hit->{status}, 500, '... is sent as it is ...');
is($hit->{content}, 'proxy-cached', '... with its body');


=== TEST 15: fly_replay_on_status needs codes from 200 to 599
--- config
fly_replay_on_status 500 abc;
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_on_status": invalid status "abc", expected a code from 200 to 599 or "off" in \S+\/conf\/server\.conf:1/


=== TEST 16: fly_replay_on_status: off only alone, codes in range, no duplicate
--- config
location / {
    fly_replay_on_status 500 off;
}
--- must_die
--- error_log
qr/invalid status "off", expected a code from 200 to 599 or "off" in \S+\/conf\/server\.conf:2/


=== TEST 17: a duplicate fly_replay_on_status fails
--- config
fly_replay_on_status 500;
fly_replay_on_status 502;
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_on_status" directive is duplicate in \S+\/conf\/server\.conf:2/


=== TEST 18: a code under 200
--- http_config
fly_replay_on_status 199;
--- must_die
--- error_log
qr/invalid status "199", expected a code from 200 to 599 or "off" in \S+\/conf\/http\.conf:1/
