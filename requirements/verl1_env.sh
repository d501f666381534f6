#!/usr/bin/env bash
# Builds .venv-verl1: verl 0.9.1 + TransferQueue 0.1.11 (requirements/verl1.lock, hashed, --no-deps) layered
# over the main venv, for tests/test_verl_v1.py (the verl >= 0.8 v1 path). Opt-in: `make deps` does not run
# it. The main venv's site-packages is appended by a .pth file, so torch, numpy, ray, transformers and heapa
# come from .venv. .venv-verl (verl 0.7.1) is untouched.
# Usage: requirements/verl1_env.sh MAIN_VENV VERL1_VENV
set -euo pipefail
main=${1:-.venv}
venv=${2:-.venv-verl1}
rm -rf "$venv"
"$main/bin/python" -m venv "$venv"
"$venv/bin/pip" install -q --require-hashes --no-deps -r requirements/verl1.lock
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
main_site=$(purelib "$main")
echo "import site; site.addsitedir('$main_site')" > "$(purelib "$venv")/zz_heapa_main_venv.pth"
"$venv/bin/python" -c 'import verl, heapa, transfer_queue; from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer' >/dev/null
