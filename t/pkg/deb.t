# The Debian package (`make deb`) in a throwaway Debian 12 root: what it
# declares, then `apt-get install ./file.deb` (which pulls Debian's nginx and
# the libraries), the module enabled through /etc/nginx/modules-enabled/ and
# working in the stock nginx, then remove, reinstall and purge with the
# links in modules-enabled following Debian's rules for nginx modules.
#
# The root is an overlay over a cached `debootstrap --variant=minbase
# bookworm` (build/pkg/bookworm, made once by docker/bin/bookworm-root),
# mounted in a mount namespace of this test only: the host's packages and
# /etc/nginx are never touched, and nothing stays mounted when the test
# ends, however it ends. apt's package lists and downloads are kept in
# build/pkg/apt-cache/ so that later runs download little. Needs root and
# the Debian mirror of /etc/apt/sources.list.d/debian.sources.
#
#   make test-deb              (builds the package first)
#   prove -I t/pkg/lib t/pkg/deb.t   with FLY_EDGE_DEB=path/to/file.deb
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use FlyEdge::Pkg;
use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Test::More;

plan skip_all => 'needs root (debootstrap, chroot, mounts)' if $> != 0;
in_private_mount_namespace();

my $PKG    = 'libnginx-mod-http-fly-edge';
my $SO     = 'ngx_http_fly_edge_module.so';
my $CONF   = 'mod-http-fly-edge.conf';
my $LINK   = "/etc/nginx/modules-enabled/50-$CONF";
my $build  = BUILD;
my ($deb)  = $ENV{FLY_EDGE_DEB} // sort glob("$build/${PKG}_*.deb");
BAIL_OUT("no $PKG .deb: run `make deb` (or set FLY_EDGE_DEB)") unless $deb && -f $deb;
my $debname = (split m{/}, $deb)[-1];

