# Read your writes through WAL positions (issue 9), against the test bed's
# real streaming replica: a write answered in scl sets fly-lsn; a read in
# atl with it waits until atl's replica has replayed that position and is
# answered by atl, or by scl once fly_consistency_wait is over; reads
# without it are never held.  The cookie is cleared once passed; a HIT is
# not used before.  Replay is paused with pg_wal_replay_pause() (the
# replica keeps receiving WAL).
use FlyEdge::Test;
use FlyEdge::Consistency;

our $CONF = <<"EOF";
fly_replay on;
$PG_CONF
EOF

# Where a test must tell "did not wait" from "waited for the configured
# wait", the wait is at least 5 times the bound (both scaled).
our $BOUND = 2;
our $LONG_WAIT = int(scaled($BOUND * 5) * 1000) . 'ms';

our $SHOW = <<'EOF';
add_header X-Write-Lsn "$fly_write_lsn" always;
add_header X-Replica-Lsn "$fly_replica_lsn" always;
add_header X-Fly-Replay "$fly_replay" always;
EOF

sub post {
    my ($region, $title, %o) = @_;
    return send_request(method => 'POST', path => '/posts', region => $region,
                        headers => { 'Content-Type' => 'application/json' },
                        body => qq{{"title":"$title"}}, %o);
}

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; <$fh> // '' }

sub set_cookies { my ($res) = @_; my $v = $res->{headers}{'set-cookie'}; return ref $v ? @$v : defined $v ? ($v) : () }

sub fly_lsn_cookie { my ($res) = @_; my ($c) = grep { /^fly-lsn=/ } set_cookies($res); $c }

run_tests();

__DATA__

=== TEST 1: without fly_postgres: no fly-lsn is set, and one sent is not looked at
--- http_config
fly_replay on;
fly_consistency off;
--- test
my $w = main::post('atl', 'no pg');
is($w->{status}, 201, 'the write succeeds');
is($w->{headers}{'fly-emulator-region'}, 'scl', 'in scl');
ok(!defined main::fly_lsn_cookie($w), 'no fly-lsn cookie');
my $r = send_request(path => '/posts', region => 'atl', headers => { Cookie => 'fly-lsn=FFFFFFFF/FFFFFFFF' });
is($r->{status}, 200, 'a read with a cookie far ahead');
is($r->{headers}{'fly-emulator-region'}, 'atl', 'is answered by atl at once');


=== TEST 2: fly_consistency lsn without fly_postgres fails nginx -t, naming the directive's place
--- http_config
fly_replay on;
fly_consistency lsn;
--- must_die
--- error_log
qr/"fly_consistency lsn" needs "fly_postgres" \(in \S+http\.conf:2\)/


=== TEST 3: a write answered in scl gets fly-lsn: the primary's position after the write; a read in atl with it is answered there once replayed, and clears it
--- http_config eval: $::CONF . "fly_consistency lsn;\n"
--- config eval
"location / {\n$::SHOW    proxy_pass http://app;\n}\n"
--- cookie_jar
--- test
my ($before) = $t->dbh('scl')->selectrow_array('SELECT pg_current_wal_insert_lsn()');
my $w = main::post('atl', 'read me');
is($w->{status}, 201, 'the write succeeds');
is($w->{headers}{'fly-emulator-route'}, 'atl>scl', 'replayed to scl');
my $c = main::fly_lsn_cookie($w);
like($c, qr{^fly-lsn=[0-9A-F]{1,8}/[0-9A-F]{1,8}; Max-Age=60; Path=/; HttpOnly; SameSite=Lax$},
     'the cookie: an LSN, HttpOnly, Path=/, SameSite=Lax, a short Max-Age');
my ($v) = $c =~ /^fly-lsn=([^;]+)/;
is($w->{headers}{'x-write-lsn'}, $v, '$fly_write_lsn is the position set');
my ($after) = $t->dbh('scl')->selectrow_array('SELECT pg_current_wal_insert_lsn()');
ok(parse_lsn($v) > parse_lsn($before), "it is past the position before the write ($before < $v)");
ok(parse_lsn($v) <= parse_lsn($after), "and not past the primary's now ($v <= $after)");
my $id = json_decode($w->{content})->{id};

