# The local multi-region test bed itself: real streaming replication in
# PostgreSQL and Redis, region-local Redis writes, the demo app per region,
# nginx per region (master + 2 workers, reloads), and the fault hooks.
use FlyEdge::Test;

run_tests();

__DATA__

=== TEST 1: a row written through the primary region's app appears on the replica database
--- request
POST /posts
{"title":"replicated","body":"written in scl"}
--- more_headers
Content-Type: application/json
--- region: scl
--- error_code: 201
--- answered_by: scl
--- response_headers
X-App-Region: scl
--- response_body_like: "region": "scl"
--- test
my $id = json_decode($res->{content})->{id};
ok($id, "the app returned the new row's id");
my $row = $t->dbh('scl')->selectrow_hashref('SELECT title, region FROM posts WHERE id = ?', undef, $id);
is($row->{title}, 'replicated', 'the row is on the primary');
# the replica serves ord and atl: poll it (bounded) until the row streams in
my $seen = $t->wait_until(sub {
    $t->dbh('atl')->selectrow_hashref('SELECT title FROM posts WHERE id = ?', undef, $id)
}, scaled(10));
is($seen && $seen->{title}, 'replicated', 'the row reached the replica by WAL streaming');
my ($standby) = $t->dbh('ord')->selectrow_array('SELECT pg_is_in_recovery()');
ok($standby, 'the replica database is a standby');
my ($walrcv) = $t->dbh('ord')->selectrow_array('SELECT status FROM pg_stat_wal_receiver');
is($walrcv, 'streaming', 'the replica receives WAL by streaming');
# and the replica regions' apps read it from there
for my $r (qw(ord atl)) {
    my $got = send_request(method => 'GET', path => "/posts/$id", region => $r);
    is($got->{status}, 200, "GET /posts/$id in $r");
    is($got->{headers}{'x-app-region'}, $r, "answered by the $r app");
    like($got->{content}, qr/"title": "replicated"/, "$r reads the replicated row");
}


=== TEST 2: without fly-edge, a write that reaches a replica region fails (read-only database)
--- request
POST /posts
{"title":"lost write"}
--- more_headers
Content-Type: application/json
--- region: atl
--- error_code: 500
--- answered_by: atl
--- response_headers
X-App-Region: atl
--- response_body_like: read-only transaction
--- test
my ($n) = $t->dbh('scl')->selectrow_array(q{SELECT count(*) FROM posts WHERE title = 'lost write'});
is($n, 0, 'nothing was written on the primary');


