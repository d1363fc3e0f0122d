#!/usr/bin/env bash
# Rebuild the installed cyvcf2 (same version, its PyPI source) against the htslib of the installed pysam
# (its PyPI source), in place of the htslib 1.19 that cyvcf2's wheels bundle, compiled -O3 and, with GCC,
# profile-guided: htslib is built instrumented, trained on scripts/cyvcf2_pgo_workload.py (a VCF of its
# own, read as our stages read), then rebuilt with that profile. htslib 1.2x parses VCF text about 1.7x
# faster than 1.19, and the profile-guided build about 1.4x faster again (`hpcpop bench scan`,
# reading.iterate_ceiling; scripts/cyvcf2_ab.py). Both sources come from the package index; the build is
# static, like the wheel's. Skipped when cyvcf2 already is this build (a stamp in its package folder).
# If the profile-guided build fails, a plain -O3 one is tried; if that fails too, the wheel stays and this
# says so: everything works with any of them, only reading VCF text is slower.
# A profile-guided wheel is kept in a user cache ($HPCPOP_WHEEL_CACHE, default ~/.cache/hpcpop/wheels), as pip
# keeps the wheels it builds, keyed by cyvcf2's and htslib's versions, the Python tag and platform, the
# compiler and a hash of this script and the training workload: a fresh venv installs it in seconds.
#   usage: scripts/build-cyvcf2.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)

hts_of() {  # the htslib version an installed extension module was built with
    "$PY" - "$1" <<'PYEOF'
import ctypes, importlib, sys
lib = ctypes.CDLL(importlib.import_module(sys.argv[1]).__file__)
lib.hts_version.restype = ctypes.c_char_p
print(lib.hts_version().decode())
PYEOF
}

want=$(hts_of pysam.libchtslib)
have=$(hts_of cyvcf2.cyvcf2)
# which build is installed (bench scan reports it); the same path after the reinstall below
stamp=$("$PY" -c "import cyvcf2, pathlib; print(pathlib.Path(cyvcf2.__file__).parent / 'HPCPOP_BUILD')")
if [[ "$have" == "$want" && -f "$stamp" ]] && grep -q "profile-guided" "$stamp"; then
    echo "build-cyvcf2: cyvcf2 already is $(cat "$stamp")"
    exit 0
fi
cy_version=$("$PY" -c 'import cyvcf2; print(cyvcf2.__version__)')
ps_version=$("$PY" -c 'import pysam; print(pysam.__version__)')
# the cached build for this cyvcf2, htslib, Python, compiler and build recipe (the path is the key)
tag=$("$PY" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}")')
recipe=$({ cat "$here/build-cyvcf2.sh" "$here/cyvcf2_pgo_workload.py"; "${CC:-cc}" --version 2>&1 | head -n 1; } \
    | sha256sum | cut -c1-16)
cache_root=${HPCPOP_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcpop/wheels}
cached="$cache_root/cyvcf2-$cy_version-htslib-$want-$tag-$recipe"
if [[ -f "$cached/BUILD" ]] && compgen -G "$cached/cyvcf2-*.whl" >/dev/null; then
    if "$PY" -m pip install -q --no-deps --force-reinstall "$cached"/cyvcf2-*.whl \
        && [[ "$(hts_of cyvcf2.cyvcf2)" == "$want" ]]; then
        cp "$cached/BUILD" "$stamp"
        echo "build-cyvcf2: installed from the cache: $(cat "$stamp") ($cached)"
        exit 0
    fi
    echo "build-cyvcf2: the cached wheel in $cached did not install; rebuilding" >&2
    rm -rf "$cached"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/hpcpop-cyvcf2-XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
src="$work/cyvcf2-$cy_version"
hts="$src/htslib"
# no network plugins (the wheel's libcurl is unused here); libdeflate when its headers are there (as in
# the wheel), else zlib
CONFIGURE_OPTS=(--disable-libcurl --disable-gcs --disable-s3 --disable-plugins)

