"""The documents are self-contained: nothing points outside the repository, and every docs/ path exists."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Files a user of the project does not have (written in two pieces so that this file does not name them).
OUTSIDE = re.compile(
    "|".join(re.escape(a + b) for a, b in (("PAP", "ERS.md"), ("DES", "IGN.md"), ("../sha", "red")))
)
SKIP_DIRS = {".git", "__pycache__", "runs", "build", ".pytest_cache", ".ruff_cache", ".hypothesis", ".whl"}
# `docs/...` as a path of its own (not the tail of another word such as test_docs/).
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*")
# A repository file named in a document: engine/..., schemas/..., specs/..., tests/..., tools/... with an extension.
REPO_FILE = re.compile(r"(?<![\w./-])(?:engine|schemas|specs|tests|tools)/[\w./-]*\.(?:py|yaml|json|md)\b")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def project_files() -> list[Path]:
    """The repository's text files: git's tracked and untracked-but-not-ignored files, else a walk of the tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    paths = []
    for name in sorted(set(names)):
        path = ROOT / name
        if path.is_file():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # binary
                continue
            paths.append(path)
    return paths


def mentions(pattern: re.Pattern[str], paths: list[Path]) -> list[tuple[Path, int, str]]:
    """(file, line number, match or its group) of every match of `pattern`, trailing punctuation stripped."""
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [
                (path, number, m.group(m.lastindex or 0).rstrip(".,:;")) for m in pattern.finditer(line)
            ]
    return found


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_nothing_points_at_files_outside_the_repository() -> None:
    """No project file names the steering repository's design or paper notes (users do not have them)."""
    files = project_files()
    assert any(p.name == "README.md" for p in files), "the file listing found no README.md"
    bad = [f"{p.relative_to(ROOT)}:{n}: {m}" for p, n, m in mentions(OUTSIDE, files)]
    assert not bad, (
        "these point at files a user of the project does not have; point into docs/ instead:\n"
        + "\n".join(bad)
    )


def test_every_docs_path_in_readme_code_specs_and_schemas_exists() -> None:
    """A `docs/...` path in the README, code, specs, schemas, tests or docs names a file that exists."""
    files = [
        p
        for p in project_files()
        if p.relative_to(ROOT).parts[0]
        in {"README.md", "engine", "schemas", "specs", "tests", "tools", "docs"}
    ]
    found = mentions(DOCS_PATH, files)
    assert any(p.name == "spec.schema.json" for p, _, _ in found), (
        "schema descriptions should point into docs/"
    )
    missing = [f"{p.relative_to(ROOT)}:{n}: {m}" for p, n, m in found if not (ROOT / m).exists()]
    assert not missing, "these name docs/ paths that do not exist:\n" + "\n".join(missing)


def test_docs_name_only_files_that_exist_and_their_links_resolve() -> None:
    """Repository files that docs/ names exist, and its Markdown links reach a file and a heading."""
    docs = sorted((ROOT / "docs").rglob("*.md"))
    assert {"README.md", "design.md"} <= {p.name for p in docs}
    missing = [
        f"{p.relative_to(ROOT)}:{n}: {m}" for p, n, m in mentions(REPO_FILE, docs) if not (ROOT / m).exists()
    ]
    for path, number, target in mentions(MD_LINK, docs):
        if re.match(r"^[a-z]+://", target):
            continue
        name, _, anchor = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        if not dest.exists():
            missing.append(f"{path.relative_to(ROOT)}:{number}: link {target}")
        elif anchor and dest.suffix == ".md":
            headings = [
                line.lstrip("#")
                for line in dest.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")
            ]
            if anchor not in {slug(h) for h in headings}:
                missing.append(f"{path.relative_to(ROOT)}:{number}: no heading for #{anchor} in {dest.name}")
    assert not missing, "docs/ names files or anchors that do not exist:\n" + "\n".join(missing)


def test_every_paper_page_is_indexed() -> None:
    """The ten paper pages exist and docs/README.md links each page under docs/papers/."""
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs" / "papers").glob("*.md"))
    papers = ("salt", "transcendence", "let_me_think", "length_generalisation", "mixture_of_parrots")
    papers += ("backtrack", "rl_wall", "echo_chamber", "loss_to_loss", "random_features")
    assert {f"{p}.md" for p in papers} <= set(pages), pages
    assert not [p for p in pages if f"(papers/{p})" not in index], "docs/README.md must link every paper page"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """CI's last command is the one line under the README's `## Tests` heading, so the two cannot drift."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Tests\n", 1)[1]
    command = section.split("```\n", 2)[1].strip()
    assert "\n" not in command, command
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1].strip() == command, (ci[-1], command)
