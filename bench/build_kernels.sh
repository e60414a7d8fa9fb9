#!/usr/bin/env bash
# Build and install the optional mamba-ssm kernels from its source package for one GPU architecture.
#   bash bench/build_kernels.sh path/to/mamba_ssm-X.tar.gz [ARCH]     # ARCH defaults to 90 (Hopper: H100/H200)
#   bash bench/build_kernels.sh path/to/mamba_ssm-X.whl                # install a wheel built before (seconds)
# WHEEL_DIR=dir keeps a copy of the built wheel there, to install on the next machine of the same kind.
# mamba-ssm's setup.py compiles for nine architectures; building only the local one takes minutes instead of an hour.
# Needs nvcc and a CUDA build of torch; works offline (--no-index, no build isolation).
set -euo pipefail
sdist=$(readlink -f "$1"); arch=${2:-90}
if [[ "$sdist" == *.whl ]]; then
  python3 -m pip install -q --no-deps --no-index "$sdist"
  python3 -c "import mamba_ssm, selective_scan_cuda; print('mamba_ssm', mamba_ssm.__version__, 'kernels ok')"
  exit 0
fi
work=$(mktemp -d)
tar xzf "$sdist" -C "$work"
cd "$work"/mamba_ssm-*
python3 - "$arch" <<'PY'
import re, sys
arch = sys.argv[1]
src = open("setup.py").read()
# drop every hard-coded -gencode pair, then add the one architecture asked for
src = re.sub(r'( *)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_\d+,code=sm_\d+"\)', r"\1pass", src)
src = src.replace('cc_flag = []', f'cc_flag = ["-gencode", "arch=compute_{arch},code=sm_{arch}"]', 1)
open("setup.py", "w").write(src)
PY
grep -c "compute_" setup.py
MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-16} python3 -m pip wheel -q --no-build-isolation --no-deps --no-index . -w "$work/wheel"
python3 -m pip install -q --no-deps --no-index "$work"/wheel/*.whl
if [[ -n "${WHEEL_DIR:-}" ]]; then mkdir -p "$WHEEL_DIR" && cp "$work"/wheel/*.whl "$WHEEL_DIR"/; fi
python3 -c "import mamba_ssm, selective_scan_cuda; print('mamba_ssm', mamba_ssm.__version__, 'kernels ok')"
