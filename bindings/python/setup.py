"""Build hook: bundles libmnemo.so inside the package, so an installed ``mnemo`` works
without ``MNEMO_LIB`` (``mnemo/_native.py`` looks next to its own files first).

The library comes from, in order:

1. ``MNEMO_LIB=/path/to/libmnemo.so`` (a library built elsewhere; nothing is built);
2. the repository this directory belongs to: ``cargo build --release --lib`` (a no-op when
   the build is current), then ``target/release/libmnemo.so``.

The version is read from the repository's Cargo.toml (from PKG-INFO in an sdist). The wheel
is tagged for this platform but any Python 3 (ctypes: no compiled Python extension).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
LIB_NAME = "libmnemo.so"


def repo_root() -> Path | None:
    """The mnemo repository around this directory, or None (e.g. in an unpacked sdist)."""
    for candidate in HERE.parents:
        manifest = candidate / "Cargo.toml"
        if manifest.is_file() and re.search(r'(?m)^name\s*=\s*"mnemo"', manifest.read_text()):
            return candidate
    return None


ROOT = repo_root()


def version() -> str:
    if ROOT is not None:
        text = (ROOT / "Cargo.toml").read_text()
        package = text.split("[package]", 1)[1].split("\n[", 1)[0]
        found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', package)
        if found:
            return found.group(1)
    pkg_info = HERE / "PKG-INFO"
    if pkg_info.is_file():
        found = re.search(r"(?m)^Version:\s*(\S+)", pkg_info.read_text())
        if found:
            return found.group(1)
    raise SystemExit("mnemo: cannot find the version (no Cargo.toml above, no PKG-INFO)")


def library() -> Path:
    """The libmnemo.so to bundle, building it first when the repository is at hand."""
    override = os.environ.get("MNEMO_LIB")
    if override:
        path = Path(override).resolve()
        if not path.is_file():
            raise SystemExit(f"mnemo: MNEMO_LIB={override!r} is not a file")
        return path
    if ROOT is None:
        raise SystemExit(
            "mnemo: no libmnemo.so to bundle: build from the mnemo repository "
            "(pip install ./bindings/python) or set MNEMO_LIB=/path/to/libmnemo.so"
        )
    if shutil.which("cargo") is None:
        built = ROOT / "target" / "release" / LIB_NAME
        if built.is_file():
            return built
        raise SystemExit("mnemo: cargo not found and no target/release/libmnemo.so to bundle")
    subprocess.run(["cargo", "build", "--release", "--lib"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / LIB_NAME


class BuildPyWithLibrary(build_py):
    """build_py, plus libmnemo.so copied into the built package."""

    def run(self) -> None:
        super().run()
        source = library()
        target = Path(self.build_lib) / "mnemo" / LIB_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o755)
        print(f"mnemo: bundled {source} as {target}")


class PlatformWheel(bdist_wheel):
    """The wheel holds a native library: platform-specific, but Python-version-neutral."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


# Keep setuptools' scratch files in the repository's target/ rather than in the source tree.
options = {}
if ROOT is not None:
    scratch = str(ROOT / "target" / "python-build")
    options = {"build": {"build_base": scratch}, "egg_info": {"egg_base": scratch}}
    os.makedirs(scratch, exist_ok=True)

setup(
    version=version(),
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
    options=options,
)
