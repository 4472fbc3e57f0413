# fly-edge: build, test, run and benchmark the nginx module.
#   make deps    install every Debian package the build, tests and demo need
#   make         build build/ngx_http_fly_edge_module.so against the installed nginx
#   make test    unit tests (cmocka) + integration tests (prove)
#   make run     the local three-region deployment
#   make bench   the cache benchmark
#   make test-apps       real apps unchanged behind fly-edge (MediaWiki), see t/apps/
#   make run APP=mediawiki   the local deployment with MediaWiki instead of the demo app
#   make bench-consistency   the read-your-writes figure (t/bench/consistency --help)

SHELL       := /bin/bash
NGINX_SRC   ?= /usr/share/nginx/src
BUILD       ?= $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(BUILD)/ngx_http_fly_edge_module.so
CXX         ?= g++
# extra flags for the module's own C++ objects (e.g. -fsanitize=address)
FLY_EDGE_CXXFLAGS ?=
NGX_CC_OPT  ?= -g -O2 -fPIC -fstack-protector-strong
NGX_LD_OPT  ?= -Wl,-z,relro -Wl,-z,now -fPIC

CORE_SRCS   := $(wildcard src/core/*.cpp)
CORE_HDRS   := $(wildcard src/core/*.hpp)
NGX_SRCS    := $(wildcard src/*.cpp src/*.hpp)
UNIT_SRCS   := $(wildcard t/unit/test_*.cpp)
UNIT_BINS   := $(patsubst t/unit/%.cpp,$(BUILD)/unit/%,$(UNIT_SRCS))
UNIT_FLAGS  := -std=c++17 -g -O1 -Wall -Wextra -Werror -Isrc \
               -fsanitize=address,undefined -fno-omit-frame-pointer

DEB_PKGS := g++ make perl ca-certificates curl procps util-linux \
    nginx nginx-dev libpcre2-dev libssl-dev zlib1g-dev \
    libhiredis-dev libpq-dev libcmocka-dev \
    redis-server postgresql memcached wrk \
    libtest-base-perl libredis-perl libdbd-pg-perl libtext-diff-perl libjson-perl \
    python3 python3-psycopg2 \
    libnginx-mod-http-srcache-filter libnginx-mod-http-memc

.PHONY: all module deps deps-apps unit itest itest-asan test test-apps run bench bench-consistency clean FORCE

all: module

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing$$missing"; \
	    sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# nginx's configure writes into the tree it runs in, so it runs in a copy.
# A release tarball has ./configure, a git checkout auto/configure.
$(NGX_BUILD)/.configured: config config.make
	rm -rf $(NGX_BUILD) && mkdir -p $(BUILD) && cp -r $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && \
	    NGX_CONF_FLAGS=(--with-compat); \
	    if [ -f conf_flags ]; then source ./conf_flags; fi; \
	    cfg=./configure; [ -x $$cfg ] || cfg=auto/configure; \
	    FLY_EDGE_CXXFLAGS="$(FLY_EDGE_CXXFLAGS)" $$cfg "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }
	touch $@

module: $(MODULE)

$(MODULE): $(NGX_BUILD)/.configured $(NGX_SRCS) $(CORE_SRCS) $(CORE_HDRS)
	$(MAKE) -s -j$$(nproc) -C $(NGX_BUILD) -f objs/Makefile modules
	@# a new inode: nginx processes that have the old one mapped keep it intact
	cp $(NGX_BUILD)/objs/ngx_http_fly_edge_module.so $@.tmp && mv -f $@.tmp $@

# The core is compiled once for all unit tests (with the sanitizers), then
# linked into each.
UNIT_CORE_OBJS := $(patsubst src/core/%.cpp,$(BUILD)/unit/core/%.o,$(CORE_SRCS))
.SECONDARY: $(UNIT_CORE_OBJS)

$(BUILD)/unit/core/%.o: src/core/%.cpp $(CORE_HDRS)
	@mkdir -p $(BUILD)/unit/core
	$(CXX) $(UNIT_FLAGS) -c -o $@ $<

$(BUILD)/unit/%: t/unit/%.cpp $(UNIT_CORE_OBJS) $(CORE_HDRS) t/unit/unit.hpp
	@mkdir -p $(BUILD)/unit
	$(CXX) $(UNIT_FLAGS) -o $@ $< $(UNIT_CORE_OBJS) -lcmocka

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "# $$t"; $$t; done

itest: module
	prove -I t/lib -r t/

# The integration tests again with the module built with AddressSanitizer
# and UBSan (nginx itself is Debian's; libasan is preloaded into it). The
# harness fails a test file whose error logs hold a sanitizer report.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
itest-asan:
	@$(MAKE) --no-print-directory module BUILD=$(CURDIR)/build/asan \
	    FLY_EDGE_CXXFLAGS="$(ASAN_FLAGS)" NGX_LD_OPT="$(NGX_LD_OPT) $(ASAN_FLAGS)"
	FLY_EDGE_MODULE=$(CURDIR)/build/asan/ngx_http_fly_edge_module.so \
	FLY_EDGE_LD_PRELOAD=$$($(CXX) -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	FLY_TEST_TIME_SCALE=$${FLY_TEST_TIME_SCALE:-4} \
	    prove -I t/lib -r t/

test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(UNIT_BINS)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory itest
	@$(MAKE) --no-print-directory itest-asan

# APP=mediawiki: the same deployment with MediaWiki (its packages are installed then)
APP ?=
ifeq ($(APP),mediawiki)
run: deps-apps module
	perl -I t/lib t/bin/demo-mediawiki
else ifeq ($(APP),)
run: deps module
	perl -I t/lib t/bin/demo
else
run:
	@echo "make run: unknown APP=$(APP) (APP=mediawiki, or none for the demo app)"; exit 2
endif

bench: deps
	-@$(MAKE) --no-print-directory module
	perl -I t/lib t/bench/bench

# Real, unmodified apps in the three-region bed (t/apps/, FlyEdge::MediaWiki).
# Their packages are installed only here, never by plain `make deps`.
# The test files are named *.test so that `prove -r t/` (make test) skips them.
# php-fpm (and the PHP extensions) first: then the `php` that mediawiki
# depends on is satisfied by php-fpm, and apt pulls no Apache module in.
APP_PKGS_PHP := php-fpm php-cli php-pgsql php-apcu php-intl php-mbstring \
    php-xml php-curl php-redis
APP_PKGS := mediawiki
deps-apps: deps
	@sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	export DEBIAN_FRONTEND=noninteractive; updated=""; \
	for group in "$(APP_PKGS_PHP)" "$(APP_PKGS)"; do \
	    missing=""; for p in $$group; do \
	        dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	            || missing="$$missing $$p"; \
	    done; \
	    if [ -n "$$missing" ]; then \
	        echo "make deps-apps: installing$$missing"; \
	        [ -n "$$updated" ] || $$sudo apt-get update -qq || exit 1; updated=1; \
	        $$sudo apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	    fi; \
	done

test-apps: deps-apps module
	prove -I t/lib --ext .test t/apps/

bench-consistency: deps
	-@$(MAKE) --no-print-directory module
	perl -I t/lib t/bench/consistency

# ---- fuzzing: libFuzzer targets of the core's parsers (t/fuzz/README.md) ----
#   make fuzz         each target for FUZZ_SECONDS (FUZZ_JOBS at a time); new
#                     corpus entries and crash inputs go to build/fuzz/
#   make fuzz-smoke   a short round of each target plus every saved regression
#                     input (t/fuzz/regress/); part of make test
# FUZZ=name1,name2 limits either to some targets.
DEB_PKGS += clang-14 libclang-rt-14-dev
FUZZ_CXX           ?= clang++-14
FUZZ_SECONDS       ?= 60
FUZZ_JOBS          ?= 1
FUZZ_SMOKE_RUNS    ?= 100000
FUZZ_SMOKE_SECONDS ?= 6
FUZZ               ?=
FUZZ_NAMES := $(patsubst t/fuzz/fuzz_%.cpp,%,$(wildcard t/fuzz/fuzz_*.cpp))
FUZZ_BINS  := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES))
FUZZ_OBJS  := $(patsubst src/core/%.cpp,$(BUILD)/fuzz/core/%.o,$(CORE_SRCS))
FUZZ_FLAGS := -std=c++17 -g -O1 -Wall -Wextra -Isrc -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=all

.PHONY: fuzz fuzz-smoke fuzz-build
.SECONDARY: $(FUZZ_OBJS)

$(BUILD)/fuzz/core/%.o: src/core/%.cpp $(CORE_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/fuzz_%: t/fuzz/fuzz_%.cpp t/fuzz/fuzz.hpp $(FUZZ_OBJS)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -Werror -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	t/fuzz/run long $(BUILD)/fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS) $(or $(FUZZ),$(FUZZ_NAMES))

fuzz-smoke: fuzz-build
	@t/fuzz/run smoke $(BUILD)/fuzz "$(FUZZ_SMOKE_RUNS) $(FUZZ_SMOKE_SECONDS)" 1 $(or $(FUZZ),$(FUZZ_NAMES))

clean:
	rm -rf $(BUILD)

# ---- faults and soak: the three-region bed under load (issue 13) ---------------
#   make faults   one fault at a time under mixed load (Redis primary and a
#                 replica killed, Redis paused, Redis at maxmemory, the
#                 PostgreSQL replica restarted, the app stopped, a worker
#                 killed mid-fill, a reload): the table of t/bench/faults;
#                 FAULTS=a,b FAULT_SECONDS FAULT_SETTLE FAULT_CLIENTS
#   make soak     SOAK_SECONDS (default 600) of mixed load with a reload:
#                 worker RSS and fds sampled, stay flat, no request lost;
#                 SOAK_SAMPLE SOAK_CLIENTS
# Neither is part of make test.  FLY_EDGE_MODULE=<.so> runs them against
# another build (e.g. build/asan/...; then also FLY_EDGE_LD_PRELOAD).
.PHONY: faults soak

faults: deps module
	perl -I t/lib t/bench/faults

soak: deps module
	perl -I t/lib t/bench/soak

# ---- Packaging: the Debian package and the images (issue 12) ---------------
#   make deb          build/libnginx-mod-http-fly-edge_$(DEB_VERSION)_<arch>.deb
#   make test-deb     install it in a throwaway Debian 12 root, use it, remove, purge
#   make docker       the fly-edge and fly-edge-redis images (docker, else buildah)
#   make test-docker  build both; nginx -t and a request in the edge image;
#                     the Redis entrypoint as primary and replica, replicating
# The package version is VERSION (a snapshot: make deb DEB_VERSION=0.1.0+git...);
# the git commit it was built from goes into its changelog. These targets
# need root (dpkg-buildpackage does not) and install what they lack with apt-get.
VERSION         := 0.1.0
DEB_VERSION     ?= $(VERSION)
FLY_EDGE_COMMIT ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)
DEB_ARCH        := $(shell dpkg --print-architecture 2>/dev/null)
DEB             := $(BUILD)/libnginx-mod-http-fly-edge_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_INPUTS      := config config.make Makefile README.md $(NGX_SRCS) $(CORE_SRCS) $(CORE_HDRS) \
                   docker/bin/build-deb $(shell find docker/debian -type f 2>/dev/null)

.PHONY: deb test-deb docker test-docker

deb: $(DEB)

$(DEB): $(DEB_INPUTS)
	docker/bin/build-deb $(BUILD) $(DEB_VERSION) "$(FLY_EDGE_COMMIT)"

test-deb: deb
	@docker/bin/apt-ensure debootstrap binutils
	FLY_EDGE_DEB=$(DEB) BUILD=$(BUILD) prove t/pkg/deb.test

docker:
	BUILD=$(BUILD) docker/bin/build-images $(VERSION) "$(FLY_EDGE_COMMIT)"

test-docker: docker
	@docker/bin/apt-ensure buildah iproute2
	BUILD=$(BUILD) FLY_EDGE_IMAGE_TAG=$(VERSION) prove t/pkg/docker.test