=== TEST 3: PostgreSQL runs as an unprivileged user, streaming from the primary
--- test
my ($senders) = $t->dbh('scl')->selectrow_array(
    q{SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'});
is($senders, 1, 'the primary streams WAL to one replica');
is($t->pg_port('ord'), $t->pg_port('atl'), 'ord and atl share the one replica');
isnt($t->pg_port('ord'), $t->pg_port('scl'), 'scl has the primary');
my $err;
eval { $t->dbh('ord')->do(q{INSERT INTO posts (title, region) VALUES ('x', 'test')}); 1 } or $err = $@;
like($err, qr/read-only transaction/, 'the replica refuses writes');
my ($datadir) = $t->dbh('scl')->selectrow_array('SELECT current_setting(\'data_directory\')');
like($datadir, qr/^\Q@{[$t->dir]}\E/, 'the data directory is under the test directory');
if ($> == 0) {
    for my $name (qw(pg-primary pg-replica)) {
        my $pid = $t->pid($name);
        my $uid = (stat "/proc/$pid")[4];
        is(scalar getpwuid($uid), 'postgres', "$name runs as postgres, not root");
    }
}


=== TEST 4: a key set on the primary Redis appears on every regional replica
--- test
my $key = "k-" . time;
is($t->redis('scl')->set($key, 'from-primary'), 'OK', 'SET on the primary');
for my $r (qw(ord atl)) {
    my $v = $t->wait_until(sub { $t->redis($r)->get($key) }, scaled(5));
    is($v, 'from-primary', "${r}'s replica has the key");
    my $info = $t->redis($r)->info('replication');
    is($info->{role}, 'slave', "$r is a replica");
    is($info->{master_link_status}, 'up', "$r is linked to the primary");
    is($info->{master_port}, $t->redis_port('scl'), "$r replicates scl");
}


=== TEST 5: a key set directly on a regional replica stays in that region
--- test
my $key = "local-" . time;
is($t->redis('atl')->set($key, 'atl only'), 'OK', 'a replica accepts writes (replica-read-only no)');
# a marker written on the primary afterwards: once ord has it, ord is caught up
my $marker = "marker-" . time;
$t->redis('scl')->set($marker, 1);
ok($t->wait_until(sub { $t->redis('ord')->get($marker) }, scaled(5)), 'ord caught up with the primary');
ok($t->wait_until(sub { $t->redis('atl')->get($marker) }, scaled(5)), 'atl caught up with the primary');
is($t->redis('atl')->get($key), 'atl only', 'the key is still on atl');
is($t->redis('scl')->get($key), undef, 'the key did not reach the primary');
is($t->redis('ord')->get($key), undef, 'the key did not reach ord');
is(scalar $t->redis_cli('atl', 'GET', $key), 'atl only', 'redis_cli reads the region\'s Redis');


=== TEST 6: Redis is configured like the seed deployment (password, memory, no persistence)
--- test
for my $r ($t->regions) {
    my %cfg;
    for my $item (qw(maxmemory maxmemory-policy replica-ignore-maxmemory save appendonly replica-read-only)) {
        my ($k, $v) = $t->redis($r)->config_get($item);
        $cfg{$k} = $v;
    }
    is($cfg{maxmemory}, 64 * 1024 * 1024, "$r maxmemory 64mb");
    is($cfg{'maxmemory-policy'}, 'volatile-lru', "$r volatile-lru");
    is($cfg{'replica-ignore-maxmemory'}, 'no', "$r replica-ignore-maxmemory no");
    is($cfg{save}, '', "$r does not save");
    is($cfg{appendonly}, 'no', "$r no AOF");
    is($cfg{'replica-read-only'}, 'no', "$r replica-read-only no") unless $r eq 'scl';
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->redis_port($r));
    print $sock "PING\r\n";
    my $reply = <$sock>;
    like($reply, qr/^-NOAUTH/, "$r wants the password");
}


=== TEST 7: every region has its own nginx (master + 2 workers) behind the emulator
--- request eval
[ map { { method => 'GET', path => '/echo', region => $_ } } qw(scl ord atl) ]
--- error_code: 200
--- answered_by eval
[qw(scl ord atl)]
--- response_headers eval
[ "X-App-Region: scl", "X-App-Region: ord", "X-App-Region: atl" ]
--- test
for my $r ($t->regions) {
    my @w = $t->nginx_worker_pids($r);
    is(scalar @w, 2, "$r runs 2 workers");
    if ($> == 0) {
        my $uid = (stat "/proc/$w[0]")[4];
        isnt($uid, 0, "${r}'s workers do not run as root");
    }
    my $echo = json_decode(send_request(path => '/echo', region => $r)->{content});
    is($echo->{headers}{'fly-region'}, $r, "the emulator tells ${r}'s app the edge region");
}


=== TEST 8: a configuration change is a reload (same master, new workers), live when configure returns
--- config
location / {
    return 200 "generation two in $fly_edge_test_region\n";
}
--- http_config
map $host $fly_edge_test_region { default "%%REGION%%"; }
--- request
GET /anything
--- region: ord
--- error_code: 200
--- response_body
generation two in ord
--- test
my @before = map { [$_, $t->pid("nginx-$_"), [$t->nginx_worker_pids($_)]] } $t->regions;
$t->configure(all => { config => "location / { return 200 'generation three\\n'; }" });
for my $b (@before) {
    my ($r, $master, $workers) = @$b;
    is($t->pid("nginx-$r"), $master, "$r kept its master process");
    my %old = map { $_ => 1 } @$workers;
    my @new = $t->nginx_worker_pids($r);
    is(scalar(grep { $old{$_} } @new), 0, "$r has only new workers");
    is(send_request(path => '/x', region => $r, direct => 1)->{content}, "generation three\n",
       "$r serves the new configuration at once");
}
like($t->error_log('ord'), qr/\[notice\] \d+#\d+: signal 1 \(SIGHUP\) received/, 'nginx got SIGHUP');


=== TEST 9: per-region configuration and placeholders
--- config
location / { return 200 "default %%REGION%% app=%%APP_PORT%%\n"; }
--- config_atl
location / { return 200 "atl override redis=%%REDIS_PORT%% primary=%%REDIS_PRIMARY_PORT%%\n"; }
--- request eval
[ { path => '/', region => 'ord' }, { path => '/', region => 'atl' } ]
--- response_body eval
[ "default ord app=%%APP_PORT%%\n", "atl override redis=%%REDIS_PORT%% primary=%%REDIS_PORT_SCL%%\n" ]
--- test
like($responses->[0]{content}, qr/app=\d+/, 'placeholders became numbers');
isnt($t->app_port('ord'), $t->app_port('atl'), 'each region has its own app');


=== TEST 10: error_log expectations see this block's lines of the region's log
--- config
location /missing { root %%PREFIX%%/no-such-dir; }
--- request
GET /missing/file
--- region: atl
--- error_code: 404
--- error_log
qr/open\(\) ".*no-such-dir\/missing\/file" failed \(2: No such file or directory\)/
--- error_log_atl
[error]
--- no_error_log_scl
no-such-dir


=== TEST 11: a test section may run several requests with a cookie jar
--- config
location /set { add_header Set-Cookie "a=1; Path=/; Max-Age=60"; add_header Set-Cookie "b=2; Path=/; Max-Age=1"; return 204; }
location /show { return 200 "cookie=[$http_cookie]\n"; }
--- cookie_jar
--- request eval
[ "GET /set", "GET /show" ]
--- error_code eval
[ 204, 200 ]
--- response_body eval
[ undef, "cookie=[a=1; b=2]\n" ]
--- test
is(cookie_jar()->cookie('a'), '1', 'the jar holds the cookie');
ok($t->wait_until(sub { !defined cookie_jar()->cookie('b') }, scaled(5)), 'b expires after its Max-Age=1');
is(send_request(path => '/show', region => 'scl')->{content}, "cookie=[a=1]\n", 'an expired cookie is not sent');


=== TEST 12: fault hooks: stop, start and pause a region's Redis
--- test
my $key = "fault-" . time;
$t->stop_redis('atl');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->redis_port('atl')), 'atl Redis refuses connections when stopped');
$t->redis('scl')->set($key, 'while atl was down');
$t->start_redis('atl');
is($t->wait_until(sub { $t->redis('atl')->get($key) }, scaled(10)), 'while atl was down', 'restarted replica resynced from the primary');
$t->pause_redis('atl');
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->redis_port('atl'), Timeout => scaled(1));
ok($sock, 'a paused Redis still accepts connections');
print $sock "PING\r\n";
# a stopped process cannot answer: no wait is long enough to be wrong here
my $rin = ''; vec($rin, fileno($sock), 1) = 1;
is(select(my $rout = $rin, undef, undef, 0.5), 0, 'a paused Redis does not answer');
$t->resume_redis('atl');
ok(scalar(<$sock>), 'it answers once resumed');
# the clock starts before the pause does, so at least the pause's 0.3 s pass
my $t0 = Time::HiRes::time();
$t->pause_redis('ord', 0.3);
is($t->redis('ord')->ping, 'PONG', 'pause_redis with a duration resumes by itself');
cmp_ok(Time::HiRes::time() - $t0, '>=', 0.29, 'after the pause');


=== TEST 13: a block may change nginx's environment (a restart), send chunked bodies, route by header
--- env_ord
FLY_REGION=mia
--- config
location = /region { return 200 "$fly_region\n"; }
location = /te { return 200 "te=$http_transfer_encoding cl=$http_content_length\n"; }
location / { proxy_pass http://app; }
--- request eval
[ { path => '/region', region => 'ord' },
  { path => '/region', region => 'atl', route => 'header' },
  { method => 'POST', path => '/te', body => 'x' x 100000, chunked => 1, region => 'scl', direct => 1 },
  { method => 'POST', path => '/echo', body => 'x' x 100000, chunked => 1, region => 'scl' } ]
--- response_body_like eval
[ qr/^mia$/, qr/^atl$/, qr/^te=chunked cl=$/, qr/"body_length": 100000,/ ]
--- max_elapsed: 5


=== TEST 14: the environment is back to normal in the next block
--- config
location = /region { return 200 "$fly_region\n"; }
--- request
GET /region
--- region: ord
--- response_body
ord
