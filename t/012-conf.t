# Every *.conf under conf/ passes nginx -t with the built module: a whole
# file as it is (in a scratch prefix, see FlyEdge::ConfCheck's sandbox), a
# file whose first comment says "http level", "server level" or "location
# level" included there in the harness's skeleton; with the environment
# variables it names (${NAME}) set, in a replica and in the primary region.
# conf/nginx.conf, the annotated production example, uses every directive
# the module registers and logs the module's variables and the timings.
use FlyEdge::Test;
use FlyEdge::ConfCheck;
use File::Path qw(make_path remove_tree);

our $ROOT = $FlyEdge::Topology::ROOT;

# The level a conf/ file is written for, from its first comment line
# (undef: a whole nginx.conf).
sub level_of {
    my ($text) = @_;
    my ($first) = $text =~ /^\s*#(.*)$/m;
    return ($first // '') =~ /\b(http|server|location)[ -]level\b/i ? lc $1 : undef;
}

# The environment a whole file names: ${NAME} (ports get a number).
sub env_of {
    my ($text, $region) = @_;
    my %env = (FLY_REGION => $region, PRIMARY_REGION => 'scl');
    while ($text =~ /\$\{(\w+)\}/g) {
        $env{$1} //= $1 =~ /PORT$/ ? 6379 : "conf-test-\L$1";
    }
    return \%env;
}

run_tests(start => 0);

__DATA__

=== TEST 1: every conf/*.conf passes nginx -t, whole or included at its level
--- test
my @files = sort glob("$main::ROOT/conf/*.conf");
ok((grep { m{/nginx\.conf$} } @files), 'conf/nginx.conf is one of them');
my %by_level;
for my $f (@files) {
    my $text = slurp($f);
    my $level = main::level_of($text);
    push @{$by_level{$level // 'file'}}, $f;
}
# http-level files come first: the others need their fly_redis
my $http_incl = join '', map { "    include $_;\n" } @{$by_level{http} || []};
for my $f (@files) {
    (my $name = $f) =~ s{.*/}{conf/};
    my $text = slurp($f);
    my $level = main::level_of($text);
    for my $r (qw(ord scl)) {
        if (!defined $level) {
            my $prefix = $t->dir . "/conf-$r-" . ($f =~ s{.*/}{}r);
            remove_tree($prefix);
            make_path("$prefix/conf");
            spew("$prefix/conf/nginx.conf", sandbox($text, $prefix, $t->module_path));
            check_t("$name (a whole file) in $r", nginx_t("$prefix/conf/nginx.conf", $prefix, main::env_of($text, $r)));
            next;
        }
        # a minimal nginx.conf around it; the server has what http-level
        # files may need (@primary for fly_replay_forward)
        my $conf = "load_module modules/x.so;\nhttp {\n"
                 . "    upstream app { server 127.0.0.1:1; }\n"
                 . ($level eq 'http' ? "    include $f;\n" : $http_incl)
                 . "    server {\n        listen 8080;\n"
                 . ($level eq 'server' ? "        include $f;\n" : '')
                 . "        location \@primary { proxy_pass http://app; }\n"
                 . "        location / {\n"
                 . ($level eq 'location' ? "            include $f;\n" : '')
                 . "            proxy_pass http://app;\n        }\n    }\n}\n";
        my $all = join '', $text, map { slurp($_) } @{$by_level{http} || []};
        my $prefix = $t->dir . "/conf-$r-" . ($f =~ s{.*/}{}r);
        remove_tree($prefix);
        make_path("$prefix/conf");
        spew("$prefix/conf/nginx.conf", sandbox($conf, $prefix, $t->module_path));
        check_t("$name ($level level) in $r", nginx_t("$prefix/conf/nginx.conf", $prefix, main::env_of($all, $r)));
    }
}


=== TEST 2: conf/nginx.conf uses every directive of the module, and logs its variables and the timings
--- test
my $text = slurp("$main::ROOT/conf/nginx.conf");
(my $code = $text) =~ s/#.*$//mg;
for my $d (registered_directives($t)) {
    like($code, qr/^\s*\Q$d\E(?:\s|;)/m, "conf/nginx.conf uses $d");
}
my ($fmt) = $code =~ /^\s*log_format\s+(\w+\s.*?);/ms;
ok($fmt, 'a log_format') or return;
like($fmt, qr/\$\Q$_\E\b/, "the log_format shows \$$_")
    for qw(fly_cache_status fly_replay fly_region request_time upstream_response_time);
my ($name) = $fmt =~ /^(\w+)/;
like($code, qr/^\s*access_log\s+\S+\s+\Q$name\E\s*;/m, "access_log uses it ($name)");
