#!/usr/bin/env bash
# Reproduces what really happens when `onnxruntime` (CPU, required by insightface) and `onnxruntime-gpu` meet in one
# environment, installed the way ComfyUI-Manager installs a pack: one `python -m pip install "<line>"` per
# requirements.txt line, in file order, then `python install.py` in the pack folder.
#
# Every case builds a fresh virtualenv under $WORK (default /tmp/ort_clash), runs real pip against PyPI with real
# wheels, and probes the result: distributions pip lists, which build's files are live
# (onnxruntime.capi.build_and_package_info.package_name), get_available_providers(), and a one-node ONNX model run.
# The GPU wheel lists CUDAExecutionProvider even on a machine without a GPU, which is how the live build is told apart.
# Not part of the test suite; takes several minutes and ~3 GB under $WORK (the pip cache makes re-runs faster).
#
# Usage: scripts/onnxruntime_clash_experiment.sh [WORK]
# Environment:
#   PYTHON           interpreter for the venvs (default python3.11; must have an onnxruntime-gpu wheel: Linux x86_64)
#   PIP_FIND_LINKS   optional folder of pre-downloaded wheels (e.g. the onnxruntime-gpu wheel), read by pip itself
#   MANAGER_GIT_DIR  optional bare git mirror of Comfy-Org/ComfyUI-Manager, for the lazy-install regex check (case G)
#   SKIP_UV=1        skip case H (ComfyUI-Manager's uv mode)
set -u
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/ort_clash}"
PY="${PYTHON:-python3.11}"
MANAGER_GIT_DIR="${MANAGER_GIT_DIR:-/work/.mirror/Comfy-Org+ComfyUI-Manager/repo}"
MARK="(sys_platform == 'linux' and platform_machine == 'x86_64') or (sys_platform == 'win32' and platform_machine == 'AMD64')"
GPU_LINE="onnxruntime-gpu; $MARK"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
[ -n "${PIP_FIND_LINKS:-}" ] && export UV_FIND_LINKS="$PIP_FIND_LINKS"

mkdir -p "$WORK"
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"

echo "== onnxruntime clash experiment, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== host: $(uname -sm), $($PY --version 2>&1), work dir $WORK, PIP_FIND_LINKS=${PIP_FIND_LINKS:-}"

# A pack folder as ComfyUI-Manager sees it: requirements.txt written per case, plus the repo's install.py.
PACK="$WORK/pack"
mkdir -p "$PACK"
cp "$REPO/install.py" "$PACK/install.py"

new_env() {  # new_env NAME: fresh venv with the newest pip
    rm -rf "${WORK:?}/$1"
    "$PY" -m venv "$WORK/$1"
    "$WORK/$1/bin/python" -m pip install -q -U pip 2>&1 | grep -v "is ignored: it is neither"
    echo "-- venv $1: $("$WORK/$1/bin/python" -m pip --version | cut -d' ' -f1-2)"
}

pip_in() {  # pip_in ENV ARGS...: a plain `python -m pip ARGS` in ENV, showing the lines that matter
    local env="$1"; shift
    local log; log="$(mktemp "$WORK/$env.pip.XXXX.log")"
    printf '$ python -m pip'; printf " %q" "$@"; echo
    "$WORK/$env/bin/python" -m pip "$@" >"$log" 2>&1
    local rc=$?
    grep -E "^(Successfully|Requirement already satisfied: onnxruntime|  (Attempting|Successfully) uninstall|ERROR|WARNING|Found existing installation|Ignoring)" "$log" \
        | grep -v "is ignored: it is neither a file nor a directory" | sed 's/^/    /'
    echo "    (exit $rc; full log $log)"
}

manager_install() {  # manager_install ENV LINE... : ComfyUI-Manager's line-by-line install of a requirements.txt
    local env="$1"; shift
    printf '%s\n' "$@" > "$PACK/requirements.txt"
    echo "requirements.txt:"; sed 's/^/    | /' "$PACK/requirements.txt"
    # Same per-line treatment as the Manager: strip, skip comments/blank lines, cut at '#', one pip call per line.
    while IFS= read -r raw || [ -n "$raw" ]; do
        local line="${raw%%#*}"
        line="$(echo "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')"
        [ -z "$line" ] && continue
        (cd "$PACK" && pip_in "$env" install "$line")
    done < "$PACK/requirements.txt"
}

run_install_py() {  # run_install_py ENV: `python install.py` with cwd = pack folder, as the Manager runs it
    echo '$ python install.py   (cwd = pack folder)'
    (cd "$PACK" && "$WORK/$1/bin/python" install.py 2>&1 | grep -v -e '^\s*$' -e 'is ignored: it is neither' -e '━' | sed 's/^/    /')
    echo "    (install.py exit ${PIPESTATUS[0]})"
}

