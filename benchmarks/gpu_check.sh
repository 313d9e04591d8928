#!/usr/bin/env bash
# gpu_check.sh: galvae on one GPU in one command, under 8 minutes: set-up, training throughput of both
# architectures (bf16, batch 2048 and 4096), `galvae run --preset paper` on a small mock, the tests.
#
# The device machine (an H200) reaches no network and has no bagpipes (its 274 MB of grids cannot
# travel), so what it lacks is made here first and carried:
#
#   bash benchmarks/gpu_check.sh --stage      # here: .gpu_check/whl (wheels the device lacks: astropy,
#                                             # zarr, dask, ...) and .gpu_check/dataset.zarr (the mock of
#                                             # examples/paper-gpu.yaml, prepared), ~55 MB
#   on the GPU machine: bash benchmarks/gpu_check.sh   (with .gpu_check/ copied beside the working tree)
#
# Steps on the device, each under its own `timeout` (a failed step does not stop the others; the script
# exits 1 at the end if any failed), all within GPU_CHECK_BUDGET = 470 s:
#   1 setup   (≤ 60 s, ~20-30 s expected) host, nvidia-smi, python and torch versions; the carried wheels
#             into a --target folder on PYTHONPATH; galvae `pip install -e . --no-deps --no-build-isolation`
#             (the image's CUDA torch is kept: nothing is fetched, and torch's version is checked after);
#   2 bench   (≤ 90 s, ~50 s) benchmarks/bench_train.py --device cuda: paper and compact, bf16 autocast,
#             batch 2048 and 4096, spectra/s over timed epochs after a warm-up epoch (torch.cuda.synchronize);
#   3 run     (≤ 270 s, ~2.5-3 min expected) galvae run --preset paper --config
#             examples/paper-gpu.yaml --data .gpu_check/dataset.zarr, into $GPU_CHECK_WORK/run (not under
#             $OUT: its 32 cells write ~0.2 GB of weights each, and only a few result files are copied back),
#             with nvidia-smi sampling the GPU's load every second;
#   3b refine (≤ 30 s) benchmarks/bench_refine.py --device cuda on the run's first VAE cell: the seconds per
#             1000 test spectra of the 40-step ML-latent refinement that BIC is computed at ($OUT/gpu_check/bench_refine.json);
#   4 pytest  (≤ 150 s, or what is left of the budget but 15 s: ≥ 35 s) python -m pytest -q -x over tests/
#             (GPU-relevant files first; -n 8 and --timeout 120 where pytest-xdist and pytest-timeout are, as
#             on the device); tests that need ../shared data or bagpipes skip by themselves;
#   5 collect (≤ 15 s) $OUT/gpu_check/: gpu_check.log (everything printed, versions included), summary.json
#             (each step's status, wall time, timeout), bench_train.json, run_timings.json, index.html (the report),
#             run_files.tar.gz (the run's small files: per-cell config, metrics, history; the GPU load).
# The tests run last: their length is the least predictable, and the numbers come first.
#
# On a CPU, a much smaller version tests the plumbing end to end (no installs, no tests; a 150-galaxy mock,
# d = 2, 1 epoch, conditions none and metallicity; tiny benchmark):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh --stage   # the small dataset
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh
#
# Environment: GPU_CHECK_DEVICE (cuda | cpu), GPU_CHECK_SMALL (0 | 1), GPU_CHECK_BUDGET (seconds, 470),
# GPU_CHECK_SKIP (steps to skip, e.g. "pytest,run"), GPU_CHECK_CONFIG (examples/paper-gpu.yaml),
# GPU_CHECK_CARRY (.gpu_check), GPU_CHECK_WORK (/tmp/gpu_check), GPU_CHECK_INSTALL (auto: only with
# cuda), GPU_CHECK_PYTEST_WORKERS (8), GPU_CHECK_ORDER ("setup bench run refine pytest"), OUT (where results go;
# the folder whose files are copied back), PYTHON (python3).
set -u
cd "$(dirname "$0")/.." || exit 2
export REPO=$PWD

