"""The documentation runs as written: every runnable fenced block of README.md and docs/*.md.

Convention (also stated in the README, "Documentation runs as written"):

- ```` ```python ```` blocks run with ``exec``, in order, one namespace per file (``__name__`` is
  ``"__main__"``); ```` ```bash ```` / ```` ```sh ```` blocks run with ``bash -e``. Other languages
  (``text``, ``console``, ``json``, a bare fence) are not run.
- A block right after a line ``<!-- skip: reason -->`` is not run.
- Each file runs in a fresh temporary folder (holding a link to the repository's ``examples/``,
  which the README runs); ``fastrl`` and ``python`` on ``PATH`` are this interpreter's.
- In bash blocks, ``pip install ...`` commands are left out (the test runs in an installed
  checkout), and so is a bare ``pytest`` (the set-up's "run the tests": this is the test run).
- A block that imports a module that is not installed (torch, torchrl, minari, d3rlpy, ...), or
  whose run fails on such an import, is skipped, not failed.

A failure names the file and the line of the block, and shows its output.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
SKIP_RE = re.compile(r"^\s*<!--\s*skip\b:?\s*(.*?)\s*-->\s*$")
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")

# Blocks of docs that have no skip marker yet but cannot run here (matched by the file and a
# piece of the block's text). Once the file carries `<!-- skip: ... -->`, the entry can go.
KNOWN_SKIPS: dict = {}  # (file, a piece of the block) -> reason; prefer <!-- skip: ... -->


@dataclass
class Block:
    file: Path
    index: int
    line: int          # 1-based line of the opening fence
    lang: str          # "python" or "bash"
    code: str
    skip: str | None   # the reason, when the block is not to run

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The runnable blocks of the Markdown file at ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(REPO).as_posix()
    blocks, i, prev = [], 0, ""
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev = lines[i]
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        i += 1  # the closing fence
        marker = SKIP_RE.match(prev)
        prev = ""
        if lang not in LANGS:
            continue
        code = "\n".join(body) + "\n"
        skip = (marker.group(1) or "marked skip") if marker else None
        for (f, piece), reason in KNOWN_SKIPS.items():
            if skip is None and f == rel and piece in code:
                skip = reason
        blocks.append(Block(path, len(blocks), start + 1, LANGS[lang], code, skip))
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` after a blank, outside quotes)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line


def bash_script(code: str) -> str:
    """The block's commands without ``pip install`` and a bare ``pytest`` (see the module doc)."""
    out = []
    for line in code.splitlines():
        cmds = [c.strip() for c in _strip_comment(line).split("&&")]
        kept = [c for c in cmds if c and not c.startswith("pip install") and c != "pytest"]
        if kept:
            out.append(" && ".join(kept))
    return "\n".join(out) + "\n"


