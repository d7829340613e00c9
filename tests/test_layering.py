"""The dependency arrows of ARCHITECTURE.md, checked on every test run:
tap -> (protocols | web | cli) -> services -> store interfaces -> (model |
errors | config). A wrong import fails this test."""

import ast
import pathlib

from twisted.trial import unittest

import ktmail

PACKAGE = pathlib.Path(ktmail.__file__).parent

# module prefix -> ktmail modules it must never import
FORBIDDEN = {
    "ktmail.model": ["ktmail.store", "ktmail.services", "ktmail.protocols", "ktmail.web",
                     "ktmail.cli", "ktmail.tap", "ktmail.config"],
    "ktmail.errors": ["ktmail."],
    # pure MIME parsing: bottom layer, like model
    "ktmail.mime": ["ktmail.store", "ktmail.services", "ktmail.protocols", "ktmail.web",
                    "ktmail.cli", "ktmail.tap", "ktmail.config"],
    "ktmail.config": ["ktmail.store", "ktmail.services", "ktmail.protocols", "ktmail.web",
                      "ktmail.cli", "ktmail.tap"],
    "ktmail.store": ["ktmail.services", "ktmail.protocols", "ktmail.web", "ktmail.cli",
                     "ktmail.tap"],
    "ktmail.services": ["ktmail.store.sqlite", "ktmail.store.maildir", "ktmail.store.memory",
                        "ktmail.store.postgres", "ktmail.store.postgresql",
                        "ktmail.store.folder_index_pg", "ktmail.protocols", "ktmail.web",
                        "ktmail.cli", "ktmail.tap"],
    "ktmail.protocols": ["ktmail.store.", "ktmail.web", "ktmail.cli", "ktmail.tap"],
    "ktmail.web": ["ktmail.store.", "ktmail.protocols", "ktmail.cli", "ktmail.tap"],
    "ktmail.cli": ["ktmail.store.", "ktmail.protocols", "ktmail.web"],
}
# third-party modules a layer must not use
FORBIDDEN_LIBRARIES = {
    "ktmail.services": ["twisted.mail", "twisted.web", "klein", "sqlite3", "psycopg"],
    "ktmail.protocols": ["sqlite3", "psycopg"],
    "ktmail.web": ["sqlite3", "twisted.mail", "psycopg"],
    "ktmail.cli": ["psycopg"],
    "ktmail.model": ["twisted"],
    "ktmail.mime": ["twisted", "sqlite3"],
}


def module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path):
    tree = ast.parse(path.read_text("utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def violations(rules, libraries):
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for prefix, banned in list(rules.items()) + list(libraries.items()):
            if not (name == prefix or name.startswith(prefix + ".")):
                continue
            for imported, line in imports_of(path):
                for bad in banned:
                    if imported == bad.rstrip(".") and bad.endswith(".") and bad != "ktmail.":
                        continue  # the interface package itself is allowed
                    if imported == bad or imported.startswith(bad if bad.endswith(".")
                                                              else bad + "."):
                        found.append(f"{name} (line {line}) imports {imported}")
    return found


class LayeringTests(unittest.TestCase):
    def test_no_upward_or_sideways_imports(self):
        """No module imports a layer above it, and services/protocols/web
        reach storage only through the interfaces in ktmail.store."""
        self.assertEqual(violations(FORBIDDEN, FORBIDDEN_LIBRARIES), [])

    def test_checker_catches_a_violation(self):
        """The checker itself fails on a wrong arrow (a test that cannot fail
        is a defect)."""
        rules = {"ktmail.model": ["ktmail.errors"]}
        self.assertIn("ktmail.model (line", "\n".join(violations(rules, {})))

    def test_only_tap_uses_the_global_reactor(self):
        """time.time() and the global reactor appear only in the composition
        root (and the CLI/dev entry points, which run their own reactor)."""
        allowed = {"ktmail.tap", "ktmail.cli", "ktmail.devsetup"}
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            name = module_name(path)
            if name in allowed:
                continue
            for imported, line in imports_of(path):
                if imported in ("twisted.internet.reactor", "time.time"):
                    found.append(f"{name} (line {line}) imports {imported}")
            text = path.read_text("utf-8")
            if "time.time()" in text:
                found.append(f"{name} calls time.time()")
        self.assertEqual(found, [])
