#!/usr/bin/env bash
# e2e-specs.sh: run Kubernetes e2e specs (the e2e.test binary of k8s.io/kubernetes at the
# cluster's version, hack/k8s/build-k8s.sh e2e) against the cluster of $WORK
# (hack/k8s/cluster-up.sh), after importing the images they use
# (hack/k8s/build-e2e-images.sh) into its containerd under the names the specs expect.
# Prints a line per spec that ran or was skipped at run time (with the reason), then
#   e2e-specs: <P> passed, <F> failed, <S> skipped (of <N> selected)
# and exits non-zero when a spec failed or none ran.
#
# Needs root. Usage: WORK=<cluster dir> hack/k8s/e2e-specs.sh <ginkgo focus> [<ginkgo skip>]
# Env: IMAGES=agnhost|all (the images to build and import: agnhost alone is what the
# Networking Granular Checks need; default all), REPORT (a directory for the e2e log and
# the ginkgo JSON report, default $WORK.e2e-report), E2E_TIMEOUT (the suite's ginkgo
# timeout, default 3h), E2E_ARGS (more e2e.test flags).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "e2e-specs: needs root" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
: "${WORK:?set WORK to the directory of the cluster (hack/k8s/cluster-up.sh)}"
FOCUS=${1:?usage: e2e-specs.sh <ginkgo focus> [<ginkgo skip>]}
SKIP=${2:-}
IMAGES=${IMAGES:-all}
REPORT=${REPORT:-$WORK.e2e-report}
K8S_VERSION=${K8S_VERSION:-1.36.3}
CACHE=${EPAIR_CACHE:-$HOME/.cache/epair}
E2E=$CACHE/k8s-v$K8S_VERSION/bin/e2e.test
KC=$WORK/run/admin.kubeconfig
[ -f "$KC" ] || { echo "e2e-specs: no cluster at $WORK ($KC missing)" >&2; exit 1; }
[ -n "${CONTAINERD_DIR:-}" ] && export PATH="$(cd "$CONTAINERD_DIR" && pwd):$PATH"

# The images, named as the specs name them; the busybox and pause ones are the cluster's.
t0=$SECONDS
lines=$("$HERE/build-e2e-images.sh" "$IMAGES")
while read -r kind a b; do
	case $kind in
	image_ref)
		ctr -n k8s.io images import "$a" >/dev/null || { echo "e2e-specs: import of $a ($b) failed" >&2; exit 1; } ;;
	e2e_ref)
		case $a in
		BusyBox) src=docker.io/epair/busybox:local ;;
		Pause) src=docker.io/epair/pause:3.10 ;;
		*) continue ;;
		esac
		ctr -n k8s.io images rm "$b" >/dev/null 2>&1 || true
		ctr -n k8s.io images tag "$src" "$b" >/dev/null ;;
	esac
done <<<"$lines"
echo "e2e-specs: images built and imported in $((SECONDS - t0)) s: $(echo "$lines" | awk '$1 == "image_ref" { printf " %s", $3 } $1 == "e2e_ref" { printf " %s", $3 }')"

rm -rf "$REPORT"
mkdir -p "$REPORT"
args=(--kubeconfig="$KC" --provider=skeleton --kubectl-path="$WORK/bin/kubectl"
	--ginkgo.focus="$FOCUS" --ginkgo.no-color --ginkgo.timeout="${E2E_TIMEOUT:-3h}"
	--ginkgo.json-report="$REPORT/report.json" --report-dir="$REPORT"
	--e2e-output-dir="$REPORT" --dump-logs-on-failure=true --disable-log-dump=true)
[ -n "$SKIP" ] && args+=(--ginkgo.skip="$SKIP")
# shellcheck disable=SC2206
[ -n "${E2E_ARGS:-}" ] && args+=($E2E_ARGS)
skipmsg=""
[ -n "$SKIP" ] && skipmsg=" --ginkgo.skip='$SKIP'"
echo "e2e-specs: e2e.test --ginkgo.focus='$FOCUS'$skipmsg (log: $REPORT/e2e.log)"
t0=$SECONDS
set +e
(cd "$REPORT" && "$E2E" "${args[@]}") >"$REPORT/e2e.log" 2>&1
rc=$?
set -e
# The JSON report: every spec of the suite; those the focus left out are "skipped" with
# no failure, a spec that skipped itself at run time has its reason as the failure message.
python3 - "$REPORT/report.json" "$rc" "$((SECONDS - t0))" <<'EOT'
import json, sys
path, rc, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    suites = json.load(open(path))
except Exception as e:
    print(f"e2e-specs: no report ({e}); e2e.test exited {rc}")
    sys.exit(1)
counts = {"passed": 0, "failed": 0, "skipped": 0}
for s in suites:
    for r in s.get("SpecReports") or []:
        if r.get("LeafNodeType") != "It":
            if r.get("State") not in ("passed", "skipped"):
                print(f"  {r.get('State').upper():8} [{r.get('LeafNodeType')}] {(r.get('Failure') or {}).get('Message', '')[:400]}")
                counts["failed"] += 1
            continue
        name = " ".join([t for t in r.get("ContainerHierarchyTexts") or []] + [r.get("LeafNodeText", "")])
        labels = [l for ls in (r.get("ContainerHierarchyLabels") or []) for l in (ls or [])] + (r.get("LeafNodeLabels") or [])
        st = r.get("State")
        msg = ((r.get("Failure") or {}).get("Message") or "").strip()
        if st == "skipped" and not msg:
            continue  # not selected
        secs_spec = r.get("RunTime", 0) / 1e9
        if st == "passed":
            counts["passed"] += 1
            print(f"  PASSED  {name} ({secs_spec:.0f}s)")
        elif st == "skipped":
            counts["skipped"] += 1
            print(f"  SKIPPED {name}: {msg.splitlines()[0]}")
        else:
            counts["failed"] += 1
            print(f"  {st.upper():7} {name} ({secs_spec:.0f}s): {msg[:600]}")
n = sum(counts.values())
print(f"e2e-specs: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped (of {n} selected) in {secs} s; e2e.test exited {rc}")
sys.exit(0 if rc == 0 and counts["failed"] == 0 and counts["passed"] > 0 else 1)
EOT