# --- what the package declares ---------------------------------------------
my %field = map { /^(\S+): (.*)$/ ? ($1 => $2) : () } split /\n/, run_ok(['dpkg-deb', '-f', $deb]);
is($field{Package}, $PKG, 'package name follows libnginx-mod-<module>');
my ($version, $arch) = $debname =~ /^\Q$PKG\E_([^_]+)_([^_]+)\.deb$/;
is("$field{Version} $field{Architecture}", "$version $arch", "$debname: file name is <package>_<version>_<arch>.deb");
my ($abi) = slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars') =~ /^nginx:abi=(\S+)/m;
ok($abi, "the ABI of the nginx-dev tree the module was built against: $abi");
my @depends = map { s/\s*\(.*\)//r } split /,\s*/, $field{Depends};
ok((grep { $_ eq $abi } @depends), "Depends on exactly that nginx ABI ($field{Depends})");
ok((grep { /^libhiredis/ } @depends), 'Depends on libhiredis (shlibs)');
# libpq only when the module links it: shlibs:Depends lists what the .so needs
my $x = "$build/pkg/deb-extract";
remove_tree($x);
run_ok(['dpkg-deb', '-x', $deb, $x]);
my $needed = run_ok(['readelf', '-d', "$x/usr/lib/nginx/modules/$SO"]);
my @sonames = $needed =~ /\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g;
ok(scalar(@sonames), "the module's NEEDED libraries: @sonames");
for my $so (@sonames) {
    my ($owner) = run_ok(['dpkg', '-S', "*/$so"]) =~ /^([^:\s]+)/;
    ok((grep { $_ eq $owner } @depends), "$so comes from $owner, which it Depends on");
}
is(slurp("$x/usr/share/nginx/modules-available/$CONF"), "load_module modules/$SO;\n",
   "/usr/share/nginx/modules-available/$CONF holds the load_module line");
remove_tree($x);

# --- a throwaway Debian 12 root --------------------------------------------
run_ok(["${\ ROOT}/docker/bin/bookworm-root", "$build/pkg/bookworm"], timeout => 900);
my $root = mount_overlay("$build/pkg/bookworm", "$build/pkg/deb-test");
for my $d (qw(archives lists)) {
    my $cache = "$build/pkg/apt-cache/$d";
    my $in = $d eq 'archives' ? '/var/cache/apt/archives' : '/var/lib/apt/lists';
    make_path($cache, "$root$in");
    run_ok(['mount', '--bind', $cache, "$root$in"]);
}
mount_proc($root);
copy('/etc/resolv.conf', "$root/etc/resolv.conf") or die "resolv.conf: $!";
copy($deb, "$root/tmp/$debname") or die "$deb: $!";
ok(!-e "$root/etc/nginx", 'the fresh root has no nginx');

my %APT = (DEBIAN_FRONTEND => 'noninteractive');
sub in_root { my ($cmd, %o) = @_; run(['chroot', $root, @$cmd], %o) }
sub apt { my @args = @_; in_root(['apt-get', '-y', '-q', '--no-install-recommends', @args], env => \%APT) }
sub nginx_t { in_root(['/usr/sbin/nginx', '-t'], @_) }

my ($rc, $out) = in_root(['apt-get', 'update', '-q'], env => \%APT);
is($rc, 0, 'apt-get update in the root') or diag($out);
($rc, $out) = apt('install', "/tmp/$debname");
is($rc, 0, "apt-get install ./$debname pulls nginx and the libraries") or diag($out);
(undef, $out) = in_root(['dpkg-query', '-W', '-f', '${Status} ${Version}\n', $PKG, 'nginx']);
like($out, qr/^install ok installed \Q$version\E$/m, "$PKG $version is installed");
like($out, qr/^install ok installed 1\.22\./m, "with Debian 12's nginx: " . ($out =~ /^install ok installed (1\.22\S+)$/m)[0]);
(undef, $out) = in_root(['dpkg-query', '-W', '-f', '${Provides}', 'nginx']);
like($out, qr/(?:^|[ ,])\Q$abi\E(?:$|[ ,])/, "the root's nginx provides $abi");

ok(-f "$root/usr/lib/nginx/modules/$SO", "the module is /usr/lib/nginx/modules/$SO");
is(readlink("$root$LINK"), "/usr/share/nginx/modules-available/$CONF", "$LINK links the load_module file");
like(slurp("$root/etc/nginx/nginx.conf"), qr{^include /etc/nginx/modules-enabled/\*\.conf;}m,
     "stock nginx.conf includes modules-enabled");

# --- the stock nginx with the module, configured under conf.d/ -------------
# sites-enabled/default would listen on port 80 of this machine
unlink "$root/etc/nginx/sites-enabled/default";
my $port = free_port();
my $conf = "/etc/nginx/conf.d/fly-edge-test.conf";
spew("$root$conf", <<"EOF");
# in the http block of the stock nginx.conf
fly_region ord;
fly_primary_region scl;
fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:1/0";
server {
    listen 127.0.0.1:$port;
    fly_replay on;
    location / { return 200 "read in \$fly_region\\n"; }
}
EOF
($rc, $out) = nginx_t();
isnt($rc, 0, 'nginx -t without REDIS_PASSWORD fails (the module expands ${VAR})');
like($out, qr/environment variable "REDIS_PASSWORD" is not set in \Q$conf\E:4/, '... naming the variable and line') or diag($out);
my %env = (REDIS_PASSWORD => 'pw');
($rc, $out) = nginx_t(env => \%env);
is($rc, 0, 'nginx -t passes with the module loaded through modules-enabled') or diag($out);
like($out, qr/test is successful/, '... the test is successful');

my $log = "$build/pkg/deb-test/nginx.out";
my $pid = spawn(['chroot', $root, '/usr/sbin/nginx', '-g', 'daemon off;'], env => \%env, log => $log);
my $get = wait_for(15, sub { http_request($port, 'GET', '/') });
ok($get, 'the stock nginx started in the root answers') or diag(slurp($log));
is($get && $get->{status}, 200, 'a GET in the replica region passes');
is($get && $get->{body}, "read in ord\n", '... through the location ($fly_region is set)');
my $post = http_request($port, 'POST', '/', body => 'x=1');
is($post && $post->{status}, 409, 'a POST in the replica region is answered by the module');
is($post && $post->{headers}{'fly-replay'}, 'region=scl;state=method', '... with fly-replay to the primary');
my $status = stop_pid($pid, 'QUIT', 15);
is($status, 0, 'nginx stopped (by PID) and exited cleanly');
unlike(slurp("$root/var/log/nginx/error.log"), qr/\[(?:emerg|alert|crit)\]/, "the root's nginx error log has no [emerg]/[alert]/[crit]");

# --- remove, reinstall, purge ----------------------------------------------
sub enabled { opendir my $d, "$root/etc/nginx/modules-enabled" or die $!; sort grep { !/^\.\.?$/ } readdir $d }
($rc, $out) = apt('remove', $PKG);
is($rc, 0, "apt-get remove $PKG") or diag($out);
ok(!-e "$root/usr/lib/nginx/modules/$SO", 'the module is gone');
ok(!-e "$root/usr/share/nginx/modules-available/$CONF", "modules-available/$CONF is gone");
is_deeply([grep { /fly-edge/ } enabled()], ["50-$CONF.removed"],
          'modules-enabled loads nothing of it (the link is kept as .removed, as for every libnginx-mod-*)');
($rc, $out) = nginx_t(env => \%env);
like($out, qr/unknown directive "fly_region"/, 'without the package the fly_ configuration is refused') or diag($out);
unlink "$root$conf";
($rc, $out) = nginx_t();
is($rc, 0, 'the stock nginx -t passes: nothing left in modules-enabled points at the module') or diag($out);

($rc, $out) = apt('install', "/tmp/$debname");
is($rc, 0, 'reinstall') or diag($out);
is(readlink("$root$LINK"), "/usr/share/nginx/modules-available/$CONF", 'reinstalling enables it again');
is_deeply([grep { /fly-edge/ } enabled()], ["50-$CONF"], '... and drops the .removed marker');

($rc, $out) = apt('purge', $PKG);
is($rc, 0, "apt-get purge $PKG") or diag($out);
is_deeply([grep { /fly-edge/ } enabled()], [], 'after purge modules-enabled has no trace of it');
(undef, $out) = in_root(['dpkg-query', '-W', '-f', '${Status}', $PKG]);
unlike($out, qr/installed/, 'dpkg knows it as not installed');
($rc, $out) = nginx_t();
is($rc, 0, 'nginx -t passes after purge') or diag($out);

# the mounts go with this process's namespace; the overlay's files now
# (never delete through a mount that is still there: the apt cache is bound in)
my ($urc) = run(['umount', '-R', $root]);
remove_tree("$build/pkg/deb-test") if $urc == 0;
done_testing();
