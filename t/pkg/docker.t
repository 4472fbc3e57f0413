# The two images of `make docker`, run the way this machine can run them:
# each image is mounted (buildah from + mount; with a Docker engine, read
# through buildah's docker-daemon: transport) and every "machine" is an
# overlay over it that processes are chrooted into, started and stopped by
# PID. The test runs in a mount and network namespace of its own: its
# mounts vanish with it and the images' fixed ports (8080, ...) are the
# namespace's loopback, never this machine's.
#
#   fly-edge:        the entrypoint renders nginx.conf from the environment,
#                    nginx -t passes, secrets stay out of the file; then one
#                    edge in the primary region and one in a replica region,
#                    in front of a small app, with the two Redis below.
#   fly-edge-redis:  the entrypoint as primary and as replica of the first
#                    (on 127.0.0.1 ports): replication, writable replica,
#                    password, maxmemory and eviction settings, persistence.
#
#   make test-docker            (builds the images first)
#   prove t/pkg/docker.t        after make docker
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use FlyEdge::Pkg;
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use POSIX ();
use Test::More;

plan skip_all => 'needs root (buildah, chroot, mounts)' if $> != 0;
in_private_mount_namespace('--net');
run_ok(['ip', 'link', 'set', 'lo', 'up']);

my $build = BUILD;
my $B     = ROOT . '/docker/bin/local-buildah';
my $tag   = $ENV{FLY_EDGE_IMAGE_TAG} // 'latest';
my $engine = !system('sh', '-c', 'command -v docker >/dev/null && docker info >/dev/null 2>&1') ? 1 : 0;
my %IMAGE = map { $_ => ($engine ? "docker-daemon:$_:$tag" : "localhost/$_:$tag") } qw(fly-edge fly-edge-redis);
my $dir   = "$build/pkg/docker-test";

my (@PIDS, @MOUNTS, @CONTAINERS);
END {
    my $rc = $?;
    stop_pid($_, 'KILL', 5) for grep { kill 0, $_ } @PIDS;
    run(['umount', '-R', $_]) for reverse @MOUNTS;
    for my $c (@CONTAINERS) { run([$B, 'umount', $c]); run([$B, 'rm', $c]) }
    $? = $rc;
}

# containers a test that died left behind (by name; only this test's)
for my $name (split /\n/, (run([$B, 'containers', '--format', '{{.ContainerName}}']))[1]) {
    run([$B, 'rm', $name]) if $name =~ /^fly-edge-test-/;
}
remove_tree($dir);

