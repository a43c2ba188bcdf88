#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/gpu.md, on a machine whose python3 has a CUDA jax,
# optax, formulaic and pandas (jaxmm itself comes from this checkout through PYTHONPATH).
#   bash benchmarks/gpu.sh bench OUTDIR   # the Bernoulli q = 2 ladder, float64 and float32, then rows per block at 10M
#   bash benchmarks/gpu.sh tests OUTDIR   # the test suite with JAX_PLATFORMS=cuda
#   bash benchmarks/gpu.sh all OUTDIR     # one lease: the stages of a 10M fit, gemm, the ladder, the tests
#   bash benchmarks/gpu.sh flags OUTDIR   # compile time under XLA:GPU's compilation flags (stages of 1M and 10M fits)
#   bash benchmarks/gpu.sh effort OUTDIR  # a cold and a warm 10M fit under each of XLA's lower-effort settings
#   bash benchmarks/gpu.sh gemm OUTDIR    # a cold and a warm 10M fit: this checkout, with Triton GEMM fusions, OLD_REV
#   bash benchmarks/gpu.sh target OUTDIR  # the 5 s target: cold 10M fits, this checkout against BASE_REV and with
#                                         # the autotuner, then run.py's cold median at 1M and 10M, XLA's timers, TESTS
#   bash benchmarks/gpu.sh confirm OUTDIR # after target: this checkout against OLD_REV (cold 10M fits, GLMM and LMM),
#                                         # run.py's cold median at 10M over five processes, TESTS
#   bash benchmarks/gpu.sh compile OUTDIR # trace/lower/XLA seconds of the fit's program, this checkout against OLD_REV,
#                                         # then XLA's own timers for this checkout's (compile_time.py --phases)
# Every step runs even when one before it fails; the logs go to OUTDIR.
set -u
started=$(date +%s)
what=${1:?bench or tests}
out=${2:?output folder}
mkdir -p "$out" /tmp/benchdata
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, jaxlib, optax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'optax', optax.__version__, jax.devices())"
tests() {
    # Several pytest workers share the GPU, so none may take most of its memory up front.
    # polars is not installed there; its one test is left out.
    # BUDGET_S: seconds for the whole script; the tests get what the steps before them left.
    left=$(( ${BUDGET_S:-3600} - ($(date +%s) - started) ))
    [ "$left" -ge 30 ] || { echo "no time left for the tests ($left s)"; return; }
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "$left" \
        python3 -m pytest -q -n 12 -p no:cacheprovider ${TESTS:-} --deselect tests/test_formula_features.py::test_polars_and_pyarrow_tables \
        2>&1 | tee "$out/tests.log" | tail -60
}
flags() {
    # A cold 10M fit's time is mostly XLA's compile, not GPU work (results/gpu.md).
    # Each variant runs in its own process (an unknown flag aborts only that one).
    for f in "" "--xla_gpu_force_compilation_parallelism=16" "--xla_gpu_enable_llvm_module_compilation_parallelism=true" \
             "--xla_gpu_autotune_level=0" "--xla_gpu_enable_libnvptxcompiler=true"; do
        echo "== XLA_FLAGS=$f"
        XLA_FLAGS="$f" timeout 120 python3 benchmarks/stages.py --problems binomial-q2-1M-balanced,binomial-q2-10M-balanced \
            --repeats 1 2>&1 | grep -v "^|---\|^$"
    done 2>&1 | tee "$out/flags.log"
}
compile() {
    # A cold fit's compile on a GPU, this checkout against OLD_REV (results/gpu.md has the
    # runs). Two processes of each.
    old=/tmp/jaxmm-old
    git worktree add -f "$old" "${OLD_REV:-c154b85}" >/dev/null 2>&1 || echo "no worktree for ${OLD_REV:-c154b85}"
    for i in 1 2; do
        PYTHONPATH=$old timeout 60 python3 benchmarks/compile_time.py --problems binomial-q2-13k-balanced,binomial-q2-1M-balanced
        timeout 60 python3 benchmarks/compile_time.py --problems binomial-q2-13k-balanced,binomial-q2-1M-balanced
    done 2>&1 | grep -v "Warning\|return fn" | tee "$out/compile.log"
    # where XLA:GPU's compile of the fit goes: its own timers (HLO passes, LLVM, PTX, cubin)
    timeout 60 python3 benchmarks/compile_time.py --phases --problems binomial-q2-13k-balanced,binomial-q2-1M-balanced \
        2>&1 | grep -v "Warning\|return fn" | tee -a "$out/compile.log"
}
effort() {
    # The cold 10M fit waits for its program's compilation; each setting below trades the
    # kernels' speed for a shorter compile. One process each (XLA_FLAGS are read when the
    # backend starts); the warm fit and the loglik say what the setting costs.
    for v in "" "JAX_EXEC_TIME_OPTIMIZATION_EFFORT=-1" "JAX_OPTIMIZATION_LEVEL=O1" \
             "XLA_FLAGS=--xla_gpu_disable_gpuasm_optimizations=true" "XLA_FLAGS=--xla_backend_optimization_level=0" \
             "XLA_FLAGS=--xla_gpu_enable_command_buffer="; do
        echo "== ${v:-default}"
        env $v timeout 60 python3 benchmarks/stages.py --problems binomial-q2-10M-balanced --repeats 1 \
            2>&1 | grep "^| binomial\|seconds from the call\|rror"
    done 2>&1 | tee "$out/effort.log"
}
gemm() {
    # XLA:GPU's compile goes mostly to HLO passes and Triton GEMM fusions, which jaxmm turns
    # off (_jit.GPU_COMPILER_OPTIONS; docs/performance.md). Three rounds, alternating, one
    # process each: this checkout, this checkout with Triton GEMM fusions, OLD_REV (default
    # 1e064b0: no Triton, the products as dots) and WAIT_REV (default 7203998: the unrolled
    # products, the layout beside the trace).
    old=/tmp/jaxmm-gemm-old
    git worktree add -f "$old" "${OLD_REV:-1e064b0}" >/dev/null 2>&1 || echo "no worktree for ${OLD_REV:-1e064b0}"
    nowait=/tmp/jaxmm-gemm-nowait
    git worktree add -f "$nowait" "${WAIT_REV:-7203998}" >/dev/null 2>&1 || echo "no worktree for ${WAIT_REV:-7203998}"
    for round in 1 2 3; do
        for v in "$PWD|" "$PWD|--option xla_gpu_enable_triton_gemm=true" "$old|" "$nowait|"; do
            echo "== round $round: ${v%%|*} ${v#*|}"
            PYTHONPATH=${v%%|*} timeout 60 python3 benchmarks/stages.py --problems binomial-q2-10M-balanced --repeats 1 \
                ${v#*|} 2>&1 | grep "^| binomial\|seconds from the call\|rror\|refused"
        done
    done 2>&1 | tee "$out/gemm.log"
    timeout 60 python3 benchmarks/compile_time.py --phases --problems binomial-q2-13k-balanced,binomial-q2-1M-balanced \
        2>&1 | grep -v "Warning\|return fn" | grep -v "IR emission for\|CompileToPtx\|PtxToCubin" | tee "$out/compile_gemm.log"
}
cold_rounds() {
    # Cold 10M Bernoulli q = 2 fits, three rounds, alternating, one process each, then one warm
    # fit. Each argument is a PYTHONPATH, then "|", then stages.py options (may be empty).
    for round in 1 2 3; do
        for v in "$@"; do
            echo "== round $round: ${v%%|*} ${v#*|}"
            PYTHONPATH=${v%%|*} timeout 60 python3 benchmarks/stages.py --problems binomial-q2-10M-balanced --repeats 1 \
                ${v#*|} 2>&1 | grep "^| binomial\|seconds from the call\|rror\|refused"
        done
    done
}
lmm_pair() {
    # one cold and one warm 10M exact-LMM fit for each PYTHONPATH given
    for v in "$@"; do
        echo "== gaussian: $v"
        PYTHONPATH=$v timeout 60 python3 benchmarks/stages.py --problems gaussian-q2-10M-balanced --repeats 1 \
            2>&1 | grep "^| gaussian\|seconds from the call\|rror"
    done
}
confirm() {
    # The autotuner off by default on a GPU, confirmed: three
    # rounds, alternating, one process each, of this checkout against OLD_REV (default 80baec0:
    # the same products, autotuned), one pair of 10M LMM fits, run.py's cold median at 10M
    # over five processes, then TESTS with what is left (BUDGET_S).
    timeout 60 python3 benchmarks/stages.py --problems binomial-q2-13k-balanced --repeats 0 2>&1 | grep "^| binomial\|rror"
    old=/tmp/jaxmm-old
    git worktree add -f "$old" "${OLD_REV:-80baec0}" >/dev/null 2>&1 || echo "no worktree for ${OLD_REV:-80baec0}"
    cold_rounds "$PWD|" "$old|" 2>&1 | tee "$out/confirm.log"
    lmm_pair "$PWD" "$old" 2>&1 | tee -a "$out/confirm.log"
    timeout 150 python3 benchmarks/run.py --engines jaxmm --repeats 2 --cold-runs 5 --timeout 60 \
        --tmpdir /tmp/benchdata --problems binomial-q2-10M-balanced \
        --out "$out/gpu.md" 2>&1 | tee "$out/bench.log" | tail -8
    tests
}
target() {
    # One lease of at most about 7 minutes (15 minutes of device time a session, starts included).
    # The first process of a call has been the slowest (files read cold, the driver's first
    # start), so a throwaway 13.7k fit comes first. Then three rounds, alternating, one process
    # each: this checkout, BASE_REV (default ee0530f: the start values' XᵀWX and Xᵀv as dots)
    # and this checkout with XLA's autotuner at its default level, 4 (jaxmm's is 0).
    timeout 60 python3 benchmarks/stages.py --problems binomial-q2-13k-balanced --repeats 0 2>&1 | grep "^| binomial\|rror"
    base=/tmp/jaxmm-base
    git worktree add -f "$base" "${BASE_REV:-ee0530f}" >/dev/null 2>&1 || echo "no worktree for ${BASE_REV:-ee0530f}"
    cold_rounds "$PWD|" "$base|" "$PWD|--option xla_gpu_autotune_level=4" 2>&1 | tee "$out/target.log"
    # the exact LMM (1c2c0e3: its products over rows and groups as sums), one pair
    lmm_pair "$PWD" "$base" 2>&1 | tee -a "$out/target.log"
    # the benchmark's own cold median: each cold fit in a fresh process, data loading excluded
    timeout 200 python3 benchmarks/run.py --engines jaxmm,jaxmm-f32 --repeats 2 --cold-runs 3 --timeout 60 \
        --tmpdir /tmp/benchdata --problems binomial-q2-1M-balanced,binomial-q2-10M-balanced \
        --out "$out/gpu.md" 2>&1 | tee "$out/bench.log" | tail -14
    timeout 40 python3 benchmarks/compile_time.py --phases --problems binomial-q2-1M-balanced \
        2>&1 | grep -v "Warning\|return fn" | grep -v "IR emission for\|CompileToPtx\|PtxToCubin" | tee "$out/compile.log"
    tests
}
case $what in
target)
    target
    ;;
confirm)
    confirm
    ;;
