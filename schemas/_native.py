"""Optional native build of the hot pure-Python modules (mypyc), loaded only when it matches.

The per-message work of a worker (decode, validate, normalize, URL canonicalisation, funnel
arithmetic) is plain typed Python; mypyc (part of mypy) compiles it to C extension modules.
The build is optional and the source stays the truth:

* ``build()`` compiles :data:`MODULES` as one mypyc group into
  ``schemas/__pycache__/ctpipe-native/<tag>/``. The tag hashes every source file of the
  compiled packages plus the interpreter's ABI, so an edited source (or another Python) simply
  has no build: nothing stale can shadow a ``.py``. A build is written to a temporary directory
  and renamed into place complete, so a crash or a concurrent build never leaves half of one.
* ``activate()`` (called by ``schemas/__init__`` and ``processors/__init__``) puts the matching
  build's directory in front of the package's ``__path__``; a module without a compiled copy,
  or every module when there is no matching build, is imported from source as always.
  ``CTPIPE_NATIVE=0`` turns it off.
* Without a C compiler (or mypy) ``build()`` reports why and the code runs as pure Python;
  ``ctpipe native build`` (run by ``make``) exits non-zero only with ``--require``.

This module imports nothing of ctpipe's (STYLE: ``schemas`` is the root of the layering).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The packages whose sources make up the tag: the compiled modules and everything they import
# from us (mypyc trusts the types of what it imports, so any edit there invalidates a build).
PACKAGES = ("schemas", "processors")
# Compiled modules, as paths relative to ROOT: the per-message code. Stage classes that subclass
# interpreted ones (Faust's, ``processors.app.StateStage``) compile as Python classes with compiled
# methods. Interpreted: pydantic models (canonical, records), the Faust app and its shell (app,
# source, worker: their tests' fakes need duck typing, and compiling them gained nothing).
MODULES = (
    "schemas/codec.py",
    "schemas/detect.py",
    "schemas/framing.py",
    "schemas/funnel.py",
    "schemas/normalize.py",
    "schemas/urls.py",
    "schemas/validate.py",
    "processors/aggregate.py",
    "processors/batch.py",
    "processors/correlate.py",
    "processors/deadlines.py",
    "processors/normalize.py",
    "processors/output.py",
    "processors/sessionize.py",
)
GROUP = "ctpipe_native"
COMPLETE = "COMPLETE"
ENV = "CTPIPE_NATIVE"
_OFF = {"0", "off", "false", "no"}

_tag: str | None = None
active: dict[str, Path] = {}  # package -> directory put in front of its __path__


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


def base_dir() -> Path:
    return ROOT / "schemas" / "__pycache__" / "ctpipe-native"


def source_files() -> list[Path]:
    files: list[Path] = []
    for pkg in PACKAGES:
        files.extend(sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts))
    return files


def compute_tag() -> str:
    """Hash of the sources, the compiled-module list and the interpreter ABI."""
    h = hashlib.sha256()
    h.update(f"{sys.implementation.cache_tag}|{sysconfig.get_config_var('EXT_SUFFIX')}|".encode())
    h.update("|".join(MODULES).encode())
    for path in source_files():
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:24]


def tag() -> str:
    global _tag
    if _tag is None:
        _tag = compute_tag()
    return _tag


def build_dir() -> Path:
    return base_dir() / tag()


def available() -> bool:
    return (build_dir() / COMPLETE).is_file()


def activate(package: str, path: list[str]) -> bool:
    """Put the matching build of ``package`` in front of its ``__path__`` (a no-op without one)."""
    if package in active:
        return True
    if not enabled():
        return False
    try:
        root = build_dir()
        if not (root / COMPLETE).is_file():
            return False
    except OSError:
        return False
    lib = str(root / "lib")
    if lib not in sys.path:
        sys.path.append(lib)  # the group's shared library (<GROUP>__mypyc), imported by the shims
    path.insert(0, str(root / package))
    active[package] = root
    return True


def compiled(module: object) -> bool:
    """Whether a module object was loaded from the native build (a C extension)."""
    return str(getattr(module, "__file__", "")).endswith(str(sysconfig.get_config_var("EXT_SUFFIX")))


def loaded() -> list[str]:
    """The modules of this process that run from the native build."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in PACKAGES and compiled(module)
    )


_BUILD_SCRIPT = """
import sys
from setuptools import setup
from mypyc.build import mypycify
out, tmp, group, *paths = sys.argv[1:]
setup(
    name=group,
    ext_modules=mypycify(paths + ["--ignore-missing-imports"], group_name=group, multi_file=True),
    script_args=["build_ext", "--build-lib", out, "--build-temp", tmp],
)
"""


def build(*, verbose: bool = False) -> tuple[Path | None, str]:
    """Compile :data:`MODULES` unless the matching build exists; returns (dir or None, message)."""
    target = build_dir()
    if (target / COMPLETE).is_file():
        return target, f"native build {target.name} is up to date"
    base = base_dir()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
    started = time.monotonic()
    try:
        out = work / "out"
        cmd = [
            sys.executable,
            "-c",
            _BUILD_SCRIPT,
            str(out),
            str(work / "tmp"),
            GROUP,
            *(str(ROOT / m) for m in MODULES),
        ]
        # cwd = the scratch directory: setuptools reads no pyproject, mypy no config of ours.
        proc = subprocess.run(cmd, cwd=work, capture_output=not verbose, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join(((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-15:])
            return None, f"native build failed (the code runs as pure Python):\n{tail}"
        if compute_tag() != target.name:
            return None, "sources changed during the native build; not installed"
        lib = out / "lib"
        lib.mkdir()
        for shared in out.glob(f"{GROUP}__mypyc*"):
            shared.rename(lib / shared.name)
        (out / COMPLETE).write_text("\n".join(MODULES) + "\n")
        try:
            out.rename(target)
        except OSError:
            if not (target / COMPLETE).is_file():  # not a concurrent build's win: a real error
                raise
        for old in base.iterdir():  # builds of older sources
            if old.name != target.name and not old.name.startswith(".build-"):
                shutil.rmtree(old, ignore_errors=True)
        took = time.monotonic() - started
        return target, f"native build {target.name}: {len(MODULES)} modules in {took:.0f} s"
    finally:
        shutil.rmtree(work, ignore_errors=True)
