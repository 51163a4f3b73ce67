"""Benchmarks behind ``salesml bench ...`` (``make bench``): each module's ``run`` builds what it
measures under ``$SALESML_HOME/bench`` and writes a report under ``$SALESML_HOME/reports``.

A checkout's tool, beside the platform's packages rather than inside them: only the command line
imports it (lazily, inside each ``salesml bench`` command; an import-linter contract in
pyproject.toml holds that line), and it ships in neither the wheel nor the Bento.
"""
