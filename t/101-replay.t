# Write routing: writes that reach a replica region are replayed to the
# primary (scl) with fly-replay, through the emulator that stands in for
# Fly's proxy; reads stay local.  Loops, bodies Fly cannot replay, sticky
# read-your-writes, forwarding and malformed input.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);

# The sticky window of TEST 8 (whole seconds): the requests that must fall
# inside it take a small part of it, also on a slow machine.
our $STICKY = 1 + int(scaled(1) + 0.999);    # 2, 5 in the sanitizer pass

run_tests();

__DATA__

=== TEST 1: POST, PUT, PATCH and DELETE sent to atl and ord are handled in scl, on the primary database
--- http_config
fly_replay on;
--- test
for my $r (qw(atl ord)) {
    my $got = send_request(method => 'POST', path => '/posts', region => $r,
                           headers => { 'Content-Type' => 'application/json' },
                           body => qq{{"title":"from $r"}});
    is($got->{status}, 201, "POST in $r succeeds");
    is($got->{headers}{'fly-emulator-region'}, 'scl', "POST in $r answered by scl");
    is($got->{headers}{'fly-emulator-route'}, "$r>scl", "POST in $r was replayed from $r to scl");
    my $id = json_decode($got->{content})->{id};
    my ($title) = $t->dbh('scl')->selectrow_array('SELECT title FROM posts WHERE id = ?', undef, $id);
    is($title, "from $r", "the row written from $r is on the primary");
    my $seen = $t->wait_until(sub {
        ($t->dbh($r)->selectrow_array('SELECT title FROM posts WHERE id = ?', undef, $id))[0]
    }, scaled(10));
    is($seen, "from $r", "and shortly after on the replica that serves $r");

    for my $m (qw(PUT PATCH)) {
        my $u = send_request(method => $m, path => "/posts/$id", region => $r,
                             headers => { 'Content-Type' => 'application/json' },
                             body => qq{{"title":"$m from $r"}});
        is($u->{status}, 200, "$m in $r succeeds");
        is($u->{headers}{'fly-emulator-region'}, 'scl', "$m in $r answered by scl");
        my ($now) = $t->dbh('scl')->selectrow_array('SELECT title FROM posts WHERE id = ?', undef, $id);
        is($now, "$m from $r", "$m from $r changed the row on the primary");
    }
    my $d = send_request(method => 'DELETE', path => "/posts/$id", region => $r);
    is($d->{status}, 204, "DELETE in $r succeeds");
    is($d->{headers}{'fly-emulator-route'}, "$r>scl", "DELETE in $r was replayed to scl");
    my ($n) = $t->dbh('scl')->selectrow_array('SELECT count(*) FROM posts WHERE id = ?', undef, $id);
    is($n, 0, "DELETE from $r removed the row on the primary");
}


=== TEST 2: GET, HEAD and OPTIONS stay in their region
--- http_config
fly_replay on;
--- request eval
[ map { my $r = $_; map { { method => $_, path => '/posts', region => $r } } qw(GET HEAD OPTIONS) } qw(atl ord) ]
--- error_code eval
[ 200, 200, 204, 200, 200, 204 ]
--- answered_by eval
[ qw(atl atl atl ord ord ord) ]
--- response_headers eval
[ ("X-App-Region: atl") x 3, ("X-App-Region: ord") x 3 ]


=== TEST 3: the replay answer itself: 409, fly-replay with the reason, no body, never reaches the app
--- http_config
fly_replay on;
--- config
location / {
    add_header X-Fly-Replay "[$fly_replay]" always;
    proxy_pass http://app;
}
--- test
my $before = json_decode(send_request(path => '/__count', region => 'atl', direct => 1)->{content})->{count};
my $big = 'x' x 500_000;
my $got = send_request(method => 'POST', path => '/posts', region => 'atl', direct => 1, body => $big);
is($got->{status}, 409, 'a write straight to atl gets 409');
is($got->{headers}{'fly-replay'}, 'region=scl;state=method', 'fly-replay names the primary and the reason');
is($got->{headers}{'x-fly-replay'}, '[method]', '$fly_replay holds the state');
is($got->{content}, '', 'no body');
is($got->{headers}{'content-length'}, '0', 'Content-Length: 0');
my $after = json_decode(send_request(path => '/__count', region => 'atl', direct => 1)->{content})->{count};
is($after, $before, 'the atl app was not reached');
my $get = send_request(path => '/echo', region => 'atl', direct => 1);
is($get->{headers}{'x-fly-replay'}, '[]', '$fly_replay is empty when not replayed');
# the same connection still works after the discarded 500 kB body
my $again = send_request(path => '/echo', region => 'atl', direct => 1);
is($again->{status}, 200, 'keepalive connection usable after a discarded body');