export PY=${PYTHON:-python3}
export DEVICE=${GPU_CHECK_DEVICE:-cuda}
export SMALL=${GPU_CHECK_SMALL:-0}
export BUDGET=${GPU_CHECK_BUDGET:-470}
export SKIP=",${GPU_CHECK_SKIP:-},"
export CONFIG=${GPU_CHECK_CONFIG:-examples/paper-gpu.yaml}
if [ "$SMALL" = 1 ]; then
  export CARRY=${GPU_CHECK_CARRY:-out/gpu_check_small/carry}
  export WORK=${GPU_CHECK_WORK:-$REPO/out/gpu_check_small/work}
  export STAGE_WORK=$REPO/out/gpu_check_small/stage
  OUT=${OUT:-$REPO/out/gpu_check_small/out}
else
  export CARRY=${GPU_CHECK_CARRY:-.gpu_check}
  export WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
  export STAGE_WORK=$REPO/out/gpu_check_stage
  OUT=${OUT:-$REPO/out/gpu_check_local}
fi
case $CARRY in /*) export CARRY_DIR=$CARRY ;; *) export CARRY_DIR=$REPO/$CARRY ;; esac
export OUT
export RESULTS=$OUT/gpu_check
export LOGS=$WORK/logs
export RUNDIR=$WORK/run
export SITE=$WORK/site
INSTALL=${GPU_CHECK_INSTALL:-auto}
[ "$INSTALL" = auto ] && { [ "$DEVICE" = cpu ] && INSTALL=0 || INSTALL=1; }
export INSTALL
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 MPLBACKEND=Agg
export PYTEST_WORKERS=${GPU_CHECK_PYTEST_WORKERS:-8}

# The packages galvae needs that the device image lacks (KINDS.md's package list), as wheels for its
# Python 3.12 / x86-64, pinned to the versions installed here.
WHEELS="astropy pyerfa astropy-iers-data zarr numcodecs donfig google-crc32c dask distributed partd locket tblib zict tornado"

# the configuration the run and the stage use: the example, or a much smaller one derived from it
config_file() {
  local cfg=$CONFIG; case $cfg in /*) ;; *) cfg=$REPO/$cfg ;; esac
  if [ "$SMALL" != 1 ]; then echo "$cfg"; return; fi
  mkdir -p "$WORK" || return 1
  "$PY" - "$cfg" "$WORK/config-small.yaml" <<'EOF' || return 1
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1])) or {}
cfg.setdefault("mock", {}).update(n=150, seed=3)
cfg.setdefault("select", {}).update(latent="2", seeds=1, epochs=1, patience=1, conditions="none,metallicity")
cfg["explain"] = {"n_boot": 3, "shap_background": 16, "shap_explain": 8}
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF
  echo "$WORK/config-small.yaml"
}
export -f config_file

# ------------------------------------------------------------------------------------------------------
# --stage: here, before the run on the GPU machine
# ------------------------------------------------------------------------------------------------------
stage() {
  set -o pipefail
  local cfg; cfg=$(config_file) || { echo "stage: no configuration"; return 1; }
  mkdir -p "$CARRY_DIR" "$STAGE_WORK" || return 1
  if [ "$CARRY" = .gpu_check ] && [ -d .git ]; then
    mkdir -p .git/info && { grep -qx '/.gpu_check/' .git/info/exclude 2>/dev/null || echo '/.gpu_check/' >> .git/info/exclude; }
  fi
  local status=0
  if [ "$SMALL" != 1 ] || [ "${GPU_CHECK_WHEELS:-0}" = 1 ]; then
    echo "== wheels for the device (Python 3.12, manylinux x86-64) into $CARRY/whl"
    mkdir -p "$CARRY_DIR/whl"
    local specs; specs=$("$PY" -c "
import importlib.metadata as m, sys
print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $WHEELS) || return 1
    local missing=""
    for spec in $specs; do
      local name=${spec%%==*} version=${spec#*==}
      local stem; stem=$(echo "$name" | tr - _)
      ls "$CARRY_DIR/whl/${stem}-${version}-"*.whl >/dev/null 2>&1 || missing="$missing $spec"
    done
    if [ -n "$missing" ]; then
      # shellcheck disable=SC2086
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$CARRY_DIR/whl" $missing || { echo "stage: pip download failed"; status=1; }
    fi
    ls -1 "$CARRY_DIR/whl"
  fi
  echo "== dataset: the mock of $cfg, prepared as galvae run prepares it, into $CARRY/dataset.zarr"
  rm -rf "$CARRY_DIR/dataset.zarr" "$CARRY_DIR/stage.json"
  # a file, not stdin: the mock's and prepare's worker processes are spawned and re-import __main__
  cat > "$STAGE_WORK/stage.py" <<'EOF'
import dataclasses, json, logging, sys, time
from pathlib import Path


def main(cfg_path, work, carry, head, changed):
    from galvae.config import load_config
    from galvae.prepare import PrepareConfig, prepare_dataset
    from galvae.run import source_inputs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config("paper", cfg_path)
    t0 = time.perf_counter()
    spectra, catalog, _ = source_inputs(cfg, Path(work).resolve(), False)
    t1 = time.perf_counter()
    result = prepare_dataset(spectra, Path(carry) / "dataset.zarr", catalog=catalog, progress=False,
                             scheduler=cfg.scheduler, cluster=cfg.cluster, workers=cfg.workers,
                             config=PrepareConfig(**dataclasses.asdict(cfg.prepare)))
    print(result.summary())
    print(f"mock {t1 - t0:.1f} s, prepare {time.perf_counter() - t1:.1f} s")
    (Path(carry) / "stage.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_head": head,
        "uncommitted_files": int(changed), "config": cfg_path, "mock": dataclasses.asdict(cfg.mock),
        "prepare": dataclasses.asdict(cfg.prepare), "n_spectra": len(spectra)}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
EOF
  "$PY" "$STAGE_WORK/stage.py" "$cfg" "$STAGE_WORK" "$CARRY_DIR" "$(git rev-parse HEAD 2>/dev/null)" \
    "$(git status --porcelain 2>/dev/null | wc -l)" || { echo "stage: the dataset failed"; status=1; }
  echo "== sizes"
  du -sh "$CARRY_DIR"/* 2>/dev/null
  local tree carry
  tree=$( (git ls-files -co --exclude-standard -z 2>/dev/null | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) || echo 0)
  carry=$(du -sb "$CARRY_DIR" | cut -f1)
  echo "working tree that travels: $((tree / 1048576)) MiB; $CARRY: $((carry / 1048576)) MiB; together $(((tree + carry) / 1048576)) MiB of a 64 MiB transfer limit"
  if (( tree + carry > 64 * 1048576 )); then echo "stage: TOO LARGE for a 64 MiB transfer"; status=1; fi
  echo "on the GPU machine: bash benchmarks/gpu_check.sh, with $CARRY copied beside the working tree"
  return $status
}

# ------------------------------------------------------------------------------------------------------
# the steps (each run as `timeout T bash -c step_NAME`)
# ------------------------------------------------------------------------------------------------------
step_setup() {
  local status=0
  echo "## host"; date -u; uname -srm; echo "cpus $(nproc)"; free -g 2>/dev/null | head -2; df -h /tmp | tail -1
  echo "## nvidia-smi"
  if command -v nvidia-smi >/dev/null; then nvidia-smi || echo "nvidia-smi failed (rc $?)"; else echo "no nvidia-smi"; fi
  echo "## python: $(command -v "$PY") $("$PY" --version 2>&1)"
  "$PY" - "$DEVICE" <<'EOF' > "$WORK/torch_before.txt" || { cat "$WORK/torch_before.txt"; echo "setup: torch is missing or sees no GPU"; status=1; }
import sys, torch
print(torch.__version__)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"cuda available {torch.cuda.is_available()}, {torch.cuda.device_count()} GPU(s)", file=sys.stderr)
if sys.argv[1].startswith("cuda"):
    assert torch.cuda.is_available(), "this torch sees no CUDA GPU"
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs", file=sys.stderr)
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    print(f"bf16 matmul check: {float((a @ a).float().abs().mean()):.3g}", file=sys.stderr)
EOF
  if [ "$INSTALL" = 1 ]; then
    if ls "$CARRY_DIR"/whl/*.whl >/dev/null 2>&1; then
      echo "## installing $(ls "$CARRY_DIR"/whl/*.whl | wc -l) carried wheels into $SITE (on PYTHONPATH)"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$CARRY_DIR"/whl/*.whl || { echo "setup: installing the wheels failed"; status=1; }
    else
      echo "## no wheels in $CARRY/whl (run --stage here first): using what the image has"
    fi
    echo "## pip install -e . (no dependencies, no build isolation: the image's torch stays)"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e "$REPO"; then
      echo "setup: pip install -e failed: galvae runs from src/ through PYTHONPATH"
      touch "$WORK/use_src"
    fi
  else
    echo "## no installs (GPU_CHECK_INSTALL=0 or a CPU check): the environment's galvae"
  fi
  [ -e "$WORK/use_src" ] && export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
  "$PY" - "$(head -1 "$WORK/torch_before.txt")" <<'EOF' || status=1
import importlib, importlib.metadata as md, sys
import torch
ok = True
if torch.__version__ != sys.argv[1]:
    print(f"setup: torch changed from {sys.argv[1]} to {torch.__version__}!"); ok = False
import galvae
print(f"galvae {galvae.__version__} from {galvae.__file__}")
for name in ("numpy", "scipy", "astropy", "zarr", "numcodecs", "dask", "distributed", "sklearn", "matplotlib",
             "yaml", "tqdm", "pytest"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name} MISSING ({type(exc).__name__}: {exc})"); ok = False
optional = []
for name in ("bagpipes", "shap", "fitsio", "spectres", "astroML", "dask_jobqueue", "safetensors", "xdist",
             "pytest_timeout"):
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001
        optional.append(name)
print("optional, absent (their tests skip, or fall back):", ", ".join(optional) or "none")
import galvae.cli, galvae.run, galvae.select, galvae.explain, galvae.report.html  # noqa: E401,F401
sys.exit(0 if ok else 1)
EOF
  return $status
}

step_bench() {
  if [ "$SMALL" = 1 ]; then
    set -- --n-pix 512 --batch-size 16 32 --batches 2 --min-seconds 0.3 --repeat 1 --n-unique 64
  else
    set -- --n-pix 4000 --batch-size 2048 4096 --batches 8 --min-seconds 3 --repeat 2 --n-unique 2048
  fi
  "$PY" "$REPO/benchmarks/bench_train.py" --device "$DEVICE" --archs paper,compact --loops galvae "$@" \
    --json "$RESULTS/bench_train.json"
}

step_run() {
  local cfg; cfg=$(config_file) || return 1
  local data=()
  if [ -d "$CARRY_DIR/dataset.zarr" ]; then
    data=(--data "$CARRY_DIR/dataset.zarr")
    echo "dataset staged here: $(cat "$CARRY_DIR/stage.json" 2>/dev/null)"
  elif "$PY" -c "import bagpipes" >/dev/null 2>&1; then
    echo "no staged dataset: the run makes its mock (bagpipes is here)"
  else
    echo "run: no $CARRY/dataset.zarr and no bagpipes: run 'bash benchmarks/gpu_check.sh --stage' before the run on the GPU machine"
    return 2
  fi
  rm -rf "$RUNDIR"
  local mon=""
  if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv,noheader -l 1 \
      > "$WORK/gpu_load.csv" 2>/dev/null &
    mon=$!
  fi
  echo "config: $cfg"; cat "$cfg" | grep -v '^#'
  "$PY" -m galvae.cli run --preset paper --config "$cfg" --out "$RUNDIR" ${data[@]+"${data[@]}"} --quiet
  local rc=$?
  [ -n "$mon" ] && kill "$mon" 2>/dev/null
  return $rc
}

step_refine() {  # what the ML-latent refinement that BIC needs costs on this device (the run's first VAE cell)
  local cell data
  cell=$(ls -d "$RUNDIR"/select/cells/*_vae_s0 2>/dev/null | head -1)
  [ -n "$cell" ] || { echo "refine: no VAE cell in $RUNDIR (did the run step finish?)"; return 2; }
  if [ -d "$CARRY_DIR/dataset.zarr" ]; then data=$CARRY_DIR/dataset.zarr; else data=$RUNDIR/dataset.zarr; fi
  "$PY" "$REPO/benchmarks/bench_refine.py" --device "$DEVICE" --model "$cell" --data "$data" --steps 0 40 \
    --out "$RESULTS/bench_refine.json"
}

step_pytest() {
  local args=(-q -x -p no:cacheprovider -rs --durations=15)
  "$PY" -c "import xdist" >/dev/null 2>&1 && args+=(-n "$PYTEST_WORKERS")
  "$PY" -c "import pytest_timeout" >/dev/null 2>&1 && args+=(--timeout 120)
  local first="tests/test_fit.py tests/test_models.py tests/test_select.py tests/test_explain.py tests/test_report.py"
  local files=() f
  for f in $first; do [ -e "$REPO/$f" ] && files+=("$f"); done
  for f in "$REPO"/tests/test_*.py; do
    case " $first " in *" tests/${f##*/} "*) ;; *) files+=("tests/${f##*/}") ;; esac
  done
  echo "python -m pytest ${args[*]} ${files[*]}"
  (cd "$REPO" && "$PY" -m pytest "${args[@]}" "${files[@]}")
}

