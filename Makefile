# nbdloop. `make` builds bin/nbdloop; `make check` installs what the tests
# need and runs every test: unit tests, then the kernel tests against the
# real NBD driver (natively when run as root where `modprobe nbd` works and
# NBDLOOP_NATIVE=1, otherwise inside the qemu VM of scripts/vm, once per
# kernel of KERNELS: see kernel-test).

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build check deps vet unit fuzz-short fuzz-long kernel-test man check-man demo bench clean install install-files uninstall

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/nbdloop ./cmd/nbdloop

bin/kerneltest.test: build
	$(GO) test -c -tags kernel -o bin/kerneltest.test ./kerneltest
	$(GO) test -c -tags kernel -o bin/ublk.test ./ublk

deps:
	scripts/install-deps.sh

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags kernel ./kerneltest

unit:
	$(GO) test -race -count=1 ./...

# A short fuzz pass over the parsers of untrusted disk images, the NBD
# handshake (what network clients send), a bucket disk's manifest and the
# Content-Range of HTTP answers (what stores send), the xz
# container and the LZMA2 decoder (the corpora in testdata/fuzz run as seeds
# in `unit` too); `go test -fuzz` takes one
# target at a time. The targets that open whole image files (FuzzQcow2Image,
# FuzzVMDKGrainTable) run a few dozen inputs a second: go test -fuzz then
# reports "context deadline exceeded" when a new input is still being
# minimized at the end of a short run, so they are left to longer runs by
# hand and their corpora to `unit`. FUZZTIME counts inputs rather than
# seconds: a timed run fails the same way whenever a slow input is being
# minimized as time runs out, which a loaded machine makes likely.
FUZZ_TARGETS := ./sources/qcow2:FuzzQcow2Header \
	./sources/vmdk:FuzzVMDKDescriptor ./sources/vmdk:FuzzVMDKHeader \
	./sources/xz:FuzzXZIndex ./sources/xz:FuzzXZBlockHeader \
	./sources/internal/lzma2:FuzzLZMA2 ./nbd:FuzzHandshake \
	./sources/bucket:FuzzManifest ./sources/httpsrc:FuzzContentRange \
	./sources/httpsrc:FuzzDirectHead
FUZZTIME ?= 5000x
fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		echo "$(GO) test -run XXX -fuzz '^$${t#*:}$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s -parallel 1 $${t%%:*}"; \
		$(GO) test -run XXX -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s -parallel 1 "$${t%%:*}" || exit 1; \
	done

# Every fuzz target of the repository for FUZZLONG each (default 10 minutes);
# see scripts/fuzz-long.sh for FUZZJOBS, FUZZPAR and choosing targets. Not
# part of make check: 23 targets take about four hours one at a time.
fuzz-long:
	GO=$(GO) scripts/fuzz-long.sh

# The kernel tests run in one VM per kernel, one after the other: on
# Debian 13's Linux 6.12 every test; on Debian 12's Linux 6.1 every test
# but the ublk ones (6.1 has no ublk_drv) and the object-storage ones
# (TestKernelHTTP*, TestKernelS3*, TestKernelBucket*: nbdloop's own
# fetching over an ordinary nbd device, minutes each under emulation);
# scripts/kernel-tests.sh says which on its first lines. The drivers
# differ: see the man page's KERNELS section. KERNELS (or NBDLOOP_VM_KERNEL, e.g.
# NBDLOOP_VM_KERNEL=6.12 make kernel-test) picks fewer. Each run's output
# starts with "kernel-test: Linux VERSION"; a failure on the first kernel
# does not stop the second, and kernel-test fails at the end naming the
# kernels that failed. NBDLOOP_NATIVE=1 runs them once, on the host's kernel.
KERNELS ?= $(or $(NBDLOOP_VM_KERNEL),6.1 6.12)

kernel-test: build bin/kerneltest.test
	@if [ "$${NBDLOOP_NATIVE:-}" = 1 ]; then \
		scripts/kernel-tests.sh; \
	else \
		failed=''; \
		for k in $(KERNELS); do \
			echo "kernel-test: Linux $$k (VM)"; \
			start=$$(date +%s); \
			scripts/vm/setup.sh --kernel $$k >/dev/null && \
			scripts/vm/run.sh --kernel $$k --timeout 2700 -- scripts/kernel-tests.sh || failed="$$failed $$k"; \
			echo "kernel-test: Linux $$k: $$(($$(date +%s) - start)) s"; \
		done; \
		[ -z "$$failed" ] || { echo "kernel-test: failed on Linux$$failed" >&2; exit 1; }; \
	fi