def _missing_imports(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


def _not_installed(exc: BaseException) -> str | None:
    """The missing top-level module when ``exc`` is (or was raised while handling) an import of
    something not installed: fastrl re-raises those with an install hint, ``from None``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = getattr(exc, "name", None)
        if isinstance(exc, ImportError) and name:
            top = name.split(".")[0]
            if importlib.util.find_spec(top) is None:
                return top
        exc = exc.__cause__ or exc.__context__
    return None


class DocRun:
    """The state of one file's run: its folder, its Python namespace, which blocks ran."""

    def __init__(self, path: Path, workdir: Path):
        self.blocks = parse_blocks(path)
        self.workdir = workdir
        self.ns: dict = {"__name__": "__main__"}
        self.done: dict[int, str] = {}
        examples = REPO / "examples"
        if examples.is_dir():
            (workdir / "examples").symlink_to(examples, target_is_directory=True)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["FASTRL_PROGRESS"] = "0"
        return env

    def run(self, block: Block) -> None:
        """Run ``block`` (after the earlier blocks of its file that have not run yet)."""
        for earlier in self.blocks[:block.index]:
            if earlier.index not in self.done:
                try:
                    self._run_one(earlier)
                except BaseException:  # noqa: BLE001 -- reported by that block's own test
                    pass
        self._run_one(block)

    def _run_one(self, block: Block) -> None:
        self.done[block.index] = "started"
        if block.skip:
            self.done[block.index] = "skipped"
            pytest.skip(f"{block.where}: {block.skip}")
        if block.lang == "python":
            missing = _missing_imports(block.code)
            if missing:
                self.done[block.index] = "skipped"
                pytest.skip(f"{block.where}: needs {', '.join(missing)} (not installed)")
            old = os.getcwd()
            os.chdir(self.workdir)
            try:
                exec(compile(block.code, block.where, "exec"), self.ns)  # noqa: S102
            except ImportError as exc:
                top = _not_installed(exc)
                if top is None:
                    raise
                self.done[block.index] = "skipped"
                pytest.skip(f"{block.where}: needs {top} (not installed)")
            finally:
                os.chdir(old)
        else:
            proc = subprocess.run(["bash", "-e", "-c", bash_script(block.code)],
                                  cwd=self.workdir, env=self.env(), capture_output=True,
                                  text=True, timeout=300, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                pytest.fail(f"{block.where}: bash exited {proc.returncode}\n--- script\n"
                            f"{bash_script(block.code)}--- stdout\n{proc.stdout[-4000:]}"
                            f"--- stderr\n{proc.stderr[-4000:]}", pytrace=False)
        self.done[block.index] = "ok"


_RUNS: dict[Path, DocRun] = {}


@pytest.fixture
def doc_run(request, tmp_path_factory):
    def get(path: Path) -> DocRun:
        if path not in _RUNS:
            _RUNS[path] = DocRun(path, tmp_path_factory.mktemp(path.stem.lower()))
        return _RUNS[path]
    return get


def _cases():
    return [pytest.param(b.file, b.index, id=f"{b.file.name}-{b.index}-line{b.line}")
            for f in FILES for b in parse_blocks(f)]


@pytest.mark.parametrize("path, index", _cases())
def test_doc_block(path, index, doc_run):
    run = doc_run(path)
    run.run(run.blocks[index])


# -- the runner itself ---------------------------------------------------------------------------

def test_parse_blocks_convention(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n\n<!-- skip: needs a bucket -->\n```bash\n"
                  "fastrl ls s3://b\n```\n```text\nnot run\n```\n```json\n{}\n```\n"
                  "- item\n\n  ```sh\n  echo hi\n  ```\n")
    blocks = parse_blocks(md)
    assert [(b.lang, b.skip) for b in blocks] == [("python", None), ("bash", "needs a bucket"),
                                                  ("bash", None)]
    assert blocks[0].code == "a = 1\n" and blocks[2].code == "echo hi\n"
    assert blocks[1].line == 7


def test_bash_script_leaves_out_installs_and_the_suite():
    code = ('pip install . && fastrl demo        # install, then run\n'
            'pip install -e ".[test]" && pytest  # the tests\n'
            'pip install "fastrl-batch[zstd]"\n'
            'batch=$(fastrl export)   # prints "the path # not a comment"\n'
            'echo "a # b"\n')
    assert bash_script(code) == ('fastrl demo\nbatch=$(fastrl export)\necho "a # b"\n')


def test_missing_optional_import_is_found_behind_a_hint():
    try:
        try:
            import fastrl_no_such_module  # noqa: F401
        except ImportError:
            raise ImportError("needs fastrl_no_such_module (pip install it)") from None
    except ImportError as exc:
        assert _not_installed(exc) == "fastrl_no_such_module"
    assert _not_installed(ImportError("cannot import name 'x' from 'os'", name="os")) is None


def test_every_file_has_blocks_and_readme_runs_most():
    readme = parse_blocks(REPO / "README.md")
    assert len(readme) >= 8
    assert sum(b.skip is None for b in readme) >= len(readme) - 1
