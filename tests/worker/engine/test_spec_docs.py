"""The README's "Network specs" tables list every field of every spec model with its default,
as worker/engine/spec.py defines them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from worker.engine.spec import LAYER_SPECS, OPTIMIZER_SPECS, SCHEDULE_SPECS, TopSpec

README = Path(__file__).resolve().parents[3] / "README.md"
FIELD = re.compile(r"`(\w+)`(?:=(\"[^\"]*\"|\[[^\]]*\]|[^,\s]+))?")


def section_rows() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Network specs"):text.index("\n## ", text.index("## Network specs") + 1)]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ")]


def documented_fields(kind: str) -> dict[str, object]:
    """{field: default (or the string 'required')} from the table row whose first cell names `kind`."""
    rows = [row for row in section_rows() if kind in re.findall(r"`(\w+)`", row[0])]
    assert len(rows) == 1, f"README: one table row for {kind}, found {len(rows)}"
    return {name: (json.loads(default) if default else "required") for name, default in FIELD.findall(rows[0][1])}


@pytest.mark.parametrize(("kind", "model"), [*LAYER_SPECS.items(), *OPTIMIZER_SPECS.items(), *SCHEDULE_SPECS.items()])
def test_readme_documents_every_field_and_default(kind: str, model) -> None:  # noqa: ANN001
    expected = {name: ("required" if info.is_required() else info.default)
                for name, info in model.model_fields.items() if name != "type"}
    assert documented_fields(kind) == expected


def test_readme_documents_every_top_level_field() -> None:
    names = {name for row in section_rows() for name in re.findall(r"`(\w+)`", row[0])
             if row[0].startswith("`") and name in TopSpec.model_fields}
    assert names == set(TopSpec.model_fields)


def test_readme_lists_every_activation_and_loss() -> None:
    from worker.engine.activations import ACTIVATIONS
    from worker.engine.spec import LOSSES

    rows = section_rows()
    text = README.read_text()
    assert all(f"`{name}`" in text[text.index("Activations ("):] for name in ACTIVATIONS)
    losses = {name for row in rows for name in re.findall(r"`(\w+)`", row[0]) if name in LOSSES}
    assert losses == set(LOSSES)
