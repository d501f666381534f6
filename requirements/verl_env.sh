#!/usr/bin/env bash
# Builds .venv-verl: verl 0.7.1 (requirements/verl.lock, hashed, --no-deps) layered over the main venv.
# The main venv's site-packages is appended to .venv-verl's path by a .pth file, so torch, numpy, ray,
# transformers and heapa itself come from .venv; only what verl needs at other versions lives here.
# Usage: requirements/verl_env.sh MAIN_VENV VERL_VENV
set -euo pipefail
main=${1:-.venv}
venv=${2:-.venv-verl}
rm -rf "$venv"
"$main/bin/python" -m venv "$venv"
"$venv/bin/pip" install -q --require-hashes --no-deps -r requirements/verl.lock
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
main_site=$(purelib "$main")
echo "import site; site.addsitedir('$main_site')" > "$(purelib "$venv")/zz_heapa_main_venv.pth"
# heapa itself is built into the main venv later (make develop) and reached through the .pth.
"$venv/bin/python" -c 'import verl; from verl.trainer.main_ppo import create_rl_sampler' >/dev/null
