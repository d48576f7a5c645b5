"""The README's account of each committed study quotes the committed report, never numbers of its own.

Issue 18: "every number in the README's verdict is in the report". These tests read each study's account (the
objectness study, the box-loss study: pages of their own under docs/studies/ that the README links to, since the
README became a landing page) and its committed report (`docs/studies/<name>/summary.md` and
`summary.csv`, rebuilt from the runs by `ablate.py --report-only`, plus the reports of other studies the section
cites) and check that the quoted table rows, the run count and every measured number in the verdict are in it.
"""
import json
import re
from pathlib import Path

import pytest

from yolov3.runs import read_summary

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STUDIES = ROOT / "docs" / "studies"
# (the page that tells the study, its heading, study folder)
SECTIONS = [(STUDIES / "objectness.md", "# The objectness study", "objectness"),
            (STUDIES / "box_loss.md", "# The box-loss study", "box_loss"),
            (STUDIES / "objectness_bccd.md", "# The objectness study on real images", "objectness_bccd"),
            # the README's own answer on real images, claim by claim, from the same report
            (README, "## Does focal loss help objectness? Real images", "objectness_bccd")]

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:,\d{3})*(?:\.\d+)?")
# a decimal with at least 3 places: mAPs, differences, interval ends, p values, gradient shares
MEASURED = re.compile(r"(?<![\w.])[-+−]?\d*\.\d{3,}(?!\d)")
PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?) ?%")
# percentages that name a setting or a convention, not a measurement
SETTING_PERCENTS = {"1", "5", "95"}


def _section(text: str, heading: str) -> str:
    start = text.find(heading)
    assert start >= 0, f"no section starting with {heading!r}"
    # it ends at the next heading of any level: a sub-heading (the superseded earlier answer after the objectness
    # study) is not part of the study
    ends = [i for i in (text.find(h, start + len(heading)) for h in ("\n## ", "\n### ", "\n#### ")) if i >= 0]
    return text[start:min(ends, default=len(text))]


def _value(token: str) -> tuple:
    """(value, decimal places) of a number as written: thousands commas, a typographic minus or a plus allowed."""
    token = token.replace(",", "").replace("−", "-").lstrip("+")
    return float(token), len(token.split(".")[1]) if "." in token else 0


def _report_numbers(report: str) -> list:
    return [_value(token) for token in NUMBER.findall(report)]


def _in_report(value: float, decimals: int, numbers: list) -> bool:
    """True when some number of the report, at least as precise, rounds to ``value`` at ``decimals`` places."""
    half = 0.5 * 10 ** -decimals + 1e-12
    return any(places >= decimals and abs(number - value) <= half for number, places in numbers)


def _finished_runs(study: Path) -> int:
    """Committed runs that count as finished, by the rule ablate.py and the report use."""
    return sum(read_summary(run_dir)[0] is not None for run_dir in (study / "runs").iterdir() if run_dir.is_dir())


@pytest.fixture(scope="module", params=SECTIONS, ids=[page.stem for page, _, _ in SECTIONS])
def study(request) -> tuple:
    """(the study's section of its page, study folder) for each study the README reports."""
    page, heading, folder = request.param
    assert page == README or page.relative_to(ROOT).as_posix() in README.read_text(encoding="utf-8"), \
        f"README.md does not link {page}"
    return _section(page.read_text(encoding="utf-8"), heading), STUDIES / folder


@pytest.fixture(scope="module")
def report(study) -> str:
    """The study's report (summary.md and the per-run summary.csv), plus the reports of any other committed study
    the section cites by its folder (the length pilot)."""
    section, folder = study
    texts = [(folder / name).read_text(encoding="utf-8") for name in ("summary.md", "summary.csv")]
    for other in sorted(STUDIES.iterdir()):
        if other != folder and f"docs/studies/{other.name}/" in section:
            texts += [(other / name).read_text(encoding="utf-8") for name in ("summary.md", "summary.csv")
                      if (other / name).is_file()]
    return "\n".join(texts)


def test_quoted_table_rows_are_the_reports(study):
    section, folder = study
    rows = [line for line in section.splitlines() if line.startswith("| ") and " ± " in line]
    assert rows, "the README study section quotes no result table"
    repeated = sorted({row for row in rows if rows.count(row) > 1})
    assert not repeated, f"README rows quoted twice (a table header pasted with the rows?): {repeated}"
    report_lines = set((folder / "summary.md").read_text(encoding="utf-8").splitlines())
    missing = [row for row in rows if row not in report_lines]
    assert not missing, f"README rows not in docs/studies/{folder.name}/summary.md: {missing}"


def test_run_count_matches_the_committed_runs(study):
    section, folder = study
    finished = _finished_runs(folder)
    header = section.splitlines()[0]
    m = re.search(r"(\d+) of (\d+) runs", header)
    if m:
        assert int(m.group(1)) == finished, f"README says {m.group(0)}, {finished} runs are committed finished"
    else:
        assert "complete" in header, f"README heading {header!r} gives neither 'N of M runs' nor 'complete'"
        planned = len(json.loads((folder / "runs.json").read_text())["runs"])
        assert finished == planned, f"README says the study is complete; {finished} of {planned} runs are finished"


def test_every_measured_number_in_the_prose_is_in_the_report(study, report):
    section = study[0]
    numbers = _report_numbers(report)
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    # the recipe paragraph quotes the pilot studies and the set-aside runs; the verdicts start after the table
    start = prose.find("What the")
    assert start >= 0, "the README study section has no 'What the ... say' verdict paragraph"
    end = prose.find("Still to run", start)
    verdict = prose[start:end if end >= 0 else len(prose)]
    missing = []
    for tok in MEASURED.findall(verdict):
        if not _in_report(*_value(tok), numbers):
            missing.append(tok)
    for tok in PERCENT.findall(verdict):
        if tok in SETTING_PERCENTS:
            continue
        percent, decimals = _value(tok)
        if not _in_report(percent / 100, decimals + 2, numbers):
            missing.append(tok + " %")
    assert not missing, f"numbers in the README verdict that the committed reports (summary.md, .csv) lack: {missing}"


def test_the_number_check_catches_a_made_up_number():
    numbers = _report_numbers("| a | 0.4609 ± 0.0171 | +0.0196 | 0.999 ± 0.000 |")
    assert _in_report(0.461, 3, numbers) and _in_report(0.0196, 4, numbers) and _in_report(0.999, 3, numbers)
    assert not _in_report(0.462, 3, numbers)
    assert not _in_report(0.46091, 5, numbers)  # more precise than the report: not from it


def test_a_section_ends_at_the_next_heading_of_any_level():
    text = "intro\n### The study x\nbody\n#### Earlier\nold\n## Next\nother\n"
    assert _section(text, "### The study") == "### The study x\nbody"
    assert _section("### The study x\nbody\n## Next\n### Speed\n", "### The study") == "### The study x\nbody"
    assert _section("### The study x\nbody", "### The study") == "### The study x\nbody"
