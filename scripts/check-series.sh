#!/usr/bin/env bash
# check-series.sh: every prefix of the patch series builds, as each patch would land upstream on its own.
#
# For each commit of build/optimism above "pristine" (one per patches/*.patch, applied by apply.sh), a worktree
# (build/series) is checked out at it, op-node and the op-service packages the series touches are built, and the
# packages that commit touches are vetted (which compiles their tests). The workspace is build/go.work with the
# worktree in place of build/optimism.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
opt=build/optimism
wt=build/series
[ -f build/optimism.applied ] || { echo "check-series.sh: run scripts/apply.sh first" >&2; exit 1; }

git -C "$opt" worktree remove --force "$root/$wt" >/dev/null 2>&1 || rm -rf "$wt"
git -C "$opt" worktree prune
git -C "$opt" worktree add -q --detach "$root/$wt" pristine
trap 'git -C "$opt" worktree remove --force "$root/$wt" >/dev/null 2>&1 || true' EXIT
# The superchain stand-in apply.sh generates is ignored by upstream's .gitignore, so not in the worktree.
cp "$opt/op-core/superchain/superchain-configs.zip" "$wt/op-core/superchain/"
sed 's|\./optimism$|./series|' build/go.work > build/series.work
export GOWORK=$root/build/series.work

n=0
for c in $(git -C "$opt" rev-list --reverse pristine..HEAD); do
  n=$((n + 1))
  subject=$(git -C "$opt" log -1 --format=%s "$c")
  git -C "$wt" checkout -q --detach "$c"
  pkgs=$(git -C "$wt" diff --name-only "$c~1" "$c" -- '*.go' | xargs -n1 dirname | sort -u | sed 's|^|./|')
  if ! (cd "$wt" && go build ./op-node/... ./op-service/eth/... ./op-service/sources/... && go vet $pkgs); then
    echo "check-series.sh: patch $n ($subject) does not build on the patches before it" >&2
    exit 1
  fi
  echo "check-series.sh: patch $n builds: $subject"
done
