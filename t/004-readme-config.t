# The configurations people copy must stay loadable: every ```nginx block of
# README.md, the demo's conf/nginx.conf.in rendered the way t/bin/demo
# renders it, and docker/nginx.conf, each through `nginx -t` with the built
# module.
#
# README and docker files are run in a scratch prefix: the load_module path
# becomes the built module, `listen` goes to a free loopback port, the pid,
# error log, access log and temp paths go inside the prefix (so it also runs
# unprivileged), and a fragment without an `events` block gets an empty one.
# Host names such as {region}.my-redis.internal are not looked up here:
# with a `resolver` they are resolved at run time only.
use FlyEdge::Test;
use FlyEdge::ConfCheck;    # slurp, spew, nginx_blocks, sandbox, nginx_t, check_t
use File::Path qw(make_path remove_tree);
use POSIX ();

our $ROOT = $FlyEdge::Topology::ROOT;
our $NGINX = $FlyEdge::Topology::NGINX;
our %ENV_FOR = (
    ord => { FLY_REGION => 'ord', PRIMARY_REGION => 'scl', REDIS_PASSWORD => 'readme-password' },
    scl => { FLY_REGION => 'scl', PRIMARY_REGION => 'scl', REDIS_PASSWORD => 'readme-password' },
);

run_tests(start => 0);

__DATA__

=== TEST 1: every nginx block of the README passes nginx -t with the built module, in a replica and in the primary region
--- test
ok($t->has_module, 'the module is built: ' . $t->module_path) or diag('run `make` first');
my @blocks = main::nginx_blocks(main::slurp("$main::ROOT/README.md"));
cmp_ok(scalar @blocks, '>=', 2, 'the README has nginx examples: ' . scalar @blocks);
for my $b (@blocks) {
    my ($line, $text) = @$b;
    for my $r (sort keys %main::ENV_FOR) {
        my $prefix = $t->dir . "/readme-$line-$r";
        remove_tree($prefix);
        make_path("$prefix/conf");
        my $conf = main::sandbox($text, $prefix, $t->module_path);
        like($conf, qr/^\s*load_module \Q${\ $t->module_path}\E;/m, "README.md:$line in $r: loads the built module")
            if $text =~ /load_module/;
        main::spew("$prefix/conf/nginx.conf", $conf);
        main::check_t("README.md:$line in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, $main::ENV_FOR{$r}));
    }
}


=== TEST 2: the demo configuration (conf/nginx.conf.in, rendered as t/bin/demo renders it) passes nginx -t in every region
--- test
my $tpl = "$main::ROOT/conf/nginx.conf.in";
ok(-f $tpl, 'conf/nginx.conf.in exists');
like(main::slurp("$main::ROOT/t/bin/demo"), qr{nginx_template\s*=>\s*"\$root/conf/nginx\.conf\.in"},
     't/bin/demo renders conf/nginx.conf.in through FlyEdge::Topology');
for my $r ($t->regions) {
    # what Topology does for the demo: render the template with the region's values
    my $files = $t->render_nginx($r, { template => $tpl }, 1);
    my $prefix = $t->nginx_prefix($r);
    make_path("$prefix/conf", "$prefix/logs", "$prefix/tmp", "$prefix/html");
    main::spew("$prefix/conf/$_", $files->{$_}) for keys %$files;
    my $conf = $files->{'nginx.conf'};
    unlike($conf, qr/%%\w+%%/, "$r: every placeholder was filled");
    like($conf, qr/^\s*load_module \Q${\ $t->module_path}\E;/m, "$r: loads the built module");
    # the environment the demo's nginx gets: the region's variables
    my %env = map { $_ => $t->vars($r)->{$_} } keys %{$t->vars($r)};
    main::check_t("conf/nginx.conf.in in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, \%env));
}


=== TEST 3: docker/nginx.conf passes nginx -t (with Fly's environment)
--- test
my $text = main::slurp("$main::ROOT/docker/nginx.conf");
like($text, qr/^\s*load_module\s/m, 'docker/nginx.conf loads the module');
for my $r (sort keys %main::ENV_FOR) {
    my $prefix = $t->dir . "/docker-$r";
    remove_tree($prefix);
    make_path("$prefix/conf");
    main::spew("$prefix/conf/nginx.conf", main::sandbox($text, $prefix, $t->module_path));
    main::check_t("docker/nginx.conf in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, $main::ENV_FOR{$r}));
}
