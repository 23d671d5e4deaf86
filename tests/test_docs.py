"""The docs against the code: every documented `python NN_name.py ...` and `python -m tools.X ...` parses with
that script's own parser, every relative link, image and #anchor in the Markdown resolves, the README and
BENCHMARKS stay short, and CI runs the README's test command.

Sources: README.md, BENCHMARKS.md, docs/**/*.md (fenced code blocks and inline `code`) and the module docstrings
of the numbered scripts, common/*.py and tools/*.py. Commands are parsed, never run: nothing trains or downloads.
"""
import ast
import argparse
import contextlib
import functools
import importlib
import io
import itertools
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path

import pytest

from conftest import ROOT, load_script

MARKDOWN = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOCSTRINGS = [*sorted(ROOT.glob("[0-9][0-9]_*.py")), *sorted((ROOT / "common").glob("*.py")),
              *sorted((ROOT / "tools").glob("*.py"))]

# where a command starts: `python 01_ddpm_mnist.py` or `python -m tools.fid` (not `python -m pytest`)
COMMAND = re.compile(r"\bpython3?\s+(?:-m\s+(?:common|tools)\.\w+|\d\d_\w+\.py)(?=\s|$)")
CHAIN = re.compile(r"\s+(?:&&|\|\|?)\s+|;\s+")                        # `a && b`, `a | b`, `a; b`: one command each
COMMENT = re.compile(r"(?:^|\s)#.*")                                   # a shell comment: `#` that starts a word
SPAN = re.compile(r"(?<!`)`((?:[^`\n]|\n(?![ \t]*\n))+)`(?!`)")       # inline `code`, within one paragraph
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")        # [text](target), ![alt](target "title")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.M)
FENCE = re.compile(r"^[ \t]*(```|~~~)")

