"""The run's report: the summary tables (tables.py), the sections per technique (sections.py) and on
a chain's hops and deployment (chain_sections.py), the table formats they share (format.py), and
report.html with its figures (html.py, figures.py, bench_figures.py), all built from manifest.json."""
