#!/usr/bin/env bash
# Builds a verl venv layered over the main venv: only the hashed lock's packages (--no-deps) live in it;
# a .pth file appends the main venv's site-packages, so torch, numpy, ray, transformers and heapa itself
# come from there (heapa is built into the main venv later, by make develop).
# Usage: requirements/verl_env.sh MAIN_VENV VERL_VENV [LOCK] [IMPORT_CHECK]
# Defaults: verl 0.7.1 (requirements/verl.lock), built by `make deps` as .venv-verl.
set -euo pipefail
main=${1:-.venv}
venv=${2:-.venv-verl}
lock=${3:-requirements/verl.lock}
check=${4:-import verl; from verl.trainer.main_ppo import create_rl_sampler}
rm -rf "$venv"
"$main/bin/python" -m venv "$venv"
"$venv/bin/pip" install -q --require-hashes --no-deps -r "$lock"
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
main_site=$(purelib "$main")
echo "import site; site.addsitedir('$main_site')" > "$(purelib "$venv")/zz_heapa_main_venv.pth"
"$venv/bin/python" -c "$check" >/dev/null
