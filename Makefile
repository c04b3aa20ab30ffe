# make install [PREFIX=/usr/local] [DESTDIR=] [BIN_DIR=target/release]
# Builds archon and archonctl (release) unless BIN_DIR already holds them,
# and installs them with their man pages. The test helper and the benchmark
# (tools/) are never installed.
#
# make static [STATIC_TARGET_DIR=target]
# Fully static archon and archonctl (musl, static-pie) for scratch and
# Alpine images, in $(STATIC_TARGET_DIR)/x86_64-unknown-linux-musl/release/.
# Needs `rustup target add x86_64-unknown-linux-musl` and musl-tools (musl-gcc
# builds Lua). Why musl and not static glibc: a static glibc cannot load NSS
# modules and warns at every getpwnam; musl resolves users from /etc/passwd,
# which is what an image has.
PREFIX ?= /usr/local
DESTDIR ?=
BIN_DIR ?= target/release
CARGO ?= cargo
STATIC_TARGET_DIR ?= target
MAN5 = man/archon-config.5 man/archon-hooks.5
MAN7 = man/archon-protocol.7
MAN8 = man/archon.8 man/archonctl.8

.PHONY: all install uninstall static
all:
	$(CARGO) build --release --locked -p archon

static:
	$(CARGO) build --release --locked -p archon --target x86_64-unknown-linux-musl \
		--target-dir $(STATIC_TARGET_DIR)

install:
	test -x $(BIN_DIR)/archon -a -x $(BIN_DIR)/archonctl || $(CARGO) build --release --locked -p archon
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/man/man7 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 755 $(BIN_DIR)/archon $(BIN_DIR)/archonctl $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 $(MAN7) $(DESTDIR)$(PREFIX)/share/man/man7/
	install -m 644 $(MAN8) $(DESTDIR)$(PREFIX)/share/man/man8/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/archon $(DESTDIR)$(PREFIX)/bin/archonctl
	for m in $(MAN5) $(MAN7) $(MAN8); do \
		s=$${m##*.}; rm -f $(DESTDIR)$(PREFIX)/share/man/man$$s/$${m##*/}; \
	done