ok($t->wait_for_pg_replication(scaled(10)), 'the replica replays the write');
my $r = send_request(path => "/posts/$id", region => 'atl');
is($r->{status}, 200, 'the read with the cookie');
is($r->{headers}{'fly-emulator-region'}, 'atl', 'is answered by atl');
is(json_decode($r->{content})->{title}, 'read me', 'with the write');
is($r->{headers}{'x-write-lsn'}, $v, '$fly_write_lsn is the fence in atl');
ok(parse_lsn($r->{headers}{'x-replica-lsn'}) >= parse_lsn($v), '$fly_replica_lsn is past it');
is(main::fly_lsn_cookie($r), 'fly-lsn=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax', 'and clears the cookie');
ok(!defined cookie_jar()->cookie('fly-lsn'), 'which the client drops');
my $again = send_request(path => "/posts/$id", region => 'atl');
is($again->{headers}{'fly-emulator-region'}, 'atl', 'the next read is answered by atl');
ok(!defined main::fly_lsn_cookie($again), 'without Set-Cookie');
ok(!$again->{headers}{'x-write-lsn'}, 'and without a fence ($fly_write_lsn empty)');


=== TEST 4: replay paused: a read in atl with the cookie waits, and is answered by atl once the replica has replayed the write
--- http_config eval: $::CONF . "fly_consistency lsn;\nfly_consistency_wait 60s;\n"
--- cookie_jar
--- test
$t->pause_pg_replay;
my $w = main::post('atl', 'wait for me');
is($w->{status}, 201, 'the write succeeds in scl');
my $lsn = cookie_jar()->cookie('fly-lsn');
ok($lsn, "the client has fly-lsn=$lsn");
my $id = json_decode($w->{content})->{id};
my ($seen) = $t->dbh('atl')->selectrow_array('SELECT count(*) FROM posts WHERE id = ?', undef, $id);
is($seen, 0, 'the replica has not replayed it');

my $off = $t->error_log_size('atl');
my $g = bg_request(path => "/posts/$id", region => 'atl', headers => { Cookie => "fly-lsn=$lsn" });
ok(log_since_has('atl', $off, qr/fly consistency: waiting up to 60000 ms for the replica to replay \Q$lsn\E/),
   'atl parks the read');
ok(!bg_answered($g), 'the read is not answered while the replica is behind');
$t->resume_pg_replay;
my $r = bg_response($g);
is($r->{status}, 200, 'once replayed, the read is answered');
is($r->{headers}{'fly-emulator-region'}, 'atl', 'by atl');
is(json_decode($r->{content})->{title}, 'wait for me', 'with the write');
like($r->{headers}{'set-cookie'} // '', qr/^fly-lsn=; Max-Age=0/, 'and clears the cookie');
like($t->error_log_since('atl', $off), qr/fly consistency: serving here \(caught up\), fence \Q$lsn\E/,
     'atl logged why');


=== TEST 5: replay paused past fly_consistency_wait: the read is replayed to scl (state=lsn), which has the write
--- http_config eval: $::CONF . "fly_consistency lsn;\nfly_consistency_wait 1s;\n"
--- cookie_jar
--- test
$t->pause_pg_replay;
my $w = main::post('atl', 'too late');
my $id = json_decode($w->{content})->{id};
my $lsn = cookie_jar()->cookie('fly-lsn');
my $off = $t->error_log_size('atl');
my $r = send_request(path => "/posts/$id", region => 'atl');
is($r->{status}, 200, 'the read is answered');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'by scl');
is($r->{headers}{'fly-emulator-route'}, 'atl>scl', 'replayed from atl');
is(json_decode($r->{content})->{title}, 'too late', 'with the write');
like($t->error_log_since('atl', $off), qr/fly consistency: replaying, state=lsn \(waited out\), fence \Q$lsn\E/,
     'atl waited, then replayed it');
ok($t->wait_until(sub { main::slurp($t->access_log_path('atl')) =~ /fr="region=scl;state=lsn"/ }, scaled(5)),
   'with fly-replay: region=scl;state=lsn');
ok(!defined main::fly_lsn_cookie($r), 'scl does not clear the cookie');
is(cookie_jar()->cookie('fly-lsn'), $lsn, 'the client keeps it');


=== TEST 6: replay paused, no cookie: the read is answered by atl at once (from its replica, without the write)
--- http_config eval: $::CONF . "fly_consistency lsn;\nfly_consistency_wait $::LONG_WAIT;\n"
--- test
$t->pause_pg_replay;
my $w = main::post('atl', 'not waited for');
my $id = json_decode($w->{content})->{id};
ok(main::fly_lsn_cookie($w), 'the write set the cookie (this client drops it)');
my $r = send_request(path => "/posts/$id", region => 'atl');
is($r->{headers}{'fly-emulator-region'}, 'atl', 'answered by atl');
is($r->{status}, 404, 'from a replica that has not replayed the write');
cmp_ok($r->{elapsed}, '<', scaled($main::BOUND), "without waiting (fly_consistency_wait is $main::LONG_WAIT)");
ok(!defined main::fly_lsn_cookie($r), 'no Set-Cookie');


