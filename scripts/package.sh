#!/usr/bin/env bash
# Builds the deployable package: a Linux x86-64 binary that needs at most glibc 2.28 (so it runs on
# every Functions host image), staged with host.json and one folder per function, zipped for Flex
# Consumption one-deploy: dist/teams-cdr-functions.zip.
#
# Installs what it needs on first use: cargo-zigbuild (pinned, into .tools/) and the Zig toolchain
# from PyPI (pinned, into .venv-package/), which links against the old glibc.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.0
GLIBC=2.28
TARGET=x86_64-unknown-linux-gnu

if [ ! -x .tools/bin/cargo-zigbuild ] || ! .tools/bin/cargo-zigbuild --version | grep -q " $ZIGBUILD_VERSION\$"; then
  cargo install cargo-zigbuild --locked --version "$ZIGBUILD_VERSION" --root .tools --quiet
fi
if [ ! -f ".venv-package/.ziglang-$ZIGLANG_VERSION" ]; then
  rm -rf .venv-package
  python3 -m venv .venv-package
  .venv-package/bin/pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
  touch ".venv-package/.ziglang-$ZIGLANG_VERSION"
fi
# cargo-zigbuild finds Zig as `python3 -m ziglang` when the venv's python3 comes first.
export PATH="$PWD/.venv-package/bin:$PWD/.tools/bin:$PATH"
cargo zigbuild --locked --release -p teams-cdr-functions --target "$TARGET.$GLIBC"

stage=dist/package
rm -rf "$stage" dist/teams-cdr-functions.zip
mkdir -p "$stage"
cp host.json "$stage/"
for dir in handlers/*/; do
  name=$(basename "$dir")
  mkdir -p "$stage/$name"
  cp "$dir/function.json" "$stage/$name/"
done
install -m 0755 "target/$TARGET/release/teams-cdr-functions" "$stage/teams-cdr-functions"
python3 tools/zip_package.py "$stage" dist/teams-cdr-functions.zip
echo "package: dist/teams-cdr-functions.zip"