sub last_line { my ($t) = @_; (grep { length } split /\n/, $t)[-1] // '' }

# The image's file system, mounted read-only for our purposes.
sub image_root {
    my ($key) = @_;
    my ($rc, $out) = run([$B, 'from', '--pull=never', '--name', "fly-edge-test-$key", $IMAGE{$key}]);
    BAIL_OUT("image $IMAGE{$key} is not there: run `make docker`\n$out") if $rc;
    my $ctr = last_line($out);
    push @CONTAINERS, $ctr;
    return last_line(run_ok([$B, 'mount', $ctr]));
}

# A machine of an image: an overlay of its own over the image, with /proc.
sub machine {
    my ($lower, $name) = @_;
    my $root = mount_overlay($lower, "$dir/$name");
    push @MOUNTS, $root;
    mount_proc($root);
    return $root;
}

sub in_root { my ($root, $cmd, %o) = @_; run(['chroot', $root, @$cmd], %o) }

# ============================================================ the edge image
my $edge_image = image_root('fly-edge');
ok(-f "$edge_image/usr/lib/nginx/modules/ngx_http_fly_edge_module.so", 'fly-edge: the module is in /usr/lib/nginx/modules');
my $edge = machine($edge_image, 'edge-render');
my (undef, $pkgs) = in_root($edge, ['dpkg-query', '-W', '-f', '${Package} ${Status} ${Version}\n',
                                    'libnginx-mod-http-fly-edge', 'nginx']);
like($pkgs, qr/^libnginx-mod-http-fly-edge install ok installed \S+$/m, 'fly-edge: the module is installed as the Debian package');
like($pkgs, qr/^nginx install ok installed 1\.22\.\S+$/m, "fly-edge: with Debian 12's stock nginx");
my $template = slurp(ROOT . '/docker/nginx.conf');
is(slurp("$edge/etc/fly-edge/nginx.conf"), $template, 'fly-edge: the image has the tree\'s docker/nginx.conf as its template');

my $pw = 'pa"ss\\w rd@x';          # quote, backslash, space, @: quoting is exercised
my ($p_primary, $p_replica, $p_app) = (free_port(), free_port(), free_port());
my %fly = (FLY_REGION => 'ord', PRIMARY_REGION => 'scl', FLY_APP_NAME => 'acme-edge', REDIS_PASSWORD => $pw);
my %rendered_env = (%fly, APP_UPSTREAM => "127.0.0.1:$p_app",
                    EDGE_REDIS_URL => "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:$p_primary/0");
my $entry = '/usr/local/bin/fly-edge-entrypoint';

my ($rc, $out) = in_root($edge, [$entry, 'nginx', '-t'], env => \%rendered_env);
is($rc, 0, 'fly-edge: entrypoint + nginx -t with the Fly environment') or diag($out);
like($out, qr/test is successful/, '... the test is successful');
like($out, qr/^fly-edge: .* with EDGE_REDIS_URL APP_UPSTREAM FLY_APP_NAME$/m, '... the entrypoint names the variables it used, in file order');
my $conf = slurp("$edge/etc/nginx/nginx.conf");
like($conf, qr/^\s*map "" \$fly_edge_app \{ default "127\.0\.0\.1:$p_app"; \}/m, 'rendered: the app address from APP_UPSTREAM');
like($conf, qr/^\s*map "" \$fly_edge_self \{ default "acme-edge"; \}/m, 'rendered: the edge app name from FLY_APP_NAME');
like($conf, qr/^\s*fly_redis "redis:\/\/x:\$\{REDIS_PASSWORD\}\@127\.0\.0\.1:$p_primary\/0";/m,
     'rendered: the Redis URL from EDGE_REDIS_URL, ${REDIS_PASSWORD} left to the module');
unlike($conf, qr/\Q$pw\E|pa"ss/, 'rendered: the password itself is in no file');
my @changed = grep { (split /\n/, $template)[$_] ne (split /\n/, $conf)[$_] } 0 .. scalar(split /\n/, $template) - 1;
is(scalar(@changed), 3, 'rendered: exactly the three marked lines differ from the template');
is(scalar(split /\n/, $conf), scalar(split /\n/, $template), '... and no line was added or lost');

($rc, $out) = in_root($edge, [$entry, 'nginx', '-t'], env => \%fly);
is($rc, 0, 'fly-edge: with only what Fly sets and the secret, the defaults pass nginx -t') or diag($out);
my %defaults = %fly;
delete $defaults{FLY_APP_NAME};
($rc, $out) = in_root($edge, [$entry, 'nginx', '-t'], env => \%defaults);
is(slurp("$edge/etc/nginx/nginx.conf"), $template, 'rendered with no variable set: the template as it is');
my %nopw = %rendered_env;
delete $nopw{REDIS_PASSWORD};
($rc, $out) = in_root($edge, [$entry, 'nginx', '-t'], env => \%nopw);
isnt($rc, 0, 'fly-edge: without REDIS_PASSWORD nginx -t fails');
like($out, qr/environment variable "REDIS_PASSWORD" is not set in \/etc\/nginx\/nginx\.conf:\d+/, '... naming the variable and line') or diag($out);
($rc, $out) = in_root($edge, [$entry, 'nginx', '-t'], env => { %rendered_env, APP_UPSTREAM => 'x"; deny all; #' });
isnt($rc, 0, 'fly-edge: a value with a double quote is refused');
like($out, qr/APP_UPSTREAM holds a double quote/, '... by the entrypoint, naming it');
unlike($out, qr/nginx: /, '... before nginx runs');

# ============================================================ the Redis image
my $redis_image = image_root('fly-edge-redis');
my %machine = (scl => machine($redis_image, 'redis-scl'), ord => machine($redis_image, 'redis-ord'));
my %port = (scl => $p_primary, ord => $p_replica);
my %renv = (
    scl => { FLY_REGION => 'scl', PRIMARY_REGION => 'scl', FLY_APP_NAME => 'acme-redis',
             REDIS_PASSWORD => $pw, REDIS_PORT => $p_primary },
    # a replica of the first, on 127.0.0.1 (on Fly: scl.acme-redis.internal:6379)
    ord => { FLY_REGION => 'ord', PRIMARY_REGION => 'scl', FLY_APP_NAME => 'acme-redis',
             REDIS_PASSWORD => $pw, REDIS_PORT => $p_replica, REDIS_MAXMEMORY => '64mb',
             REDIS_PRIMARY_HOST => '127.0.0.1', REDIS_PRIMARY_PORT => $p_primary },
);
my %rpid;
for my $r (qw(scl ord)) {
    $rpid{$r} = spawn(['chroot', $machine{$r}, '/usr/local/bin/fly-redis-entrypoint'],
                      env => $renv{$r}, log => "$dir/redis-$r.log");
    push @PIDS, $rpid{$r};
}

sub raw_redis {
    my ($port, $cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 2) or return undef;
    print $s $cmd;
    my $line = <$s>;
    close $s;
    return $line;
}
# commands as RESP arrays, so the password goes through untouched
sub resp { join '', '*' . scalar(@_) . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @_ }
sub redis {
    my ($r, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port{$r}, Timeout => 5) or return undef;
    print $s resp('AUTH', $pw) . resp(@cmd);
    my $auth = read_reply($s);
    return undef unless defined $auth && $auth eq 'OK';
    my $v = read_reply($s);
    close $s;
    return $v;
}
sub read_reply {
    my ($s) = @_;
    my $line = <$s> // return undef;
    $line =~ s/\r\n$//;
    my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));
    return $rest if $t eq '+';
    return "ERR:$rest" if $t eq '-';
    return $rest + 0 if $t eq ':';
    if ($t eq '$') { return undef if $rest < 0; my $buf = ''; read($s, $buf, $rest + 2); return substr($buf, 0, $rest) }
    if ($t eq '*') { return [map { read_reply($s) } 1 .. $rest] }
    die "bad reply $line";
}
sub config_get { my ($r, $k) = @_; my $v = redis($r, 'CONFIG', 'GET', $k); ref $v ? $v->[1] : undef }
sub info { my ($r) = @_; my $t = redis($r, 'INFO', 'replication') // ''; +{ $t =~ /^(\w+):(.*?)\r?$/mg } }

for my $r (qw(scl ord)) {
    ok(wait_for(20, sub { (redis($r, 'PING') // '') eq 'PONG' }), "redis $r: the entrypoint's redis-server answers on 127.0.0.1:$port{$r}")
        or diag(slurp("$dir/redis-$r.log"));
}
like(raw_redis($p_primary, "PING\r\n") // '', qr/^-NOAUTH/, 'redis: without the password it refuses');
my ($redis_uid) = slurp("$machine{scl}/etc/passwd") =~ /^redis:[^:]*:(\d+):/m;
for my $r (qw(scl ord)) {
    my ($uid) = slurp("/proc/$rpid{$r}/status") =~ /^Uid:\s+(\d+)/m;
    is($uid, $redis_uid, "redis $r: runs as the redis user (uid $redis_uid), not root");
}
my ($mem_kb) = slurp('/proc/meminfo') =~ /^MemTotal:\s+(\d+) kB/m;
is(config_get('scl', 'maxmemory'), int($mem_kb * 1024 / 2), 'redis scl: maxmemory defaults to half the machine');
is(config_get('ord', 'maxmemory'), 64 * 1024 * 1024, 'redis ord: REDIS_MAXMEMORY=64mb');
for my $r (qw(scl ord)) {
    is(config_get($r, 'maxmemory-policy'), 'allkeys-lru', "redis $r: maxmemory-policy allkeys-lru");
    is(config_get($r, 'replica-ignore-maxmemory'), 'no', "redis $r: replica-ignore-maxmemory no");
    is(config_get($r, 'dir'), '/data', "redis $r: data on the volume, /data");
    is(config_get($r, 'appendonly'), 'no', "redis $r: no AOF");
    is(config_get($r, 'save'), '3600 1 300 100 60 10000', "redis $r: RDB snapshots");
}
is(config_get('ord', 'replica-read-only'), 'no', 'redis ord: replica-read-only no');

my $link = wait_for(30, sub { my $i = info('ord'); ($i->{master_link_status} // '') eq 'up' ? $i : undef });
ok($link, 'redis ord: the replica\'s link to the primary is up (masterauth works)') or diag(slurp("$dir/redis-ord.log"));
is($link && "$link->{role} $link->{master_host}:$link->{master_port}", "slave 127.0.0.1:$p_primary", 'redis ord: replicaof the primary');
my $pi = info('scl');
is("$pi->{role} $pi->{connected_slaves}", 'master 1', 'redis scl: the primary, with one replica');

is(redis('scl', 'SET', 'k:primary', 'from scl'), 'OK', 'SET on the primary');
ok(wait_for(10, sub { (redis('ord', 'GET', 'k:primary') // '') eq 'from scl' }), '... the key appears on the replica');
is(redis('ord', 'SET', 'k:local', 'ord only', 'EX', '60'), 'OK', 'a local write on the replica is accepted');
is(redis('ord', 'GET', 'k:local'), 'ord only', '... and read back there');
is(redis('scl', 'GET', 'k:local'), undef, '... and stays in its region');

is(redis('scl', 'BGSAVE'), 'Background saving started', 'BGSAVE on the primary');
ok(wait_for(20, sub { -s "$machine{scl}/data/dump.rdb" }), '... writes /data/dump.rdb (the volume is the redis user\'s)');

# ============================================ edges in front of an app, over the Redis pair
# The app: a small HTTP server counting the requests it answers.
my $app_pid = fork // die "fork: $!";
if (!$app_pid) {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p_app, Listen => 16, ReuseAddr => 1)
        or POSIX::_exit(1);
    my $n = 0;
    while (my $c = $l->accept) {
        my $req = '';
        while (my $line = <$c>) { $req .= $line; last if $line eq "\r\n" }
        $n++;
        my $body = "app answer $n\n";
        print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body)
               . "\r\nConnection: close\r\n\r\n$body";
        close $c;
    }
    POSIX::_exit(0);
}
push @PIDS, $app_pid;

sub edge_up {
    my ($region, $redis_port) = @_;
    my $root = machine($edge_image, "edge-$region");
    my $log = "$dir/edge-$region.log";
    my $pid = spawn(['chroot', $root, $entry], log => $log, env => {
        %fly, FLY_REGION => $region, APP_UPSTREAM => "127.0.0.1:$p_app",
        EDGE_REDIS_URL => "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:$redis_port/0" });
    push @PIDS, $pid;
    my $up = wait_for(20, sub { my $r = http_request(8080, 'GET', '/.fly-edge/health'); $r && $r->{status} == 200 });
    ok($up, "edge $region: the image's default command serves on 8080") or diag(slurp($log));
    return ($pid, $log);
}
sub edge_down {
    my ($region, $pid, $log) = @_;
    is(stop_pid($pid, 'QUIT', 15), 0, "edge $region: stopped by PID (SIGQUIT, the image's STOPSIGNAL), clean exit");
    unlike(slurp($log), qr/\[(?:emerg|alert|crit)\]/, "edge $region: no [emerg]/[alert]/[crit] in its log");
}

my ($pid, $log) = edge_up('scl', $p_primary);
my $r = http_request(8080, 'GET', '/page');
is($r && "$r->{status} $r->{headers}{'x-cache'} $r->{body}", "200 MISS app answer 1\n", 'edge scl: the first GET goes to the app (MISS)');
$r = wait_for(10, sub { my $x = http_request(8080, 'GET', '/page'); $x && ($x->{headers}{'x-cache'} // '') eq 'HIT' ? $x : undef });
is($r && $r->{body}, "app answer 1\n", 'edge scl: then a HIT from the primary Redis, the app not asked again');
edge_down('scl', $pid, $log);

($pid, $log) = edge_up('ord', $p_replica);
$r = wait_for(10, sub { my $x = http_request(8080, 'GET', '/page'); $x && ($x->{headers}{'x-cache'} // '') eq 'HIT' ? $x : undef });
is($r && $r->{body}, "app answer 1\n", 'edge ord: a HIT from its region\'s replica (filled in scl, replicated)');
$r = http_request(8080, 'POST', '/page', body => 'a=1');
is($r && $r->{status}, 409, 'edge ord: a POST is not run in the replica region');
is($r && $r->{headers}{'fly-replay'}, 'region=scl;state=method', '... it is replayed in the primary region');
edge_down('ord', $pid, $log);

my $direct = http_request($p_app, 'GET', '/page');
is($direct && $direct->{body}, "app answer 2\n", 'the app answered exactly one request through the edges');

for my $rr (qw(ord scl)) {
    is(stop_pid($rpid{$rr}, 'TERM', 15), 0, "redis $rr: stopped by PID, clean exit");
}
stop_pid($app_pid, 'TERM', 5);
done_testing();
