"""The package's architecture: no import cycles, a short top level, the public API in place."""

import grimp
import pytest

import spikeguide


@pytest.fixture(scope="module")
def graph():
    # every import counts, those inside functions too; annotations-only imports do not run
    return grimp.build_graph("spikeguide", exclude_type_checking_imports=True)


def test_no_module_imports_itself_through_others(graph):
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []


def test_the_top_level_holds_packages_and_few_modules(graph):
    top = {m for m in graph.modules if m.count(".") == 1}
    modules = {m for m in top if not graph.find_children(m)}
    assert len(modules) <= 10, sorted(modules)


def test_the_public_api():
    names = ["IF", "LIF", "PLIF", "SpikeguideError", "create_model", "get_surrogate",
             "load_config", "train"]
    assert all(hasattr(spikeguide, n) for n in names)
