"""Which modules may import the generated protobuf code: only server/ and clients/, and within them the
message modules only where messages are built and read (each side's convert.py; the server's app.py
names its services and discovery.py answers reflection). Stubs and servicer bases (``*_pb2_grpc``) are
imported where calls are made and served."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES_ALLOWED = {
    "clients/deltahub_client/convert.py",
    "server/deltahub_server/convert.py",
    "server/deltahub_server/app.py",
    "server/deltahub_server/discovery.py",
}


def _generated_imports(path: Path) -> set[str]:
    """The generated modules ``path`` imports (``deltahub.v1.x_pb2``, ``grpc_health.v1.health_pb2``, ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        found |= {n for n in names if n.split(".")[-1].endswith(("_pb2", "_pb2_grpc"))}
    return found


def _sources(*roots: str):
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith("hub/deltahub/v1/"):
                yield rel, path


def test_the_core_and_the_trainers_import_no_generated_module():
    assert {rel: mods for rel, path in _sources("hub", "trainers") if (mods := _generated_imports(path))} == {}


def test_only_each_sides_convert_builds_and_reads_messages():
    misplaced = {}
    for rel, path in _sources("clients", "server"):
        messages = {m for m in _generated_imports(path) if m.endswith("_pb2")}
        if messages and rel not in MESSAGES_ALLOWED:
            misplaced[rel] = sorted(messages)
    assert misplaced == {}


def test_the_check_sees_an_import_of_messages(tmp_path):
    """The checker itself: both import forms are found, and a stub alone is not a message module."""
    probe = tmp_path / "probe.py"
    probe.write_text("from deltahub.v1 import registry_pb2 as rpb\nimport deltahub.v1.jobs_pb2\n"
                     "from deltahub.v1 import merge_pb2_grpc\n")
    found = _generated_imports(probe)
    assert {m for m in found if m.endswith("_pb2")} == {"deltahub.v1.registry_pb2", "deltahub.v1.jobs_pb2"}
    assert "deltahub.v1.merge_pb2_grpc" in found
