#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for tests: etcd (Debian's etcd-server),
# kube-apiserver, kube-controller-manager and kube-scheduler at the pinned Kubernetes version,
# Kubeflow Trainer's controller manager (TrainJobStatus feature gate on) and the JobSet
# controller, all as local processes, with the upstream CRDs, RBAC and webhook configurations
# (webhooks at https://127.0.0.1:<port>), and our node agent (cluster/nodeagent) as the one Node:
# it runs each pod bound to it as Docker containers and serves their logs as a kubelet does.
#
#   scripts/test-cluster.sh up KUBECONFIG_PATH   start it, write an admin kubeconfig
#   scripts/test-cluster.sh down                 stop every process it started, remove its state
#   scripts/test-cluster.sh status               say whether it runs
#
# Versions: cluster/versions.env. Binaries are built once by cluster/build.sh into
# ${XDG_CACHE_HOME:-$HOME/.cache}/prefect-kubeflow/cluster/<key>/bin (the first build takes
# ~15 minutes on 2 cores). State (certificates, logs, pids, etcd data):
# $PK_CLUSTER_STATE_DIR, by default ${XDG_RUNTIME_DIR:-/tmp}/prefect-kubeflow-cluster.
# Environment: PK_CLUSTER_RUNTIMES=0 skips the upstream ClusterTrainingRuntimes (installed by
# default, every image mapped to $PK_CLUSTER_RUNTIME_IMAGE, default
# localhost/prefect-kubeflow-test:debian12-torch1.13); ETCD_BIN, GO, PYTHON choose those programs;
# PK_CLUSTER_KEEP_ON_FAILURE=1 leaves a failed start running for inspection.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster="$root/cluster"
state=${PK_CLUSTER_STATE_DIR:-${XDG_RUNTIME_DIR:-/tmp}/prefect-kubeflow-cluster}
PYTHON=${PYTHON:-python3}
# Fixed paths that Trainer reads whatever its configuration says: controller-runtime's webhook
# certificate directory (its status server's certificates too), and the in-cluster
# ServiceAccount directory (its status server takes the token issuer from the token there).
# Ours are bind-mounted there in the trainer's own mount namespace (or copied, without one).
fixed_cert_dir=/tmp/k8s-webhook-server/serving-certs
fixed_sa_dir=/var/run/secrets/kubernetes.io/serviceaccount
# stop order: controllers first, etcd last
components=(node-agent trainer jobset kube-scheduler kube-controller-manager kube-apiserver etcd)

log() { echo "test-cluster: $*" >&2; }
phases=() phase_t=${EPOCHREALTIME/[.,]/}
phase() { # name: the time since the previous phase, for the closing line of up
    local now=${EPOCHREALTIME/[.,]/}
    phases+=("$1 $(((now - phase_t) / 100000))")
    phase_t=$now
}
die() { log "$*"; exit 1; }

