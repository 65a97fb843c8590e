"""The built wheel, not only the editable install, ships the package and its npe2 manifest.

``src/slide_unet/napari.yaml`` is a symbolic link to the top-level ``napari.yaml``; these
tests build a real wheel, check that the link became a file in it, install the wheel into
a private directory and load the plugin's manifest from there, through its entry point,
the way napari discovers it.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
DIST_NAME = "napari-slide-unet"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result


def _manifest_modules() -> set[str]:
    commands = yaml.safe_load(MANIFEST.read_text())["contributions"]["commands"]
    return {command["python_name"].partition(":")[0] for command in commands}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the working tree, built once for this module."""
    pytest.importorskip("hatchling", reason="building the wheel needs the testing extra")
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    _run([*pip_wheel, "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)])
    (wheel,) = out.glob("napari_slide_unet-*.whl")
    return wheel


def test_wheel_ships_manifest_as_a_file_equal_to_top_level_napari_yaml(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("slide_unet/napari.yaml")
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode), "napari.yaml is stored as a symbolic link in the wheel"
        assert zf.read(info) == MANIFEST.read_bytes()


def test_wheel_ships_every_module_named_in_manifest(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for module in sorted(_manifest_modules()):
        stem = module.replace(".", "/")
        assert {f"{stem}.py", f"{stem}/__init__.py"} & names, f"{module} is not in {wheel.name}"


# Runs in a fresh interpreter so that the editable install (a .pth file that puts src/ on
# sys.path) cannot supply the package: src/ is removed from sys.path and the wheel's
# installation directory goes first, and the script reports where everything came from.
_LOAD_FROM_SITE = textwrap.dedent(
    """
    import importlib
    import json
    import sys
    from importlib import metadata, util
    from pathlib import Path

    site, src = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    sys.path[:] = [str(site)] + [p for p in sys.path if p and Path(p).resolve() != src]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    importlib.invalidate_caches()

    import npe2

    dists = [
        d for d in metadata.distributions(path=[str(site)])
        if d.metadata["Name"] == "napari-slide-unet"
    ]
    (dist,) = dists
    (entry_point,) = [ep for ep in dist.entry_points if ep.group == "napari.manifest"]
    spec = util.find_spec("slide_unet")
    manifest = npe2.PluginManifest._from_entrypoint(entry_point, dist)
    print(json.dumps({
        "entry_point": entry_point.value,
        "dist_files": str(Path(dist.locate_file("")).resolve()),
        "package_dirs": [str(Path(p).resolve()) for p in spec.submodule_search_locations],
        "name": manifest.name,
        "version": manifest.package_version,
        "readers": [
            {"command": r.command, "patterns": list(r.filename_patterns)}
            for r in manifest.contributions.readers or []
        ],
    }))
    """
)


def test_installed_wheel_exposes_plugin_through_its_entry_point(
    wheel: Path, tmp_path: Path
) -> None:
    pytest.importorskip("npe2")
    site = tmp_path / "site"
    pip_install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    _run([*pip_install, "--no-compile", "--target", str(site), str(wheel)])
    assert (site / "slide_unet" / "napari.yaml").is_file()
    assert not (site / "slide_unet" / "napari.yaml").is_symlink()

    script = tmp_path / "load_manifest.py"
    script.write_text(_LOAD_FROM_SITE)
    result = _run([sys.executable, str(script), str(site), str(ROOT / "src")], cwd=tmp_path)
    found = json.loads(result.stdout.strip().splitlines()[-1])

    site = site.resolve()
    assert found["dist_files"] == str(site)
    assert found["package_dirs"] == [str(site / "slide_unet")], (
        "slide_unet was not imported (only) from the installed wheel"
    )
    assert found["entry_point"] == "slide_unet:napari.yaml"
    assert found["name"] == DIST_NAME
    assert found["version"] == wheel.name.split("-")[1]
    readers = {r["command"]: r["patterns"] for r in found["readers"]}
    assert "napari-slide-unet.read_slide" in readers
    assert {"*.tif", "*.ome.tif", "*.svs"} <= set(readers["napari-slide-unet.read_slide"])
