#!/usr/bin/env bash
# W2 data-parallel train steps on 1 and 2 MPI ranks (benches/mpi.rs), each rank with one
# OpenBLAS thread, and the time of one allreduce of W2's gradients. Needs Open MPI
# (apt-get install libopenmpi-dev openmpi-bin libclang-dev pkg-config).
#
#   benches/mpi.sh [ranks...]      e.g. benches/mpi.sh 1 2
#   TAPEGRAD_W2_ROWS=64 benches/mpi.sh 1    a smaller batch (the cost model's fit)
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${*:-1 2}
cargo bench -p tapegrad-benches --features "openblas mpi" --bench mpi --no-run 2>/dev/null
bin=$(ls -t target/release/deps/mpi-* | grep -v '\.d$' | head -n 1)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export TAPEGRAD_W2_ROWS=${TAPEGRAD_W2_ROWS:-256}
for n in $ranks; do
    mpirun -np "$n" --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS -x TAPEGRAD_W2_ROWS \
        --mca btl self,vader --mca btl_vader_single_copy_mechanism none "$bin"
done