=== TEST 7: a malformed cookie counts as absent (logged at info); fly_consistency off in a location: the cookie is not looked at there
--- http_config eval: $::CONF . "fly_consistency lsn;\nfly_consistency_wait $::LONG_WAIT;\n"
--- config
location / {
    proxy_pass http://app;
}
location /echo {
    fly_consistency off;
    proxy_pass http://app;
}
--- test
$t->pause_pg_replay;
my $w = main::post('atl', 'ahead of the replica');
my ($lsn) = main::fly_lsn_cookie($w) =~ /^fly-lsn=([^;]+)/;
for my $bad ('banana', '0/', '/1', '1/2/3', '123456789/0', '0x1/0', '0/1 2', '') {
    my $off = $t->error_log_size('atl');
    my $r = send_request(path => '/posts', region => 'atl', headers => { Cookie => "a=b; fly-lsn=$bad" });
    is($r->{headers}{'fly-emulator-region'}, 'atl', "fly-lsn=$bad: answered by atl");
    cmp_ok($r->{elapsed}, '<', scaled($main::BOUND), "fly-lsn=$bad: at once");
    ok(!defined main::fly_lsn_cookie($r), "fly-lsn=$bad: not cleared");
}
like(block_error_log('atl'), qr/\[info\].*fly_consistency: ignoring malformed fly-lsn cookie/, 'logged at info');
my $e = send_request(path => '/echo', region => 'atl', headers => { Cookie => "fly-lsn=$lsn" });
is($e->{headers}{'fly-emulator-region'}, 'atl', 'fly_consistency off: a cookie ahead is answered by atl');
cmp_ok($e->{elapsed}, '<', scaled($main::BOUND), 'at once');
ok(!defined main::fly_lsn_cookie($e), 'and not cleared');


=== TEST 8: fly_consistency_wait 0: a read behind is replayed at once (state=lsn)
--- http_config eval: $::CONF . "fly_consistency lsn;\nfly_consistency_wait 0;\n"
--- cookie_jar
--- test
$t->pause_pg_replay;
my $w = main::post('atl', 'zero wait');
my $off = $t->error_log_size('atl');
my $r = send_request(path => '/posts', region => 'atl');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'replayed to scl');
like($t->error_log_since('atl', $off), qr/replaying, state=lsn \(waited out\)/, 'without parking');
unlike($t->error_log_since('atl', $off), qr/fly consistency: waiting up to/, 'never parked');


=== TEST 9: in scl: writes that succeed get the cookie, failed writes and reads do not; the cookie is not cleared there
--- http_config eval: $::CONF . "fly_consistency lsn;\n"
--- config eval
"location / {\n$::SHOW    proxy_pass http://app;\n}\nlocation = /made-here { fly_replay_methods POST; return 201 \"made\\n\"; }\n"
--- cookie_jar
--- test
my $ok = main::post('scl', 'in scl');
is($ok->{status}, 201, 'a write in scl');
ok(main::fly_lsn_cookie($ok), 'gets the cookie');
my $id = json_decode($ok->{content})->{id};
my $bad = send_request(method => 'POST', path => '/posts', region => 'scl',
                       headers => { 'Content-Type' => 'application/json' }, body => '{}');
is($bad->{status}, 422, 'a write the app refuses');
ok(!defined main::fly_lsn_cookie($bad), 'gets none');
my $put = send_request(method => 'PUT', path => "/posts/$id", region => 'scl',
                       headers => { 'Content-Type' => 'application/json' }, body => '{"title":"put"}');
is($put->{status}, 200, 'PUT');
ok(main::fly_lsn_cookie($put), 'gets one');
my $del = send_request(method => 'DELETE', path => "/posts/$id", region => 'scl');
is($del->{status}, 204, 'DELETE (204, no body)');
ok(main::fly_lsn_cookie($del), 'gets one');
my $made = send_request(method => 'POST', path => '/made-here', region => 'scl');
is($made->{status}, 201, 'an answer nginx makes itself');
is($made->{content}, "made\n", 'whole');
ok(main::fly_lsn_cookie($made), 'gets one');
my $get = send_request(path => '/posts', region => 'scl');
is($get->{status}, 200, 'a read in scl, with the cookie');
ok(!defined main::fly_lsn_cookie($get), 'sets nothing: not cleared in the primary');
my $head = send_request(method => 'HEAD', path => '/posts', region => 'scl');
ok(!defined main::fly_lsn_cookie($head), 'nor does a HEAD');
ok(cookie_jar()->cookie('fly-lsn'), 'the client keeps its cookie');


