"""The library and the command line import with napari and Qt unavailable.

``slide_unet`` (and its ``core`` and ``cli``) must work on a headless server with no
napari, Qt or magicgui installed, and importing it must not pull them in even where they
are installed (a slow import, and a Qt dependency where none is wanted).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKED = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide2", "PySide6", "magicgui")

# A fresh interpreter in which importing any BLOCKED module raises ImportError, as if
# it were not installed; it records who tried, and what is in sys.modules afterwards.
_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import traceback

    BLOCKED = set(json.loads(sys.argv[1]))
    attempts = []


    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                frames = [
                    f"{f.filename}:{f.lineno}"
                    for f in traceback.extract_stack()
                    if not f.filename.startswith("<frozen")
                ]
                attempts.append({"module": name, "from": frames[-2:-1]})
                raise ImportError(f"{name} is blocked for this test")
            return None


    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker())

    def loaded():
        return sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)

    report = {}
    for module in ("slide_unet", "slide_unet.core", "slide_unet.cli"):
        try:
            __import__(module)
            error = None
        except BaseException as exc:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        report[module] = {"error": error, "loaded": loaded(), "attempts": list(attempts)}
    print(json.dumps(report))
    """
)


def test_import_slide_unet_core_and_cli_without_napari_or_qt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(BLOCKED)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for module, outcome in report.items():
        assert outcome["error"] is None, f"import {module} failed: {outcome['error']}"
        assert outcome["loaded"] == [], f"import {module} loaded {outcome['loaded']}"
        assert outcome["attempts"] == [], f"import {module} tried to import {outcome['attempts']}"


# `import slide_unet` and `slide-unet --help` (and so every command's start) load
# none of the heavy libraries: the public names and the commands import them when used.
_LIGHT_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys

    import slide_unet
    from slide_unet.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["--help"])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["segment", "--help"])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["export-model", "--help"])
    heavy = ("torch", "dask.array", "scipy", "zarr", "tifffile", "safetensors", "bioimageio")
    print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
    """
)


def test_import_and_cli_help_load_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LIGHT_SCRIPT], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
