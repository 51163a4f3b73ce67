"""Benchmarks behind ``salesml bench ...`` (``make bench``): each module's ``run`` builds what it
measures in a home of its own, ``$SALESML_HOME/bench/<name>`` (``benchmarks.home.bench_home``), and
writes its report under ``$SALESML_HOME/reports``; the demo's export, feature files, Feast stores,
MLflow runs and models under ``$SALESML_HOME`` are never touched.

A checkout's tool, beside the platform's packages rather than inside them: only the command line
imports it (lazily, inside each ``salesml bench`` command; an import-linter contract in
pyproject.toml holds that line), and it ships in neither the wheel nor the Bento.
"""
