"""The run's report: the summary tables (tables.py), the sections per technique (sections.py) and the
table formats they share (format.py), all built from manifest.json."""