probe() {  # probe ENV CASE-LABEL: what is installed and what is live; appends one line to the summary
    local env="$1" label="$2"
    echo "   pip list | grep onnxruntime:"
    "$WORK/$env/bin/python" -m pip list 2>/dev/null | grep -i '^onnxruntime' | sed 's/^/      /'
    "$WORK/$env/bin/python" - "$label" "$SUMMARY" <<'PYEOF'
import importlib.metadata as md, json, sys, os
label, summary = sys.argv[1], sys.argv[2]
dists = []
for d in md.distributions():
    n = (d.metadata.get("Name") or "")
    if n.lower().replace("_", "-").startswith("onnxruntime"):
        dists.append(f"{n} {d.version}")
dists.sort()
res = {"dists": ", ".join(dists) or "none"}
try:
    import onnxruntime as ort
    from onnxruntime.capi import build_and_package_info as b
    res["live"] = f"{b.package_name} {ort.__version__}"
    res["providers"] = ort.get_available_providers()
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    res["capi_libs"] = sorted(f for f in os.listdir(capi) if f.startswith("lib"))
    try:
        import numpy as np, onnx
        from onnx import helper, TensorProto
        g = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "xy"],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        z = s.run(None, {"x": np.array([1, 2], np.float32), "y": np.array([10, 20], np.float32)})[0]
        res["smoke"] = "ok" if z.tolist() == [11.0, 22.0] else f"WRONG {z}"
    except ImportError as e:
        res["smoke"] = f"skipped ({e})"
except Exception as e:
    res["live"] = f"IMPORT FAILED: {type(e).__name__}: {e}"
    res["providers"] = []
cuda = "CUDAExecutionProvider" in res["providers"]
print(f"   importlib.metadata: {res['dists']}")
print(f"   live build: {res['live']}")
print(f"   providers: {res['providers']}")
if "capi_libs" in res:
    print(f"   onnxruntime/capi libs: {res['capi_libs']}")
print(f"   one-node model on CPU: {res.get('smoke', 'not run')}")
with open(summary, "a") as f:
    f.write(f"{label} | {res['dists']} | {res['live']} | CUDA={'yes' if cuda else 'NO'} | smoke={res.get('smoke', '-')}\n")
PYEOF
    echo "   pip check: $("$WORK/$env/bin/python" -m pip check 2>&1 | tr '\n' ';' | cut -c1-300)"
}

echo; echo "######## A: requirements [onnxruntime-gpu line, insightface], Manager line by line, fresh env"
new_env A
manager_install A "$GPU_LINE" "insightface"
probe A "A  gpu-line then insightface"
echo "-- A+: then install.py"
run_install_py A
probe A "A+ ... then install.py"

echo; echo "######## B: requirements [insightface, onnxruntime-gpu line], Manager line by line, fresh env"
new_env B
manager_install B "insightface" "$GPU_LINE"
probe B "B  insightface then gpu-line"
echo "-- B+: then install.py (expected: no-op)"
run_install_py B
probe B "B+ ... then install.py"

echo; echo "######## C: onnxruntime-gpu installed by the user BEFORE the pack, then the pack (order of B)"
new_env C
pip_in C install onnxruntime-gpu
probe C "C0 user had onnxruntime-gpu"
manager_install C "insightface" "$GPU_LINE"
probe C "C  ... then insightface, gpu-line"
echo "-- C+: then install.py"
run_install_py C
probe C "C+ ... then install.py"

echo; echo "######## D: later installs on a working env (B's final state)"
echo "-- D1: pip install -U onnxruntime"
pip_in B install -U onnxruntime
probe B "D1 B then pip install -U onnxruntime"
echo "-- D2: another pack's requirements line 'onnxruntime'"
pip_in B install onnxruntime
probe B "D2 B then pip install onnxruntime"
echo "-- D3: a NEWER CPU onnxruntime than the one installed reaches the env (pip install -U onnxruntime after a release)"
echo "   emulated: env built the same way while onnxruntime 1.31.1 was the newest CPU release, then -U"
new_env D
pip_in D install insightface "onnxruntime==1.31.1"
pip_in D install "$GPU_LINE"
probe D "D3a insightface(ort 1.31.1), gpu-line"
pip_in D install -U onnxruntime
probe D "D3b ... then pip install -U onnxruntime"
echo "-- D4: another pack pins an older CPU onnxruntime"
pip_in D install "onnxruntime==1.31.0"
probe D "D4 ... then another pack: onnxruntime==1.31.0"
echo "-- D5: install.py after D4"
run_install_py D
probe D "D5 ... then install.py"
echo "-- D6: the tempting 'fix' pip uninstall onnxruntime (both dists installed, GPU files live)"
pip_in D uninstall -y onnxruntime
probe D "D6 ... then pip uninstall -y onnxruntime"
echo "-- D7: install.py after D6"
run_install_py D
probe D "D7 ... then install.py"

