"""Every relative link in the README and docs/ leads somewhere: the file exists, and an anchor names a heading of it.

A page that moves (the real-data study left docs/real-data.md §5 for a page of its own) must not leave a link to a
section that is gone. Anchors follow GitHub's rule: the heading in lower case, characters other than letters,
digits, spaces, hyphens and underscores dropped, spaces turned into hyphens.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRACTS.md", ROOT / "benchmarks" / "README.md"]
               + [p for p in (ROOT / "docs").rglob("*.md") if "runs" not in p.parts])
# [text](target) outside code spans; an image link is a link too
LINK = re.compile(r"\]\(([^()\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def links(page: Path) -> list:
    return LINK.findall(CODE.sub("", page.read_text(encoding="utf-8")))


def test_the_slug_rule_by_hand():
    assert slug("5. The objectness question on real images") == "5-the-objectness-question-on-real-images"
    assert slug("3. Fine-tuning yolov3-tiny from COCO on BCCD, against ultralytics/yolov3") == \
        "3-fine-tuning-yolov3-tiny-from-coco-on-bccd-against-ultralyticsyolov3"
    assert slug("The `bce` arm: α = .25") == "the-bce-arm-α--25"


def test_the_link_finder_skips_code_and_finds_images(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("see [a](a.md#x) and ![img](f.png)\n`[not](code.md)`\n```\n[no](block.md)\n```\n",
                    encoding="utf-8")
    assert links(page) == ["a.md#x", "f.png"]


def broken_links(page: Path) -> list:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    return broken


def test_a_missing_file_and_a_missing_heading_are_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n## 2. Second part\n", encoding="utf-8")
    page = tmp_path / "p.md"
    page.write_text("[ok](other.md#2-second-part) [self](#here) [web](https://x.org/a.md)\n## Here\n"
                    "[gone](moved.md) [old](other.md#5-the-question)\n", encoding="utf-8")
    assert broken_links(page) == ["moved.md: no such file",
                                  "other.md#5-the-question: no heading with anchor #5-the-question in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT).as_posix()}: broken links: {broken}"


MODULE_COMMAND = re.compile(r"python -m (yolov3\.\w+)")


def module_commands() -> dict:
    """{'yolov3.prepare': ['data/bccd.yaml', ...]}: every ``python -m yolov3.X`` a user is shown (the pages above, the
    shipped data YAMLs, the package's and the scripts' own docstrings and messages), with the files that show it."""
    sources = PAGES + sorted((ROOT / "data").glob("*.yaml")) + sorted((ROOT / "yolov3").glob("*.py")) \
        + sorted(ROOT.glob("*.py"))
    shown = {}
    for source in sources:
        for module in MODULE_COMMAND.findall(source.read_text(encoding="utf-8")):
            shown.setdefault(module, []).append(str(source.relative_to(ROOT)))
    return shown


def test_every_python_m_command_shown_names_a_module_that_runs():
    # data/bccd.yaml once said `python -m yolov3.fetch`: a module without a __main__ block, which exits 0 and does nothing
    shown = module_commands()
    assert {"yolov3.convert", "yolov3.prepare"} <= set(shown)  # the search itself finds the commands
    for module, where in shown.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), f"{where}: python -m {module}: no such module"
        assert 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"), \
            f"{where}: python -m {module} does nothing: the module has no __main__ block"