=== TEST 10: a cache HIT is not used before the replica has replayed the cookie's position; once it has, the read skips the cache once (BYPASS, stored), clears the cookie, and the next one HITs
--- http_config eval: $::CONF . "fly_redis \"%%REDIS_URL%%\";\nfly_consistency lsn;\nfly_consistency_wait 1s;\n"
--- config
location / {
    proxy_pass http://app;
}
location /hdr {
    fly_cache on;
    fly_cache_valid 200 5m;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- cookie_jar
--- test
my $path = '/hdr?body=cached&k=' . int(rand(1e9));
my $m = send_request(path => $path, region => 'atl');
is($m->{headers}{'x-cache'}, 'MISS', 'MISS in atl');
ok($t->wait_until(sub { send_request(path => $path, region => 'atl')->{headers}{'x-cache'} eq 'HIT' }, scaled(5)),
   'then a HIT in atl');
$t->pause_pg_replay;
main::post('atl', 'ahead');
my $lsn = cookie_jar()->cookie('fly-lsn');
ok($lsn, 'the client has a cookie ahead of the replica');
my $r = send_request(path => $path, region => 'atl');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'the read is not a HIT in atl: replayed to scl');
isnt($r->{headers}{'x-cache'} // '', 'HIT', 'nor a HIT there (scl has no copy yet)');
$t->resume_pg_replay;
ok($t->wait_for_pg_replication(scaled(10)), 'the replica replays');
my $h = send_request(path => $path, region => 'atl');
is($h->{headers}{'fly-emulator-region'}, 'atl', 'now answered by atl');
is($h->{headers}{'x-cache'}, 'BYPASS', 'not from the cache (a copy there may predate the write)');
cmp_ok($h->{headers}{'x-origin-count'}, '>', $m->{headers}{'x-origin-count'}, "answered by atl's app anew");
like(main::fly_lsn_cookie($h) // '', qr/^fly-lsn=; Max-Age=0/, 'which clears the cookie');
my $h1;
ok($t->wait_until(sub { $h1 = send_request(path => $path, region => 'atl'); $h1->{headers}{'x-cache'} eq 'HIT' }, scaled(5)),
   'the next read (no cookie) HITs');
ok(!defined main::fly_lsn_cookie($h1), 'without Set-Cookie');

# a read that skips the cache and clears the cookie is still stored, without the Set-Cookie
my $p2 = '/hdr?body=fresh&k=' . int(rand(1e9));
cookie_jar()->set('fly-lsn', '0/1');
my $m2 = send_request(path => $p2, region => 'atl');
is($m2->{headers}{'x-cache'}, 'BYPASS', 'a read with a cookie passed skips the cache');
like(main::fly_lsn_cookie($m2) // '', qr/^fly-lsn=; Max-Age=0/, 'clears it');
my $h2;
ok($t->wait_until(sub { $h2 = send_request(path => $p2, region => 'atl'); $h2->{headers}{'x-cache'} eq 'HIT' }, scaled(5)),
   'and was stored');
ok(!defined main::fly_lsn_cookie($h2), 'without the Set-Cookie (the client sent none)');


=== TEST 11: in scl a read whose fly-lsn the worker has not sampled yet (a write of the last second) skips the cache; one sampled is a HIT
--- http_config eval: $::CONF . "fly_redis \"%%REDIS_URL%%\";\nfly_consistency lsn;\n"
--- config
location / {
    proxy_pass http://app;
}
location /hdr {
    fly_cache on;
    fly_cache_valid 200 5m;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my $path = '/hdr?body=cached&k=' . int(rand(1e9));
my $m = send_request(path => $path, region => 'scl', direct => 1);
is($m->{headers}{'x-cache'}, 'MISS', 'MISS in scl');
ok($t->wait_until(sub { send_request(path => $path, region => 'scl', direct => 1)->{headers}{'x-cache'} eq 'HIT' }, scaled(5)),
   'then a HIT');
my ($now) = $t->dbh('scl')->selectrow_array('SELECT pg_current_wal_insert_lsn()');
my $ahead = send_request(path => $path, region => 'scl', direct => 1, headers => { Cookie => 'fly-lsn=FFFFFFFF/0' });
is($ahead->{headers}{'x-cache'}, 'BYPASS', 'a cookie ahead of the sample: not from the cache');
is($ahead->{status}, 200, 'answered');
ok(!defined main::fly_lsn_cookie($ahead), 'the cookie is not cleared in scl');
my $old = send_request(path => $path, region => 'scl', direct => 1, headers => { Cookie => 'fly-lsn=0/1' });
is($old->{headers}{'x-cache'}, 'HIT', 'a cookie the sample has passed: a HIT');
ok(!defined main::fly_lsn_cookie($old), 'not cleared either');
my $s;
ok($t->wait_until(sub { $s = send_request(path => $path, region => 'scl', direct => 1, headers => { Cookie => "fly-lsn=$now" });
                        $s->{headers}{'x-cache'} eq 'HIT' }, scaled(5)),
   "a cookie at the primary's position now ($now): a HIT once sampled");
