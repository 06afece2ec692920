#!/usr/bin/env bash
# Builds the devstack's Go binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, helm) from Go modules into "$ALERTPIPE_CACHE/bin". Idempotent and resumable: each binary is
# built into a temporary name and moved into place with a stamp recording its version; a finished
# binary whose stamp matches is reused, a half-finished build is simply redone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
source "$here/versions.env"
cache=${ALERTPIPE_CACHE:-$HOME/.cache/alertpipe}
bin="$cache/bin"; work="$cache/build"
mkdir -p "$bin" "$work"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

stamp_ok() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" > "$bin/.$1.version"; }
log() { echo "[build-go $(date +%T)] $*" >&2; }

wrapper() {  # wrapper <dir>: a fresh throwaway module
  rm -rf "$work/$1"; mkdir -p "$work/$1"; cd "$work/$1"; go mod init "local/$1" >/dev/null 2>&1
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return 0
  log "etcd $ETCD_VERSION"
  wrapper etcdbin
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$bin/etcd.tmp" "$bin/etcd"; mark etcd "$ETCD_VERSION"
}

build_kube() {  # the Kubernetes commands not yet built at $KUBERNETES_VERSION, in one go build
  local v=$KUBERNETES_VERSION todo=()
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do stamp_ok "$c" "$v" || todo+=("$c"); done
  [ ${#todo[@]} = 0 ] && return 0
  log "kubernetes $v (${todo[*]} in one build)"
  local minor=${v#v1.}; minor=${minor%%.*}; local patch=${v##*.}
  local staging="v0.$minor.$patch"
  wrapper k8sbin
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local args=()
  while read -r name; do args+=("-replace=$name=$name@$staging"); done \
    < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  go mod edit "${args[@]}"
  local pkgs=() c
  for c in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # go get of the command packages (not just the module) records every go.sum entry they need
  go get "${pkgs[@]/%/@$v}"
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do  # kubectl version reads the second
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  rm -rf "$work/k8sout"; mkdir -p "$work/k8sout"
  go build -trimpath -o "$work/k8sout/" -ldflags "$ld" "${pkgs[@]}"
  for c in "${todo[@]}"; do
    mv "$work/k8sout/$c" "$bin/$c"; mark "$c" "$v"
  done
}

build_install() {  # build_install <name> <module/cmd path> <version>
  stamp_ok "$1" "$3" && return 0
  log "$1 $3"
  rm -rf "$work/gobin-$1"; mkdir -p "$work/gobin-$1"
  GOBIN="$work/gobin-$1" go install "$2@$3"
  mv "$work/gobin-$1/$1" "$bin/$1"; mark "$1" "$3"
}

what=${1:-all}
case $what in
  etcd) build_etcd ;;
  kube) build_kube ;;
  kwok) build_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" ;;
  helm) build_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
  all)
    build_etcd
    build_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
    build_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
    build_kube ;;
  *) echo "usage: build-go.sh [all|etcd|kube|kwok|helm]" >&2; exit 2 ;;
esac
log "done: $what"