alive() { # name -> 0 when the recorded process is running the recorded program
    local pidfile="$state/pids/$1" pid exe
    [[ -f "$pidfile" ]] || return 1
    read -r pid exe <"$pidfile"
    [[ -n "$pid" && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

running_any() {
    local c
    for c in "${components[@]}"; do alive "$c" && return 0; done
    return 1
}

stop() { # grace-seconds name... : SIGTERM them all, SIGKILL what still runs after the grace
    local grace=$1 c pid exe i
    shift
    for c in "$@"; do
        alive "$c" || continue
        read -r pid exe <"$state/pids/$c"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 1 $((grace * 10))); do
        for c in "$@"; do alive "$c" && break; done
        alive "$c" || break
        sleep 0.1
    done
    for c in "$@"; do
        alive "$c" || continue
        read -r pid exe <"$state/pids/$c"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do alive "$c" || break; sleep 0.1; done
        alive "$c" && die "$c (pid $pid) would not stop"
    done
    return 0
}

cmd_down() {
    [[ -d "$state" ]] || { log "not running (no $state)"; return 0; }
    # the node agent first (it removes the containers of the pods it ran), then the controllers
    # (Trainer takes 30 s to stop on SIGTERM: 3 s is all it gets), etcd last
    stop 20 node-agent
    stop 3 trainer jobset kube-scheduler kube-controller-manager
    stop 10 kube-apiserver
    stop 10 etcd
    if [[ -f "$state/copied-files" ]]; then # the fallback without a private mount namespace
        xargs -r -d '\n' rm -f <"$state/copied-files"
    fi
    if [[ -f "$state/created-dirs" ]]; then # mount points we made, deepest first
        tac "$state/created-dirs" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
    fi
    rm -rf "$state"
    log "stopped; removed $state"
}

cmd_status() {
    local c any=1
    for c in "${components[@]}"; do
        if alive "$c"; then echo "$c: running (pid $(cut -d' ' -f1 "$state/pids/$c"))"; any=0
        else echo "$c: not running"; fi
    done
    return $any
}

start() { # name program args... (its own session, output to logs/<name>.log)
    local name=$1 exe
    shift
    exe=$(readlink -f "$1")
    setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
    echo "$! $exe" >"$state/pids/$name"
}

start_wrapped() { # name real-program wrapper... (the wrapper execs the real program, same pid)
    local name=$1 exe
    exe=$(readlink -f "$2")
    shift 2
    setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
    echo "$! $exe" >"$state/pids/$name"
}

wait_for() { # description timeout-seconds component command... (until the command succeeds)
    local what=$1 timeout=$2 comp=$3 deadline
    shift 3
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        alive "$comp" || { tail -n 30 "$state/logs/$comp.log" >&2; die "$comp exited while waiting for $what"; }
        ((SECONDS < deadline)) || { tail -n 30 "$state/logs/$comp.log" >&2; die "timed out waiting for $what"; }
        sleep 0.2
    done
}

make_dir() { # mkdir -p, noting each directory it creates (for down)
    local d=$1 missing=()
    while [[ ! -e "$d" ]]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
    mkdir -p "$1"
    ((${#missing[@]} == 0)) || printf '%s\n' "${missing[@]}" >>"$state/created-dirs"
}

node_ready() {
    curl -sf --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
        "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE_NAME" |
        "$PYTHON" -c 'import json,sys; c={x["type"]: x["status"] for x in json.load(sys.stdin)["status"]["conditions"]}; sys.exit(c.get("Ready") != "True")'
}

http_ok() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$@")" == 200 ]]; }
tls_answers() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$state/pki/ca.crt" "$1")" != 000 ]]; }