gemm)
    gemm
    ;;
effort)
    effort
    ;;
compile)
    compile
    ;;
flags)
    flags
    ;;
all)
    # One lease: the cold 10M fit's stages, with and without Triton GEMM fusions, XLA:GPU's own
    # timers, the 1M and 10M ladder, then the tests (TESTS: files, default all) with what is left.
    timeout 90 python3 benchmarks/stages.py --problems binomial-q2-10M-balanced --repeats 2 2>&1 | tee "$out/stages.log"
    gemm
    # 60 s an engine: a 10M fit, cold, two warm and loading, fits well within it (results/gpu.md)
    python3 benchmarks/run.py --engines jaxmm,jaxmm-f32 --repeats 2 --cold-runs 1 --timeout 60 --tmpdir /tmp/benchdata \
        --problems binomial-q2-1M-balanced,binomial-q2-10M-balanced \
        --out "$out/gpu.md" 2>&1 | tee "$out/bench.log" | tail -12
    tests
    ;;
bench)
    python3 -c "from jaxmm._cli import main; main(['example', 'sleepstudy'])" 2>&1 | tee "$out/smoke.log" | head -20
    python3 benchmarks/run.py --engines jaxmm,jaxmm-f32 --repeats 3 --cold-runs 2 --timeout 240 --tmpdir /tmp/benchdata \
        --problems binomial-q2-13k-balanced,binomial-q2-100k-balanced,binomial-q2-1M-balanced,binomial-q2-10M-balanced \
        --out "$out/gpu.md" 2>&1 | tee "$out/bench.log"
    python3 benchmarks/blocks.py --problem binomial-q2-10M-balanced --rows 19,21,24 --repeats 2 2>&1 | tee "$out/blocks.log"
    ;;
tests)
    tests
    ;;
esac