check: deps vet unit fuzz-short kernel-test
	@echo "make check: all tests passed"

# The page's date is the last commit that changed the help texts (or
# SOURCE_DATE_EPOCH when set), its version VERSION: TestManPageCurrent
# renders with the date and version the committed page carries.
MAN_DATE ?= $(shell git log -1 --format=%ct -- cmd/nbdloop filters/help.go filters/registry.go 2>/dev/null)

man: build
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$(MAN_DATE)} bin/nbdloop man > man/nbdloop.8

# make demo and make bench boot Debian 13's Linux 6.12 in the VM
# (NBDLOOP_VM_KERNEL=6.1 for 6.1).
demo: build
	scripts/demo.sh

# Go benchmarks of the server hot path and the sources (host), then fio on
# loop, nbdloop, nbdkit + nbd-client and qemu-nbd (natively with
# NBDLOOP_NATIVE=1 as root where `modprobe nbd` works, otherwise in one VM):
# the table is printed and saved under bench-results/ (scripts/bench).
# A failed Go benchmark does not stop the device runs; make bench fails at
# the end.
bench: build
	$(GO) build -o bin/benchreport ./scripts/bench/report
	@rc=0; \
	echo "$(GO) test -run XXX -bench . -benchmem ./nbd ./sources ./filters"; \
	$(GO) test -run XXX -bench . -benchmem ./nbd ./sources ./filters || rc=1; \
	echo scripts/bench/bench.sh; \
	scripts/bench/bench.sh || rc=1; \
	[ $$rc = 0 ] || echo "make bench: some measurements could not be taken (see above)" >&2; \
	exit $$rc

# `make install` (as root; PREFIX and DESTDIR as usual) installs nbdloop,
# its man page, the mount helper /sbin/mount.nbdloop (a symbolic link:
# mount(8) looks for helpers in /sbin only, whatever PREFIX is), the unit
# nbdloop.service, which attaches the devices of /etc/nbdloop/nbdtab at boot
# (systemctl enable nbdloop.service), and an example nbdtab, which an
# existing one is never replaced by, and the bash, zsh and fish completions.
# install-files installs BIN without building it.
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
SBINDIR ?= /sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
BIN     ?= bin/nbdloop
# Shell completions, generated by the binary (nbdloop completion SHELL).
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

install: build install-files

install-files:
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/nbdloop
	install -D -m 0644 man/nbdloop.8 $(DESTDIR)$(MANDIR)/man8/nbdloop.8
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(BINDIR)/nbdloop $(DESTDIR)$(SBINDIR)/mount.nbdloop
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' dist/nbdloop.service > $(DESTDIR)$(UNITDIR)/nbdloop.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nbdloop.service
	install -d $(DESTDIR)/etc/nbdloop
	[ -e $(DESTDIR)/etc/nbdloop/nbdtab ] || install -m 0644 dist/nbdtab $(DESTDIR)/etc/nbdloop/nbdtab
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(BIN) completion bash > $(DESTDIR)$(BASHCOMPDIR)/nbdloop
	$(BIN) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_nbdloop
	$(BIN) completion fish > $(DESTDIR)$(FISHCOMPDIR)/nbdloop.fish

# uninstall removes what install put in place, and the nbdtab only if it is
# still the example.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/nbdloop $(DESTDIR)$(MANDIR)/man8/nbdloop.8 \
		$(DESTDIR)$(SBINDIR)/mount.nbdloop $(DESTDIR)$(UNITDIR)/nbdloop.service \
		$(DESTDIR)$(BASHCOMPDIR)/nbdloop $(DESTDIR)$(ZSHCOMPDIR)/_nbdloop $(DESTDIR)$(FISHCOMPDIR)/nbdloop.fish
	! cmp -s dist/nbdtab $(DESTDIR)/etc/nbdloop/nbdtab || rm -f $(DESTDIR)/etc/nbdloop/nbdtab
	rmdir $(DESTDIR)/etc/nbdloop 2>/dev/null || true

clean:
	rm -rf bin
