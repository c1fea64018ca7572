"""The server image carries what the distribution is made of (the image itself is built outside CI)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per logical line, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _sent_to_the_daemon(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching rule wins)."""
    keep = True
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            keep = negate
    return keep


def test_image_copies_every_source_root_and_the_build_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = project["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = set()
    for word, args in _dockerfile():
        if word == "COPY":
            copied.update(a.rstrip("/") for a in shlex.split(args)[:-1])
    for needed in [*roots, "pyproject.toml", "README.md"]:
        assert needed in copied, f"the Dockerfile does not COPY {needed}"
        assert _sent_to_the_daemon(needed), f".dockerignore keeps {needed} out of the build context"
    for heavy in (".venv", ".git", "data", "tests", "bench"):
        assert not _sent_to_the_daemon(heavy), f".dockerignore sends {heavy} to the daemon"


def test_image_installs_the_cpu_torch_the_setup_pins_and_serves_on_its_volume():
    lines = _dockerfile()
    pin = re.search(r'TORCH_VERSION:-([\d.]+)', (ROOT / ".ci" / "install-torch").read_text())[1]
    runs = [args for word, args in lines if word == "RUN"]
    torch_step = next(r for r in runs if "torch==" in r)
    assert f"torch=={pin}" in torch_step and "--index-url" in torch_step
    # torch goes in before the project, whose plain `torch` requirement would otherwise pull a CUDA build
    assert runs.index(torch_step) < next(i for i, r in enumerate(runs) if re.search(r"pip install \"?\.", r))
    assert "cpu" in next(args for word, args in lines if word == "ARG" and args.startswith("TORCH_INDEX_URL"))
    volume = next(args for word, args in lines if word == "VOLUME")
    cmd = next(args for word, args in lines if word == "CMD")
    argv = [a.strip('" ') for a in cmd.strip("[]").split(",")]
    assert argv[:2] == ["deltahub", "serve"]
    assert argv[argv.index("--data-dir") + 1] == volume
    port = argv[argv.index("--address") + 1].rsplit(":", 1)[1]
    assert ("EXPOSE", port) in lines
    assert any(word == "USER" and args != "root" for word, args in lines)