=== TEST 4: in the primary region every request passes untouched (the app sees what the client sent)
--- http_config
fly_replay always;
--- test
my $body = join '', map { chr(($_ * 7) % 256) } 0 .. 70000;
my $got = send_request(method => 'POST', path => '/echo?a=1&b=2', region => 'scl', direct => 1,
                       headers => { 'X-Custom' => 'kept', 'Content-Type' => 'application/octet-stream',
                                    'fly-replay-src' => 'instance=1;region=atl;t=1;state=method' },
                       body => $body, raw_body => 1);
is($got->{status}, 200, 'passed to the app');
my $echo = json_decode($got->{content});
is($echo->{method}, 'POST', 'method');
is($echo->{path}, '/echo?a=1&b=2', 'path and query');
is($echo->{headers}{'x-custom'}, 'kept', 'headers');
is($echo->{body_length}, length $body, 'body length');
is($echo->{body_sha256}, sha256_hex($body), 'body bytes');
ok(!exists $got->{headers}{'fly-replay'}, 'no fly-replay in the primary');


=== TEST 5: fly_replay always replays reads too (a GET that writes), with state=always
--- http_config
fly_replay on;
--- config
location /track { fly_replay always; proxy_pass http://app; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/track?page=a', region => 'atl' }, { path => '/track?page=b', region => 'atl', direct => 1 },
  { path => '/posts', region => 'atl' } ]
--- error_code eval
[ 200, 409, 200 ]
--- answered_by eval
[ 'scl', undef, 'atl' ]
--- response_headers eval
[ '', 'fly-replay: region=scl;state=always', '' ]


=== TEST 6: fly_replay_bypass: a webhook the replica can answer is not replayed
--- http_config
fly_replay on;
--- config
location / {
    fly_replay_bypass $http_x_webhook $arg_local;
    proxy_pass http://app;
}
--- request eval
[ { method => 'POST', path => '/echo', region => 'atl', body => 'a', headers => { 'X-Webhook' => '1' } },
  { method => 'POST', path => '/echo?local=yes', region => 'atl', body => 'a' },
  { method => 'POST', path => '/echo?local=0', region => 'atl', body => 'a' },
  { method => 'POST', path => '/echo', region => 'atl', body => 'a', headers => { 'X-Webhook' => '0' } } ]
--- error_code: 200
--- answered_by eval
[ qw(atl atl scl scl) ]


=== TEST 7: fly_replay_methods and a custom fly_replay_status
--- http_config
fly_replay on;
fly_replay_methods POST PROPFIND;
fly_replay_status 307;
--- request eval
[ { method => 'POST', path => '/echo', region => 'ord', direct => 1, body => 'x' },
  { method => 'PROPFIND', path => '/echo', region => 'ord', direct => 1 },
  { method => 'PUT', path => '/echo', region => 'ord', direct => 1, body => 'x' },
  { method => 'DELETE', path => '/echo', region => 'ord', direct => 1 } ]
--- error_code eval
[ 307, 307, 200, 200 ]
--- response_headers eval
[ 'fly-replay: region=scl;state=method', 'fly-replay: region=scl;state=method', '!fly-replay', '!fly-replay' ]


=== TEST 8: sticky: after a write, the client's reads go to scl until the cookie's time has passed
--- http_config eval
"fly_replay on;\nfly_replay_sticky ${main::STICKY}s;\n"
--- cookie_jar
--- test
my $w = send_request(method => 'POST', path => '/posts', region => 'atl',
                     headers => { 'Content-Type' => 'application/json' }, body => '{"title":"sticky"}');
is($w->{status}, 201, 'the write succeeds');
is($w->{headers}{'fly-emulator-region'}, 'scl', 'the write ran in scl');
like($w->{headers}{'set-cookie'}, qr/^fly-replay-until=\d+; Max-Age=$main::STICKY; Path=\/; HttpOnly; SameSite=Lax$/,
     'scl set the sticky cookie');
my $id = json_decode($w->{content})->{id};
my $r = send_request(path => "/posts/$id", region => 'atl');
is($r->{status}, 200, 'read right after the write succeeds (own write visible)');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'and is answered by scl');
is($r->{headers}{'fly-emulator-route'}, 'atl>scl', 'replayed from atl');
my $direct = send_request(path => '/posts', region => 'atl', direct => 1);
is($direct->{headers}{'fly-replay'}, 'region=scl;state=sticky', 'state=sticky');
ok($t->wait_until(sub { !defined cookie_jar()->cookie('fly-replay-until') }, scaled(5) + $main::STICKY),
   'the cookie expires after its Max-Age');