# Each step ends its function on failure (`|| return 1`): these functions run as if-conditions, where
# bash ignores `set -e`.
fetch() {
    "$PY" -m pip download -q --no-deps --no-binary cyvcf2 "cyvcf2==$cy_version" -d "$work" || return 1
    "$PY" -m pip download -q --no-deps --no-binary pysam "pysam==$ps_version" -d "$work" || return 1
    tar xzf "$work/pysam-$ps_version.tar.gz" -C "$work"
}

unpack() {  # a clean cyvcf2 source tree with pysam's htslib in place of its own
    rm -rf "$src" || return 1
    tar xzf "$work/cyvcf2-$cy_version.tar.gz" -C "$work" || return 1
    rm -rf "$hts" || return 1
    cp -r "$work/pysam-$ps_version/htslib" "$hts"
}

wheel() {  # configure htslib with CFLAGS $1, build cyvcf2's wheel into $2 (cyvcf2's build runs make)
    (cd "$hts" && ./configure CFLAGS="-fPIC $1" "${CONFIGURE_OPTS[@]}") || return 1
    rm -rf "$2" || return 1
    "$PY" -m pip wheel -q --no-deps "$src" -w "$2"
}

pgo() {  # instrumented build, the training workload, then the build that uses its profile (GCC)
    "${CC:-cc}" -v 2>&1 | grep -q '^gcc version' || { echo "not GCC: no profile-guided build"; return 1; }
    unpack || return 1
    LDFLAGS="-fprofile-generate" wheel "-O3 -fprofile-generate -fprofile-update=single" "$work/wheel-gen" \
        || return 1
    "$PY" -m pip install -q --no-deps --target "$work/gen" "$work"/wheel-gen/cyvcf2-*.whl || return 1
    PYTHONPATH="$work/gen" "$PY" "$here/cyvcf2_pgo_workload.py" "$work/train" || return 1
    ls "$hts"/vcf.gcda >/dev/null || return 1  # the profile was written
    # rebuild htslib's objects (keeping the profile) with it
    rm -f "$hts"/*.o "$hts"/cram/*.o "$hts"/htscodecs/htscodecs/*.o "$hts"/libhts.a || return 1
    wheel "-O3 -fprofile-use -fprofile-partial-training -fprofile-correction -Wno-missing-profile \
-Wno-coverage-mismatch" "$work/wheel"
}

plain() {
    unpack || return 1
    wheel "-O3" "$work/wheel"
}

echo "build-cyvcf2: rebuilding cyvcf2 $cy_version with pysam $ps_version's htslib $want (was $have; ~3-4 min)"
kind=""
if fetch >"$log" 2>&1; then
    if pgo >>"$log" 2>&1; then
        kind="-O3, profile-guided"
    else
        echo "build-cyvcf2: the profile-guided build failed ($(tail -n 1 "$log")); trying a plain -O3 build" >&2
        plain >>"$log" 2>&1 && kind="-O3"
    fi
fi
if [[ -z "$kind" ]]; then
    tail -n 20 "$log" >&2
    echo "build-cyvcf2: WARNING: the build failed; keeping cyvcf2's wheel (htslib $have). Reading VCF text" \
         "is slower with it; BCF and VCF Zarr inputs are not affected." >&2
    exit 0
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$work"/wheel/cyvcf2-*.whl
now=$(hts_of cyvcf2.cyvcf2)
deflate=$(grep -q '^#define HAVE_LIBDEFLATE 1' "$hts/config.h" && echo libdeflate || echo zlib)
desc="cyvcf2 $cy_version on htslib $now ($kind; inflating with $deflate)"
echo "$desc" >"$stamp"
echo "build-cyvcf2: $desc"
# keep a profile-guided wheel for the next fresh venv (written aside, then renamed: never half there)
if [[ "$kind" == *profile-guided* ]] && mkdir -p "$cache_root" 2>/dev/null; then
    part=$(mktemp -d "$cache_root/.part-XXXXXX") && cp "$work"/wheel/cyvcf2-*.whl "$part"/ \
        && cp "$stamp" "$part/BUILD" && mv -T "$part" "$cached" 2>/dev/null \
        && echo "build-cyvcf2: wheel kept in $cached" || rm -rf "${part:-/nonexistent}"
fi
