#!/usr/bin/env bash
# Build the local test cluster's binaries from the pinned Go modules in cluster/kubernetes and
# cluster/trainer into the cache, skipping every binary that is already there.
#
#   cluster/build.sh                 build what is missing of the default set, print the bin dir
#   cluster/build.sh kubectl         also (or only) the named binaries; kubectl is optional
#   cluster/build.sh --bin-dir       print the bin dir, build nothing
#
# Default set: kube-apiserver kube-controller-manager kube-scheduler trainer-controller-manager
# jobset-controller-manager. Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/prefect-kubeflow/cluster/<key>/bin,
# <key> made from cluster/versions.env. Compiles run under `nice -n 19`. Needs Go >= 1.26.0
# (GO=/path/to/go to choose one) and the Go module proxy for the first build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

key="k8s-${K8S_VERSION}_trainer-${TRAINER_VERSION}_jobset-${JOBSET_VERSION}_r${BUILD_REV}"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/prefect-kubeflow/cluster/$key"
bin_dir="$cache_dir/bin"

default_set=(kube-apiserver kube-controller-manager kube-scheduler trainer-controller-manager jobset-controller-manager)

if [[ "${1:-}" == "--bin-dir" ]]; then
    echo "$bin_dir"
    exit 0
fi
wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${default_set[@]}")

log() { echo "cluster/build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# binary -> module dir and package
module_of() {
    case "$1" in
        kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo kubernetes ;;
        trainer-controller-manager | jobset-controller-manager) echo trainer ;;
        *) die "unknown binary $1" ;;
    esac
}
package_of() {
    case "$1" in
        kube-* | kubectl) echo "k8s.io/kubernetes/cmd/$1" ;;
        trainer-controller-manager) echo "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager" ;;
        jobset-controller-manager) echo "sigs.k8s.io/jobset" ;;
    esac
}

missing=()
for b in "${wanted[@]}"; do
    module_of "$b" >/dev/null
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$bin_dir"
    exit 0
fi

GO=${GO:-$(command -v go || true)}
[[ -n "$GO" ]] || GO=/usr/local/go/bin/go
[[ -x "$GO" ]] || die "no Go toolchain (set GO=/path/to/go; Go >= 1.26.0 is needed)"

# versions.env is the one place the versions are set: the go.mod files must agree with it.
kmod="$here/kubernetes/go.mod"
tmod="$here/trainer/go.mod"
grep -Eq "^[[:space:]]*k8s.io/kubernetes $K8S_VERSION( |$)" "$kmod" ||
    die "$kmod does not require k8s.io/kubernetes $K8S_VERSION (versions.env)"
if grep -E '^[[:space:]]*k8s.io/[a-z0-9-]+ => k8s.io/' "$kmod" | grep -Ev "=> k8s.io/[a-z0-9-]+ $K8S_STAGING_VERSION\$" | grep -q .; then
    die "$kmod replaces a staging module with a version other than $K8S_STAGING_VERSION (versions.env)"
fi
grep -Eq "^[[:space:]]*github.com/kubeflow/trainer/v2 $TRAINER_VERSION( |$)" "$tmod" ||
    die "$tmod does not require github.com/kubeflow/trainer/v2 $TRAINER_VERSION (versions.env)"
grep -Eq "^[[:space:]]*sigs.k8s.io/jobset $JOBSET_VERSION( |$)" "$tmod" ||
    die "$tmod does not require sigs.k8s.io/jobset $JOBSET_VERSION (versions.env)"

# JobSet at exactly the version that Trainer's own go.mod requires
trainer_gomod=$(cd "$here/trainer" && GOFLAGS=-mod=readonly "$GO" mod download -json "github.com/kubeflow/trainer/v2@$TRAINER_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
grep -Eq "^[[:space:]]*sigs.k8s.io/jobset $JOBSET_VERSION\$" "$trainer_gomod" ||
    die "trainer $TRAINER_VERSION's go.mod does not require sigs.k8s.io/jobset $JOBSET_VERSION (versions.env)"

mkdir -p "$bin_dir"
exec 9>"$cache_dir/.lock"
flock 9 # one build at a time per cache key

# -mod=readonly: go.mod and go.sum are used as committed, never rewritten.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

for b in "${missing[@]}"; do
    [[ -x "$bin_dir/$b" ]] && continue # built by a concurrent run while we waited for the lock
    mod=$(module_of "$b")
    pkg=$(package_of "$b")
    case "$b" in
        kube-* | kubectl) ldflags=$kube_ldflags ;;
        jobset-controller-manager) ldflags="-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION" ;;
        *) ldflags="-s -w" ;;
    esac
    log "building $b ($pkg) ..."
    start=$(date +%s)
    tmp="$bin_dir/.$b.tmp.$$"
    (cd "$here/$mod" && nice -n 19 "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg") ||
        { rm -f "$tmp"; die "building $b failed"; }
    mv -f "$tmp" "$bin_dir/$b"
    log "built $b in $(($(date +%s) - start)) s"
done
echo "$bin_dir"
