#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run against (envtest's set: etcd, kube-apiserver,
# plus kube-controller-manager and kubectl) from Go modules, into .cache/kube-bin/<version>/.
# Prints that directory; the tests find it as KUBEBUILDER_ASSETS. Binaries already there are reused.
#
#   tools/kube/build.sh                 build (or reuse) the pinned release
#   tools/kube/build.sh --update vX.Y.Z pin another release: rewrites go.mod and go.sum
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ "${1:-}" = "--update" ]; then
  k8s=${2:?usage: build.sh --update vX.Y.Z}
  staging=v0.${k8s#v1.}
  mod=$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    sed -n '1,/^module /p' go.mod
    printf '\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$k8s"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with its own
    # ./staging tree; from outside, each must point at its published v0.Y.Z instead.
    grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging' "$mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    printf ')\n'
  } > go.mod.new
  mv go.mod.new go.mod
  go mod tidy
  exit 0
fi

version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
out="$here/../../.cache/kube-bin/$version"
mkdir -p "$out"
out=$(cd "$out" && pwd)
need=()
for bin in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$out/$bin" ] || need+=("$bin")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "building ${need[*]} (Kubernetes $version) into $out; the first build takes about 9 minutes on 2 cores" >&2
  for bin in "${need[@]}"; do
    case "$bin" in
      etcd) pkg=./etcd ;;
      *) pkg=k8s.io/kubernetes/cmd/$bin ;;
    esac
    # -trimpath and no VCS stamping keep the build independent of where the repository sits; the
    # version variables are the ones Kubernetes' own build stamps (hack/lib/version.sh), so that
    # `kubectl version` and the API server's /version say which release this is.
    minor=${version#v1.}; minor=${minor%%.*}
    stamp=""
    for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      stamp="$stamp -X $v.gitVersion=$version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
    done
    CGO_ENABLED=0 go build -trimpath -ldflags="-s $stamp" -o "$out/$bin.tmp" "$pkg"
    mv "$out/$bin.tmp" "$out/$bin"
  done
fi
echo "$out"
