# Which requests a replica region sends to the primary, beyond the
# default writes: fly_replay_methods with any method token (PURGE, an
# invented one), and fly_replay_when, the app's own "use the primary"
# signal (MediaWiki's UseDC=master cookie), through the emulator.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);

run_tests();

__DATA__

=== TEST 1: fly_replay_methods PURGE and an invented method: replayed to scl through the emulator, the method intact
--- http_config
fly_replay on;
fly_replay_methods POST PURGE FLY-INVENTED;
--- request eval
[ { method => 'PURGE', path => '/echo', region => 'atl' },
  { method => 'FLY-INVENTED', path => '/echo', region => 'ord' },
  { method => 'REPORT', path => '/echo', region => 'atl' },
  { method => 'PURGEX', path => '/echo', region => 'atl' },
  { method => 'POST', path => '/echo', region => 'ord', body => 'x' },
  { method => 'GET', path => '/echo', region => 'atl' } ]
--- error_code: 200
--- answered_by eval
[ qw(scl scl atl atl scl atl) ]
--- response_headers eval
[ "X-App-Region: scl\nfly-emulator-route: atl>scl", "X-App-Region: scl\nfly-emulator-route: ord>scl",
  "X-App-Region: atl", "X-App-Region: atl", "X-App-Region: scl", "X-App-Region: atl" ]
--- response_body_like eval
[ qr/"method": "PURGE"/, qr/"method": "FLY-INVENTED"/, qr/"method": "REPORT"/, qr/"method": "PURGEX"/,
  qr/"method": "POST"/, qr/"method": "GET"/ ]


=== TEST 2: the replay answer names state=method for a listed token, also with an absolute URI in the request line (as MediaWiki purges)
--- http_config
fly_replay on;
fly_replay_methods PURGE;
--- config
location / {
    add_header X-Fly-Replay "[$fly_replay]" always;
    proxy_pass http://app;
}
--- test
my $before = json_decode(send_request(path => '/__count', region => 'atl', direct => 1)->{content})->{count};
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('atl'), Timeout => 5) or die;
print $s "PURGE http://localhost/wiki/Main_Page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
my $head = '';
while (my $l = <$s>) { $head .= $l; last if $l eq "\r\n" }
close $s;
like($head, qr{^HTTP/1\.1 409 }, 'PURGE http://host/path in atl gets the replay answer');
like($head, qr{^fly-replay: region=scl;state=method\r$}m, 'fly-replay names the primary, state=method');
like($head, qr{^X-Fly-Replay: \[method\]\r$}m, '$fly_replay is "method"');
my $post = send_request(method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'x');
is($post->{status}, 200, 'POST is no longer listed: it passes');
my $after = json_decode(send_request(path => '/__count', region => 'atl', direct => 1)->{content})->{count};
is($after, $before + 1, 'the atl app saw the POST only');