step_collect() {
  mkdir -p "$RESULTS"
  [ -f "$RUNDIR/report/index.html" ] && cp "$RUNDIR/report/index.html" "$RESULTS/index.html"
  "$PY" - "$RUNDIR" "$WORK/gpu_load.csv" "$RESULTS/run_timings.json" <<'EOF' || cp "$RUNDIR/timings.json" "$RESULTS/run_timings.json" 2>/dev/null
import csv, json, statistics, sys
from pathlib import Path
run, load, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out = {"stages": json.loads((run / "timings.json").read_text()) if (run / "timings.json").exists() else None}
cells = sorted((run / "select" / "cells").glob("*/history.csv")) if run.exists() else []
per_cell, per_epoch, epochs = [], [], []
for h in cells:
    rows = list(csv.DictReader(open(h)))
    secs = [float(r["seconds"]) for r in rows if r.get("seconds")]
    epochs.append(len(rows)); per_epoch += secs; per_cell.append(sum(secs))
out["cells"] = {"n": len(cells), "done": len(list((run / "select" / "cells").glob("*/cell.json"))) if cells else 0,
                "failed": len(list((run / "select" / "cells").glob("*/error.json"))) if cells else 0,
                "epochs": sum(epochs), "median_epoch_seconds": statistics.median(per_epoch) if per_epoch else None,
                "median_cell_train_seconds": statistics.median(per_cell) if per_cell else None}
if out["stages"] and out["stages"].get("select") and cells:  # train + val are in history.csv; the rest
    out["cells"]["select_seconds_per_cell"] = round(out["stages"]["select"] / len(cells), 2)  # is not
if load.exists():
    util, mem = [], []
    for r in csv.reader(open(load)):
        try:
            util.append(float(r[1].strip().split()[0])); mem.append(float(r[2].strip().split()[0]))
        except (IndexError, ValueError):
            pass
    if util:
        out["gpu"] = {"samples": len(util), "mean_utilization_percent": round(statistics.mean(util), 1),
                      "max_memory_used_mib": max(mem)}
best = run / "select" / "best.json"
if best.exists():
    b = json.loads(best.read_text())
    out["best"] = {k: b.get(k) for k in ("d", "conditions_label", "bic_mean")}
dest.write_text(json.dumps(out, indent=2))
print(json.dumps(out))
EOF
  local list="$WORK/small_files.txt"
  : > "$list"
  if [ -d "$RUNDIR" ]; then
    (cd "$WORK" && find run \( -name '*.json' -o -name '*.csv' -o -name '*.ecsv' -o -name '*.log' -o -name '*.png' \) \
       -size -2M -type f) > "$list"
  fi
  (cd "$WORK" && for f in gpu_load.csv config-small.yaml; do [ -f "$f" ] && echo "$f"; done) >> "$list"
  (cd "$WORK" && tar czf "$RESULTS/run_files.tar.gz" -T "$list") && echo "run_files.tar.gz: $(wc -l < "$list") files"
  ls -la "$RESULTS"
}
export -f step_setup step_bench step_run step_refine step_pytest step_collect

