#!/usr/bin/env bash
# The man pages and shell completions of the operator CLIs, made by the built binaries of
# one profile, into <profile dir>/share/ laid out as /usr/share/ (what the package's
# assets in crates/mistify-supervisor/Cargo.toml pick up). Run after the build, before
# `cargo deb`: by `make deb` and by the build phase of `make test`.
#
#   scripts/cli-assets.sh target/release
set -euo pipefail
bin=${1:?usage: scripts/cli-assets.sh PROFILE_DIR (e.g. target/release)}
share=$bin/share
rm -rf "$share"
mkdir -p "$share/man/man1" "$share/bash-completion/completions" \
  "$share/zsh/vendor-completions" "$share/fish/vendor_completions.d"

# assets CLI: its man page and its bash, zsh and fish completions.
assets() {
  local cli=$1
  "$bin/$cli" man | gzip -9n >"$share/man/man1/$cli.1.gz"
  "$bin/$cli" completions bash >"$share/bash-completion/completions/$cli"
  "$bin/$cli" completions zsh >"$share/zsh/vendor-completions/_$cli"
  "$bin/$cli" completions fish >"$share/fish/vendor_completions.d/$cli.fish"
}

assets mistify
assets lochness
# mistify-supervisor gets `man` and `completions` on another branch: until it has them,
# its files are left out (the package test says so).
if "$bin/mistify-supervisor" man >/dev/null 2>&1 \
  && "$bin/mistify-supervisor" completions bash >/dev/null 2>&1; then
  assets mistify-supervisor
else
  echo "cli-assets: $bin/mistify-supervisor has no man/completions commands yet; its man page and completions are left out" >&2
fi
