# Source this on a GPU machine whose image has JAX (CUDA), flax, optax, h5py, torch, but not the
# pure-Python packages o2o and the d3rlpy peer need, and no internet:
#   1. here, once: lab/device/bundle.sh   (wheels + datasets into .devcarry/, git-ignored)
#   2. there:      source lab/device/setup.sh
# It installs the carried wheels into /tmp/site and points o2o at the carried datasets. o2o runs from
# the source tree (python3 -m o2o.cli ...) under that machine's own JAX, which need not be o2o's pin.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devcarry/whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD/src:$PYTHONPATH
export O2O_DATA_DIR=$PWD/.devcarry/data
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # several processes share the GPU
o2o() { python3 -m o2o.cli "$@"; }
python3 -c "import jax, flax, optax, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())"
