#!/usr/bin/env bash
# Fill gpu_carry/ (ignored by git) with what benchmarks/gpu_check.py needs on a GPU machine that
# reaches no package registry: the wheels of the Python packages its image lacks, and the packed
# CIFAR-10 JPEG copy. Run from anywhere in the repository, on a machine with internet:
#
#     benchmarks/prepare_gpu_carry.sh [PATH/TO/cifar10-jpeg-q75.tar.gz]
#
# results/gpu.md gives the device command that installs and uses what lands here.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar10-jpeg-q75.tar.gz}
mkdir -p gpu_carry
# Pure-Python wheels (py3-none-any), so the device's own Python installs them as they are.
# --no-deps: SpikingJelly declares torchvision and torchaudio, which would pull in another torch;
# its activation_based modules import only loguru beside torch and NumPy. tomli-w writes the
# runs' resolved configs.
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest gpu_carry \
    spikingjelly==2.0.0 loguru==0.7.3 tomli-w==1.2.0
cp "$data" gpu_carry/
du -sh gpu_carry
ls gpu_carry
