# Shared by the scripts/bench_*.sh benchmarks (sourced).

# Busy fraction of the machine's CPUs over 2 s (other work running beside a benchmark skews it).
bench_busy() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 2
  read -r -a b < <(head -1 /proc/stat)
  local tot=0 idle=$(( (b[4] - a[4]) + (b[5] - a[5]) ))
  for i in 1 2 3 4 5 6 7 8; do tot=$(( tot + b[i] - a[i] )); done
  echo "$(( 100 - 100 * idle / (tot > 0 ? tot : 1) ))% busy"
}

# One header line about the machine and its load, the CPU model, the BLAS / OpenMP settings.
bench_machine() {
  echo "== $(date -Is) $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(bench_busy) before the runs"
  grep -m1 "model name" /proc/cpuinfo
  echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-} (unset: OpenBLAS's own detection), OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-}"
}
