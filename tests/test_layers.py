"""Layers: every module of hpc_popgen imports only its own part or lower layers (read with ``ast``, imports inside
functions and ``TYPE_CHECKING`` blocks included), so following a parameter from the manifest to the store goes
one way down; and science code imports no Dask, click or SLURM."""

from __future__ import annotations

import ast
from pathlib import Path

import hpc_popgen

PACKAGE = Path(hpc_popgen.__file__).resolve().parent

# Low to high. A part (a package, a module, or a module inside a package: longest dotted prefix wins) may
# import itself and any part of a lower layer; parts of one layer are peers and do not import each other.
LAYERS: list[tuple[tuple[str, ...], str]] = [
    (("errors", "paths", "atomic", "seeds"), "leaves: exceptions, package paths, atomic writes, seed derivation"),
    (("catalogue", "ledger"), "the demographic model catalogue and the unit ledger (rank 0 of training writes it)"),
    (("manifest",), "schemas and manifest files: typed configs take their defaults from here"),
    (("config",), "typed, frozen configs built from schema-filled parameters"),
    (("readers",), "the genotype data users bring (VCF, VCF Zarr, ms, FASTA, masks, spectra) as plain data"),
    (("images", "store"), "image steps on what readers give; the Zarr image store"),
    (("simulate", "train", "demography"), "science: simulations into stores, training from them, spectrum searches"),
    (("infer",), "inference with a trained model, scans and their null simulations"),
    (("runlock",), "one driver per run directory: its file lock and heartbeat record"),
    (("runs",), "run directories: manifests, reports, ledgers on disk"),
    (("cluster.profiles", "cluster.sbatch"), "cluster profiles and batch scripts, plain values in"),
    (("job",), "the resolved job: each stage's config, resources and profile"),
    (("cluster",), "Dask clusters and Horovod ranks, started from a resolved job"),
    (("stages",), "stage glue: science calls as Dask tasks, ledgers, reports"),
    (("pipeline",), "stages in order for one run"),
    (("cli",), "the hpcpop command"),
    (("bench",), "benchmarks use the whole product, the CLI's group included (the CLI mounts them by name, lazily)"),
]
SCIENCE = ("readers", "images", "store", "simulate", "train", "demography", "infer")
PLATFORM_LIBS = {"dask", "distributed", "dask_jobqueue", "click"}
SLURM_COMMANDS = {"sbatch", "srun", "squeue", "scancel", "scontrol", "salloc", "sinfo"}

LAYER = {part: i for i, (parts, _why) in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    """``hpc_popgen/cluster/sbatch.py`` -> ``cluster.sbatch``; a package's ``__init__`` is the package."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def part_of(module: str) -> str | None:
    """The part of LAYERS a module belongs to (longest dotted prefix), or None."""
    pieces = module.split(".")
    for n in range(len(pieces), 0, -1):
        if ".".join(pieces[:n]) in LAYER:
            return ".".join(pieces[:n])
    return None


def _exists(module: str) -> bool:
    base = PACKAGE.joinpath(*module.split(".")) if module else PACKAGE
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() or (module != "" and base.is_dir())


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module inside hpc_popgen, '' for the package itself) of every import in ``tree``; modules
    outside hpc_popgen are left out."""
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                targets = [".".join(base + ([node.module] if node.module else []))]
                targets = ["hpc_popgen" + ("." + targets[0] if targets[0] else "")]
            else:
                targets = [node.module or ""]
            names = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t != "hpc_popgen" and not t.startswith("hpc_popgen."):
                continue
            inner = t.removeprefix("hpc_popgen").removeprefix(".")
            subs = [f"{inner}.{n}".lstrip(".") for n in names if _exists(f"{inner}.{n}".lstrip("."))]
            out += [(node.lineno, s) for s in subs] or [(node.lineno, inner)]
    return out


def modules() -> list[tuple[Path, str, ast.AST]]:
    return [(p, module_name(p), ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def upward_imports(path: Path, module: str, tree: ast.AST) -> list[str]:
    """One line per import of ``module`` that reaches a peer or a higher layer."""
    me = part_of(module)
    bad = []
    for line, target in imported(tree, module, path.name == "__init__.py"):
        if target == "":
            continue  # the package itself: only its version (checked below)
        to = part_of(target)
        if to is None or to == me:
            continue
        if LAYER[to] >= LAYER[me]:
            how = "a peer" if LAYER[to] == LAYER[me] else "a higher layer"
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target} ({how}: {to})")
    return bad


def test_every_module_has_a_layer():
    """A new package or top-level module must be placed in LAYERS, or its imports go unchecked."""
    missing = [m for p, m, _ in modules() if m and part_of(m) is None]
    assert not missing, f"place these in LAYERS: {missing}"


def test_no_module_imports_a_higher_layer():
    bad = [line for p, m, tree in modules() if m for line in upward_imports(p, m, tree)]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_package_root_imports_nothing_of_its_own():
    """``hpc_popgen/__init__.py`` sits below every layer (``from .. import __version__`` is read from it)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert imported(tree, "", True) == []


def test_checker_sees_imports_inside_functions_and_relative_ones():
    """The checker itself: an upward import inside a function, relative or absolute, is reported."""
    src = ("def f():\n    from ..stages.base import located\n"
           "def g():\n    import hpc_popgen.pipeline\n"
           "from ..readers import vcz\n")
    path = PACKAGE / "simulate" / "example.py"
    bad = upward_imports(path, "simulate.example", ast.parse(src))
    assert [b.split(": ", 1)[1] for b in bad] == ["simulate.example imports stages.base (a higher layer: stages)",
                                                  "simulate.example imports pipeline (a higher layer: pipeline)"]
    assert upward_imports(PACKAGE / "images" / "x.py", "images.x", ast.parse("from ..store import open_store\n"))


def test_science_imports_no_dask_click_or_slurm():
    """Science runs the same in a Dask task, a SLURM job or a notebook: no Dask, click or SLURM commands."""
    bad = []
    for path, module, tree in modules():
        if part_of(module) not in SCIENCE:
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: imports {n}" for n in names
                    if n.split(".")[0] in PLATFORM_LIBS]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split()[:1] and \
                    node.value.split()[0] in SLURM_COMMANDS:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: runs {node.value.split()[0]}")
    assert not bad, "\n".join(bad)


def test_only_bench_imports_bench():
    """The product never imports ``bench/`` (the CLI mounts ``hpcpop bench`` by name, without an import)."""
    users = sorted({m for p, m, tree in modules() if part_of(m) != "bench"
                    for _line, t in imported(tree, m, p.name == "__init__.py") if part_of(t) == "bench"})
    assert users == []
