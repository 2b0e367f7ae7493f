"""CHANGELOG.md keeps the Keep a Changelog 1.1.0 form, and its newest release is the package's
version (a version bump comes with its changelog entry)."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from packaging.version import Version

import gradcam_widget as gw

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"
RELEASE = re.compile(r"## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})")
GROUPS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
LINK = re.compile(r"\[([^\]]+)\]: (\S+)")


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return CHANGELOG.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def sections(lines) -> list[tuple[str, list[str]]]:
    """``(heading, lines)`` of each ``## `` section, in the file's order."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("## "):
            found.append((line, []))
        elif found:
            found[-1][1].append(line)
    return found


def releases(sections) -> list[tuple[Version, datetime.date]]:
    """``(version, date)`` of each released section, newest first as written."""
    found = []
    for heading, _ in sections[1:]:
        match = RELEASE.fullmatch(heading)
        assert match, f"not a release heading '## [x.y.z] - YYYY-MM-DD': {heading!r}"
        found.append((Version(match[1]), datetime.date.fromisoformat(match[2])))
    return found


def test_the_header_explains_the_format(lines):
    assert lines[0] == "# Changelog"  # docs/changelog.md includes the file from its 2nd line
    header = "\n".join(lines[: lines.index("## [Unreleased]")])
    assert "keepachangelog.com/en/1.1.0" in header
    assert "semver.org" in header


def test_unreleased_comes_first_then_releases_newest_first(sections):
    assert sections[0][0] == "## [Unreleased]"
    found = releases(sections)
    assert found, "no released version"
    versions, dates = [version for version, _ in found], [date for _, date in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert dates == sorted(dates, reverse=True)


def test_the_newest_release_is_the_package_version(sections):
    newest, _ = releases(sections)[0]
    assert str(newest) == gw.__version__


def test_changes_are_grouped_by_kind(sections):
    for heading, body in sections:
        groups = [line[4:] for line in body if line.startswith("### ")]
        assert set(groups) <= GROUPS, f"{heading}: {groups}"
        assert len(groups) == len(set(groups)), f"{heading}: a group twice: {groups}"
        if heading != "## [Unreleased]":
            assert groups, f"{heading}: no Added/Changed/.../Security group"
        assert any(line.startswith("- ") for line in body), f"{heading}: no entry"


def test_link_references_cover_every_version(lines, sections):
    """Link references at the bottom are optional; where there are any, every version has one."""
    links = {match[1]: match[2] for line in lines if (match := LINK.fullmatch(line))}
    if not links:
        return
    names = [heading[3:].split("]")[0].lstrip("[") for heading, _ in sections]
    assert set(names) <= set(links), f"no link reference for {set(names) - set(links)}"
    assert all(url.startswith("https://") for url in links.values())
