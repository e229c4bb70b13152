#!/usr/bin/env bash
# apply.sh: pristine pinned upstream -> build/optimism, then our patches on top.
#
# The pin is the optimism version required in go.mod (one place). The module is taken from the Go
# module cache (downloaded if missing), copied writable into build/optimism and committed there as
# "pristine"; every patches/NNNN-*.patch is then applied with `git am`, one commit each, so that
# `make patches` can export edits made in build/optimism back to patches/. A patch that does not
# apply stops the script with its name and the upstream version. Re-running starts from pristine.
#
# Our module is wired in through build/go.work (a Go workspace of build/optimism and this repo),
# so go.mod stays the stock pin and only builds under build/ see the patched tree.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mod=github.com/ethereum-optimism/optimism
version=$(go list -m -f '{{.Version}}' "$mod")
go mod download "$mod@$version"
src=$(go list -m -f '{{.Dir}}' "$mod")
[ -d "$src" ] || { echo "apply.sh: $mod@$version not in the module cache ($src)" >&2; exit 1; }

dst=build/optimism
genproto=v0.0.0-20261019180522-ce908d29299b
git_() { git -C "$dst" -c user.name=op-replicator -c user.email=build@op-replicator.invalid \
  -c commit.gpgsign=false -c core.autocrlf=false "$@"; }

echo "apply.sh: $mod@$version -> $dst"
rm -rf "$dst"
mkdir -p build
cp -R "$src" "$dst"
chmod -R u+w "$dst"

# Stand-in for the generated superchain-configs.zip that the module does not ship (see the tool's doc).
go run ./internal/tools/superchainstub "$dst/op-core/superchain"

git_ init -q
git_ add -A
git_ commit -q -m "pristine $mod@$version (with superchain-configs stand-in)"
git_ tag -f pristine >/dev/null

shopt -s nullglob
for p in patches/*.patch; do
  if ! git_ am -q --3way "$root/$p" >/dev/null 2>build/apply-error.log; then
    git_ am --abort >/dev/null 2>&1 || true
    echo "apply.sh: patch $p does not apply to $mod@$version:" >&2
    cat build/apply-error.log >&2
    exit 1
  fi
  echo "apply.sh: applied $p"
done

cat > build/go.work <<WORK
go $(go list -m -f '{{.GoVersion}}' "$mod")

use (
	./optimism
	..
)

replace github.com/ethereum/go-ethereum => $(go list -m -f '{{.Replace.Path}} {{.Replace.Version}}' github.com/ethereum/go-ethereum)

// In a workspace, upstream's old indirect genproto and the split googleapis modules both provide
// google.golang.org/genproto/googleapis/... and grpc's imports become ambiguous; a newer genproto has
// no such packages left.
replace google.golang.org/genproto => google.golang.org/genproto $genproto
WORK
git_ rev-parse HEAD > build/optimism.applied
echo "apply.sh: done ($dst at $(cat build/optimism.applied | cut -c1-12))"