my $later = send_request(path => '/posts', region => 'atl');
is($later->{headers}{'fly-emulator-region'}, 'atl', 'once the time has passed atl answers again');
my $fail = send_request(method => 'POST', path => '/hdr?status=500', region => 'scl', direct => 1, body => 'x');
is($fail->{status}, 500, 'a failed write ...');
ok(!defined $fail->{headers}{'set-cookie'}, '... sets no sticky cookie');
my $read = send_request(path => '/posts', region => 'scl', direct => 1);
ok(!defined $read->{headers}{'set-cookie'}, 'a read sets no sticky cookie');


=== TEST 9: loop safety: a replayed request reaching a replica region gets 503 and is logged
--- http_config
fly_replay on;
--- request eval
[ { method => 'POST', path => '/posts', region => 'atl', direct => 1, body => '{}',
    headers => { 'fly-replay-src' => 'instance=abc;region=ord;t=1700000000000000;state=method' } },
  { method => 'POST', path => '/posts', region => 'ord', direct => 1, body => '{}',
    headers => { 'fly-replay-failed' => 'instance=x;app=a;region=scl;replay_source=y;reason=timeout;elapsed_ms=5' } },
  { method => 'GET', path => '/posts', region => 'atl', direct => 1,
    headers => { 'fly-replay-src' => 'instance=abc;region=ord;t=1700000000000000' } } ]