echo; echo "######## E: version mixing, explicit (CPU 1.32.0 over GPU 1.31.1 and the reverse)"
new_env E
pip_in E install onnx numpy
pip_in E install onnxruntime-gpu==1.31.1
pip_in E install onnxruntime==1.32.0
probe E "E1 gpu 1.31.1 then cpu 1.32.0"
pip_in E install --force-reinstall --no-deps onnxruntime-gpu==1.31.1
probe E "E2 ... then force-reinstall gpu 1.31.1"
echo "-- E3: uninstall onnxruntime-gpu while CPU files are live (the other 'fix')"
pip_in E install --force-reinstall --no-deps onnxruntime==1.32.0
pip_in E uninstall -y onnxruntime-gpu
probe E "E3 cpu files live, then pip uninstall -y onnxruntime-gpu"

echo; echo "######## F: the repo's requirements.txt + install.py, Manager line by line, fresh env"
new_env F
mapfile -t REQ_LINES < "$REPO/requirements.txt"
manager_install F "${REQ_LINES[@]}"
probe F "F  repo requirements.txt"
run_install_py F
probe F "F+ repo requirements.txt + install.py"
echo "-- F2: same, but the user had onnxruntime-gpu before"
new_env F2
pip_in F2 install onnxruntime-gpu
manager_install F2 "${REQ_LINES[@]}"
probe F2 "F2 gpu first, repo requirements.txt"
run_install_py F2
probe F2 "F2+ ... + install.py"

echo; echo "######## I: the repo's requirements.txt in ONE pip call (manual install: pip install -r requirements.txt)"
new_env I
(cd "$REPO" && pip_in I install -r requirements.txt)
probe I "I  pip install -r requirements.txt"
run_install_py I
probe I "I+ ... then install.py"

echo; echo "######## G: ComfyUI-Manager lazy mode (Windows, always_lazy_install) skips lines is_installed() accepts"
if git --git-dir="$MANAGER_GIT_DIR" rev-parse HEAD >/dev/null 2>&1; then
    pat="$(git --git-dir="$MANAGER_GIT_DIR" show HEAD:prestartup_script.py | grep -m1 -o "pattern = r'[^']*'" | sed "s/^pattern = r'//; s/'$//")"
    echo "   Manager $(git --git-dir="$MANAGER_GIT_DIR" rev-parse --short HEAD) is_installed() name pattern: $pat"
    "$PY" - "$pat" "$GPU_LINE" <<'PYEOF'
import re, sys
pat, line = sys.argv[1], sys.argv[2]
for l in (line, "insightface", "onnxruntime-gpu"):
    m = re.search(pat, l)
    name = m.group(1) if m else l
    print(f"   line {l!r}\n      -> name looked up in pip list: {name.lower()!r}")
PYEOF
    echo "   (pip list keys are normalised with '-' -> '_', so a marker line never matches and is always re-run by pip)"
else
    echo "   skipped: no ComfyUI-Manager mirror at $MANAGER_GIT_DIR"
fi

if [ "${SKIP_UV:-0}" != "1" ]; then
    echo; echo "######## H: ComfyUI-Manager uv mode (python -m uv pip install per line), order of A, then install.py"
    new_env H
    pip_in H install uv
    printf '%s\n' "$GPU_LINE" "insightface" > "$PACK/requirements.txt"
    while IFS= read -r line; do
        printf '$ python -m uv pip install %q\n' "$line"
        "$WORK/H/bin/python" -m uv pip install "$line" 2>&1 | grep -E "^( [+-] onnxruntime|warning|error)" | sed 's/^/    /'
    done < "$PACK/requirements.txt"
    probe H "H  uv: gpu-line then insightface"
    run_install_py H
    probe H "H+ uv ... then install.py"
    echo "-- H2: a venv made without pip, uv installed as a module in it (install.py must fall back to python -m uv)"
    rm -rf "$WORK/H2"; "$PY" -m venv --without-pip "$WORK/H2"
    UV="$WORK/H/bin/uv"
    printf '$ uv pip install --python H2 uv onnxruntime-gpu==1.31.1; uv pip install --python H2 onnxruntime==1.32.0\n'
    "$UV" pip install -q --python "$WORK/H2/bin/python" uv onnxruntime-gpu==1.31.1 onnx numpy
    "$UV" pip install -q --python "$WORK/H2/bin/python" onnxruntime==1.32.0
    echo "   $("$WORK/H2/bin/python" -m pip --version 2>&1 | tail -1)"
    probe H2 "H2 uv-only venv: gpu 1.31.1 then cpu 1.32.0"
    run_install_py H2
    probe H2 "H2+ ... then install.py (via python -m uv)"
fi

echo; echo "######## Summary (case | installed onnxruntime dists | live build | CUDA provider | one-node model)"
column -t -s '|' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
