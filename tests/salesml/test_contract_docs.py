"""docs/data-contract.md is generated from salesml/contract.py and must stay in step with it."""

from pathlib import Path

from salesml.contract import TABLES
from salesml.contract_doc import contract_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-contract.md"


def test_contract_doc_is_current():
    assert DOC.read_text() == contract_markdown(), "run: salesml data contract > docs/data-contract.md"


def test_doc_lists_every_column_and_rule():
    text = contract_markdown()
    for table in TABLES.values():
        assert f"## `{table.name}`" in text
        for col in table.columns:
            assert f"| `{col.name}` | {col.dtype} |" in text
    assert "one of `basic`, `pro`, `enterprise`" in text
