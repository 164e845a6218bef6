# The two public targets are the README's two commands; `deb` builds the package.
.PHONY: run test deb fuzz soak

## make run: bring up the hypervisor stack with the dev configuration in config/
run:
	@scripts/run.sh

## make test: install missing prerequisites, then fmt, clippy, build and every test
test:
	@scripts/test.sh

## make deb: release build and the Debian package in target/debian/ (docs/operations.md)
deb:
	MISTIFY_SKIP=etcd,zfs,stack,replay,supervisor-tls,schemathesis scripts/install-deps.sh
	cargo build --release --workspace --bins --locked
	scripts/cli-assets.sh "$${CARGO_TARGET_DIR:-target}/release"
	cargo deb -p mistify-supervisor --no-build --output target/debian/

## make fuzz: each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (60) s (nightly, cargo-fuzz installed when missing)
fuzz:
	@scripts/fuzz.sh

## make soak: agent crashes, sub-agent crashes under the supervisor, and 60 s of load, on a release build (figures printed)
soak:
	@scripts/soak.sh
