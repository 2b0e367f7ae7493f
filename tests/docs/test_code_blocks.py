"""Every Python code block of README.md and of the docs site's pages runs.

A page's ```` ```python ```` blocks run in order, as one script in a process of their own
(a page's blocks share names, as a reader's session would; pages share nothing), in an empty
temporary working folder. The only blocks left out are those marked, on the line just before
the fence, with ``<!-- docs: needs network: <reason> -->`` (model weights that are downloaded);
the reason is required and a marked block must still compile. A page whose block fails names
the block's first line in the page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from site_build import LOOPBACK_ONLY

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>[^`\n]*)$")
SKIP = re.compile(r"^\s*<!--\s*docs:\s*needs network:\s*(?P<reason>\S.*?)\s*-->\s*$")
MARKER = re.compile(r"<!--\s*docs:")
CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "code-cell"}
PYTHON = {"python", "py", "python3", "py3", "pycon", "ipython", "ipython3", "{code-cell}"}


def pages() -> list[Path]:
    """README.md and every Markdown page of the site (generated tables included)."""
    found = [REPO / "README.md"]
    found += sorted(path for path in (REPO / "docs").rglob("*.md") if "_build" not in path.parts)
    return found


def code_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(first line number, source, skip reason or None)`` of each Python block of ``text``."""
    lines = text.splitlines()
    blocks = []
    holders: list[str] = []  # the fences of the directives whose inside is being read
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            if MARKER.search(lines[index]) and not SKIP.match(lines[index]):
                raise ValueError(
                    f"line {index + 1}: a docs marker must read "
                    "'<!-- docs: needs network: <reason> -->'"
                )
            index += 1
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        if not info and holders and fence[0] == holders[-1][0] and len(fence) >= len(holders[-1]):
            holders.pop()  # the end of a note (or tab...) whose inside was read
            index += 1
            continue
        holder = re.match(r"^\{([\w-]+)\}", info)
        if holder and holder.group(1) not in CODE_DIRECTIVES:  # a note, a tab...: read inside
            holders.append(fence)
            index += 1
            continue
        indent = len(opening.group("indent"))
        body, end = [], index + 1
        while end < len(lines) and not re.match(rf"^ *{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        language = info.split()[0] if info else ""
        directive = re.match(r"^\{(code-block|code|sourcecode)\}\s*(\S*)", info)
        if directive:
            language = directive.group(2)
        if language.lower() in PYTHON or info.startswith("{code-cell}"):
            skip = SKIP.match(lines[index - 1]) if index else None
            if language == "pycon":  # a console session: its prompts' lines are the code
                body = [line[4:] for line in body if line.startswith((">>> ", "... "))]
            blocks.append((index + 2, "\n".join(body), skip.group("reason") if skip else None))
        elif re.search(r"py|python", info, re.IGNORECASE):
            raise ValueError(f"line {index + 1}: a fence whose language is not known: {info!r}")
        index = end + 1
    return blocks


def script(page: Path, blocks: list[tuple[int, str, str | None]]) -> str:
    """The page's runnable blocks as one script; each block announces its line first."""
    parts = [LOOPBACK_ONLY, "import matplotlib", "matplotlib.use('Agg')"]
    for line, source, skip in blocks:
        compile(source, f"{page.name}:{line}", "exec")  # a skipped block must still be Python
        if skip is None:
            parts.append(f"print('--- block at line {line}', flush=True)")
            parts.append(source)
    return "\n".join(parts) + "\n"


PAGES = [page for page in pages() if code_blocks(page.read_text())]


def test_pages_are_found():
    names = {page.relative_to(REPO).as_posix() for page in PAGES}
    assert "README.md" in names
    assert any(name.startswith("docs/guides/") for name in names), names


def test_the_collector_reads_fences_and_markers():
    text = (
        "intro\n```python\na = 1\n```\n<!-- docs: needs network: the VGG16 weights -->\n"
        "```python\nimport nothing_here\n```\n```bash\nexit 1\n```\n"
        "```{code-block} python\nb = a + 1\n```\n"
    )
    assert code_blocks(text) == [
        (3, "a = 1", None),
        (7, "import nothing_here", "the VGG16 weights"),
        (13, "b = a + 1", None),
    ]
    nested = "````{note}\n```python\nc = 3\n```\n````\n:::{tip}\n```py\nd = 4\n```\n:::\n"
    assert code_blocks(nested) == [(3, "c = 3", None), (8, "d = 4", None)]
    with pytest.raises(ValueError, match="not known"):
        code_blocks("```Python-console\n>>> x\n```\n")
    with pytest.raises(ValueError, match="docs marker"):
        code_blocks("<!-- docs: skip -->\n```python\nx\n```\n")
    with pytest.raises(SyntaxError):
        script(Path("page.md"), [(1, "def broken(:", "a reason")])


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_python_block_of_the_page_runs(page, tmp_path):
    source = script(page, code_blocks(page.read_text()))
    (tmp_path / "page_blocks.py").write_text(source)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    run = subprocess.run(
        [sys.executable, "page_blocks.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        started = re.findall(r"^--- block at line (\d+)$", run.stdout, re.MULTILINE)
        where = f"the block at line {started[-1]}" if started else "the set-up"
        pytest.fail(
            f"{page.relative_to(REPO)}: {where} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
        )
