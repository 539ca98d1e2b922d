"""README is one screen or two, and every page it and docs/ link to exists."""

import re

import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_fits_two_screens_and_lists_every_page_in_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: {target}"
