"""LivePath: a package whose directory is deleted (a finished thread-mode job's files) still imports its
not-yet-imported submodules from where the package lives now (the next job's files)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import shutil, sys
    a, b = sys.argv[1], sys.argv[2]
    sys.path.insert(0, a)
    import livepkg.sub.one            # the first job imports some modules of the package
    shutil.copytree(a, b)
    shutil.rmtree(a)                  # the first job ends: Flink deletes its files
    sys.path.insert(0, b)             # the next job's copy of the same code
    import livepkg.sub.two            # a module nobody imported yet
    print(livepkg.sub.two.__file__.startswith(b))
""")


def _package(root: Path, live: bool) -> None:
    line = "from schemas._paths import LivePath\n__path__ = LivePath(__name__, __path__)\n" if live else ""
    (root / "livepkg" / "sub").mkdir(parents=True)
    (root / "livepkg" / "__init__.py").write_text(line)
    (root / "livepkg" / "sub" / "__init__.py").write_text(line)
    (root / "livepkg" / "sub" / "one.py").write_text("X = 1\n")
    (root / "livepkg" / "sub" / "two.py").write_text("Y = 2\n")


@pytest.mark.parametrize("live", [True, False])
def test_a_submodule_imports_after_the_packages_first_directory_is_gone(tmp_path, live):
    _package(tmp_path / "a", live)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    if live:
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    else:  # what the TaskManager's interpreter did before: the failure LivePath exists for
        assert "No module named 'livepkg.sub.two'" in out.stderr


def test_every_package_shipped_to_the_cluster_has_a_live_path():
    from control.ops.jobs import SOURCE_PACKAGES

    inits = [p for pkg in SOURCE_PACKAGES for p in (REPO / pkg).rglob("__init__.py")]
    assert inits
    missing = [str(p.relative_to(REPO)) for p in inits if "LivePath(__name__, __path__)" not in p.read_text()]
    assert not missing