# Placeholders. The docs write synopses as well as commands: `python -m tools.fid REAL FAKE [--n N]` or
# `--dataset mnist|fashion`. An all-caps word (CHECKPOINT, PATH, N, ...) stands for a value the student fills
# in: it is replaced by the stand-in below, and one that is not listed fails the test (add it here, with a
# value its flag accepts). `[` and `]` are dropped, so the optional flags of a synopsis are checked too, and
# `a|b` is checked once per alternative. `<model>` inside a path is left as it is: any string is a path.
PLACEHOLDERS = {"CHECKPOINT": "results/02_cfg_mnist/checkpoint.pt", "PATH": "pt_inception-2015-12-05.pth",
                "REAL": "mnist-test", "FAKE": "results/02_cfg_mnist/samples.npz", "N": "2", "B": "100",
                "OUT": "out.md", "DIR": "data/afhq", "UTKFACE": "UTKFace"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
# A documented command may name an earlier run's output (`--unet-checkpoint results/01_full/checkpoint.pt`)
# or a file the student fetches (`--inception-weights PATH`). Those are checked for existence while parsing,
# after argparse has accepted every flag; that error alone (not a flag error) passes: a fresh clone has no
# results/ (it is git-ignored).
MISSING_INPUT = re.compile(r"does not exist|no such file")
# A bare `python -m tools.fid`, with no arguments, is prose naming the tool ("`python -m tools.fid` on that
# file reproduces ..."), not a command to copy: its script must exist, but the positionals it leaves out
# (REAL FAKE) are not demanded.
MENTION = re.compile(r"the following arguments are required")


def fenced_and_prose(text):
    """(fenced, prose): two copies of a Markdown text, one keeping only its fenced code blocks' lines, the other
    everything else; the lines left out are blanked, so both keep the text's line numbers."""
    fenced, prose, inside = [], [], False
    for line in text.split("\n"):
        fence = bool(FENCE.match(line))
        inside_now = inside or fence
        fenced.append(line if inside_now and not fence else "")
        prose.append("" if inside_now else line)
        inside = inside != fence
    return "\n".join(fenced), "\n".join(prose)


def blank_spans(text):
    """The text with each inline `code` span blanked (its newlines kept, so line numbers stay)."""
    pieces, end = [], 0
    for span in SPAN.finditer(text):
        pieces += [text[end:span.start()], re.sub(r"[^\n]", " ", span.group(0))]
        end = span.end()
    return "".join(pieces) + text[end:]


def docstring_parts(path):
    """(code, prose, first line) of a .py file's module docstring: code is the docstring with its `spans` blanked
    (its indented commands and `Command:` lines), prose the whole docstring (for its `spans`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree, clean=False) or ""
    first = tree.body[0].lineno if doc else 1
    return blank_spans(doc), doc, first


def line_commands(code):
    """(line offset, command) for every command in lines of shell: `\\` continues a line, `# ...` is dropped,
    `&&`, `|` and `;` separate commands, and whatever precedes `python` (`time`, `OMP_NUM_THREADS=1`) is not
    part of one."""
    found, lines, i = [], code.split("\n"), 0
    while i < len(lines):
        start, line = i, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        for piece in CHAIN.split(COMMENT.sub("", line)):
            match = COMMAND.search(piece)
            if match:
                found.append((start, " ".join(piece[match.start():].split())))
        i += 1
    return found


def span_commands(prose):
    """(line offset, command) for every inline `code` span that holds a command (a span may wrap lines)."""
    found = []
    for span in SPAN.finditer(prose):
        offset = prose.count("\n", 0, span.start(1))
        found += [(offset, command) for _, command in line_commands(" ".join(span.group(1).split()))]
    return found


def documented_commands():
    """Every documented command as (where, command), where = 'README.md:15'."""
    found = []
    for path in MARKDOWN:
        fenced, prose = fenced_and_prose(path.read_text(encoding="utf-8"))
        commands = sorted(set(line_commands(fenced) + span_commands(prose)))
        found += [(f"{path.relative_to(ROOT)}:{1 + n}", command) for n, command in commands]
    for path in DOCSTRINGS:
        code, prose, first = docstring_parts(path)
        commands = sorted(set(line_commands(code) + span_commands(prose)))
        found += [(f"{path.relative_to(ROOT)}:{first + n}", command) for n, command in commands]
    return found


def target_and_words(command):
    """('01_ddpm_mnist.py' or 'tools.fid', the words after it), as the shell splits them."""
    words = shlex.split(command)[1:]
    return (words[1], words[2:]) if words[0] == "-m" else (words[0], words[1:])


def argv_variants(words):
    """The argv to check, once per `a|b` alternative, with placeholders replaced (see PLACEHOLDERS). An unknown
    placeholder raises KeyError."""
    words = [w.strip("[]") for w in words if w.strip("[]")]
    words = [PLACEHOLDERS[w] if PLACEHOLDER.fullmatch(w) else w for w in words]
    choices = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in words]
    return [list(argv) for argv in itertools.product(*choices)]


@functools.cache
def parser_of(target):
    """The function that parses a target's argv. A runnable module without parse_args (one whose main takes no
    arguments, and then downloads) gets an empty parser."""
    if target.endswith(".py"):
        assert (ROOT / target).is_file(), f"no script {target}"
        return load_script(target).parse_args
    module = importlib.import_module(target)
    assert hasattr(module, "main"), f"{target} is not runnable (no main)"
    return getattr(module, "parse_args", None) or argparse.ArgumentParser(prog=target).parse_args


@functools.cache
def help_text(target):
    """What `--help` prints for a target."""
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        parser_of(target)(["--help"])
    return out.getvalue()


def abbreviated_flags(target, argv):
    """The flags in argv that its --help does not list as written: argparse accepts `--per-cl` for
    `--per-class`, so a renamed flag could pass as an abbreviation of the new one."""
    flags = {word.split("=")[0] for word in argv if word.startswith("--")}
    return sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", help_text(target)))


def parse_error(parse, argv, capsys):
    """None if `parse(argv)` accepts argv, else the error a student would see."""
    try:
        parse(argv)
    except SystemExit as stop:
        return capsys.readouterr().err.strip() or str(stop.code)
    return None


COMMANDS = documented_commands()


@pytest.mark.parametrize("where, command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where, command, capsys, monkeypatch):
    """Students copy these: each must get past its script's parser (run from the repo root, as the docs say)."""
    monkeypatch.chdir(ROOT)                                       # relative output paths are checked from here
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)   # a stale one would fail every FID command
    try:
        target, words = target_and_words(command)
        argvs = argv_variants(words)
    except (KeyError, ValueError) as e:
        pytest.fail(f"{where}: cannot read `{command}`: {type(e).__name__} {e} (a new placeholder? see PLACEHOLDERS)")
    for argv in argvs:
        error = parse_error(parser_of(target), argv, capsys)
        allowed = MISSING_INPUT.search(error or "") or (not argv and MENTION.search(error or ""))
        assert error is None or allowed, \
            f"{where}: the documented command\n    {command}\nis rejected by {target}'s parser:\n{error}"
        unlisted = abbreviated_flags(target, argv)
        assert not unlisted, f"{where}: `{command}`: {target} --help lists no {unlisted} (abbreviated or gone)"


def test_every_script_and_tool_has_a_checked_command():
    """A guard on the extraction: each numbered script and each runnable common module is documented somewhere."""
    targets = {target_and_words(command)[0] for _, command in COMMANDS}
    runnable = {f"{p.parent.name}.{p.stem}" for folder in ("common", "tools") for p in (ROOT / folder).glob("*.py")
                if "__main__" in p.read_text()}
    assert {p.name for p in ROOT.glob("[0-9][0-9]_*.py")} | runnable <= targets
    assert len(COMMANDS) >= 30


