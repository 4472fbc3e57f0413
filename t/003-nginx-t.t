# nginx -t with the module loaded: the demo's configuration and the module's
# directives pass; a bad value fails naming the file and line.
use FlyEdge::Test;

run_tests(start => 0);    # nothing to run: only nginx -t

__DATA__

=== TEST 1: the skeleton configuration with the module loaded passes nginx -t
--- test
ok($t->has_module, 'the module is built: ' . $t->module_path) or diag('run `make` first');
my ($rc, $out) = $t->nginx_t('location / { proxy_pass http://app; }');
is($rc, 0, 'nginx -t passes') or diag($out);
like($out, qr/test is successful/, 'nginx says so');
my $conf = do { local $/; open my $fh, '<', $t->nginx_t_conf_dir('scl') . '/nginx.conf' or die; <$fh> };
like($conf, qr{^load_module \Q${\ $t->module_path}\E;$}m, 'the configuration loads the module by absolute path');


=== TEST 2: the module's directives pass nginx -t in every region
--- test
my %spec = (
    http_config => qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";\n},
    config => <<'EOF',
fly_replay on;
location /posts {
    fly_cache on;
    fly_cache_valid 200 10s;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
location / { proxy_pass http://app; }
EOF
);
for my $r ($t->regions) {
    my ($rc, $out) = $t->nginx_t(\%spec, region => $r);
    is($rc, 0, "nginx -t passes in $r") or diag($out);
}


=== TEST 3: a bad value for a module directive fails with file and line
--- config
location / {
    fly_replay_status abc;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] .*fly_replay_status.*abc/
qr{/conf/server\.conf:2$}m


=== TEST 4: an unknown directive is reported in the snippet's own file (the harness's file:line)
--- http_config
# line 1
no_such_directive on;
--- must_die
--- error_log
unknown directive "no_such_directive"
qr{/conf/http\.conf:2$}m


=== TEST 5: an environment variable the configuration needs, unset, fails nginx -t
--- http_config
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
--- env
!REDIS_PASSWORD
--- must_die
--- error_log
REDIS_PASSWORD
qr{/conf/http\.conf:1$}m
