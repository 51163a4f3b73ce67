"""The simulator: a synthetic CRM + product-analytics export with a planted, documented causal
structure (``export``, where the model is documented), exports shaped like other companies'
(``shapes``) and the replay of the playbook loop (``playbooks``).

A tool of the command line (``salesml data generate``), the benchmarks and the tests: no
production module imports it (an import-linter contract in pyproject.toml holds that line), and
it ships in neither the wheel nor the Bento.
"""

from salesml.simulator.export import DRIFTED_COLUMNS, TRUTH_TABLES, arrow_schema, generate

__all__ = ["DRIFTED_COLUMNS", "TRUTH_TABLES", "arrow_schema", "generate"]