def test_command_extraction_reads_shell_as_a_student_would():
    """An oracle for the extraction: continuations, comments, `time`, env prefixes, chains, wrapped spans."""
    code = ("time OMP_NUM_THREADS=1 python 01_ddpm_mnist.py --epochs 1 \\\n    --out-dir /tmp/t01  # one epoch\n"
            "mkdir -p x && python -m tools.fid REAL x.npz && python -m pytest -q tests\n# python 02_cfg_mnist.py\n")
    assert line_commands(code) == [(0, "python 01_ddpm_mnist.py --epochs 1 --out-dir /tmp/t01"),
                                   (2, "python -m tools.fid REAL x.npz")]
    prose = ("Run `python 02_cfg_mnist.py\n--quick` once, or\n"
             "`python -m tools.fid REAL FAKE --judge-dataset mnist|fashion [--n N]`.")
    assert span_commands(prose) == [(0, "python 02_cfg_mnist.py --quick"),
                                    (2, "python -m tools.fid REAL FAKE --judge-dataset mnist|fashion [--n N]")]
    target, words = target_and_words(span_commands(prose)[1][1])
    assert target == "tools.fid" and argv_variants(words) == \
        [["mnist-test", PLACEHOLDERS["FAKE"], "--judge-dataset", "mnist", "--n", "2"],
         ["mnist-test", PLACEHOLDERS["FAKE"], "--judge-dataset", "fashion", "--n", "2"]]


# --- links and anchors ---

def slug(heading):
    """GitHub's anchor for a heading: a link's text only, lowercase, every character but letters, digits, `_`,
    `-` and spaces dropped, then each space a hyphen (no collapsing: ' — ' becomes '--')."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text):
    """Every heading's anchor in a Markdown text; a repeated one gets -1, -2, ... as on GitHub."""
    seen, found = {}, []
    for match in HEADING.finditer(fenced_and_prose(text)[1]):
        base = slug(match.group(2))
        found.append(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def test_slug_follows_github_on_readme_headings():
    """Worked by hand from README.md's headings (and checked against the anchors the README links to)."""
    assert slug("Quick start") == "quick-start"
    assert slug("`02_cfg_mnist.py --quick` (CPU)") == "02_cfg_mnistpy---quick-cpu"
    assert slug("Handout A 1(a) against 1(b): a purely conditional model, `--quick` (CPU)") == \
        "handout-a-1a-against-1b-a-purely-conditional-model---quick-cpu"
    assert slug("DCGAN at the handout's width, 10 epochs (CPU)") == "dcgan-at-the-handouts-width-10-epochs-cpu"
    assert anchors("# Results\n```\n# not a heading\n```\n## Results\n### Results ###\n") == \
        ["results", "results-1", "results-2"]


def ignored_by_git(relative):
    """Whether a repo-relative path falls under .gitignore (a fresh clone lacks it: results/, data/, *.pt). A
    pattern with a leading '/' is anchored at the root; one ending in '/' names a folder at any depth."""
    patterns = [p.strip() for p in (ROOT / ".gitignore").read_text().split("\n") if p.strip()[:1] not in ("", "#")]
    parts = Path(relative).parts
    for p in patterns:
        candidates = parts[:1] if p.startswith("/") else parts if p.endswith("/") else parts[-1:]
        if any(fnmatch(part, p.strip("/")) for part in candidates):
            return True
    return False


def link_problem(doc, target):
    """Why a relative link or image in `doc` is broken, or None: its file missing (or git-ignored), its #anchor
    matching no heading."""
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    if not file.exists() or ROOT not in (file, *file.parents):
        return "no such file"
    if ignored_by_git(file.relative_to(ROOT)):
        return "git-ignored: not in a fresh clone"
    if anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
        return f"no heading with anchor #{anchor} in {file.relative_to(ROOT)}"
    return None


def relative_links(text):
    """(line, target) of every link and image in a Markdown text's prose (not inside `code`), web links aside."""
    prose = blank_spans(fenced_and_prose(text)[1])
    return [(1 + prose.count("\n", 0, m.start()), m.group(1)) for m in LINK.finditer(prose)
            if not re.match(r"[a-z]+:", m.group(1))]


@pytest.mark.parametrize("doc", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_links_and_anchors_resolve(doc):
    """Each relative link and image names a file a fresh clone has; each #anchor, a heading of its file."""
    links = relative_links(doc.read_text(encoding="utf-8"))
    broken = [f"{doc.relative_to(ROOT)}:{line}: ({target}): {problem}" for line, target in links
              if (problem := link_problem(doc, target))]
    assert links, f"no links found in {doc.relative_to(ROOT)}: is the link pattern still right?"
    assert not broken, "broken links:\n" + "\n".join(broken)


# --- short docs, and CI's command ---

def test_readme_and_benchmarks_stay_short_with_a_figure_first():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    assert len(readme) <= 200 and len((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8").split("\n")) <= 150
    assert any(re.search(r"!\[[^\]]*\]\([^)]+\.png\)", line) for line in readme[:40]), "no figure in 40 lines"


def test_ci_runs_exactly_the_readmes_test_command():
    readme = fenced_and_prose((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    documented = [line.split("#")[0].strip() for line in readme.split("\n") if "-m pytest" in line]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().split("\n") if "-m pytest" in line]
    assert len(set(documented)) == 1 and ci == documented[:1]