--- error_code eval
[ 503, 503, 200 ]
--- response_headers eval
[ "Retry-After: 1\nContent-Type: text/plain\n!fly-replay", "Retry-After: 1\n!fly-replay", "!fly-replay" ]
--- response_body_like eval
[ qr/already replayed/, qr/primary region could not be reached/, qr/"posts"|\[/ ]
--- error_log_atl
qr/\[error\] .*fly_replay: request replayed from region "ord" to region "atl", which is not the primary region "scl"/
--- error_log_ord
qr/\[error\] .*fly_replay: .*"scl" \(fly-replay-failed\).*region "ord" is not the primary/


=== TEST 10: loop safety through the emulator: configs that disagree about the primary end in 503, not a loop
--- http_config
fly_replay on;
--- env_scl
PRIMARY_REGION=ord
--- env_ord
PRIMARY_REGION=scl
--- env_atl
PRIMARY_REGION=scl
--- request
POST /posts
{}
--- region: atl
--- error_code: 503
--- answered_by: scl
--- response_body_like: already replayed
--- error_log_scl
qr/\[error\] .*replayed from region "atl" to region "scl", which is not the primary region "ord"/


=== TEST 11: a 2 MB POST in atl lands in scl through fly_replay_forward; without it 413
--- http_config
fly_replay on;
client_max_body_size 10m;
--- config
location /fwd/ {
    fly_replay_forward @primary;
    proxy_pass http://app/;
}
location / { proxy_pass http://app; }
location @primary {
    proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%;
    proxy_set_header X-Forwarded-From %%REGION%%;
}
--- config_scl
location /fwd/ { proxy_pass http://app/; }
location / { proxy_pass http://app; }
--- test
my $body = join '', map { chr(($_ * 13) % 256) } 1 .. 2_000_000;
my $got = send_request(method => 'POST', path => '/fwd/echo', region => 'atl', body => $body, raw_body => 1);
is($got->{status}, 200, 'the 2 MB POST succeeds');
is($got->{headers}{'x-app-region'}, 'scl', 'handled by the scl app');
is($got->{headers}{'fly-emulator-region'}, 'atl', 'through atl (no replay: Fly could not)');
my $echo = json_decode($got->{content});
is($echo->{body_sha256}, sha256_hex($body), 'the body arrived intact');
is($echo->{headers}{'x-forwarded-from'}, 'atl', 'through the named location');
my $small = send_request(method => 'POST', path => '/fwd/echo', region => 'atl', body => 'small');
is($small->{headers}{'fly-emulator-route'}, 'atl>scl', 'a small body is still replayed');
my $no = send_request(method => 'POST', path => '/echo', region => 'atl', direct => 1, body => $body, raw_body => 1);
is($no->{status}, 413, 'without fly_replay_forward: 413');
like($no->{content}, qr/too large to be replayed/, 'with a clear reason');


=== TEST 12: a chunked write: forwarded when a location is set, else 411
--- http_config
fly_replay on;
--- config
location /fwd/ { fly_replay_forward @primary; proxy_pass http://app/; }
location / { proxy_pass http://app; }
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
--- config_scl
location /fwd/ { proxy_pass http://app/; }
location / { proxy_pass http://app; }
--- request eval
[ { method => 'POST', path => '/fwd/echo', region => 'atl', direct => 1, body => 'chunk' x 1000, chunked => 1 },
  { method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'chunk' x 1000, chunked => 1 } ]
--- error_code eval
[ 200, 411 ]
--- response_headers eval
[ 'X-App-Region: scl', '!X-App-Region' ]
--- response_body_like eval
[ qr/"body_length": 5000/, qr/Content-Length/ ]


=== TEST 13: fly_replay_forward ... always: a POST sent straight to atl (no Fly proxy) is handled by scl
--- http_config
fly_replay on;
--- config
fly_replay_forward @primary always;
location / { proxy_pass http://app; }
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
--- test
my $got = send_request(method => 'POST', path => '/posts', region => 'atl', direct => 1,
                       headers => { 'Content-Type' => 'application/json' }, body => '{"title":"forwarded"}');
is($got->{status}, 201, 'the write succeeds');
is($got->{headers}{'x-app-region'}, 'scl', 'handled by the scl app');
ok(!exists $got->{headers}{'fly-replay'}, 'no fly-replay answer');
my $id = json_decode($got->{content})->{id};
my ($title) = $t->dbh('scl')->selectrow_array('SELECT title FROM posts WHERE id = ?', undef, $id);
is($title, 'forwarded', 'the row is on the primary');
my $get = send_request(path => '/posts', region => 'atl', direct => 1);
is($get->{headers}{'x-app-region'}, 'atl', 'reads stay in atl');


=== TEST 14: malformed fly-replay-src and cookie values count as absent and are logged at info at most
--- http_config
fly_replay on;
fly_replay_sticky 10s;
--- request eval
[ { method => 'POST', path => '/echo', region => 'atl', body => 'x',
    headers => { 'fly-replay-src' => 'region=;t=abc;;garbage' } },
  { method => 'GET', path => '/echo', region => 'atl', headers => { Cookie => 'fly-replay-until=soon' } },
  { method => 'GET', path => '/echo', region => 'atl', headers => { Cookie => 'fly-replay-until=' . ('9' x 40) } },
  { method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'x',
    headers => { 'fly-replay-src' => 'instance=a b;region=ord;t=1' } } ]
--- error_code eval
[ 200, 200, 200, 409 ]
--- answered_by eval
[ 'scl', 'atl', 'atl', undef ]
--- error_log_atl
qr/\[info\] .*ignoring malformed fly-replay-src/
qr/\[info\] .*ignoring malformed fly-replay-until cookie/
--- no_error_log_atl
[error]
[crit]


=== TEST 15: a WebSocket upgrade is replayed before upgrading when the rule says so, else it stays
--- http_config
map $http_upgrade $connection_upgrade { default upgrade; '' close; }
fly_replay on;
--- config
location = /ws {
    fly_replay always;
    proxy_pass http://app;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
}
location = /ws-local {
    proxy_pass http://app/ws;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
}
--- test
for my $case (['/ws', 'scl'], ['/ws-local', 'atl']) {
    my ($path, $want) = @$case;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->emulator_port('atl'), Timeout => scaled(5)) or die;
    print $s "GET $path HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    my $head = '';
    while (my $l = <$s>) { $head .= $l; last if $l eq "\r\n" }
    like($head, qr{^HTTP/1\.1 101 }, "$path: 101 Switching Protocols");
    like($head, qr/fly-emulator-region: $want/i, "$path: upgraded in $want");
    print $s "ping";
    my $got = '';
    while (length $got < 4) { sysread($s, $got, 4 - length $got, length $got) or last }
    is($got, 'ping', "$path: the tunnel works");
    close $s;
}


=== TEST 16: replay directives inherit from http to server to location, and off turns them off
--- http_config
fly_replay on;
fly_replay_status 418;
--- config
location = /off { fly_replay off; proxy_pass http://app/echo; }
location = /inherit { proxy_pass http://app/echo; }
--- request eval
[ { method => 'POST', path => '/off', region => 'ord', direct => 1, body => 'x' },
  { method => 'POST', path => '/inherit', region => 'ord', direct => 1, body => 'x' } ]
--- error_code eval
[ 200, 418 ]


=== TEST 17: $fly_region, $fly_primary_region and $fly_is_primary in every region
--- config
location = /vars { return 200 "region=$fly_region primary=$fly_primary_region is_primary=$fly_is_primary\n"; }
--- request eval
[ map { { path => '/vars', region => $_, direct => 1 } } qw(scl ord atl) ]
--- response_body eval
[ "region=scl primary=scl is_primary=1\n", "region=ord primary=scl is_primary=0\n",
  "region=atl primary=scl is_primary=0\n" ]


=== TEST 18: fly_region and fly_primary_region directives win over the environment
--- http_config
fly_region iad;
fly_primary_region ord;
fly_replay on;
--- config
location = /vars { return 200 "region=$fly_region primary=$fly_primary_region is_primary=$fly_is_primary\n"; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/vars', region => 'scl', direct => 1 },
  { method => 'POST', path => '/echo', region => 'scl', direct => 1, body => 'x' } ]
--- error_code eval
[ 200, 409 ]
--- response_body eval
[ "region=iad primary=ord is_primary=0\n", "" ]
--- response_headers eval
[ '', 'fly-replay: region=ord;state=method' ]