=== TEST 3: method tokens inherit as one list: a location's own fly_replay_methods replaces the inherited tokens
--- http_config
fly_replay on;
fly_replay_methods DELETE PURGE;
--- config
location /own/ {
    fly_replay_methods POST;
    proxy_pass http://app/;
}
location / { proxy_pass http://app; }
--- request eval
[ { method => 'PURGE', path => '/echo', region => 'atl', direct => 1 },
  { method => 'PURGE', path => '/own/echo', region => 'atl', direct => 1 },
  { method => 'POST', path => '/own/echo', region => 'atl', direct => 1, body => 'x' },
  { method => 'DELETE', path => '/own/echo', region => 'atl', direct => 1 } ]
--- error_code eval
[ 409, 200, 409, 200 ]


=== TEST 4: a write with a listed token that passes in the primary sets the sticky cookie
--- http_config
fly_replay on;
fly_replay_methods PURGE;
fly_replay_sticky 5s;
--- request eval
[ { method => 'PURGE', path => '/echo', region => 'scl', direct => 1 },
  { method => 'POST', path => '/echo', region => 'scl', direct => 1, body => 'x' } ]
--- error_code: 200
--- response_headers_like eval
[ 'Set-Cookie: ^fly-replay-until=\d+; Max-Age=5;', '!Set-Cookie' ]


=== TEST 5: MediaWiki's read-your-writes: the primary sets UseDC=master after a write, fly_replay_when $cookie_UseDC sends that client's reads to scl
--- http_config
fly_replay on;
map $request_method $usedc_cookie { POST "UseDC=master; Max-Age=10; Path=/"; default ""; }
--- config
fly_replay_when $cookie_UseDC;
location / {
    proxy_pass http://app;
}
--- config_scl
location / {
    add_header Set-Cookie $usedc_cookie;    # what MediaWiki does after a save
    proxy_pass http://app;
}
--- cookie_jar
--- test
my $jar = cookie_jar();
my $before = send_request(path => '/posts', region => 'atl');
is($before->{headers}{'fly-emulator-region'}, 'atl', 'before any write, a read in atl stays in atl');
my $w = send_request(method => 'POST', path => '/posts', region => 'atl',
                     headers => { 'Content-Type' => 'application/json' }, body => '{"title":"usedc"}');
is($w->{status}, 201, 'the write succeeds');
is($w->{headers}{'fly-emulator-route'}, 'atl>scl', 'the write was replayed to scl');
is($jar->cookie('UseDC'), 'master', 'the primary set UseDC=master');
my $id = json_decode($w->{content})->{id};
my $r = send_request(path => "/posts/$id", region => 'atl');
is($r->{status}, 200, 'the next read of that client succeeds');
is($r->{headers}{'fly-emulator-route'}, 'atl>scl', 'and was replayed from atl to scl');
is($r->{headers}{'x-app-region'}, 'scl', 'answered by the scl app, on the primary database');
my $direct = send_request(path => '/posts', region => 'atl', direct => 1);
is($direct->{status}, 409, 'straight to atl: the replay answer');
is($direct->{headers}{'fly-replay'}, 'region=scl;state=when', 'state=when');
$jar->clear;
my $other = send_request(path => "/posts/$id", region => 'atl');
is($other->{headers}{'fly-emulator-region'}, 'atl', 'a client without the cookie reads in atl');


=== TEST 6: any value that is non-empty and not "0" replays, whatever the method; "0" and empty do not; a map like MediaWiki's $mw_primary_page
--- http_config
fly_replay on;
map $arg_title $primary_page { "Special:UserLogin" 1; default ""; }
--- config
fly_replay_when $cookie_UseDC $primary_page;
location / {
    add_header X-Fly-Replay "[$fly_replay]" always;
    proxy_pass http://app;
}
--- request eval
[ { method => 'GET', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=master' } },
  { method => 'HEAD', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=1' } },
  { method => 'OPTIONS', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=x' } },
  { method => 'PROPFIND', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=x' } },
  { method => 'POST', path => '/echo', region => 'ord', direct => 1, body => 'x', headers => { Cookie => 'UseDC=x' } },
  { method => 'GET', path => '/echo?title=Special:UserLogin', region => 'ord', direct => 1 },
  { method => 'GET', path => '/echo?title=Main_Page', region => 'ord', direct => 1 },
  { method => 'GET', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=0' } },
  { method => 'GET', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=' } },
  { method => 'GET', path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDCx=1; other=1' } } ]
--- error_code eval
[ 409, 409, 409, 409, 409, 409, 200, 200, 200, 200 ]
--- response_headers eval
[ "fly-replay: region=scl;state=when\nX-Fly-Replay: [when]", "fly-replay: region=scl;state=when",
  "fly-replay: region=scl;state=when", "fly-replay: region=scl;state=when",
  "fly-replay: region=scl;state=method\nX-Fly-Replay: [method]", "fly-replay: region=scl;state=when",
  "!fly-replay\nX-Fly-Replay: []\nX-App-Region: ord", "!fly-replay\nX-App-Region: ord",
  "!fly-replay\nX-App-Region: ord", "!fly-replay\nX-App-Region: ord" ]


=== TEST 7: fly_replay_bypass wins over fly_replay_when
--- http_config
fly_replay on;
--- config
fly_replay_when $cookie_UseDC;
fly_replay_bypass $http_x_answer_here;
location / { proxy_pass http://app; }
--- request eval
[ { path => '/echo', region => 'atl', headers => { Cookie => 'UseDC=master', 'X-Answer-Here' => '1' } },
  { path => '/echo', region => 'atl', headers => { Cookie => 'UseDC=master' } } ]
--- error_code: 200
--- answered_by eval
[ qw(atl scl) ]


=== TEST 8: the loop guard holds: a replayed request in a replica region gets the 503; a malformed fly-replay-src counts as absent
--- http_config
fly_replay on;
fly_replay_when $cookie_UseDC;
--- request eval
[ { path => '/echo', region => 'atl', direct => 1,
    headers => { Cookie => 'UseDC=master', 'fly-replay-src' => 'instance=abc;region=ord;t=1700000000000000;state=when' } },
  { path => '/echo', region => 'atl', direct => 1,
    headers => { Cookie => 'UseDC=master', 'fly-replay-src' => 'region=;t=soon' } },
  { path => '/echo', region => 'atl',
    headers => { Cookie => 'UseDC=master', 'fly-replay-src' => 'region=;t=soon' } } ]
--- error_code eval
[ 503, 409, 200 ]
--- response_headers eval
[ "Retry-After: 1\n!fly-replay", "fly-replay: region=scl;state=when", "X-App-Region: scl" ]
--- error_log_atl
qr/\[error\] .*fly_replay: request replayed from region "ord" to region "atl", which is not the primary region "scl"/
qr/\[info\] .*ignoring malformed fly-replay-src/


=== TEST 9: bodies follow the replay rules: a small one is replayed intact, chunked gets 411, over fly_replay_max_body 413, or both go through fly_replay_forward
--- http_config
fly_replay on;
fly_replay_methods DELETE;
fly_replay_max_body 64k;
fly_replay_when $http_x_primary;
--- config
location /fwd/ { fly_replay_forward @primary; proxy_pass http://app/; }
location / { proxy_pass http://app; }
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
--- config_scl
location /fwd/ { proxy_pass http://app/; }
location / { proxy_pass http://app; }
--- test
my $small = join '', map { chr(($_ * 11) % 256) } 1 .. 30_000;
my $big = 'b' x 100_000;
my %p = (method => 'POST', region => 'atl', headers => { 'X-Primary' => 'yes' }, raw_body => 1);
my $a = send_request(%p, path => '/echo', body => $small);
is($a->{status}, 200, 'a POST with X-Primary and a 30 kB body succeeds');
is($a->{headers}{'fly-emulator-route'}, 'atl>scl', 'it was replayed to scl');
is(json_decode($a->{content})->{body_sha256}, sha256_hex($small), 'with its body intact');
my $b = send_request(%p, path => '/echo', body => $big, direct => 1);
is($b->{status}, 413, 'over fly_replay_max_body: 413');
my $c = send_request(%p, path => '/echo', body => $small, direct => 1, chunked => 1);
is($c->{status}, 411, 'chunked: 411');
my $d = send_request(%p, path => '/fwd/echo', body => $big, direct => 1);
is($d->{status}, 200, 'with fly_replay_forward the big one is forwarded');
is($d->{headers}{'x-app-region'}, 'scl', 'to the scl app');
is(json_decode($d->{content})->{body_length}, 100_000, 'with all of its body');
my $e = send_request(method => 'POST', path => '/echo', region => 'atl', body => $big, direct => 1);
is($e->{status}, 200, 'without X-Primary the POST (not in fly_replay_methods here) stays in atl');


=== TEST 10: in the primary region the request passes untouched; fly_replay off in a location turns fly_replay_when off there
--- http_config
fly_replay on;
fly_replay_when $cookie_UseDC;
--- config
location /local/ { fly_replay off; proxy_pass http://app/; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/echo', region => 'scl', direct => 1, headers => { Cookie => 'UseDC=master' } },
  { path => '/local/echo', region => 'atl', direct => 1, headers => { Cookie => 'UseDC=master' } },
  { path => '/echo', region => 'atl', direct => 1, headers => { Cookie => 'UseDC=master' } } ]
--- error_code eval
[ 200, 200, 409 ]
--- response_headers eval
[ "X-App-Region: scl\n!fly-replay", "X-App-Region: atl", "fly-replay: region=scl;state=when" ]


=== TEST 11: fly_replay_when inherits from http to location, and a location's own list replaces it
--- http_config
fly_replay on;
fly_replay_when $cookie_UseDC;
--- config
location /own/ {
    fly_replay_when $http_x_primary;
    proxy_pass http://app/;
}
location / { proxy_pass http://app; }
--- request eval
[ { path => '/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=master' } },
  { path => '/own/echo', region => 'ord', direct => 1, headers => { Cookie => 'UseDC=master' } },
  { path => '/own/echo', region => 'ord', direct => 1, headers => { 'X-Primary' => '1' } } ]
--- error_code eval
[ 409, 200, 409 ]


=== TEST 12: fly_replay_when needs a value
--- config
fly_replay_when;
--- must_die
--- error_log
qr/\[emerg\] invalid number of arguments in "fly_replay_when" directive in \S+\/conf\/server\.conf:1/


=== TEST 13: fly_replay_when is not allowed outside http
--- main_config
fly_replay_when $cookie_UseDC;
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_when" directive is not allowed here in \S+\/conf\/main\.conf:1/


=== TEST 14: fly_replay_methods refuses what is not a token, naming the line
--- config
location / {
    fly_replay_methods PURGE "GET/";
}
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_methods": invalid method "GET\/" in \S+\/conf\/server\.conf:2/


=== TEST 15: fly_cache_methods still takes only GET and HEAD
--- config
fly_cache_methods GET PURGE;
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_methods": invalid method "PURGE" in \S+\/conf\/server\.conf:1/