# ------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------
NAMES=() STATUS=() SECONDS_=() LIMITS=()
declare -A CAP=([setup]=60 [bench]=90 [run]=270 [refine]=30 [pytest]=150)
ORDER=${GPU_CHECK_ORDER:-setup bench run refine pytest}
T0=$(date +%s)
FAILED=0

run_step() {  # name timeout: runs step_<name> under timeout, records its status and wall time
  local name=$1 limit=$2
  if [[ $SKIP == *",$name,"* ]]; then
    echo; echo "=== step $name: skipped (GPU_CHECK_SKIP)"
    NAMES+=("$name"); STATUS+=(skipped); SECONDS_+=(0); LIMITS+=(0); return
  fi
  if (( limit < 10 )); then
    echo; echo "=== step $name: no time left in the ${BUDGET} s budget"
    NAMES+=("$name"); STATUS+=("fail(no time)"); SECONDS_+=(0); LIMITS+=("$limit"); FAILED=1; return
  fi
  echo; echo "=== step $name (timeout ${limit} s) at +$(( $(date +%s) - T0 )) s"
  local t1 rc status
  t1=$(date +%s%N)
  timeout -k 10 "$limit" bash -c "step_$name" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  local ms=$(( ($(date +%s%N) - t1) / 1000000 ))
  local wall; wall=$(printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)))
  case $rc in
    0) status=pass ;;
    124|137) status="fail(timeout)"; FAILED=1 ;;
    *) status="fail(rc $rc)"; FAILED=1 ;;
  esac
  [ "$name" = setup ] && [ -e "$WORK/use_src" ] && export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
  echo "=== step $name: $status in ${wall} s"
  NAMES+=("$name"); STATUS+=("$status"); SECONDS_+=("$wall"); LIMITS+=("$limit")
}

