#!/usr/bin/env bash
# Download, into .whl/ (ignored by git), the wheels that a GPU machine of this project lacks, for
# scripts/gpu-check.sh to install there. That machine has its own Python 3.12 with PyTorch, torchvision,
# NumPy, Pillow, tqdm, PyYAML, packaging and pytest, no network, and neither Hydra nor OmegaConf: these
# are the packages that the cuda tier and the GPU benchmarks need besides, at the versions that
# requirements.lock pins. (hydra-optuna-sweeper: main.py registers its sweeper at every start, which
# imports Optuna only for a sweep. Optuna, submitit and W&B are not carried: nothing in them runs on the GPU,
# and the tests of those paths run on the CPU.)
#
#     scripts/gpu-wheels.sh            # then: carry .whl to the GPU machine, run scripts/gpu-check.sh there
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(hydra-core omegaconf hydra-optuna-sweeper)
pins=()
for package in "${PACKAGES[@]}"; do
    pins+=("$(grep -i "^${package}==" requirements.lock)")
done
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python

rm -rf .whl
# --no-deps: each package's own dependencies are on that machine already, or in PACKAGES.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest .whl "${pins[@]}"
du -ch .whl/*.whl
