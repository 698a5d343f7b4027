"""The import graph of `ccedit`, read with `ast`: no module imports itself through others, and every import follows
the layering that docs/architecture.md draws ("Layout and import direction").

Function-level imports count like top-level ones: a circle closed inside a function still ties the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ccedit"

# What each part of ccedit may import from the others (a part is a top-level module or sub-package). The leaves
# come first; `cli` sits on top. docs/architecture.md shows the same table.
ALLOWED = {
    "ccedit": set(),  # the package loads its public classes by name, on first use
    "errors": set(),
    "registry": {"errors"},
    "hub": {"errors"},
    "versions": {"errors"},
    "io": {"errors"},
    "config_checks": {"errors"},
    # the mask section's defaults are `masks.MaskOptions`' own (read without importing torch)
    "config": {"config_checks", "errors", "kinds", "masks"},
    # model kinds: the one place that names a family; their loaders and networks come from pipelines and models,
    # and each kind decides how the memory model estimates it (memory, memory_vace)
    "kinds": {"errors", "hub", "memory", "memory_vace", "models", "pipelines", "schedulers"},
    "annotators": {"errors", "hub", "io", "registry"},
    # region masks: files read by io, trackers found through hub, tracked masks stored in the structure cache
    "masks": {"annotators", "errors", "hub", "io"},
    "schedulers": {"errors"},
    "models": {"errors"},
    "convert": {"errors", "hub", "io", "models", "schedulers"},
    "pipelines": {"annotators", "config_checks", "errors", "hub", "models", "schedulers"},
    "memory": {"models", "pipelines"},
    "memory_vace": {"memory", "pipelines"},  # the Wan-VACE networks' estimate, in the memory model's accounting
    "resources": set(),
    "selection": {"config", "config_checks", "errors", "io"},
    "keyframe_match": {"config", "errors"},
    "preparation": {"annotators", "config", "errors", "io", "keyframe_match", "kinds", "masks", "pipelines",
                    "selection"},
    "outputs": {"config", "errors", "io", "preparation", "selection"},
    "edit_model": {"config", "errors", "kinds", "pipelines"},
    "edit_record": {"ccedit", "config", "keyframe_match", "preparation"},
    "memory_guard": {"config", "errors", "io", "kinds", "memory", "pipelines", "preparation", "resources",
                     "selection"},
    # whether the model's kind takes reference images (the kinds' top level is torch-free)
    "edit_checks": {"config", "errors", "io", "kinds", "masks", "outputs", "selection"},
    "catalog": {"config", "hub", "kinds"},
    "plan": {"config", "edit_checks", "keyframe_match", "kinds", "memory", "memory_guard", "pipelines",
             "preparation", "schedulers", "selection"},
    "conditions_dump": {"io", "pipelines"},
    "guidance": {"config"},
    "editing": {"conditions_dump", "config", "edit_checks", "edit_model", "edit_record", "guidance", "io",
                "keyframe_match", "masks", "memory_guard", "outputs", "pipelines", "preparation"},
    "metrics": {"annotators", "errors", "hub", "masks", "pipelines", "registry"},
    "methods": {"annotators", "config", "editing", "errors", "hub", "io", "pipelines", "registry", "schedulers"},
    "eval": {"annotators", "config", "editing", "errors", "io", "masks", "methods", "metrics"},
    # kinds: the sampler a trained main branch's sample videos use is its kind's
    "training": {"annotators", "config", "config_checks", "errors", "hub", "io", "kinds", "models", "pipelines",
                 "schedulers"},
    "jobs": {"config", "edit_checks", "editing", "errors", "io", "outputs"},
    "ui": {"config", "errors", "io", "jobs", "pipelines", "preparation"},
    "parity": {"convert", "errors", "models", "pipelines", "schedulers"},
    "cli": {"catalog", "ccedit", "config", "convert", "edit_checks", "editing", "errors", "eval", "jobs", "kinds",
            "plan", "training", "ui", "versions"},
    "__main__": {"cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The ccedit modules `name` imports (a name imported from a package counts as its sub-module if it is one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            submodules = {f"{target}.{a.name}" for a in node.names} & known.keys()
            found |= submodules | ({target} if len(submodules) < len(node.names) else set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in known and m != name}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "ccedit"  # the package itself: its version and exports


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_module_imports_itself_through_others():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_follows_the_layering():
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if part(target) != part(name) and part(target) not in ALLOWED[part(name)]
    )
    assert wrong == []


def test_every_part_of_the_package_has_its_place_in_the_layering():
    assert {part(name) for name in modules()} == set(ALLOWED)
