#!/usr/bin/env bash
# Rebuild the installed cyvcf2 (same version, its PyPI source) against the htslib of the installed pysam
# (its PyPI source), in place of the htslib 1.19 that cyvcf2's wheels bundle. htslib 1.2x parses VCF text
# about 1.7x faster (`hpcpop bench scan`, reading.iterate_ceiling), and cyvcf2 reads our VCF regions.
# Both sources come from the package index; the build is static, like the wheel's. Skipped when cyvcf2
# already has pysam's htslib. If it cannot build (no C compiler, no zlib headers), the wheel stays and
# this says so: everything works with either, only reading VCF text is slower.
#   usage: scripts/build-cyvcf2.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}

hts_of() {  # the htslib version an installed extension module was built with
    "$PY" - "$1" <<'EOF'
import ctypes, importlib, sys
lib = ctypes.CDLL(importlib.import_module(sys.argv[1]).__file__)
lib.hts_version.restype = ctypes.c_char_p
print(lib.hts_version().decode())
EOF
}

want=$(hts_of pysam.libchtslib)
have=$(hts_of cyvcf2.cyvcf2)
if [[ "$have" == "$want" ]]; then
    echo "build-cyvcf2: cyvcf2 already has htslib $have"
    exit 0
fi
cy_version=$("$PY" -c 'import cyvcf2; print(cyvcf2.__version__)')
ps_version=$("$PY" -c 'import pysam; print(pysam.__version__)')
work=$(mktemp -d "${TMPDIR:-/tmp}/hpcpop-cyvcf2-XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/build.log"

build() {
    "$PY" -m pip download -q --no-deps --no-binary cyvcf2 "cyvcf2==$cy_version" -d "$work"
    "$PY" -m pip download -q --no-deps --no-binary pysam "pysam==$ps_version" -d "$work"
    tar xzf "$work/cyvcf2-$cy_version.tar.gz" -C "$work"
    tar xzf "$work/pysam-$ps_version.tar.gz" -C "$work"
    local src="$work/cyvcf2-$cy_version"
    rm -rf "$src/htslib"
    cp -r "$work/pysam-$ps_version/htslib" "$src/htslib"
    # static and position-independent, as cyvcf2's own build configures its htslib; libdeflate when its
    # headers are there (as in the wheel), else zlib; no network plugins (the wheel's libcurl is unused here)
    (cd "$src/htslib" && ./configure CFLAGS="-fPIC -O2" --disable-libcurl --disable-gcs --disable-s3 \
        --disable-plugins)
    "$PY" -m pip wheel -q --no-deps "$src" -w "$work/wheel"
    "$PY" -m pip install -q --no-deps --force-reinstall "$work"/wheel/cyvcf2-*.whl
}

echo "build-cyvcf2: rebuilding cyvcf2 $cy_version with pysam $ps_version's htslib $want (was $have; ~1-2 min)"
if ! build >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "build-cyvcf2: WARNING: the build failed; keeping cyvcf2's wheel (htslib $have). Reading VCF text" \
         "is slower with it; BCF and VCF Zarr inputs are not affected." >&2
    exit 0
fi
now=$(hts_of cyvcf2.cyvcf2)
deflate=$(grep -q '^#define HAVE_LIBDEFLATE 1' "$work/cyvcf2-$cy_version/htslib/config.h" && echo libdeflate || echo zlib)
echo "build-cyvcf2: cyvcf2 $cy_version now reads through htslib $now (inflating with $deflate)"
