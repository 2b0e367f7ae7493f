"""Running the tests changes no tracked file: the browser tests' screenshots go to a
temporary folder unless ``GW_E2E_SCREENSHOTS`` says otherwise, and only
``scripts/refresh_screenshots.sh`` points it at docs/screenshots (the README's pictures).

Fast: the real ``screenshot_dir`` fixture of ``tests/e2e/conftest.py`` is asked where it
would write, in a small pytest run of its own (no browser, no server, no TensorFlow).
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "e2e"
REFRESH = REPO / "scripts" / "refresh_screenshots.sh"
VARIABLE = "GW_E2E_SCREENSHOTS"
MARKER = "SCREENSHOT_DIR="


def e2e_screenshot_dir(tmp_path: Path, setting: str | None) -> Path:
    """Where the e2e fixture ``screenshot_dir`` points with ``GW_E2E_SCREENSHOTS`` set to
    ``setting`` (``None``: unset), asked in a separate pytest run that loads that conftest."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "gw_e2e_conftest", {str(E2E / "conftest.py")!r}
            )
            e2e = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(e2e)
            screenshot_dir = e2e.screenshot_dir
            """
        )
    )
    (tmp_path / "test_where.py").write_text(
        f"def test_where(screenshot_dir):\n    print({MARKER!r} + str(screenshot_dir))\n"
    )
    environment = {name: value for name, value in os.environ.items() if name != VARIABLE}
    environment["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # nbval, hypothesis...: not needed
    if setting is not None:
        environment[VARIABLE] = setting
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    command += [f"--basetemp={tmp_path / 'basetemp'}", "test_where.py"]
    run = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"{command}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    found = re.search(rf"^{MARKER}(.+)$", run.stdout, re.MULTILINE)
    assert found, f"the fixture printed no folder:\n{run.stdout[-3000:]}"
    return Path(found.group(1)).resolve()


def test_the_e2e_screenshots_go_outside_the_repository_by_default(tmp_path):
    folder = e2e_screenshot_dir(tmp_path, None)
    assert not folder.is_relative_to(REPO), (
        f"with {VARIABLE} unset the browser tests write their screenshots to {folder}, inside "
        f"the repository {REPO}: every test run would rewrite tracked files"
    )


@pytest.mark.parametrize("setting", ["docs/screenshots", " docs/screenshots "])
def test_the_screenshot_variable_still_names_a_folder_of_the_repository(tmp_path, setting):
    assert e2e_screenshot_dir(tmp_path, setting) == REPO / "docs" / "screenshots"


def test_refresh_screenshots_retakes_the_readme_pictures():
    """The refresh script runs the browser tests into docs/screenshots, and each picture
    the README shows from there is one those tests take."""
    script = REFRESH.read_text()
    assert re.search(rf"^export {VARIABLE}=docs/screenshots\b", script, re.MULTILINE), script
    assert re.search(r"pytest .*tests/e2e", script), script
    shown = set(re.findall(r"docs/screenshots/([\w.-]+\.png)", (REPO / "README.md").read_text()))
    assert shown, "README.md shows no picture from docs/screenshots"
    taken = set(
        re.findall(r'screenshot_dir / "([\w.-]+\.png)"', (E2E / "test_browser.py").read_text())
    )
    assert shown <= taken, f"README.md shows {sorted(shown - taken)}, which no e2e test takes"


def test_the_committed_screenshot_shows_every_control_the_explorer_has():
    """docs/screenshots/jupyterlab_before.png (the README's and the docs' picture) was taken
    with the controls its browser test read beside it; a control the explorer has today that
    the picture lacks (or labels differently) means the pictures are out of date."""
    import hashlib
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("gw_e2e_page", E2E / "e2e_page.py")
    e2e_page = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = e2e_page  # its dataclasses look their module up there
    spec.loader.exec_module(e2e_page)
    folder = REPO / "docs" / "screenshots"
    record = json.loads((folder / e2e_page.CONTROLS_FILE).read_text())
    picture = hashlib.sha256((folder / record["picture"]).read_bytes()).hexdigest()
    assert picture == record["sha256"], (
        f"{record['picture']} is not the picture whose controls were recorded: retake both "
        f"with `bash {REFRESH.relative_to(REPO)}`"
    )
    shown = record["controls"]
    own = e2e_page.explorer_control_labels()
    assert len(own) >= 14, own
    stale = {
        name: (label, shown.get(name)) for name, label in own.items() if shown.get(name) != label
    }
    assert not stale, (
        f"the screenshot lacks these controls (widget label, label in the picture): {stale}; "
        f"retake it with `bash {REFRESH.relative_to(REPO)}` and commit docs/screenshots/"
    )