left() { echo $(( BUDGET - ($(date +%s) - T0) - ${1:-0} )); }
min() { (( $1 < $2 )) && echo "$1" || echo "$2"; }

main() {
  echo "# gpu_check: device $DEVICE, small $SMALL, budget $BUDGET s, results in $RESULTS, work in $WORK"
  echo "# tree: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') $(cat "$CARRY_DIR/stage.json" 2>/dev/null)"
  if [ -d "$SITE" ] && [ "$INSTALL" = 1 ]; then rm -rf "$SITE"; fi
  [ "$INSTALL" = 1 ] && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  rm -f "$WORK/use_src" "$WORK/gpu_load.csv" "$RESULTS"/{bench_train.json,bench_refine.json,run_timings.json,index.html,run_files.tar.gz,summary.json}
  [[ $SKIP == *",run,"* ]] || rm -rf "$RUNDIR"   # no stale run is collected
  if [ "$DEVICE" = cpu ]; then SKIP="$SKIP,pytest,"; fi   # the tests on a CPU: CI's job, not this script's
  local step
  for step in $ORDER; do   # each: its cap, or what is left of the budget but 15 s for collect
    run_step "$step" "$(min "${CAP[$step]:-60}" "$(left 15)")"
  done
  run_step collect 15

  echo; echo "=== summary (budget $BUDGET s, $(( $(date +%s) - T0 )) s used)"
  printf '%-8s %-16s %9s %9s\n' step status seconds timeout
  local i json="" sep=""
  for i in "${!NAMES[@]}"; do
    printf '%-8s %-16s %9s %9s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_[$i]}" "${LIMITS[$i]}"
    json+="$sep{\"step\": \"${NAMES[$i]}\", \"status\": \"${STATUS[$i]}\", \"seconds\": ${SECONDS_[$i]}, \"timeout\": ${LIMITS[$i]}}"
    sep=", "
  done
  "$PY" - "$RESULTS/bench_train.json" "$RESULTS/run_timings.json" <<'EOF' 2>/dev/null
import json, sys
try:
    b = json.load(open(sys.argv[1]))
    print(f"throughput ({b.get('gpu', b['device'])}, torch {b['torch']}):")
    for r in b["throughput"]:
        print(f"  {r['arch']:8s} batch {r['batch_size']:5d}: {r['galvae_spectra_per_s']:12.0f} spectra/s")
except Exception as exc:  # noqa: BLE001
    print(f"no throughput numbers ({exc})")
try:
    t = json.load(open(sys.argv[2]))
    print(f"galvae run stages (s): {t['stages']}; cells: {t['cells']}; gpu: {t.get('gpu')}; best: {t.get('best')}")
except Exception as exc:  # noqa: BLE001
    print(f"no run timings ({exc})")
EOF
  printf '{"device": "%s", "small": %s, "budget_s": %s, "used_s": %s, "failed": %s, "steps": [%s]}\n' \
    "$DEVICE" "$SMALL" "$BUDGET" "$(( $(date +%s) - T0 ))" "$FAILED" "$json" > "$RESULTS/summary.json"
  if (( FAILED )); then echo "gpu_check: FAILED (see above)"; else echo "gpu_check: all steps passed"; fi
  return $FAILED
}

if [ "${1:-}" = --stage ]; then
  stage
  exit $?
fi
mkdir -p "$RESULTS" "$LOGS" "$WORK" || exit 2
main 2>&1 | tee "$RESULTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