free_ports() { # n -> n distinct free loopback ports
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- certificates (openssl, ECDSA P-256) ---------------------------------------------------

pki() { openssl "$@" 2>>"$state/logs/openssl.log"; }

new_cert() { # name subject extensions [ca] (signed by our CA, or the named one)
    local name=$1 subj=$2 ext=$3 ca=${4:-ca} dir="$state/pki"
    pki genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key"
    pki req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr"
    printf '%s\n' "$ext" >"$dir/$name.ext"
    pki x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 30 -extfile "$dir/$name.ext" -out "$dir/$name.crt"
    rm -f "$dir/$name.csr" "$dir/$name.ext"
}

client_cert() { # name CN [O...]
    local name=$1 subj="/CN=$2" o
    shift 2
    for o in "$@"; do subj="/O=$o$subj"; done
    new_cert "$name" "$subj" $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
}

serving_cert() { # name CN SANs
    new_cert "$1" "/CN=$2" $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName='"$3"
}

new_ca() { # name CN
    local dir="$state/pki"
    pki genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key"
    pki req -x509 -new -key "$dir/$1.key" -subj "/CN=$2" -days 30 -out "$dir/$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}

make_pki() {
    local dir="$state/pki"
    mkdir -p "$dir/trainer" "$dir/jobset"
    new_ca ca prefect-kubeflow-test-cluster-ca
    # the aggregation layer's request-header authentication (else every component complains)
    new_ca front-proxy-ca prefect-kubeflow-test-cluster-front-proxy-ca
    new_cert front-proxy-client /CN=front-proxy-client \
        $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth' front-proxy-ca
    serving_cert apiserver kube-apiserver \
        "IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    pki genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/sa.key"
    pki pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub"
    client_cert admin kubernetes-admin system:masters
    client_cert kube-controller-manager system:kube-controller-manager
    client_cert kube-scheduler system:kube-scheduler
    serving_cert trainer/tls kubeflow-trainer-controller-manager \
        "IP:127.0.0.1,DNS:localhost,DNS:kubeflow-trainer-controller-manager.kubeflow-system.svc"
    serving_cert jobset/tls jobset-webhook-service "IP:127.0.0.1,DNS:localhost,DNS:jobset-webhook-service.jobset-system.svc"
    # the node agent: a kubelet's identity (the Node authorizer's rules apply), its serving
    # certificate (the API server verifies it), and the API server's client to it
    client_cert node "system:node:$NODE_NAME" system:nodes
    serving_cert kubelet "$NODE_NAME" "IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME"
    client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
}

kubeconfig() { # out user-cert-basename [embed]
    local out=$1 name=$2 embed=${3:-} ca cert key
    if [[ -n "$embed" ]]; then
        ca="certificate-authority-data: $(base64 -w0 "$state/pki/ca.crt")"
        cert="client-certificate-data: $(base64 -w0 "$state/pki/$name.crt")"
        key="client-key-data: $(base64 -w0 "$state/pki/$name.key")"
    else
        ca="certificate-authority: $state/pki/ca.crt"
        cert="client-certificate: $state/pki/$name.crt"
        key="client-key: $state/pki/$name.key"
    fi
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: prefect-kubeflow-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    $ca
users:
- name: $name
  user:
    $cert
    $key
contexts:
- name: prefect-kubeflow-test
  context:
    cluster: prefect-kubeflow-test
    user: $name
current-context: prefect-kubeflow-test
EOF
    chmod 600 "$out"
}

# --- up -----------------------------------------------------------------------------------

ensure_etcd() {
    ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
    [[ -n "$ETCD_BIN" ]] && return 0
    # shellcheck source=../cluster/versions.env
    . "$cluster/versions.env"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing Debian's $ETCD_DEBIAN_PACKAGE ..."
        apt-get install -y -qq --no-install-recommends "$ETCD_DEBIAN_PACKAGE" >/dev/null ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$ETCD_DEBIAN_PACKAGE" >/dev/null; }
        ETCD_BIN=$(command -v etcd || true)
    fi
    [[ -n "$ETCD_BIN" ]] || die "no etcd: apt-get install --no-install-recommends etcd-server (or set ETCD_BIN)"
}

module_dir() { # module-dir-under-cluster module-path -> its directory in the module cache
    (cd "$cluster/$1" && GOFLAGS=-mod=readonly "$GO" mod download -json "$2" |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

cmd_up() {
    local out=${1:-}
    [[ -n "$out" ]] || die "usage: $0 up KUBECONFIG_PATH"
    local t0=$SECONDS
    if [[ -d "$state" ]]; then
        running_any && die "already running (state $state): run '$0 down' first"
        rm -rf "$state"
    fi
    command -v openssl >/dev/null || die "openssl is needed"
    command -v curl >/dev/null || die "curl is needed"
    "$PYTHON" -c 'import kubernetes, yaml' 2>/dev/null ||
        die "$PYTHON lacks the kubernetes client (pip install kubernetes pyyaml)"
    ensure_etcd
    GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
    export GO
    local bin
    bin=$("$cluster/build.sh") || die "building the binaries failed"
    # shellcheck source=../cluster/versions.env
    . "$cluster/versions.env"
    local trainer_dir jobset_dir
    trainer_dir=$(module_dir trainer "github.com/kubeflow/trainer/v2@$TRAINER_VERSION")
    jobset_dir=$(module_dir trainer "sigs.k8s.io/jobset@$JOBSET_VERSION")
    phase binaries

    mkdir -p "$state"/{pki,logs,pids}
    chmod 700 "$state"
    if [[ "${PK_CLUSTER_KEEP_ON_FAILURE:-0}" != 1 ]]; then
        trap 'rc=$?; if ((rc)); then rm -rf "$state.failed-logs"; cp -r "$state/logs" "$state.failed-logs"
            log "start failed: logs kept in $state.failed-logs; stopping"; cmd_down; fi' EXIT
    fi

    local ports
    read -r -a ports <<<"$(free_ports 11)"
    ETCD_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]} API_PORT=${ports[2]}
    KCM_PORT=${ports[3]} SCHED_PORT=${ports[4]}
    cat >"$state/env" <<EOF
STATE_DIR=$state
BIN_DIR=$bin
TRAINER_DIR=$trainer_dir
JOBSET_DIR=$jobset_dir
ETCD_PORT=$ETCD_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
TRAINER_WEBHOOK_PORT=${ports[5]}
TRAINER_HEALTH_PORT=${ports[6]}
TRAINER_STATUS_PORT=${ports[7]}
JOBSET_WEBHOOK_PORT=${ports[8]}
JOBSET_HEALTH_PORT=${ports[9]}
RUNTIME_IMAGE=${PK_CLUSTER_RUNTIME_IMAGE:-localhost/prefect-kubeflow-test:debian12-torch1.13}
NODE_NAME=${PK_CLUSTER_NODE_NAME:-pk-node-0}
NODE_CPUS=${PK_CLUSTER_NODE_CPUS:-16}
EOF
    # shellcheck disable=SC1091
    . "$state/env"
    make_pki
    local c
    for c in admin kube-controller-manager kube-scheduler node; do
        kubeconfig "$state/$c.kubeconfig" "$c"
    done
    phase certificates

    start etcd "$ETCD_BIN" --name=test --data-dir="$state/etcd" \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="test=http://127.0.0.1:$ETCD_PEER_PORT" --logger=zap --log-level=warn
    wait_for etcd 30 etcd http_ok "http://127.0.0.1:$ETCD_PORT/health"
    phase etcd

    local pki="$state/pki"
    start kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
        --service-account-issuer="https://127.0.0.1:$API_PORT" \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
        --authorization-mode=Node,RBAC \
        --allow-privileged=true \
        --endpoint-reconciler-type=none \
        --profiling=false
    wait_for "the API server" 120 kube-apiserver http_ok --cacert "$pki/ca.crt" \
        --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$API_PORT/readyz"
    phase kube-apiserver

    # configs: the controller managers' config files; apply: CRDs, RBAC, webhook configurations;
    # tokens: trainer.kubeconfig and jobset.kubeconfig with tokens of their upstream
    # ServiceAccounts (a client certificate can't carry those names: a CN has at most 64
    # characters), so upstream RBAC applies to them
    "$PYTHON" "$cluster/manifests.py" "$state" configs apply tokens || die "applying the manifests failed"
    phase manifests
    # After the CRDs: the garbage collector then knows TrainJobs and JobSets from its first
    # discovery (else for its first 30 s, until it looks again, a foreground delete of a
    # TrainJob waits).
    start kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
        --controllers='*' --use-service-account-credentials=true \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --service-cluster-ip-range=10.96.0.0/16 --profiling=false
    start kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$state/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false

    start jobset "$bin/jobset-controller-manager" --config="$state/jobset.yaml" \
        --kubeconfig="$state/jobset.kubeconfig"
    # Trainer's fixed paths (see fixed_cert_dir above): its ServiceAccount directory holds the
    # token made by `manifests.py tokens`, whose issuer is this API server.
    local sa_dir="$state/trainer-serviceaccount"
    local trainer_cmd=("$bin/trainer-controller-manager" --config="$state/trainer.yaml"
        --kubeconfig="$state/trainer.kubeconfig" --zap-log-level=2)
    make_dir "$fixed_cert_dir"
    make_dir "$fixed_sa_dir"
    if unshare -m --propagation private true 2>/dev/null; then
        # shellcheck disable=SC2016
        start_wrapped trainer "$bin/trainer-controller-manager" env TMPDIR=/tmp \
            unshare -m --propagation private sh -c \
            'mount --bind "$0" "$1" && mount --bind "$2" "$3" && shift 3 && exec "$@"' \
            "$pki/trainer" "$fixed_cert_dir" "$sa_dir" "$fixed_sa_dir" "${trainer_cmd[@]}"
    else
        local f
        for f in "$fixed_cert_dir"/tls.{crt,key} "$fixed_sa_dir"/{token,ca.crt,namespace}; do
            [[ -e "$f" ]] && die "$f exists (another cluster?) and this machine has no private mount namespaces"
        done
        cp "$pki/trainer/tls.crt" "$pki/trainer/tls.key" "$fixed_cert_dir/"
        cp "$sa_dir"/{token,ca.crt,namespace} "$fixed_sa_dir/"
        printf '%s\n' "$fixed_cert_dir"/tls.{crt,key} "$fixed_sa_dir"/{token,ca.crt,namespace} >"$state/copied-files"
        start_wrapped trainer "$bin/trainer-controller-manager" env TMPDIR=/tmp "${trainer_cmd[@]}"
    fi
    wait_for "the JobSet controller" 120 jobset http_ok "http://127.0.0.1:$JOBSET_HEALTH_PORT/readyz"
    wait_for "the Trainer controller" 120 trainer http_ok "http://127.0.0.1:$TRAINER_HEALTH_PORT/readyz"
    wait_for "JobSet's webhook" 30 jobset tls_answers "https://127.0.0.1:$JOBSET_WEBHOOK_PORT/"
    wait_for "Trainer's webhook" 30 trainer tls_answers "https://127.0.0.1:$TRAINER_WEBHOOK_PORT/"
    "$PYTHON" "$cluster/manifests.py" "$state" check || die "the webhooks do not answer through the API server"
    phase controllers
    if [[ "${PK_CLUSTER_RUNTIMES:-1}" != 0 ]]; then
        "$PYTHON" "$cluster/manifests.py" "$state" runtimes || die "installing the runtimes failed"
        phase runtimes
    fi

    # The node agent: the test image runs pod sandboxes; Trainer's status server (on this
    # machine) answers at its Service name inside pods. The Node advertises NODE_CPUS (16) CPUs,
    # as a cluster's node would, so that a 4-node x 2-CPU job schedules on a 2-core machine.
    local python_exe
    python_exe=$("$PYTHON" -c 'import sys; print(sys.executable)') # not a pyenv shim: its pid is checked
    start_wrapped node-agent "$python_exe" env PYTHONPATH="$cluster" "$python_exe" -m nodeagent \
        --kubeconfig "$state/node.kubeconfig" --node-name "$NODE_NAME" --workdir "$state/node" \
        --sandbox-image "$RUNTIME_IMAGE" --tls-cert "$pki/kubelet.crt" --tls-key "$pki/kubelet.key" \
        --client-ca "$pki/ca.crt" --kubelet-version "$K8S_VERSION" --cpus "$NODE_CPUS" \
        --host-alias kubeflow-trainer-controller-manager.kubeflow-system.svc
    wait_for "the Node to be Ready" 60 node-agent node_ready
    phase node-agent

    mkdir -p "$(dirname "$out")"
    kubeconfig "$out" admin embed
    trap - EXIT
    local p parts=()
    for p in "${phases[@]}"; do parts+=("${p% *} $((${p#* } / 10)).$((${p#* } % 10)) s"); done
    log "up in $((SECONDS - t0)) s: API https://127.0.0.1:$API_PORT, kubeconfig $out, state $state"
    log "  ($(IFS=,; echo "${parts[*]}" | sed 's/,/, /g'))"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up KUBECONFIG_PATH | down | status" ;;
esac
